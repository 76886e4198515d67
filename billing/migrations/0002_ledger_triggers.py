from django.db import migrations

# balance = sum(entries) is kept by the database itself: every inserted entry is added to its
# account in the same statement. Entries can never be changed or removed.
APPLY = """
CREATE OR REPLACE FUNCTION billing_apply_entry() RETURNS trigger AS $$
BEGIN
    UPDATE billing_creditaccount
       SET balance_micros = balance_micros + NEW.amount_micros,
           purchased_micros = purchased_micros + CASE
               WHEN NEW.kind IN ('purchase', 'auto_top_up', 'refund') THEN NEW.amount_micros
               ELSE 0 END
     WHERE id = NEW.account_id;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER billing_ledgerentry_apply
AFTER INSERT ON billing_ledgerentry
FOR EACH ROW EXECUTE FUNCTION billing_apply_entry();

CREATE TRIGGER billing_ledgerentry_append_only
BEFORE UPDATE OR DELETE ON billing_ledgerentry
FOR EACH ROW EXECUTE FUNCTION portal_refuse_update_delete();
"""

REVERT = """
DROP TRIGGER IF EXISTS billing_ledgerentry_append_only ON billing_ledgerentry;
DROP TRIGGER IF EXISTS billing_ledgerentry_apply ON billing_ledgerentry;
DROP FUNCTION IF EXISTS billing_apply_entry();
"""


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_ledger"), ("audit", "0002_append_only")]

    operations = [migrations.RunSQL(APPLY, REVERT)]
