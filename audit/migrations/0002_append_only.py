from django.db import migrations

# A shared trigger function: any table that must be append-only attaches it
# BEFORE UPDATE OR DELETE (TRUNCATE, used by test flushes, is not affected).
FUNCTION = """
CREATE OR REPLACE FUNCTION portal_refuse_update_delete() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '% on % is not allowed: the table is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
"""

TRIGGER = """
CREATE TRIGGER audit_auditevent_append_only
BEFORE UPDATE OR DELETE ON audit_auditevent
FOR EACH ROW EXECUTE FUNCTION portal_refuse_update_delete();
"""


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial")]

    operations = [
        migrations.RunSQL(
            FUNCTION, "DROP FUNCTION IF EXISTS portal_refuse_update_delete() CASCADE;"
        ),
        migrations.RunSQL(
            TRIGGER, "DROP TRIGGER IF EXISTS audit_auditevent_append_only ON audit_auditevent;"
        ),
    ]
