"""Reads from a PostgreSQL streaming replica, chosen explicitly, with a lag bound and a fallback.

With `DATABASE_REPLICA_URL` set, portal/settings.py adds the `replica` database alias, installs
`ReplicaRouter` and `ReplicaPinMiddleware`. Nothing reads from the replica unless it runs inside
`reading_from_replica()`: the Usage Metrics page and its CSV exports, the invoice history pages
and the Management API's GET endpoints use it; everything else (balances, write flows, services,
Celery tasks, the gateway) reads the primary as before. Without the setting the router is not
installed and `reading_from_replica()` does nothing.

Why explicit and not "every read goes to the replica": most of the portal's reads decide
something — the balance before a purchase or an automatic top-up, a key's state before it is
changed, a form's current values — and a read a few seconds old there is a bug. Sending all reads
to the replica would need every one of those to opt out (and a forgotten one fails only under
lag); here a stale read can only happen where someone chose it.

Rules, in `ReplicaRouter.db_for_read`: inside the context the replica is read, unless the
primary connection is in a transaction (`transaction.atomic`: a write flow reads what it is about
to change from the primary), or the replica is not usable. Writes always go to the primary, also
for objects loaded from the replica.

Usable means: it answered the lag query within the last `DATABASE_REPLICA_LAG_CACHE_SECONDS`
and its lag was at most `DATABASE_REPLICA_MAX_LAG_SECONDS`. Lag is `now() -
pg_last_xact_replay_timestamp()` on the replica, or 0 when it has replayed everything it received
and its WAL receiver is streaming (an idle primary is not lag). A replica that is down, behind or
erroring makes the block read the primary, counted in `portal_db_replica_fallbacks_total`; a
view decorated with `reading_from_replica()` that fails on the replica half-way is run again on
the primary, so a page never fails because the replica went away.

Read-your-writes: after a successful unsafe request (POST, PATCH, DELETE…), the client (its
Authorization header, else its session cookie) reads from the primary for
`DATABASE_REPLICA_PIN_SECONDS` (a Redis key), so a Management API client that creates a key and
then GETs it never sees a 404 caused by lag.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import redis
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.http import HttpRequest, HttpResponse
from prometheus_client import Counter, Gauge

from core.redis import get_redis

logger = logging.getLogger("portal.replica")

DEFAULT = "default"
REPLICA = "replica"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
PIN_PREFIX = "portal:replica:pin:"

# 0 when the replica has replayed all it received and is streaming; else the age of the last
# transaction it replayed; NULL (unknown: treated as too far behind) when it replayed none yet.
LAG_SQL = """
SELECT CASE
  WHEN NOT pg_is_in_recovery() THEN 0
  WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn()
       AND EXISTS (SELECT 1 FROM pg_stat_wal_receiver) THEN 0
  ELSE EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8
