"""Embeddings (`/v1/embeddings`, `/v1/contextualizedembeddings`) through the gateway.

With the official SDKs (perplexityai's `embeddings.create` and `contextualized_embeddings.create`,
openai's `embeddings.create`): each call checks that the group's balance moved by exactly the
`usage.cost.total_cost` the response reported, in micro-dollars, and by the micros worked out by
hand from the catalogue's price (prompt tokens × price per 1M, rounded half up once).
"""

from __future__ import annotations

import base64
import math
import struct

import httpx
import openai
import perplexity
import pytest

from billing.models import CreditAccount, LedgerEntry
from gateway.embeddings import encode
from keys.services import api_key_create
from tests.factories import GroupFactory
from tests.gateway.conftest import FAKE_VECTOR, both_modes
from usage.models import AIModel, UsageEvent

pytestmark = pytest.mark.django_db(transaction=True)

STD, CTX = "pplx-embed-v1-0.6b", "pplx-embed-context-v1-0.6b"
TEXT = "Embeddings turn text into vectors. " * 114  # 3,990 characters: 998 tokens (simulator)


def balance(group) -> int:  # type: ignore[no-untyped-def]
    return CreditAccount.objects.get(group=group).balance_micros


def micros(dollars: float) -> int:
    return round(dollars * 1_000_000)


def ppx(gateway, key: str) -> perplexity.Perplexity:  # type: ignore[no-untyped-def]
    return perplexity.Perplexity(base_url=gateway.url, api_key=key, max_retries=0)


def oai(gateway, key: str) -> openai.OpenAI:  # type: ignore[no-untyped-def]
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)


