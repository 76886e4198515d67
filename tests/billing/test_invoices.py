from __future__ import annotations

import io
import re
import threading
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction
from django.db.models import Sum
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pypdf import PdfReader

from billing.invoicing import InvoiceError
from billing.invoicing.allocation import allocate_cents
from billing.invoicing.credit_notes import credit_note_issue
from billing.invoicing.generation import invoice_generate
from billing.invoicing.periods import period_from_key, period_just_closed
from billing.models import CreditAccount, Invoice, InvoiceLine, LedgerEntry
from billing.pdf import invoice_pdf
from core.money import micros_to_cents
from keys.services import api_key_create
from tests.billing.invoice_world import NOV, OCT, agent_usage, credit, usage
from tests.factories import GroupFactory
from usage.catalogue import catalogue_sync
from usage.models import AIModel

pytestmark = pytest.mark.django_db
OCTOBER = period_from_key("2025-10")
NOVEMBER = period_from_key("2025-11")


@pytest.fixture
def world(group):  # type: ignore[no-untyped-def]
    catalogue_sync()
    return {
        "group": group,
        "sonar": AIModel.objects.get(name="sonar"),
        "pro": AIModel.objects.get(name="sonar-pro"),
        "k1": api_key_create(group=group, name="Server").key,
        "k2": api_key_create(group=group, name="Laptop").key,
    }


def ledger_sum(group, start, end, kind=None) -> int:  # type: ignore[no-untyped-def]
    qs = LedgerEntry.objects.filter(account__group=group, created_at__gte=start, created_at__lt=end)
    if kind:
        qs = qs.filter(kind=kind)
    return qs.aggregate(s=Sum("amount_micros"))["s"] or 0


def balance_at(group, moment) -> int:  # type: ignore[no-untyped-def]
    return (
        LedgerEntry.objects.filter(account__group=group, created_at__lt=moment).aggregate(
            s=Sum("amount_micros")
        )["s"]
        or 0
    )


def check_invoice(inv: Invoice) -> None:
    """The invariants every invoice keeps."""
    lines = list(inv.lines.all())
    billed = [ln for ln in lines if ln.billed]
    assert inv.total_cents == sum(ln.amount_cents for ln in billed)
    assert inv.usage_micros == sum(ln.amount_micros for ln in billed)
    assert inv.total_cents == micros_to_cents(inv.usage_micros)
    period_lines = [ln for ln in billed if ln.section == "usage"]
    assert sum(ln.amount_micros for ln in period_lines) == -ledger_sum(
        inv.group, inv.period_start, inv.period_end, "usage"
    )
    assert inv.closing_balance_micros == (
        inv.opening_balance_micros
        + inv.purchases_micros
        + inv.refunds_micros
        + inv.other_credits_micros
        - inv.usage_micros
    )
    assert inv.closing_balance_micros == balance_at(inv.group, inv.period_end)


# --- Periods and rounding --------------------------------------------------------------------


def test_periods_parse_and_the_scheduled_run_invoices_the_month_that_just_closed():
    assert (OCTOBER.start, OCTOBER.end) == (OCT, NOV)
    assert period_from_key("2025-12").end.year == 2026
    assert period_just_closed(NOV + timedelta(minutes=10), "month").key == "2025-10"
    week = period_from_key("2026-W44")
    assert week.start.weekday() == 0 and week.end - week.start == timedelta(days=7)
    assert period_just_closed(week.end + timedelta(minutes=10), "week").key == "2026-W44"
    for bad in ("2026-13", "2026-1", "26-10", "2026-W54", ""):
        with pytest.raises(InvoiceError):
            period_from_key(bad)


def test_many_tiny_amounts_add_up_to_the_rounded_total_not_to_zero():
    # 1,000 lines of 0.4 cent each: rounding each line alone would show $0.00 for $4.00 charged.
    cents = allocate_cents([4_000] * 1_000)
    assert sum(cents) == 400
    assert set(cents) == {0, 1}


def test_half_cents_round_up_once_on_the_total():
    assert allocate_cents([5_000]) == [1]  # $0.005 → $0.01
    assert allocate_cents([5_000, 5_000]) == [1, 0]  # $0.01 exactly; first line gets the cent
    assert allocate_cents([1_234_999, 15_001]) == [123, 2]  # $1.249999 + $0.015001 = $1.25
    assert allocate_cents([4_999]) == [0]
    assert allocate_cents([]) == []


