"""usage_usageevent partitioned by month (usage/partitions.py): PostgreSQL declarative
partitioning, which Django cannot declare. The database side is usage.partitions.convert: the
new table is filled beside the old one (a trigger mirrors new rows, old ones are copied in
batches, one transaction each) and swapped in under a short lock, so this migration runs on a
filled database while the gateway keeps metering (docs/scaling.md, "Partitioned usage events").

Django's state follows: request_id is no longer unique on its own; (request_id, created_at) is
(a unique index on a partitioned table must contain the partition key). The primary key is
(id, created_at) in the database; Django keeps treating `id` as the primary key (it is unique:
one sequence).
"""

from django.db import migrations, models


def forwards(apps, schema_editor):
    from usage.partitions import convert

    convert()


def backwards(apps, schema_editor):
    from usage.partitions import unconvert

    unconvert()


class Migration(migrations.Migration):
    # Each step of the conversion commits on its own (no long transaction, no long lock).
    atomic = False

    dependencies = [("usage", "0010_usage_by_end_user_and_tag")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="usageevent",
                    name="request_id",
                    field=models.CharField(max_length=64),
                ),
                migrations.AddConstraint(
                    model_name="usageevent",
                    constraint=models.UniqueConstraint(
                        fields=("request_id", "created_at"), name="usage_event_request_once"
                    ),
                ),
            ],
            database_operations=[migrations.RunPython(forwards, backwards)],
        ),
        migrations.AddField(
            model_name="rollupstate",
            name="raw_from",
            field=models.DateTimeField(
                null=True,
                help_text="Raw usage events created before it were dropped (retention); "
                "rollups and invoices keep them.",
            ),
        ),
    ]