END
"""

LAG = Gauge(
    "portal_db_replica_lag_seconds",
    "Replication lag of the read replica (now - last replayed transaction; 0 when caught up); "
    "-1 when the replica did not answer.",
    ["database"],  # labelled, so that nothing is exported where no replica is configured
    multiprocess_mode="mostrecent",
)
UP = Gauge(
    "portal_db_replica_up",
    "1 when the read replica answered its last lag query, else 0.",
    ["database"],
    multiprocess_mode="mostrecent",
)
READS = Counter(
    "portal_db_replica_reads_total",
    "Blocks that asked for the read replica (reading_from_replica), by the database they read.",
    ["database"],
)
FALLBACKS = Counter(
    "portal_db_replica_fallbacks_total",
    "Replica reads sent to the primary instead: lag (past DATABASE_REPLICA_MAX_LAG_SECONDS), "
    "down (no answer), error (failed half-way, run again on the primary), pinned (the client "
    "wrote a moment ago).",
    ["reason"],
)

_target: contextvars.ContextVar[str | None] = contextvars.ContextVar("replica_target", default=None)
F = TypeVar("F", bound=Callable[..., Any])


# --- configuration and health ------------------------------------------------------------------


def configured() -> bool:
    """Whether a replica alias exists (DATABASE_REPLICA_URL, or a test that added one)."""
    return REPLICA in connections.settings


@dataclass
class _Health:
    checked_at: float = float("-inf")  # time.monotonic() of the last lag query
    lag: float | None = None  # seconds; None: the replica did not answer
    error: str = ""


_health = _Health()
_health_lock = threading.Lock()


def measure_lag() -> float | None:
    """Ask the replica for its lag now (seconds); None when it does not answer."""
    conn = connections[REPLICA]
    try:
        with conn.cursor() as cursor:
            cursor.execute(LAG_SQL)
            (lag,) = cursor.fetchone()
    except (DatabaseError, InterfaceError) as exc:
        _close_quietly(conn)
        _health.error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None
    return float("inf") if lag is None else max(0.0, float(lag))


def replica_lag(*, refresh: bool = False) -> float | None:
    """The replica's lag, measured at most DATABASE_REPLICA_LAG_CACHE_SECONDS ago (per process);
    None when it is down or not configured."""
    if not configured():
        return None
    now = time.monotonic()
    with _health_lock:
        if refresh or now - _health.checked_at >= settings.DATABASE_REPLICA_LAG_CACHE_SECONDS:
            lag = measure_lag()
            _health.checked_at, _health.lag = time.monotonic(), lag
            UP.labels(REPLICA).set(0 if lag is None else 1)
            LAG.labels(REPLICA).set(-1 if lag is None else min(lag, 1e9))
            if lag is None:
                logger.warning("read replica unavailable: %s", _health.error)
        return _health.lag


def mark_down(reason: str) -> None:
    """The replica failed during a request: read the primary until the next lag check."""
    with _health_lock:
        _health.checked_at, _health.lag = time.monotonic(), None
    UP.labels(REPLICA).set(0)
    LAG.labels(REPLICA).set(-1)
    FALLBACKS.labels(reason).inc()


def reset_health() -> None:
    """Forget the cached measurement (tests)."""
    with _health_lock:
        _health.checked_at, _health.lag, _health.error = float("-inf"), None, ""


def _close_quietly(conn: BaseDatabaseWrapper) -> None:
    with contextlib.suppress(Exception):
        conn.close()


def _choose(pinned: bool) -> str:
    """The alias a replica block reads, counting why it is not the replica."""
    if pinned:
        reason = "pinned"
    else:
        lag = replica_lag()
        if lag is not None and lag <= settings.DATABASE_REPLICA_MAX_LAG_SECONDS:
            READS.labels(REPLICA).inc()
            return REPLICA
        reason = "down" if lag is None else "lag"
    FALLBACKS.labels(reason).inc()
    READS.labels(DEFAULT).inc()
    return DEFAULT


# --- read-your-writes --------------------------------------------------------------------------


def client_identity(request: HttpRequest) -> str | None:
    """Who is asking: their Authorization header, else their session cookie (hashed)."""
    raw = request.headers.get("Authorization") or request.COOKIES.get(settings.SESSION_COOKIE_NAME)
    return hashlib.sha256(raw.encode()).hexdigest()[:32] if raw else None


def pin_to_primary(request: HttpRequest) -> None:
    identity = client_identity(request)
    if identity is None:
        return
    try:
        get_redis().set(
            PIN_PREFIX + identity, 1, px=int(settings.DATABASE_REPLICA_PIN_SECONDS * 1000)
        )
    except redis.RedisError:
        logger.warning("could not pin a client to the primary (Redis unavailable)")


def pinned_to_primary(request: HttpRequest | None) -> bool:
    """Whether this client wrote in the last DATABASE_REPLICA_PIN_SECONDS (Redis down: yes)."""
    identity = client_identity(request) if request is not None else None
    if identity is None:
        return False
    try:
        return bool(get_redis().exists(PIN_PREFIX + identity))
    except redis.RedisError:
        return True


class ReplicaPinMiddleware:
    """After a successful unsafe request, the client reads the primary for a few seconds."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if request.method not in SAFE_METHODS and response.status_code < 400 and configured():
            pin_to_primary(request)
        return response


# --- routing -----------------------------------------------------------------------------------


def read_alias() -> str:
    """The alias reads go to here and now (for raw SQL and querysets evaluated later)."""
    target = _target.get()
    if target is None or target == DEFAULT or connections[DEFAULT].in_atomic_block:
        return DEFAULT
    return target


def read_connection() -> BaseDatabaseWrapper:
    """`connections[read_alias()]`: what raw SQL of a replica-readable selector uses."""
    return cast(BaseDatabaseWrapper, connections[read_alias()])


class ReplicaRouter:
    """Reads inside `reading_from_replica()` go to the replica (if usable); all else to default."""

    def db_for_read(self, model: Any, **hints: Any) -> str:
        return read_alias()

    def db_for_write(self, model: Any, **hints: Any) -> str:
        return DEFAULT  # also for an instance loaded from the replica

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool | None:
        dbs = {DEFAULT, REPLICA}
        return True if obj1._state.db in dbs and obj2._state.db in dbs else None

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool | None:
        return False if db == REPLICA else None


class reading_from_replica(contextlib.ContextDecorator):
    """Read from the replica inside this block, when it is usable (else the primary).

        with reading_from_replica(request):       # `request`: honour the read-your-writes pin
            usage = usage_for(...)

        @reading_from_replica()                   # on a view: also re-runs it on the primary
        def dashboard(request): ...               # when the replica fails half-way

    Entering decides once for the whole block, so one page reads one database. A no-op when no
    replica is configured.
    """

    def __init__(self, request: HttpRequest | None = None) -> None:
        self.request = request
        self._tokens: list[contextvars.Token] = []

    def __enter__(self) -> str:
        alias = DEFAULT
        if configured():
            alias = _choose(pinned_to_primary(self.request))
        self._tokens.append(_target.set(alias))
        return alias

    def __exit__(self, *exc: object) -> None:
        _target.reset(self._tokens.pop())

    def __call__(self, view: F) -> F:  # type: ignore[override]
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            with reading_from_replica(request) as alias:
                if alias == DEFAULT:
                    return view(request, *args, **kwargs)
                try:
                    return view(request, *args, **kwargs)
                except (OperationalError, InterfaceError) as exc:
                    logger.warning("read replica failed during %s: %s", request.path, exc)
                    _close_quietly(connections[REPLICA])
                    mark_down("error")
            with on_primary():
                return view(request, *args, **kwargs)

        return cast(F, wrapper)


@contextlib.contextmanager
def on_primary() -> Iterator[None]:
    """Read from the primary inside this block, even within a `reading_from_replica()`."""
    token = _target.set(DEFAULT)
    try:
        yield
    finally:
        _target.reset(token)