@given(st.lists(st.integers(min_value=0, max_value=50_000_000), max_size=60))
def test_allocation_sums_to_the_rounded_total_and_moves_no_line_a_cent(amounts):  # type: ignore[no-untyped-def]
    cents = allocate_cents(amounts)
    assert sum(cents) == micros_to_cents(sum(amounts))
    for micros, c in zip(amounts, cents, strict=True):
        assert abs(c * 10_000 - micros) < 10_000


# --- Generation ------------------------------------------------------------------------------


def test_invoice_has_a_line_per_model_and_key_labelled_with_the_keys_last_four(world):
    g, k1, k2 = world["group"], world["k1"], world["k2"]
    credit(g, 50_000_000, OCT + timedelta(days=1))
    credit(g, 5_000_000, OCT + timedelta(days=2), kind="promotional")
    for i in range(3):
        usage(g, k1, world["sonar"], OCT + timedelta(days=3, hours=i), cost=1_234_567, searches=1)
    usage(g, k1, world["pro"], OCT + timedelta(days=4), cost=2_000_001, prompt=7, completion=9)
    usage(g, k2, world["sonar"], OCT + timedelta(days=5), cost=333)
    usage(g, k2, world["sonar"], NOV + timedelta(hours=1), cost=999_999)  # next month: not here

    inv = invoice_generate(group=g, period=OCTOBER).invoice
    assert inv is not None
    assert re.fullmatch(r"INV-\d{4}-\d{6}", inv.number)
    lines = {ln.label: ln for ln in inv.lines.filter(section="usage")}
    assert set(lines) == {
        f"sonar ({k1.last_four})",
        f"sonar-pro ({k1.last_four})",
        f"sonar ({k2.last_four})",
    }
    s1 = lines[f"sonar ({k1.last_four})"]
    assert (s1.requests, s1.prompt_tokens, s1.completion_tokens, s1.search_queries) == (
        3,
        300,
        600,
        3,
    )
    assert s1.amount_micros == 3_703_701
    assert lines[f"sonar-pro ({k1.last_four})"].prompt_tokens == 7
    assert inv.usage_micros == 3_703_701 + 2_000_001 + 333
    assert inv.total_cents == 570  # $5.704035 → $5.70
    assert inv.purchases_micros == 50_000_000
    assert inv.other_credits_micros == 5_000_000
    assert inv.opening_balance_micros == 0
    assert inv.closing_balance_micros == 55_000_000 - 5_704_035
    credits = list(inv.lines.exclude(section__in=("usage", "late_usage")).order_by("position"))
    assert [(ln.section, ln.amount_cents) for ln in credits] == [
        ("purchase", 5_000),
        ("other", 500),
    ]
    check_invoice(inv)