def tokens(text: str) -> int:
    return -(-len(text) // 4)


def written() -> tuple[int, int]:
    return UsageEvent.objects.count(), LedgerEntry.objects.filter(kind="usage").count()


# --- the encodings (the worked bytes of docs/research/search-embeddings-async.md §1.2) ---------


def test_the_encodings_match_the_documented_bytes():
    assert encode([1.0, 2.0, -1.0, 127.0], 4, "base64_int8") == "AQL/fw=="
    signs = [1, -1, 1, 1, -1, -1, -1, 1] + [1] * 8
    assert encode([0.3 * s for s in signs], 16, "base64_binary") == "jf8="  # LSB first
    assert encode([0.5, -1.0, 0.25], 3, "base64") == "AAAAPwAAgL8AAIA+"  # little-endian float32
    assert encode([0.5, -1.0, 0.25], 3, "float") == [0.5, -1.0, 0.25]
    # int8 scales the largest component to ±127; binary pads to whole bytes.
    assert base64.b64decode(encode([0.5, -1.0, 0.25, 0.0], 4, "base64_int8")) == bytes(
        [64, 256 - 127, 32, 0]
    )
    assert base64.b64decode(encode([1.0] * 9, 9, "base64_binary")) == b"\xff\x01"
    # Fewer dimensions: the first components, at unit length for the float encodings.
    assert encode([3.0, 4.0, 100.0], 2, "float") == [0.6, 0.8]
    assert base64.b64decode(encode([3.0, 4.0, 100.0], 2, "base64_int8")) == bytes([95, 127])


# --- the official SDKs --------------------------------------------------------------------------


@both_modes
def test_perplexity_sdk_embeddings_int8_and_binary(gateway, funded_group, api_key):
    client = ppx(gateway, api_key)
    before = balance(funded_group)
    texts = [TEXT, TEXT + " Two.", TEXT + " Three."]
    response = client.embeddings.create(input=texts, model="pplx-embed-v1-4b")
    assert response.model == "pplx-embed-v1-4b" and response.object == "list"
    assert [d.index for d in response.data] == [0, 1, 2]
    vectors = [base64.b64decode(d.embedding) for d in response.data]
    assert {len(v) for v in vectors} == {2560}  # the default: all dimensions, one byte each
    n = sum(tokens(t) for t in texts)
    assert response.usage.prompt_tokens == response.usage.total_tokens == n == 2_997
    # $0.03 per 1M: 2,997 × 30,000 / 1,000,000 = 89.91 → 90 µ$.
    cost = response.usage.cost
    assert cost.currency == "USD" and micros(cost.total_cost) == micros(cost.input_cost) == 90
    gateway.settled()
    assert balance(funded_group) == before - 90

    before = balance(funded_group)
    again = client.embeddings.create(input=TEXT, model="pplx-embed-v1-4b", dimensions=256,
                                     encoding_format="base64_binary")  # fmt: skip
    assert len(again.data) == 1 and len(base64.b64decode(again.data[0].embedding)) == 32
    same = [
        client.embeddings.create(input=TEXT, model="pplx-embed-v1-4b", dimensions=256)
        for _ in range(2)
    ]
    assert len(base64.b64decode(same[0].data[0].embedding)) == 256
    assert same[0].data[0].embedding == same[1].data[0].embedding  # deterministic
    gateway.settled()
    # Three requests of 998 tokens: 29.94 → 30 µ$ each.
    assert balance(funded_group) == before - 3 * 30
    events = UsageEvent.objects.filter(api="embeddings")
    assert sorted(events.values_list("prompt_tokens", "cost_micros")) == [
        (998, 30), (998, 30), (998, 30), (2_997, 90),
    ]  # fmt: skip
    assert LedgerEntry.objects.filter(kind="usage").count() == 4


@both_modes
def test_perplexity_sdk_contextualized_embeddings(gateway, funded_group, api_key):
    client = ppx(gateway, api_key)
    before = balance(funded_group)
    docs = [[TEXT, "Its second chunk."], [TEXT + " Another document."]]
    response = client.contextualized_embeddings.create(
        input=docs, model="pplx-embed-context-v1-0.6b"
    )
    assert [d.index for d in response.data] == [0, 1]
    assert [[c.index for c in d.data] for d in response.data] == [[0, 1], [0]]
    assert {len(base64.b64decode(c.embedding)) for d in response.data for c in d.data} == {1024}
    n = sum(tokens(c) for doc in docs for c in doc)
    assert response.usage.prompt_tokens == n == 998 + 5 + 1_002
    # $0.008 per 1M: 2,005 × 8,000 / 1,000,000 = 16.04 → 16 µ$.
    assert micros(response.usage.cost.total_cost) == 16
    # The same chunk in another document has another vector (contextualized).
    other = client.contextualized_embeddings.create(
        input=[[TEXT, "A different second chunk."]], model="pplx-embed-context-v1-0.6b",
        encoding_format="base64_binary", dimensions=128,
    )  # fmt: skip
    assert len(base64.b64decode(other.data[0].data[0].embedding)) == 16
    gateway.settled()
    charged = 16 + micros(other.usage.cost.total_cost)
    assert balance(funded_group) == before - charged
    assert UsageEvent.objects.filter(api="embeddings").count() == 2


@both_modes
def test_openai_sdk_embeddings_base64_and_float(gateway, funded_group, api_key):
    client = oai(gateway, api_key)
    before = balance(funded_group)
    # The SDK asks for base64 (float32) and decodes it into floats.
    response = client.embeddings.create(input=[TEXT, TEXT + "!"], model="pplx-embed-v1-0.6b")
    assert [len(d.embedding) for d in response.data] == [1024, 1024]
    assert math.isclose(math.fsum(x * x for x in response.data[0].embedding), 1.0, rel_tol=1e-5)
    assert response.usage.prompt_tokens == 998 + 998
    # $0.004 per 1M: 1,996 × 4,000 / 1,000,000 = 7.984 → 8 µ$.
    assert micros(response.usage.model_extra["cost"]["total_cost"]) == 8
    small = client.embeddings.create(input=TEXT, model="pplx-embed-v1-4b", dimensions=300,
                                     encoding_format="float")  # fmt: skip
    vector = small.data[0].embedding
    assert len(vector) == 300 and math.isclose(math.fsum(x * x for x in vector), 1.0)
    assert micros(small.usage.model_extra["cost"]["total_cost"]) == 30  # 998 × 0.03 = 29.94
    gateway.settled()
    assert balance(funded_group) == before - 8 - 30


def test_tiny_requests_round_half_up_once_and_may_cost_nothing(gateway, funded_group, api_key):
    """$0.004 per 1M tokens is 0.004 µ$ a token: 124 tokens cost 0.496 µ$ → 0, 125 cost 0.5 → 1
    (half up, once per request). A free request is still a usage event, with no debit."""
    client = ppx(gateway, api_key)
    before = balance(funded_group)
    costs = []
    for chars in (2, 496, 497, 1_496, 1_497):  # 1, 124, 125, 374, 375 tokens
        r = client.embeddings.create(input="x" * chars, model="pplx-embed-v1-0.6b")
        costs.append((r.usage.prompt_tokens, micros(r.usage.cost.total_cost)))
    assert costs == [(1, 0), (124, 0), (125, 1), (374, 1), (375, 2)]
    assert balance(funded_group) == before - 4
    assert UsageEvent.objects.filter(api="embeddings").count() == 5
    assert LedgerEntry.objects.filter(kind="usage").count() == 3  # the free two have none


# --- bad input ----------------------------------------------------------------------------------


def test_bad_input_is_a_400_naming_the_field_and_writes_nothing(gateway, funded_group, api_key):
    before = balance(funded_group)
    client = ppx(gateway, api_key)
    std, ctx = STD, CTX
    cases = [
        # (create, model, extra_body: sent as is past the SDK's validation, param)
        ("embeddings", std, {"input": ""}, "input"),
        ("embeddings", std, {"input": []}, "input"),
        ("embeddings", std, {"input": ["a", ""]}, "input[1]"),
        ("embeddings", std, {"input": ["a"] * 513}, "input"),
        ("embeddings", std, {"input": [[1, 2, 3]]}, "input[0]"),  # OpenAI's token arrays
        ("embeddings", std, {"input": "x" * 131_073}, "input"),  # 32,769 tokens
        ("embeddings", std, {"input": ["x" * 100_000] * 5}, "input"),  # 125,000 in all
        ("embeddings", std, {"dimensions": 5000}, "dimensions"),
        ("embeddings", "pplx-embed-v1-4b", {"dimensions": 2561}, "dimensions"),
        ("embeddings", std, {"dimensions": 64}, "dimensions"),
        ("embeddings", std, {"dimensions": "512"}, "dimensions"),
        ("embeddings", std, {"encoding_format": "base64_int4"}, "encoding_format"),
        ("embeddings", std, {"model": ""}, "model"),
        ("contextualized_embeddings", ctx, {"input": ["flat", "list"]}, "input[0]"),
        ("contextualized_embeddings", ctx, {"input": []}, "input"),
        ("contextualized_embeddings", ctx, {"input": [["a"], []]}, "input[1]"),
        ("contextualized_embeddings", ctx, {"input": [["a", ""]]}, "input[0][1]"),
        ("contextualized_embeddings", ctx, {"input": [["a"]] * 513}, "input"),
        ("contextualized_embeddings", ctx, {"input": [["a"] * 500] * 33}, "input"),  # 16,500
        ("contextualized_embeddings", ctx, {"input": [["x" * 70_000, "y" * 70_000]]}, "input[0]"),
        ("contextualized_embeddings", ctx, {"encoding_format": "float"}, "encoding_format"),
    ]
    for resource, model, extra, param in cases:
        create = getattr(client, resource).create
        shape = [["a"]] if resource.startswith("contextualized") else "a"
        with pytest.raises(perplexity.BadRequestError) as raised:
            create(input=shape, model=model, extra_body=extra)
        error = raised.value.body["error"]
        assert (error["param"], error["code"]) == (param, "invalid_request_error"), extra
    # Unknown models, and a model on the other path: 404 model_not_found (as on chat).
    for resource, model, name in [
        ("embeddings", std, "pplx-embed-v2-huge"),
        ("embeddings", std, ctx),
        ("embeddings", std, "sonar"),
        ("contextualized_embeddings", ctx, std),
    ]:
        shape = [["a"]] if resource.startswith("contextualized") else "a"
        with pytest.raises(perplexity.NotFoundError) as missing:
            getattr(client, resource).create(input=shape, model=model, extra_body={"model": name})
        assert missing.value.body["error"]["code"] == "model_not_found"
        assert missing.value.body["error"]["param"] == "model"
    with pytest.raises(openai.BadRequestError) as tokens_in:
        oai(gateway, api_key).embeddings.create(input=[1, 2, 3], model=std)
    assert tokens_in.value.body["param"] == "input"
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        auth = {"Authorization": f"Bearer {api_key}"}
        assert http.get("/v1/embeddings", headers=auth).status_code == 405
        assert http.get("/v1/contextualizedembeddings", headers=auth).status_code == 405
        assert http.post("/v1/embeddings", json={"model": std, "input": "a"}).status_code == 401
        bad_json = http.post("/v1/embeddings", content=b"{", headers=auth)
        assert bad_json.status_code == 400
    broke = api_key_create(group=GroupFactory(), name="Broke").secret
    with pytest.raises(perplexity.APIStatusError) as poor:
        ppx(gateway, broke).embeddings.create(input="a", model=std)
    assert poor.value.status_code == 402
    assert written() == (0, 0)
    assert balance(funded_group) == before


# --- an OpenAI-compatible upstream --------------------------------------------------------------


@pytest.fixture
def embed_models(gateway, upstream):  # type: ignore[no-untyped-def]
    """The catalogue's 0.6b models pointed at the fake server, as an operator would point them
    at a vLLM: $0.02 per 1M tokens (0.02 µ$ a token), 128 dimensions."""
    AIModel.objects.filter(name__in=(STD, CTX)).update(
        upstream_base_url=f"{upstream.url}/v1", input_per_m=20_000, dimensions=128
    )
    AIModel.objects.filter(name=STD).update(upstream_model="up-embed")
    AIModel.objects.filter(name=CTX).update(upstream_model="up-ctx")


@both_modes
def test_an_openai_compatible_upstream_is_reencoded_and_priced_by_our_catalogue(
    gateway, upstream, embed_models, funded_group, api_key
):  # type: ignore[no-untyped-def]
    upstream.usage = {"prompt_tokens": 123_456}
    before = balance(funded_group)
    response = ppx(gateway, api_key).embeddings.create(
        input=["one", "two"], model=STD,
    )  # fmt: skip
    # The upstream got its model name and the texts, asked for floats (no encoding_format: its
    # default) at full length (no dimensions: the gateway cuts).
    assert upstream.hits[-1] == {"model": "up-embed", "input": ["one", "two"]}
    int8 = bytes([64, 256 - 127, 32]) + bytes(125)  # 0.5, -1, 0.25 scaled by 127
    assert [base64.b64decode(d.embedding) for d in response.data] == [int8, int8]
    # 123,456 × 20,000 / 1,000,000 = 2,469.12 → 2,469 µ$, whatever the upstream's cost says.
    assert response.usage.prompt_tokens == 123_456
    assert micros(response.usage.cost.total_cost) == 2_469
    floats = oai(gateway, api_key).embeddings.create(input="one", model=STD)
    packed = struct.pack("<128f", *FAKE_VECTOR)
    assert floats.data[0].embedding == list(struct.unpack("<128f", packed))

    # Contextualized: Perplexity's route and body, its base64_int8 read back and re-encoded.
    ctx = ppx(gateway, api_key).contextualized_embeddings.create(
        input=[["a", "b"], ["c"]], model=CTX,
        encoding_format="base64_binary",
    )  # fmt: skip
    assert upstream.hits[-1] == {"model": "up-ctx", "input": [["a", "b"], ["c"]]}
    assert [[base64.b64decode(c.embedding) for c in d.data] for d in ctx.data] == [
        [b"\x0b" + bytes(15)] * 2,
        [b"\x0b" + bytes(15)],
    ]  # [1, 2, -1, 127, 0…]: bits 0, 1 and 3
    gateway.settled()
    assert balance(funded_group) == before - 3 * 2_469


def test_a_failing_or_wrong_upstream_is_a_502_and_charges_nothing(
    gateway, upstream, embed_models, funded_group, api_key
):  # type: ignore[no-untyped-def]
    before = balance(funded_group)
    client = ppx(gateway, api_key)
    for mode in ("fail", "bad", "short"):
        upstream.mode = mode
        with pytest.raises(perplexity.APIStatusError) as failed:
            client.embeddings.create(input=["one", "two"], model=STD)
        assert failed.value.status_code == 502, mode
    upstream.mode = "ok"
    with pytest.raises(perplexity.BadRequestError) as longer:  # the model has 128 dimensions
        client.embeddings.create(input="one", model=STD, dimensions=256)
    assert longer.value.body["error"]["param"] == "dimensions"
    assert written() == (0, 0)
    assert balance(funded_group) == before
