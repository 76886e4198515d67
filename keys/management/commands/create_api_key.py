from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from groups.models import APIGroup
from keys.services import APIKeyError, api_key_create


class Command(BaseCommand):
    help = "Create an API key for a group and print it (the only time it is shown)."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--group", required=True, help="the group's public id")
        parser.add_argument("--name", required=True)

    def handle(self, *args, group: str, name: str, **options):  # type: ignore[no-untyped-def]
        api_group = APIGroup.objects.filter(public_id=group).first()
        if api_group is None:
            raise CommandError(f"No API group with id {group!r}.")
        try:
            issued = api_key_create(group=api_group, name=name)
        except APIKeyError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(issued.secret)
