-- retention: the settings and their validation, the day partitions of the
-- event log (created ahead, backfilled by hand), prune() (whole partitions
-- dropped, stray events of the default partition deleted, read
-- notifications pruned while unread ones stay, consumers' `missed`), its
-- result shape, schedule_pruning() / unschedule_pruning() refusals, and
-- every error with its SQLSTATE.  Locking against concurrent writers and
-- the pg_cron job are in test/e2e/test_retention_e2e.py.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
SET TimeZone = 'UTC';
-- The state of a failed call: SQLSTATE, message and hint.
CREATE FUNCTION pg_temp.fail(statement text) RETURNS TABLE (sqlstate text, message text, hint text)
    LANGUAGE plpgsql AS $$
DECLARE
    v_state text;
    v_msg text;
    v_hint text;
BEGIN
    EXECUTE statement;
    RETURN QUERY SELECT 'ok'::text, NULL::text, NULL::text;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT, v_hint = PG_EXCEPTION_HINT;
    RETURN QUERY SELECT v_state, v_msg, v_hint;
END
$$;

-- Settings: defaults, and values that are not positive intervals.
SHOW notify_ext.event_retention;
SHOW notify_ext.read_notification_retention;
SHOW notify_ext.delivery_retention;
SHOW notify_ext.partitions_ahead;
SHOW notify_ext.prune_batch_size;
SHOW notify_ext.prune_max_batches;
SHOW notify_ext.prune_lock_timeout;
SELECT * FROM pg_temp.fail($$SET notify_ext.event_retention = 'a week or so'$$);
SELECT * FROM pg_temp.fail($$SET notify_ext.read_notification_retention = '-3 days'$$);
SELECT * FROM pg_temp.fail($$SET notify_ext.delivery_retention = '0'$$);
SELECT regress_try($$SET notify_ext.partitions_ahead = 0$$);
SELECT regress_try($$SET notify_ext.event_retention = 'P2W'$$);
SHOW notify_ext.event_retention;
SELECT regress_try($$SET notify_ext.event_retention = '36 hours'$$);
RESET notify_ext.event_retention;
SELECT name, setting, unit FROM pg_settings
 WHERE name ~ '^notify_ext\.(.*_retention|partitions_ahead|prune_.*)$' ORDER BY name;

-- Plain roles: the settings are superuser-only, the calls service-only.
CREATE ROLE regress_ret_app NOLOGIN;
CREATE ROLE regress_ret_svc NOLOGIN IN ROLE regress_ret_app;
CREATE ROLE regress_ret_plain NOLOGIN;
SET notify_ext.app_role = 'regress_ret_app';
SET ROLE regress_ret_plain;
SELECT regress_try($$SET notify_ext.event_retention = '1 day'$$);
SELECT regress_try($$SELECT notify_ext.prune()$$);
SELECT regress_try($$SELECT notify_ext.schedule_pruning()$$);
SELECT regress_try($$SELECT notify_ext.unschedule_pruning()$$);
SELECT regress_try($$SELECT notify_ext.create_event_partitions()$$);
SELECT regress_try($$SELECT notify_ext._count_missed_before_drop('notify_ext.event_log_default')$$);
RESET ROLE;

-- Partitions: CREATE EXTENSION makes none, so that restoring a dump never
-- collides with them; create_event_partitions() makes one per UTC day,
-- yesterday to partitions_ahead days ahead.
SELECT count(*) AS partitions FROM notify_ext._day_partitions();
SELECT notify_ext.create_event_partitions() AS created;
SELECT count(*) AS partitions,
       bool_and(name = 'event_log_p' || to_char(lower_bound AT TIME ZONE 'UTC', 'YYYYMMDD')) AS named_by_day,
       bool_and(upper_bound - lower_bound = interval '1 day') AS one_day_each,
       bool_and(lower_bound AT TIME ZONE 'UTC' = date_trunc('day', lower_bound AT TIME ZONE 'UTC')) AS from_midnight_utc,
       min(lower_bound) = (current_date - 1)::timestamp AT TIME ZONE 'UTC' AS from_yesterday
  FROM notify_ext._day_partitions();
SELECT regress_try($$SELECT notify_ext.create_event_partitions(-1)$$);
SELECT regress_try($$SELECT notify_ext.create_event_partitions(400)$$);
SELECT regress_try($$SELECT notify_ext.create_event_partitions(7, -2)$$);
-- Whatever other tests left that has expired goes now (not shown).
SELECT notify_ext.prune() ? 'events' AS pruned;
-- Backfill ten days back; nothing to do the second time.
SELECT notify_ext.create_event_partitions(7, 10) AS created;
SELECT notify_ext.create_event_partitions(7, 10) AS created;
SELECT count(*) AS partitions FROM notify_ext._day_partitions();

-- Events of the last ten days: three per day (i = 0, 1, 2 nine days ago,
-- ... i = 27, 28, 29 today), all made the normal way and then moved back
-- in time, plus one twenty days old, which has no partition and lands in
-- the default one.
SELECT notify_ext.committed_seq() AS base \gset
SELECT notify_ext.register_resource('ret_p', 'project');
SELECT notify_ext.register_resource('ret_d', 'dataset', 'ret_p');
SELECT notify_ext.register_resource('ret_other', 'project');
-- A consumer of everything, one of ret_p's subtree, one of ret_other, one
-- that only wants new events (created after the events below: misses none).
SELECT notify_ext.create_stream_consumer() AS c_all \gset
SELECT notify_ext.create_stream_consumer('ret_p') AS c_p \gset
SELECT notify_ext.create_stream_consumer('ret_other') AS c_other \gset
SELECT count(*) FROM generate_series(0, 29) i,
       LATERAL notify_ext.publish('ret.stream', 'ret.op', jsonb_build_object('i', i),
                                  CASE WHEN i % 3 = 0 THEN 'ret_d' ELSE NULL END);
SELECT notify_ext.publish('ret.stream', 'ret.old', '{}', 'ret_p');
SELECT notify_ext.create_stream_consumer(deliver => 'new') AS c_new \gset
UPDATE notify_ext.event_log SET occurred_at = now() - (9 - (payload ->> 'i')::int / 3) * interval '24 hours'
 WHERE seq > :base AND operation = 'ret.op';
UPDATE notify_ext.event_log SET occurred_at = now() - interval '20 days'
 WHERE seq > :base AND operation = 'ret.old';
SELECT round(extract(epoch FROM now() - occurred_at) / 86400) AS days_ago, count(*),
       tableoid::regclass::text = 'notify_ext.event_log_default' AS in_default
  FROM notify_ext.event_log WHERE seq > :base
 GROUP BY 1, 3 ORDER BY 1;

-- Notifications: old read ones go, old unread ones and new read ones stay.
SELECT count(*) FROM generate_series(1, 5) i,
       LATERAL notify_ext.create_notification('regress_ret_user', 'RET', 'old ' || i,
                                              ts => now() - interval '100 days');
SELECT count(*) FROM generate_series(1, 3) i,
       LATERAL notify_ext.create_notification('regress_ret_user', 'RET', 'new ' || i,
                                              ts => now() - interval '10 days');
UPDATE notify_ext.notifications SET read = true
 WHERE recipient = 'regress_ret_user' AND message IN ('old 1', 'old 2', 'old 3', 'new 1');
-- Nothing expires under a retention longer than what there is.
SET notify_ext.event_retention = '30 days';
SET notify_ext.read_notification_retention = '365 days';
SELECT notify_ext.prune() - 'missed' AS result;
RESET notify_ext.read_notification_retention;

-- Keep 7 days: the partitions of days 8, 9 and 10 ago go whole, the stray
-- event in the default partition is deleted; 3 read notifications go.
SET notify_ext.event_retention = '7 days';
SELECT notify_ext.prune() - 'missed' AS result;
SELECT round(extract(epoch FROM now() - occurred_at) / 86400) AS days_ago, count(*)
  FROM notify_ext.event_log WHERE seq > :base GROUP BY 1 ORDER BY 1;
SELECT min(lower_bound) = (current_date - 7)::timestamp AT TIME ZONE 'UTC' AS oldest_is_7_days_ago,
       count(*) AS partitions
  FROM notify_ext._day_partitions();
SELECT message, read FROM notify_ext.notifications WHERE recipient = 'regress_ret_user' ORDER BY message;
-- The inbox counts followed the deletions.
SET notify_ext.principal = 'regress_ret_user';
SELECT notify_ext.unread_count(), notify_ext.list_notifications() -> 'itemsInTotal' AS total;
RESET notify_ext.principal;

-- Consumers that never got the pruned events count them as missed:
-- everything pruned (6 + 1 stray), ret_p's subtree (2 + 1: i = 0 and 3 on
-- ret_d, of the 6 pruned ones, and the stray one on ret_p), nothing of
-- ret_other, and nothing for the consumer that wants only new events.
SELECT (notify_ext.consumer_info(:'c_all') ->> 'missed')::int AS all_missed,
       (notify_ext.consumer_info(:'c_p') ->> 'missed')::int AS p_missed,
       (notify_ext.consumer_info(:'c_other') ->> 'missed')::int AS other_missed,
       (notify_ext.consumer_info(:'c_new') ->> 'missed')::int AS new_missed;
