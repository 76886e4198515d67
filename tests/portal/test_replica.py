"""The read replica (core/replica.py) against a real PostgreSQL streaming replica.

A session fixture starts a private primary (portal.launcher.PostgresCluster), migrates it, and
makes a hot standby of it with `pg_basebackup -R`. Each test points Django's `default` alias at
that primary and adds the `replica` alias on the standby, with the router installed, as
DATABASE_REPLICA_URL would. Data is committed (no test transaction): the standby only sees
committed WAL. Lag is made for real by pausing WAL replay on the standby
(`pg_wal_replay_pause()`); "down" is the standby stopped with pg_ctl.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from django.db import connections
from django.test import Client, RequestFactory
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from core import replica
from portal.launcher import BASE_DIR, PYTHON, PostgresCluster, wait_for
from tests.portal.test_settings import PRODUCTION_ENV, run_manage


@dataclass
class Pair:
    primary: PostgresCluster
    standby: PostgresCluster

    def sql(self, server: PostgresCluster, query: str) -> list[tuple]:
        with psycopg.connect(server.url, autocommit=True) as c:
            return c.execute(query).fetchall()  # type: ignore[arg-type]

    def caught_up(self, timeout: float = 20) -> None:
        """Wait until the standby has replayed everything the primary has written so far."""
        ((lsn,),) = self.sql(self.primary, "SELECT pg_current_wal_lsn()::text")
        wait_for(
            lambda: self.sql(self.standby, f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn")[
                0
            ][0],
            timeout,
            "the standby to replay the primary's writes",
        )

    def pause(self) -> None:
        self.sql(self.standby, "SELECT pg_wal_replay_pause()")

    def resume(self) -> None:
        with contextlib.suppress(psycopg.Error):
            self.sql(self.standby, "SELECT pg_wal_replay_resume()")

    @contextlib.contextmanager
    def replay_paused(self) -> Iterator[None]:
        self.caught_up()
        self.pause()
        try:
            yield
        finally:
            self.resume()


@pytest.fixture(scope="session")
def pair(tmp_path_factory) -> Iterator[Pair]:  # type: ignore[no-untyped-def]
    reason = PostgresCluster.replication_unavailable()
    if reason is not None:
        pytest.skip(f"no streaming replica can be started here: {reason}")
    base = tmp_path_factory.mktemp("replica")
    (base / "primary").mkdir()
    (base / "standby").mkdir()
    primary = PostgresCluster(base / "primary")
    primary.start()
    standby: PostgresCluster | None = None
    try:
        primary.create_database()
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_REPLICA_URL"}
        env |= {"DATABASE_URL": primary.url, "DJANGO_ENV": "test"}
        subprocess.run(
            [PYTHON, "manage.py", "migrate", "--no-input", "-v", "0"],
            cwd=BASE_DIR, env=env, check=True, timeout=300,
        )  # fmt: skip
        standby = PostgresCluster(base / "standby", standby_of=primary)
        standby.start()
        yield Pair(primary, standby)
    finally:
        for server in (standby, primary):
            if server is not None:
                with contextlib.suppress(Exception):
                    server.stop()


@pytest.fixture
def on_pair(pair, django_db_blocker, settings) -> Iterator[Pair]:  # type: ignore[no-untyped-def]
    """Django reads and writes the pair's primary and reads the standby as `replica`."""
    settings.DATABASE_ROUTERS = ["core.replica.ReplicaRouter"]
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "core.replica.ReplicaPinMiddleware"]
    settings.DATABASE_REPLICA_LAG_CACHE_SECONDS = 0  # measure at every block
    settings.DATABASE_REPLICA_MAX_LAG_SECONDS = 30  # a busy test machine is not "lag"
    settings.CELERY_TASK_ALWAYS_EAGER = True
    with django_db_blocker.unblock():
        default = connections["default"]
        saved = dict(default.settings_dict)
        default.close()
        target = {"HOST": "127.0.0.1", "USER": "postgres", "PASSWORD": "", "NAME": "portal"}
        default.settings_dict.update(target, PORT=str(pair.primary.port))
        connections.settings["default"].update(target, PORT=str(pair.primary.port))
        connections.settings[replica.REPLICA] = {
            **default.settings_dict, "PORT": str(pair.standby.port), "TEST": {"MIRROR": None},
        }  # fmt: skip
        replica.reset_health()
        try:
            yield pair
        finally:
            pair.resume()
            with contextlib.suppress(Exception):
                connections[replica.REPLICA].close()
            with contextlib.suppress(AttributeError):
                del connections[replica.REPLICA]
            del connections.settings[replica.REPLICA]
            default.close()
            default.settings_dict.clear()
            default.settings_dict.update(saved)
            connections.settings["default"].update(saved)
            replica.reset_health()


