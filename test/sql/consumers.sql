-- Stream consumers: creation with every deliver policy and filter, fetching,
-- signed acknowledgements, redelivery, max_deliver, permissions, key
-- rotation, consumer_info, and every refusal with its SQLSTATE.
\set SHOW_CONTEXT never
SET client_min_messages = warning;

-- Replies of a fetch, as acknowledge_message_batch() takes them.
CREATE FUNCTION pg_temp.replies(t regclass) RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE r jsonb;
BEGIN
    EXECUTE format('SELECT COALESCE(jsonb_agg(jsonb_build_object(''reply'', reply, ''salt'', salt, ''hmac'', hmac) ORDER BY seq), ''[]'') FROM %s', t) INTO r;
    RETURN r;
END
$$;

SELECT notify_ext.committed_seq() AS base \gset

SELECT notify_ext.register_resource('cp1', 'project');
SELECT notify_ext.register_resource('cp2', 'project');
CREATE TABLE citems (id text PRIMARY KEY, parent text, v int);
SELECT notify_ext.track('citems', 'item', parent_column => 'parent');
INSERT INTO citems VALUES ('i1', 'cp1', 1), ('i2', 'cp2', 2), ('i3', 'cp1', 3);
SELECT notify_ext.publish('jobs', 'JOB_PROCESSED', '{"status": "ok"}', 'cp1');

-- Scope: a project and its subtree, from the beginning of the test.
SELECT notify_ext.create_stream_consumer('cp1', deliver => 'from_sequence',
        from_sequence => :base + 1, ack_wait => '1 second', max_deliver => 2) AS c \gset
CREATE TEMP TABLE f1 AS SELECT * FROM notify_ext.get_event_message_batch(:'c', 10);
SELECT seq - :base AS n, message->>'operation' AS operation, message->'resource'->>'id' AS resource,
       delivery_count, reply LIKE '%.' || seq AS reply_names_seq,
       length(decode(hmac, 'base64')) AS hmac_bytes, length(decode(salt, 'base64')) AS salt_bytes
  FROM f1 ORDER BY seq;
-- Nothing more until something new commits.
SELECT count(*) AS more FROM notify_ext.get_event_message_batch(:'c', 10);
SELECT notify_ext.consumer_info(:'c') - 'consumer' - 'created_at' - 'ack_floor' - 'last_delivered'
       - 'delivered_upto' AS info;

-- Acknowledging: all or nothing, twice is fine.
SELECT notify_ext.acknowledge_message_batch(pg_temp.replies('f1'));
SELECT notify_ext.acknowledge_message_batch(pg_temp.replies('f1'));
SELECT (notify_ext.consumer_info(:'c')->>'num_ack_pending')::int AS ack_pending,
       (notify_ext.consumer_info(:'c')->>'ack_floor')::bigint
         = (notify_ext.consumer_info(:'c')->>'delivered_upto')::bigint AS floor_at_end;

-- A forged or altered reply rejects the whole call.
INSERT INTO citems VALUES ('i4', 'cp1', 4), ('i5', 'cp1', 5);
CREATE TEMP TABLE f2 AS SELECT * FROM notify_ext.get_event_message_batch(:'c', 10);
SELECT count(*) AS fetched FROM f2;
SELECT regress_try(format('SELECT notify_ext.acknowledge_message_batch(%L)',
    pg_temp.replies('f2') || jsonb_build_array(jsonb_build_object('reply', (SELECT reply FROM f2 ORDER BY seq LIMIT 1),
        'salt', (SELECT salt FROM f2 ORDER BY seq DESC LIMIT 1), 'hmac', (SELECT hmac FROM f2 ORDER BY seq LIMIT 1)))));
SELECT regress_try(format('SELECT notify_ext.acknowledge_message_batch(%L)',
    jsonb_build_array(jsonb_build_object('reply', regexp_replace((SELECT reply FROM f2 ORDER BY seq LIMIT 1), '\d+$', '999999'),
        'salt', (SELECT salt FROM f2 ORDER BY seq LIMIT 1), 'hmac', (SELECT hmac FROM f2 ORDER BY seq LIMIT 1)))));
