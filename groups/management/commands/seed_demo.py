from __future__ import annotations

from allauth.account.models import EmailAddress
from django.core.management.base import BaseCommand
from django.db import transaction

from accounts.models import User
from billing.services import credits_grant
from groups.models import APIGroup
from groups.services import api_group_create

DEMO_GROUP = "Demo Group"


class Command(BaseCommand):
    help = "Create the demo admin (verified e-mail) and the demo API group; safe to run again."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--email", required=True)
        parser.add_argument("--password", required=True)

    @transaction.atomic
    def handle(self, *args, email: str, password: str, **options) -> None:  # type: ignore[no-untyped-def]
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
        state = "created" if created else "already there"
        self.stdout.write(f"Demo admin {email} {state}; demo group {group.public_id}.")
