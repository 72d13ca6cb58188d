-- Resources and tracking under the trust rules of the contract (section 8):
-- which tables track() accepts and who may call it, one namespace for
-- registered and tracked ids, a parent and its child in one statement or
-- one COPY, cycles, and column names outside ASCII.
\set SHOW_CONTEXT never
SET client_min_messages = warning;

CREATE ROLE regress_res_owner;
CREATE ROLE regress_res_app;
CREATE ROLE regress_res_svc;
CREATE ROLE regress_res_plain;
GRANT regress_res_app TO regress_res_svc;
SET notify_ext.app_role = 'regress_res_app';

-- track() and untrack() are service calls.
CREATE TABLE res_items (id text PRIMARY KEY, parent text);
ALTER TABLE res_items OWNER TO regress_res_owner;
SET ROLE regress_res_plain;
SELECT regress_try($$SELECT notify_ext.track('res_items', 'item')$$);
SELECT regress_try($$SELECT notify_ext.untrack('res_items')$$);
-- Nobody but track() may install the capture trigger.
CREATE TEMP TABLE res_own (id text PRIMARY KEY);
SELECT regress_try($$CREATE TRIGGER notify_ext_capture AFTER INSERT ON res_own FOR EACH ROW
                     EXECUTE FUNCTION notify_ext.capture('x', 'id', '', '')$$);
DROP TABLE res_own;
RESET ROLE;

-- A service caller needs the right to create triggers on the table.
SET ROLE regress_res_svc;
SELECT regress_try($$SELECT notify_ext.track('res_items', 'item', parent_column => 'parent')$$);
RESET ROLE;
GRANT TRIGGER ON res_items TO regress_res_svc;
SET ROLE regress_res_svc;
SELECT notify_ext.track('res_items', 'item', parent_column => 'parent');
RESET ROLE;
SELECT relation, variant, id_column, parent_column, stream, id_type
  FROM notify_ext.tracked_tables WHERE relation = 'res_items'::regclass;

-- What cannot be tracked, whoever asks.
CREATE TEMP TABLE res_temp (id text PRIMARY KEY);
CREATE VIEW res_view AS SELECT 'a'::text AS id;
CREATE MATERIALIZED VIEW res_matview AS SELECT 'a'::text AS id;
CREATE FOREIGN DATA WRAPPER res_fdw;
CREATE SERVER res_server FOREIGN DATA WRAPPER res_fdw;
CREATE FOREIGN TABLE res_foreign (id text) SERVER res_server;
CREATE SEQUENCE res_seq;
CREATE TABLE res_points (id point, parent text);
CREATE EXTENSION pgq;
SELECT regress_try($$SELECT notify_ext.track('pg_temp.res_temp', 'x')$$);
SELECT regress_try($$SELECT notify_ext.track('res_view', 'x')$$);
SELECT regress_try($$SELECT notify_ext.track('res_matview', 'x')$$);
SELECT regress_try($$SELECT notify_ext.track('res_foreign', 'x')$$);
SELECT regress_try($$SELECT notify_ext.track('res_seq', 'x')$$);
SELECT regress_try($$SELECT notify_ext.track('pg_catalog.pg_class', 'x', 'oid')$$);
SELECT regress_try($$SELECT notify_ext.track('information_schema.sql_features', 'x', 'feature_id')$$);
SELECT regress_try($$SELECT notify_ext.track('notify_ext.resources', 'x')$$);
SELECT regress_try($$SELECT notify_ext.track('pgq.queue', 'x', 'queue_id')$$);
SELECT regress_try($$SELECT notify_ext.track(NULL, 'x')$$);
SELECT regress_try($$SELECT notify_ext.track('res_points', 'x')$$);
SELECT regress_try($$SELECT notify_ext.untrack('res_view')$$);
DROP EXTENSION pgq;

