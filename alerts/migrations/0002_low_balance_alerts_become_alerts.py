"""Move each group's single low-balance e-mail (BillingProfile.low_balance_alert_micros) into a
balance Alert: e-mail to the group's Admins (the members it went to), same level. A group already
alerted keeps that state (a firing in the current arming), so nobody is e-mailed twice."""

from django.db import migrations
from django.utils import timezone


def forwards(apps, schema_editor):
    BillingProfile = apps.get_model("billing", "BillingProfile")
    Membership = apps.get_model("members", "Membership")
    Alert = apps.get_model("alerts", "Alert")
    AlertFiring = apps.get_model("alerts", "AlertFiring")
    CreditAccount = apps.get_model("billing", "CreditAccount")
    now = timezone.now()
    for profile in BillingProfile.objects.filter(low_balance_alert_micros__isnull=False):
        alert = Alert.objects.create(
            group_id=profile.group_id,
            name="Low balance",
            kind="balance",
            balance_threshold_micros=profile.low_balance_alert_micros,
            send_email=True,
            armed_at=now,
        )
        alert.members.set(Membership.objects.filter(group_id=profile.group_id, role="admin"))
        if profile.low_balance_alerted:
            balance = (
                CreditAccount.objects.filter(group_id=profile.group_id)
                .values_list("balance_micros", flat=True)
                .first()
            )
            AlertFiring.objects.create(
                alert=alert,
                window_start=now,
                threshold_micros=profile.low_balance_alert_micros,
                observed_micros=balance or 0,
                fired_at=now,
            )
        profile.low_balance_alert_micros = None
        profile.low_balance_alerted = False
        profile.save(update_fields=["low_balance_alert_micros", "low_balance_alerted"])


class Migration(migrations.Migration):
    dependencies = [
        ("alerts", "0001_alerts_and_webhooks"),
        ("billing", "0007_spend_controls_base"),
        ("members", "0001_initial"),
    ]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
