-- notify_ext install script, assembled from sql/<version>/*.sql in name order.
\echo Use "CREATE EXTENSION notify_ext" to load this file. \quit

REVOKE ALL ON SCHEMA notify_ext FROM PUBLIC;
GRANT USAGE ON SCHEMA notify_ext TO PUBLIC;

--------------------------------------------------------------------------
-- Resources
--
-- A resource is either registered explicitly (this table) or is a row of a
-- tracked table, found through the table itself.  Paths are never stored,
-- they are walked from parent ids, so moving a resource moves its subtree.
--------------------------------------------------------------------------

CREATE TABLE notify_ext.resources (
    id          text PRIMARY KEY CHECK (id <> ''),
    variant     text NOT NULL CHECK (variant <> ''),
    parent_id   text CHECK (parent_id <> id),
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX resources_parent_idx ON notify_ext.resources (parent_id);
REVOKE ALL ON notify_ext.resources FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('notify_ext.resources', '');

-- The C trigger every tracked table carries.  Its arguments hold the
-- tracking configuration: variant, id column, parent column, stream.
CREATE FUNCTION notify_ext.capture() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'notify_ext_capture';

-- Tracked tables, read from the triggers themselves so that nothing can
-- drift: dropping a table drops its trigger and its entry here.
CREATE VIEW notify_ext.tracked_tables AS
SELECT t.tgrelid::regclass                                    AS relation,
       a[1]                                                   AS variant,
       a[2]::name                                             AS id_column,
       NULLIF(a[3], '')::name                                 AS parent_column,
       COALESCE(NULLIF(a[4], ''),
                format('%s.%s', n.nspname, c.relname))        AS stream,
       (SELECT atttypid::regtype FROM pg_catalog.pg_attribute
         WHERE attrelid = t.tgrelid AND attname = a[2]
           AND NOT attisdropped)                              AS id_type
  FROM pg_catalog.pg_trigger t
  JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 CROSS JOIN LATERAL (SELECT pg_catalog.string_to_array(
            pg_catalog.rtrim(pg_catalog.encode(t.tgargs, 'escape'), '\000'),
            '\000') AS a) args
 WHERE t.tgfoid = 'notify_ext.capture()'::regprocedure
   AND t.tgname = 'notify_ext_capture'
   AND t.tgparentid = 0;

-- Internal: drop the sessions' cached resource paths when this transaction commits.
CREATE FUNCTION notify_ext._resources_changed() RETURNS void
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'notify_ext_resources_changed';
REVOKE ALL ON FUNCTION notify_ext._resources_changed() FROM PUBLIC;

-- Internal: find one resource.  Registered resources win over tracked rows;
-- among tracked tables the oldest-tracked table wins.  Returns no row when
-- the id is unknown.
CREATE FUNCTION notify_ext._find_resource(p_id text,
        OUT variant text, OUT parent_id text, OUT relation regclass)
    RETURNS record
    LANGUAGE plpgsql STABLE STRICT
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t record;
    v_parent text;
    v_found boolean;
BEGIN
    SELECT r.variant, r.parent_id INTO variant, parent_id
      FROM notify_ext.resources r WHERE r.id = p_id;
    IF FOUND THEN
        RETURN;
    END IF;
    FOR t IN SELECT tt.* FROM notify_ext.tracked_tables tt ORDER BY tt.relation::oid LOOP
        CONTINUE WHEN t.id_type IS NULL;
        BEGIN
            EXECUTE format('SELECT true, %s FROM %s WHERE %I = $1::%s LIMIT 1',
                           CASE WHEN t.parent_column IS NULL THEN 'NULL::text'
                                ELSE format('%I::text', t.parent_column) END,
                           t.relation, t.id_column, t.id_type)
               INTO v_found, v_parent USING p_id;
        EXCEPTION WHEN data_exception THEN
            -- The id cannot be a value of this table's id type.
            v_found := false;
        END;
        IF v_found THEN
            variant := t.variant;
            parent_id := v_parent;
            relation := t.relation;
            RETURN;
        END IF;
    END LOOP;
    variant := NULL;
    parent_id := NULL;
    relation := NULL;
END
$$;

-- Internal: the path of a resource, root first, or NULL when unknown.  A
-- parent that no longer exists ends the walk (it stays in the path: events
-- and grants may still name it).
CREATE FUNCTION notify_ext._resource_path(p_id text) RETURNS text[]
    LANGUAGE plpgsql STABLE STRICT
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_path text[] := ARRAY[p_id];
    v_cur text := p_id;
    r record;
BEGIN
    r := notify_ext._find_resource(v_cur);
    IF r.variant IS NULL THEN
        RETURN NULL;
    END IF;
    LOOP
        EXIT WHEN r.parent_id IS NULL;
        IF r.parent_id = ANY (v_path) THEN
            RAISE EXCEPTION 'resource "%" is its own ancestor', r.parent_id
                USING ERRCODE = 'data_exception',
                      HINT = 'Move one of the resources in the cycle under another parent.';
        END IF;
        v_path := r.parent_id || v_path;
        v_cur := r.parent_id;
        r := notify_ext._find_resource(v_cur);
        EXIT WHEN r.variant IS NULL;
    END LOOP;
    RETURN v_path;
END
$$;

-- Internal: variant and path of a resource; no row when unknown.
CREATE FUNCTION notify_ext._resource_info(p_id text, OUT variant text, OUT path text[])
    RETURNS SETOF record
    LANGUAGE sql STABLE STRICT
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT f.variant, notify_ext._resource_path(p_id)
      FROM notify_ext._find_resource(p_id) f
     WHERE f.variant IS NOT NULL
$$;

REVOKE ALL ON FUNCTION notify_ext._find_resource(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION notify_ext._resource_path(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION notify_ext._resource_info(text) FROM PUBLIC;

-- Internal: the path of a resource, or 42704.
CREATE FUNCTION notify_ext._require_resource(resource_id text) RETURNS text[]
    LANGUAGE plpgsql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_path text[];
BEGIN
    IF resource_id IS NULL OR resource_id = '' THEN
        RAISE EXCEPTION 'resource id must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_path := notify_ext._resource_path(resource_id);
    IF v_path IS NULL THEN
        RAISE EXCEPTION 'resource "%" does not exist', resource_id
            USING ERRCODE = 'undefined_object',
                  HINT = 'Register it with notify_ext.register_resource() or track its table with notify_ext.track().';
    END IF;
    RETURN v_path;
END
$$;
REVOKE ALL ON FUNCTION notify_ext._require_resource(text) FROM PUBLIC;

CREATE FUNCTION notify_ext.resource_path(id text) RETURNS text[]
    LANGUAGE sql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT notify_ext._require_resource(id)
$$;

CREATE FUNCTION notify_ext.register_resource(id text, variant text, parent_id text DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_parent_path text[];
    v_old_parent text;
    v_created boolean;
BEGIN
    IF id IS NULL OR id = '' THEN
        RAISE EXCEPTION 'resource id must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF variant IS NULL OR variant = '' THEN
        RAISE EXCEPTION 'variant of resource "%" must not be empty', id
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF parent_id = '' THEN
        RAISE EXCEPTION 'parent id of resource "%" must not be empty', id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass NULL for a root resource.';
    END IF;
    -- Serialize concurrent moves so that two of them cannot form a cycle.
    PERFORM pg_catalog.pg_advisory_xact_lock('notify_ext.resources'::regclass::oid::int, 0);
    IF parent_id IS NOT NULL THEN
        v_parent_path := notify_ext._resource_path(parent_id);
        IF v_parent_path IS NULL THEN
            RAISE EXCEPTION 'parent resource "%" of "%" does not exist', parent_id, id
                USING ERRCODE = 'undefined_object',
                      HINT = 'Register the parent first.';
        END IF;
        IF id = ANY (v_parent_path) THEN
            RAISE EXCEPTION 'cannot move resource "%" under "%": "%" is inside its subtree',
                            id, parent_id, parent_id
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
    -- Changing a resource takes ADMIN on it; hanging one under a parent
    -- takes APPEND on the parent.  New roots are anyone's to create.
    IF NOT notify_ext._is_service_caller() THEN
        SELECT r.parent_id INTO v_old_parent FROM notify_ext.resources r
         WHERE r.id = register_resource.id;
        IF FOUND THEN
            PERFORM notify_ext._require_admin(id, 'changing a registered resource');
        END IF;
        IF parent_id IS NOT NULL AND (NOT FOUND OR v_old_parent IS DISTINCT FROM parent_id)
           AND NOT notify_ext.has_permission(notify_ext.current_principal(), parent_id, 'APPEND') THEN
            RAISE EXCEPTION 'registering "%" under "%" needs APPEND on "%": principal "%" does not have it',
                            id, parent_id, parent_id, notify_ext.current_principal()
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'Ask an ADMIN of the parent (notify_ext.request_access()) or use a service role.';
        END IF;
    END IF;
    INSERT INTO notify_ext.resources AS r (id, variant, parent_id, created_by)
    VALUES (register_resource.id, register_resource.variant, register_resource.parent_id,
            notify_ext.current_principal())
    ON CONFLICT ON CONSTRAINT resources_pkey DO UPDATE
       SET variant = excluded.variant, parent_id = excluded.parent_id
     WHERE (r.variant, r.parent_id) IS DISTINCT FROM (excluded.variant, excluded.parent_id)
    RETURNING (xmax = 0) INTO v_created;
    IF FOUND THEN
        PERFORM notify_ext._resources_changed();
    END IF;
    -- Whoever creates a resource may administer it (service roles need no grant).
    IF v_created AND NOT notify_ext._is_service_caller() THEN
        INSERT INTO notify_ext.permissions (principal, resource_id, level, granted_by)
        VALUES (notify_ext.current_principal(), register_resource.id, 4, notify_ext.current_principal())
        ON CONFLICT (principal, resource_id) DO UPDATE SET level = 4;
    END IF;
END
$$;
--------------------------------------------------------------------------
-- Who is calling (see docs/inbox.md)
--
-- The principal is the outer role's name (current_user outside SECURITY
-- DEFINER functions), or notify_ext.principal when a superuser or a member
-- of the role named by notify_ext.app_role has set it.
--------------------------------------------------------------------------

CREATE FUNCTION notify_ext.current_principal() RETURNS text
    LANGUAGE c STABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'notify_ext_current_principal';

-- True when the caller (not the owner of a SECURITY DEFINER function being
-- run) may make service calls: a superuser or a member of notify_ext.app_role.
CREATE FUNCTION notify_ext._is_service_caller() RETURNS boolean
    LANGUAGE c STABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'notify_ext_is_service_caller';

-- Raises 42501 naming the call unless the caller may make service calls.
CREATE FUNCTION notify_ext._require_service_caller(what text) RETURNS void
    LANGUAGE c STABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'notify_ext_require_service_caller';

-- Internal: the inbox channel of a principal (see notify_ext.subscription_channel()).
CREATE FUNCTION notify_ext._inbox_channel(principal text) RETURNS text
    LANGUAGE c STABLE STRICT PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'notify_ext_inbox_channel';
REVOKE ALL ON FUNCTION notify_ext._inbox_channel(text) FROM PUBLIC;

-- Internal: queues the NOTIFY of one new notification (see 30_inbox.sql).
CREATE FUNCTION notify_ext._inbox_notify(recipient text, id bigint, type text, message text,
                                         meta jsonb, refs jsonb, ts timestamptz, read boolean)
    RETURNS void
    LANGUAGE c VOLATILE PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'notify_ext_inbox_notify';
REVOKE ALL ON FUNCTION notify_ext._inbox_notify(text, bigint, text, text, jsonb, jsonb, timestamptz, boolean) FROM PUBLIC;
--------------------------------------------------------------------------
-- The event log
--
-- seq is assigned when the writing transaction commits (see
-- docs/ordering.md), so it follows commit order.  The sequence below is not
-- used to number events: it only persists how far numbering has gone, in
-- chunks, so that numbers are never reused after a restart.
--------------------------------------------------------------------------

CREATE SEQUENCE notify_ext.seq_reservation AS bigint MINVALUE 0 START WITH 0 NO CYCLE;
REVOKE ALL ON notify_ext.seq_reservation FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('notify_ext.seq_reservation', '');

-- Partitioned by day of occurred_at so that retention drops whole
-- partitions.  payload is stored as json text, which the trigger writes
-- without building a jsonb tree; readers get jsonb.
CREATE TABLE notify_ext.event_log (
    seq              bigint      NOT NULL,
    occurred_at      timestamptz NOT NULL,
    stream           text        NOT NULL,
    operation        text        NOT NULL,
    resource_id      text,
    resource_variant text,
    resource_path    text[],
    actor            text        NOT NULL,
    payload          json        NOT NULL,
    changed          text[]
) PARTITION BY RANGE (occurred_at);
-- seq is indexed with BRIN: events are written in seq order when their
-- transaction commits, so a block range holds a narrow band of seqs, and a
-- writer pays for one summary per range rather than an index entry per
-- event.  Writers summarize each range as they start it (src/capture.c);
-- autosummarize is the fallback.
CREATE INDEX event_log_seq_idx ON notify_ext.event_log USING brin (seq)
    WITH (pages_per_range = 32, autosummarize = on);
CREATE TABLE notify_ext.event_log_default PARTITION OF notify_ext.event_log DEFAULT;
REVOKE ALL ON notify_ext.event_log FROM PUBLIC;
REVOKE ALL ON notify_ext.event_log_default FROM PUBLIC;

-- Partitions of the event log (see docs/retention.md).
--
-- One partition per UTC day, event_log_pYYYYMMDD, FOR VALUES FROM (day
-- 00:00 UTC) TO (next day 00:00 UTC).  They are created ahead of time by
-- notify_ext.prune() (notify_ext.partitions_ahead days, default 7), never
-- by a writer: an event whose day has no partition lands in
-- event_log_default, and is moved into the day's partition when that is
-- created.  A new partition is built as a plain table and then attached,
-- which takes SHARE UPDATE EXCLUSIVE on event_log (writers and readers go
-- on) and ACCESS EXCLUSIVE on the default partition only.
--
-- Internal: creates the missing day partitions from days_back days before
-- today to days_ahead days after it.  With lock_budget_ms null it waits for
-- its locks like any DDL; otherwise it gives up on a partition whose locks
-- it cannot get within that budget (see _lock_within) and stops there.
-- Returns {"created": n, "deferred": [names]}.
CREATE FUNCTION notify_ext._create_event_partitions(days_ahead integer, days_back integer,
                                                    lock_budget_ms integer)
    RETURNS jsonb
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_today date := (pg_catalog.now() AT TIME ZONE 'UTC')::date;
    v_day date;
    v_name text;
    v_created integer := 0;
    v_deferred text[] := '{}';
    v_from timestamptz;
    v_to timestamptz;
BEGIN
    IF days_ahead IS NULL OR days_ahead < 0 OR days_ahead > 366 THEN
        RAISE EXCEPTION 'days_ahead must be between 0 and 366, not %', COALESCE(days_ahead::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF days_back IS NULL OR days_back < 0 OR days_back > 3660 THEN
        RAISE EXCEPTION 'days_back must be between 0 and 3660, not %', COALESCE(days_back::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR v_day IN SELECT d::date FROM pg_catalog.generate_series(
            v_today - days_back, v_today + days_ahead, interval '1 day') d
    LOOP
        v_name := 'event_log_p' || pg_catalog.to_char(v_day, 'YYYYMMDD');
        CONTINUE WHEN pg_catalog.to_regclass('notify_ext.' || v_name) IS NOT NULL;
        v_from := v_day::timestamp AT TIME ZONE 'UTC';
        v_to := (v_day + 1)::timestamp AT TIME ZONE 'UTC';
        BEGIN
            -- The locks ATTACH PARTITION takes, in the order readers take them.
            IF lock_budget_ms IS NOT NULL AND NOT (
                   notify_ext._lock_within('notify_ext.event_log', 'SHARE UPDATE EXCLUSIVE', lock_budget_ms)
                   AND notify_ext._lock_within('notify_ext.event_log_default', 'ACCESS EXCLUSIVE', lock_budget_ms)) THEN
                RAISE EXCEPTION USING ERRCODE = 'lock_not_available';
            END IF;
            EXECUTE pg_catalog.format('CREATE TABLE notify_ext.%I (LIKE notify_ext.event_log INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', v_name);
            EXECUTE pg_catalog.format('REVOKE ALL ON notify_ext.%I FROM PUBLIC', v_name);
            EXECUTE pg_catalog.format('WITH moved AS (DELETE FROM notify_ext.event_log_default
                                            WHERE occurred_at >= $1 AND occurred_at < $2 RETURNING *)
                            INSERT INTO notify_ext.%I SELECT * FROM moved', v_name)
                USING v_from, v_to;
            EXECUTE pg_catalog.format('ALTER TABLE notify_ext.event_log ATTACH PARTITION notify_ext.%I
                            FOR VALUES FROM (%L) TO (%L)', v_name, v_from, v_to);
            v_created := v_created + 1;
        EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
            v_deferred := v_deferred || v_name;
            EXIT;
        END;
    END LOOP;
    RETURN pg_catalog.jsonb_build_object('created', v_created, 'deferred', pg_catalog.to_jsonb(v_deferred));
END
$$;
REVOKE ALL ON FUNCTION notify_ext._create_event_partitions(integer, integer, integer) FROM PUBLIC;

-- Creates the missing day partitions from days_back days ago (default:
-- yesterday) up to days_ahead days from now (default:
-- notify_ext.partitions_ahead); returns how many it created.  Events of
-- those days that sit in the default partition are moved into them.
-- prune() calls this itself; call it by hand to backfill days.
CREATE FUNCTION notify_ext.create_event_partitions(days_ahead integer DEFAULT NULL,
                                                   days_back integer DEFAULT 1)
    RETURNS integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (notify_ext._create_event_partitions(
                COALESCE(days_ahead, (notify_ext._retention_settings() ->> 'partitions_ahead')::integer),
                days_back, NULL) ->> 'created')::integer;
END
$$;
REVOKE ALL ON FUNCTION notify_ext.create_event_partitions(integer, integer) FROM PUBLIC;

-- Settings of retention (GUCs defined in retention.c), as jsonb.
CREATE FUNCTION notify_ext._retention_settings() RETURNS jsonb
    LANGUAGE c STABLE AS 'MODULE_PATHNAME', 'notify_ext_retention_settings';
REVOKE ALL ON FUNCTION notify_ext._retention_settings() FROM PUBLIC;

-- Internal: takes a lock on rel (ONLY rel: a partitioned table's partitions
-- are not locked with it) without queueing in front of other sessions for
-- long: tries NOWAIT every couple of milliseconds for budget_ms, then waits
-- once for at most budget_ms.  Returns whether it holds the lock (until the
-- end of the transaction).  budget_ms 0: one NOWAIT try.
CREATE FUNCTION notify_ext._lock_within(rel regclass, mode text, budget_ms integer)
    RETURNS boolean
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_deadline timestamptz := pg_catalog.clock_timestamp() + budget_ms * interval '1 millisecond';
    v_old text := pg_catalog.current_setting('lock_timeout');
BEGIN
    IF mode NOT IN ('ACCESS SHARE', 'ROW SHARE', 'ROW EXCLUSIVE', 'SHARE UPDATE EXCLUSIVE',
                    'SHARE', 'SHARE ROW EXCLUSIVE', 'EXCLUSIVE', 'ACCESS EXCLUSIVE') THEN
        RAISE EXCEPTION 'unknown lock mode "%"', mode USING ERRCODE = 'invalid_parameter_value';
    END IF;
    LOOP
        BEGIN
            EXECUTE pg_catalog.format('LOCK TABLE ONLY %s IN %s MODE NOWAIT', rel, mode);
            RETURN true;
        EXCEPTION WHEN lock_not_available THEN
            NULL;
        END;
        EXIT WHEN pg_catalog.clock_timestamp() >= v_deadline;
        PERFORM pg_catalog.pg_sleep(0.002);
    END LOOP;
    IF budget_ms > 0 THEN
        BEGIN
            PERFORM pg_catalog.set_config('lock_timeout', budget_ms || 'ms', true);
            EXECUTE pg_catalog.format('LOCK TABLE ONLY %s IN %s MODE', rel, mode);
            PERFORM pg_catalog.set_config('lock_timeout', v_old, true);
            RETURN true;
        EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
            NULL;
        END;
    END IF;
    RETURN false;
END
$$;
REVOKE ALL ON FUNCTION notify_ext._lock_within(regclass, text, integer) FROM PUBLIC;

SELECT notify_ext.create_event_partitions();

-- Highest seq below which every event is committed and visible: a reader
-- that takes its snapshot after calling this never later sees a new event
-- at or below it.
CREATE FUNCTION notify_ext.committed_seq() RETURNS bigint
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'notify_ext_committed_seq';

CREATE FUNCTION notify_ext.publish(stream text, operation text, payload jsonb DEFAULT '{}',
                                   resource_id text DEFAULT NULL)
    RETURNS bigint
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'notify_ext_publish';

-- The event as consumers, webhooks and queries see it, built in C.
CREATE FUNCTION notify_ext.event_message(seq bigint, stream text, operation text,
        resource_id text, resource_variant text, resource_path text[],
        occurred_at timestamptz, actor text, payload json, changed text[])
    RETURNS jsonb
    LANGUAGE c IMMUTABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'notify_ext_event_message';

-- For service callers: everyone else sees no rows.
CREATE VIEW notify_ext.events WITH (security_barrier) AS
SELECT e.seq, e.stream, e.operation, e.resource_id, e.resource_variant, e.resource_path,
       e.occurred_at, e.actor, e.payload::jsonb AS payload, e.changed,
       notify_ext.event_message(e.seq, e.stream, e.operation, e.resource_id,
                                e.resource_variant, e.resource_path, e.occurred_at,
                                e.actor, e.payload, e.changed) AS message
  FROM notify_ext.event_log e
 WHERE e.seq > 0 AND notify_ext._is_service_caller();
REVOKE ALL ON notify_ext.events FROM PUBLIC;
GRANT SELECT ON notify_ext.events TO PUBLIC;
--------------------------------------------------------------------------
-- Tracking tables
--------------------------------------------------------------------------

CREATE FUNCTION notify_ext.track(relation regclass, variant text, id_column name DEFAULT 'id',
                                 parent_column name DEFAULT NULL, stream text DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_kind "char";
    v_nsp name;
BEGIN
    IF relation IS NULL THEN
        RAISE EXCEPTION 'relation to track must not be NULL'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT c.relkind, n.nspname INTO v_kind, v_nsp
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = relation;
    IF v_kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION 'cannot track "%": it is %', relation,
            CASE v_kind WHEN 'v' THEN 'a view' WHEN 'm' THEN 'a materialized view'
                        WHEN 'f' THEN 'a foreign table' WHEN 'S' THEN 'a sequence'
                        WHEN 'i' THEN 'an index' WHEN 'I' THEN 'an index'
                        WHEN 'c' THEN 'a composite type' ELSE 'not a table' END
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Only ordinary and partitioned tables can be tracked.';
    END IF;
    IF v_nsp IN ('pg_catalog', 'information_schema') OR v_nsp LIKE 'pg\_toast%'
       OR relation::oid < 16384 THEN
        RAISE EXCEPTION 'cannot track "%": it is a system catalog', relation
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_nsp = 'notify_ext' THEN
        RAISE EXCEPTION 'cannot track "%": it belongs to notify_ext', relation
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF variant IS NULL OR variant = '' THEN
        RAISE EXCEPTION 'variant for tracked table "%" must not be empty', relation
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The variant names the kind of resource a row is, e.g. ''dataset''.';
    END IF;
    IF stream = '' THEN
        RAISE EXCEPTION 'stream for tracked table "%" must not be empty', relation
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass NULL to use the table''s qualified name.';
    END IF;
    IF id_column IS NULL OR NOT EXISTS (
            SELECT FROM pg_attribute
             WHERE attrelid = relation AND attname = id_column
               AND attnum > 0 AND NOT attisdropped) THEN
        RAISE EXCEPTION 'id column "%" of table "%" does not exist', id_column, relation
            USING ERRCODE = 'undefined_column';
    END IF;
    IF parent_column IS NOT NULL AND NOT EXISTS (
            SELECT FROM pg_attribute
             WHERE attrelid = relation AND attname = parent_column
               AND attnum > 0 AND NOT attisdropped) THEN
        RAISE EXCEPTION 'parent column "%" of table "%" does not exist', parent_column, relation
            USING ERRCODE = 'undefined_column';
    END IF;
    IF parent_column = id_column THEN
        RAISE EXCEPTION 'parent column of table "%" must differ from its id column "%"',
                        relation, id_column
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- Tracking again replaces the configuration.
    IF EXISTS (SELECT FROM pg_trigger WHERE tgrelid = relation AND tgname = 'notify_ext_capture') THEN
        EXECUTE format('DROP TRIGGER notify_ext_capture ON %s', relation);
    END IF;
    IF EXISTS (SELECT FROM pg_trigger WHERE tgrelid = relation AND tgname = 'notify_ext_capture_truncate') THEN
        EXECUTE format('DROP TRIGGER notify_ext_capture_truncate ON %s', relation);
    END IF;
    EXECUTE format('CREATE TRIGGER notify_ext_capture AFTER INSERT OR UPDATE OR DELETE ON %s '
                   'FOR EACH ROW EXECUTE FUNCTION notify_ext.capture(%L, %L, %L, %L)',
                   relation, variant, id_column, COALESCE(parent_column, ''), COALESCE(stream, ''));
    EXECUTE format('CREATE TRIGGER notify_ext_capture_truncate AFTER TRUNCATE ON %s '
                   'FOR EACH STATEMENT EXECUTE FUNCTION notify_ext.capture(%L, %L, %L, %L)',
                   relation, variant, id_column, COALESCE(parent_column, ''), COALESCE(stream, ''));
END
$$;

CREATE FUNCTION notify_ext.untrack(relation regclass) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM notify_ext.tracked_tables t WHERE t.relation = untrack.relation) THEN
        RAISE EXCEPTION 'table "%" is not tracked', relation
            USING ERRCODE = 'undefined_object';
    END IF;
    EXECUTE format('DROP TRIGGER notify_ext_capture ON %s', relation);
    IF EXISTS (SELECT FROM pg_trigger WHERE tgrelid = relation AND tgname = 'notify_ext_capture_truncate') THEN
        EXECUTE format('DROP TRIGGER notify_ext_capture_truncate ON %s', relation);
    END IF;
END
$$;
--------------------------------------------------------------------------
-- Stream consumers
--
-- A consumer reads the events of its scope in seq order.  delivered_upto
-- is how far it has looked: every event in scope at or below it has been
-- handed out at least once.  Handed-out messages that are not acknowledged
-- yet sit in consumer_pending, grouped by the fetch that handed them out;
-- acknowledging removes them, so nothing is kept per acknowledged message.
--------------------------------------------------------------------------

CREATE TABLE notify_ext.consumers (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner                text NOT NULL,
    resource_id          text,
    include_subresources boolean NOT NULL,
    deliver              text NOT NULL
                         CHECK (deliver IN ('all', 'new', 'from_date', 'from_sequence')),
    from_date            timestamptz,
    from_sequence        bigint,
    streams              text[],
    operations           text[],
    ack_wait             interval NOT NULL,
    max_deliver          integer NOT NULL,
    delivered_upto       bigint NOT NULL,
    -- every seq at or below ack_floor is acknowledged or out of scope; kept
    -- up to date by fetches (acknowledgements only shrink consumer_pending)
    ack_floor            bigint NOT NULL,
    last_delivered       bigint,
    num_redelivered      bigint NOT NULL DEFAULT 0,
    num_terminated       bigint NOT NULL DEFAULT 0,
    missed               bigint NOT NULL DEFAULT 0,
    created_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX consumers_owner_idx ON notify_ext.consumers (owner);
REVOKE ALL ON notify_ext.consumers FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('notify_ext.consumers', '');

CREATE TABLE notify_ext.consumer_pending (
    consumer       uuid NOT NULL REFERENCES notify_ext.consumers ON DELETE CASCADE,
    batch          bigint GENERATED ALWAYS AS IDENTITY,
    delivery_count integer NOT NULL,
    seqs           bigint[] NOT NULL,     -- sorted
    lo             bigint NOT NULL,       -- seqs[1]
    hi             bigint NOT NULL,       -- seqs[cardinality(seqs)]
    delivered_at   timestamptz NOT NULL,
    due_at         timestamptz NOT NULL,
    PRIMARY KEY (consumer, batch)
);
-- a fetch's seqs are read and rewritten whole; compressing them costs more than it saves
ALTER TABLE notify_ext.consumer_pending ALTER COLUMN seqs SET STORAGE EXTERNAL;
REVOKE ALL ON notify_ext.consumer_pending FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('notify_ext.consumer_pending', '');

-- Generations of the key that signs replies.  The keys themselves are
-- derived from the server key file and never stored.
CREATE TABLE notify_ext.reply_keys (
    generation integer PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    retired_at timestamptz
);
REVOKE ALL ON notify_ext.reply_keys FROM PUBLIC;
INSERT INTO notify_ext.reply_keys (generation) VALUES (1);
SELECT pg_catalog.pg_extension_config_dump('notify_ext.reply_keys', '');


-- Internal: after commit, tell other sessions that consumers changed.
CREATE FUNCTION notify_ext._consumers_changed() RETURNS void
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'notify_ext_consumers_changed';
REVOKE ALL ON FUNCTION notify_ext._consumers_changed() FROM PUBLIC;

-- Internal: the consumer; 22023 for NULL, 42704 when it does not exist.
CREATE FUNCTION notify_ext._consumer(p_consumer uuid) RETURNS notify_ext.consumers
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c notify_ext.consumers;
BEGIN
    IF p_consumer IS NULL THEN
        RAISE EXCEPTION 'consumer must not be NULL'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO c FROM notify_ext.consumers WHERE id = p_consumer;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'stream consumer % does not exist', p_consumer
            USING ERRCODE = 'undefined_object';
    END IF;
    RETURN c;
END
$$;
REVOKE ALL ON FUNCTION notify_ext._consumer(uuid) FROM PUBLIC;

-- Internal: the consumer, if the caller may use it; 42704 / 42501 otherwise.
CREATE FUNCTION notify_ext._consumer_for_caller(p_consumer uuid, p_what text)
    RETURNS notify_ext.consumers
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c notify_ext.consumers;
BEGIN
    c := notify_ext._consumer(p_consumer);
    IF c.owner <> notify_ext.current_principal() AND NOT notify_ext._is_service_caller() THEN
        RAISE EXCEPTION '% of stream consumer % is for its owner: principal "%" is not "%"',
                        p_what, p_consumer, notify_ext.current_principal(), c.owner
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN c;
END
$$;
REVOKE ALL ON FUNCTION notify_ext._consumer_for_caller(uuid, text) FROM PUBLIC;

CREATE FUNCTION notify_ext.create_stream_consumer(
        resource_id text DEFAULT NULL,
        resource_variant text DEFAULT NULL,
        include_subresources boolean DEFAULT true,
        deliver text DEFAULT 'all',
        from_date timestamptz DEFAULT NULL,
        from_sequence bigint DEFAULT NULL,
        streams text[] DEFAULT NULL,
        operations text[] DEFAULT NULL,
        ack_wait interval DEFAULT '30 seconds',
        max_deliver integer DEFAULT -1)
    RETURNS uuid
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_principal text := notify_ext.current_principal();
    v_info record;
    v_start bigint;
    v_id uuid;
BEGIN
    IF deliver IS NULL OR deliver NOT IN ('all', 'new', 'from_date', 'from_sequence') THEN
        RAISE EXCEPTION 'unknown deliver policy "%"', deliver
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use all, new, from_date or from_sequence.';
    END IF;
    IF deliver = 'from_date' AND from_date IS NULL THEN
        RAISE EXCEPTION 'deliver "from_date" needs from_date'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF deliver <> 'from_date' AND from_date IS NOT NULL THEN
        RAISE EXCEPTION 'from_date is only used with deliver "from_date", not "%"', deliver
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF deliver = 'from_sequence' AND (from_sequence IS NULL OR from_sequence < 1) THEN
        RAISE EXCEPTION 'deliver "from_sequence" needs from_sequence of at least 1, not %',
                        COALESCE(from_sequence::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF deliver <> 'from_sequence' AND from_sequence IS NOT NULL THEN
        RAISE EXCEPTION 'from_sequence is only used with deliver "from_sequence", not "%"', deliver
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF ack_wait IS NULL OR ack_wait <= interval '0' THEN
        RAISE EXCEPTION 'ack_wait must be positive, not %', COALESCE(ack_wait::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF max_deliver IS NULL OR (max_deliver < 1 AND max_deliver <> -1) THEN
        RAISE EXCEPTION 'max_deliver must be -1 (no limit) or at least 1, not %',
                        COALESCE(max_deliver::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF include_subresources IS NULL THEN
        RAISE EXCEPTION 'include_subresources must not be NULL'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF cardinality(streams) = 0 OR '' = ANY (streams) OR array_position(streams, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'streams must be NULL (all streams) or a list of stream names, not %', streams
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF cardinality(operations) = 0 OR '' = ANY (operations) OR array_position(operations, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'operations must be NULL (all operations) or a list of operation names, not %', operations
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    IF resource_id IS NULL THEN
        IF resource_variant IS NOT NULL THEN
            RAISE EXCEPTION 'resource_variant "%" needs a resource_id', resource_variant
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        PERFORM notify_ext._require_service_caller('a stream consumer of every event');
    ELSE
        SELECT * INTO v_info FROM notify_ext._resource_info(resource_id);
        IF NOT FOUND THEN
            RAISE EXCEPTION 'resource "%" does not exist', resource_id
                USING ERRCODE = 'undefined_object';
        END IF;
        IF resource_variant IS NOT NULL AND resource_variant <> v_info.variant THEN
            RAISE EXCEPTION 'resource "%" is a %, not a %', resource_id, v_info.variant, resource_variant
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF NOT notify_ext._is_service_caller()
           AND NOT notify_ext.has_permission(v_principal, resource_id, 'READ') THEN
            RAISE EXCEPTION 'a stream consumer of resource "%" needs READ on it: principal "%" does not have it',
                            resource_id, v_principal
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'Ask an ADMIN of the resource (notify_ext.request_access()).';
        END IF;
        resource_variant := v_info.variant;
    END IF;

    v_start := CASE deliver WHEN 'new' THEN notify_ext.committed_seq()
                            WHEN 'from_sequence' THEN from_sequence - 1
                            ELSE 0 END;
    INSERT INTO notify_ext.consumers (owner, resource_id, include_subresources, deliver,
            from_date, from_sequence, streams, operations, ack_wait, max_deliver,
            delivered_upto, ack_floor)
    VALUES (v_principal, create_stream_consumer.resource_id,
            create_stream_consumer.include_subresources, deliver, from_date, from_sequence,
            streams, operations, ack_wait, max_deliver, v_start, v_start)
    RETURNING id INTO v_id;
    PERFORM notify_ext._consumers_changed();
    RETURN v_id;
END
$$;

CREATE FUNCTION notify_ext.get_event_message_batch(consumer uuid, batch_size integer DEFAULT 25,
                                                   wait interval DEFAULT '0')
    RETURNS TABLE (seq bigint, message jsonb, reply text, salt text, hmac text, delivery_count integer)
    LANGUAGE c VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'notify_ext_get_event_message_batch';

CREATE FUNCTION notify_ext.acknowledge_message_batch(replies jsonb) RETURNS integer
    LANGUAGE c VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'notify_ext_acknowledge_message_batch';

CREATE FUNCTION notify_ext.get_event_message_stream(consumer uuid) RETURNS text
    LANGUAGE plpgsql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM notify_ext._consumer_for_caller(consumer, 'the channel');
    RETURN 'notify_ext_consumer_' || replace(consumer::text, '-', '');
END
$$;

CREATE FUNCTION notify_ext.delete_stream_consumer(consumer uuid) RETURNS void
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c notify_ext.consumers;
    v_principal text := notify_ext.current_principal();
BEGIN
    c := notify_ext._consumer(consumer);
    IF c.owner <> v_principal AND NOT notify_ext._is_service_caller()
       AND NOT (c.resource_id IS NOT NULL
                AND notify_ext.has_permission(v_principal, c.resource_id, 'WRITE')) THEN
        RAISE EXCEPTION 'deleting stream consumer % needs its owner, WRITE on its resource or a service role: principal "%" has none',
                        consumer, v_principal
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    DELETE FROM notify_ext.consumers WHERE id = consumer;
    PERFORM notify_ext._consumers_changed();
END
$$;

-- Internal: whether an event is in a consumer's scope.
CREATE FUNCTION notify_ext._in_scope(c notify_ext.consumers, e notify_ext.event_log)
    RETURNS boolean
    LANGUAGE sql IMMUTABLE
AS $$
    SELECT (c.resource_id IS NULL OR e.resource_id = c.resource_id
            OR (c.include_subresources AND c.resource_id = ANY (e.resource_path)))
       AND (c.streams IS NULL OR e.stream = ANY (c.streams))
       AND (c.operations IS NULL OR e.operation = ANY (c.operations))
       AND (c.from_date IS NULL OR e.occurred_at >= c.from_date)
$$;
REVOKE ALL ON FUNCTION notify_ext._in_scope(notify_ext.consumers, notify_ext.event_log) FROM PUBLIC;

CREATE FUNCTION notify_ext.consumer_info(consumer uuid) RETURNS jsonb
    LANGUAGE plpgsql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c notify_ext.consumers := notify_ext._consumer_for_caller(consumer, 'the state');
    v_horizon bigint := notify_ext.committed_seq();
    v_num_pending bigint;
    v_ack_pending bigint;
    v_redelivered bigint;
    v_min_pending bigint;
BEGIN
    SELECT count(*) INTO v_num_pending
      FROM notify_ext.event_log e
     WHERE e.seq > c.delivered_upto AND e.seq <= v_horizon AND notify_ext._in_scope(c, e);
    SELECT COALESCE(sum(cardinality(p.seqs)), 0),
           COALESCE(sum(cardinality(p.seqs)) FILTER (WHERE p.delivery_count > 1), 0),
           min(p.lo)
      INTO v_ack_pending, v_redelivered, v_min_pending
      FROM notify_ext.consumer_pending p
     WHERE p.consumer = c.id;
    RETURN jsonb_build_object(
        'consumer', c.id,
        'owner', c.owner,
        'resource_id', c.resource_id,
        'include_subresources', c.include_subresources,
        'deliver', c.deliver,
        'streams', c.streams,
        'operations', c.operations,
        'ack_wait', c.ack_wait,
        'max_deliver', c.max_deliver,
        'num_pending', v_num_pending,
        'num_ack_pending', v_ack_pending,
        'num_redelivered', v_redelivered,
        'num_terminated', c.num_terminated,
        'ack_floor', COALESCE(v_min_pending - 1, c.delivered_upto),
        'delivered_upto', c.delivered_upto,
        'last_delivered', c.last_delivered,
        'missed', c.missed,
        'created_at', c.created_at);
END
$$;

CREATE FUNCTION notify_ext.rotate_reply_key() RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        RAISE EXCEPTION 'rotating the reply key needs a superuser'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    LOCK TABLE notify_ext.reply_keys IN EXCLUSIVE MODE;
    UPDATE notify_ext.reply_keys SET retired_at = now() WHERE retired_at IS NULL;
    INSERT INTO notify_ext.reply_keys (generation)
    SELECT max(generation) + 1 FROM notify_ext.reply_keys;
END
$$;
REVOKE ALL ON FUNCTION notify_ext.rotate_reply_key() FROM PUBLIC;
--------------------------------------------------------------------------
-- Permissions on resource trees (see docs/inbox.md)
--
-- Levels NONE < READ < APPEND < WRITE < ADMIN are stored as 0..4.  A grant
-- on a resource holds for its whole subtree: the level of a principal on a
-- resource is the highest level granted to it on the resource or any of its
-- ancestors.  When notify_ext.permission_function is set, that function
-- decides instead (has_permission() only; the grants stay as they are).
--------------------------------------------------------------------------

CREATE TABLE notify_ext.permissions (
    principal    text        NOT NULL CHECK (principal <> ''),
    resource_id  text        NOT NULL CHECK (resource_id <> ''),
    level        smallint    NOT NULL CHECK (level BETWEEN 1 AND 4),
    granted_by   text        NOT NULL,
    granted_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (principal, resource_id)
);
-- Finds the grantees (and the ADMINs) of a resource.
CREATE INDEX permissions_resource_idx ON notify_ext.permissions (resource_id, level);
SELECT pg_catalog.pg_extension_config_dump('notify_ext.permissions', '');

-- Everyone may read their own grants; changes go through the functions.
REVOKE ALL ON notify_ext.permissions FROM PUBLIC;
GRANT SELECT ON notify_ext.permissions TO PUBLIC;
ALTER TABLE notify_ext.permissions ENABLE ROW LEVEL SECURITY;
CREATE POLICY permissions_own ON notify_ext.permissions
    FOR SELECT USING (principal = notify_ext.current_principal());

-- Internal: a level name as its number; 22023 when unknown.
CREATE FUNCTION notify_ext._permission_level(level text) RETURNS smallint
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF level IS NULL THEN
        RAISE EXCEPTION 'permission level must not be null'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Levels are NONE, READ, APPEND, WRITE and ADMIN.';
    END IF;
    CASE upper(level)
        WHEN 'NONE' THEN RETURN 0;
        WHEN 'READ' THEN RETURN 1;
        WHEN 'APPEND' THEN RETURN 2;
        WHEN 'WRITE' THEN RETURN 3;
        WHEN 'ADMIN' THEN RETURN 4;
        ELSE
            RAISE EXCEPTION 'unknown permission level "%"', level
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Levels are NONE, READ, APPEND, WRITE and ADMIN.';
    END CASE;
END
$$;

CREATE FUNCTION notify_ext._permission_level_name(level smallint) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (ARRAY['NONE', 'READ', 'APPEND', 'WRITE', 'ADMIN'])[level + 1]
$$;


-- Internal: the built-in level of a principal on a resource path (0 when
-- nothing is granted).
CREATE FUNCTION notify_ext._granted_level(principal text, path text[]) RETURNS smallint
    LANGUAGE sql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT COALESCE(max(p.level), 0)::smallint
      FROM notify_ext.permissions p
     WHERE p.principal = _granted_level.principal
       AND p.resource_id = ANY (_granted_level.path)
$$;
REVOKE ALL ON FUNCTION notify_ext._granted_level(text, text[]) FROM PUBLIC;

-- Internal: the built-in answer of has_permission().
CREATE FUNCTION notify_ext._has_permission_builtin(principal text, resource_id text, level smallint)
    RETURNS boolean
    LANGUAGE plpgsql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_path text[] := notify_ext._require_resource(resource_id);
BEGIN
    RETURN level = 0 OR notify_ext._granted_level(principal, v_path) >= level;
END
$$;
REVOKE ALL ON FUNCTION notify_ext._has_permission_builtin(text, text, smallint) FROM PUBLIC;

-- Internal: calls fn as the caller (the outer role), never as the owner of
-- the SECURITY DEFINER function it is called from.
CREATE FUNCTION notify_ext._call_permission_function(fn regprocedure, principal text,
                                                     resource_id text, level text)
    RETURNS boolean
    LANGUAGE c VOLATILE STRICT AS 'MODULE_PATHNAME', 'notify_ext_call_permission_function';
REVOKE ALL ON FUNCTION notify_ext._call_permission_function(regprocedure, text, text, text) FROM PUBLIC;

-- Anyone may ask about anyone, like has_table_privilege().  A permission
-- function set by the superuser runs with the caller's privileges.
CREATE FUNCTION notify_ext.has_permission(principal text, resource_id text, level text)
    RETURNS boolean
    LANGUAGE plpgsql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_level smallint := notify_ext._permission_level(level);
    v_fn text := pg_catalog.current_setting('notify_ext.permission_function', true);
    v_proc regprocedure;
BEGIN
    IF principal IS NULL OR principal = '' THEN
        RAISE EXCEPTION 'principal must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF resource_id IS NULL OR resource_id = '' THEN
        RAISE EXCEPTION 'resource id must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_fn IS NULL OR v_fn = '' THEN
        RETURN notify_ext._has_permission_builtin(principal, resource_id, v_level);
    END IF;
    v_proc := pg_catalog.to_regprocedure(v_fn || '(text,text,text)');
    IF v_proc IS NULL THEN
        RAISE EXCEPTION 'permission function "%(text, text, text)" does not exist', v_fn
            USING ERRCODE = 'undefined_function',
                  HINT = 'Set notify_ext.permission_function to a schema-qualified function (principal text, resource_id text, level text) returns boolean, or to an empty string.';
    END IF;
    RETURN notify_ext._call_permission_function(v_proc, principal, resource_id,
                                                notify_ext._permission_level_name(v_level));
END
$$;

-- Internal: ADMIN on the resource for the current principal, or a service
-- caller; 42501 otherwise.
CREATE FUNCTION notify_ext._require_admin(resource_id text, what text) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF notify_ext._is_service_caller() THEN
        RETURN;
    END IF;
    IF NOT notify_ext.has_permission(notify_ext.current_principal(), resource_id, 'ADMIN') THEN
        RAISE EXCEPTION '% needs ADMIN on resource "%": principal "%" does not have it',
                        what, resource_id, notify_ext.current_principal()
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Ask an ADMIN of the resource (notify_ext.request_access()) or use a service role.';
    END IF;
END
$$;

-- Internal: a reference to a resource, for refs of personal notifications.
CREATE FUNCTION notify_ext._resource_ref(resource_id text) RETURNS jsonb
    LANGUAGE sql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.jsonb_build_object('type', 'resource', 'id', _resource_ref.resource_id,
                                         'variant', (notify_ext._find_resource(_resource_ref.resource_id)).variant)
$$;
REVOKE ALL ON FUNCTION notify_ext._resource_ref(text) FROM PUBLIC;

CREATE FUNCTION notify_ext.grant_permission(principal text, resource_id text, level text)
    RETURNS void
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_level smallint := notify_ext._permission_level(level);
    v_by text := notify_ext.current_principal();
    v_old smallint;
BEGIN
    IF principal IS NULL OR principal = '' THEN
        RAISE EXCEPTION 'principal must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM notify_ext._require_resource(resource_id);
    PERFORM notify_ext._require_admin(resource_id, 'granting a permission');
    IF v_level = 0 THEN
        PERFORM notify_ext.revoke_permission(principal, resource_id);
        RETURN;
    END IF;

    SELECT p.level INTO v_old FROM notify_ext.permissions p
     WHERE p.principal = grant_permission.principal AND p.resource_id = grant_permission.resource_id
       FOR UPDATE;
    IF v_old = v_level THEN
        RETURN;
    END IF;
    INSERT INTO notify_ext.permissions AS p (principal, resource_id, level, granted_by)
    VALUES (grant_permission.principal, grant_permission.resource_id, v_level, v_by)
    ON CONFLICT ON CONSTRAINT permissions_pkey DO UPDATE
       SET level = excluded.level, granted_by = excluded.granted_by, granted_at = excluded.granted_at;

    PERFORM notify_ext._notify(
        principal,
        CASE WHEN v_old IS NULL THEN 'PERMISSION_GRANTED' ELSE 'PERMISSION_UPDATED' END,
        CASE WHEN v_old IS NULL
             THEN pg_catalog.format('%s granted you %s on %s', v_by,
                                    notify_ext._permission_level_name(v_level), resource_id)
             ELSE pg_catalog.format('%s changed your permission on %s from %s to %s', v_by, resource_id,
                                    notify_ext._permission_level_name(v_old),
                                    notify_ext._permission_level_name(v_level)) END,
        pg_catalog.jsonb_build_object('resource_id', resource_id,
                                      'level', notify_ext._permission_level_name(v_level),
                                      'previous_level', notify_ext._permission_level_name(v_old),
                                      'by', v_by),
        pg_catalog.now(),
        pg_catalog.jsonb_build_array(notify_ext._resource_ref(resource_id)));
END
$$;

CREATE FUNCTION notify_ext.revoke_permission(principal text, resource_id text)
    RETURNS void
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_by text := notify_ext.current_principal();
    v_old smallint;
BEGIN
    IF principal IS NULL OR principal = '' THEN
        RAISE EXCEPTION 'principal must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM notify_ext._require_resource(resource_id);
    PERFORM notify_ext._require_admin(resource_id, 'revoking a permission');
    DELETE FROM notify_ext.permissions p
     WHERE p.principal = revoke_permission.principal AND p.resource_id = revoke_permission.resource_id
    RETURNING p.level INTO v_old;
    IF v_old IS NULL THEN
        RETURN;
    END IF;
    PERFORM notify_ext._notify(
        principal, 'PERMISSION_REVOKED',
        pg_catalog.format('%s revoked your %s permission on %s', v_by,
                          notify_ext._permission_level_name(v_old), resource_id),
        pg_catalog.jsonb_build_object('resource_id', resource_id,
                                      'previous_level', notify_ext._permission_level_name(v_old),
                                      'by', v_by),
        pg_catalog.now(),
        pg_catalog.jsonb_build_array(notify_ext._resource_ref(resource_id)));
END
$$;

-- Internal: who may grant access to a resource: the principals with ADMIN
-- on it or an ancestor; failing that its creator (created_by of a registered
-- resource, or the actor of the earliest retained create event of a tracked
-- row).
CREATE FUNCTION notify_ext._resource_admins(resource_id text) RETURNS SETOF text
    LANGUAGE plpgsql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_path text[] := notify_ext._require_resource(resource_id);
    v_creator text;
    r record;
BEGIN
    RETURN QUERY SELECT DISTINCT p.principal FROM notify_ext.permissions p
                  WHERE p.resource_id = ANY (v_path) AND p.level = 4
                  ORDER BY 1;
    IF FOUND THEN
        RETURN;
    END IF;
    SELECT r2.created_by INTO v_creator FROM notify_ext.resources r2 WHERE r2.id = resource_id;
    IF v_creator IS NULL THEN
        r := notify_ext._find_resource(resource_id);
        SELECT e.actor INTO v_creator FROM notify_ext.event_log e
         WHERE e.resource_id = _resource_admins.resource_id
           AND e.operation = r.variant || '.create'
         ORDER BY e.seq LIMIT 1;
    END IF;
    IF v_creator IS NOT NULL THEN
        RETURN NEXT v_creator;
    END IF;
END
$$;
REVOKE ALL ON FUNCTION notify_ext._resource_admins(text) FROM PUBLIC;

CREATE FUNCTION notify_ext.request_access(resource_id text, level text, message text DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_level smallint := notify_ext._permission_level(level);
    v_me text := notify_ext.current_principal();
    v_n integer := 0;
    v_admin text;
BEGIN
    PERFORM notify_ext._require_resource(resource_id);
    IF v_level = 0 THEN
        RAISE EXCEPTION 'cannot request access level "%"', level
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Request READ, APPEND, WRITE or ADMIN.';
    END IF;
    FOR v_admin IN SELECT a FROM notify_ext._resource_admins(resource_id) a LOOP
        PERFORM notify_ext._notify(
            v_admin, 'ACCESS_REQUESTED',
            COALESCE(message, pg_catalog.format('%s requests %s on %s', v_me,
                                                notify_ext._permission_level_name(v_level), resource_id)),
            pg_catalog.jsonb_build_object('resource_id', resource_id,
                                          'level', notify_ext._permission_level_name(v_level),
                                          'requester', v_me, 'message', message),
            pg_catalog.now(),
            pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('type', 'user', 'id', v_me),
                                         notify_ext._resource_ref(resource_id)));
        v_n := v_n + 1;
    END LOOP;
    IF v_n = 0 THEN
        RAISE EXCEPTION 'nobody can grant access to resource "%"', resource_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Grant ADMIN on the resource or one of its ancestors to someone first.';
    END IF;
END
$$;
--------------------------------------------------------------------------
-- Personal notifications: the inbox (see docs/inbox.md)
--
-- One row per notification.  Acknowledging or deleting removes the row.
-- Counts per (recipient, type) are kept as insert-only deltas in
-- inbox_counts by statement-level triggers, so that itemsInTotal and
-- unread_count() cost the same for a user with a million notifications as
-- for one with ten, without a hot counter row that concurrent writers would
-- queue (or deadlock) on.  Deltas are folded together once a recipient has
-- a few of them.  create_notifications_bulk() adds the deltas (and sends
-- the NOTIFYs) of its own rows itself, when the insert trigger fires.
--------------------------------------------------------------------------

CREATE SEQUENCE notify_ext.notifications_id_seq AS bigint;
REVOKE ALL ON notify_ext.notifications_id_seq FROM PUBLIC;

CREATE TABLE notify_ext.notifications (
    id         bigint      PRIMARY KEY DEFAULT pg_catalog.nextval('notify_ext.notifications_id_seq'),
    recipient  text        NOT NULL CHECK (recipient <> ''),
    type       text        NOT NULL CHECK (type <> ''),
    message    text        NOT NULL,
    meta       jsonb,
    refs       jsonb,
    ts         timestamptz NOT NULL DEFAULT pg_catalog.now(),
    read       boolean     NOT NULL DEFAULT false
);
ALTER SEQUENCE notify_ext.notifications_id_seq OWNED BY notify_ext.notifications.id;
-- One user's page, newest first, whatever the table holds for others.
CREATE INDEX notifications_recipient_ts_idx
    ON notify_ext.notifications (recipient, ts DESC, id DESC);
SELECT pg_catalog.pg_extension_config_dump('notify_ext.notifications', '');
SELECT pg_catalog.pg_extension_config_dump('notify_ext.notifications_id_seq', '');

CREATE TABLE notify_ext.inbox_counts (
    recipient  text   NOT NULL,
    type       text   NOT NULL,
    total      bigint NOT NULL,
    unread     bigint NOT NULL
);
CREATE INDEX inbox_counts_recipient_idx ON notify_ext.inbox_counts (recipient, type);
REVOKE ALL ON notify_ext.inbox_counts FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('notify_ext.inbox_counts', '');

-- Types a recipient has switched off (a row means "off").
CREATE TABLE notify_ext.notification_preferences (
    principal  text NOT NULL CHECK (principal <> ''),
    type       text NOT NULL CHECK (type <> ''),
    PRIMARY KEY (principal, type)
);
SELECT pg_catalog.pg_extension_config_dump('notify_ext.notification_preferences', '');

-- Direct SQL: a role sees, marks read and deletes only the rows of its own
-- principal; it can neither insert nor change anything else.
REVOKE ALL ON notify_ext.notifications FROM PUBLIC;
GRANT SELECT, DELETE ON notify_ext.notifications TO PUBLIC;
GRANT UPDATE (read) ON notify_ext.notifications TO PUBLIC;
ALTER TABLE notify_ext.notifications ENABLE ROW LEVEL SECURITY;
CREATE POLICY notifications_own ON notify_ext.notifications
    USING (recipient = notify_ext.current_principal())
    WITH CHECK (recipient = notify_ext.current_principal());

REVOKE ALL ON notify_ext.notification_preferences FROM PUBLIC;
GRANT SELECT ON notify_ext.notification_preferences TO PUBLIC;
ALTER TABLE notify_ext.notification_preferences ENABLE ROW LEVEL SECURITY;
CREATE POLICY notification_preferences_own ON notify_ext.notification_preferences
    FOR SELECT USING (principal = notify_ext.current_principal());

-- The JSON of one notification, as list_notifications() shows it.
CREATE FUNCTION notify_ext._inbox_item(id bigint, type text, message text, meta jsonb,
                                       ts timestamptz, read boolean)
    RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT pg_catalog.jsonb_build_object(
        'id', id, 'type', type, 'message', message, 'meta', meta,
        'ts', pg_catalog.to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'read', read)
$$;

--------------------------------------------------------------------------
-- Counts and live notifications, kept by statement-level triggers
--------------------------------------------------------------------------

-- Folds the count deltas of recipients that have many into one row per
-- type.  Never waits: a recipient another open transaction is folding is
-- skipped, and so is everything outside READ COMMITTED (where deleting a row
-- another transaction deleted would be a serialization failure).
CREATE FUNCTION notify_ext._inbox_compact(recipients text[]) RETURNS void
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN
        RETURN;
    END IF;
    WITH need AS (
        SELECT c.recipient FROM notify_ext.inbox_counts c
         WHERE c.recipient = ANY (recipients)
         GROUP BY c.recipient
        HAVING count(*) > 2 * count(DISTINCT c.type) + 8),
    mine AS MATERIALIZED (
        SELECT need.recipient FROM need
         WHERE pg_catalog.pg_try_advisory_xact_lock(
                   'notify_ext.inbox_counts'::pg_catalog.regclass::pg_catalog.oid::integer,
                   pg_catalog.hashtext(need.recipient))),
    d AS (
        DELETE FROM notify_ext.inbox_counts c USING mine
         WHERE c.recipient = mine.recipient
        RETURNING c.recipient, c.type, c.total, c.unread)
    INSERT INTO notify_ext.inbox_counts (recipient, type, total, unread)
    SELECT d.recipient, d.type, sum(d.total), sum(d.unread) FROM d
     GROUP BY d.recipient, d.type
    HAVING sum(d.total) <> 0 OR sum(d.unread) <> 0;
END
$$;
REVOKE ALL ON FUNCTION notify_ext._inbox_compact(text[]) FROM PUBLIC;

-- Insert: one count delta per (recipient, type), the NOTIFY of every new row
-- (sent when the transaction commits, in insertion order: the
-- notification's JSON, or {"id": …, "truncated": true} from 8000 bytes on),
-- then folding.  In C (src/inbox.c): it reads the transition table once and
-- computes each recipient's channel once per statement.
CREATE FUNCTION notify_ext._inbox_after_insert() RETURNS trigger
    LANGUAGE c
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'notify_ext_inbox_after_insert';

CREATE FUNCTION notify_ext._inbox_after_update() RETURNS trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO notify_ext.inbox_counts (recipient, type, total, unread)
    SELECT d.recipient, d.type, sum(d.total), sum(d.unread)
      FROM (SELECT o.recipient, o.type, -1 AS total, CASE WHEN o.read THEN 0 ELSE -1 END AS unread
              FROM old_rows o
            UNION ALL
            SELECT n.recipient, n.type, 1, CASE WHEN n.read THEN 0 ELSE 1 END
              FROM new_rows n) d
     GROUP BY d.recipient, d.type
    HAVING sum(d.total) <> 0 OR sum(d.unread) <> 0;
    PERFORM notify_ext._inbox_compact(ARRAY(SELECT DISTINCT n.recipient FROM new_rows n));
    RETURN NULL;
END
$$;

CREATE FUNCTION notify_ext._inbox_after_delete() RETURNS trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO notify_ext.inbox_counts (recipient, type, total, unread)
    SELECT o.recipient, o.type, -count(*), -count(*) FILTER (WHERE NOT o.read)
      FROM old_rows o GROUP BY o.recipient, o.type;
    PERFORM notify_ext._inbox_compact(ARRAY(SELECT DISTINCT o.recipient FROM old_rows o));
    RETURN NULL;
END
$$;

CREATE FUNCTION notify_ext._inbox_after_truncate() RETURNS trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    TRUNCATE notify_ext.inbox_counts;
    RETURN NULL;
END
$$;

REVOKE ALL ON FUNCTION notify_ext._inbox_after_insert() FROM PUBLIC;
REVOKE ALL ON FUNCTION notify_ext._inbox_after_update() FROM PUBLIC;
REVOKE ALL ON FUNCTION notify_ext._inbox_after_delete() FROM PUBLIC;
REVOKE ALL ON FUNCTION notify_ext._inbox_after_truncate() FROM PUBLIC;

CREATE TRIGGER notifications_after_insert AFTER INSERT ON notify_ext.notifications
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION notify_ext._inbox_after_insert();
CREATE TRIGGER notifications_after_update AFTER UPDATE ON notify_ext.notifications
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION notify_ext._inbox_after_update();
CREATE TRIGGER notifications_after_delete AFTER DELETE ON notify_ext.notifications
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION notify_ext._inbox_after_delete();
CREATE TRIGGER notifications_after_truncate AFTER TRUNCATE ON notify_ext.notifications
    FOR EACH STATEMENT EXECUTE FUNCTION notify_ext._inbox_after_truncate();

--------------------------------------------------------------------------
-- Service calls
--------------------------------------------------------------------------

-- Internal: creates one notification without asking who calls (the
-- permission functions use it); NULL when the recipient switched the type off.
CREATE FUNCTION notify_ext._notify(recipient text, type text, message text, meta jsonb,
                                   ts timestamptz, refs jsonb)
    RETURNS bigint
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id bigint;
BEGIN
    IF recipient IS NULL OR recipient = '' THEN
        RAISE EXCEPTION 'recipient must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF type IS NULL OR type = '' THEN
        RAISE EXCEPTION 'type of a notification for "%" must not be empty', recipient
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF message IS NULL THEN
        RAISE EXCEPTION 'message of a notification for "%" must not be null', recipient
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF meta IS NOT NULL AND pg_catalog.jsonb_typeof(meta) NOT IN ('object', 'null') THEN
        RAISE EXCEPTION 'meta must be a JSON object, not %', pg_catalog.jsonb_typeof(meta)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF refs IS NOT NULL AND pg_catalog.jsonb_typeof(refs) NOT IN ('array', 'null') THEN
        RAISE EXCEPTION 'refs must be a JSON array, not %', pg_catalog.jsonb_typeof(refs)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT 1 FROM notify_ext.notification_preferences p
                WHERE p.principal = _notify.recipient AND p.type = _notify.type) THEN
        RETURN NULL;
    END IF;
    INSERT INTO notify_ext.notifications AS n (recipient, type, message, meta, refs, ts)
    VALUES (recipient, type, message, NULLIF(meta, 'null'), NULLIF(refs, 'null'),
            COALESCE(ts, pg_catalog.now()))
    RETURNING n.id INTO v_id;
    RETURN v_id;
END
$$;
REVOKE ALL ON FUNCTION notify_ext._notify(text, text, text, jsonb, timestamptz, jsonb) FROM PUBLIC;

CREATE FUNCTION notify_ext.create_notification(recipient text, type text, message text,
                                               meta jsonb DEFAULT NULL,
                                               ts timestamptz DEFAULT now(),
                                               refs jsonb DEFAULT NULL)
    RETURNS bigint
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM notify_ext._require_service_caller('notify_ext.create_notification()');
    RETURN notify_ext._notify(recipient, type, message, meta, ts, refs);
END
$$;

-- In C (src/inbox.c), all or nothing: every item must be a JSON object (the
-- first one that is not is named), then the items are checked in order and
-- the first bad one rejects the call with 22023 "item N of items …" (counted
-- from 0) before anything is created.  Types the recipient switched off are
-- skipped (NULL at their position); the others get ids from
-- notifications_id_seq in item order and are written straight into the
-- table, like COPY does (or by one INSERT ... SELECT FROM unnest(...) when
-- another trigger or forced RLS would act on it); the function then counts
-- and NOTIFYs them itself when the insert trigger would have fired.
CREATE FUNCTION notify_ext.create_notifications_bulk(items jsonb) RETURNS bigint[]
    LANGUAGE c VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'notify_ext_create_notifications_bulk';

CREATE FUNCTION notify_ext.delete_notifications(ids bigint[]) RETURNS bigint[]
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_failed bigint[];
BEGIN
    PERFORM notify_ext._require_service_caller('notify_ext.delete_notifications()');
    IF ids IS NULL THEN
        RAISE EXCEPTION 'ids must not be null'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    WITH del AS (
        DELETE FROM notify_ext.notifications n WHERE n.id = ANY (ids) RETURNING n.id)
    SELECT pg_catalog.array_agg(DISTINCT i ORDER BY i) INTO v_failed
      FROM pg_catalog.unnest(ids) i
     WHERE i IS NOT NULL AND i NOT IN (SELECT del.id FROM del);
    RETURN COALESCE(v_failed, '{}');
END
$$;

--------------------------------------------------------------------------
-- User calls: the caller's own inbox only
--------------------------------------------------------------------------

CREATE FUNCTION notify_ext.list_notifications(type text DEFAULT NULL,
                                              since timestamptz DEFAULT NULL,
                                              items_per_page integer DEFAULT 50,
                                              page integer DEFAULT 0)
    RETURNS jsonb
    LANGUAGE plpgsql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_me text := notify_ext.current_principal();
    v_total bigint;
    v_items jsonb;
BEGIN
    IF items_per_page IS NULL OR items_per_page < 1 OR items_per_page > 1000 THEN
        RAISE EXCEPTION 'items_per_page must be between 1 and 1000, not %', COALESCE(items_per_page::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF page IS NULL OR page < 0 THEN
        RAISE EXCEPTION 'page must be 0 or more, not %', COALESCE(page::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pages are counted from 0.';
    END IF;
    IF since IS NULL THEN
        SELECT COALESCE(sum(c.total), 0) INTO v_total
          FROM notify_ext.inbox_counts c
         WHERE c.recipient = v_me
           AND (list_notifications.type IS NULL OR c.type = list_notifications.type);
    ELSE
        SELECT count(*) INTO v_total
          FROM notify_ext.notifications n
         WHERE n.recipient = v_me AND n.ts >= since
           AND (list_notifications.type IS NULL OR n.type = list_notifications.type);
    END IF;
    SELECT COALESCE(pg_catalog.jsonb_agg(x.item ORDER BY x.ts DESC, x.id DESC), '[]') INTO v_items
      FROM (SELECT n.id, n.ts,
                   notify_ext._inbox_item(n.id, n.type, n.message, n.meta, n.ts, n.read) AS item
              FROM notify_ext.notifications n
             WHERE n.recipient = v_me
               AND (list_notifications.type IS NULL OR n.type = list_notifications.type)
               AND (since IS NULL OR n.ts >= since)
             ORDER BY n.ts DESC, n.id DESC
             LIMIT items_per_page OFFSET page::bigint * items_per_page) x;
    RETURN pg_catalog.jsonb_build_object('itemsInTotal', v_total, 'itemsPerPage', items_per_page,
                                         'pageNumber', page, 'items', v_items);
END
$$;

-- Internal: the ids of the list that are not notifications of principal p.
CREATE FUNCTION notify_ext._inbox_not_mine(p text, ids bigint[]) RETURNS bigint[]
    LANGUAGE sql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT COALESCE(pg_catalog.array_agg(DISTINCT i ORDER BY i), '{}')
      FROM pg_catalog.unnest(ids) i
     WHERE i IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM notify_ext.notifications n WHERE n.id = i AND n.recipient = p)
$$;
REVOKE ALL ON FUNCTION notify_ext._inbox_not_mine(text, bigint[]) FROM PUBLIC;

CREATE FUNCTION notify_ext.mark_as_read(ids bigint[]) RETURNS bigint[]
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_me text := notify_ext.current_principal();
    v_failed bigint[];
BEGIN
    IF ids IS NULL THEN
        RAISE EXCEPTION 'ids must not be null'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_failed := notify_ext._inbox_not_mine(v_me, ids);
    UPDATE notify_ext.notifications n SET read = true
     WHERE n.id = ANY (ids) AND n.recipient = v_me AND NOT n.read;
    RETURN v_failed;
END
$$;

CREATE FUNCTION notify_ext.mark_all_as_read() RETURNS integer
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_n integer;
BEGIN
    UPDATE notify_ext.notifications n SET read = true
     WHERE n.recipient = notify_ext.current_principal() AND NOT n.read;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    RETURN v_n;
END
$$;

CREATE FUNCTION notify_ext.get_personal_notifications()
    RETURNS TABLE (id bigint, type text, message text, meta jsonb, refs jsonb,
                   ts timestamptz, read boolean)
    LANGUAGE sql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT n.id, n.type, n.message, n.meta, n.refs, n.ts, n.read
      FROM notify_ext.notifications n
     WHERE n.recipient = notify_ext.current_principal()
     ORDER BY n.ts DESC, n.id DESC
$$;

CREATE FUNCTION notify_ext.acknowledge_personal_notifications(ids bigint[]) RETURNS bigint[]
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_me text := notify_ext.current_principal();
    v_failed bigint[];
BEGIN
    IF ids IS NULL THEN
        RAISE EXCEPTION 'ids must not be null'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_failed := notify_ext._inbox_not_mine(v_me, ids);
    DELETE FROM notify_ext.notifications n WHERE n.id = ANY (ids) AND n.recipient = v_me;
    RETURN v_failed;
END
$$;

CREATE FUNCTION notify_ext.unread_count() RETURNS bigint
    LANGUAGE sql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT COALESCE(sum(c.unread), 0)::bigint
      FROM notify_ext.inbox_counts c
     WHERE c.recipient = notify_ext.current_principal()
$$;

CREATE FUNCTION notify_ext.set_notification_preference(type text, enabled boolean) RETURNS void
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_me text := notify_ext.current_principal();
BEGIN
    IF type IS NULL OR type = '' THEN
        RAISE EXCEPTION 'notification type must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF enabled IS NULL THEN
        RAISE EXCEPTION 'enabled must be true or false for type "%"', type
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF enabled THEN
        DELETE FROM notify_ext.notification_preferences p
         WHERE p.principal = v_me AND p.type = set_notification_preference.type;
    ELSE
        INSERT INTO notify_ext.notification_preferences (principal, type)
        VALUES (v_me, set_notification_preference.type)
        ON CONFLICT DO NOTHING;
    END IF;
END
$$;

-- The channel to LISTEN on for the caller's new notifications.  See
-- docs/inbox.md for why it is a keyed hash of the principal.
CREATE FUNCTION notify_ext.subscription_channel() RETURNS text
    LANGUAGE sql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT notify_ext._inbox_channel(notify_ext.current_principal())
$$;
--------------------------------------------------------------------------
-- Retention (see docs/retention.md)
--
-- notify_ext.prune() removes what has expired:
--   - events: whole day partitions of notify_ext.event_log whose day ended
--     more than notify_ext.event_retention ago are dropped; rows are never
--     deleted one by one (except stray ones in the default partition);
--   - read personal notifications older than
--     notify_ext.read_notification_retention (by ts), in bounded batches;
--   - webhook delivery records older than notify_ext.delivery_retention (by
--     created_at), in bounded batches, once notify_ext.delivery_log exists.
-- It also creates the partitions of the coming days.  The strong locks
-- (attaching and detaching partitions) come last and are only taken when
-- they are free within notify_ext.prune_lock_timeout; what cannot be locked
-- is left for the next run and reported as deferred.  Expired partitions
-- are detached (and renamed event_log_expired_<oid>) in prune()'s
-- transaction; a background worker drops them once it has committed, so
-- that removing their files never happens under the lock on event_log.
--------------------------------------------------------------------------

-- Finds read notifications by age without looking at unread ones.  Only
-- read rows are in it: creating notifications does not touch it.
CREATE INDEX notifications_read_ts_idx ON notify_ext.notifications (ts) WHERE read;

-- Internal: the partitions of the event log with their bounds (the default
-- partition has none and is not listed).  Read from pg_inherits and
-- pg_class.relpartbound in C: prune() calls it on every run.
CREATE FUNCTION notify_ext._event_partitions()
    RETURNS TABLE (rel regclass, name text, lower_bound timestamptz, upper_bound timestamptz)
    LANGUAGE c STABLE ROWS 20
    AS 'MODULE_PATHNAME', 'notify_ext_event_partitions';
REVOKE ALL ON FUNCTION notify_ext._event_partitions() FROM PUBLIC;

-- Internal: whether a btree index on a timestamptz leads to a visible row
-- below bound (EXISTS with the index's predicate, without planning a query).
-- prune() passes to_regclass(<index name>): null (no index) means "look".
CREATE FUNCTION notify_ext._index_has_key_below(index regclass, bound timestamptz) RETURNS boolean
    LANGUAGE c VOLATILE STRICT AS 'MODULE_PATHNAME', 'notify_ext_index_has_key_below';
REVOKE ALL ON FUNCTION notify_ext._index_has_key_below(regclass, timestamptz) FROM PUBLIC;

-- Internal: the partitions of the event log whose day ended at or before
-- cutoff, with pg_class.reltuples, whether VACUUM has counted them since
-- they last changed (then reltuples is their count) and whether they are
-- members of an extension: what prune() needs before it detaches them.
CREATE FUNCTION notify_ext._expired_event_partitions(cutoff timestamptz)
    RETURNS TABLE (rel regclass, name text, upper_bound timestamptz, reltuples real,
                   vacuum_counted boolean, extension_member boolean)
    LANGUAGE c STABLE STRICT ROWS 5
    AS 'MODULE_PATHNAME', 'notify_ext_expired_event_partitions';
REVOKE ALL ON FUNCTION notify_ext._expired_event_partitions(timestamptz) FROM PUBLIC;

-- Internal: tables prune() detached from the event log (renamed
-- event_log_expired_<oid>) that are not dropped yet.
CREATE FUNCTION notify_ext._detached_event_tables() RETURNS SETOF regclass
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.oid::regclass
      FROM pg_catalog.pg_class c
     WHERE c.relnamespace = 'notify_ext'::pg_catalog.regnamespace
       AND c.relkind = 'r' AND NOT c.relispartition
       AND c.relname LIKE 'event\_log\_expired\_%'
$$;
REVOKE ALL ON FUNCTION notify_ext._detached_event_tables() FROM PUBLIC;

-- Internal: drops the detached tables (run by the worker that
-- _start_event_table_dropper() has started when prune() committed).  No
-- one writes to or reads from them any more; a table someone still has
-- locked after a few seconds is left for the next run.  Returns how many
-- were dropped.
CREATE FUNCTION notify_ext._drop_detached_event_tables() RETURNS integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    SET lock_timeout = '5s'
AS $$
DECLARE
    v_rel regclass;
    v_n integer := 0;
BEGIN
    FOR v_rel IN SELECT * FROM notify_ext._detached_event_tables() LOOP
        BEGIN
            EXECUTE pg_catalog.format('DROP TABLE IF EXISTS %s', v_rel);
            v_n := v_n + 1;
        EXCEPTION WHEN lock_not_available OR deadlock_detected OR undefined_table THEN
            NULL;
        END;
    END LOOP;
    RETURN v_n;
END
$$;
REVOKE ALL ON FUNCTION notify_ext._drop_detached_event_tables() FROM PUBLIC;

-- Internal: has a background worker started when the current transaction
-- commits, which runs _drop_detached_event_tables() as the current user.
-- Returns true; if no worker slot is free at commit, the server log says so
-- and the next prune() tries again.
CREATE FUNCTION notify_ext._start_event_table_dropper() RETURNS boolean
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'notify_ext_start_event_table_dropper';
REVOKE ALL ON FUNCTION notify_ext._start_event_table_dropper() FROM PUBLIC;

-- Internal: before the events of a partition (all of them, or those that
-- occurred before older_than) are removed, adds to each stream consumer's
-- `missed` how many of them were in its scope and never delivered to it
-- (seq above its delivered_upto).  Returns the sum added.
--
-- Only consumers behind the partition's last event are looked at, and their
-- rows are locked first (FOR UPDATE, under the caller's lock_timeout): a
-- fetch of such a consumer waits until the removal commits, so nothing is
-- counted that is delivered meanwhile.  Consumers that kept up are neither
-- locked nor scanned.
CREATE FUNCTION notify_ext._count_missed_before_drop(partition regclass,
                                                     older_than timestamptz DEFAULT NULL)
    RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_max bigint;
    v_total bigint;
BEGIN
    IF pg_catalog.to_regclass('notify_ext.consumers') IS NULL THEN
        RETURN 0;
    END IF;
    EXECUTE pg_catalog.format('SELECT max(seq) FROM %s', partition) INTO v_max;
    IF v_max IS NULL
       OR NOT EXISTS (SELECT 1 FROM notify_ext.consumers c WHERE c.delivered_upto < v_max) THEN
        RETURN 0;
    END IF;
    EXECUTE pg_catalog.format($q$
        WITH lagging AS MATERIALIZED (
            SELECT c.id, c.delivered_upto, c.resource_id, c.include_subresources,
                   c.streams, c.operations, c.from_date
              FROM notify_ext.consumers c
             WHERE c.delivered_upto < $1
             ORDER BY c.id
               FOR UPDATE),
        counts AS (
            SELECT c.id,
                   (SELECT count(*) FROM %s e
                     WHERE e.seq > c.delivered_upto
                       AND ($2::timestamptz IS NULL OR e.occurred_at < $2)
                       AND (c.resource_id IS NULL OR e.resource_id = c.resource_id
                            OR (c.include_subresources AND c.resource_id = ANY (e.resource_path)))
                       AND (c.streams IS NULL OR e.stream = ANY (c.streams))
                       AND (c.operations IS NULL OR e.operation = ANY (c.operations))
                       AND (c.from_date IS NULL OR e.occurred_at >= c.from_date)) AS n
              FROM lagging c),
        upd AS (
            UPDATE notify_ext.consumers c SET missed = c.missed + counts.n
              FROM counts
             WHERE c.id = counts.id AND counts.n > 0
            RETURNING counts.n)
        SELECT COALESCE(sum(upd.n), 0)::bigint FROM upd$q$, partition)
        INTO v_total USING v_max, older_than;
    RETURN v_total;
END
$$;
REVOKE ALL ON FUNCTION notify_ext._count_missed_before_drop(regclass, timestamptz) FROM PUBLIC;

-- Internal: a retention setting as an interval; an error unless it is a
-- positive one (the GUC's check hook has already refused anything else).
CREATE FUNCTION notify_ext._retention_interval(settings jsonb, name text) RETURNS interval
    LANGUAGE c STABLE AS 'MODULE_PATHNAME', 'notify_ext_retention_interval';
REVOKE ALL ON FUNCTION notify_ext._retention_interval(jsonb, text) FROM PUBLIC;

-- Internal: the whole pruning run.  notify_ext.prune() (in C) does the
-- usual run itself (nothing to delete row by row, no partition to create,
-- expired partitions counted by VACUUM, no consumers to check) and hands
-- every other run to this function, before it has changed anything.
CREATE FUNCTION notify_ext._prune_all() RETURNS jsonb
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_settings jsonb := notify_ext._retention_settings();
    v_event_retention interval := notify_ext._retention_interval(v_settings, 'event_retention');
    v_read_retention interval := notify_ext._retention_interval(v_settings, 'read_notification_retention');
    v_delivery_retention interval := notify_ext._retention_interval(v_settings, 'delivery_retention');
    v_batch integer := (v_settings ->> 'prune_batch_size')::integer;
    v_max_batches integer := (v_settings ->> 'prune_max_batches')::integer;
    v_budget integer := (v_settings ->> 'prune_lock_timeout_ms')::integer;
    v_ahead integer := (v_settings ->> 'partitions_ahead')::integer;
    v_old_timeout text := pg_catalog.current_setting('lock_timeout');
    v_now timestamptz := pg_catalog.now();
    v_cutoff timestamptz;
    v_cut timestamptz;
    v_events bigint := 0;
    v_partitions integer := 0;
    v_read bigint := 0;
    v_deliveries bigint := 0;
    v_missed bigint := 0;
    v_created jsonb;
    v_deferred text[] := '{}';
    v_incomplete text[] := '{}';
    v_rels regclass[];
    v_names text[];
    v_rel regclass;
    v_rows bigint;
    v_estimated boolean := false;
    v_uncounted regclass[];
    v_members regclass[];
    v_lagging boolean;
    v_min_delivered bigint;
    v_max_seq bigint;
    v_n bigint;
    v_i integer;
BEGIN
    PERFORM notify_ext._require_service_caller('notify_ext.prune()');
    IF NOT pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtext('notify_ext.prune')::bigint) THEN
        RETURN pg_catalog.jsonb_build_object(
            'events', 0, 'partitions', 0, 'read_notifications', 0, 'deliveries', 0,
            'missed', 0, 'partitions_created', 0, 'deferred', '[]'::jsonb, 'incomplete', '[]'::jsonb,
            'note', 'another notify_ext.prune() is running in this database; nothing done');
    END IF;

    -- Read notifications, oldest first; rows someone holds are left for next
    -- time.  (Looked for first through the partial index, without planning
    -- a query: most runs find none, and then the DELETE and the inbox's
    -- triggers are not run.)
    v_cutoff := v_now - v_read_retention;
    FOR v_i IN 1 .. v_max_batches LOOP
        EXIT WHEN v_i = 1 AND NOT COALESCE(notify_ext._index_has_key_below(
            pg_catalog.to_regclass('notify_ext.notifications_read_ts_idx'), v_cutoff), true);
        WITH doomed AS (
            SELECT n.id FROM notify_ext.notifications n
             WHERE n.read AND n.ts < v_cutoff
             ORDER BY n.ts
             LIMIT v_batch
               FOR UPDATE SKIP LOCKED),
        del AS (
            DELETE FROM notify_ext.notifications n USING doomed
             WHERE n.id = doomed.id
            RETURNING 1)
        SELECT count(*) INTO v_n FROM del;
        v_read := v_read + v_n;
        EXIT WHEN v_n < v_batch;
        IF v_i = v_max_batches THEN
            v_incomplete := v_incomplete || 'read_notifications'::text;
        END IF;
    END LOOP;

    -- Webhook delivery records, once webhooks exist.
    IF pg_catalog.to_regclass('notify_ext.delivery_log') IS NOT NULL THEN
        v_cutoff := v_now - v_delivery_retention;
        FOR v_i IN 1 .. v_max_batches LOOP
            -- (Most runs find none: then the DELETE is not planned.)
            EXIT WHEN v_i = 1 AND NOT COALESCE(notify_ext._index_has_key_below(
                pg_catalog.to_regclass('notify_ext.delivery_log_created_at_idx'), v_cutoff), true);
            EXECUTE 'DELETE FROM notify_ext.delivery_log d
                      WHERE d.ctid = ANY (ARRAY(SELECT o.ctid FROM notify_ext.delivery_log o
                                                 WHERE o.created_at < $1
                                                 LIMIT $2 FOR UPDATE SKIP LOCKED))'
                USING v_cutoff, v_batch;
            GET DIAGNOSTICS v_n = ROW_COUNT;
            v_deliveries := v_deliveries + v_n;
            EXIT WHEN v_n < v_batch;
            IF v_i = v_max_batches THEN
                v_incomplete := v_incomplete || 'deliveries'::text;
            END IF;
        END LOOP;
    END IF;

    -- Expired events that landed in the default partition (their day had
    -- no partition when they were written): deleted in batches, at most
    -- prune_batch_size * prune_max_batches of them per run, oldest first.
    v_cutoff := v_now - v_event_retention;
    IF EXISTS (SELECT 1 FROM notify_ext.event_log_default d WHERE d.occurred_at < v_cutoff) THEN
        SELECT d.occurred_at INTO v_cut
          FROM notify_ext.event_log_default d
         WHERE d.occurred_at < v_cutoff
         ORDER BY d.occurred_at
        OFFSET v_batch::bigint * v_max_batches LIMIT 1;
        IF FOUND THEN
            v_incomplete := v_incomplete || 'events'::text;
        ELSE
            v_cut := v_cutoff;
        END IF;
        v_missed := v_missed + notify_ext._count_missed_before_drop('notify_ext.event_log_default', v_cut);
        LOOP
            DELETE FROM notify_ext.event_log_default e
             WHERE e.ctid = ANY (ARRAY(SELECT d.ctid FROM notify_ext.event_log_default d
                                        WHERE d.occurred_at < v_cut LIMIT v_batch));
            GET DIAGNOSTICS v_n = ROW_COUNT;
            v_events := v_events + v_n;
            EXIT WHEN v_n < v_batch;
        END LOOP;
    END IF;

    -- Partitions of the coming days (usually all there already: then
    -- nothing is locked, and _create_event_partitions() is not called).
    IF EXISTS (SELECT 1
                 FROM pg_catalog.generate_series(0, v_ahead) d
                WHERE pg_catalog.to_regclass('notify_ext.event_log_p' || pg_catalog.to_char(
                          (v_now AT TIME ZONE 'UTC')::date + d, 'YYYYMMDD')) IS NULL) THEN
        v_created := notify_ext._create_event_partitions(v_ahead, 0, v_budget);
        SELECT v_deferred || COALESCE(pg_catalog.array_agg(x), '{}') INTO v_deferred
          FROM pg_catalog.jsonb_array_elements_text(v_created -> 'deferred') x;
    ELSE
        v_created := '{"created": 0}';
    END IF;

    -- Whole days past retention.  Their rows are counted first; then, in
    -- one go, the consumers' losses are counted (locking the rows of the
    -- consumers that are behind), the event log is locked and the
    -- partitions are detached and renamed (catalog changes only), so that
    -- writers wait only for those and the commit right after them.  The
    -- files go later: a background worker drops the detached tables once
    -- this transaction has committed, holding no lock anyone else needs.
    -- (DROP TABLE here would remove the files at commit, while the lock on
    -- event_log is still held: about 0.1 s per million events.)  If a lock
    -- is not to be had, nothing is detached and everything waits for the
    -- next run.
    --
    -- Their rows: a partition VACUUM has counted since it last changed (a
    -- past day, normally: autovacuum visits it once it is full) is not read
    -- again: VACUUM's count (reltuples) is used, and the result says so.
    -- The others are counted below (an index-only scan of the seq index
    -- where the visibility map allows it).  Also which of them belong to
    -- the extension (those CREATE EXTENSION made).  All in one look at the
    -- catalogs (_expired_event_partitions(), in C).
    SELECT pg_catalog.array_agg(p.rel ORDER BY p.upper_bound),
           pg_catalog.array_agg(p.name ORDER BY p.upper_bound),
           COALESCE(sum(p.reltuples::bigint) FILTER (WHERE p.vacuum_counted), 0),
           pg_catalog.array_agg(p.rel) FILTER (WHERE NOT p.vacuum_counted),
           bool_or(p.vacuum_counted),
           pg_catalog.array_agg(p.rel) FILTER (WHERE p.extension_member)
      INTO v_rels, v_names, v_rows, v_uncounted, v_estimated, v_members
      FROM notify_ext._expired_event_partitions(v_cutoff) p;
    IF v_rels IS NOT NULL THEN
        IF v_uncounted IS NOT NULL THEN
            FOREACH v_rel IN ARRAY v_uncounted LOOP
                EXECUTE pg_catalog.format('SELECT count(*) FROM %s WHERE seq > 0', v_rel) INTO v_n;
                v_rows := v_rows + v_n;
            END LOOP;
        END IF;
        -- Consumers that may have missed some of these events: none when
        -- every consumer got past the newest of them (the usual case; then
        -- no consumer row is locked or scanned).
        v_lagging := false;
        IF pg_catalog.to_regclass('notify_ext.consumers') IS NOT NULL THEN
            SELECT min(c.delivered_upto) INTO v_min_delivered FROM notify_ext.consumers c;
            IF v_min_delivered IS NOT NULL THEN
                EXECUTE 'SELECT max(m) FROM (' || (
                    SELECT pg_catalog.string_agg(pg_catalog.format('SELECT max(seq) AS m FROM %s', r), ' UNION ALL ')
                      FROM pg_catalog.unnest(v_rels) r) || ') x'
                    INTO v_max_seq;
                v_lagging := v_max_seq > v_min_delivered;
            END IF;
        END IF;
        BEGIN
            PERFORM pg_catalog.set_config('lock_timeout', GREATEST(v_budget, 1) || 'ms', true);
            v_n := 0;
            IF v_lagging THEN
                FOREACH v_rel IN ARRAY v_rels LOOP
                    v_n := v_n + notify_ext._count_missed_before_drop(v_rel);
                END LOOP;
            END IF;
            IF NOT notify_ext._lock_within('notify_ext.event_log', 'ACCESS EXCLUSIVE', v_budget) THEN
                RAISE EXCEPTION USING ERRCODE = 'lock_not_available';
            END IF;
            FOREACH v_rel IN ARRAY v_rels LOOP
                IF NOT notify_ext._lock_within(v_rel, 'ACCESS EXCLUSIVE', v_budget) THEN
                    RAISE EXCEPTION USING ERRCODE = 'lock_not_available';
                END IF;
                EXECUTE pg_catalog.format('ALTER TABLE notify_ext.event_log DETACH PARTITION %s', v_rel);
                EXECUTE pg_catalog.format('ALTER TABLE %s RENAME TO %I', v_rel,
                                          'event_log_expired_' || v_rel::oid);
                -- The partitions made by CREATE EXTENSION belong to it, and
                -- a member of an extension cannot be dropped on its own.
                IF v_rel = ANY (v_members) THEN
                    EXECUTE pg_catalog.format('ALTER EXTENSION notify_ext DROP TABLE %s', v_rel);
                END IF;
            END LOOP;
            PERFORM pg_catalog.set_config('lock_timeout', v_old_timeout, true);
            v_partitions := pg_catalog.cardinality(v_rels);
            v_events := v_events + v_rows;
            v_missed := v_missed + v_n;
        EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
            v_deferred := v_deferred || v_names;
        END;
    END IF;

    -- Detached tables (of this run, or left by an earlier one) are dropped
    -- by a worker started once this transaction has committed.
    -- (When this run detached some, they are there: no need to look.)
    IF v_partitions > 0 OR EXISTS (SELECT 1 FROM notify_ext._detached_event_tables()) THEN
        PERFORM notify_ext._start_event_table_dropper();
    END IF;

    RETURN pg_catalog.jsonb_build_object(
        'events', v_events,
        'partitions', v_partitions,
        'read_notifications', v_read,
        'deliveries', v_deliveries,
        'missed', v_missed,
        'partitions_created', (v_created ->> 'created')::integer,
        'deferred', pg_catalog.to_jsonb(v_deferred),
        'incomplete', pg_catalog.to_jsonb(v_incomplete))
        || CASE WHEN v_estimated THEN '{"events_from_vacuum_stats": true}'::jsonb ELSE '{}'::jsonb END;
END
$$;
REVOKE ALL ON FUNCTION notify_ext._prune_all() FROM PUBLIC;

CREATE FUNCTION notify_ext.prune() RETURNS jsonb
    LANGUAGE c
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'notify_ext_prune';
REVOKE ALL ON FUNCTION notify_ext.prune() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION notify_ext.prune() TO PUBLIC;

--------------------------------------------------------------------------
-- Scheduling with pg_cron
--
-- pg_cron keeps its jobs in the database named by cron.database_name and
-- runs each job in the database the job names.  When that is this
-- database, the job is made with cron.schedule(); otherwise
-- notify_ext._cron_call() makes it there with cron.schedule_in_database()
-- (from a background worker connected to that database).  The job is owned
-- by the extension's owner, so there is one job per database whoever
-- schedules it, and it runs prune() with the owner's rights.
--------------------------------------------------------------------------

CREATE FUNCTION notify_ext._cron_call(op text, job_name text, schedule text DEFAULT NULL,
                                      command text DEFAULT NULL)
    RETURNS bigint
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'notify_ext_cron_call';
REVOKE ALL ON FUNCTION notify_ext._cron_call(text, text, text, text) FROM PUBLIC;

-- Internal: the name of this database's pruning job.
CREATE FUNCTION notify_ext._prune_job_name() RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'notify_ext_prune_' || pg_catalog.current_database()
$$;

-- Internal: the database pg_cron works in; 55000 when pg_cron is not loaded.
CREATE FUNCTION notify_ext._pg_cron_database() RETURNS text
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_db text := pg_catalog.current_setting('cron.database_name', true);
BEGIN
    IF v_db IS NULL OR v_db = ''
       OR NOT 'pg_cron' = ANY (pg_catalog.string_to_array(
               pg_catalog.translate(pg_catalog.current_setting('shared_preload_libraries'), ' "', ''), ','))
    THEN
        RAISE EXCEPTION 'pg_cron is not loaded: scheduling notify_ext.prune() needs it'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Install postgresql-15-cron, add pg_cron to shared_preload_libraries and restart, '
                         'then CREATE EXTENSION pg_cron in the database named by cron.database_name. '
                         'Or call notify_ext.prune() every few minutes from any other scheduler.';
    END IF;
    RETURN v_db;
END
$$;

CREATE FUNCTION notify_ext.schedule_pruning(schedule text DEFAULT '*/5 * * * *') RETURNS bigint
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_job text := notify_ext._prune_job_name();
    v_command text := 'SELECT notify_ext.prune()';
    v_cron_db text;
    v_id bigint;