SELECT regress_try($$SELECT notify_ext.acknowledge_message_batch('[{"reply": "1.00000000-0000-0000-0000-000000000000.1", "salt": "c2FsdA==", "hmac": "AAAA"}]')$$);
SELECT regress_try($$SELECT notify_ext.acknowledge_message_batch('{"reply": "x"}')$$);
SELECT regress_try($$SELECT notify_ext.acknowledge_message_batch('[{"reply": "x", "salt": "y"}]')$$);
SELECT regress_try($$SELECT notify_ext.acknowledge_message_batch('[42]')$$);
SELECT notify_ext.acknowledge_message_batch('[]');
SELECT (notify_ext.consumer_info(:'c')->>'num_ack_pending')::int AS still_pending;

-- Unacknowledged messages come back after ack_wait, at most max_deliver times.
SELECT pg_sleep(1.2);
CREATE TEMP TABLE f3 AS SELECT * FROM notify_ext.get_event_message_batch(:'c', 10);
SELECT seq - :base AS n, delivery_count FROM f3 ORDER BY seq;
SELECT pg_sleep(1.2);
SELECT count(*) AS after_max_deliver FROM notify_ext.get_event_message_batch(:'c', 10);
SELECT (notify_ext.consumer_info(:'c')->>'num_terminated')::int AS terminated,
       (notify_ext.consumer_info(:'c')->>'num_ack_pending')::int AS ack_pending;
-- A reply of an earlier delivery still acknowledges (nothing left here).
SELECT notify_ext.acknowledge_message_batch(pg_temp.replies('f2'));

-- Filters and deliver policies
SELECT notify_ext.create_stream_consumer('cp1', include_subresources => false, deliver => 'from_sequence',
        from_sequence => :base + 1) AS own \gset
SELECT message->>'operation' AS own_events FROM notify_ext.get_event_message_batch(:'own', 10);
SELECT notify_ext.create_stream_consumer('cp1', deliver => 'from_sequence', from_sequence => :base + 1,
        operations => ARRAY['item.create'], streams => ARRAY['public.citems']) AS ops \gset
SELECT message->'resource'->>'id' AS created FROM notify_ext.get_event_message_batch(:'ops', 10) ORDER BY seq;
SELECT notify_ext.create_stream_consumer('cp2', deliver => 'new') AS fresh \gset
SELECT count(*) AS nothing_yet FROM notify_ext.get_event_message_batch(:'fresh', 10);
UPDATE citems SET v = 20 WHERE id = 'i2';
SELECT message->>'operation' AS new_only, message->'changed' AS changed FROM notify_ext.get_event_message_batch(:'fresh', 10);
SELECT notify_ext.create_stream_consumer('cp2', deliver => 'from_date', from_date => now() + interval '1 hour') AS later \gset
UPDATE citems SET v = 21 WHERE id = 'i2';
SELECT count(*) AS from_the_future FROM notify_ext.get_event_message_batch(:'later', 10);
SELECT notify_ext.create_stream_consumer(deliver => 'from_sequence', from_sequence => :base + 1) AS everything \gset
SELECT count(*) AS first_three FROM notify_ext.get_event_message_batch(:'everything', 3);
SELECT count(*) AS the_rest FROM notify_ext.get_event_message_batch(:'everything', 100);

-- The message is the event as the events view shows it.
SELECT bool_and(b.message = e.message) AS same_as_view
  FROM notify_ext.get_event_message_batch(
         notify_ext.create_stream_consumer('cp1', deliver => 'from_sequence', from_sequence => :base + 1), 100) b
  JOIN notify_ext.events e USING (seq);

-- Channel: a keyed hash of the consumer id, so that knowing the id is not
-- enough to LISTEN; a plain identifier under 64 bytes, stable per consumer.
SELECT notify_ext.get_event_message_stream(:'c') AS c_channel \gset
SELECT :'c_channel' ~ '^notify_ext_consumer_[0-9a-f]{32}$' AS well_formed,
       octet_length(:'c_channel') < 64 AS fits_identifier,
       quote_ident(:'c_channel') = :'c_channel' AS needs_no_quotes,
       strpos(:'c_channel', replace(:'c', '-', '')) = 0
         AND strpos(:'c_channel', :'c') = 0 AS hides_consumer_id,
       notify_ext.get_event_message_stream(:'c') = :'c_channel' AS stable,
       notify_ext.get_event_message_stream(:'own') <> :'c_channel' AS differs_between_consumers;
