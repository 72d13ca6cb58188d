-- The schema must be the extension's own: one that someone else made, or
-- holding someone else's objects, could give them objects of theirs that
-- the extension's code would find.
DO $$
DECLARE
    v_owner name;
BEGIN
    SELECT pg_catalog.pg_get_userbyid(n.nspowner) INTO v_owner
      FROM pg_catalog.pg_namespace n WHERE n.nspname OPERATOR(pg_catalog.=) 'notify_ext';
    IF v_owner OPERATOR(pg_catalog.<>) CURRENT_USER
       OR EXISTS (SELECT FROM pg_catalog.pg_class c
                   WHERE c.relnamespace OPERATOR(pg_catalog.=) 'notify_ext'::pg_catalog.regnamespace
                     AND c.relowner OPERATOR(pg_catalog.<>) (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER))
       OR EXISTS (SELECT FROM pg_catalog.pg_proc p
                   WHERE p.pronamespace OPERATOR(pg_catalog.=) 'notify_ext'::pg_catalog.regnamespace
                     AND p.proowner OPERATOR(pg_catalog.<>) (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER))
       OR EXISTS (SELECT FROM pg_catalog.pg_type t
                   WHERE t.typnamespace OPERATOR(pg_catalog.=) 'notify_ext'::pg_catalog.regnamespace
                     AND t.typowner OPERATOR(pg_catalog.<>) (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER))
       OR EXISTS (SELECT FROM pg_catalog.pg_operator o
                   WHERE o.oprnamespace OPERATOR(pg_catalog.=) 'notify_ext'::pg_catalog.regnamespace
                     AND o.oprowner OPERATOR(pg_catalog.<>) (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER)) THEN
        RAISE EXCEPTION 'schema "notify_ext" exists already (owned by role "%")', v_owner
            USING ERRCODE = 'duplicate_schema',
                  HINT = 'notify_ext creates its schema itself: drop the schema, or move what it holds elsewhere, then CREATE EXTENSION again.';
    END IF;
END
$$;

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
