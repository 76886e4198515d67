from __future__ import annotations

import pytest

from billing.services import ledger_post

pytestmark = pytest.mark.django_db


def test_billing_page_shows_balance_tier_and_transactions(member_client, group):
    ledger_post(
        group=group,
        amount_micros=60_000_000,
        kind="purchase",
        reference="pi_a",
        description="Credit purchase",
    )
    ledger_post(group=group, amount_micros=-1_234_567, kind="usage", reference="usage:r1")
    html = member_client.get(f"/g/{group.public_id}/billing/").content.decode()
    assert "$58.77" in html  # 60 − 1.234567 = 58.765433 → $58.77
    assert "Tier 1" in html  # $60 purchased ≥ $50
    assert "Credit purchase" in html and "$60.00" in html
    assert "Your API keys are blocked" not in html


def test_blocked_banner_when_balance_is_used_up(admin_client, group):
    html = admin_client.get(f"/g/{group.public_id}/billing/").content.decode()
    assert "Your API keys are blocked" in html
    assert "$0.00" in html
