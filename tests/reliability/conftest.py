"""One private deployment (PostgreSQL, Redis, fake upstream, portal under uvicorn) per session."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.conftest import RESULTS
from tests.reliability.stack import Stack, build, ledger_invariants


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    yield from build(tmp_path_factory.mktemp("reliability"))


@pytest.fixture
def invariants(stack) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """After the test: every balance is the sum of its entries; usage = debits, one each."""
    yield
    found = ledger_invariants(stack)
    assert found["unbalanced_accounts"] == 0, found
    assert found["events"] == found["debits"], found
    assert found["events_cost_micros"] == found["debits_micros"], found
    assert found["events_without_debit"] == 0, found


def record(name: str, figures: dict) -> None:
    """Keep a test's figures in test-results/reliability.json (docs/reliability.md quotes them)."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "reliability.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[name] = figures
    path.write_text(json.dumps(data, indent=1, sort_keys=True))
    print(name, json.dumps(figures))
