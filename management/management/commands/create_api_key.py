"""`create_api_key`: an inference key, or with --management a Management API key.

It lives in the management app because it creates both kinds and `management` sits above `keys`
(imports point one way).
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from groups.models import APIGroup
from keys.services import APIKeyError, api_key_create
from management.models import ManagementRole
from management.services import management_key_create

ROLES = {"admin": ManagementRole.ADMIN, "read-only": ManagementRole.READ_ONLY}


class Command(BaseCommand):
    help = (
        "Create an API key for a group and print it (the only time it is shown). With "
        "--management --role admin|read-only, a Management API key (audited, actor: the operator)."
    )

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--group", required=True, help="the group's public id")
        parser.add_argument("--name", required=True)
        parser.add_argument(
            "--management", action="store_true", help="a Management API key (pplx-admin-…)"
        )
        parser.add_argument("--role", help="with --management: admin or read-only")

    def handle(self, *args, group: str, name: str, management: bool, role: str | None, **options):  # type: ignore[no-untyped-def]
        if role is not None and not management:
            raise CommandError("--role is for management keys: add --management.")
        if management and role not in ROLES:
            raise CommandError("--management needs --role admin or --role read-only.")
        api_group = APIGroup.objects.filter(public_id=group).first()
        if api_group is None:
            raise CommandError(f"No API group with id {group!r}.")
        try:
            if management:
                assert role is not None
                secret = management_key_create(
                    group=api_group, name=name, role=ROLES[role], actor=None
                ).secret
            else:
                secret = api_key_create(group=api_group, name=name).secret
        except APIKeyError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(secret)
