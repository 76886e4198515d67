from django.db import migrations


def seed(apps, schema_editor):
    # Load the default catalogue (Perplexity's published prices) once, on first migrate.
    from usage.catalogue import DEFAULT_FILE, model_fields, read_file

    AIModel = apps.get_model("usage", "AIModel")
    if AIModel.objects.exists():
        return
    for name, spec in read_file(DEFAULT_FILE).items():
        AIModel.objects.create(name=name, **model_fields(name, spec))


class Migration(migrations.Migration):
    dependencies = [("usage", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
