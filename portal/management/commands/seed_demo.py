"""`seed_demo`: the demo admin and group, with a month of activity so every page has something
to show. It lives in the shell app (`portal`) because it drives every domain's services."""

from __future__ import annotations

import io
import time
import uuid

import stripe
from allauth.account.models import EmailAddress
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from accounts.models import User
from billing import payments
from billing.invoicing.generation import invoice_generate
from billing.invoicing.periods import period_just_closed
from billing.models import Payment, PaymentMethod, PaymentStatus
from billing.services import credits_grant
from gateway.async_runner import run_job
from gateway.models import AsyncJob
from groups.models import APIGroup
from groups.services import api_group_create
from keys.models import APIKey
from keys.services import api_key_create
from usage.models import AIModel, UsageEvent

DEMO_GROUP = "Demo Group"
# A few keys the way a team names them; usage is spread over them and over every model.
DEMO_KEYS = ("Production", "Staging", "Research agent")
DEMO_EVENTS = 900  # about $15 of usage: the demo's credit keeps the gateway open
DEMO_DAYS = 30
DEMO_PURCHASE_MICROS = 50_000_000
DEMO_CARD = "4242424242424242"  # Stripe's test Visa
# Async chat completions the "Research agent" key ran (the simulator answers; charged as the
# gateway charges them).
DEMO_ASYNC = (
    "Survey the last five years of research on river restoration, with sources.",
    "Compare the energy policies of the Nordic countries since 2015.",
)


class Command(BaseCommand):
    help = (
        "Create the demo admin (verified e-mail) and the demo API group with 30 days of usage over "
        "a few keys and every model, a paid credit purchase (with localstripe) and last period's "
        "invoice; safe to run again (a second run adds nothing)."
    )

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--email", required=True)
        parser.add_argument("--password", required=True)
        parser.add_argument(
            "--no-activity", action="store_true", help="only the admin, group and welcome credit"
        )

    def handle(
        self, *args, email: str, password: str, no_activity: bool = False, **options
    ) -> None:  # type: ignore[no-untyped-def]
        started = time.monotonic()
        user, group, created = self.admin_and_group(email, password)
        state = "created" if created else "already there"
        self.stdout.write(f"Demo admin {email} {state}; demo group {group.public_id}.")
        if not no_activity:
            self.activity(group, user)
            self.stdout.write(f"Demo data ready in {time.monotonic() - started:.1f}s.")

    @transaction.atomic
    def admin_and_group(self, email: str, password: str) -> tuple[User, APIGroup, bool]:
        user, created = User.objects.get_or_create(email=email, defaults={"name": "Demo Admin"})
        if created:
            user.set_password(password)
            user.save(update_fields=["password"])
        EmailAddress.objects.update_or_create(
            user=user, email=email, defaults={"verified": True, "primary": True}
        )
        group = APIGroup.objects.filter(name=DEMO_GROUP, memberships__user=user).first()
        if group is None:
            group = api_group_create(
                creator=user,
                name=DEMO_GROUP,
                description="A workspace to try the portal.",
                address_line1="1 Demo Street",
                city="San Francisco",
                state="CA",
                postal_code="94105",
                country="US",
            )
        # Welcome credits so the demo's gateway (built-in simulator models) works at once.
        credits_grant(
            group=group,
            amount_micros=25_000_000,
            reason="Demo welcome credit",
            reference=f"grant:demo-welcome-{group.public_id}",
            kind="promotional",
        )
        return user, group, created

    def activity(self, group: APIGroup, user: User) -> None:
        """Keys, usage, a paid credit purchase and last period's invoice; each only once."""
        have = set(APIKey.objects.filter(group=group).values_list("name", flat=True))
        for name in DEMO_KEYS:
            if name not in have:
                api_key_create(group=group, name=name, actor=user)
        # seed_usage's request ids start with "seed-"; the demo's own gateway calls do not count.
        if not UsageEvent.objects.filter(group=group, request_id__startswith="seed-").exists():
            # Reach back into last period even late in a 31-day month, so it has an invoice.
            days = max(DEMO_DAYS, timezone.now().day + 2)
            call_command(
                "seed_usage", group=group.public_id, events=DEMO_EVENTS, days=days,
                keys=len(DEMO_KEYS), seed=2026, stdout=io.StringIO(),
            )  # fmt: skip
            self.stdout.write(f"Demo usage: {DEMO_EVENTS:,} requests over {days} days.")
        if not AsyncJob.objects.filter(group=group).exists():
            self.async_jobs(group)
        if not Payment.objects.filter(group=group, status=PaymentStatus.SUCCEEDED).exists():
            self.purchase(group, user)
        result = invoice_generate(group=group, period=period_just_closed())
        if result.invoice is not None and result.created:
            self.stdout.write(f"Demo invoice {result.invoice.number} issued.")

    def async_jobs(self, group: APIGroup) -> None:
        """Two completed async sonar-deep-research requests, run by the job runner itself."""
        model = AIModel.objects.filter(name="sonar-deep-research", enabled=True).first()
        key = APIKey.objects.filter(group=group, name=DEMO_KEYS[-1]).first()
        if model is None or key is None:
            return
        for question in DEMO_ASYNC:
            job = AsyncJob.objects.create(
                id=uuid.uuid4().hex, group=group, api_key=key, model=model,
                model_name=model.name, created_at=timezone.now(),
                request={"model": model.name, "messages": [{"role": "user", "content": question}]},
            )  # fmt: skip
            run_job(job.id)
        self.stdout.write(f"Demo async requests: {len(DEMO_ASYNC)} completed.")

    def purchase(self, group: APIGroup, user: User) -> None:
        """Save Stripe's test card and buy credits with it, as the billing page does (localstripe
        only: real Stripe takes card numbers from Stripe.js, never from the server)."""
        if not settings.STRIPE_API_BASE:
            self.stdout.write("No localstripe (STRIPE_API_BASE): the demo has no card or receipt.")
            return
        try:
            if not PaymentMethod.objects.filter(group=group).exists():
                secret = payments.card_setup_start(group=group)
                setup_intent_id = secret.split("_secret_")[0]
                stripe.api_base = settings.STRIPE_API_BASE
                key = settings.STRIPE_SECRET_KEY
                pm = stripe.PaymentMethod.create(
                    type="card", api_key=key,
                    card={"number": DEMO_CARD, "exp_month": 12, "exp_year": timezone.now().year + 3, "cvc": "123"},
                )  # fmt: skip
                stripe.SetupIntent.confirm(setup_intent_id, payment_method=pm.id, api_key=key)
                payments.card_setup_complete(
                    group=group, setup_intent_id=setup_intent_id, actor=user
                )
            payment = payments.purchase(group=group, amount_micros=DEMO_PURCHASE_MICROS, actor=user)
            # Charge it now rather than waiting for a worker (the charge is idempotent: the
            # queued task, if a worker runs it too, finds the payment settled).
            payment = payments.charge(payment=payment)
        except (stripe.StripeError, payments.BillingError) as exc:
            self.stderr.write(f"Demo credit purchase skipped: {exc}")
            return
        self.stdout.write(f"Demo credit purchase: {payment.get_status_display()}.")
