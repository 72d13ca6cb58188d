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

--------------------------------------------------------------------------
-- Whole backups: what pg_dump keeps, and a restore that completes
--------------------------------------------------------------------------

-- Reply keys: no row means generation 1, in use, so the install script
-- writes none and a restore never meets a row of its own.  0.1.0's row
-- for generation 1 says just that while it is not retired.
DELETE FROM notify_ext.reply_keys WHERE generation = 1 AND retired_at IS NULL;

-- The seq index: one per partition instead of a partitioned index on
-- event_log, which would make pg_restore's ATTACH PARTITION build the
-- index that the dump creates next (and the restore fail).  Dropping the
-- partitioned index drops the partitions' indexes with it; they are built
-- again, the same BRIN index on each partition.
DROP INDEX notify_ext.event_log_seq_idx;
CREATE INDEX event_log_default_seq_idx ON notify_ext.event_log_default USING brin (seq)
    WITH (pages_per_range = 32, autosummarize = on);
DO $$
DECLARE
    v_name name;
BEGIN
    FOR v_name IN
        SELECT c.relname
          FROM pg_catalog.pg_inherits i
          JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'notify_ext.event_log'::pg_catalog.regclass
           AND c.relname <> 'event_log_default'
         ORDER BY c.relname
    LOOP
        EXECUTE pg_catalog.format('CREATE INDEX ON notify_ext.%I USING brin (seq)
                        WITH (pages_per_range = 32, autosummarize = on)', v_name);
    END LOOP;
END
$$;
-- The default partition's events are dumped as configuration.
SELECT pg_catalog.pg_extension_config_dump('notify_ext.event_log_default', '');

-- Dumped from now on: the numbering of fetched batches and of delivery
-- records, the webhook queue and the delivery log.
SELECT pg_catalog.pg_extension_config_dump('notify_ext.consumer_pending_batch_seq', '');
SELECT pg_catalog.pg_extension_config_dump('notify_ext.webhook_queue', '');
SELECT pg_catalog.pg_extension_config_dump('notify_ext.delivery_log', '');
SELECT pg_catalog.pg_extension_config_dump('notify_ext.delivery_log_id_seq', '');

-- No longer dumped: inbox counts follow from the notifications, whose
-- restore counts them again.  Leaving the extension and joining it again
-- is what takes a table off the list of configuration tables.
ALTER EXTENSION notify_ext DROP TABLE notify_ext.inbox_counts;
ALTER EXTENSION notify_ext ADD TABLE notify_ext.inbox_counts;

--------------------------------------------------------------------------
-- Webhook URL policy
--
-- The URL check of create_webhook() and create_subscription_auth() is in C
-- now (docs/webhooks.md, "URL policy"): _webhook_check_url(url, what)
-- replaces _webhook_check_url(url).
--------------------------------------------------------------------------

DROP FUNCTION notify_ext._webhook_check_url(text);
