-- Monitoring: list_consumers() (a caller's own consumers; every consumer
-- for service callers) and the views consumer_stats, log_stats and
-- webhook_stats (service callers and members of pg_monitor; 42501 for
-- anyone else): who sees what, the lag in events (exact, then estimated
-- past 10,000 seqs), pending acks, redeliveries, and the log's partitions
-- with the events committed in the last minute.
\set SHOW_CONTEXT never
SET client_min_messages = warning;

CREATE ROLE regress_mon_app NOLOGIN;
CREATE ROLE regress_mon_svc NOLOGIN IN ROLE regress_mon_app;
CREATE ROLE regress_mon_alice NOLOGIN;
CREATE ROLE regress_mon_bob NOLOGIN;
CREATE ROLE regress_mon_watch NOLOGIN IN ROLE pg_monitor;
SET notify_ext.app_role = 'regress_mon_app';

SELECT notify_ext.committed_seq() AS base \gset
SELECT notify_ext.register_resource('mon1', 'project');
SELECT notify_ext.register_resource('mon2', 'project', 'mon1');
CREATE TABLE mitems (id bigint PRIMARY KEY, parent text);
SELECT notify_ext.track('mitems', 'item', parent_column => 'parent');
SELECT notify_ext.grant_permission('regress_mon_alice', 'mon1', 'READ');
SELECT notify_ext.grant_permission('regress_mon_bob', 'mon2', 'READ');

SET ROLE regress_mon_alice;
SELECT notify_ext.create_stream_consumer('mon1', deliver => 'from_sequence', from_sequence => :base + 1,
                                         ack_wait => '1 second') AS ca \gset
SET ROLE regress_mon_bob;
SELECT notify_ext.create_stream_consumer('mon2', streams => '{public.mitems}',
                                         operations => '{INSERT}') AS cb \gset
RESET ROLE;
SET ROLE regress_mon_svc;
SELECT notify_ext.create_stream_consumer('mon1', include_subresources => false,
                                         deliver => 'new') AS cs \gset
RESET ROLE;

INSERT INTO mitems SELECT g, CASE WHEN g <= 3 THEN 'mon1' ELSE 'mon2' END FROM generate_series(1, 5) g;

-- A plain role sees its own consumers only.
SET ROLE regress_mon_alice;
SELECT owner, resource_id, scope, lag_events, lag_estimated, oldest_undelivered_age IS NOT NULL AS has_age,
       ack_pending, redelivered, missed
  FROM notify_ext.list_consumers();
CREATE TEMP TABLE fa AS SELECT * FROM notify_ext.get_event_message_batch(:'ca', 2);
SELECT owner, lag_events, ack_pending FROM notify_ext.list_consumers();
SELECT pg_sleep(1.2);
SELECT count(*) AS fetched, max(delivery_count) AS deliveries FROM notify_ext.get_event_message_batch(:'ca', 10);
SELECT owner, lag_events, oldest_undelivered_age AS age, ack_pending, redelivered FROM notify_ext.list_consumers();
SET ROLE regress_mon_bob;
SELECT owner, resource_id, scope, lag_events, ack_pending FROM notify_ext.list_consumers();
-- Neither may read the views.
SELECT regress_try('SELECT * FROM notify_ext.consumer_stats');
SELECT regress_try('SELECT * FROM notify_ext.log_stats');
SELECT regress_try('SELECT * FROM notify_ext.webhook_stats');
SELECT regress_try('SELECT * FROM notify_ext._consumer_rows(NULL)');
RESET ROLE;

-- A service caller sees every consumer, in list_consumers() and the view.
SET ROLE regress_mon_svc;
SELECT owner, resource_id, scope, lag_events FROM notify_ext.list_consumers()
 WHERE resource_id LIKE 'mon%' ORDER BY owner;
SELECT owner, lag_events, ack_pending, redelivered FROM notify_ext.consumer_stats
 WHERE resource_id LIKE 'mon%' ORDER BY owner;
SELECT count(*) > 0 AS sees_log FROM notify_ext.log_stats;
RESET ROLE;

-- A member of pg_monitor reads the views, and lists no consumer of its own.
SET ROLE regress_mon_watch;
SELECT owner, lag_events FROM notify_ext.consumer_stats WHERE resource_id LIKE 'mon%' ORDER BY owner;
SELECT count(*) AS own_consumers FROM notify_ext.list_consumers();
SELECT count(*) FILTER (WHERE committed_last_minute IS NOT NULL) AS rows_with_recent,
       sum(committed_last_minute) >= 5 AS counted_recent,
       bool_and(bytes > 0) AS bytes,
       bool_and(oldest_seq <= newest_seq) AS seq_order,
       sum(events) >= 5 AS events
  FROM notify_ext.log_stats;
SELECT regress_try('SELECT * FROM notify_ext.webhook_stats');
RESET ROLE;

-- Further behind than 10,000 seqs, the lag is estimated from a sample.
INSERT INTO mitems SELECT g, 'mon1' FROM generate_series(6, 12005) g;
SET ROLE regress_mon_alice;
SELECT lag_events, lag_estimated FROM notify_ext.list_consumers();
RESET ROLE;

-- webhook_stats: attempts and failures of the last hour, the queue.
SET ROLE regress_mon_svc;
SELECT notify_ext.create_webhook('http://127.0.0.1:9/mon', resource_id => 'mon2') AS wh \gset
RESET ROLE;
INSERT INTO notify_ext.delivery_log (webhook, seq, attempt, message_id, status_code, error, created_at)
VALUES (:'wh', 1, 1, 'm1', 200, NULL, now()), (:'wh', 2, 1, 'm2', 500, 'HTTP 500', now()),
       (:'wh', 3, 1, 'm3', NULL, 'connection refused', now() - interval '2 hours');
SET ROLE regress_mon_svc;
SELECT status, queued, attempts_last_hour, failures_last_hour
  FROM notify_ext.webhook_stats WHERE webhook = :'wh';
SELECT notify_ext.delete_webhook(:'wh');
RESET ROLE;
DELETE FROM notify_ext.delivery_log WHERE webhook = :'wh';

-- Clean up.
DROP TABLE fa;
SELECT notify_ext.delete_stream_consumer(id) FROM notify_ext.consumers WHERE resource_id LIKE 'mon%';
SELECT notify_ext.untrack('mitems');
DROP TABLE mitems;
DELETE FROM notify_ext.notifications WHERE recipient LIKE 'regress\_mon%';
DELETE FROM notify_ext.permissions WHERE principal LIKE 'regress\_mon%';
RESET notify_ext.app_role;
DROP ROLE regress_mon_alice, regress_mon_bob, regress_mon_watch, regress_mon_svc, regress_mon_app;