# --- a world on the primary -----------------------------------------------------------------


@dataclass
class World:
    group: Any
    user: Any
    key: Any
    model: Any
    client: Client

    def event(self, cost: int) -> Any:
        from usage.models import UsageEvent

        return UsageEvent.objects.create(
            request_id=uuid.uuid4().hex, group=self.group, api_key=self.key, model=self.model,
            prompt_tokens=10, completion_tokens=20, cost_micros=cost, created_at=timezone.now(),
        )  # fmt: skip

    def dashboard(self, **query: str) -> Any:
        return self.client.get(
            reverse("usage:dashboard", kwargs={"group_id": self.group.public_id}),
            {"range": "24h", **query},
        )


@pytest.fixture
def world(on_pair) -> World:  # type: ignore[no-untyped-def]
    from keys.services import api_key_create
    from tests.factories import GroupFactory, MembershipFactory, UserFactory
    from usage.catalogue import catalogue_sync
    from usage.models import AIModel

    catalogue_sync()
    user = UserFactory()
    group = GroupFactory()
    MembershipFactory(group=group, user=user, role="admin")
    key = api_key_create(group=group, name="Server").key
    client = Client()
    client.force_login(user)
    w = World(group, user, key, AIModel.objects.get(name="sonar"), client)
    w.event(1_000)
    w.event(2_000)
    return w


def replica_queries(ctx: CaptureQueriesContext) -> list[str]:
    """The queries a block ran on the replica, other than the lag measurement."""
    return [q["sql"] for q in ctx.captured_queries if "pg_last_wal" not in q["sql"]]


def counter(metric: Any, *labels: str) -> float:
    return float(metric.labels(*labels)._value.get())


# --- tests ------------------------------------------------------------------------------------


def test_a_write_on_the_primary_shows_up_on_the_replica_which_refuses_writes(on_pair, world):
    from usage.models import UsageEvent

    event = world.event(3_000)
    on_pair.caught_up()
    found = UsageEvent.objects.using(replica.REPLICA).get(request_id=event.request_id)
    assert found.cost_micros == 3_000
    assert on_pair.sql(on_pair.standby, "SELECT pg_is_in_recovery()") == [(True,)]
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        on_pair.sql(on_pair.standby, "CREATE TABLE t (x int)")
    assert replica.replica_lag(refresh=True) is not None


def test_the_dashboard_and_its_exports_read_the_replica(on_pair, world):
    """With replay paused, an event committed on the primary is not on the dashboard: the page
    read the replica (its queries are on the replica connection, none on the primary's usage)."""
    with on_pair.replay_paused():
        world.event(50_000)  # on the primary only
        before = counter(replica.READS, replica.REPLICA)
        with (
            CaptureQueriesContext(connections[replica.REPLICA]) as on_replica,
            CaptureQueriesContext(connections["default"]) as on_primary,
        ):
            page = world.dashboard()
        assert page.status_code == 200
        assert page.context["usage"].totals.cost_micros == 3_000  # not 53,000: the replica's
        assert any("usage_usageevent" in q for q in replica_queries(on_replica))
        assert not any("usage_usageevent" in q["sql"] for q in on_primary.captured_queries)
        assert counter(replica.READS, replica.REPLICA) == before + 1

        url = reverse("usage:export_raw", kwargs={"group_id": world.group.public_id})
        with CaptureQueriesContext(connections[replica.REPLICA]) as on_replica:
            csv = b"".join(world.client.get(url, {"range": "24h"}).streaming_content).decode()
        assert len(csv.strip().splitlines()) == 1 + 2  # header + the two replicated events
        assert any("usage_usageevent" in q for q in replica_queries(on_replica))

        invoices = reverse("billing:invoices", kwargs={"group_id": world.group.public_id})
        with CaptureQueriesContext(connections[replica.REPLICA]) as on_replica:
            assert world.client.get(invoices).status_code == 200
        assert any("billing_invoice" in q for q in replica_queries(on_replica))