def test_agent_api_tool_fees_are_lines_per_tool_and_key_on_the_page_and_the_pdf(
    world, admin_client
):  # type: ignore[no-untyped-def]
    """perplexity/sonar: input $0.25/M, output $2.50/M, cache reads $0.0625/M; web_search
    $0.0025 and fetch_url $0.0005 per invocation (usage/catalogue.toml)."""
    g, k1, k2 = world["group"], world["k1"], world["k2"]
    agent = AIModel.objects.get(name="perplexity/sonar")
    credit(g, 20_000_000, OCT + timedelta(days=1))
    usage(g, k1, world["sonar"], OCT + timedelta(days=2), cost=1_234_567)
    # 600 uncached input 150 + output 750 + 400 cached 25 = 925; tools 3×2,500 + 2×500
    agent_usage(g, k1, agent, OCT + timedelta(days=3), cached=400,
                tools={"web_search": 3, "fetch_url": 2})  # fmt: skip
    agent_usage(g, k1, agent, OCT + timedelta(days=4), tools={"web_search": 1})  # 1,000 + 2,500
    agent_usage(g, k2, agent, OCT + timedelta(days=5), tools={"web_search": 2})  # 1,000 + 5,000

    inv = invoice_generate(group=g, period=OCTOBER).invoice
    assert inv is not None
    lines = {ln.label: ln for ln in inv.lines.filter(section="usage")}
    a1, a2 = f"perplexity/sonar ({k1.last_four})", f"perplexity/sonar ({k2.last_four})"
    w1, f1 = f"web_search ({k1.last_four})", f"fetch_url ({k1.last_four})"
    w2 = f"web_search ({k2.last_four})"
    assert set(lines) == {f"sonar ({k1.last_four})", a1, a2, w1, f1, w2}
    got = {
        label: (ln.tool, ln.invocations, ln.requests, ln.prompt_tokens, ln.completion_tokens,
                ln.cache_read_tokens, ln.amount_micros)
        for label, ln in lines.items()
    }  # fmt: skip
    assert got == {
        f"sonar ({k1.last_four})": ("", 0, 1, 100, 200, 0, 1_234_567),
        a1: ("", 0, 2, 2_000, 600, 400, 925 + 1_000),  # the tokens only
        a2: ("", 0, 1, 1_000, 300, 0, 1_000),
        w1: ("web_search", 4, 0, 0, 0, 0, 10_000),
        f1: ("fetch_url", 2, 0, 0, 0, 0, 1_000),
        w2: ("web_search", 2, 0, 0, 0, 0, 5_000),
    }
    assert inv.usage_micros == 1_234_567 + 1_925 + 1_000 + 10_000 + 1_000 + 5_000 == 1_253_492
    assert inv.total_cents == 125
    check_invoice(inv)

    page = admin_client.get(f"/g/{g.public_id}/billing/invoices/{inv.public_id}/").content.decode()
    rows = {
        re.sub(r"<[^>]+>|\s+", " ", row).split(" · ")[0].strip(): [
            re.sub(r"<[^>]+>", "", cell).strip()
            for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        ]
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", page.split('data-testid="invoice-lines"')[1].split("</table>")[0], re.S)
        if "<td" in row
    }  # fmt: skip
    assert rows[w1][1:] == ["", "", "", "", "4", "$0.01"]
    assert rows[f1][1:] == ["", "", "", "", "2", "$0.00"]
    assert rows[a1][1:] == ["2", "2,000", "600", "0", "", "$0.00"]
    assert 'data-tool="web_search"' in page and "Tool calls" in page

    text = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(invoice_pdf(inv))).pages)
    assert "Tool calls" in text
    assert re.search(re.escape(w1) + r"\s+4\s+\$0\.01", text), text
    assert re.search(re.escape(w2) + r"\s+2\s+\$0\.01", text), text
    assert re.search(re.escape(a1) + r"\s+2\s+2,000\s+600\s+0\s+\$0\.00", text), text


def test_running_again_changes_nothing_and_groups_without_activity_get_no_invoice(world):
    g = world["group"]
    idle = GroupFactory()
    usage(g, world["k1"], world["sonar"], OCT + timedelta(days=9), cost=10_000)
    out = io.StringIO()
    call_command("generate_invoices", "--period", "2025-10", stdout=out)
    call_command("generate_invoices", "--period", "2025-10", stdout=out)
    assert Invoice.objects.filter(group=g).count() == 1
    assert not Invoice.objects.filter(group=idle).exists()
    text = out.getvalue()
    assert "1 issued" in text and "1 already existed" in text and "without activity" in text


def test_the_command_refuses_bad_input_clearly(world):
    with pytest.raises(Exception, match="not a billing period"):
        call_command("generate_invoices", "--period", "October")
    with pytest.raises(Exception, match="No API group"):
        call_command("generate_invoices", "--period", "2025-10", "--group", "nope")
    with pytest.raises(InvoiceError, match="not ended"):
        invoice_generate(group=world["group"], period=period_from_key("2099-01"))
    assert not Invoice.objects.exists()


def test_the_scheduled_task_invoices_every_active_group(world, settings):
    from billing.tasks import generate_invoices_due

    other = GroupFactory()
    key = api_key_create(group=other, name="x").key
    usage(world["group"], world["k1"], world["sonar"], OCT + timedelta(days=1), cost=5)
    usage(other, key, world["pro"], OCT + timedelta(days=2), cost=7)
    assert generate_invoices_due("2025-10") >= 2  # eager in tests: one task per group
    assert Invoice.objects.filter(period_key="2025-10").count() == 2