BEGIN
    PERFORM notify_ext._require_service_caller('notify_ext.schedule_pruning()');
    IF schedule IS NULL OR pg_catalog.btrim(schedule) = '' THEN
        RAISE EXCEPTION 'schedule must not be empty'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give a cron schedule such as ''*/5 * * * *''.';
    END IF;
    v_cron_db := notify_ext._pg_cron_database();
    BEGIN
        IF v_cron_db = pg_catalog.current_database() THEN
            IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
                RAISE EXCEPTION 'pg_cron is not installed in database "%" (named by cron.database_name)', v_cron_db
                    USING ERRCODE = 'object_not_in_prerequisite_state',
                          HINT = pg_catalog.format('Run CREATE EXTENSION pg_cron in database "%s".', v_cron_db);
            END IF;
            EXECUTE 'SELECT cron.schedule($1, $2, $3)' INTO v_id USING v_job, schedule, v_command;
        ELSE
            v_id := notify_ext._cron_call('schedule', v_job, schedule, v_command);
        END IF;
    EXCEPTION WHEN internal_error OR invalid_parameter_value THEN
        -- pg_cron reports a bad schedule as "invalid schedule: ..."
        IF SQLERRM LIKE 'invalid schedule%' THEN
            RAISE EXCEPTION 'invalid pg_cron schedule "%"', schedule
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Use five cron fields (minute hour day month weekday), e.g. ''*/5 * * * *'', or ''N seconds''.';
        END IF;
        RAISE;
    END;
    RETURN v_id;
