"""Property-based tests of the Management API against its own OpenAPI description.

schemathesis generates valid and invalid requests for every operation and sends them in-process
to the Django WSGI application, authenticated with an admin management key of a fixture group.
Every response must be documented (status, content type, headers) and match its schema, no
request may cause a 500, and requests that break the schema must be refused with a 4xx.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
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

from tests.management.conftest import build_world

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.fixture
def _keep_test_connection() -> Iterator[None]:
    """Stop the WSGI handler from closing the test's DB connection (and its transaction) after
    each request, as Django's test client does."""
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    yield
    for signal in (request_started, request_finished):
        signal.connect(close_old_connections)


# Loaded once, at collection, from the running app's own /openapi.json (no database involved).
schema = schemathesis.openapi.from_wsgi("/v1/management/openapi.json", get_wsgi_application())
schema.config.generation.update(
    max_examples=25,
    deterministic=True,  # the same cases on every run, so CI is not flaky
    database="none",
    with_security_parameters=False,
)


@pytest.fixture
def world(group, user, settings, _keep_test_connection):  # type: ignore[no-untyped-def]
    """The fixture group with one object of each kind; the rate limit out of the fuzzer's way."""
    settings.MANAGEMENT_API_RATE_LIMIT = 1_000_000
    return build_world(group, user)


@schema.parametrize()
@hypothesis_settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_management_api_conforms_to_its_openapi_description(case, mgmt, world):  # type: ignore[no-untyped-def]
    case.call_and_validate(
        headers={"Authorization": f"Bearer {mgmt['admin'].secret}"}, checks=CHECKS
    )
