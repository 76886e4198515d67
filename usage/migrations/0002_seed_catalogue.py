from django.db import migrations


def seed(apps, schema_editor):
    # Load the default catalogue's chat models (Perplexity's published prices) once, on first
    # migrate. Only the fields this migration's AIModel has are set; the Agent API part of the
    # file (its models, tools and presets) is seeded by 0005.
    from usage.catalogue import DEFAULT_FILE, model_fields, read_file

    AIModel = apps.get_model("usage", "AIModel")
    if AIModel.objects.exists():
        return
    known = {f.name for f in AIModel._meta.get_fields()}
    for name, spec in read_file(DEFAULT_FILE).items():
        values = model_fields(name, spec)
        if "chat" in values["api"].split(","):
            AIModel.objects.create(name=name, **{k: v for k, v in values.items() if k in known})


class Migration(migrations.Migration):
    dependencies = [("usage", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
