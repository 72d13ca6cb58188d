-- The event log: resources, track/untrack, the capture trigger, publish and
-- the events view, including every refusal with its SQLSTATE.
\set SHOW_CONTEXT never
SET client_min_messages = warning;

-- Events recorded from here on, numbered from 1 for stable output.
SELECT notify_ext.committed_seq() AS base \gset
CREATE VIEW ev AS
SELECT seq - :base AS n, stream, operation, resource_id, resource_variant, resource_path,
       actor = current_user AS by_me, payload, changed
  FROM notify_ext.events WHERE seq > :base;

-- Registered resources
SELECT notify_ext.register_resource('org', 'project');
SELECT notify_ext.register_resource('team', 'collection', 'org');
SELECT notify_ext.resource_path('team');
SELECT regress_try($$SELECT notify_ext.register_resource('', 'project')$$);
SELECT regress_try($$SELECT notify_ext.register_resource('x', '')$$);
SELECT regress_try($$SELECT notify_ext.register_resource('x', 'dataset', 'nowhere')$$);
SELECT regress_try($$SELECT notify_ext.register_resource('x', 'dataset', '')$$);
SELECT regress_try($$SELECT notify_ext.register_resource('org', 'project', 'team')$$);
SELECT regress_try($$SELECT notify_ext.resource_path('nowhere')$$);
SELECT count(*) AS registered FROM notify_ext.resources WHERE id IN ('x', 'org', 'team');

-- Without rights on them, a plain role cannot move or hang things under
-- others' resources; a new root is anyone's to create.
CREATE ROLE regress_events_plain;
SET ROLE regress_events_plain;
SELECT regress_try($$SELECT notify_ext.register_resource('team', 'collection', NULL)$$);
SELECT regress_try($$SELECT notify_ext.register_resource('mine', 'dataset', 'team')$$);
SELECT notify_ext.register_resource('my-root', 'project');
RESET ROLE;
SELECT id, parent_id, created_by FROM notify_ext.resources WHERE id IN ('team', 'mine', 'my-root') ORDER BY id;

-- A tree of tracked tables
CREATE TABLE projects (id text PRIMARY KEY, name text);
CREATE TABLE collections (id text PRIMARY KEY, project_id text REFERENCES projects ON DELETE CASCADE, name text);
CREATE TABLE datasets (id text PRIMARY KEY, collection_id text, name text, size int);
CREATE TABLE objects (object_id bigint PRIMARY KEY, dataset text, body text);
SELECT notify_ext.track('projects', 'project');
SELECT notify_ext.track('collections', 'collection', parent_column => 'project_id');
SELECT notify_ext.track('datasets', 'dataset', parent_column => 'collection_id', stream => 'catalog');
SELECT notify_ext.track('objects', 'object', 'object_id', 'dataset');
SELECT relation, variant, id_column, parent_column, stream, id_type
  FROM notify_ext.tracked_tables ORDER BY relation::text;

INSERT INTO projects VALUES ('p1', 'first'), ('p2', 'second');
INSERT INTO collections VALUES ('c1', 'p1', 'one');
INSERT INTO datasets VALUES ('d1', 'c1', 'data', 10);
INSERT INTO objects VALUES (1, 'd1', 'hello');
SELECT notify_ext.resource_path('1');
SELECT notify_ext.resource_path('d1');
SELECT n, stream, operation, resource_id, resource_variant, resource_path, by_me, payload FROM ev ORDER BY n;

-- Updates record what changed; an update that changes nothing records nothing.
UPDATE datasets SET name = 'renamed' WHERE id = 'd1';
UPDATE datasets SET name = 'renamed' WHERE id = 'd1';
UPDATE datasets SET size = size + 1, name = 'again' WHERE id = 'd1';
SELECT n, operation, changed, payload FROM ev WHERE resource_id = 'd1' ORDER BY n;

-- Moving a collection moves its subtree; old events keep their path.
UPDATE collections SET project_id = 'p2' WHERE id = 'c1';
SELECT notify_ext.resource_path('1');
INSERT INTO objects VALUES (2, 'd1', 'after the move');
SELECT n, operation, resource_path FROM ev WHERE resource_variant = 'object' ORDER BY n;

