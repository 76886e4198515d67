"""Prometheus metrics of the gateway, served at GET /metrics.

Who may read them: with METRICS_TOKEN set (required when DJANGO_ENV=production), a request
carrying `Authorization: Bearer <token>`; any other request gets 401, wherever it comes from.
Without a token (development), only clients on the loopback interface; everyone else gets 404, as
if the path did not exist.

Several worker processes (uvicorn --workers N): set PROMETHEUS_MULTIPROC_DIR to an empty
directory shared by the workers (the Dockerfile does); each worker then writes its samples there
and /metrics, whichever worker answers, adds them up. Without it, the numbers are the answering
worker's own.
"""

from __future__ import annotations

import hmac
import os
from typing import Any

from django.conf import settings
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

REQUESTS = Counter(
    "portal_gateway_requests_total",
    "Gateway requests answered, by model and HTTP status.",
    ["model", "status"],
)
DURATION = Histogram(
    "portal_gateway_request_duration_seconds",
    "Time from the request's arrival to the end of the response, by model and status.",
    ["model", "status"],
    buckets=BUCKETS,
)
UPSTREAM = Histogram(
    "portal_gateway_upstream_duration_seconds",
    "Time the model server took: to the whole body, or to the first event of a stream.",
    ["model"],
    buckets=BUCKETS,
)
METERING_LAG = Histogram(
    "portal_gateway_metering_lag_seconds",
    "Time from the upstream's usage to the committed usage event and ledger debit.",
    buckets=BUCKETS,
)
METER_BATCH = Histogram(
    "portal_gateway_meter_batch_size",
    "Requests written per metering statement (group commit).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
IN_FLIGHT = Gauge(
    "portal_gateway_requests_in_flight",
    "Requests being handled.",
    multiprocess_mode="livesum",
)

_children: dict[tuple[str, int], tuple[Any, Any]] = {}


def observe_request(model: str, status: int, seconds: float) -> None:
    pair = _children.get((model, status))
    if pair is None:
        label = str(status)
        pair = (REQUESTS.labels(model, label), DURATION.labels(model, label))
        if len(_children) < 10_000:  # bounded: models × statuses
            _children[(model, status)] = pair
    pair[0].inc()
    pair[1].observe(seconds)


def access(scope: dict[str, Any]) -> int:
    """200 if this request may read the metrics, else the status to answer (401 or 404)."""
    token = settings.METRICS_TOKEN
    if token:
        for name, value in scope["headers"]:
            if name == b"authorization":
                return 200 if hmac.compare_digest(value, f"Bearer {token}".encode()) else 401
        return 401
    client = scope.get("client")
    return 200 if client is not None and client[0] in ("127.0.0.1", "::1") else 404


def allowed(scope: dict[str, Any]) -> bool:
    return access(scope) == 200


def exposition() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
