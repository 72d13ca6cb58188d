-- relays: the SQL side of relays to NATS JetStream.  Service calls refused
-- with 42501 for plain roles; every argument of create_relay() checked
-- (22023 naming the value, 23505/42710 for a taken name, 42704 for an
-- unknown resource); auth of the four kinds, secrets sealed and never
-- listed; the subject mapping and its escapes; list_relays(), relay_stats,
-- pause, resume and delete.  Publishing is tested end to end in
-- test/e2e/test_relays_e2e.py.
\set SHOW_CONTEXT never
CREATE ROLE regress_relay_app NOLOGIN;
CREATE ROLE regress_relay_plain NOLOGIN;
SET notify_ext.app_role = 'regress_relay_app';

-- The settings and their defaults.
SHOW notify_ext.relay_max_in_flight;
SHOW notify_ext.relay_ack_timeout;
SHOW notify_ext.relay_connect_timeout;
SHOW notify_ext.relay_retry_max;
SHOW notify_ext.relay_duplicate_window;

-- Subjects: <prefix>.<operation: two tokens>.<path ids>, escapes reversible.
SELECT notify_ext.relay_subject('notify', 'dataset.update', ARRAY['p1', 'c1', 'd1']);
SELECT notify_ext.relay_subject('notify', 'JOB_PROCESSED');
SELECT notify_ext.relay_subject('app.events', 'user.view', ARRAY['a.b', 'x*', '>', 'tab	nl
', '50%', '', 'ünï']);
SELECT notify_ext.relay_subject('notify', 'odd..op.', ARRAY['p1']);
-- The path starts at the same token whatever the operation.
SELECT notify_ext.relay_subject('notify', 'dataset.update.p1.c1', ARRAY['p2', 'm']);
-- Operation tokens too long for a subject are cut.
SELECT notify_ext.relay_subject('notify', repeat('x', 300) || '.' || repeat('.', 100), ARRAY['p1']);
SELECT t, notify_ext.relay_subject_token(t)
  FROM unnest(ARRAY['a%2Eb', 'x%2A', '%3E', '50%25', '%', 'ünï', 'tab%09nl%0A']) t;
SELECT regress_try($$SELECT notify_ext.relay_subject_token('a.b')$$);
SELECT regress_try($$SELECT notify_ext.relay_subject_token('%2')$$);
SELECT regress_try($$SELECT notify_ext.relay_subject_token('%+')$$);
-- A path too long for one subject keeps what fits and ends with %+.
SELECT length(s) <= 2048 AS fits, right(s, 3) AS ends
  FROM notify_ext.relay_subject('notify', 'x.y', array_fill(repeat('i', 100), ARRAY[40])) s;

-- Service calls only.
SET ROLE regress_relay_plain;
SELECT regress_try($$SELECT notify_ext.create_relay('r', ARRAY['nats://127.0.0.1:1'], 'S')$$);
SELECT regress_try($$SELECT * FROM notify_ext.list_relays()$$);
SELECT regress_try($$SELECT notify_ext.delete_relay(gen_random_uuid())$$);
SELECT count(*) AS rows_a_plain_role_sees FROM notify_ext.relay_stats;
RESET ROLE;

-- Every argument checked.
SELECT notify_ext.register_resource('rp1', 'project');
SELECT regress_try(s) FROM unnest(ARRAY[
  $$SELECT notify_ext.create_relay(NULL, ARRAY['nats://127.0.0.1:1'], 'S')$$,
  $$SELECT notify_ext.create_relay('', ARRAY['nats://127.0.0.1:1'], 'S')$$,
  $$SELECT notify_ext.create_relay('r', NULL, 'S')$$,
  $$SELECT notify_ext.create_relay('r', '{}', 'S')$$,
  $$SELECT notify_ext.create_relay('r', ARRAY['http://127.0.0.1:4222'], 'S')$$,
  $$SELECT notify_ext.create_relay('r', ARRAY['nats://u:p@127.0.0.1:4222'], 'S')$$,
  $$SELECT notify_ext.create_relay('r', ARRAY['nats://127.0.0.1:99999'], 'S')$$,
  $$SELECT notify_ext.create_relay('r', ARRAY['nats://127.0.0.1:4222/x'], 'S')$$,
  $$SELECT notify_ext.create_relay('r', ARRAY['nats://169.254.169.254:4222'], 'S')$$,
  $$SELECT notify_ext.create_relay('r', ARRAY['nats://metadata.google.internal'], 'S')$$,
  $$SELECT notify_ext.create_relay('r', ARRAY['nats://127.0.0.1:1'], NULL)$$,
  $$SELECT notify_ext.create_relay('r', ARRAY['nats://127.0.0.1:1'], 'A.B')$$,
  $$SELECT notify_ext.create_relay('r', ARRAY['nats://127.0.0.1:1'], 'A B')$$,
  $$SELECT notify_ext.create_relay('r', ARRAY['nats://127.0.0.1:1'], 'S', subject_prefix => 'a.*')$$,
  $$SELECT notify_ext.create_relay('r', ARRAY['nats://127.0.0.1:1'], 'S', subject_prefix => 'a..b')$$,
  $$SELECT notify_ext.create_relay('r', ARRAY['nats://127.0.0.1:1'], 'S', subject_prefix => '$JS')$$,
  $$SELECT notify_ext.create_relay('r', ARRAY['nats://127.0.0.1:1'], 'S', deliver => 'from_date')$$,
  $$SELECT notify_ext.create_relay('r', ARRAY['nats://127.0.0.1:1'], 'S', resource_id => 'nope')$$,
  $$SELECT notify_ext.create_relay('r', ARRAY['nats://127.0.0.1:1'], 'S', streams => '{}')$$,
  $$SELECT notify_ext.create_relay('r', ARRAY['nats://127.0.0.1:1'], 'S', auth => '"x"')$$,
  $$SELECT notify_ext.create_relay('r', ARRAY['nats://127.0.0.1:1'], 'S', auth => '{"user": "u"}')$$,
  $$SELECT notify_ext.create_relay('r', ARRAY['nats://127.0.0.1:1'], 'S', auth => '{"token": "t", "user": "u"}')$$,
  $$SELECT notify_ext.create_relay('r', ARRAY['nats://127.0.0.1:1'], 'S', auth => '{"tokn": "t"}')$$,
  $$SELECT notify_ext.create_relay('r', ARRAY['nats://127.0.0.1:1'], 'S', auth => '{"token": ""}')$$,
  $$SELECT notify_ext.create_relay('r', ARRAY['nats://127.0.0.1:1'], 'S', auth => '{"nkey_seed": "SUNOTASEED"}')$$,
  $$SELECT notify_ext.create_relay('r', ARRAY['nats://127.0.0.1:1'], 'S', auth => '{"credentials": "no blocks"}')$$,
  $$SELECT notify_ext.create_relay('r', ARRAY['nats://127.0.0.1:1'], 'S', tls => '{"ca": "not pem"}')$$,
  $$SELECT notify_ext.create_relay('r', ARRAY['nats://127.0.0.1:1'], 'S', tls => '{"verify": "no"}')$$,
  $$SELECT notify_ext.create_relay('r', ARRAY['nats://127.0.0.1:1'], 'S', tls => '{"cert": "-----BEGIN CERTIFICATE-----"}')$$,
  $$SELECT notify_ext.create_relay('r', ARRAY['nats://127.0.0.1:1'], 'S', tls => '{"cafile": "/etc/x"}')$$
]) s;

-- A relay of each kind of auth (the servers refuse connections: nothing is
-- published here).  The NKey seed is the one of the NATS documentation.
SELECT notify_ext.create_relay('plain', ARRAY['127.0.0.1:1', 'tls://[::1]'], 'EVENTS') IS NOT NULL AS created;
SELECT regress_try($$SELECT notify_ext.create_relay('plain', ARRAY['127.0.0.1:1'], 'EVENTS')$$);
SELECT notify_ext.create_relay('userpw', ARRAY['nats://127.0.0.1:1'], 'EVENTS', subject_prefix => 'u',
        resource_id => 'rp1', include_subresources => false, operations => ARRAY['project.update'],
        auth => '{"user": "relay", "password": "pw-secret-1"}', deliver => 'all',
        tls => '{"ca": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", "verify": true}') IS NOT NULL AS created;
SELECT notify_ext.create_relay('token', ARRAY['nats://127.0.0.1:1'], 'EVENTS', subject_prefix => 't',
        auth => '{"token": "tok-secret-2"}') IS NOT NULL AS created;
SELECT notify_ext.create_relay('nkey', ARRAY['nats://127.0.0.1:1'], 'EVENTS', subject_prefix => 'n',
        auth => '{"nkey_seed": "SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VY"}') IS NOT NULL AS created;
SELECT notify_ext.create_relay('creds', ARRAY['nats://127.0.0.1:1'], 'EVENTS', subject_prefix => 'c',
        auth => jsonb_build_object('credentials', E'-----BEGIN NATS USER JWT-----\neyJ0eXAiOiJqd3QifQ.e30.sig\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\nSUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VY\n------END USER NKEY SEED------\n')) IS NOT NULL AS created;
SELECT name, servers, stream, subject_prefix, resource_id, include_subresources, operations,
       auth, tls ->> 'verify' AS verify, deliver, ensure_stream, missed
  FROM notify_ext.list_relays() ORDER BY name;
-- Secrets are sealed: not in the table as text.
SELECT name, auth_type, auth_public,
       position('pw-secret-1' IN encode(auth_sealed, 'escape')) = 0
       AND position('tok-secret-2' IN encode(auth_sealed, 'escape')) = 0 AS sealed
  FROM notify_ext.relays ORDER BY name;
-- deliver 'all' starts at 0, 'new' at the committed horizon.
SELECT name, position = 0 AS from_the_start FROM notify_ext.relays WHERE name IN ('plain', 'userpw') ORDER BY name;

-- Pause, resume, delete.
SELECT notify_ext.pause_relay(id) FROM notify_ext.relays WHERE name = 'token';
SELECT name, state FROM notify_ext.relay_stats WHERE name = 'token';
SELECT notify_ext.resume_relay(id) FROM notify_ext.relays WHERE name = 'token';
SELECT name, state <> 'paused' AS running FROM notify_ext.relay_stats WHERE name = 'token';
SELECT regress_try($$SELECT notify_ext.pause_relay('00000000-0000-0000-0000-000000000000')$$);
SELECT regress_try($$SELECT notify_ext.delete_relay(NULL)$$);
SELECT notify_ext.delete_relay(id) FROM notify_ext.relays;
SELECT count(*) FROM notify_ext.list_relays();

DROP ROLE regress_relay_app;
DROP ROLE regress_relay_plain;
