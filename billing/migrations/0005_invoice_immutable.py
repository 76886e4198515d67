from django.db import migrations

# A finalized invoice never changes: its lines can't be updated or deleted, and of the invoice
# row only Stripe's copy (id, hosted URL, last mirror error) may be filled in later. Corrections
# are new credit notes.
APPLY = """
CREATE OR REPLACE FUNCTION billing_invoice_frozen() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'invoice % is final and cannot be deleted; issue a credit note', OLD.number
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF (to_jsonb(NEW) - 'stripe_invoice_id' - 'stripe_hosted_url' - 'stripe_error')
       IS DISTINCT FROM
       (to_jsonb(OLD) - 'stripe_invoice_id' - 'stripe_hosted_url' - 'stripe_error') THEN
        RAISE EXCEPTION 'invoice % is final and cannot be changed; issue a credit note', OLD.number
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER billing_invoice_frozen
BEFORE UPDATE OR DELETE ON billing_invoice
FOR EACH ROW EXECUTE FUNCTION billing_invoice_frozen();

CREATE TRIGGER billing_invoiceline_append_only
BEFORE UPDATE OR DELETE ON billing_invoiceline
FOR EACH ROW EXECUTE FUNCTION portal_refuse_update_delete();
"""

REVERT = """
DROP TRIGGER IF EXISTS billing_invoiceline_append_only ON billing_invoiceline;
DROP TRIGGER IF EXISTS billing_invoice_frozen ON billing_invoice;
DROP FUNCTION IF EXISTS billing_invoice_frozen();
"""


class Migration(migrations.Migration):
    dependencies = [("billing", "0004_invoices"), ("audit", "0002_append_only")]

    operations = [migrations.RunSQL(APPLY, REVERT)]
