-- CREATE EXTENSION in a database that has tables and rows already, and
-- DROP EXTENSION with tracked tables: the triggers go, the tables stay.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
DROP EXTENSION notify_ext;
CREATE TABLE existing (id text PRIMARY KEY, parent text, note text);
INSERT INTO existing VALUES ('root', NULL, 'was here before'), ('leaf', 'root', 'so was this');
CREATE EXTENSION notify_ext;
SELECT notify_ext.track('existing', 'thing', parent_column => 'parent');
SELECT notify_ext.resource_path('leaf');
INSERT INTO existing VALUES ('new', 'leaf', 'added after tracking');
SELECT operation, resource_path FROM notify_ext.events WHERE stream = 'public.existing';
-- A plain DROP EXTENSION names the triggers that depend on it.
\set VERBOSITY terse
DROP EXTENSION notify_ext;
\set VERBOSITY default
DROP EXTENSION notify_ext CASCADE;
SELECT count(*) AS triggers_left FROM pg_trigger WHERE tgrelid = 'existing'::regclass;
SELECT id, note FROM existing ORDER BY id;
INSERT INTO existing VALUES ('after', NULL, 'no extension, no trigger');
DROP TABLE existing;
CREATE EXTENSION notify_ext;
