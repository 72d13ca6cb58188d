-- inbox: personal notifications.  Service calls create_notification,
-- create_notifications_bulk (10,000 items in one call; one bad item rejects
-- all) and delete_notifications, refused with 42501 for plain roles; user
-- calls list_notifications (shape, newest first, paging, type/since
-- filters, itemsInTotal), mark_as_read / mark_all_as_read,
-- get_notification (own only: 42704 alike for unknown and someone else's),
-- get_personal_notifications, acknowledge_personal_notifications (failures
-- are ids that are unknown or someone else's, and nothing of anyone else's
-- changes), unread_count, set_notification_preference (a switched-off type
-- is not stored), subscription_channel; every error; the counts staying
-- right through folding, which locks only recipients that need it (at most
-- 32 per call: deleting 20,000 recipients' notifications at once works);
-- row-level security: a plain role cannot read, change or create anyone
-- else's rows with any SQL it can write.
\set SHOW_CONTEXT never
-- list_notifications() without the ids.
CREATE FUNCTION pg_temp.page(l jsonb) RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_set(l, '{items}', COALESCE((SELECT jsonb_agg(i - 'id' ORDER BY o)
                                               FROM jsonb_array_elements(l -> 'items') WITH ORDINALITY x(i, o)), '[]'))
$$;

CREATE ROLE regress_app NOLOGIN;
CREATE ROLE regress_svc NOLOGIN IN ROLE regress_app;
CREATE ROLE regress_alice NOLOGIN;
CREATE ROLE regress_bob NOLOGIN;
SET notify_ext.app_role = 'regress_app';
SET TimeZone = 'UTC';

-- Service calls are refused for plain roles.
SET ROLE regress_alice;
SELECT regress_try($$SELECT notify_ext.create_notification('regress_alice', 'T', 'm')$$);
SELECT regress_try($$SELECT notify_ext.create_notifications_bulk('[]')$$);
SELECT regress_try($$SELECT notify_ext.delete_notifications('{1}')$$);
RESET ROLE;

-- create_notification by a service caller.
SET ROLE regress_svc;
SELECT notify_ext.create_notification('regress_alice', 'JOB_DONE', 'job 1 done', '{"job": 1}',
                                      '2026-01-01 10:00+00') IS NOT NULL AS created;
SELECT notify_ext.create_notification('regress_alice', 'JOB_DONE', 'job 2 done', '{"job": 2}',
                                      '2026-01-01 11:00+00') IS NOT NULL AS created;
SELECT notify_ext.create_notification('regress_alice', 'SHARE', 'bob shared d1', NULL,
                                      '2026-01-01 12:00+00',
                                      '[{"type": "resource", "id": "d1"}]') IS NOT NULL AS created;
SELECT notify_ext.create_notification('regress_bob', 'JOB_DONE', 'job 3 done', '{"job": 3}',
                                      '2026-01-01 10:30+00') IS NOT NULL AS created;
-- Default ts is now().
BEGIN;
SELECT notify_ext.create_notification('regress_bob', 'HELLO', 'hi') IS NOT NULL AS created;
RESET ROLE;
SELECT ts = now() AS ts_is_now FROM notify_ext.notifications
 WHERE recipient = 'regress_bob' AND type = 'HELLO';
COMMIT;
SET ROLE regress_svc;
-- Errors.
SELECT regress_try($$SELECT notify_ext.create_notification('', 'T', 'm')$$);
SELECT regress_try($$SELECT notify_ext.create_notification(NULL, 'T', 'm')$$);
SELECT regress_try($$SELECT notify_ext.create_notification('regress_alice', '', 'm')$$);
SELECT regress_try($$SELECT notify_ext.create_notification('regress_alice', NULL, 'm')$$);
SELECT regress_try($$SELECT notify_ext.create_notification('regress_alice', 'T', NULL)$$);
SELECT regress_try($$SELECT notify_ext.create_notification('regress_alice', 'T', 'm', '[1]')$$);
SELECT regress_try($$SELECT notify_ext.create_notification('regress_alice', 'T', 'm', NULL, now(), '{"a": 1}')$$);
RESET ROLE;

-- The user calls see the caller's own inbox only.
SET ROLE regress_alice;
SELECT pg_temp.page(notify_ext.list_notifications());
SELECT notify_ext.unread_count();
-- Paging, filters.
SELECT pg_temp.page(notify_ext.list_notifications(items_per_page => 2, page => 1));
SELECT pg_temp.page(notify_ext.list_notifications(items_per_page => 2, page => 5));
SELECT pg_temp.page(notify_ext.list_notifications(type => 'JOB_DONE', items_per_page => 1));
SELECT pg_temp.page(notify_ext.list_notifications(since => '2026-01-01 11:00+00'));
SELECT pg_temp.page(notify_ext.list_notifications('JOB_DONE', '2026-01-01 10:30+00'));
SELECT pg_temp.page(notify_ext.list_notifications(type => 'NO_SUCH_TYPE'));
SELECT regress_try($$SELECT notify_ext.list_notifications(items_per_page => 0)$$);
SELECT regress_try($$SELECT notify_ext.list_notifications(items_per_page => 1001)$$);
SELECT regress_try($$SELECT notify_ext.list_notifications(items_per_page => NULL)$$);
SELECT regress_try($$SELECT notify_ext.list_notifications(page => -1)$$);
SELECT notify_ext.list_notifications(items_per_page => 1000) ->> 'itemsPerPage' AS max_page_size;
SELECT type, message, meta, refs, ts, read FROM notify_ext.get_personal_notifications();
RESET ROLE;

-- mark_as_read: someone else's ids and unknown ids fail and stay as they are.
SELECT array_agg(id ORDER BY id) AS bob_ids FROM notify_ext.notifications
 WHERE recipient = 'regress_bob' \gset
SELECT array_agg(id ORDER BY ts) AS alice_ids FROM notify_ext.notifications
 WHERE recipient = 'regress_alice' \gset
-- get_notification: one of the caller's own, in the item shape of
-- list_notifications(); someone else's and unknown ids are both 42704.
SET ROLE regress_alice;
SELECT notify_ext.get_notification((:'alice_ids'::bigint[])[1]) - 'id' AS own;
SELECT notify_ext.get_notification(id) = item AS same_as_listed
  FROM (SELECT (x ->> 'id')::bigint AS id, x AS item
          FROM jsonb_array_elements(notify_ext.list_notifications() -> 'items') x) l;
-- The same answer for both, but for the id.
SELECT regexp_replace(regress_try(format('SELECT notify_ext.get_notification(%s)', (:'bob_ids'::bigint[])[1])),
                      'notification [0-9]+ ', 'notification <id> ') AS others,
       regexp_replace(regress_try($$SELECT notify_ext.get_notification(-5)$$),
                      'notification -5 ', 'notification <id> ') AS unknown;
SELECT regress_try($$SELECT notify_ext.get_notification(-5)$$) AS unknown;
SELECT regress_try($$SELECT notify_ext.get_notification(NULL)$$) AS null_id;
RESET ROLE;
SET ROLE regress_bob;
SELECT notify_ext.get_notification((:'bob_ids'::bigint[])[1]) ->> 'message' AS bobs_own;
RESET ROLE;
SET ROLE regress_svc;
SET notify_ext.principal = 'regress_alice';
SELECT notify_ext.get_notification((:'alice_ids'::bigint[])[1]) ->> 'message' AS app_for_alice;
RESET notify_ext.principal;
SELECT regexp_replace(regress_try(format('SELECT notify_ext.get_notification(%s)', (:'alice_ids'::bigint[])[1])),
                      'notification [0-9]+ ', 'notification <id> ') AS app_itself;
RESET ROLE;

SET ROLE regress_alice;
SELECT notify_ext.mark_as_read(ARRAY[(:'alice_ids'::bigint[])[1], (:'bob_ids'::bigint[])[1], -5, NULL])
       = ARRAY[-5, (:'bob_ids'::bigint[])[1]] AS failures_are_bob_and_unknown;
SELECT notify_ext.mark_as_read('{}');
SELECT regress_try($$SELECT notify_ext.mark_as_read(NULL)$$);
SELECT notify_ext.unread_count();
SELECT type, message, read FROM notify_ext.get_personal_notifications();
-- Marking again is not a failure.
SELECT notify_ext.mark_as_read(ARRAY[(:'alice_ids'::bigint[])[1]]);
SELECT notify_ext.mark_all_as_read();
SELECT notify_ext.mark_all_as_read();
SELECT notify_ext.unread_count();
RESET ROLE;
SET ROLE regress_bob;
SELECT notify_ext.unread_count();
SELECT type, read FROM notify_ext.get_personal_notifications() ORDER BY type;
-- acknowledge: alice's ids fail for bob and stay.
SELECT notify_ext.acknowledge_personal_notifications(:'alice_ids'::bigint[] || (:'bob_ids'::bigint[])[1:1])
       = :'alice_ids'::bigint[] AS failures_are_alices;
SELECT regress_try($$SELECT notify_ext.acknowledge_personal_notifications(NULL)$$);
SELECT type FROM notify_ext.get_personal_notifications();
SELECT notify_ext.unread_count();
RESET ROLE;
SELECT recipient, count(*) FROM notify_ext.notifications
 WHERE recipient LIKE 'regress\_%' GROUP BY recipient ORDER BY recipient;

-- delete_notifications (service): unknown ids fail.
SET ROLE regress_svc;
SELECT notify_ext.delete_notifications(ARRAY[(:'alice_ids'::bigint[])[3], -7, -7])
       = '{-7}' AS failures_are_unknown;
SELECT regress_try($$SELECT notify_ext.delete_notifications(NULL)$$);
RESET ROLE;
SELECT recipient, type FROM notify_ext.notifications
 WHERE recipient LIKE 'regress\_%' ORDER BY recipient, ts;

-- Preferences: a switched-off type is not stored, others are.
SET ROLE regress_alice;
SELECT notify_ext.set_notification_preference('NOISE', false);
SELECT notify_ext.set_notification_preference('NOISE', false);
SELECT regress_try($$SELECT notify_ext.set_notification_preference('', false)$$);
SELECT regress_try($$SELECT notify_ext.set_notification_preference(NULL, false)$$);
SELECT regress_try($$SELECT notify_ext.set_notification_preference('NOISE', NULL)$$);
SELECT principal, type FROM notify_ext.notification_preferences;
RESET ROLE;
SET ROLE regress_svc;
SELECT notify_ext.create_notification('regress_alice', 'NOISE', 'x') IS NULL AS not_stored;
SELECT notify_ext.create_notification('regress_bob', 'NOISE', 'x') IS NOT NULL AS stored_for_bob;
RESET ROLE;
SET ROLE regress_alice;
SELECT notify_ext.set_notification_preference('NOISE', true);
RESET ROLE;
SET ROLE regress_svc;
SELECT notify_ext.create_notification('regress_alice', 'NOISE', 'x') IS NOT NULL AS stored_again;
RESET ROLE;

-- create_notifications_bulk: ids in item order, NULL for a switched-off type.
SET ROLE regress_bob;
SELECT notify_ext.set_notification_preference('MUTED', false);
RESET ROLE;
SET ROLE regress_svc;
SELECT array_length(r, 1) AS n, r[1] IS NOT NULL AS first, r[2] IS NULL AS second_muted,
       r[3] IS NOT NULL AS third, r[1] < r[3] AS ordered
  FROM notify_ext.create_notifications_bulk($$[
    {"user": "regress_alice", "notification": {"type": "BULK", "message": "b1", "meta": {"k": 1}}},
    {"user": "regress_bob", "notification": {"type": "MUTED", "message": "b2"}},
    {"user": "regress_bob", "notification": {"type": "BULK", "message": "b3", "meta": null}}
  ]$$) r;
SELECT notify_ext.create_notifications_bulk('[]');
-- Stored as given, in item order across recipients: meta null or missing is
-- NULL, extra keys are ignored, the last of duplicate keys wins; the counts
-- follow and a switched-off type is neither stored nor counted.
BEGIN;
SELECT notify_ext.create_notifications_bulk($$[
    {"user": "regress_bob", "notification": {"type": "MIXED", "message": "m0", "meta": {"a": [1, {"b": null}]}}},
    {"user": "regress_alice", "notification": {"type": "MIXED", "message": "m1 \"quoted\" \u00e9"}},
    {"user": "regress_bob", "notification": {"type": "MUTED", "message": "m2"}},
    {"user": "regress_alice", "notification": {"type": "MIXED", "message": "", "meta": null, "extra": 1}, "x": 2},
    {"user": "nobody", "user": "regress_bob", "notification": {"type": "MIXED", "message": "m4", "meta": {}}}
  ]$$) AS mixed_ids \gset
RESET ROLE;
SELECT u.ord - 1 AS item, n.recipient, n.type, n.message, n.meta, n.refs, n.ts = now() AS ts_now, n.read
  FROM unnest(:'mixed_ids'::bigint[]) WITH ORDINALITY AS u(id, ord)
  LEFT JOIN notify_ext.notifications n ON n.id = u.id
 ORDER BY u.ord;
SELECT array_agg(i ORDER BY o) = array_agg(i ORDER BY i) AS ids_ascending
  FROM unnest(:'mixed_ids'::bigint[]) WITH ORDINALITY AS u(i, o) WHERE i IS NOT NULL;
SELECT recipient, type, sum(total) AS total, sum(unread) AS unread FROM notify_ext.inbox_counts
 WHERE type IN ('MIXED', 'MUTED') GROUP BY recipient, type ORDER BY recipient, type;
ROLLBACK;
SET ROLE regress_svc;
-- One bad item rejects the whole call.
SELECT regress_try($$SELECT notify_ext.create_notifications_bulk('{"user": "regress_alice"}')$$);
SELECT regress_try($$SELECT notify_ext.create_notifications_bulk(NULL)$$);
SELECT regress_try($$SELECT notify_ext.create_notifications_bulk('[{"user": "regress_alice", "notification": {"type": "OK", "message": "fine"}}, 5]')$$);
SELECT regress_try($$SELECT notify_ext.create_notifications_bulk('[{"user": "regress_alice", "notification": {"type": "OK", "message": "fine"}}, {"user": "", "notification": {"type": "T", "message": "m"}}]')$$);
SELECT regress_try($$SELECT notify_ext.create_notifications_bulk('[{"user": "regress_alice", "notification": {"type": "OK", "message": "fine"}}, {"notification": {"type": "T", "message": "m"}}]')$$);
SELECT regress_try($$SELECT notify_ext.create_notifications_bulk('[{"user": 7, "notification": {"type": "T", "message": "m"}}]')$$);
SELECT regress_try($$SELECT notify_ext.create_notifications_bulk('[{"user": "regress_alice"}]')$$);
SELECT regress_try($$SELECT notify_ext.create_notifications_bulk('[{"user": "regress_alice", "notification": {"message": "m"}}]')$$);
SELECT regress_try($$SELECT notify_ext.create_notifications_bulk('[{"user": "regress_alice", "notification": {"type": "", "message": "m"}}]')$$);
SELECT regress_try($$SELECT notify_ext.create_notifications_bulk('[{"user": "regress_alice", "notification": {"type": "T"}}]')$$);
SELECT regress_try($$SELECT notify_ext.create_notifications_bulk('[{"user": "regress_alice", "notification": {"type": "T", "message": null}}]')$$);
SELECT regress_try($$SELECT notify_ext.create_notifications_bulk('[{"user": "regress_alice", "notification": {"type": "T", "message": "m", "meta": [1]}}]')$$);
RESET ROLE;
SELECT count(*) AS ok_items_created FROM notify_ext.notifications WHERE type = 'OK';
-- 10,000 items in one call.
SET ROLE regress_svc;
WITH c AS (
    SELECT notify_ext.create_notifications_bulk(
             (SELECT jsonb_agg(jsonb_build_object('user', 'regress_u' || (g % 100),
                                                  'notification', jsonb_build_object('type', 'LOAD', 'message', 'n' || g)))
                FROM generate_series(1, 10000) g)) AS r)
SELECT array_length(r, 1) AS n, (SELECT count(DISTINCT x) FROM unnest(r) x) AS distinct_ids FROM c;
SET notify_ext.principal = 'regress_u7';
SELECT notify_ext.unread_count();
SELECT notify_ext.list_notifications(items_per_page => 3) -> 'itemsInTotal' AS total,
       jsonb_path_query_array(notify_ext.list_notifications(items_per_page => 3), '$.items[*].message') AS newest;
RESET notify_ext.principal;
RESET ROLE;

-- The counts follow every change, also through folding and direct SQL.
SET ROLE regress_svc;
SELECT count(notify_ext.create_notification('regress_alice', 'T' || (g % 3), 'm' || g)) FROM generate_series(1, 40) g;
RESET ROLE;
SELECT count(*) < 20 AS folded FROM notify_ext.inbox_counts WHERE recipient = 'regress_alice';
SET ROLE regress_alice;
UPDATE notify_ext.notifications SET read = true WHERE type = 'T1';
DELETE FROM notify_ext.notifications WHERE type = 'T2' AND message LIKE 'm1%';
SELECT notify_ext.unread_count() AS unread,
       (SELECT count(*) FROM notify_ext.notifications WHERE NOT read) AS unread_rows,
       notify_ext.list_notifications() -> 'itemsInTotal' AS total,
       (SELECT count(*) FROM notify_ext.notifications) AS rows,
       notify_ext.list_notifications('T0') -> 'itemsInTotal' AS t0_total,
       (SELECT count(*) FROM notify_ext.notifications WHERE type = 'T0') AS t0_rows;
RESET ROLE;
SELECT sum(total) = (SELECT count(*) FROM notify_ext.notifications) AS totals_match,
       sum(unread) = (SELECT count(*) FROM notify_ext.notifications WHERE NOT read) AS unread_match
  FROM notify_ext.inbox_counts;

-- Many bulk calls with more recipients than are all checked for folding in
-- one statement: a sample is checked each time, the deltas still get folded
-- and the counts stay exact.
SET ROLE regress_svc;
SELECT count(*) AS bulk_calls
  FROM generate_series(1, 30) c,
       LATERAL (SELECT notify_ext.create_notifications_bulk(
                         (SELECT jsonb_agg(jsonb_build_object('user', 'regress_f' || (g % 100),
                                                              'notification', jsonb_build_object('type', 'F' || (g / 100), 'message', 'c' || c)))
                            FROM generate_series(0, 199) g))) b;
SET notify_ext.principal = 'regress_f42';
SELECT notify_ext.unread_count() AS f42_unread,
       notify_ext.list_notifications() -> 'itemsInTotal' AS f42_total,
       notify_ext.list_notifications('F0') -> 'itemsInTotal' AS f42_f0_total;
RESET notify_ext.principal;
RESET ROLE;
-- Without folding each recipient would have 60 delta rows.
SELECT count(*) / 100.0 < 40 AS folded_on_average
  FROM notify_ext.inbox_counts WHERE recipient LIKE 'regress\_f%';
UPDATE notify_ext.notifications SET read = true WHERE recipient LIKE 'regress\_f%' AND message LIKE 'c1%';
DELETE FROM notify_ext.notifications WHERE recipient LIKE 'regress\_f%' AND message = 'c2';
SELECT count(*) = 200 AS all_counts_exact
  FROM (SELECT recipient, type, sum(total) AS total, sum(unread) AS unread
          FROM notify_ext.inbox_counts WHERE recipient LIKE 'regress\_f%' GROUP BY recipient, type) c
  JOIN (SELECT recipient, type, count(*) AS total, count(*) FILTER (WHERE NOT read) AS unread
          FROM notify_ext.notifications WHERE recipient LIKE 'regress\_f%' GROUP BY recipient, type) n
 USING (recipient, type)
 WHERE c.total = n.total AND c.unread = n.unread;
DELETE FROM notify_ext.notifications WHERE recipient LIKE 'regress\_f%';

-- Bulk rows are written straight into the table unless something else acts
-- on an INSERT: then they go through one, in item order, and the other
-- trigger sees them.
CREATE FUNCTION pg_temp.saw_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE NOTICE 'row trigger saw % for %', NEW.message, NEW.recipient;
    RETURN NEW;
END $$;
CREATE TRIGGER regress_row_trigger BEFORE INSERT ON notify_ext.notifications
    FOR EACH ROW EXECUTE FUNCTION pg_temp.saw_row();
SET ROLE regress_svc;
SELECT array_length(notify_ext.create_notifications_bulk(
    '[{"user": "regress_g", "notification": {"type": "G", "message": "g1"}},
      {"user": "regress_g", "notification": {"type": "G", "message": "g2"}}]'), 1) AS created;
RESET ROLE;
DROP TRIGGER regress_row_trigger ON notify_ext.notifications;
-- Under session_replication_role = replica the insert trigger does not fire,
-- so the rows are neither counted nor announced, as for any INSERT.
SET session_replication_role = replica;
SELECT array_length(notify_ext.create_notifications_bulk(
    '[{"user": "regress_g", "notification": {"type": "G", "message": "g3"}}]'), 1) AS created;
RESET session_replication_role;
SELECT (SELECT sum(total) FROM notify_ext.inbox_counts WHERE recipient = 'regress_g') AS counted,
       (SELECT count(*) FROM notify_ext.notifications WHERE recipient = 'regress_g') AS stored;
SET session_replication_role = replica;
DELETE FROM notify_ext.notifications WHERE recipient = 'regress_g';
RESET session_replication_role;
DELETE FROM notify_ext.inbox_counts WHERE recipient = 'regress_g';

-- Row-level security: whatever SQL a plain role writes, it sees and changes
-- only its own rows.
SET ROLE regress_alice;
SELECT DISTINCT recipient FROM notify_ext.notifications;
SELECT count(*) FROM notify_ext.notifications WHERE recipient = 'regress_bob';
UPDATE notify_ext.notifications SET read = true WHERE recipient = 'regress_bob';
DELETE FROM notify_ext.notifications WHERE recipient = 'regress_bob';
SELECT regress_try($$UPDATE notify_ext.notifications SET recipient = 'regress_bob'$$);
SELECT regress_try($$UPDATE notify_ext.notifications SET message = 'x'$$);
SELECT regress_try($$INSERT INTO notify_ext.notifications (recipient, type, message) VALUES ('regress_alice', 'T', 'm')$$);
SELECT regress_try($$INSERT INTO notify_ext.notifications (recipient, type, message) VALUES ('regress_bob', 'T', 'm')$$);
SELECT regress_try($$SELECT * FROM notify_ext.inbox_counts$$);
SELECT regress_try($$INSERT INTO notify_ext.notification_preferences VALUES ('regress_bob', 'JOB_DONE')$$);
SELECT regress_try($$TRUNCATE notify_ext.notifications$$);
SELECT regress_try($$ALTER TABLE notify_ext.notifications DISABLE ROW LEVEL SECURITY$$);
SELECT regress_try($$SELECT notify_ext._notify('regress_bob', 'T', 'm', NULL, now(), NULL)$$);
SELECT regress_try($$SELECT notify_ext._inbox_channel('regress_bob')$$);
SELECT regress_try($$SELECT notify_ext._inbox_not_mine('regress_bob', '{1}')$$);
SELECT regress_try($$SELECT notify_ext._inbox_compact('{regress_bob}')$$);
SELECT regress_try($$SET notify_ext.principal = 'regress_bob'$$);
-- A leaky function sees only rows that passed the policy.
CREATE FUNCTION pg_temp.leak(t text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS $$
BEGIN
    IF t LIKE '%regress_bob%' THEN RAISE NOTICE 'leaked %', t; END IF;
    RETURN true;
END $$;
SELECT count(*) > 0 AS saw_own FROM notify_ext.notifications n WHERE pg_temp.leak(n.recipient || n.message);
SELECT principal, type FROM notify_ext.notification_preferences;
DROP FUNCTION pg_temp.leak(text);
RESET ROLE;
-- Locks: DELETE and UPDATE (read) would let a plain role LOCK the table in
-- any mode and hold it, stopping every inbox call of everyone.  Modes up to
-- ROW EXCLUSIVE (what its own UPDATE or DELETE takes) stay allowed; stronger
-- ones are refused, also through a view of the role's own.
SET ROLE regress_alice;
BEGIN;
SELECT regress_try($$LOCK TABLE notify_ext.notifications IN ACCESS EXCLUSIVE MODE$$);
SELECT regress_try($$LOCK TABLE notify_ext.notifications IN SHARE MODE$$);
SELECT regress_try($$LOCK TABLE notify_ext.notifications IN ROW EXCLUSIVE MODE$$);
CREATE TEMP VIEW own_inbox AS SELECT * FROM notify_ext.notifications;
SELECT regress_try($$LOCK TABLE own_inbox IN EXCLUSIVE MODE$$);
SELECT regress_try($$LOCK TABLE notify_ext.events IN ACCESS EXCLUSIVE MODE$$);
ROLLBACK;
RESET ROLE;
SELECT count(*) AS bob_rows, count(*) FILTER (WHERE read) AS bob_read
  FROM notify_ext.notifications WHERE recipient = 'regress_bob';

-- The subscription channel: per principal, stable, unguessable.
SET ROLE regress_alice;
SELECT notify_ext.subscription_channel() AS alice_channel \gset
SELECT :'alice_channel' ~ '^notify_ext_inbox_[0-9a-f]{32}$' AS well_formed,
       notify_ext.subscription_channel() = :'alice_channel' AS stable,
       :'alice_channel' NOT LIKE '%alice%' AS opaque;
RESET ROLE;
SET ROLE regress_bob;
SELECT notify_ext.subscription_channel() <> :'alice_channel' AS differs;
RESET ROLE;
SET ROLE regress_svc;
SET notify_ext.principal = 'regress_alice';
SELECT notify_ext.subscription_channel() = :'alice_channel' AS app_gets_users_channel;
RESET notify_ext.principal;
RESET ROLE;

-- Folding locks only recipients that need folding, at most 32 per call.
-- 20,000 notifications for 20,000 distinct recipients (half by the bulk
-- call, half by an INSERT through the C insert trigger), then all deleted
-- in one call: nobody needs folding and no lock is taken (a lock per
-- recipient checked would run out of shared memory, 53200).
BEGIN;
SET LOCAL ROLE regress_svc;
SELECT array_length(notify_ext.create_notifications_bulk(
         (SELECT jsonb_agg(jsonb_build_object('user', 'regress_d' || g,
                                              'notification', jsonb_build_object('type', 'D', 'message', 'd' || g)))
            FROM generate_series(1, 10000) g)), 1) AS created;
RESET ROLE;
INSERT INTO notify_ext.notifications (recipient, type, message)
SELECT 'regress_d' || g, 'D', 'd' || g FROM generate_series(10001, 20000) g;
SELECT count(*) AS advisory_locks FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid();
COMMIT;
BEGIN;
SELECT notify_ext.delete_notifications(
         ARRAY(SELECT id FROM notify_ext.notifications WHERE recipient LIKE 'regress\_d%')) AS failed;
SELECT count(*) AS advisory_locks FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid();
COMMIT;
SELECT count(*) AS left_over FROM notify_ext.notifications WHERE recipient LIKE 'regress\_d%';
SELECT count(*) AS nonzero_counts FROM (
    SELECT recipient FROM notify_ext.inbox_counts WHERE recipient LIKE 'regress\_d%'
     GROUP BY recipient, type HAVING sum(total) <> 0 OR sum(unread) <> 0) x;
DELETE FROM notify_ext.inbox_counts WHERE recipient LIKE 'regress\_d%';
-- 1,000 recipients past the threshold (12 delta rows of one type each): a
-- call folds 32 of them, later calls the rest, and one transaction holds at
-- most 256 folding locks however many it folds.
INSERT INTO notify_ext.inbox_counts (recipient, type, total, unread)
SELECT 'regress_h' || g, 'H', 1, 1 FROM generate_series(1, 1000) g, generate_series(1, 12) k;
BEGIN;
SELECT notify_ext._inbox_compact(ARRAY(SELECT 'regress_h' || g FROM generate_series(1, 1000) g));
SELECT count(*) FILTER (WHERE n = 1) AS folded, count(*) FILTER (WHERE n = 12) AS not_yet
  FROM (SELECT count(*) AS n FROM notify_ext.inbox_counts WHERE recipient LIKE 'regress\_h%' GROUP BY recipient) x;
SELECT count(*) BETWEEN 1 AND 32 AS locks_of_one_call
  FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid();
DO $$
BEGIN
    FOR i IN 1..40 LOOP
        PERFORM notify_ext._inbox_compact(ARRAY(SELECT 'regress_h' || g FROM generate_series(1, 1000) g));
    END LOOP;
END
$$;
SELECT count(*) FILTER (WHERE n = 1) AS folded, count(*) FILTER (WHERE n = 12) AS not_yet
  FROM (SELECT count(*) AS n FROM notify_ext.inbox_counts WHERE recipient LIKE 'regress\_h%' GROUP BY recipient) x;
SELECT count(*) <= 256 AS locks_of_the_transaction
  FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid();
SELECT sum(total) AS total, sum(unread) AS unread FROM notify_ext.inbox_counts WHERE recipient LIKE 'regress\_h%';
COMMIT;
DELETE FROM notify_ext.inbox_counts WHERE recipient LIKE 'regress\_h%';

-- delete_notifications() of many ids costs in proportion to their number,
-- also when they do not fit in work_mem (beyond it, a NOT IN over the
-- deleted ids costs the square of their number: hours for 1,000,000).
BEGIN;
INSERT INTO notify_ext.notifications (recipient, type, message)
SELECT 'regress_many', 'T', 'm' FROM generate_series(1, 30000);
SET LOCAL work_mem = '64kB';
SET LOCAL statement_timeout = '10s';
SELECT notify_ext.delete_notifications(
    ARRAY(SELECT id FROM notify_ext.notifications WHERE recipient = 'regress_many') || ARRAY[-1, -1, NULL]);
ROLLBACK;

-- Clean up.
DELETE FROM notify_ext.notifications WHERE recipient LIKE 'regress\_%';
DELETE FROM notify_ext.notification_preferences WHERE principal LIKE 'regress\_%';
SELECT count(*) AS leftover_counts FROM (
    SELECT recipient FROM notify_ext.inbox_counts WHERE recipient LIKE 'regress\_%'
     GROUP BY recipient, type HAVING sum(total) <> 0 OR sum(unread) <> 0) x;
RESET notify_ext.app_role;
DROP ROLE regress_alice, regress_bob, regress_svc, regress_app;
