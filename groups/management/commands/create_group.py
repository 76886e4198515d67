from __future__ import annotations

from allauth.account.models import EmailAddress
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.validators import validate_email
from django.db import transaction

from accounts.models import User
from groups.models import APIGroup
from groups.services import api_group_create


class Command(BaseCommand):
    help = "Create an API group and its Admin (created if absent, e-mail verified); prints the group id."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--name", required=True)
        parser.add_argument("--admin-email", required=True)
        parser.add_argument(
            "--admin-password", help="for a new user; without it they reset it by e-mail"
        )

    @transaction.atomic
    def handle(self, *args, name: str, admin_email: str, admin_password: str | None, **opts):  # type: ignore[no-untyped-def]
        name, email = name.strip(), admin_email.strip().lower()
        if not name:
            raise CommandError("--name must not be empty.")
        try:
            validate_email(email)
        except ValidationError as exc:
            raise CommandError(f"{admin_email!r} is not an e-mail address.") from exc
        user = User.objects.filter(email__iexact=email).first()
        if user is None:
            user = User.objects.create_user(email, admin_password)
            self.stderr.write(f"Created user {email}.")
        EmailAddress.objects.update_or_create(
            user=user, email=user.email, defaults={"verified": True, "primary": True}
        )
        group = APIGroup.objects.filter(
            name=name, memberships__user=user, memberships__role="admin"
        ).first()
        if group is None:
            group = api_group_create(creator=user, name=name)
            self.stderr.write(f"Created API group {name!r}.")
        else:
            self.stderr.write(f"API group {name!r} with Admin {email} exists already.")
        self.stdout.write(group.public_id)