-- Deleting leaves events with their path.
DELETE FROM objects WHERE object_id = 1;
SELECT n, operation, resource_path, payload FROM ev WHERE resource_id = '1' ORDER BY n;
SELECT regress_try($$SELECT notify_ext.resource_path('1')$$);

-- Bad rows are refused and record nothing.
SELECT regress_try($$INSERT INTO datasets VALUES ('d9', 'no-such-collection', 'x', 1)$$);
CREATE TABLE loose (id text, v int);
SELECT notify_ext.track('loose', 'loose');
SELECT regress_try($$INSERT INTO loose VALUES (NULL, 1)$$);
INSERT INTO loose VALUES ('l1', 1);
SELECT regress_try($$UPDATE loose SET id = NULL$$);
SELECT count(*) AS loose_events FROM ev WHERE stream = 'public.loose';
SELECT regress_try($$INSERT INTO datasets VALUES ('d8', 'd8', 'x', 1)$$);
SELECT regress_try($$UPDATE objects SET dataset = 'gone' WHERE object_id = 2$$);
SELECT count(*) AS datasets FROM datasets;

-- A registered resource can be a tracked row's parent.
INSERT INTO collections VALUES ('c2', NULL, 'root collection');
INSERT INTO datasets VALUES ('d2', 'team', 'under a registered resource', 1);
SELECT notify_ext.resource_path('d2');

-- Rolled-back work, whole or partial, records nothing.
BEGIN;
INSERT INTO projects VALUES ('p3', 'kept');
SAVEPOINT s;
INSERT INTO projects VALUES ('p4', 'rolled back');
ROLLBACK TO SAVEPOINT s;
INSERT INTO projects VALUES ('p5', 'kept too');
COMMIT;
BEGIN;
INSERT INTO projects VALUES ('p6', 'never');
ROLLBACK;
SELECT resource_id FROM ev WHERE stream = 'public.projects' ORDER BY n;

-- Within a transaction, events keep the order of the changes.
BEGIN;
INSERT INTO objects VALUES (10, 'd1', 'a');
SELECT notify_ext.publish('jobs', 'JOB_QUEUED', '{"job": 10}');
UPDATE objects SET body = 'b' WHERE object_id = 10;
SELECT notify_ext.publish('jobs', 'JOB_PROCESSED', '{"job": 10, "status": "ok"}', 'd1');
COMMIT;
SELECT n - min(n) OVER () AS k, stream, operation, resource_id, resource_path, payload
  FROM ev WHERE payload->>'job' = '10' OR resource_id = '10' ORDER BY n;

-- publish refusals
SELECT regress_try($$SELECT notify_ext.publish('', 'x')$$);
SELECT regress_try($$SELECT notify_ext.publish('jobs', '')$$);
SELECT regress_try($$SELECT notify_ext.publish('jobs', NULL)$$);
SELECT regress_try($$SELECT notify_ext.publish('jobs', 'x', '{}', 'nowhere')$$);
SELECT notify_ext.publish('jobs', 'NO_PAYLOAD', NULL);
SELECT payload FROM ev WHERE operation = 'NO_PAYLOAD';

-- The message JSON
SELECT message - 'occurred_at' - 'seq' - 'actor' AS message,
       message->>'occurred_at' ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$' AS utc_time,
       (message->>'seq')::bigint = e.seq AS seq_matches
  FROM notify_ext.events e WHERE seq > :base AND operation = 'dataset.update' ORDER BY seq LIMIT 1;

-- Payloads are written the way to_json() writes rows.
CREATE TYPE mood AS ENUM ('calm', 'busy');
CREATE TABLE kinds (
    id int PRIMARY KEY, i2 smallint, i8 bigint, f4 real, f8 double precision, num numeric,
    ok boolean, ch char(3), vc varchar, nm name, u uuid, d date, t time, ts timestamp,
    tstz timestamptz, j json, jb jsonb, arr int[], m mood, r int4range, note text, iv interval,
    b bytea);