SELECT regress_try($$SELECT notify_ext.get_event_message_stream(NULL)$$);
SELECT regress_try($$SELECT notify_ext.get_event_message_stream('00000000-0000-0000-0000-000000000000')$$);

-- Refusals
SELECT regress_try($$SELECT notify_ext.create_stream_consumer('cp1', deliver => 'sometimes')$$);
SELECT regress_try($$SELECT notify_ext.create_stream_consumer('cp1', from_date => now())$$);
SELECT regress_try($$SELECT notify_ext.create_stream_consumer('cp1', deliver => 'from_date')$$);
SELECT regress_try($$SELECT notify_ext.create_stream_consumer('cp1', deliver => 'from_sequence')$$);
SELECT regress_try($$SELECT notify_ext.create_stream_consumer('cp1', deliver => 'from_sequence', from_sequence => 0)$$);
SELECT regress_try($$SELECT notify_ext.create_stream_consumer('cp1', from_sequence => 5)$$);
SELECT regress_try($$SELECT notify_ext.create_stream_consumer('cp1', ack_wait => '0')$$);
SELECT regress_try($$SELECT notify_ext.create_stream_consumer('cp1', max_deliver => 0)$$);
SELECT regress_try($$SELECT notify_ext.create_stream_consumer('cp1', streams => '{}')$$);
SELECT regress_try($$SELECT notify_ext.create_stream_consumer('cp1', operations => ARRAY[''])$$);
SELECT regress_try($$SELECT notify_ext.create_stream_consumer('nowhere')$$);
SELECT regress_try($$SELECT notify_ext.create_stream_consumer('cp1', 'dataset')$$);
SELECT regress_try($$SELECT notify_ext.create_stream_consumer(resource_variant => 'project')$$);
SELECT regress_try($$SELECT * FROM notify_ext.get_event_message_batch('00000000-0000-0000-0000-000000000000')$$);
SELECT regress_try(format('SELECT * FROM notify_ext.get_event_message_batch(%L, 0)', :'c'));
SELECT regress_try(format('SELECT * FROM notify_ext.get_event_message_batch(%L, 10001)', :'c'));
SELECT regress_try(format('SELECT * FROM notify_ext.get_event_message_batch(%L, 1, %L)', :'c', '-1 second'));
-- A wait too long to count in microseconds still waits (here until the
-- statement times out), rather than returning at once.
SELECT notify_ext.create_stream_consumer('cp1', deliver => 'new') AS cw \gset
SET statement_timeout = '300ms';
SELECT count(*) FROM notify_ext.get_event_message_batch(:'cw', 1, '100000000 years');
RESET statement_timeout;
SELECT notify_ext.delete_stream_consumer(:'cw');
SELECT regress_try($$SELECT notify_ext.consumer_info('00000000-0000-0000-0000-000000000000')$$);
SELECT regress_try($$SELECT notify_ext.delete_stream_consumer('00000000-0000-0000-0000-000000000000')$$);
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT regress_try(format('SELECT * FROM notify_ext.get_event_message_batch(%L)', :'c'));
COMMIT;

