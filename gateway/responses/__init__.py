"""The Agent API (`POST /v1/responses`, `/v1/agent`) core: parse, build, translate, count.

Self-contained and not wired into the gateway yet: `request` parses and validates a Responses
body, `build` makes the Response object, its usage (both the openai and the Perplexity
vocabulary) and every streamed SSE event, `translate` carries a request, a reply and a stream
across to and from an upstream that speaks only chat completions, and `tools` counts the tool
invocations a Responses upstream reports. Prices are not here: the cost breakdown comes in as
micro-dollars (`usage.pricing.AgentCost`) and goes out in dollars.
"""
