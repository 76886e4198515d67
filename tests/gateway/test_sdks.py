"""The official openai and perplexityai SDKs work against the gateway with only base_url set."""

from __future__ import annotations

import openai
import perplexity
import pytest

from billing.models import LedgerEntry
from keys.services import api_key_create
from tests.factories import GroupFactory
from usage.models import UsageEvent

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGES = [{"role": "user", "content": "Tell me something true."}]


def test_openai_sdk_plain_and_streaming(gateway, api_key):
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=api_key, max_retries=0)
    completion = client.chat.completions.create(model="sonar-pro", messages=MESSAGES)
    assert "simulator" in completion.choices[0].message.content
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.model_extra["cost"]["total_cost"] > 0

    text = ""
    last = None
    for chunk in client.chat.completions.create(model="sonar-pro", messages=MESSAGES, stream=True):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        last = chunk
    assert text.startswith("This answer comes from the portal's built-in simulator.")
    assert last.usage is not None and last.usage.model_extra["cost"]["total_cost"] > 0
    assert UsageEvent.objects.count() == 2
    assert LedgerEntry.objects.filter(kind="usage").count() == 2
    assert {"sonar", "perplexity/sonar"} <= {m.id for m in client.models.list()}


def test_openai_sdk_raises_the_matching_exceptions(gateway, api_key):
    bad = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="pplx-nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="sonar", messages=MESSAGES)
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=api_key, max_retries=0)
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert exc.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="sonar", messages=[])
    broke = api_key_create(group=GroupFactory(), name="Broke").secret
    poor = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=broke, max_retries=0)
    with pytest.raises(openai.APIStatusError) as exc:
        poor.chat.completions.create(model="sonar", messages=MESSAGES)
    assert exc.value.status_code == 402 and exc.value.code == "insufficient_credits"


def test_perplexity_sdk_plain_and_streaming(gateway, api_key):
    client = perplexity.Perplexity(base_url=gateway.url, api_key=api_key, max_retries=0)
    completion = client.chat.completions.create(model="sonar-deep-research", messages=MESSAGES)
    assert completion.usage.total_tokens > 0
    assert completion.usage.cost.total_cost > 0
    assert completion.usage.cost.search_queries_cost == 0.015  # 3 searches × $5/1K
    chunks = list(client.chat.completions.create(model="sonar", messages=MESSAGES, stream=True))
    assert chunks[-1].usage.cost.total_cost > 0
    event = UsageEvent.objects.get(model__name="sonar-deep-research")
    assert (event.citation_tokens, event.reasoning_tokens, event.search_queries) == (120, 240, 3)
    assert UsageEvent.objects.count() == 2


def test_perplexity_sdk_raises_on_bad_key(gateway):
    client = perplexity.Perplexity(base_url=gateway.url, api_key="pplx-nope", max_retries=0)
    with pytest.raises(perplexity.AuthenticationError):
        client.chat.completions.create(model="sonar", messages=MESSAGES)


@pytest.mark.parametrize("mode", ["break", "cut"])
def test_both_sdks_raise_on_a_stream_the_model_server_broke_off(
    gateway, upstream, upstream_model, funded_group, api_key, mode
):  # type: ignore[no-untyped-def]
    # "break": the connection drops after "Hel"; "cut": closed cleanly without usage or [DONE].
    upstream.mode = mode
    clients = {
        "openai": (
            openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=api_key, max_retries=0),
            openai.APIError,
        ),
        "perplexity": (
            perplexity.Perplexity(base_url=gateway.url, api_key=api_key, max_retries=0),
            perplexity.APIError,
        ),
    }
    for name, (client, error) in clients.items():
        text = ""
        with pytest.raises(error) as raised:  # the raise comes while iterating
            for chunk in client.chat.completions.create(
                model="fake-pro", messages=MESSAGES, stream=True
            ):
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
        assert text == ("Hel" if mode == "break" else "Hello world"), name
        assert "broke off" in str(raised.value), name
    # Each broken stream was charged once, for its part: (1 or 3 tokens × 15 µ$) + 6,000 µ$.
    per_stream = 6_000 + (15 if mode == "break" else 45)
    assert sorted(UsageEvent.objects.values_list("cost_micros", flat=True)) == [per_stream] * 2
    assert LedgerEntry.objects.filter(kind="usage").count() == 2
