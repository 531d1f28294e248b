-- pgvigil database change audit: schema `audit`, table `audit.logged_actions`, the trigger
-- function, `audit.audit_table(regclass)` to attach it, and `audit.pgvigil_cursor` (where
-- the daemon persists how far it has forwarded rows).
--
-- Install: pgvigil audit install -c pgvigil.toml   (or: psql -v ON_ERROR_STOP=1 -f audit.sql)
-- Remove:  psql -v ON_ERROR_STOP=1 -f audit_down.sql
-- Idempotent: running it again changes nothing and keeps every row. Every name is
-- schema-qualified, and the functions run with a fixed search_path.
--
-- Invariants the daemon's lossless forwarding relies on (docs/audit.md):
-- * `id` comes from a sequence with CACHE 1, so ids are handed out in time order;
-- * the trigger assigns the transaction id (pg_current_xact_id) BEFORE it draws an id, so
--   a transaction that holds an id is visible in every later snapshot's running set.

CREATE SCHEMA IF NOT EXISTS audit;
COMMENT ON SCHEMA audit IS 'pgvigil: database change audit (deploy/sql/audit.sql)';

CREATE TABLE IF NOT EXISTS audit.logged_actions (
    id                bigint GENERATED ALWAYS AS IDENTITY (CACHE 1) PRIMARY KEY,
    schema_name       text        NOT NULL,
    table_name        text        NOT NULL,
    relid             oid         NOT NULL,
    action            text        NOT NULL CHECK (action IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE')),
    row_data          jsonb,       -- the new row (INSERT), the old row (UPDATE, DELETE)
    changed_fields    jsonb,       -- UPDATE: the columns whose value changed, new values
    statement_only    boolean     NOT NULL,  -- true for statement-level events (TRUNCATE)
    transaction_id    bigint      NOT NULL,  -- pg_current_xact_id() of the writing transaction
    action_tstamp_tx  timestamptz NOT NULL,  -- transaction start
    action_tstamp_stm timestamptz NOT NULL,  -- statement start
    action_tstamp_clk timestamptz NOT NULL,  -- when the row was written
    session_user_name text,
    application_name  text,
    client_addr       inet,
    client_port       integer,
    request_claims    jsonb        -- PostgREST: current_setting('request.jwt.claims', true)
);
COMMENT ON TABLE audit.logged_actions IS 'pgvigil: one row per audited change; forwarded as kind "data" audit lines';

CREATE TABLE IF NOT EXISTS audit.pgvigil_cursor (
    consumer   text        PRIMARY KEY,
    last_id    bigint      NOT NULL,   -- every row with id <= last_id has been forwarded
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE audit.pgvigil_cursor IS 'pgvigil: the forwarding cursor of each consumer';

CREATE OR REPLACE FUNCTION audit.if_modified_func() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $body$
DECLARE
    -- First statement: assigns the transaction id before the row's id is drawn.
    v_xid    bigint := pg_catalog.pg_current_xact_id()::text::bigint;
    v_row    jsonb;
    v_new    jsonb;
    v_change jsonb;
    v_claims text := pg_catalog.current_setting('request.jwt.claims', true);
BEGIN
    IF TG_LEVEL = 'ROW' THEN
        IF TG_OP = 'UPDATE' THEN
            v_row := pg_catalog.to_jsonb(OLD);
            v_new := pg_catalog.to_jsonb(NEW);
            SELECT pg_catalog.jsonb_object_agg(n.key, n.value) INTO v_change
              FROM pg_catalog.jsonb_each(v_new) n
             WHERE NOT v_row @> pg_catalog.jsonb_build_object(n.key, n.value);
        ELSIF TG_OP = 'DELETE' THEN
            v_row := pg_catalog.to_jsonb(OLD);
        ELSE
            v_row := pg_catalog.to_jsonb(NEW);
        END IF;
    END IF;
    INSERT INTO audit.logged_actions (
        schema_name, table_name, relid, action, row_data, changed_fields, statement_only,
        transaction_id, action_tstamp_tx, action_tstamp_stm, action_tstamp_clk,
        session_user_name, application_name, client_addr, client_port, request_claims)
    VALUES (
        TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_RELID, TG_OP, v_row, v_change, TG_LEVEL = 'STATEMENT',
        v_xid, pg_catalog.transaction_timestamp(), pg_catalog.statement_timestamp(),
        pg_catalog.clock_timestamp(),
        session_user, pg_catalog.current_setting('application_name', true),
        pg_catalog.inet_client_addr(), pg_catalog.inet_client_port(),
        -- PostgREST sets valid JSON; anything else is kept as a JSON string.
        CASE WHEN v_claims IS NULL OR v_claims = '' THEN NULL
             WHEN v_claims ~ '^\s*\{.*\}\s*$' THEN v_claims::jsonb
             ELSE pg_catalog.to_jsonb(v_claims) END);
    -- Identical notifications within a transaction are delivered once, at commit.
    PERFORM pg_catalog.pg_notify('pgvigil_audit', '');
    RETURN NULL;
END;
$body$;

CREATE OR REPLACE FUNCTION audit.audit_table(target regclass) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $body$
DECLARE
    t text;
BEGIN
    -- Drop only what exists: DROP TRIGGER IF EXISTS would print a NOTICE per missing one.
    FOR t IN SELECT tgname FROM pg_catalog.pg_trigger
              WHERE tgrelid = target AND tgname IN ('pgvigil_audit_row', 'pgvigil_audit_stm')
    LOOP
        EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', t, target);
    END LOOP;
    EXECUTE pg_catalog.format(
        'CREATE TRIGGER pgvigil_audit_row AFTER INSERT OR UPDATE OR DELETE ON %s '
        'FOR EACH ROW EXECUTE FUNCTION audit.if_modified_func()', target);
    EXECUTE pg_catalog.format(
        'CREATE TRIGGER pgvigil_audit_stm AFTER TRUNCATE ON %s '
        'FOR EACH STATEMENT EXECUTE FUNCTION audit.if_modified_func()', target);
END;
$body$;
COMMENT ON FUNCTION audit.audit_table(regclass) IS 'pgvigil: audit INSERT, UPDATE, DELETE and TRUNCATE on a table (idempotent)';

-- Audit rows are written by the trigger only; readers need SELECT.
REVOKE ALL ON audit.logged_actions FROM PUBLIC;
REVOKE ALL ON audit.pgvigil_cursor FROM PUBLIC;
