--------------------------------------------------------------------------
-- From 0.1.0 to 0.2.0: changes to the objects that hold data.  The
-- functions, views, triggers and policies of 0.2.0 follow (sql/code/).
--------------------------------------------------------------------------

-- Fails with 55000 unless notify_ext is in shared_preload_libraries:
-- without it events cannot be numbered, and every write to a tracked table
-- would fail later instead.
CREATE FUNCTION notify_ext._require_preload() RETURNS void
    LANGUAGE c AS 'MODULE_PATHNAME', 'notify_ext_require_preload';
REVOKE ALL ON FUNCTION notify_ext._require_preload() FROM PUBLIC;
SELECT notify_ext._require_preload();

-- Day partitions of the event log are no longer members of the extension,
-- so that pg_dump keeps them and their events (those CREATE EXTENSION made
-- in 0.1.0 were members, which pg_dump leaves out).
DO $$
DECLARE
    v_rel regclass;
BEGIN
    FOR v_rel IN
        SELECT c.oid::regclass
          FROM pg_catalog.pg_depend d
          JOIN pg_catalog.pg_class c ON c.oid = d.objid
         WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
           AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
           AND d.refobjid = (SELECT e.oid FROM pg_catalog.pg_extension e WHERE e.extname = 'notify_ext')
           AND d.deptype = 'e'
           AND c.relnamespace = 'notify_ext'::pg_catalog.regnamespace
           AND c.relname ~ '^event_log_p[0-9]{8}$'
    LOOP
        EXECUTE pg_catalog.format('ALTER EXTENSION notify_ext DROP TABLE %s', v_rel);
    END LOOP;
END
$$;

-- tracked_tables reads the capture triggers through a C function now; its
-- name columns change collation, which CREATE OR REPLACE VIEW cannot do.
DROP VIEW notify_ext.tracked_tables;

--------------------------------------------------------------------------
-- Live channels carry ids only: the internal _inbox_notify(recipient, id)
-- replaces the one that also took the notification's content.
--------------------------------------------------------------------------
DROP FUNCTION IF EXISTS notify_ext._inbox_notify(text, bigint, text, text, jsonb, jsonb, timestamptz, boolean);
