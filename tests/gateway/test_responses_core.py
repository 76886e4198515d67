"""The Agent API core: both official SDKs parse what gateway.responses builds and translates.

The builders' output is served to the real `openai` and `perplexityai` clients through an
httpx.MockTransport (no network), so each test reads what a customer's code would read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import orjson
import perplexity
import pytest

from core.api_errors import GatewayError
from gateway import simulator
from gateway.responses.build import (
    EventWriter,
    TokenUsage,
    message_item,
    open_events,
    response_object,
    stream_events,
    usage_object,
)
from gateway.responses.request import parse_request
from gateway.responses.tools import tool_invocations
from gateway.responses.translate import ChatStreamTranslator, chat_request, response_from_chat
from usage.pricing import AgentCost, ToolCharge

Handler = Callable[[dict[str, Any]], "bytes | Iterator[bytes]"]
SEARCH = [{"type": "web_search"}]
QUESTION = "What is the tallest building in the world today?"


def serve(handler: Handler) -> httpx.Client:
    """An httpx client whose every POST is answered by `handler(json body)`."""

    def answer(request: httpx.Request) -> httpx.Response:
        payload = orjson.loads(request.content or b"{}")
        body = handler(payload)
        if isinstance(body, bytes):
            return httpx.Response(200, content=body, headers={"content-type": "application/json"})
        return httpx.Response(
            200, content=b"".join(body), headers={"content-type": "text/event-stream"}
        )

    return httpx.Client(transport=httpx.MockTransport(answer))


def openai_client(handler: Handler, strict: bool = False) -> openai.OpenAI:
    return openai.OpenAI(
        api_key="pplx-test",
        base_url="http://gateway.test/v1",
        http_client=serve(handler),
        max_retries=0,
        _strict_response_validation=strict,
    )


def perplexity_client(handler: Handler) -> perplexity.Perplexity:
    return perplexity.Perplexity(
        api_key="pplx-test", base_url="http://gateway.test", http_client=serve(handler),
        max_retries=0,
    )  # fmt: skip


COST = AgentCost(
    input=250,  # 1000 uncached tokens at $0.25/1M
    output=875,  # 350 tokens at $2.50/1M
    citation=0,
    reasoning=0,
    search=0,
    request=0,
    cache_read=13,
    cache_write=7,
    tools=5500,
    tool_calls={"web_search": ToolCharge(2, 5000), "fetch_url": ToolCharge(1, 500)},
)
TOKENS = TokenUsage(
    input_tokens=1200,
    output_tokens=350,
    cache_read_tokens=200,
    cache_creation_tokens=40,
    reasoning_tokens=30,
)


def built_response(payload: dict[str, Any]) -> dict[str, Any]:
    request = parse_request(payload)
    return response_object(
        response_id="resp_test1",
        model="perplexity/sonar",
        request=request,
        status="completed",
        output=[message_item("msg_test1", "Hello world")],
        usage=usage_object(TOKENS, COST),
        created_at=1760000000,
        completed_at=1760000003,
    )


# --- builders ------------------------------------------------------------------------------


def test_both_sdks_read_usage_and_cost_in_their_own_vocabulary():
    handler = lambda payload: orjson.dumps(built_response(payload))  # noqa: E731
    reply = openai_client(handler, strict=True).responses.create(
        model="perplexity/sonar", input="hi", tools=SEARCH
    )
    assert reply.output_text == "Hello world"
    assert reply.usage.input_tokens == 1200 and reply.usage.total_tokens == 1550
    assert reply.usage.input_tokens_details.cached_tokens == 200
    assert reply.usage.input_tokens_details.cache_write_tokens == 40
    assert reply.usage.output_tokens_details.reasoning_tokens == 30

    reply = perplexity_client(handler).responses.create(
        model="perplexity/sonar", input="hi", tools=SEARCH
    )
    usage = reply.usage
    assert reply.output_text == "Hello world" and reply.status == "completed"
    assert usage.input_tokens_details.cache_read_input_tokens == 200
    assert usage.input_tokens_details.cache_creation_input_tokens == 40
    assert usage.tool_calls_details["web_search"].invocation == 2
    assert usage.tool_calls_details["web_search"].cost_usd == 0.005
    assert usage.tool_calls_details["fetch_url"].model_extra["cost"] == 0.0005
    cost = usage.cost
    assert cost.currency == "USD"
    # Micro-dollars in, dollars out, exactly: 250 + 875 + 13 + 7 + 5000 + 500.
    assert round(cost.total_cost * 1_000_000) == COST.total == 6645
    assert round(cost.tool_calls_cost * 1_000_000) == 5500
    assert (cost.input_cost, cost.output_cost) == (0.00025, 0.000875)
    assert (cost.cache_read_cost, cost.cache_creation_cost) == (0.000013, 0.000007)


def failing_stream(payload: dict[str, Any]) -> Iterator[bytes]:
    writer = EventWriter()
    response = built_response(payload)
    yield from open_events(writer, response)
    yield writer.event("response.output_item.added", output_index=0,
                       item=message_item("msg_test1", "", status="in_progress"))  # fmt: skip
    yield from writer.failed(response, "upstream_error", "The model server broke off.")


def test_an_error_after_the_stream_started_makes_both_sdks_raise():
    seen: list[str] = []
    with pytest.raises(openai.APIError, match="The model server broke off."):
        for event in openai_client(failing_stream).responses.create(
            model="m", input="hi", stream=True
        ):
            seen.append(event.type)
    assert seen == ["response.created", "response.in_progress", "response.output_item.added"]

    seen = []
    with pytest.raises(perplexity.APIStatusError, match="broke off"):
        for event in perplexity_client(failing_stream).responses.create(
            model="m", input="hi", stream=True
        ):
            seen.append(event.type)
    assert seen == ["response.created", "response.in_progress", "response.output_item.added"]


# --- the simulator -------------------------------------------------------------------------


def sim(payload: dict[str, Any]) -> bytes | Iterator[bytes]:
    if payload.get("stream"):
        return simulator.agent_stream(payload.get("model", "perplexity/sonar"), payload)
    return simulator.agent_complete(payload.get("model", "perplexity/sonar"), payload)


def expected_input_tokens(text: str, searched: bool) -> int:
    return max(1, len(text) // 4) + (200 if searched else 0)


def test_the_simulator_answers_the_agent_api_to_the_openai_sdk_streamed_and_not():
    client = openai_client(sim, strict=True)
    reply = client.responses.create(model="perplexity/sonar", input=QUESTION, tools=SEARCH)
    search, message = reply.output
    assert search.type == "web_search_call" and search.action.query == QUESTION
    assert [s.url for s in search.action.sources] == simulator.CITATIONS
    annotations = message.content[0].annotations
    assert [a.url for a in annotations] == simulator.CITATIONS
    assert all(
        reply.output_text[a.start_index : a.end_index] in ("[1]", "[2]") for a in annotations
    )
    assert reply.usage.input_tokens == expected_input_tokens(QUESTION, searched=True)
    assert reply.usage.output_tokens == len(reply.output_text.split())
    assert reply.usage.model_extra["tool_calls_details"]["web_search"]["invocation"] == 1

    events = list(client.responses.create(model="perplexity/sonar", input=QUESTION, tools=SEARCH,
                                          stream=True))  # fmt: skip
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == events[-1].response.output_text == reply.output_text
    assert events[-1].response.usage.input_tokens == reply.usage.input_tokens

    with client.responses.stream(model="perplexity/sonar", input=QUESTION, tools=SEARCH) as st:
        final = st.get_final_response()
    assert final.output_text == reply.output_text
    assert [item.type for item in final.output] == ["web_search_call", "message"]


def test_the_simulator_answers_the_agent_api_to_the_perplexity_sdk_streamed_and_not():
    client = perplexity_client(sim)
    reply = client.responses.create(model="perplexity/sonar", input=QUESTION, tools=SEARCH)
    assert "simulator [1]" in reply.output_text
    assert reply.output[0].type == "web_search_call"
    assert [a.url for a in reply.output[1].content[0].annotations] == simulator.CITATIONS
    usage = reply.usage
    assert usage.tool_calls_details["web_search"].invocation == 1
    assert usage.input_tokens == expected_input_tokens(QUESTION, searched=True)
    assert round(usage.cost.tool_calls_cost * 1_000_000) == 2500
    assert round(usage.cost.total_cost * 1_000_000) == (
        round(usage.cost.input_cost * 1e6) + round(usage.cost.output_cost * 1e6) + 2500
    )

    events = list(client.responses.create(model="perplexity/sonar", input=QUESTION, tools=SEARCH,
                                          stream=True))  # fmt: skip
    assert events[-1].type == "response.completed"
    completed = events[-1].response
    assert completed.usage.tool_calls_details["web_search"].invocation == 1
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == completed.output_text == reply.output_text
    assert tool_invocations(orjson.loads(simulator.agent_complete("m", {"model": "m",
                            "input": QUESTION, "tools": SEARCH}))) == {"web_search": 1}  # fmt: skip


def test_the_simulator_without_tools_has_no_search_and_counts_instructions():
    payload = {"model": "m", "input": [{"role": "user", "content": "Hello there"}],
               "instructions": "Be brief."}  # fmt: skip
    reply = orjson.loads(simulator.agent_complete("m", payload))
    assert [item["type"] for item in reply["output"]] == ["message"]
    assert reply["usage"]["input_tokens"] == len("Be brief.Hello there") // 4
    assert "tool_calls_details" not in reply["usage"]
    assert reply["instructions"] == "Be brief."


def test_streamed_events_are_the_finished_response_piece_by_piece():
    response = orjson.loads(simulator.agent_complete("m", {"model": "m", "input": "hi",
                                                          "tools": SEARCH}))  # fmt: skip
    frames = list(stream_events(response))
    datas = [orjson.loads(f.split(b"data: ", 1)[1]) for f in frames]
    names = [f.split(b"\n", 1)[0].removeprefix(b"event: ").decode() for f in frames]
    assert names == [d["type"] for d in datas]
    assert datas[-1]["response"] == response
    done = [d["item"] for d in datas if d["type"] == "response.output_item.done"]
    assert done == response["output"]


# --- translation ---------------------------------------------------------------------------

CHAT_COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1760000000,
    "model": "llama",
    "choices": [
        {
            "index": 0,
            "finish_reason": "tool_calls",
            "message": {
                "role": "assistant",
                "content": "Let me check the weather.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                    },
                ],  # fmt: skip
            },
        }
    ],
    "usage": {
        "prompt_tokens": 1200,
        "completion_tokens": 350,
        "total_tokens": 1550,
        "prompt_tokens_details": {"cached_tokens": 200},
        "completion_tokens_details": {"reasoning_tokens": 30},
    },
}
WEATHER = {"type": "function", "name": "weather", "parameters": {"type": "object"}}


def test_a_chat_completion_becomes_a_response_both_sdks_parse():
    def handler(payload: dict[str, Any]) -> bytes:
        request = parse_request(payload)
        return orjson.dumps(response_from_chat(CHAT_COMPLETION, request=request,
                            response_id="resp_t", model="llama", cost=COST))  # fmt: skip

    reply = openai_client(handler, strict=True).responses.create(
        model="llama", input="Weather in Paris?", tools=[WEATHER]
    )
    message, call = reply.output
    assert reply.output_text == "Let me check the weather." and reply.status == "completed"
    assert (call.type, call.call_id, call.name, call.arguments) == (
        "function_call", "call_1", "weather", '{"city":"Paris"}',
    )  # fmt: skip
    usage = reply.usage
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (1200, 350, 1550)
    assert usage.input_tokens_details.cached_tokens == 200
    assert usage.input_tokens_details.cache_write_tokens == 0
    assert usage.output_tokens_details.reasoning_tokens == 30

    reply = perplexity_client(handler).responses.create(
        model="llama", input="Weather in Paris?", tools=[WEATHER]
    )
    assert reply.output[1].name == "weather"
    assert reply.usage.input_tokens_details.cache_read_input_tokens == 200
    assert round(reply.usage.cost.total_cost * 1_000_000) == 6645


def test_a_chat_completion_cut_by_max_tokens_is_incomplete():
    cut = CHAT_COMPLETION | {"choices": [{"index": 0, "finish_reason": "length",
                                          "message": {"role": "assistant", "content": "Par"}}]}  # fmt: skip
    response = response_from_chat(cut, request=parse_request({"model": "m", "input": "x"}),
                                  response_id="resp_t", model="m")  # fmt: skip
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}


def chat_chunks() -> list[dict[str, Any]]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": "c", "object": "chat.completion.chunk", "model": "llama",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip

    return [
        chunk({"role": "assistant", "content": "Let me"}),
        chunk({"content": " check."}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"ci'},
                    }
                ]
            }
        ),  # fmt: skip
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty":"Paris"}'}}]}),
        chunk({}, "tool_calls"),
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "model": "llama",
            "choices": [],
            "usage": CHAT_COMPLETION["usage"],
        },  # fmt: skip
    ]


def translated_stream(payload: dict[str, Any]) -> Iterator[bytes]:
    translator = ChatStreamTranslator(parse_request(payload), response_id="resp_t", model="llama")
    yield from translator.start()
    for chunk in chat_chunks():
        # Through the SSE framing, as an upstream sends it.
        yield from translator.feed_sse(b"data: " + orjson.dumps(chunk) + b"\n\n")
    yield from translator.feed_sse(b"data: [DONE]\n\n")
    yield from translator.finish(COST)


def test_a_chat_stream_becomes_responses_events_both_sdks_parse():
    client = openai_client(translated_stream)
    events = list(client.responses.create(model="llama", input="Paris?", tools=[WEATHER],
                                          stream=True))  # fmt: skip
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert [e.type for e in events] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.completed",
    ]  # fmt: skip
    completed = events[-1].response
    assert completed.output_text == "Let me check."
    assert completed.output[1].arguments == '{"city":"Paris"}'
    assert completed.usage.input_tokens == 1200 and completed.usage.output_tokens == 350
    assert completed.usage.input_tokens_details.cached_tokens == 200

    with client.responses.stream(model="llama", input="Paris?", tools=[WEATHER]) as st:
        final = st.get_final_response()
    assert final.output_text == "Let me check."
    assert final.output[1].call_id == "call_1"

    events = list(perplexity_client(translated_stream).responses.create(
        model="llama", input="Paris?", tools=[WEATHER], stream=True))  # fmt: skip
    usage = events[-1].response.usage
    assert usage.input_tokens_details.cache_read_input_tokens == 200
    assert round(usage.cost.total_cost * 1_000_000) == 6645


def test_a_chat_stream_that_breaks_off_makes_both_sdks_raise():
    def broken(payload: dict[str, Any]) -> Iterator[bytes]:
        translator = ChatStreamTranslator(parse_request(payload), response_id="r", model="m")
        yield from translator.start()
        yield from translator.feed(chat_chunks()[0])
        yield from translator.fail("upstream_error", "The model server broke off.")

    with pytest.raises(openai.APIError, match="broke off"):
        list(openai_client(broken).responses.create(model="m", input="hi", stream=True))
    with pytest.raises(perplexity.APIStatusError, match="broke off"):
        list(perplexity_client(broken).responses.create(model="m", input="hi", stream=True))


def test_a_responses_request_becomes_a_chat_request():
    request = parse_request(
        {
            "model": "llama",
            "instructions": "Be brief.",
            "input": [
                {"role": "developer", "content": "Use metric units."},
                {"type": "message", "role": "user",
                 "content": [{"type": "input_text", "text": "Weather in "},
                             {"type": "input_text", "text": "Paris?"}]},
                {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{}"},
                {"type": "function_call", "call_id": "c2", "name": "weather", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "21 C"},
                {"type": "reasoning", "summary": []},
            ],
            "max_output_tokens": 64,
            "tools": [WEATHER | {"description": "Weather now"}],
            "tool_choice": {"type": "function", "name": "weather"},
            "stream": True,
        }
    )  # fmt: skip
    body = chat_request(request, "llama-3")
    assert body["model"] == "llama-3" and body["max_tokens"] == 64
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": "Use metric units."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{}"}},
            {"id": "c2", "type": "function", "function": {"name": "weather", "arguments": "{}"}},
        ]},
        {"role": "tool", "tool_call_id": "c1", "content": "21 C"},
    ]  # fmt: skip
    assert body["tools"] == [{"type": "function", "function": {
        "name": "weather", "description": "Weather now", "parameters": {"type": "object"}}}]  # fmt: skip
    assert body["tool_choice"] == {"type": "function", "function": {"name": "weather"}}
    assert body["stream_options"] == {"include_usage": True}


def test_a_chat_only_model_refuses_a_built_in_tool_by_name():
    request = parse_request({"model": "llama", "input": "hi", "tools": [WEATHER, *SEARCH]})
    with pytest.raises(GatewayError) as exc:
        chat_request(request, "llama")
    assert (exc.value.status, exc.value.code, exc.value.param) == (
        400, "invalid_request_error", "tools[1].type",
    )  # fmt: skip
    assert "web_search" in exc.value.message


# --- request validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ([], None),
        ({"model": "m"}, "input"),
        ({"model": "m", "input": ""}, "input"),
        ({"model": "m", "messages": [{"role": "user", "content": "hi"}]}, "input"),
        ({"input": "hi"}, "model"),
        ({"model": 3, "input": "hi"}, "model"),
        ({"models": [], "input": "hi"}, "models"),
        ({"models": ["a", ""], "input": "hi"}, "models"),
        ({"models": list("abcdef"), "input": "hi"}, "models"),
        ({"model": "m", "input": [{"role": "robot", "content": "hi"}]}, "input[0].role"),
        ({"model": "m", "input": ["hi"]}, "input[0]"),
        ({"model": "m", "input": [{"type": "telepathy"}]}, "input[0].type"),
        (
            {"model": "m", "input": [{"role": "user", "content": [{"type": "input_text"}]}]},
            "input[0].content[0].text",
        ),  # fmt: skip
        (
            {"model": "m", "input": [{"type": "function_call_output", "output": "x"}]},
            "input[0].call_id",
        ),  # fmt: skip
        ({"model": "m", "input": "hi", "tools": {"type": "web_search"}}, "tools"),
        ({"model": "m", "input": "hi", "tools": [{"type": "time_travel"}]}, "tools[0].type"),
        (
            {"model": "m", "input": "hi", "tools": [{"type": "function", "name": "a b"}]},
            "tools[0].name",
        ),  # fmt: skip
        ({"model": "m", "input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "m", "input": "hi", "max_output_tokens": "10"}, "max_output_tokens"),
        ({"model": "m", "input": "hi", "stream": "yes"}, "stream"),
        ({"model": "m", "input": "hi", "store": 1}, "store"),
        ({"model": "m", "input": "hi", "background": True, "store": False}, "store"),
        ({"model": "m", "input": "hi", "previous_response_id": ""}, "previous_response_id"),
        ({"model": "m", "input": "hi", "metadata": {"k": 1}}, "metadata.k"),
        ({"model": "m", "input": "hi", "metadata": "x"}, "metadata"),
        ({"model": "m", "input": "hi", "effort": 2}, "effort"),
        ({"model": "m", "input": "hi", "temperature": 3}, "temperature"),
        ({"model": "m", "input": "hi", "tool_choice": "sometimes"}, "tool_choice"),
        ({"model": "m", "input": "hi", "tool_choice": ["auto"]}, "tool_choice"),
        ({"model": "m", "input": "hi", "tools": [["web_search"]]}, "tools[0].type"),
        ({"model": "m", "input": "hi", "metadata": {"k": "v" * 513}}, "metadata.k"),
    ],
)
def test_a_malformed_body_is_refused_naming_the_param(body, param):
    with pytest.raises(GatewayError) as exc:
        parse_request(body)
    assert (exc.value.status, exc.value.code, exc.value.param) == (
        400, "invalid_request_error", param,
    )  # fmt: skip
    error = orjson.loads(exc.value.body())["error"]
    assert error["param"] == param and error["message"]


def test_an_unknown_tool_type_is_named_in_the_error():
    with pytest.raises(GatewayError) as exc:
        parse_request({"model": "m", "input": "hi", "tools": [{"type": "time_travel"}]})
    assert "“time_travel”" in exc.value.message


def test_a_full_request_parses_into_typed_fields():
    request = parse_request(
        {
            "model": "openai/gpt-5.4-mini",
            "models": ["openai/gpt-5.4-mini", "perplexity/sonar"],
            "input": "hi",
            "instructions": "Be brief.",
            "preset": "pro-search",
            "tools": [
                {"type": "web_search", "search_context_size": "high"},
                {"type": "fetch_url"},
                {"type": "people_search"},
                {"type": "finance_search"},
                {"type": "sandbox"},
                WEATHER,
            ],  # fmt: skip
            "max_output_tokens": 100,
            "previous_response_id": "resp_1",
            "store": True,
            "background": True,
            "stream": True,
            "metadata": {"team": "search"},
            "user": "u-1",
        }
    )
    assert request.models == ("openai/gpt-5.4-mini", "perplexity/sonar")
    assert request.model == "openai/gpt-5.4-mini"
    assert request.effort == "pro-search" and request.preset == "pro-search"
    assert request.tool_types == ("web_search", "fetch_url", "people_search", "finance_search",
                                  "sandbox", "function")  # fmt: skip
    assert request.tools[0].options == {"search_context_size": "high"}
    assert request.tools[-1].function.name == "weather"
    assert (request.max_output_tokens, request.previous_response_id) == (100, "resp_1")
    assert (request.store, request.background, request.stream) == (True, True, True)
    assert (request.metadata, request.user) == ({"team": "search"}, "u-1")
    # effort wins over the deprecated preset; an effort alone is enough to pick a model.
    only_effort = parse_request({"input": "hi", "effort": "low", "preset": "ultra"})
    assert (only_effort.effort, only_effort.model) == ("low", None)


# --- tool invocations ----------------------------------------------------------------------


def test_tool_invocations_come_from_the_usage_breakdown_when_it_has_one():
    output = [{"type": "web_search_call"}, {"type": "search_results", "queries": ["a", "b"]}]
    usage = {
        "tool_calls_details": {"web_search": {"invocation": 3}, "fetch_url": {"invocation": 1}}
    }
    assert tool_invocations({"output": output, "usage": usage}) == {"web_search": 3, "fetch_url": 1}


def test_tool_invocations_are_counted_from_output_items_without_a_breakdown():
    output = [
        {"type": "web_search_call"},
        {"type": "search_results", "results": []},
        {"type": "fetch_url_results", "contents": []},
        {"type": "function_call", "name": "f"},
        {"type": "function_call_output"},
        {"type": "mcp_call"},
        {"type": "sandbox_results"},
        {"type": "sandbox_read_file"},
        {"type": "message"},
    ]
    assert tool_invocations({"output": output, "usage": {"input_tokens": 1}}) == {
        "web_search": 2, "fetch_url": 1, "function": 1, "mcp": 1, "sandbox": 1,
    }  # fmt: skip


def test_a_malformed_breakdown_cannot_inflate_the_count():
    output = [{"type": "web_search_call"}]
    bad = {"web_search": {"invocation": -5}, "fetch_url": {"invocation": "9"}, "x": True}
    assert tool_invocations({"output": output, "usage": {"tool_calls_details": bad}}) == {
        "web_search": 1
    }
    mixed = {"web_search": {"invocation": 2}, "fetch_url": {"invocation": 1.5}}
    assert tool_invocations({"output": output, "usage": {"tool_calls_details": mixed}}) == {
        "web_search": 2
    }


def test_the_previous_turn_goes_before_the_input_without_its_instructions():
    previous = [
        {"type": "message", "role": "user", "content": "Weather in Paris?"},
        message_item("msg_1", "21 C and sunny."),
    ]
    request = parse_request({"model": "llama", "input": "And tomorrow?",
                             "previous_response_id": "resp_1"})  # fmt: skip
    body = chat_request(request, "llama", history=previous)
    assert body["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "21 C and sunny."},
        {"role": "user", "content": "And tomorrow?"},
    ]
    assert "stream" not in body and "max_tokens" not in body
