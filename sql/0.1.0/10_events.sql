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
CREATE INDEX event_log_seq_idx ON notify_ext.event_log (seq);
CREATE TABLE notify_ext.event_log_default PARTITION OF notify_ext.event_log DEFAULT;
REVOKE ALL ON notify_ext.event_log FROM PUBLIC;
REVOKE ALL ON notify_ext.event_log_default FROM PUBLIC;

-- Creates the daily partitions from yesterday up to days_ahead days from
-- now (UTC days); returns how many it created.  Events that arrived in the
-- default partition for a new day are moved into it.
CREATE FUNCTION notify_ext.create_event_partitions(days_ahead integer DEFAULT 7)
    RETURNS integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_day date;
    v_name text;
    v_created integer := 0;
    v_from timestamptz;
    v_to timestamptz;
BEGIN
    IF days_ahead IS NULL OR days_ahead < 0 OR days_ahead > 366 THEN
        RAISE EXCEPTION 'days_ahead must be between 0 and 366, not %', days_ahead
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR v_day IN SELECT d::date FROM generate_series(
            (now() AT TIME ZONE 'UTC')::date - 1,
            (now() AT TIME ZONE 'UTC')::date + days_ahead, interval '1 day') d
    LOOP
        v_name := 'event_log_p' || to_char(v_day, 'YYYYMMDD');
        CONTINUE WHEN to_regclass('notify_ext.' || v_name) IS NOT NULL;
        v_from := v_day::timestamp AT TIME ZONE 'UTC';
        v_to := (v_day + 1)::timestamp AT TIME ZONE 'UTC';
        EXECUTE format('CREATE TABLE notify_ext.%I (LIKE notify_ext.event_log INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', v_name);
        EXECUTE format('REVOKE ALL ON notify_ext.%I FROM PUBLIC', v_name);
        EXECUTE format('WITH moved AS (DELETE FROM notify_ext.event_log_default
                                        WHERE occurred_at >= $1 AND occurred_at < $2 RETURNING *)
                        INSERT INTO notify_ext.%I SELECT * FROM moved', v_name)
            USING v_from, v_to;
        EXECUTE format('ALTER TABLE notify_ext.event_log ATTACH PARTITION notify_ext.%I
                        FOR VALUES FROM (%L) TO (%L)', v_name, v_from, v_to);
        v_created := v_created + 1;
    END LOOP;
    RETURN v_created;
END
$$;
REVOKE ALL ON FUNCTION notify_ext.create_event_partitions(integer) FROM PUBLIC;

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

-- The event as consumers, webhooks and queries see it.
CREATE FUNCTION notify_ext.event_message(seq bigint, stream text, operation text,
        resource_id text, resource_variant text, resource_path text[],
        occurred_at timestamptz, actor text, payload json, changed text[])
    RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT pg_catalog.jsonb_build_object(
        'seq', seq, 'stream', stream, 'operation', operation,
        'resource', CASE WHEN resource_id IS NOT NULL THEN
            pg_catalog.jsonb_build_object('id', resource_id, 'variant', resource_variant,
                                          'path', pg_catalog.to_jsonb(resource_path)) END,
        'occurred_at', pg_catalog.to_char(occurred_at AT TIME ZONE 'UTC',
                                          'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'actor', actor, 'payload', payload::jsonb)
      || CASE WHEN changed IS NOT NULL
              THEN pg_catalog.jsonb_build_object('changed', pg_catalog.to_jsonb(changed))
              ELSE '{}'::jsonb END
$$;

CREATE VIEW notify_ext.events AS
SELECT e.seq, e.stream, e.operation, e.resource_id, e.resource_variant, e.resource_path,
       e.occurred_at, e.actor, e.payload::jsonb AS payload, e.changed,
       notify_ext.event_message(e.seq, e.stream, e.operation, e.resource_id,
                                e.resource_variant, e.resource_path, e.occurred_at,
                                e.actor, e.payload, e.changed) AS message
  FROM notify_ext.event_log e
 WHERE e.seq > 0;
REVOKE ALL ON notify_ext.events FROM PUBLIC;
