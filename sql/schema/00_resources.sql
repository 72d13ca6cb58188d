-- Fails with 55000 unless notify_ext is in shared_preload_libraries:
-- without it events cannot be numbered, and every write to a tracked table
-- would fail later instead.
CREATE FUNCTION notify_ext._require_preload() RETURNS void
    LANGUAGE c AS 'MODULE_PATHNAME', 'notify_ext_require_preload';
REVOKE ALL ON FUNCTION notify_ext._require_preload() FROM PUBLIC;
SELECT notify_ext._require_preload();

REVOKE ALL ON SCHEMA notify_ext FROM PUBLIC;
GRANT USAGE ON SCHEMA notify_ext TO PUBLIC;

--------------------------------------------------------------------------
-- Resources
--
-- A resource is either registered explicitly (this table) or is a row of a
-- tracked table, found through the table itself.  Paths are never stored,
-- they are walked from parent ids, so moving a resource moves its subtree.
--------------------------------------------------------------------------

CREATE TABLE notify_ext.resources (
    id          text PRIMARY KEY CHECK (id <> ''),
    variant     text NOT NULL CHECK (variant <> ''),
    parent_id   text CHECK (parent_id <> id),
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX resources_parent_idx ON notify_ext.resources (parent_id);
REVOKE ALL ON notify_ext.resources FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('notify_ext.resources', '');