-- Permissions: READ to create and to fetch; a revoked grant stops delivery.
CREATE ROLE regress_reader;
SELECT notify_ext.grant_permission('regress_reader', 'cp1', 'READ');
SET ROLE regress_reader;
SELECT regress_try($$SELECT notify_ext.create_stream_consumer('cp2')$$);
SELECT regress_try($$SELECT notify_ext.create_stream_consumer()$$);
SELECT notify_ext.create_stream_consumer('cp1', deliver => 'from_sequence', from_sequence => :base + 1) AS mine \gset
SELECT count(*) > 0 AS reader_fetches FROM notify_ext.get_event_message_batch(:'mine', 100);
SELECT regress_try(format('SELECT * FROM notify_ext.get_event_message_batch(%L)', :'c'));
SELECT regress_try(format('SELECT notify_ext.consumer_info(%L)', :'c'));
SELECT regress_try(format('SELECT notify_ext.delete_stream_consumer(%L)', :'c'));
SELECT regress_try(format('SELECT notify_ext.get_event_message_stream(%L)', :'c'));
SELECT regress_try(format('SELECT notify_ext._consumer_channel(%L)', :'c'));
SELECT notify_ext.get_event_message_stream(:'mine') ~ '^notify_ext_consumer_[0-9a-f]{32}$' AS own_channel;
SELECT regress_try('SELECT * FROM notify_ext.consumers');
SELECT regress_try('SELECT * FROM notify_ext.consumer_pending');
RESET ROLE;
SELECT notify_ext.revoke_permission('regress_reader', 'cp1');
SET ROLE regress_reader;
SELECT regress_try(format('SELECT * FROM notify_ext.get_event_message_batch(%L)', :'mine'));
SELECT notify_ext.delete_stream_consumer(:'mine');
RESET ROLE;
DELETE FROM notify_ext.notifications WHERE recipient = 'regress_reader';
DROP ROLE regress_reader;

-- Key rotation: earlier replies stay valid for notify_ext.reply_key_grace.
INSERT INTO citems VALUES ('i6', 'cp1', 6);
CREATE TEMP TABLE f4 AS SELECT * FROM notify_ext.get_event_message_batch(:'c', 10);
-- No row means generation 1, in use; rotating records it as retired.
SELECT count(*) AS reply_key_rows FROM notify_ext.reply_keys;
SELECT DISTINCT split_part(reply, '.', 1) AS generation FROM f4;
SELECT notify_ext.rotate_reply_key();
SELECT generation, retired_at IS NOT NULL AS retired FROM notify_ext.reply_keys ORDER BY generation;
SELECT notify_ext.acknowledge_message_batch(pg_temp.replies('f4')) AS acked_in_grace;
INSERT INTO citems VALUES ('i7', 'cp1', 7);
CREATE TEMP TABLE f5 AS SELECT * FROM notify_ext.get_event_message_batch(:'c', 10);
SELECT DISTINCT split_part(reply, '.', 1) AS generation FROM f5;
SELECT notify_ext.rotate_reply_key();
SET notify_ext.reply_key_grace = '0';
SELECT regress_try(format('SELECT notify_ext.acknowledge_message_batch(%L)', pg_temp.replies('f5')));
RESET notify_ext.reply_key_grace;
SELECT notify_ext.acknowledge_message_batch(pg_temp.replies('f5')) AS acked_after_reset;
SELECT regress_try('SET notify_ext.reply_key_grace = ''-1 hour''');
SELECT regress_try('SET notify_ext.reply_key_grace = ''soon''');

-- Deleting
SELECT notify_ext.delete_stream_consumer(:'c');
SELECT regress_try(format('SELECT notify_ext.consumer_info(%L)', :'c'));
SELECT count(*) AS pending_rows_left FROM notify_ext.consumer_pending WHERE consumer = :'c';

DELETE FROM notify_ext.consumers;
DROP TABLE citems;
DELETE FROM notify_ext.resources WHERE id IN ('cp1', 'cp2');

-- The filter fetches plan for a subtree with nothing else agrees with the generic rule.
SELECT count(*) AS subtree_rule_differs
  FROM notify_ext.event_log e, (VALUES ('cp1'), ('cp2'), ('i1'), (NULL)) r(id)
 WHERE notify_ext._in_subtree(r.id, e.resource_id, e.resource_path)
       IS DISTINCT FROM notify_ext._in_scope(r.id, true, NULL, NULL, NULL, e.resource_id,
                                             e.resource_path, e.stream, e.operation, e.occurred_at);