def test_usage_that_arrives_late_is_billed_once_on_the_next_invoice(world):
    g, k1 = world["group"], world["k1"]
    usage(g, k1, world["sonar"], OCT + timedelta(days=1), cost=100_000)
    october = invoice_generate(group=g, period=OCTOBER).invoice
    assert october is not None
    # A request of Oct 31, 23:59:59 whose event reached the database after the invoice run.
    usage(g, k1, world["sonar"], NOV - timedelta(seconds=1), cost=25_000, prompt=5)
    usage(g, k1, world["pro"], NOV + timedelta(days=1), cost=40_000)
    november = invoice_generate(group=g, period=NOVEMBER).invoice
    assert november is not None
    late = list(november.lines.filter(section="late_usage"))
    assert len(late) == 1
    assert late[0].label == f"sonar ({k1.last_four}) · usage from October 2025"
    assert (late[0].requests, late[0].prompt_tokens, late[0].amount_micros) == (1, 5, 25_000)
    assert late[0].service_period_key == "2025-10"
    assert november.usage_micros == 65_000
    assert november.opening_balance_micros == october.closing_balance_micros
    check_invoice(november)
    # October is untouched, and December does not bill the late request again.
    october.refresh_from_db()
    assert october.usage_micros == 100_000
    usage(g, k1, world["sonar"], period_from_key("2025-12").start + timedelta(days=1), cost=1)
    december = invoice_generate(group=g, period=period_from_key("2025-12")).invoice
    assert december is not None
    assert not december.lines.filter(section="late_usage").exists()


def test_invoice_keeps_the_group_details_it_was_issued_with(world):
    g = world["group"]
    g.name, g.address_line1, g.city, g.postal_code, g.country, g.tax_id = (
        "Ørsted Labs ApS",
        "Kongens Nytorv 1",
        "København",
        "1050",
        "DK",
        "DK12345678",
    )
    g.save()
    usage(g, world["k1"], world["sonar"], OCT + timedelta(days=1), cost=12_345)
    inv = invoice_generate(group=g, period=OCTOBER).invoice
    assert inv is not None
    g.name, g.tax_id, g.address_line1 = "Renamed Corp", "DK99999999", "Elsewhere 9"
    g.save()
    inv.refresh_from_db()
    assert inv.bill_to_name == "Ørsted Labs ApS"
    assert inv.bill_to_tax_id == "DK12345678"
    assert "Kongens Nytorv 1" in inv.bill_to_address and "Denmark" in inv.bill_to_address
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(invoice_pdf(inv))).pages)
    assert "Ørsted Labs ApS" in text and "DK12345678" in text and "Renamed" not in text


def test_pdf_is_a_readable_invoice_with_the_key_codes(world, settings):
    settings.OPERATOR_NAME = "Sonar Cloud Ltd"
    settings.OPERATOR_ADDRESS = "1 Main St | Springfield"
    settings.OPERATOR_TAX_ID = "GB123456789"
    g, k1, k2 = world["group"], world["k1"], world["k2"]
    for i in range(40):  # enough lines for a second page
        key = api_key_create(group=g, name=f"k{i}").key
        usage(g, key, world["sonar"], OCT + timedelta(hours=i), cost=10_000 + i)
    usage(g, k1, world["pro"], OCT + timedelta(days=2), cost=1_500_000)
    usage(g, k2, world["sonar"], OCT + timedelta(days=3), cost=2_500_000)
    inv = invoice_generate(group=g, period=OCTOBER).invoice
    assert inv is not None
    reader = PdfReader(io.BytesIO(invoice_pdf(inv)))
    text = "\n".join(p.extract_text() for p in reader.pages)
    assert len(reader.pages) >= 2
    assert inv.number in text and "INVOICE" in text
    assert f"sonar-pro ({k1.last_four})" in text
    assert f"sonar ({k2.last_four})" in text
    assert "Sonar Cloud Ltd" in text and "GB123456789" in text and "Springfield" in text
    assert "October 2025" in text
    assert f"${inv.total_cents // 100}.{inv.total_cents % 100:02d}" in text


