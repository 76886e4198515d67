import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("keys", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="KeyChange",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("secret_hash", models.CharField(max_length=64)),
                (
                    "created_at",
                    models.DateTimeField(db_index=True, default=django.utils.timezone.now),
                ),
            ],
            options={"ordering": ["id"]},
        ),
    ]