-- A json column may hold escapes jsonb cannot (\u0000, lone surrogates):
-- the message carries U+FFFD for them, so the event stays fetchable and
-- does not stop the consumer.
SELECT notify_ext.register_resource('cq1', 'project');
CREATE TABLE cjson (id text PRIMARY KEY, parent text, j json);
SELECT notify_ext.track('cjson', 'doc', parent_column => 'parent');
SELECT notify_ext.create_stream_consumer('cq1') AS cq \gset
INSERT INTO cjson VALUES ('j1', 'cq1', '{"nul": "a\u0000b", "high": "\ud800x", "low": "\udc00", "pair": "\ud83d\ude00", "kept": "\\u0000", "n": [1, {"x": "\u0000"}]}'),
                         ('j2', 'cq1', '"\ud800"'), ('j3', 'cq1', '{"ok": 1}');
SELECT message->'resource'->>'id' AS id, message->'payload'->'j' AS j,
       jsonb_typeof(message) AS typeof, message::text::jsonb = message AS round_trips
  FROM notify_ext.get_event_message_batch(:'cq', 10) ORDER BY seq;
SELECT notify_ext.delete_stream_consumer(:'cq');
DROP TABLE cjson;
DELETE FROM notify_ext.resources WHERE id = 'cq1';

-- Only the hmac as handed out is valid: the same 32 bytes written with other
-- unused low bits in the last base64 character are refused, nothing acknowledged.
SELECT notify_ext.register_resource('cq2', 'project');
SELECT notify_ext.create_stream_consumer('cq2', ack_wait => '1 hour') AS cq \gset
SELECT notify_ext.publish('jobs', 'JOB_PROCESSED', '{}', 'cq2');
CREATE TEMP TABLE f6 AS SELECT * FROM notify_ext.get_event_message_batch(:'cq', 10);
CREATE TEMP TABLE f6_variant AS
SELECT seq, reply, salt, substr(hmac, 1, 42)
         || substr(b.alphabet, ((strpos(b.alphabet, substr(hmac, 43, 1)) - 1) # 1) + 1, 1)
         || '=' AS hmac
  FROM f6, (VALUES ('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/')) b(alphabet);
SELECT decode(v.hmac, 'base64') = decode(f6.hmac, 'base64') AS same_bytes, v.hmac <> f6.hmac AS other_text
  FROM f6 JOIN f6_variant v USING (reply);
SELECT regress_try(format('SELECT notify_ext.acknowledge_message_batch(%L)', pg_temp.replies('f6_variant')));
SELECT (notify_ext.consumer_info(:'cq')->>'num_ack_pending')::int AS ack_pending;
SELECT notify_ext.acknowledge_message_batch(pg_temp.replies('f6')) AS acked;
SELECT notify_ext.delete_stream_consumer(:'cq');
DELETE FROM notify_ext.resources WHERE id = 'cq2';

-- Scopes compare whole ids: a subtree "cs1" holds nothing of "cs10", "cs_"
-- nothing of "csx", and LIKE or regex characters in ids mean themselves.
SELECT notify_ext.register_resource(id, 'project')
  FROM unnest(ARRAY['cs1', 'cs10', 'cs_', 'csx', 'cs%', 'cs\', 'cs.', 'cs.*']) id;
SELECT notify_ext.register_resource(id || '/child', 'item', id)
  FROM unnest(ARRAY['cs1', 'cs10', 'cs_', 'csx', 'cs%', 'cs\', 'cs.', 'cs.*']) id;
SELECT notify_ext.publish('jobs', 'JOB_PROCESSED', '{}', id || s)
  FROM unnest(ARRAY['cs1', 'cs10', 'cs_', 'csx', 'cs%', 'cs\', 'cs.', 'cs.*']) id,
       unnest(ARRAY['', '/child']) s;
CREATE TEMP TABLE cs_consumers AS
SELECT id, sub, notify_ext.create_stream_consumer(id, include_subresources => sub,
           deliver => 'from_sequence', from_sequence => (SELECT max(seq) - 15 FROM notify_ext.event_log)) AS c
  FROM unnest(ARRAY['cs1', 'cs_', 'cs%', 'cs\', 'cs.']) id, unnest(ARRAY[true, false]) sub;
SELECT id, sub, (SELECT string_agg(m.message->'resource'->>'id', ' ' ORDER BY m.seq)
                   FROM notify_ext.get_event_message_batch(c, 100) m) AS fetched
  FROM cs_consumers ORDER BY id, sub;
DELETE FROM notify_ext.consumers;