def test_management_api_gets_read_the_replica_and_a_writer_reads_its_own_writes(on_pair, world):
    from management.services import management_key_create

    secret = management_key_create(
        group=world.group, name="Ops", role="admin", actor=world.user
    ).secret
    api = Client(HTTP_AUTHORIZATION=f"Bearer {secret}")
    with on_pair.replay_paused():
        world.event(50_000)
        with CaptureQueriesContext(connections[replica.REPLICA]) as on_replica:
            usage = api.get("/v1/management/usage", {"range": "24h"})
        assert usage.status_code == 200, usage.content
        assert usage.json()["totals"]["cost_micros"] == 3_000  # the replica's view
        assert any("usage_usageevent" in q for q in replica_queries(on_replica))

        created = api.post(
            "/v1/management/keys", {"name": "Fresh"}, content_type="application/json"
        )
        assert created.status_code == 201, created.content
        key_id = created.json()["id"]
        # The writer is pinned to the primary: its new key is there at once.
        assert api.get(f"/v1/management/keys/{key_id}").status_code == 200
        assert (
            api.get("/v1/management/usage", {"range": "24h"}).json()["totals"]["cost_micros"]
            == 53_000
        )
        # Another client is not pinned: it still reads the replica.
        request = RequestFactory().get("/", HTTP_AUTHORIZATION="Bearer someone-else")
        assert not replica.pinned_to_primary(request)
        with replica.reading_from_replica(request) as alias:
            assert alias == replica.REPLICA


def test_lag_past_the_bound_reads_the_primary_and_is_on_metrics(on_pair, world, settings):
    from gateway import metrics

    settings.DATABASE_REPLICA_MAX_LAG_SECONDS = 1
    with on_pair.replay_paused():
        world.event(50_000)
        wait_for(lambda: (replica.replica_lag(refresh=True) or 0) > 1.2, 20, "lag past 1 s")
        fallbacks = counter(replica.FALLBACKS, "lag")
        with CaptureQueriesContext(connections[replica.REPLICA]) as on_replica:
            page = world.dashboard()
        assert page.status_code == 200
        assert page.context["usage"].totals.cost_micros == 53_000  # the primary's
        assert replica_queries(on_replica) == []
        assert counter(replica.FALLBACKS, "lag") == fallbacks + 1
        body = metrics.exposition()[0].decode()
        lag_line = next(
            ln for ln in body.splitlines() if ln.startswith("portal_db_replica_lag_seconds{")
        )
        assert float(lag_line.split()[-1]) > 1
        assert 'portal_db_replica_up{database="replica"} 1.0' in body
        assert 'portal_db_replica_fallbacks_total{reason="lag"}' in body
    on_pair.caught_up()
    assert replica.replica_lag(refresh=True) == 0  # caught up and streaming: no lag


