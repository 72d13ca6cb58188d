--------------------------------------------------------------------------
-- The event log: partitions, publish() and the events view
--------------------------------------------------------------------------

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
CREATE OR REPLACE FUNCTION notify_ext._create_event_partitions(days_ahead integer, days_back integer,
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
            -- Each partition has its own seq index (see sql/schema/10_events.sql).
            -- Unnamed: a detached table of the same day may still hold the name.
            EXECUTE pg_catalog.format('CREATE INDEX ON notify_ext.%I USING brin (seq)
                            WITH (pages_per_range = 32, autosummarize = on)', v_name);
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
CREATE OR REPLACE FUNCTION notify_ext.create_event_partitions(days_ahead integer DEFAULT NULL,
                                                   days_back integer DEFAULT 1)
    RETURNS integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (notify_ext._create_event_partitions(
                COALESCE(days_ahead, pg_catalog.current_setting('notify_ext.partitions_ahead')::integer),
                days_back, NULL) ->> 'created')::integer;
END
$$;
REVOKE ALL ON FUNCTION notify_ext.create_event_partitions(integer, integer) FROM PUBLIC;

-- Internal: takes a lock on rel (ONLY rel: a partitioned table's partitions
-- are not locked with it) without queueing in front of other sessions for
-- long: tries NOWAIT every couple of milliseconds for budget_ms, then waits
-- once for at most budget_ms.  Returns whether it holds the lock (until the
-- end of the transaction).  budget_ms 0: one NOWAIT try.
CREATE OR REPLACE FUNCTION notify_ext._lock_within(rel regclass, mode text, budget_ms integer)
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

-- Highest seq below which every event is committed and visible: a reader
-- that takes its snapshot after calling this never later sees a new event
-- at or below it.
CREATE OR REPLACE FUNCTION notify_ext.committed_seq() RETURNS bigint
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'notify_ext_committed_seq';

CREATE OR REPLACE FUNCTION notify_ext.publish(stream text, operation text, payload jsonb DEFAULT '{}',
                                   resource_id text DEFAULT NULL)
    RETURNS bigint
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'notify_ext_publish';

-- The event as consumers, webhooks and queries see it, built in C.
CREATE OR REPLACE FUNCTION notify_ext.event_message(seq bigint, stream text, operation text,
        resource_id text, resource_variant text, resource_path text[],
        occurred_at timestamptz, actor text, payload json, changed text[])
    RETURNS jsonb
    LANGUAGE c IMMUTABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'notify_ext_event_message';

-- For service callers: everyone else sees no rows.
CREATE OR REPLACE VIEW notify_ext.events WITH (security_barrier) AS
SELECT e.seq, e.stream, e.operation, e.resource_id, e.resource_variant, e.resource_path,
       e.occurred_at, e.actor, e.payload::pg_catalog.jsonb AS payload, e.changed,
       notify_ext.event_message(e.seq, e.stream, e.operation, e.resource_id,
                                e.resource_variant, e.resource_path, e.occurred_at,
                                e.actor, e.payload, e.changed) AS message
  FROM notify_ext.event_log e
 WHERE e.seq OPERATOR(pg_catalog.>) 0 AND notify_ext._is_service_caller();
REVOKE ALL ON notify_ext.events FROM PUBLIC;
GRANT SELECT ON notify_ext.events TO PUBLIC;