SELECT notify_ext.track('kinds', 'kind');
SET timezone = 'UTC';
INSERT INTO kinds VALUES (1, -2, 9007199254740993, 1.5, 'Infinity', 'NaN', true, 'ab', 'q"uote\', 'nm',
    'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2026-01-02', '03:04:05', '2026-01-02 03:04:05.5',
    '2026-01-02 03:04:05+02', '{"a": [1, 2]}', '{"b": null}', '{1,NULL,3}', 'busy', '[1,5)',
    E'line\nbreak\ttab', '1 day 2 hours', '\x00ff');
INSERT INTO kinds (id) VALUES (2);
SELECT k.payload::jsonb = to_jsonb(x) AS same_as_to_jsonb, k.payload
  FROM ev k JOIN kinds x ON k.resource_id = x.id::text WHERE k.stream = 'public.kinds' ORDER BY k.n;

-- Dates and times are written in the session's time zone, also when the
-- same value comes again after the time zone changed.
CREATE TABLE stamps (id bigint PRIMARY KEY, label text, at timestamptz);
SELECT notify_ext.track('stamps', 'stamp');
INSERT INTO stamps VALUES (1, 'plain', '2026-01-02 03:04:05+00'), (2, 'café "q" \ end', '2026-01-02 03:04:05+00');
SET timezone = 'Asia/Tokyo';
INSERT INTO stamps VALUES (3, E'tab\there', '2026-01-02 03:04:05+00');
SET timezone = 'UTC';
INSERT INTO stamps VALUES (4, '', '2026-01-02 03:04:05+00');
SELECT resource_id, payload,
       CASE WHEN s.id <> 3 THEN payload::jsonb = to_jsonb(s) END AS same_as_to_jsonb_in_utc
  FROM ev k JOIN stamps s ON k.resource_id = s.id::text WHERE k.stream = 'public.stamps' ORDER BY k.n;
DROP TABLE stamps;

-- TRUNCATE records one event for the table.
TRUNCATE kinds;
SELECT operation, resource_id, payload FROM ev WHERE stream = 'public.kinds' ORDER BY n DESC LIMIT 1;

-- COPY and ALTER TABLE keep working.
COPY objects (object_id, dataset, body) FROM stdin;
20	d1	copied one
21	d1	copied two
\.
ALTER TABLE objects ADD COLUMN extra int DEFAULT 7;
INSERT INTO objects VALUES (22, 'd1', 'wider', 8);
ALTER TABLE objects DROP COLUMN body;
INSERT INTO objects VALUES (23, 'd1', 9);
UPDATE objects SET extra = 10 WHERE object_id = 22;
SELECT operation, resource_id, payload, changed FROM ev
 WHERE resource_variant = 'object' AND resource_id::int >= 20 ORDER BY n;

-- A transaction larger than notify_ext.event_buffer writes ahead and renumbers.
SET notify_ext.event_buffer = '64kB';
BEGIN;
INSERT INTO objects SELECT g, 'd1', g FROM generate_series(1000, 2999) g;
SAVEPOINT s;
INSERT INTO objects SELECT g, 'd1', g FROM generate_series(3000, 3999) g;
ROLLBACK TO SAVEPOINT s;
INSERT INTO objects SELECT g, 'd1', g FROM generate_series(4000, 4999) g;
COMMIT;
RESET notify_ext.event_buffer;
SELECT count(*) AS events, count(DISTINCT n) AS distinct_seqs,
       bool_and(n > 0) AS all_numbered,
       count(*) FILTER (WHERE resource_id::int BETWEEN 3000 AND 3999) AS rolled_back
  FROM ev WHERE resource_variant = 'object' AND resource_id::int >= 1000;
-- seq order is the order of the rows
SELECT bool_and(prev < id) AS in_order FROM (
    SELECT resource_id::int AS id, lag(resource_id::int) OVER (ORDER BY n) AS prev
      FROM ev WHERE resource_variant = 'object' AND resource_id::int >= 1000) s;
SELECT count(*) AS negative_seqs FROM notify_ext.event_log WHERE seq < 0;