-- ... and go on with the oldest retained event (i = 6).
SELECT (m.message ->> 'seq')::bigint - :base AS first_delivered, m.message -> 'payload' AS payload
  FROM notify_ext.get_event_message_batch(:'c_p', 1) m;

-- A second run finds nothing more.
SELECT notify_ext.prune() - 'missed' AS result;
-- Partitions ahead follow notify_ext.partitions_ahead.
SET notify_ext.partitions_ahead = 9;
SELECT notify_ext.prune() -> 'partitions_created' AS created;
SELECT max(lower_bound) = (current_date + 9)::timestamp AT TIME ZONE 'UTC' AS newest_is_9_days_ahead
  FROM notify_ext._day_partitions();
RESET notify_ext.partitions_ahead;

-- Bounded batches: with 2 rows per batch and 1 batch per run, a run deletes
-- 2 read notifications and says it did not finish.
SELECT count(*) FROM generate_series(1, 5) i,
       LATERAL notify_ext.create_notification('regress_ret_user2', 'RET', 'b ' || i,
                                              ts => now() - interval '100 days');
UPDATE notify_ext.notifications SET read = true WHERE recipient = 'regress_ret_user2';
SELECT regress_try($$SET notify_ext.prune_batch_size = 2$$);
SET notify_ext.prune_batch_size = 100;
-- (the minimum batch is 100 rows: make 150 and allow one batch per run)
SELECT count(*) FROM generate_series(1, 145) i,
       LATERAL notify_ext.create_notification('regress_ret_user2', 'RET', 'c ' || i,
                                              ts => now() - interval '100 days');
