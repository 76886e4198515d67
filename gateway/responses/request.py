"""Parse and validate a Responses request body into a typed `ResponsesRequest`.

Every refusal is a `GatewayError` 400 `invalid_request_error` whose `param` names the field
(`input[2].content`, `tools[1].type`), in the gateway's error shape, before anything is written
or charged. Perplexity-only fields (`effort`, `preset`, `models`) are accepted alongside OpenAI's.
Effort names are checked against the catalogue's presets later, where they are defined; here
only their type is checked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from core.api_errors import GatewayError, invalid_request

# Tools the upstream runs (Perplexity's list; the gateway meters their invocations) ...
BUILTIN_TOOLS = frozenset(
    {
        "web_search",
        "fetch_url",
        "people_search",
        "finance_search",
        "image_search",
        "sandbox",
        "mcp",
        "connector",
    }
)
# ... and the one the client runs (the model only asks for it).
FUNCTION_TOOL = "function"

INPUT_ITEM_TYPES = frozenset(
    {
        "message",
        "function_call",
        "function_call_output",
        "reasoning",
        "mcp_approval_request",
        "mcp_approval_response",
        "mcp_call",
        "mcp_list_tools",
    }
)
MESSAGE_ROLES = frozenset({"user", "assistant", "system", "developer"})
CONTENT_PART_TYPES = frozenset({"input_text", "input_image", "input_file", "output_text"})
TOOL_CHOICES = frozenset({"none", "auto", "required"})
FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# A fallback list longer than this is a mistake, not a plan; it bounds the work one request causes.
MAX_MODELS = 5
# OpenAI's documented metadata limits.
MAX_METADATA_KEYS, MAX_METADATA_KEY, MAX_METADATA_VALUE = 16, 64, 512


@dataclass(frozen=True)
class FunctionTool:
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


@dataclass(frozen=True)
class Tool:
    """One entry of `tools`: its `type` and, for `function`, the typed definition."""

    type: str
    options: dict[str, Any] = field(default_factory=dict)
    function: FunctionTool | None = None

    @property
    def builtin(self) -> bool:
        return self.type in BUILTIN_TOOLS


@dataclass(frozen=True)
class ResponsesRequest:
    input: str | tuple[dict[str, Any], ...]
    models: tuple[str, ...]
    instructions: str | None = None
    effort: str | None = None
    preset: str | None = None
    tools: tuple[Tool, ...] = ()
    tool_choice: str | dict[str, Any] | None = None
    max_output_tokens: int | None = None
    previous_response_id: str | None = None
    store: bool = True
    background: bool = False
    stream: bool = False
    metadata: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def model(self) -> str | None:
        """The first model to try; None when only an effort preset names one."""
        return self.models[0] if self.models else None

    @property
    def tool_types(self) -> tuple[str, ...]:
        return tuple(t.type for t in self.tools)


def parse_request(payload: Any) -> ResponsesRequest:
    """Return the typed request, or raise a 400 naming the first bad field."""
    if not isinstance(payload, dict):
        raise invalid_request("The request body must be a JSON object.")
    if "messages" in payload and "input" not in payload:
        raise invalid_request(
            "The Agent API takes “input”, not “messages” (that is chat completions).",
            param="input",
        )
    effort = _optional_str(payload, "effort")
    preset = _optional_str(payload, "preset")
    stream = _bool(payload, "stream", False)
    store = _bool(payload, "store", True)
    background = _bool(payload, "background", False)
    if background and not store:
        raise invalid_request("A background response must be stored (“store”: true).", "store")
    return ResponsesRequest(
        input=_input(payload),
        models=_models(payload, effort or preset),
        instructions=_optional_str(payload, "instructions", allow_empty=True),
        # The SDK: "If both are supplied, effort takes precedence when non-null."
        effort=effort or preset,
        preset=preset,
        tools=_tools(payload.get("tools")),
        tool_choice=_tool_choice(payload.get("tool_choice")),
        max_output_tokens=_positive_int(payload, "max_output_tokens"),
        previous_response_id=_optional_str(payload, "previous_response_id"),
        store=store,
        background=background,
        stream=stream,
        metadata=_metadata(payload.get("metadata")),
        user=_optional_str(payload, "user"),
        temperature=_number(payload, "temperature", 0.0, 2.0),
        top_p=_number(payload, "top_p", 0.0, 1.0),
        raw=payload,
    )


def _optional_str(payload: dict[str, Any], name: str, *, allow_empty: bool = False) -> str | None:
    value = payload.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or (not value and not allow_empty):
        raise invalid_request(f"“{name}” must be a non-empty string.", param=name)
    return value


def _bool(payload: dict[str, Any], name: str, default: bool) -> bool:
    value = payload.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid_request(f"“{name}” must be true or false.", param=name)
    return value


def _positive_int(payload: dict[str, Any], name: str) -> int | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise invalid_request(f"“{name}” must be a positive integer.", param=name)
    return value


def _number(payload: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise invalid_request(f"“{name}” must be a number from {low:g} to {high:g}.", param=name)
    return float(value)


def _models(payload: dict[str, Any], effort: str | None) -> tuple[str, ...]:
    model = payload.get("model")
    models = payload.get("models")
    if model is not None and (not isinstance(model, str) or not model):
        raise invalid_request("“model” must be a non-empty string.", param="model")
    if models is not None:
        if (
            not isinstance(models, list)
            or not models
            or not all(isinstance(m, str) and m for m in models)
        ):
            raise invalid_request(
                "“models” must be a non-empty list of model names.", param="models"
            )
        if len(models) > MAX_MODELS:
            raise invalid_request(f"“models” lists at most {MAX_MODELS} models.", param="models")
    names = ([model] if model else []) + [m for m in models or [] if m != model]
    if not names and effort is None:
        raise invalid_request("Name a “model”, a “models” list or an “effort”.", param="model")
    return tuple(dict.fromkeys(names))


def _input(payload: dict[str, Any]) -> str | tuple[dict[str, Any], ...]:
    value = payload.get("input")
    if isinstance(value, str):
        if not value:
            raise invalid_request("“input” must not be empty.", param="input")
        return value
    if not isinstance(value, list) or not value:
        raise invalid_request(
            "“input” is required: a string or a non-empty list of items.", param="input"
        )
    for i, item in enumerate(value):
        _check_item(item, f"input[{i}]")
    return tuple(value)


def _check_item(item: Any, where: str) -> None:
    if not isinstance(item, dict):
        raise invalid_request("Each input item must be an object.", param=where)
    kind = item.get("type", "message" if "role" in item else None)
    if kind not in INPUT_ITEM_TYPES:
        raise invalid_request(f"Unknown input item type “{kind}”.", param=f"{where}.type")
    if kind == "message":
        if item.get("role") not in MESSAGE_ROLES:
            raise invalid_request(
                "A message's “role” is user, assistant, system or developer.", f"{where}.role"
            )
        content = item.get("content")
        if isinstance(content, str):
            return
        if not isinstance(content, list):
            raise invalid_request(
                "A message's “content” is a string or a list of parts.", f"{where}.content"
            )
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") not in CONTENT_PART_TYPES:
                raise invalid_request(
                    "Content parts are input_text, input_image, input_file or output_text.",
                    param=f"{where}.content[{j}]",
                )
            if part["type"] in ("input_text", "output_text") and not isinstance(
                part.get("text"), str
            ):
                raise invalid_request(
                    "A text part needs a string “text”.", f"{where}.content[{j}].text"
                )
    elif kind == "function_call":
        for name in ("call_id", "name", "arguments"):
            if not isinstance(item.get(name), str):
                raise invalid_request(
                    f"A function_call item needs a string “{name}”.", f"{where}.{name}"
                )
    elif kind == "function_call_output":
        if not isinstance(item.get("call_id"), str):
            raise invalid_request(
                "A function_call_output item needs a string “call_id”.", f"{where}.call_id"
            )
        if not isinstance(item.get("output"), str | list):
            raise invalid_request(
                "A function_call_output item needs an “output”.", f"{where}.output"
            )


def _tools(value: Any) -> tuple[Tool, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise invalid_request("“tools” must be a list.", param="tools")
    tools = []
    for i, entry in enumerate(value):
        if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
            raise invalid_request("Each tool needs a string “type”.", param=f"tools[{i}].type")
        kind = entry["type"]
        options = {k: v for k, v in entry.items() if k != "type"}
        if kind == FUNCTION_TOOL:
            tools.append(Tool(kind, options, _function(entry, f"tools[{i}]")))
        elif kind in BUILTIN_TOOLS:
            tools.append(Tool(kind, options))
        else:
            known = ", ".join(sorted(BUILTIN_TOOLS | {FUNCTION_TOOL}))
            raise invalid_request(
                f"Unknown tool type “{kind}”. Known tool types: {known}.",
                param=f"tools[{i}].type",
            )
    return tuple(tools)


def _function(entry: dict[str, Any], where: str) -> FunctionTool:
    name = entry.get("name")
    if not isinstance(name, str) or not FUNCTION_NAME.match(name):
        raise invalid_request(
            "A function tool needs a “name” of 1–64 letters, digits, _ or -.", f"{where}.name"
        )
    description = entry.get("description")
    if description is not None and not isinstance(description, str):
        raise invalid_request("“description” must be a string.", f"{where}.description")
    parameters = entry.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise invalid_request("“parameters” must be a JSON Schema object.", f"{where}.parameters")
    strict = entry.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise invalid_request("“strict” must be true or false.", f"{where}.strict")
    return FunctionTool(name, description, parameters, strict)


def _tool_choice(value: Any) -> str | dict[str, Any] | None:
    if value is None or isinstance(value, str) and value in TOOL_CHOICES:
        return value  # type: ignore[no-any-return]
    if isinstance(value, dict) and isinstance(value.get("type"), str):
        return value
    raise invalid_request(
        "“tool_choice” is none, auto, required or a tool object.", param="tool_choice"
    )


def _metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_METADATA_KEYS:
        raise invalid_request(
            f"“metadata” is an object of at most {MAX_METADATA_KEYS} string pairs.", "metadata"
        )
    for key, item in value.items():
        if (
            len(key) > MAX_METADATA_KEY
            or not isinstance(item, str)
            or len(item) > (MAX_METADATA_VALUE)
        ):
            raise invalid_request(
                f"Metadata keys have at most {MAX_METADATA_KEY} characters and values are "
                f"strings of at most {MAX_METADATA_VALUE}.",
                param=f"metadata.{key}",
            )
    return dict(value)


__all__ = ["GatewayError", "ResponsesRequest", "Tool", "FunctionTool", "parse_request"]