-- track refusals leave nothing installed.
CREATE VIEW a_view AS SELECT 1 AS id;
CREATE TABLE no_id (key text);
SELECT regress_try($$SELECT notify_ext.track('a_view', 'v')$$);
SELECT regress_try($$SELECT notify_ext.track('pg_class', 'catalog', 'oid')$$);
SELECT regress_try($$SELECT notify_ext.track('notify_ext.resources', 'resource')$$);
SELECT regress_try($$SELECT notify_ext.track('no_id', 'thing')$$);
SELECT regress_try($$SELECT notify_ext.track('no_id', '', 'key')$$);
SELECT regress_try($$SELECT notify_ext.track('no_id', 'thing', 'key', 'parent')$$);
SELECT regress_try($$SELECT notify_ext.track('no_id', 'thing', 'key', 'key')$$);
SELECT regress_try($$SELECT notify_ext.track('no_id', 'thing', 'key', NULL, '')$$);
SELECT regress_try($$SELECT notify_ext.track('no_such_table', 'thing')$$);
SELECT count(*) AS triggers FROM pg_trigger WHERE tgrelid IN ('a_view'::regclass, 'no_id'::regclass);

-- untrack
SELECT notify_ext.untrack('objects');
INSERT INTO objects VALUES (30, 'd1', 1);
SELECT count(*) AS untracked_events FROM ev WHERE resource_id = '30';
SELECT regress_try($$SELECT notify_ext.untrack('objects')$$);
SELECT regress_try($$SELECT notify_ext.resource_path('20')$$);

-- Tracking again replaces the configuration.
SELECT notify_ext.track('datasets', 'table', parent_column => 'collection_id');
UPDATE datasets SET size = 99 WHERE id = 'd1';
SELECT operation, stream FROM ev ORDER BY n DESC LIMIT 1;

-- DROP TABLE drops the tracking with it.
DROP TABLE kinds;
SELECT count(*) AS tracked_kinds FROM notify_ext.tracked_tables WHERE relation::text = 'kinds';

-- PREPARE TRANSACTION cannot carry events.
BEGIN;
INSERT INTO projects VALUES ('p7', 'prepared');
PREPARE TRANSACTION 'with_events';
SELECT count(*) AS prepared FROM pg_prepared_xacts WHERE gid = 'with_events';

-- Publishing about a resource takes APPEND on it; its creator has ADMIN.
-- Publishing about no resource is a service call.
SET ROLE regress_events_plain;
SELECT regress_try($$SELECT notify_ext.publish('jobs', 'JOB_DONE', '{}', 'team')$$);
SELECT notify_ext.publish('jobs', 'JOB_DONE', '{}', 'my-root') AS position;
SELECT regress_try($$SELECT notify_ext.publish('jobs', 'JOB_DONE', '{"no": "resource"}')$$);
SELECT regress_try($$SELECT notify_ext.publish('jobs', 'JOB_DONE', '{}', '')$$);
RESET ROLE;
SELECT notify_ext.grant_permission('regress_events_plain', 'team', 'APPEND');
SET ROLE regress_events_plain;
SELECT notify_ext.publish('jobs', 'JOB_DONE', '{}', 'team') AS position;
-- The events view is for service callers; others see no rows.
SELECT count(*) AS events_seen_by_plain_role FROM notify_ext.events;
RESET ROLE;
SELECT count(*) > 0 AS events_seen_by_superuser FROM notify_ext.events;
SELECT resource_id, payload FROM ev WHERE operation = 'JOB_DONE' ORDER BY n;
DELETE FROM notify_ext.notifications WHERE recipient = 'regress_events_plain';
DELETE FROM notify_ext.permissions WHERE principal = 'regress_events_plain';
DELETE FROM notify_ext.resources WHERE id = 'my-root';
DROP ROLE regress_events_plain;

DROP VIEW ev;
DROP TABLE objects, datasets, collections, projects, no_id, loose;
DROP VIEW a_view;
DROP TYPE mood;
DELETE FROM notify_ext.resources WHERE id IN ('org', 'team');
