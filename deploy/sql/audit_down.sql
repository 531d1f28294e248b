-- Removes what deploy/sql/audit.sql installed: the triggers it attached with
-- audit.audit_table(), then the schema `audit` with its tables and functions.
-- WARNING: this deletes every audit row that has not been exported elsewhere.
-- Idempotent: running it on a database without the schema does nothing.

DO $body$
DECLARE
    t record;
BEGIN
    FOR t IN
        SELECT DISTINCT tg.tgrelid::regclass AS rel
          FROM pg_catalog.pg_trigger tg
         WHERE tg.tgname IN ('pgvigil_audit_row', 'pgvigil_audit_stm')
    LOOP
        EXECUTE pg_catalog.format('DROP TRIGGER IF EXISTS pgvigil_audit_row ON %s', t.rel);
        EXECUTE pg_catalog.format('DROP TRIGGER IF EXISTS pgvigil_audit_stm ON %s', t.rel);
    END LOOP;
END;
$body$;

DROP SCHEMA IF EXISTS audit CASCADE;
