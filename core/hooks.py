"""Extension points: how a lower layer lets a higher one add a step to its flow.

Imports point down (docs/architecture.md). When a flow in a lower app must also change something a
higher app owns (a new API group needs a credit account from billing; an Admin who leaves must
lose their management keys), the lower app names the step as a `Hook` and calls it; the higher
app registers its service in its `AppConfig.ready()`. The hook runs synchronously, in the caller's
transaction and in registration order, and an exception propagates and rolls the flow back: it
is a plain function call whose target the lower layer does not import, not a fire-and-forget
signal.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Hook:
    """A named step of a flow that apps above the flow's owner fill in."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._steps: list[Callable[..., Any]] = []

    def register(self, step: Callable[..., Any]) -> Callable[..., Any]:
        """Add `step` (called with the hook's keyword arguments); registering twice is a no-op."""
        if step not in self._steps:
            self._steps.append(step)
        return step

    @property
    def steps(self) -> tuple[Callable[..., Any], ...]:
        return tuple(self._steps)

    def __call__(self, **kwargs: Any) -> list[Any]:
        """Run every step with `kwargs`; return their results in registration order."""
        return [step(**kwargs) for step in self._steps]

    def __repr__(self) -> str:
        return f"Hook({self.name!r}, steps={[s.__qualname__ for s in self._steps]})"
