"""Usage by end user and tag on the gateway (issue 19, part 7): the official SDKs send `user`,
`metadata` and the X-Portal-Tags header; every API stores them on its usage event; malformed ones
are a 400 naming the header or field, and nothing is charged."""

from __future__ import annotations

import time

import openai
import perplexity
import pytest

from billing.models import CreditAccount, LedgerEntry
from gateway.models import AsyncJob
from tests.gateway.conftest import both_modes
from usage.models import UsageEvent

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGES = [{"role": "user", "content": "Tell me something true."}]
TAGS = {"X-Portal-Tags": "team=search, env=prod"}


def balance(group) -> int:  # type: ignore[no-untyped-def]
    return CreditAccount.objects.get(group=group).balance_micros


def oai(gateway, key: str) -> openai.OpenAI:  # type: ignore[no-untyped-def]
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)


def ppx(gateway, key: str) -> perplexity.Perplexity:  # type: ignore[no-untyped-def]
    return perplexity.Perplexity(base_url=gateway.url, api_key=key, max_retries=0)


@both_modes
def test_openai_chat_with_user_and_tags_plain_and_streamed(gateway, funded_group, api_key):
    client = oai(gateway, api_key)
    client.chat.completions.create(
        model="sonar", messages=MESSAGES, user="user-42", extra_headers=TAGS
    )
    list(client.chat.completions.create(model="sonar", messages=MESSAGES, stream=True,
                                        safety_identifier="hashed-7"))  # fmt: skip
    client.chat.completions.create(model="sonar", messages=MESSAGES)
    gateway.settled()
    events = list(UsageEvent.objects.order_by("id").values_list("end_user", "tags"))
    assert events == [
        ("user-42", {"team": "search", "env": "prod"}),
        ("hashed-7", {}),
        (None, {}),
    ]


def test_agent_api_metadata_are_tags_with_the_header_and_in_background(
    gateway, funded_group, api_key
):
    client = oai(gateway, api_key)
    client.responses.create(
        model="perplexity/sonar", input="hi", user="u-1", metadata={"feature": "chat"},
        extra_headers={"X-Portal-Tags": "team=search"},
    )  # fmt: skip
    started = client.responses.create(
        model="perplexity/sonar", input="hi", background=True, metadata={"job": "nightly"}
    )
    deadline = time.monotonic() + 10
    while client.responses.retrieve(started.id).status != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    events = list(UsageEvent.objects.order_by("id").values_list("api", "end_user", "tags"))
    assert events == [
        ("agent", "u-1", {"team": "search", "feature": "chat"}),
        ("agent", None, {"job": "nightly"}),
    ]


def test_search_embeddings_and_async_carry_them(gateway, funded_group, api_key):
    px = ppx(gateway, api_key)
    px.search.create(
        query="tallest building", max_results=2, extra_headers={"X-Portal-Tags": "app=s"}
    )
    oai(gateway, api_key).embeddings.create(
        input="a text", model="pplx-embed-v1-4b", user="emb-user",
        extra_headers={"X-Portal-Tags": "app=e"},
    )  # fmt: skip
    created = px.async_.chat.completions.create(
        request={"model": "sonar", "messages": MESSAGES, "user": "async-user"},  # type: ignore[typeddict-unknown-key]
        extra_headers={"X-Portal-Tags": "app=a"},
    )
    deadline = time.monotonic() + 20
    while px.async_.chat.completions.get(created.id).status != "COMPLETED":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    job = AsyncJob.objects.get(pk=created.id)
    assert (job.end_user, job.tags) == ("async-user", {"app": "a"})
    got = {e.api: (e.end_user, e.tags) for e in UsageEvent.objects.all()}
    assert got == {
        "search": (None, {"app": "s"}),
        "embeddings": ("emb-user", {"app": "e"}),
        "async": ("async-user", {"app": "a"}),
    }


@pytest.mark.parametrize(
    ("header", "body", "param"),
    [
        ("team", {}, "X-Portal-Tags"),
        ("", {}, "X-Portal-Tags"),
        ("team=a\tb", {}, "X-Portal-Tags"),
        ("team=", {}, "X-Portal-Tags"),
        ("team=a b", {}, "X-Portal-Tags"),
        ("team=a,team=b", {}, "X-Portal-Tags"),
        ("a=1,,b=2", {}, "X-Portal-Tags"),
        ("k" * 33 + "=v", {}, "X-Portal-Tags"),
        ("k=" + "v" * 65, {}, "X-Portal-Tags"),
        (",".join(f"k{i}=v" for i in range(11)), {}, "X-Portal-Tags"),
        ("team=ok", {"user": "u" * 129}, "user"),
        (None, {"user": 7}, "user"),
        (None, {"user": "line\nbreak"}, "user"),
        (None, {"safety_identifier": ""}, "safety_identifier"),
    ],
)
def test_bad_tags_or_user_are_a_400_naming_them_and_not_billed(
    gateway, funded_group, api_key, header, body, param
):  # type: ignore[no-untyped-def]
    before = balance(funded_group)
    headers = {"X-Portal-Tags": header} if header is not None else {}
    with gateway.client(api_key) as c:
        response = c.post(
            "/chat/completions", json={"model": "sonar", "messages": MESSAGES, **body},
            headers=headers,
        )  # fmt: skip
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert balance(funded_group) == before
    assert not UsageEvent.objects.exists() and not LedgerEntry.objects.filter(kind="usage").exists()


def test_free_text_metadata_is_kept_but_not_a_tag_and_the_header_wins(
    gateway, funded_group, api_key
):
    """OpenAI-valid metadata is never refused: pairs that fit the tag rules become tags (the
    header's value wins a key both set), free text is not a tag."""
    client = oai(gateway, api_key)
    client.responses.create(
        model="perplexity/sonar", input="hi",
        metadata={"note": "call back on Monday, please", "team": "a", "env": "prod"},
        extra_headers={"X-Portal-Tags": "team=b"},
    )  # fmt: skip
    gateway.settled()
    assert UsageEvent.objects.get().tags == {"team": "b", "env": "prod"}


def test_bad_metadata_tags_on_the_agent_api_are_a_400_and_not_billed(
    gateway, funded_group, api_key
):
    client = oai(gateway, api_key)
    with pytest.raises(openai.BadRequestError) as exc:  # beyond OpenAI's own metadata rules
        client.responses.create(model="perplexity/sonar", input="hi", metadata={"note": "x" * 513})
    assert exc.value.body["param"] == "metadata.note"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as exc:
        client.responses.create(
            model="perplexity/sonar", input="hi",
            metadata={f"k{i}": "v" for i in range(17)},
        )  # fmt: skip
    assert exc.value.body["param"] == "metadata"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as exc:
        oai(gateway, api_key).embeddings.create(
            input="x", model="pplx-embed-v1-4b", extra_headers={"X-Portal-Tags": "bad"}
        )
    assert exc.value.body["param"] == "X-Portal-Tags"  # type: ignore[index]
    assert not UsageEvent.objects.exists()