UPDATE notify_ext.notifications SET read = true WHERE recipient = 'regress_ret_user2';
SET notify_ext.prune_max_batches = 1;
WITH r AS (SELECT notify_ext.prune() AS r)
SELECT r -> 'read_notifications' AS deleted, r -> 'incomplete' AS incomplete FROM r;
WITH r AS (SELECT notify_ext.prune() AS r)
SELECT r -> 'read_notifications' AS deleted, r -> 'incomplete' AS incomplete FROM r;
RESET notify_ext.prune_max_batches;
RESET notify_ext.prune_batch_size;

-- Webhook delivery records older than delivery_retention go.
INSERT INTO notify_ext.delivery_log (webhook, seq, attempt, message_id, created_at)
SELECT gen_random_uuid(), i, 1, 'msg_' || i, now() - i * interval '1 day' + interval '1 hour'
  FROM generate_series(1, 20) i;
SELECT notify_ext.prune() -> 'deliveries' AS deliveries;
SELECT count(*) AS kept FROM notify_ext.delivery_log WHERE message_id LIKE 'msg\_%';
DELETE FROM notify_ext.delivery_log WHERE message_id LIKE 'msg\_%';

-- A service caller (not superuser) may prune.
SET ROLE regress_ret_svc;
SELECT notify_ext.prune() ? 'events' AS pruned;
RESET ROLE;

-- Scheduling: an empty schedule is refused; without pg_cron in reach (this
-- database is not cron.database_name, and pg_cron is not installed there,
-- or not loaded at all) it is 55000 with a hint that says what to do.
SELECT * FROM pg_temp.fail($$SELECT notify_ext.schedule_pruning('')$$);
SELECT * FROM pg_temp.fail($$SELECT notify_ext.schedule_pruning(NULL)$$);
SELECT sqlstate, hint LIKE '%CREATE EXTENSION pg_cron%' AS hint_says_what_to_do
  FROM pg_temp.fail($$SELECT notify_ext.schedule_pruning()$$);
SELECT sqlstate, hint LIKE '%CREATE EXTENSION pg_cron%' AS hint_says_what_to_do
  FROM pg_temp.fail($$SELECT notify_ext.unschedule_pruning()$$);

RESET notify_ext.event_retention;
SELECT notify_ext.delete_stream_consumer(c) FROM unnest(ARRAY[:'c_all', :'c_p', :'c_other', :'c_new']::uuid[]) c;
DELETE FROM notify_ext.notifications WHERE recipient LIKE 'regress\_ret\_%';
RESET notify_ext.app_role;
DROP ROLE regress_ret_app, regress_ret_svc, regress_ret_plain;