END
$$;
REVOKE ALL ON FUNCTION notify_ext.schedule_pruning(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION notify_ext.schedule_pruning(text) TO PUBLIC;

CREATE FUNCTION notify_ext.unschedule_pruning() RETURNS boolean
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_job text := notify_ext._prune_job_name();
    v_cron_db text;
    v_n bigint;
BEGIN
    PERFORM notify_ext._require_service_caller('notify_ext.unschedule_pruning()');
    v_cron_db := notify_ext._pg_cron_database();
    IF v_cron_db = pg_catalog.current_database() THEN
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
            RAISE EXCEPTION 'pg_cron is not installed in database "%" (named by cron.database_name)', v_cron_db
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = pg_catalog.format('Run CREATE EXTENSION pg_cron in database "%s".', v_cron_db);
        END IF;
        EXECUTE 'SELECT count(cron.unschedule(j.jobid)) FROM cron.job j
                  WHERE j.jobname = $1 AND j.username = current_user'
            INTO v_n USING v_job;
    ELSE
        v_n := notify_ext._cron_call('unschedule', v_job);
    END IF;
    RETURN v_n > 0;
END
$$;
REVOKE ALL ON FUNCTION notify_ext.unschedule_pruning() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION notify_ext.unschedule_pruning() TO PUBLIC;
--------------------------------------------------------------------------
-- Webhook subscriptions (see docs/webhooks.md)
--
-- Auth configs and webhooks are configuration (kept by pg_dump, secrets as
-- ciphertext only).  Secrets are sealed with libsodium's crypto_secretbox
-- under a key derived from the server key file $PGDATA/notify_ext.key: no
-- table holds the key, so neither a SELECT nor a dump reveals a secret.
--
-- Delivery state: webhooks.cursor_seq is how far the webhook's worker has
-- looked at the event log (every event in scope at or below it has been
-- queued); webhook_queue holds the deliveries not yet done; delivery_log
-- records every attempt (notify_ext.deliveries shows it).  A webhook's
-- worker (one per database, started by the launcher) does the rest.
--------------------------------------------------------------------------

CREATE TABLE notify_ext.subscription_auth (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    auth_type   text NOT NULL
                CHECK (auth_type IN ('NO_AUTH', 'BASIC_AUTH', 'OAUTH_2_CLIENT_CREDENTIALS')),
    key         text,
    -- nonce || crypto_secretbox(secret), see _webhook_seal()
    secret_sealed bytea,
    scope       text,
    token_url   text,
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON notify_ext.subscription_auth FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('notify_ext.subscription_auth', '');

CREATE TABLE notify_ext.webhooks (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    url                  text NOT NULL,
    operations           text[],
    streams              text[],
    resource_id          text,
    include_subresources boolean NOT NULL DEFAULT true,
    auth_config          uuid REFERENCES notify_ext.subscription_auth ON DELETE RESTRICT,
    -- nonce || crypto_secretbox(32 random bytes): the whsec_ signing key
    secret_sealed        bytea NOT NULL,
    created_by           text NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    status               text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    disabled_at          timestamptz,
    disabled_reason      text,
    -- every event in scope with seq <= cursor_seq has been queued
    cursor_seq           bigint NOT NULL,
    -- consecutive failed attempts, and since when attempts keep failing
    failures             bigint NOT NULL DEFAULT 0,
    failing_since        timestamptz,
    last_success_at      timestamptz,
    last_failure_at      timestamptz,
    last_error           text
);
CREATE INDEX webhooks_auth_config_idx ON notify_ext.webhooks (auth_config);
REVOKE ALL ON notify_ext.webhooks FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('notify_ext.webhooks', '');

-- Deliveries not done yet: one row per (webhook, event).  attempt counts the
-- attempts made so far; in_flight marks rows the worker is sending now (the
-- worker clears every mark when it starts, so a crash loses nothing).
CREATE TABLE notify_ext.webhook_queue (
    webhook         uuid NOT NULL REFERENCES notify_ext.webhooks ON DELETE CASCADE,
    seq             bigint NOT NULL,
    attempt         integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    in_flight       boolean NOT NULL DEFAULT false,
    queued_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (webhook, seq)
);
CREATE INDEX webhook_queue_due_idx ON notify_ext.webhook_queue (webhook, next_attempt_at, seq)
    WHERE NOT in_flight;
REVOKE ALL ON notify_ext.webhook_queue FROM PUBLIC;

-- Every attempt.  Pruned by retention (notify_ext.delivery_retention) on
-- created_at, the time the attempt started.
CREATE TABLE notify_ext.delivery_log (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook         uuid NOT NULL,
    seq             bigint NOT NULL,
    attempt         integer NOT NULL,
    message_id      text NOT NULL,
    status_code     integer,
    error           text,
    duration        interval,
    next_attempt_at timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX delivery_log_created_at_idx ON notify_ext.delivery_log (created_at);
CREATE INDEX delivery_log_webhook_idx ON notify_ext.delivery_log (webhook, seq);
REVOKE ALL ON notify_ext.delivery_log FROM PUBLIC;

--------------------------------------------------------------------------
-- Internal functions (C)
--------------------------------------------------------------------------

-- nonce || crypto_secretbox(plain) under the server's "auth-secrets" key.
CREATE FUNCTION notify_ext._webhook_seal(plain bytea) RETURNS bytea
    LANGUAGE c VOLATILE STRICT AS 'MODULE_PATHNAME', 'notify_ext_webhook_seal';
REVOKE ALL ON FUNCTION notify_ext._webhook_seal(bytea) FROM PUBLIC;

-- A new webhook signing key (32 random bytes), sealed.
CREATE FUNCTION notify_ext._webhook_new_signing_key() RETURNS bytea
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'notify_ext_webhook_new_signing_key';
REVOKE ALL ON FUNCTION notify_ext._webhook_new_signing_key() FROM PUBLIC;

CREATE FUNCTION notify_ext._webhook_unseal(sealed bytea) RETURNS bytea
    LANGUAGE c VOLATILE STRICT AS 'MODULE_PATHNAME', 'notify_ext_webhook_unseal';
REVOKE ALL ON FUNCTION notify_ext._webhook_unseal(bytea) FROM PUBLIC;

-- At commit, tell this database's webhook worker (or the launcher) that the
-- webhooks changed.
CREATE FUNCTION notify_ext._webhooks_changed() RETURNS void
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'notify_ext_webhooks_changed';
REVOKE ALL ON FUNCTION notify_ext._webhooks_changed() FROM PUBLIC;

-- Whether the background worker can run (notify_ext preloaded).
CREATE FUNCTION notify_ext._webhook_worker_available() RETURNS boolean
    LANGUAGE c STABLE AS 'MODULE_PATHNAME', 'notify_ext_webhook_worker_available';

-- The webhook-id of every attempt to deliver event seq to a webhook.
CREATE FUNCTION notify_ext._webhook_message_id(webhook uuid, seq bigint) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
    SELECT 'msg_' || pg_catalog.replace(webhook::text, '-', '') || '_' || seq::text
$$;

--------------------------------------------------------------------------
-- Auth configs
--------------------------------------------------------------------------

CREATE FUNCTION notify_ext.create_subscription_auth(auth_type text, key text DEFAULT NULL,
        secret text DEFAULT NULL, scope text DEFAULT NULL, token_url text DEFAULT NULL)
    RETURNS uuid
    LANGUAGE plpgsql VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_type text := upper(btrim(auth_type));
    v_id uuid;
    v_hint text := 'BASIC_AUTH needs key and secret; OAUTH_2_CLIENT_CREDENTIALS needs scope and '
                   'token_url (key and secret are the client id and secret); NO_AUTH takes none.';
BEGIN
    PERFORM notify_ext._require_service_caller('create_subscription_auth');
    IF v_type IS NULL THEN
        RAISE EXCEPTION 'auth_type must not be NULL'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'auth_type is NO_AUTH, BASIC_AUTH or OAUTH_2_CLIENT_CREDENTIALS.';
    END IF;
    IF v_type NOT IN ('NO_AUTH', 'BASIC_AUTH', 'OAUTH_2_CLIENT_CREDENTIALS') THEN
        RAISE EXCEPTION 'unknown auth_type "%"', auth_type
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'auth_type is NO_AUTH, BASIC_AUTH or OAUTH_2_CLIENT_CREDENTIALS.';
    END IF;
    IF v_type = 'NO_AUTH' THEN
        IF key IS NOT NULL OR secret IS NOT NULL OR scope IS NOT NULL OR token_url IS NOT NULL THEN
            RAISE EXCEPTION 'auth_type NO_AUTH takes no %',
                  CASE WHEN key IS NOT NULL THEN 'key' WHEN secret IS NOT NULL THEN 'secret'
                       WHEN scope IS NOT NULL THEN 'scope' ELSE 'token_url' END
                USING ERRCODE = 'invalid_parameter_value', HINT = v_hint;
        END IF;
    ELSIF v_type = 'BASIC_AUTH' THEN
        IF key IS NULL OR key = '' THEN
            RAISE EXCEPTION 'auth_type BASIC_AUTH needs a key (the user name)'
                USING ERRCODE = 'invalid_parameter_value', HINT = v_hint;
        END IF;
        IF strpos(key, ':') > 0 THEN
            RAISE EXCEPTION 'the key "%" of a BASIC_AUTH config must not contain ":"', key
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF secret IS NULL OR secret = '' THEN
            RAISE EXCEPTION 'auth_type BASIC_AUTH needs a secret (the password)'
                USING ERRCODE = 'invalid_parameter_value', HINT = v_hint;
        END IF;
        IF scope IS NOT NULL OR token_url IS NOT NULL THEN
            RAISE EXCEPTION 'auth_type BASIC_AUTH takes no %',
                  CASE WHEN scope IS NOT NULL THEN 'scope' ELSE 'token_url' END
                USING ERRCODE = 'invalid_parameter_value', HINT = v_hint;
        END IF;
    ELSE
        IF scope IS NULL OR scope = '' THEN
            RAISE EXCEPTION 'auth_type OAUTH_2_CLIENT_CREDENTIALS needs a scope'
                USING ERRCODE = 'invalid_parameter_value', HINT = v_hint;
        END IF;
        IF token_url IS NULL OR token_url = '' THEN
            RAISE EXCEPTION 'auth_type OAUTH_2_CLIENT_CREDENTIALS needs a token_url'
                USING ERRCODE = 'invalid_parameter_value', HINT = v_hint;
        END IF;
        IF token_url !~* '^https?://[^/?#]+' THEN
            RAISE EXCEPTION 'token_url "%" is not an http:// or https:// URL', token_url
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF (key IS NULL OR key = '') <> (secret IS NULL OR secret = '') THEN
            RAISE EXCEPTION 'auth_type OAUTH_2_CLIENT_CREDENTIALS needs %',
                  CASE WHEN key IS NULL OR key = '' THEN 'a key (the client id) with the secret'
                       ELSE 'a secret (the client secret) with the key' END
                USING ERRCODE = 'invalid_parameter_value', HINT = v_hint;
        END IF;
        IF key IS NULL OR key = '' THEN
            RAISE EXCEPTION 'auth_type OAUTH_2_CLIENT_CREDENTIALS needs a key (the client id)'
                USING ERRCODE = 'invalid_parameter_value', HINT = v_hint;
        END IF;
    END IF;
    INSERT INTO notify_ext.subscription_auth AS a (auth_type, key, secret_sealed, scope, token_url, created_by)
    VALUES (v_type, NULLIF(key, ''),
            CASE WHEN secret IS NOT NULL AND secret <> ''
                 THEN notify_ext._webhook_seal(convert_to(secret, 'UTF8')) END,
            scope, token_url, notify_ext.current_principal())
    RETURNING a.id INTO v_id;
    RETURN v_id;
END
$$;

CREATE FUNCTION notify_ext.list_subscription_auth()
    RETURNS TABLE (id uuid, auth_type text, key text, scope text, token_url text, created_at timestamptz)
    LANGUAGE plpgsql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM notify_ext._require_service_caller('list_subscription_auth');
    RETURN QUERY
        SELECT a.id, a.auth_type, a.key, a.scope, a.token_url, a.created_at
          FROM notify_ext.subscription_auth a
         ORDER BY a.created_at, a.id;
END
$$;

CREATE FUNCTION notify_ext.delete_subscription_auth(id uuid) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_users text;
BEGIN
    PERFORM notify_ext._require_service_caller('delete_subscription_auth');
    IF id IS NULL THEN
        RAISE EXCEPTION 'auth config must not be NULL'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Locking the row makes a concurrent create_webhook() wait or fail.
    PERFORM 1 FROM notify_ext.subscription_auth a WHERE a.id = delete_subscription_auth.id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'auth config % does not exist', id
            USING ERRCODE = 'undefined_object';
    END IF;
    SELECT string_agg(w.id::text, ', ' ORDER BY w.created_at, w.id) INTO v_users
      FROM notify_ext.webhooks w WHERE w.auth_config = delete_subscription_auth.id;
    IF v_users IS NOT NULL THEN
        RAISE EXCEPTION 'auth config % is used by webhook %', id, v_users
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Delete the webhooks that use it first.';
    END IF;
    DELETE FROM notify_ext.subscription_auth a WHERE a.id = delete_subscription_auth.id;
END
$$;

--------------------------------------------------------------------------
-- Webhooks
--------------------------------------------------------------------------

-- Internal: 22023 unless a is null or a non-empty array of non-empty texts.
CREATE FUNCTION notify_ext._webhook_check_list(a text[], what text) RETURNS text[]
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF a IS NULL THEN
        RETURN NULL;
    END IF;
    IF cardinality(a) = 0 THEN
        RAISE EXCEPTION '% must not be an empty array', what
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Pass NULL for all %s.', what);
    END IF;
    IF array_position(a, NULL) IS NOT NULL OR '' = ANY (a) THEN
        RAISE EXCEPTION '% must not contain NULL or empty names: %', what, a
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN ARRAY(SELECT DISTINCT x FROM unnest(a) x ORDER BY x);
END
$$;

-- Internal: 22023 unless url is an absolute http(s) URL.
CREATE FUNCTION notify_ext._webhook_check_url(url text) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF url IS NULL OR url = '' THEN
        RAISE EXCEPTION 'webhook url must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF url !~* '^https?://[^/?#\s]+[^\s]*$' THEN
        RAISE EXCEPTION 'webhook url "%" is not an http:// or https:// URL', url
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Webhooks are delivered by HTTP POST, e.g. to https://example.com/hooks.';
    END IF;
END
$$;

CREATE FUNCTION notify_ext.create_webhook(url text, operations text[] DEFAULT NULL,
        streams text[] DEFAULT NULL, resource_id text DEFAULT NULL,
        include_subresources boolean DEFAULT true, auth_config uuid DEFAULT NULL)
    RETURNS uuid
    LANGUAGE plpgsql VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id uuid;
    v_ops text[];
    v_streams text[];
    v_cursor bigint;
BEGIN
    PERFORM notify_ext._require_service_caller('create_webhook');
    PERFORM notify_ext._webhook_check_url(url);
    v_ops := notify_ext._webhook_check_list(operations, 'operations');
    v_streams := notify_ext._webhook_check_list(streams, 'streams');
    IF include_subresources IS NULL THEN
        RAISE EXCEPTION 'include_subresources must not be NULL'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF resource_id IS NOT NULL THEN
        PERFORM notify_ext._require_resource(resource_id);
    END IF;
    IF auth_config IS NOT NULL THEN
        PERFORM 1 FROM notify_ext.subscription_auth a WHERE a.id = create_webhook.auth_config FOR KEY SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'auth config % does not exist', auth_config
                USING ERRCODE = 'undefined_object',
                      HINT = 'Create one with notify_ext.create_subscription_auth().';
        END IF;
    END IF;
    IF notify_ext._webhook_worker_available() THEN
        -- Deliver the events that commit from now on.
        v_cursor := notify_ext.committed_seq();
    ELSE
        v_cursor := COALESCE((SELECT max(e.seq) FROM notify_ext.event_log e), 0);
        RAISE WARNING 'webhook to "%" created, but nothing is delivered: notify_ext is not in shared_preload_libraries', url
            USING HINT = 'Add notify_ext to shared_preload_libraries in postgresql.conf and restart the server; '
                         'the background worker that delivers webhooks only runs then.';
    END IF;
    INSERT INTO notify_ext.webhooks AS w (url, operations, streams, resource_id, include_subresources,
                                          auth_config, secret_sealed, created_by, cursor_seq)
    VALUES (url, v_ops, v_streams, resource_id, include_subresources, auth_config,
            notify_ext._webhook_new_signing_key(), notify_ext.current_principal(), v_cursor)
    RETURNING w.id INTO v_id;
    PERFORM notify_ext._webhooks_changed();
    RETURN v_id;
END
$$;

CREATE FUNCTION notify_ext.webhook_secret(id uuid) RETURNS text
    LANGUAGE plpgsql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_sealed bytea;
BEGIN
    PERFORM notify_ext._require_service_caller('webhook_secret');
    SELECT w.secret_sealed INTO v_sealed FROM notify_ext.webhooks w WHERE w.id = webhook_secret.id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'webhook % does not exist', id
            USING ERRCODE = 'undefined_object';
    END IF;
    RETURN 'whsec_' || encode(notify_ext._webhook_unseal(v_sealed), 'base64');
END
$$;

CREATE FUNCTION notify_ext.delete_webhook(id uuid) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM notify_ext._require_service_caller('delete_webhook');
    DELETE FROM notify_ext.webhooks w WHERE w.id = delete_webhook.id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'webhook % does not exist', id
            USING ERRCODE = 'undefined_object';
    END IF;
    PERFORM notify_ext._webhooks_changed();
END
$$;

-- Not in the contract: switches a disabled webhook back on.  It delivers the
-- events that commit from now on; redeliver() sends older ones again.
CREATE FUNCTION notify_ext.enable_webhook(id uuid) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM notify_ext._require_service_caller('enable_webhook');
    UPDATE notify_ext.webhooks w
       SET status = 'active', disabled_at = NULL, disabled_reason = NULL,
           failures = 0, failing_since = NULL,
           cursor_seq = CASE WHEN w.status = 'disabled'
                             THEN GREATEST(w.cursor_seq, notify_ext.committed_seq())
                             ELSE w.cursor_seq END
     WHERE w.id = enable_webhook.id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'webhook % does not exist', id
            USING ERRCODE = 'undefined_object';
    END IF;
    PERFORM notify_ext._webhooks_changed();
END
$$;

CREATE FUNCTION notify_ext.list_webhooks() RETURNS SETOF jsonb
    LANGUAGE plpgsql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM notify_ext._require_service_caller('list_webhooks');
    RETURN QUERY
        SELECT jsonb_build_object(
                   'id', w.id, 'url', w.url, 'operations', w.operations, 'streams', w.streams,
                   'resource_id', w.resource_id, 'include_subresources', w.include_subresources,
                   'auth_config', w.auth_config, 'auth_type', a.auth_type,
                   'status', w.status, 'failures', w.failures, 'failing_since', w.failing_since,
                   'disabled_at', w.disabled_at, 'disabled_reason', w.disabled_reason,
                   'last_success_at', w.last_success_at, 'last_failure_at', w.last_failure_at,
                   'last_error', w.last_error,
                   'pending', (SELECT count(*) FROM notify_ext.webhook_queue q WHERE q.webhook = w.id),
                   'created_by', w.created_by, 'created_at', w.created_at)
          FROM notify_ext.webhooks w
          LEFT JOIN notify_ext.subscription_auth a ON a.id = w.auth_config
         ORDER BY w.created_at, w.id;
END
$$;

-- Queues again every retained event in the webhook's scope that occurred at
-- or after since (and that the webhook has already passed); returns how
-- many.  Deliveries already queued stay as they are.  Same webhook-id as
-- before, so receivers can tell a repeat.
CREATE FUNCTION notify_ext.redeliver(webhook uuid, since timestamptz) RETURNS integer
    LANGUAGE plpgsql VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    w notify_ext.webhooks;
    v_count integer;
BEGIN
    PERFORM notify_ext._require_service_caller('redeliver');
    IF since IS NULL THEN
        RAISE EXCEPTION 'since must not be NULL'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass ''-infinity'' to send every retained event again.';
    END IF;
    SELECT * INTO w FROM notify_ext.webhooks x WHERE x.id = redeliver.webhook FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'webhook % does not exist', webhook
            USING ERRCODE = 'undefined_object';
    END IF;
    IF w.status <> 'active' THEN
        RAISE EXCEPTION 'webhook % is disabled', webhook
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Enable it with notify_ext.enable_webhook() first.';
    END IF;
    INSERT INTO notify_ext.webhook_queue (webhook, seq)
    SELECT w.id, e.seq
      FROM notify_ext.event_log e
     WHERE e.seq > 0 AND e.seq <= w.cursor_seq AND e.occurred_at >= since
       AND notify_ext._webhook_in_scope(w, e.stream, e.operation, e.resource_id, e.resource_path)
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    PERFORM notify_ext._webhooks_changed();
    RETURN v_count;
END
$$;

CREATE VIEW notify_ext.deliveries AS
SELECT l.webhook, l.seq, l.attempt, l.message_id, l.status_code, l.error, l.duration,
       l.next_attempt_at, l.created_at AS attempted_at
  FROM notify_ext.delivery_log l
 WHERE notify_ext._is_service_caller();
REVOKE ALL ON notify_ext.deliveries FROM PUBLIC;
GRANT SELECT ON notify_ext.deliveries TO PUBLIC;

--------------------------------------------------------------------------
-- The worker's side (called by the background worker only)
--------------------------------------------------------------------------

CREATE FUNCTION notify_ext._webhook_in_scope(w notify_ext.webhooks, stream text, operation text,
        resource_id text, resource_path text[])
    RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT (w.operations IS NULL OR operation = ANY (w.operations))
       AND (w.streams IS NULL OR stream = ANY (w.streams))
       AND (w.resource_id IS NULL
            OR COALESCE(resource_id = w.resource_id
                        OR (w.include_subresources AND w.resource_id = ANY (resource_path)), false))
$$;

-- The configuration of the active webhooks, secrets unsealed.
CREATE FUNCTION notify_ext._webhook_config()
    RETURNS TABLE (id uuid, url text, signing_key bytea, auth_config uuid, auth_type text,
                   key text, secret text, scope text, token_url text)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT w.id, w.url, notify_ext._webhook_unseal(w.secret_sealed), w.auth_config, a.auth_type,
           a.key, convert_from(notify_ext._webhook_unseal(a.secret_sealed), 'UTF8'), a.scope, a.token_url
      FROM notify_ext.webhooks w
      LEFT JOIN notify_ext.subscription_auth a ON a.id = w.auth_config
     WHERE w.status = 'active'
$$;
REVOKE ALL ON FUNCTION notify_ext._webhook_config() FROM PUBLIC;

-- Queues the events up to horizon (at most chunk per webhook) for every
-- active webhook; returns how many deliveries it queued.  horizon comes
-- from ordering_committed_seq(), read before this statement's snapshot.
CREATE FUNCTION notify_ext._webhook_enqueue(horizon bigint, chunk bigint,
        OUT queued bigint, OUT behind boolean)
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    w notify_ext.webhooks;
    v_upto bigint;
    v_n bigint;
BEGIN
    queued := 0;
    behind := false;
    FOR w IN SELECT * FROM notify_ext.webhooks x
              WHERE x.status = 'active' AND x.cursor_seq < horizon
              ORDER BY x.id FOR UPDATE
    LOOP
        v_upto := LEAST(horizon, w.cursor_seq + chunk);
        behind := behind OR v_upto < horizon;
        INSERT INTO notify_ext.webhook_queue (webhook, seq)
        SELECT w.id, e.seq
          FROM notify_ext.event_log e
         WHERE e.seq > w.cursor_seq AND e.seq <= v_upto
           AND notify_ext._webhook_in_scope(w, e.stream, e.operation, e.resource_id, e.resource_path)
        ON CONFLICT DO NOTHING;
        GET DIAGNOSTICS v_n = ROW_COUNT;
        queued := queued + v_n;
        UPDATE notify_ext.webhooks x SET cursor_seq = v_upto WHERE x.id = w.id;
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION notify_ext._webhook_enqueue(bigint, bigint) FROM PUBLIC;

-- Claims up to limits[i] due deliveries of webhooks[i]; returns them with
-- the event JSON (NULL when retention removed the event).
CREATE FUNCTION notify_ext._webhook_claim(webhooks uuid[], limits integer[])
    RETURNS TABLE (webhook uuid, seq bigint, attempt integer, message text)
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH c AS (
        SELECT q.webhook, q.seq
          FROM unnest(webhooks, limits) l(w, n)
         CROSS JOIN LATERAL (
               SELECT q.webhook, q.seq FROM notify_ext.webhook_queue q
                WHERE q.webhook = l.w AND NOT q.in_flight AND q.next_attempt_at <= now()
                ORDER BY q.next_attempt_at, q.seq
                LIMIT l.n) q
    ), u AS (
        UPDATE notify_ext.webhook_queue q SET in_flight = true
          FROM c WHERE q.webhook = c.webhook AND q.seq = c.seq
        RETURNING q.webhook, q.seq, q.attempt
    )
    SELECT u.webhook, u.seq, u.attempt,
           (SELECT notify_ext.event_message(e.seq, e.stream, e.operation, e.resource_id,
                                            e.resource_variant, e.resource_path, e.occurred_at,
                                            e.actor, e.payload, e.changed)::text
              FROM notify_ext.event_log e WHERE e.seq = u.seq LIMIT 1)
      FROM u
$$;
REVOKE ALL ON FUNCTION notify_ext._webhook_claim(uuid[], integer[]) FROM PUBLIC;

-- When the next queued delivery not in flight falls due (after now).
CREATE FUNCTION notify_ext._webhook_next_due() RETURNS timestamptz
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT min(q.next_attempt_at) FROM notify_ext.webhook_queue q
     WHERE NOT q.in_flight AND q.next_attempt_at > now()
$$;
REVOKE ALL ON FUNCTION notify_ext._webhook_next_due() FROM PUBLIC;

-- Disables a webhook, drops its queue and tells its creator.
CREATE FUNCTION notify_ext._webhook_disable(p_webhook uuid, p_reason text) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    w notify_ext.webhooks;
BEGIN
    UPDATE notify_ext.webhooks x
       SET status = 'disabled', disabled_at = now(), disabled_reason = p_reason
     WHERE x.id = p_webhook AND x.status = 'active'
    RETURNING * INTO w;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    DELETE FROM notify_ext.webhook_queue q WHERE q.webhook = p_webhook;
    PERFORM notify_ext._notify(w.created_by, 'WEBHOOK_DISABLED',
                format('Webhook %s to %s was disabled: %s', w.id, w.url, p_reason),
                jsonb_build_object('webhook', w.id, 'url', w.url, 'reason', p_reason,
                                   'failing_since', w.failing_since, 'failures', w.failures),
                now(), jsonb_build_array(jsonb_build_object('type', 'webhook', 'id', w.id)));
END
$$;
REVOKE ALL ON FUNCTION notify_ext._webhook_disable(uuid, text) FROM PUBLIC;

-- Records a batch of finished attempts.  outcome: s success, r retry at
-- next_at, f failed for good (schedule exhausted), g gone (410: disable the
-- webhook), m missing (the event is no longer retained).
CREATE FUNCTION notify_ext._webhook_record(p_webhook uuid[], p_seq bigint[], p_attempt integer[],
        p_status integer[], p_error text[], p_duration_ms float8[], p_next timestamptz[],
        p_outcome text[], p_at timestamptz[], p_disable_after interval)
    RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
BEGIN
    INSERT INTO notify_ext.delivery_log (webhook, seq, attempt, message_id, status_code, error,
                                         duration, next_attempt_at, created_at)
    SELECT x.webhook, x.seq, x.attempt, notify_ext._webhook_message_id(x.webhook, x.seq), x.status,
           x.error, make_interval(secs => x.duration_ms / 1000.0),
           CASE WHEN x.outcome = 'r' THEN x.next_at END, x.at
      FROM unnest(p_webhook, p_seq, p_attempt, p_status, p_error, p_duration_ms, p_next, p_outcome, p_at)
             AS x(webhook, seq, attempt, status, error, duration_ms, next_at, outcome, at);

    DELETE FROM notify_ext.webhook_queue q USING unnest(p_webhook, p_seq, p_attempt, p_status, p_error, p_duration_ms, p_next, p_outcome, p_at)
             AS x(webhook, seq, attempt, status, error, duration_ms, next_at, outcome, at)
     WHERE q.webhook = x.webhook AND q.seq = x.seq AND x.outcome <> 'r';
    UPDATE notify_ext.webhook_queue q
       SET attempt = x.attempt, next_attempt_at = x.next_at, in_flight = false
      FROM unnest(p_webhook, p_seq, p_attempt, p_status, p_error, p_duration_ms, p_next, p_outcome, p_at)
             AS x(webhook, seq, attempt, status, error, duration_ms, next_at, outcome, at)
     WHERE q.webhook = x.webhook AND q.seq = x.seq AND x.outcome = 'r';

    UPDATE notify_ext.webhooks w
       SET failures = CASE WHEN s.ok THEN 0 ELSE w.failures + s.nfail END,
           failing_since = CASE WHEN s.ok THEN NULL ELSE COALESCE(w.failing_since, s.first_fail) END,
           last_success_at = COALESCE(s.last_ok, w.last_success_at),
           last_failure_at = COALESCE(s.last_fail, w.last_failure_at),
           last_error = COALESCE(s.last_error, w.last_error)
      FROM (SELECT x.webhook,
                   bool_or(x.outcome = 's') AS ok,
                   count(*) FILTER (WHERE x.outcome IN ('r', 'f', 'g')) AS nfail,
                   min(x.at) FILTER (WHERE x.outcome IN ('r', 'f', 'g')) AS first_fail,
                   max(x.at) FILTER (WHERE x.outcome = 's') AS last_ok,
                   max(x.at) FILTER (WHERE x.outcome IN ('r', 'f', 'g')) AS last_fail,
                   (array_agg(x.error ORDER BY x.at DESC) FILTER (WHERE x.outcome IN ('r', 'f', 'g')))[1] AS last_error
              FROM unnest(p_webhook, p_seq, p_attempt, p_status, p_error, p_duration_ms, p_next, p_outcome, p_at)
             AS x(webhook, seq, attempt, status, error, duration_ms, next_at, outcome, at)
             WHERE x.outcome <> 'm'
             GROUP BY x.webhook) s
     WHERE w.id = s.webhook;

    FOR r IN SELECT DISTINCT x.webhook FROM unnest(p_webhook, p_seq, p_attempt, p_status, p_error, p_duration_ms, p_next, p_outcome, p_at)
             AS x(webhook, seq, attempt, status, error, duration_ms, next_at, outcome, at) WHERE x.outcome = 'g' LOOP
        PERFORM notify_ext._webhook_disable(r.webhook, 'the endpoint answered 410 Gone');
    END LOOP;
    FOR r IN SELECT w.id, w.failing_since FROM notify_ext.webhooks w
              WHERE w.status = 'active' AND w.failing_since <= now() - p_disable_after
                AND w.id IN (SELECT x.webhook FROM unnest(p_webhook, p_seq, p_attempt, p_status, p_error, p_duration_ms, p_next, p_outcome, p_at)
             AS x(webhook, seq, attempt, status, error, duration_ms, next_at, outcome, at) WHERE x.outcome IN ('r', 'f'))
    LOOP
        PERFORM notify_ext._webhook_disable(r.id,
            format('every attempt failed since %s (notify_ext.webhook_disable_after is %s)',
                   r.failing_since, p_disable_after));
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION notify_ext._webhook_record(uuid[], bigint[], integer[], integer[], text[],
        float8[], timestamptz[], text[], timestamptz[], interval) FROM PUBLIC;

-- The worker starts by clearing the in-flight marks of a previous run.
CREATE FUNCTION notify_ext._webhook_worker_start() RETURNS void
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE notify_ext.webhook_queue SET in_flight = false WHERE in_flight
$$;
REVOKE ALL ON FUNCTION notify_ext._webhook_worker_start() FROM PUBLIC;
