--------------------------------------------------------------------------
-- Stream consumers
--------------------------------------------------------------------------

-- Internal: after commit, tell other sessions that consumers changed.
CREATE OR REPLACE FUNCTION notify_ext._consumers_changed() RETURNS void
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'notify_ext_consumers_changed';
REVOKE ALL ON FUNCTION notify_ext._consumers_changed() FROM PUBLIC;

-- Internal: the consumer; 22023 for NULL, 42704 when it does not exist.
CREATE OR REPLACE FUNCTION notify_ext._consumer(p_consumer uuid) RETURNS notify_ext.consumers
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
CREATE OR REPLACE FUNCTION notify_ext._consumer_for_caller(p_consumer uuid, p_what text)
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

CREATE OR REPLACE FUNCTION notify_ext.create_stream_consumer(
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
    streams := notify_ext._check_scope_list(streams, 'streams');
    operations := notify_ext._check_scope_list(operations, 'operations');

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

CREATE OR REPLACE FUNCTION notify_ext.get_event_message_batch(consumer uuid, batch_size integer DEFAULT 25,
                                                   wait interval DEFAULT '0')
    RETURNS TABLE (seq bigint, message jsonb, reply text, salt text, hmac text, delivery_count integer)
    LANGUAGE c VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'notify_ext_get_event_message_batch';

CREATE OR REPLACE FUNCTION notify_ext.acknowledge_message_batch(replies jsonb) RETURNS integer
    LANGUAGE c VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'notify_ext_acknowledge_message_batch';

-- Internal: the channel of a consumer, a keyed hash of its id (src/consumer.c,
-- the same function that names the channel of the NOTIFY at commit).
CREATE OR REPLACE FUNCTION notify_ext._consumer_channel(consumer uuid) RETURNS text
    LANGUAGE c STABLE STRICT PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'notify_ext_consumer_channel';
REVOKE ALL ON FUNCTION notify_ext._consumer_channel(uuid) FROM PUBLIC;

-- The channel to LISTEN on for the consumer's wake-ups, given only to its
-- owner (or a service caller): whoever knows it can LISTEN.
CREATE OR REPLACE FUNCTION notify_ext.get_event_message_stream(consumer uuid) RETURNS text
    LANGUAGE plpgsql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM notify_ext._consumer_for_caller(consumer, 'the channel');
    RETURN notify_ext._consumer_channel(consumer);
END
$$;

CREATE OR REPLACE FUNCTION notify_ext.delete_stream_consumer(consumer uuid) RETURNS void
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

-- Internal: whether an event is in a scope (of a consumer or a webhook):
-- about the resource, or with include_subresources below it; its stream
-- one of streams, its operation one of operations, and occurred at or
-- after from_date, each part NULL for any.  The one rule, in C
-- (src/scope.c), shared with the wake-ups at commit.
CREATE OR REPLACE FUNCTION notify_ext._in_scope(resource_id text, include_subresources boolean,
        streams text[], operations text[], from_date timestamptz,
        event_resource_id text, event_resource_path text[], event_stream text,
        event_operation text, event_occurred_at timestamptz)
    RETURNS boolean
    LANGUAGE c IMMUTABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'notify_ext_in_scope';
REVOKE ALL ON FUNCTION notify_ext._in_scope(text, boolean, text[], text[], timestamptz, text, text[], text, text, timestamptz) FROM PUBLIC;

-- Internal: _in_scope() for a resource with its subtree and no other part
-- (the scope shape fetches plan for; src/scope.c).
CREATE OR REPLACE FUNCTION notify_ext._in_subtree(resource_id text, event_resource_id text,
        event_resource_path text[])
    RETURNS boolean
    LANGUAGE c IMMUTABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'notify_ext_in_subtree';
REVOKE ALL ON FUNCTION notify_ext._in_subtree(text, text, text[]) FROM PUBLIC;

CREATE OR REPLACE FUNCTION notify_ext.consumer_info(consumer uuid) RETURNS jsonb
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
     WHERE e.seq > c.delivered_upto AND e.seq <= v_horizon
       AND notify_ext._in_scope(c.resource_id, c.include_subresources, c.streams, c.operations,
                                c.from_date, e.resource_id, e.resource_path, e.stream,
                                e.operation, e.occurred_at);
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

CREATE OR REPLACE FUNCTION notify_ext.rotate_reply_key() RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        RAISE EXCEPTION 'rotating the reply key needs a superuser'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    LOCK TABLE notify_ext.reply_keys IN EXCLUSIVE MODE;
    -- No row means generation 1 in use: record it, so that it is retired.
    INSERT INTO notify_ext.reply_keys (generation)
    SELECT 1 WHERE NOT EXISTS (SELECT FROM notify_ext.reply_keys);
    UPDATE notify_ext.reply_keys SET retired_at = now() WHERE retired_at IS NULL;
    INSERT INTO notify_ext.reply_keys (generation)
    SELECT max(generation) + 1 FROM notify_ext.reply_keys;
END
$$;
REVOKE ALL ON FUNCTION notify_ext.rotate_reply_key() FROM PUBLIC;

--------------------------------------------------------------------------
-- Consumers at a glance: list_consumers() and the view consumer_stats
--------------------------------------------------------------------------

-- Internal: a consumer's scope in words, e.g. "proj1 and below; streams
-- public.items; operations INSERT,UPDATE; from 2026-01-01 00:00:00+00".
CREATE OR REPLACE FUNCTION notify_ext._scope_text(resource_id text, include_subresources boolean,
        streams text[], operations text[], from_date timestamptz)
    RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT concat_ws('; ',
        CASE WHEN resource_id IS NULL THEN 'every resource'
             WHEN include_subresources THEN resource_id || ' and below'
             ELSE resource_id || ' only' END,
        'streams ' || array_to_string(streams, ','),
        'operations ' || array_to_string(operations, ','),
        'from ' || from_date::text)
$$;
REVOKE ALL ON FUNCTION notify_ext._scope_text(text, boolean, text[], text[], timestamptz) FROM PUBLIC;

-- Internal: how far a consumer lags behind the horizon.  Exact when the
-- consumer is at most 10,000 seqs behind; further behind, the events in
-- scope are estimated from the first 10,000 seqs it has not read (their
-- share in scope, times the seqs it is behind), so that the cost stays
-- bounded however far behind it is.  oldest_undelivered is when the oldest
-- event in scope among those seqs occurred; when none is in scope there
-- and the consumer is further behind, it is when the first seq after them
-- occurred (the oldest undelivered event is no older).
CREATE OR REPLACE FUNCTION notify_ext._consumer_lag(c notify_ext.consumers, horizon bigint,
        OUT lag_events bigint, OUT lag_estimated boolean, OUT oldest_undelivered timestamptz)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_sample constant bigint := 10000;
    v_behind bigint := GREATEST(horizon - c.delivered_upto, 0);
    v_found bigint;
BEGIN
    SELECT count(*), min(e.occurred_at) INTO v_found, oldest_undelivered
      FROM notify_ext.event_log e
     WHERE e.seq > c.delivered_upto AND e.seq <= LEAST(horizon, c.delivered_upto + v_sample)
       AND notify_ext._in_scope(c.resource_id, c.include_subresources, c.streams, c.operations,
                                c.from_date, e.resource_id, e.resource_path, e.stream,
                                e.operation, e.occurred_at);
    lag_estimated := v_behind > v_sample;
    IF lag_estimated THEN
        lag_events := round(v_found::numeric * v_behind / v_sample);
        IF oldest_undelivered IS NULL THEN
            SELECT e.occurred_at INTO oldest_undelivered
              FROM notify_ext.event_log e
             WHERE e.seq > c.delivered_upto + v_sample AND e.seq <= LEAST(horizon, c.delivered_upto + 2 * v_sample)
             ORDER BY e.seq LIMIT 1;
        END IF;
    ELSE
        lag_events := v_found;
    END IF;
END
$$;
REVOKE ALL ON FUNCTION notify_ext._consumer_lag(notify_ext.consumers, bigint) FROM PUBLIC;

-- Internal: the rows of list_consumers() and consumer_stats; of one
-- owner's consumers, or of all with NULL.
CREATE OR REPLACE FUNCTION notify_ext._consumer_rows(p_owner text)
    RETURNS TABLE (consumer uuid, owner text, resource_id text, scope text,
                   created_at timestamptz, lag_events bigint, lag_estimated boolean,
                   oldest_undelivered_age interval, ack_pending bigint, redelivered bigint,
                   missed bigint)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.id, c.owner, c.resource_id,
           notify_ext._scope_text(c.resource_id, c.include_subresources, c.streams,
                                  c.operations, c.from_date),
           c.created_at, l.lag_events, l.lag_estimated,
           date_trunc('second', now() - l.oldest_undelivered),
           p.ack_pending, c.num_redelivered, c.missed
      FROM notify_ext.consumers c
     CROSS JOIN LATERAL notify_ext._consumer_lag(c, notify_ext.committed_seq()) l
     CROSS JOIN LATERAL (SELECT COALESCE(sum(cardinality(q.seqs)), 0)::bigint AS ack_pending
                           FROM notify_ext.consumer_pending q WHERE q.consumer = c.id) p
     WHERE p_owner IS NULL OR c.owner = p_owner
     ORDER BY c.created_at, c.id
$$;
REVOKE ALL ON FUNCTION notify_ext._consumer_rows(text) FROM PUBLIC;

-- The caller's own stream consumers; every consumer for service callers.
CREATE OR REPLACE FUNCTION notify_ext.list_consumers()
    RETURNS TABLE (consumer uuid, owner text, resource_id text, scope text,
                   created_at timestamptz, lag_events bigint, lag_estimated boolean,
                   oldest_undelivered_age interval, ack_pending bigint, redelivered bigint,
                   missed bigint)
    LANGUAGE sql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM notify_ext._consumer_rows(
        CASE WHEN notify_ext._is_service_caller() THEN NULL
             ELSE notify_ext.current_principal() END)
$$;

-- Internal: the rows of consumer_stats, for monitoring callers only.
CREATE OR REPLACE FUNCTION notify_ext._consumer_stats()
    RETURNS TABLE (consumer uuid, owner text, resource_id text, scope text,
                   created_at timestamptz, lag_events bigint, lag_estimated boolean,
                   oldest_undelivered_age interval, ack_pending bigint, redelivered bigint,
                   missed bigint)
    LANGUAGE plpgsql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM notify_ext._require_monitor('notify_ext.consumer_stats');
    RETURN QUERY SELECT * FROM notify_ext._consumer_rows(NULL);
END
$$;

-- Every stream consumer, for operators and monitoring: service callers and
-- members of pg_monitor (anyone else gets 42501).
CREATE OR REPLACE VIEW notify_ext.consumer_stats AS
SELECT * FROM notify_ext._consumer_stats();
REVOKE ALL ON notify_ext.consumer_stats FROM PUBLIC;
GRANT SELECT ON notify_ext.consumer_stats TO PUBLIC;