-- One namespace: a tracked row's id cannot be registered, by anyone.
INSERT INTO res_items VALUES ('i1', NULL);
SELECT regress_try($$SELECT notify_ext.register_resource('i1', 'project')$$);
SET ROLE regress_res_plain;
SELECT regress_try($$SELECT notify_ext.register_resource('i1', 'project')$$);
SELECT notify_ext.register_resource('plain_root', 'project');
RESET ROLE;
SELECT notify_ext.resource_path('i1');

-- A parent and its child in one statement, and a tree in one COPY.
CREATE TABLE res_folders (id text PRIMARY KEY, parent text);
SELECT notify_ext.track('res_folders', 'folder', parent_column => 'parent');
SELECT notify_ext.register_resource('p1', 'project');
INSERT INTO res_folders VALUES ('f1', 'p1'), ('f2', 'f1'), ('f3', 'f2');
SELECT notify_ext.resource_path('f3');
COPY res_folders FROM stdin;
g1	p1
g2	g1
g3	g2
g4	g1
\.
SELECT notify_ext.resource_path('g3'), notify_ext.resource_path('g4');
SELECT resource_id, resource_path FROM notify_ext.events
 WHERE stream = 'public.res_folders' AND resource_id LIKE 'g%' ORDER BY seq;
-- Rows are resources once their statement has run, whatever their order.
INSERT INTO res_folders VALUES ('h2', 'h1'), ('h1', 'p1');
SELECT notify_ext.resource_path('h2');
-- A parent that is nowhere is refused, and nothing of the statement stays.
SELECT regress_try($$INSERT INTO res_folders VALUES ('h3', 'h1'), ('h4', 'nowhere')$$);
SELECT count(*) AS h_rows FROM res_folders WHERE id IN ('h3', 'h4');
-- A move that would make a resource its own ancestor is refused.
SELECT regress_try($$UPDATE res_folders SET parent = 'g3' WHERE id = 'g1'$$);
SELECT notify_ext.resource_path('g3');
-- A parent rolled back with its transaction is no resource afterwards.
BEGIN;
INSERT INTO res_folders VALUES ('k1', 'p1'), ('k2', 'k1');
ROLLBACK;
SELECT regress_try($$INSERT INTO res_folders VALUES ('k3', 'k1')$$);
SELECT regress_try($$SELECT notify_ext.resource_path('k1')$$);

-- Ids of any type with equality: the id is read as a value of it.
CREATE TABLE res_numbered (n bigint PRIMARY KEY, folder text);
SELECT notify_ext.track('res_numbered', 'numbered', 'n', 'folder');
INSERT INTO res_numbered VALUES (42, 'g2');
SELECT notify_ext.resource_path('42');
SELECT regress_try($$SELECT notify_ext.resource_path('forty-two')$$);

-- Column and table names outside ASCII.
CREATE TABLE "Ördner" ("schlüssel" text PRIMARY KEY, "übergeordnet" text);
SELECT notify_ext.track('"Ördner"', 'ordner', 'schlüssel', 'übergeordnet');
INSERT INTO "Ördner" VALUES ('ö1', 'p1'), ('ö2', 'ö1');
SELECT notify_ext.resource_path('ö2');
SELECT relation, id_column, parent_column, stream, id_type
  FROM notify_ext.tracked_tables WHERE relation = '"Ördner"'::regclass;

-- untrack() forgets the table's rows as resources.
SELECT notify_ext.untrack('res_numbered');
SELECT regress_try($$SELECT notify_ext.resource_path('42')$$);

RESET notify_ext.app_role;
DROP TABLE res_items, res_folders, res_numbered, "Ördner", res_points;
DROP VIEW res_view;
DROP MATERIALIZED VIEW res_matview;
DROP FOREIGN TABLE res_foreign;
DROP SERVER res_server;
DROP FOREIGN DATA WRAPPER res_fdw;
DROP SEQUENCE res_seq;
DELETE FROM notify_ext.resources WHERE id IN ('plain_root', 'p1');
DELETE FROM notify_ext.permissions WHERE principal LIKE 'regress_res_%';
DELETE FROM notify_ext.notifications WHERE recipient LIKE 'regress_res_%';
DROP ROLE regress_res_owner, regress_res_app, regress_res_svc, regress_res_plain;
