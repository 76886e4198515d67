"""Malformed amounts in every money field: a clear error naming the field, never a 500, nothing
written or charged. Forms, the grant_credits command and the Management API, at the HTTP level.
"""

from __future__ import annotations

import re

import pytest
from django.core.management import CommandError, call_command

from billing.models import BillingProfile, LedgerEntry, Payment
from core.money import parse_dollars
from keys.models import APIKey
from tests.test_form_fuzz import snapshot

pytestmark = pytest.mark.django_db

MALFORMED = [
    "1e30",
    "1E3",
    "NaN",
    "nan",
    "sNaN",
    "Infinity",
    "-Infinity",
    "inf",
    "1e-9",
    "0.0000001",
    "1e999999999",
    "1e-999999999",
    "9" * 40,
    "9" * 5000,
    "1" + "0" * 30 + ".5",
    "0." + "0" * 40 + "1",
    "1_000",
    "١٢",  # Arabic-Indic digits: Decimal() reads them, people do not mean them
    "12.5.3",
    "--5",
    "0x10",
    "\x00",
]
# Well-formed but not allowed amounts: a refusal, not a crash.
OUT_OF_RANGE = ["-0", "0", "-5", "-0.00", "0.001"]


@pytest.mark.parametrize("text", MALFORMED)
def test_the_parser_refuses_malformed_amounts_with_a_short_message(text):
    with pytest.raises(ValueError) as raised:
        parse_dollars(text)
    assert len(str(raised.value)) < 120  # never echoes a huge input back


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("10", 10_000_000),
        ("$1,234.5", 1_234_500_000),
        ("0.000001", 1),
        ("-0", 0),
        (" 20.00 ", 20_000_000),
    ],
)
def test_the_parser_reads_amounts_exactly(text, micros):
    assert parse_dollars(text) == micros


def field_has_error(html: str, name: str) -> bool:
    """Whether the page marks the input called `name` as invalid (the error is on that field)."""
    tag = re.search(rf'<input[^>]*name="{re.escape(name)}"[^>]*>', html)
    return tag is not None and 'aria-invalid="true"' in tag.group(0)


FORM_FIELDS = {
    # route suffix, the field, the other fields of the form, the error's field name in the page
    "buy-amount": ("credits/", {}),
    "topup-threshold": ("auto-top-up/", {"topup-enabled": "on", "topup-amount": "25"}),
    "topup-amount": ("auto-top-up/", {"topup-enabled": "on", "topup-threshold": "5"}),
}


@pytest.mark.parametrize("field", sorted(FORM_FIELDS))
@pytest.mark.parametrize("text", MALFORMED + OUT_OF_RANGE)
def test_billing_forms_refuse_malformed_amounts(admin_client, group, save_card, field, text):
    if text in ("0", "-0", "-0.00") and field in ("topup-threshold",):
        pytest.skip("a $0 threshold is a valid setting (top up when the balance goes negative)")
    save_card(group)
    BillingProfile.objects.get_or_create(group=group)
    before = snapshot()
    suffix, others = FORM_FIELDS[field]
    response = admin_client.post(f"/g/{group.public_id}/billing/{suffix}", {**others, field: text})
    assert response.status_code == 422, (field, text, response.status_code)
    assert field_has_error(response.content.decode(), field)
    assert snapshot() == before
    assert not Payment.objects.exists() and not LedgerEntry.objects.exists()


@pytest.mark.parametrize("text", MALFORMED + OUT_OF_RANGE)
def test_key_forms_refuse_malformed_limits(admin_client, group, text):
    if text == "0.001":
        pytest.skip("$0.001 is a valid monthly limit")
    response = admin_client.post(
        f"/g/{group.public_id}/keys/new/", {"name": "Server", "monthly_limit": text}
    )
    assert response.status_code in (400, 422), (text, response.status_code)
    assert field_has_error(response.content.decode(), "monthly_limit")
    assert not APIKey.objects.exists()


@pytest.mark.parametrize("text", MALFORMED)
def test_grant_credits_command_refuses_malformed_amounts(group, text):
    with pytest.raises(CommandError):
        call_command(
            "grant_credits", group=group.public_id, amount=text, reason="Support", reference="t1"
        )
    assert not LedgerEntry.objects.exists()
