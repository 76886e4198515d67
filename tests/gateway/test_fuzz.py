"""Property-based tests of the gateway against its own OpenAPI description (/v1/openapi.json).

schemathesis generates valid and invalid requests for every route and sends them over HTTP to
the real gateway (uvicorn on loopback), with a funded key. No request may cause a 500, every
response must be documented and match its schema, requests that break the schema must be refused
with a 4xx — and a refused request writes nothing: only a 200 adds a usage event and a debit.
"""

from __future__ import annotations

import copy
import json
import time

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from billing.models import LedgerEntry
from gateway.openapi import SPEC
from tests.conftest import RESULTS
from usage.catalogue import DEFAULT_FILE, read_file
from usage.models import UsageEvent

pytestmark = [pytest.mark.slow]

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
TRIED: dict[str, dict[str, int]] = {}
ASYNC_JOBS: set[str] = set()  # async jobs seen: a create replayed by idempotency key meters nothing


def fuzz_spec() -> dict:
    """The served description, with catalogue names offered for `model` so requests get through
    to the upstream and are metered (any other string is still generated)."""
    spec = copy.deepcopy(SPEC)
    models = read_file(DEFAULT_FILE)
    schemas = spec["components"]["schemas"]
    agent = sorted(n for n, m in models.items() if "agent" in str(m.get("api", "chat")))
    embed = sorted(n for n, m in models.items() if m.get("api") == "embeddings")
    plain = [n for n in embed if not models[n].get("contextualized")]
    contextual = [n for n in embed if models[n].get("contextualized")]
    for name, names in (("EmbeddingsRequest", plain), ("ContextualizedEmbeddingsRequest",
                                                         contextual)):  # fmt: skip
        schemas[name]["properties"]["model"] = {
            "anyOf": [{"type": "string", "enum": names}, {"type": "string", "minLength": 1}]
        }
    for name, names in (("ChatRequest", sorted(models)), ("AgentRequest", agent)):
        schemas[name]["properties"]["model"] = {
            "anyOf": [{"type": "string", "enum": names}, {"type": "string", "minLength": 1}],
            **({"nullable": True} if name == "AgentRequest" else {}),
        }
    # The three ways a create is answered (and metered): at once, streamed, in the background.
    asked = {"model": agent[0], "input": "What is the tallest building in the world today?"}
    examples = {
        "plain": {"value": asked},
        "streamed": {"value": asked | {"stream": True}},
        "background": {"value": asked | {"background": True}},
    }
    for root in ("/v1/responses", "/v1/agent"):
        spec["paths"][root]["post"] = create = copy.deepcopy(spec["paths"][root]["post"])
        create["requestBody"]["content"]["application/json"]["examples"] = examples
    return spec


schema = schemathesis.openapi.from_dict(fuzz_spec())
schema.config.generation.update(
    max_examples=60,
    deterministic=True,  # the same cases on every run, so CI is not flaky
    database="none",
    with_security_parameters=False,
)


@pytest.fixture(scope="module", autouse=True)
def _report():  # type: ignore[no-untyped-def]
    yield
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gateway-fuzz.json").write_text(json.dumps(TRIED, indent=1, sort_keys=True))


def written() -> tuple[int, int]:
    return UsageEvent.objects.count(), LedgerEntry.objects.filter(kind="usage").count()


@schema.parametrize()
@hypothesis_settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_gateway_conforms_and_writes_only_for_a_200(case, gateway, api_key):  # type: ignore[no-untyped-def]
    before = written()
    response = case.call_and_validate(
        base_url=gateway.url, headers={"Authorization": f"Bearer {api_key}"}, checks=CHECKS
    )
    tried = TRIED.setdefault(case.operation.label, {})
    tried[str(response.status_code)] = tried.get(str(response.status_code), 0) + 1
    created = case.method == "POST" and not case.path.endswith("/cancel")
    metered = created and response.status_code == 200
    if metered and case.path == "/async/chat/completions":
        job_id = response.json()["id"]
        metered = job_id not in ASYNC_JOBS  # (run eagerly: metered before the create answers)
        ASYNC_JOBS.add(job_id)
    # A request that cost nothing (a short embeddings input: usage/pricing.py rounding) is a
    # usage event without a ledger debit.
    debited = metered and not (
        "embeddings" in case.path and response.json()["usage"]["cost"]["total_cost"] == 0
    )
    after = landed((before[0] + metered, before[1] + debited)) if metered else written()
    assert after == (before[0] + metered, before[1] + debited), (response.status_code, case.body)


def landed(expected: tuple[int, int], timeout: float = 10.0) -> tuple[int, int]:
    """The writes once `expected` is reached (or the timeout): a background response is metered
    when it has run, and a stream the client hung up on (schemathesis reads an event stream only
    in part) is metered for its delivered part just after the hang-up."""
    deadline = time.monotonic() + timeout
    while (now := written()) != expected and time.monotonic() < deadline:
        time.sleep(0.02)
    return now


def test_the_description_is_served(gateway):  # type: ignore[no-untyped-def]
    response = httpx.get(f"{gateway.url}/v1/openapi.json")
    assert response.status_code == 200
    assert response.json() == SPEC
    assert httpx.post(f"{gateway.url}/v1/openapi.json").status_code == 405


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("options", [5, 1.5, True, "include_usage", [], [{"include_usage": True}]])
@pytest.mark.parametrize("stream", [True, False])
def test_a_non_object_stream_options_is_a_400_naming_it(gateway, api_key, options, stream):  # type: ignore[no-untyped-def]
    # Before: the gateway called dict() on it while building the upstream request, a 500.
    before = written()
    body = {"model": "sonar", "messages": [{"role": "user", "content": "x"}], "stream": stream}
    with gateway.client(api_key) as c:
        response = c.post("/v1/chat/completions", json=body | {"stream_options": options})
    assert response.status_code == 400, response.text
    err = response.json()["error"]
    assert err["code"] == "invalid_request_error" and err["param"] == "stream_options"
    assert written() == before


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("options", [None, {}, {"include_usage": False}])
def test_an_object_or_null_stream_options_is_served(gateway, api_key, options):  # type: ignore[no-untyped-def]
    body = {"model": "sonar", "messages": [{"role": "user", "content": "x"}], "stream": True}
    with gateway.client(api_key) as c:
        response = c.post("/v1/chat/completions", json=body | {"stream_options": options})
    assert response.status_code == 200
    assert response.text.endswith("data: [DONE]\n\n")
