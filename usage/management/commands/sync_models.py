from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from usage.catalogue import DEFAULT_FILE, CatalogueError, catalogue_sync


class Command(BaseCommand):
    help = "Make the model catalogue match a TOML/YAML file (absent models are disabled)."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("file", nargs="?", default=str(DEFAULT_FILE))

    def handle(self, *args, file: str, **options):  # type: ignore[no-untyped-def]
        try:
            result = catalogue_sync(path=file)
        except CatalogueError as exc:
            raise CommandError(str(exc)) from exc
        for label, names in (
            ("created", result.created),
            ("updated", result.updated),
            ("unchanged", result.unchanged),
            ("disabled", result.disabled),
        ):
            if names:
                self.stdout.write(f"{label}: {', '.join(names)}")
