from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from billing.invoicing import InvoiceError
from billing.invoicing.generation import RunSummary, invoices_generate
from billing.invoicing.periods import period_from_key
from groups.models import APIGroup


class Command(BaseCommand):
    help = (
        "Issue the invoices of a closed billing period (one per group with activity; running it "
        "again changes nothing)."
    )

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument(
            "--period", required=True, help="YYYY-MM (or YYYY-Www with INVOICE_PERIOD=week)"
        )
        parser.add_argument("--group", help="only this group (its public id)")

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        try:
            period = period_from_key(options["period"])
        except InvoiceError as exc:
            raise CommandError(str(exc)) from exc
        group_ids = None
        if options["group"]:
            group = APIGroup.objects.filter(public_id=options["group"]).first()
            if group is None:
                raise CommandError(f"No API group with id {options['group']!r}.")
            group_ids = [group.pk]
        total = len(group_ids) if group_ids else APIGroup.objects.count()
        self.stdout.write(f"Invoicing {period.label} ({period.key}) for {total:,} groups…")

        def progress(s: RunSummary) -> None:
            rate = s.groups / s.seconds * 60 if s.seconds else 0
            self.stdout.write(
                f"  {s.groups:,}/{total:,} groups  {s.created:,} issued  {s.existing:,} existing  "
                f"{s.idle:,} without activity  {len(s.failed)} failed  {rate:,.0f} groups/min"
            )

        try:
            summary = invoices_generate(period=period, group_ids=group_ids, progress=progress)
        except InvoiceError as exc:
            raise CommandError(str(exc)) from exc
        for failure in summary.failed:
            self.stderr.write(f"  not issued: {failure}")
        self.stdout.write(
            f"Done in {summary.seconds:.1f}s: {summary.created:,} issued, "
            f"{summary.existing:,} already existed, {summary.idle:,} without activity, "
            f"{len(summary.failed)} failed."
        )
        if summary.failed:
            raise CommandError(f"{len(summary.failed)} invoices could not be issued (see above).")
