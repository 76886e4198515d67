"""The bottom layer: helpers every app may use and that import no app (money, Redis, faults,
OpenAI-shaped API errors, CSV export). See docs/architecture.md."""