def test_a_finalized_invoice_cannot_be_edited_or_deleted_only_credited(world):
    g = world["group"]
    usage(g, world["k1"], world["sonar"], OCT + timedelta(days=1), cost=3_000_000)
    inv = invoice_generate(group=g, period=OCTOBER).invoice
    assert inv is not None
    for attempt in (
        lambda: Invoice.objects.filter(pk=inv.pk).update(total_cents=1),
        lambda: Invoice.objects.filter(pk=inv.pk).update(bill_to_name="x"),
        lambda: Invoice.objects.filter(pk=inv.pk).delete(),
        lambda: InvoiceLine.objects.filter(invoice=inv).update(amount_cents=0),
        lambda: InvoiceLine.objects.filter(invoice=inv).delete(),
    ):
        with pytest.raises(DatabaseError), transaction.atomic():
            attempt()
    # Stripe's copy may be filled in later.
    Invoice.objects.filter(pk=inv.pk).update(stripe_invoice_id="in_123")

    balance = CreditAccount.objects.get(group=g).balance_micros
    note = credit_note_issue(invoice=inv, amount_micros=1_000_000, reason="Outage on Oct 2")
    assert re.fullmatch(r"CN-\d{4}-\d{6}", note.number)
    assert note.corrects == inv and note.total_cents == -100
    assert CreditAccount.objects.get(group=g).balance_micros == balance + 1_000_000
    with pytest.raises(InvoiceError, match="too much"):
        credit_note_issue(invoice=inv, amount_micros=2_000_001, reason="again")
    inv.refresh_from_db()
    assert inv.total_cents == 300


def test_numbers_are_sequential_without_gaps(world):
    catalogue_sync()
    groups = [GroupFactory() for _ in range(5)]
    sonar = world["sonar"]
    for g in groups:
        usage(g, api_key_create(group=g, name="k").key, sonar, OCT + timedelta(days=1), cost=1)
    call_command("generate_invoices", "--period", "2025-10", stdout=io.StringIO())
    numbers = sorted(
        int(n.rsplit("-", 1)[1]) for n in Invoice.objects.values_list("number", flat=True)
    )
    assert numbers == list(range(numbers[0], numbers[0] + len(groups)))


@hsettings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    events=st.lists(
        st.tuples(
            st.integers(0, 1),  # key
            st.integers(0, 1),  # model
            st.integers(0, 60 * 24 * 61 - 1),  # minute within Oct + Nov
            st.integers(0, 3_000_000),  # cost in micros (0: free requests)
        ),
        max_size=40,
    ),
    purchases=st.lists(
        st.tuples(
            st.integers(0, 60 * 24 * 61 - 1), st.integers(1, 500).map(lambda d: d * 1_000_000)
        ),
        max_size=4,
    ),
)
def test_invoices_reconcile_with_the_ledger_for_any_usage(world, events, purchases):  # type: ignore[no-untyped-def]
    with transaction.atomic():
        g = GroupFactory()
        keys = [api_key_create(group=g, name=f"k{i}").key for i in range(2)]
        models = [world["sonar"], world["pro"]]
        for k, m, minute, cost in events:
            usage(g, keys[k], models[m], OCT + timedelta(minutes=minute), cost=cost)
        for minute, amount in purchases:
            credit(g, amount, OCT + timedelta(minutes=minute))
        invoices = [invoice_generate(group=g, period=p).invoice for p in (OCTOBER, NOVEMBER)]
        for inv, p in zip(invoices, (OCTOBER, NOVEMBER), strict=True):
            active = any(
                OCT + timedelta(minutes=e[2]) < p.end and OCT + timedelta(minutes=e[2]) >= p.start
                for e in events
            ) or any(p.start <= OCT + timedelta(minutes=m) < p.end for m, _ in purchases)
            assert (inv is not None) == active
            if inv is not None:
                check_invoice(inv)
        if all(invoices):
            assert invoices[1].opening_balance_micros == invoices[0].closing_balance_micros
        transaction.set_rollback(True)


@pytest.mark.django_db(transaction=True)
def test_concurrent_runs_issue_one_invoice_per_group_and_no_gaps():
    catalogue_sync()
    sonar = AIModel.objects.get(name="sonar")
    groups = [GroupFactory() for _ in range(6)]
    for g in groups:
        key = api_key_create(group=g, name="k").key
        for i in range(3):
            usage(g, key, sonar, OCT + timedelta(days=i), cost=10_001 * (i + 1))
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def run() -> None:
        try:
            barrier.wait()
            call_command("generate_invoices", "--period", "2025-10", stdout=io.StringIO())
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert Invoice.objects.count() == len(groups)
    for g in groups:
        inv = Invoice.objects.get(group=g)
        assert inv.usage_micros == 60_006
        assert inv.lines.count() == 1
    numbers = sorted(int(n[-6:]) for n in Invoice.objects.values_list("number", flat=True))
    assert numbers == list(range(numbers[0], numbers[0] + len(groups)))
