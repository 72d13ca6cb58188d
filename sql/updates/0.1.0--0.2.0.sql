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
-- The inbox's NOTIFYs are queued by its insert trigger in C; the internal
-- _inbox_notify(), which nothing called, is gone.
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

--------------------------------------------------------------------------
-- Webhook URLs without credentials
--
-- 0.2.0 refuses a user name or password in a webhook URL or a token_url;
-- 0.1.0 accepted them and curl sent them as Basic authentication.  So that
-- no password stays in clear in the tables (and in pg_dump,
-- list_webhooks() and list_subscription_auth()):
--   - a webhook without an auth config gets a new BASIC_AUTH config that
--     holds them, the password sealed, and keeps sending what it sent;
--   - a webhook with an auth config, and a token_url, used the config's
--     credentials already: the ones in the URL are dropped;
--   - the URL in the WEBHOOK_DISABLED notifications of those webhooks is
--     replaced too.
-- Webhooks are not checked against the rest of the policy here: the
-- worker checks every address before it connects.
--------------------------------------------------------------------------

-- For this update only.
CREATE FUNCTION notify_ext._webhook_url_credentials(url text,
        OUT url_without text, OUT user_name text, OUT password text)
    LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'notify_ext_webhook_url_credentials';

DO $$
DECLARE
    w record;
    c record;
    v_auth uuid;
BEGIN
    FOR w IN SELECT x.id, x.url, x.auth_config, x.created_by
               FROM notify_ext.webhooks x ORDER BY x.created_at, x.id
    LOOP
        c := notify_ext._webhook_url_credentials(w.url);
        CONTINUE WHEN c.url_without = w.url;
        v_auth := w.auth_config;
        IF v_auth IS NULL AND (c.user_name IS NOT NULL OR c.password IS NOT NULL) THEN
            INSERT INTO notify_ext.subscription_auth AS a (auth_type, key, secret_sealed, created_by)
            VALUES ('BASIC_AUTH', NULLIF(c.user_name, ''),
                    CASE WHEN c.password <> ''
                         THEN notify_ext._webhook_seal(pg_catalog.convert_to(c.password, 'UTF8')) END,
                    w.created_by)
            RETURNING a.id INTO v_auth;
        END IF;
        UPDATE notify_ext.webhooks x SET url = c.url_without, auth_config = v_auth WHERE x.id = w.id;
        UPDATE notify_ext.notifications n
           SET message = pg_catalog.replace(n.message, w.url, c.url_without),
               meta = pg_catalog.jsonb_set(n.meta, '{url}', pg_catalog.to_jsonb(c.url_without))
         WHERE n.type = 'WEBHOOK_DISABLED' AND n.meta ->> 'webhook' = w.id::text;
    END LOOP;

    UPDATE notify_ext.subscription_auth a
       SET token_url = (notify_ext._webhook_url_credentials(a.token_url)).url_without
     WHERE a.token_url IS NOT NULL
       AND (notify_ext._webhook_url_credentials(a.token_url)).url_without <> a.token_url;

    -- Have the worker start again, now that the functions it calls are there.
    IF EXISTS (SELECT 1 FROM notify_ext.webhooks x WHERE x.status = 'active') THEN
        PERFORM notify_ext._webhooks_changed();
    END IF;
END
$$;

DROP FUNCTION notify_ext._webhook_url_credentials(text);

--------------------------------------------------------------------------
-- prune() is one PL/pgSQL run (no run of its own in C any more), which
-- reads its settings with current_setting(); the day partitions are read
-- by _day_partitions().
--------------------------------------------------------------------------
DROP FUNCTION notify_ext._event_partitions();
DROP FUNCTION notify_ext._expired_event_partitions(timestamptz);
DROP FUNCTION notify_ext._index_has_key_below(regclass, timestamptz);
DROP FUNCTION notify_ext._retention_interval(jsonb, text);
DROP FUNCTION notify_ext._retention_settings();

-- One scope rule, in C, for consumers and webhooks alike.
DROP FUNCTION notify_ext._in_scope(notify_ext.consumers, notify_ext.event_log);
DROP FUNCTION notify_ext._webhook_in_scope(notify_ext.webhooks, text, text, text, text[]);

-- The lists of a scope are checked by one function for consumers and webhooks.
DROP FUNCTION notify_ext._webhook_check_list(text[], text);

--------------------------------------------------------------------------
-- prune() is the PL/pgSQL run itself (sql/code/40_retention.sql replaces
-- the C function); the run it used to call goes.
--------------------------------------------------------------------------
DROP FUNCTION notify_ext._prune_all();

-- Relays to NATS JetStream (see docs/relays.md)
--------------------------------------------------------------------------
CREATE TABLE notify_ext.relays (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name                 text NOT NULL UNIQUE,
    servers              text[] NOT NULL,
    stream               text NOT NULL,
    subject_prefix       text NOT NULL,
    resource_id          text,
    include_subresources boolean NOT NULL,
    streams              text[],
    operations           text[],
    -- none, user_password, token, nkey or credentials; auth_public is what
    -- may be shown (the user name, the NKey public key), the secret is sealed
    auth_type            text NOT NULL DEFAULT 'none'
                         CHECK (auth_type IN ('none', 'user_password', 'token', 'nkey', 'credentials')),
    auth_public          text,
    auth_sealed          bytea,
    -- {"ca": PEM, "verify": bool, "hostname": text, "cert": PEM}; NULL: no TLS
    -- unless a server URL says tls://.  The client key is sealed apart.
    tls                  jsonb,
    tls_key_sealed       bytea,
    deliver              text NOT NULL CHECK (deliver IN ('new', 'all')),
    ensure_stream        boolean NOT NULL,
    paused               boolean NOT NULL DEFAULT false,
    -- every event in scope with seq <= position is in the stream
    position             bigint NOT NULL,
    published            bigint NOT NULL DEFAULT 0,
    -- events that retention removed before the relay published them
    missed               bigint NOT NULL DEFAULT 0,
    -- when the worker last moved position, and the occurred_at of the
    -- newest event it published
    last_published_at    timestamptz,
    last_event_at        timestamptz,
    -- set by the worker: connecting, publishing or failing
    state                text NOT NULL DEFAULT 'starting',
    last_error           text,
    last_error_at        timestamptz,
    failing_since        timestamptz,
    created_by           text NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON notify_ext.relays FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('notify_ext.relays', '');