def test_replica_stopped_reads_the_primary_and_the_page_is_still_200(on_pair, world, settings):
    from gateway import metrics

    world.event(50_000)
    on_pair.caught_up()
    settings.DATABASE_REPLICA_LAG_CACHE_SECONDS = 3600  # the replica looked fine a moment ago
    try:
        first = world.dashboard()
        assert first.status_code == 200
        assert first.context["usage"].totals.cost_micros == 53_000
        on_pair.standby.stop()
        # Half-way: the cached check says "usable", the page's query fails, the view is run
        # again on the primary.
        errors = counter(replica.FALLBACKS, "error")
        page = world.dashboard()
        assert page.status_code == 200
        assert page.context["usage"].totals.cost_micros == 53_000
        assert counter(replica.FALLBACKS, "error") == errors + 1
        # Then: the next check finds it down; every replica block reads the primary.
        settings.DATABASE_REPLICA_LAG_CACHE_SECONDS = 0
        down = counter(replica.FALLBACKS, "down")
        started = time.monotonic()
        for _ in range(3):
            assert world.dashboard().status_code == 200
        assert time.monotonic() - started < 10  # refused at once on loopback, no long timeouts
        assert counter(replica.FALLBACKS, "down") == down + 3
        assert 'portal_db_replica_up{database="replica"} 0.0' in metrics.exposition()[0].decode()
        api_url = reverse("billing:invoices", kwargs={"group_id": world.group.public_id})
        assert world.client.get(api_url).status_code == 200
    finally:
        on_pair.standby.start()
    on_pair.caught_up()
    assert world.dashboard().status_code == 200
    assert replica.replica_lag() is not None  # back in use


def test_a_purchase_flow_reads_its_balance_from_the_primary(on_pair, world, monkeypatch):
    """The replica still says the balance is above the auto top-up threshold; the primary says
    below. The automatic top-up, run even inside a replica block, decides on the primary's."""
    from billing import payments
    from billing.models import BillingProfile, CreditAccount, Payment
    from billing.services import ledger_post

    group = world.group
    ledger_post(group=group, amount_micros=20_000_000, kind="adjustment", reference="seed")
    BillingProfile.objects.update_or_create(
        group=group,
        defaults={"auto_top_up_enabled": True, "auto_top_up_threshold_micros": 10_000_000},
    )
    monkeypatch.setattr(payments, "charge", lambda *, payment: payment)  # no card to charge
    with on_pair.replay_paused():
        ledger_post(group=group, amount_micros=-15_000_000, kind="adjustment", reference="spend")
        with replica.reading_from_replica() as alias:
            assert alias == replica.REPLICA
            stale = CreditAccount.objects.get(group=group).balance_micros
            assert stale == 20_000_000  # what the replica says
            with CaptureQueriesContext(connections[replica.REPLICA]) as on_replica:
                payment = payments.auto_top_up_run(group_id=group.pk)
        assert payment is not None  # decided on 5,000,000 < 10,000,000: the primary's balance
        assert Payment.objects.filter(group=group, kind="auto_top_up").count() == 1
        assert not any("billing_creditaccount" in q for q in replica_queries(on_replica))

        # The Billing page (balance, the purchase form) reads the primary too.
        url = reverse("billing:overview", kwargs={"group_id": group.public_id})
        with CaptureQueriesContext(connections[replica.REPLICA]) as on_replica:
            page = world.client.get(url)
        assert page.status_code == 200
        assert page.context["account"].balance_micros == 5_000_000
        assert replica_queries(on_replica) == []


def test_without_a_replica_everything_reads_the_default_database(db):
    assert not replica.configured()
    with replica.reading_from_replica() as alias:
        assert alias == replica.DEFAULT
        assert replica.read_alias() == replica.DEFAULT
    assert replica.replica_lag() is None


def test_the_setting_adds_the_alias_the_router_and_the_pin_and_passes_the_deploy_check():
    code = (
        "from django.conf import settings as s; r = s.DATABASES.get('replica') or {};"
        "print(r.get('HOST'), r.get('PORT'), r.get('OPTIONS'), s.DATABASE_ROUTERS,"
        " 'core.replica.ReplicaPinMiddleware' in s.MIDDLEWARE)"
    )
    env = PRODUCTION_ENV | {"DATABASE_REPLICA_URL": "postgres://ro:pw@replica.internal:5433/portal"}
    with_replica = run_manage("shell", "--no-imports", "-c", code, env=env)
    assert with_replica.returncode == 0, with_replica.stderr
    assert with_replica.stdout.split("\n")[0] == (
        "replica.internal 5433 {'connect_timeout': 1} ['core.replica.ReplicaRouter'] True"
    )
    without = run_manage("shell", "--no-imports", "-c", code, env=PRODUCTION_ENV)
    assert without.stdout.split("\n")[0] == "None None None [] False"
    deploy = run_manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
