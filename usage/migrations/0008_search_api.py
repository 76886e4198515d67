from django.db import migrations


def seed_search_api(apps, schema_editor):
    """Seed the Search API models of the default catalogue (search-web, search-fast,
    search-people) on an install that still runs on the built-in simulator, as 0005 does for the
    Agent API. An install whose models point at real upstreams is left alone: its operator adds
    them with sync_models."""
    from usage.catalogue import DEFAULT_FILE, read_catalogue

    AIModel = apps.get_model("usage", "AIModel")
    if AIModel.objects.exclude(upstream_base_url="simulator://").exists():
        return
    known = {f.name for f in AIModel._meta.get_fields()}
    for name, values in read_catalogue(DEFAULT_FILE).models.items():
        if values["api"] == "search" and not AIModel.objects.filter(name=name).exists():
            AIModel.objects.create(name=name, **{k: v for k, v in values.items() if k in known})


class Migration(migrations.Migration):
    dependencies = [("usage", "0007_rate_limits_by_family")]
    operations = [migrations.RunPython(seed_search_api, migrations.RunPython.noop)]
