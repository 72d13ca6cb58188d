--------------------------------------------------------------------------
-- Resources: the capture trigger, tracked tables and resource paths
--------------------------------------------------------------------------

-- The C trigger every tracked table carries.  Its arguments hold the
-- tracking configuration: variant, id column, parent column, stream.  Only
-- track() installs it: nobody else may name it in CREATE TRIGGER.
CREATE OR REPLACE FUNCTION notify_ext.capture() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'notify_ext_capture';
REVOKE ALL ON FUNCTION notify_ext.capture() FROM PUBLIC;

-- Internal: the tracked tables, read from the capture triggers themselves.
CREATE OR REPLACE FUNCTION notify_ext._tracked_tables()
    RETURNS TABLE (relation regclass, variant text, id_column name, parent_column name,
                   stream text, id_type regtype)
    LANGUAGE c STABLE ROWS 10 AS 'MODULE_PATHNAME', 'notify_ext_tracked_tables';
REVOKE ALL ON FUNCTION notify_ext._tracked_tables() FROM PUBLIC;

-- Tracked tables, read from the triggers themselves so that nothing can
-- drift: dropping a table drops its trigger and its entry here.
CREATE OR REPLACE VIEW notify_ext.tracked_tables AS
SELECT t.relation, t.variant, t.id_column, t.parent_column, t.stream, t.id_type
  FROM notify_ext._tracked_tables() t;

-- Internal: drop the sessions' cached resource paths when this transaction commits.
CREATE OR REPLACE FUNCTION notify_ext._resources_changed() RETURNS void
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'notify_ext_resources_changed';
REVOKE ALL ON FUNCTION notify_ext._resources_changed() FROM PUBLIC;

-- Internal: find one resource (in C, src/resource_path.c).  Registered
-- resources come first; among tracked tables the oldest-tracked table wins.
-- All NULL when the id is unknown.  Tracked tables are read as their
-- owners, in a security-restricted operation.
CREATE OR REPLACE FUNCTION notify_ext._find_resource(p_id text,
        OUT variant text, OUT parent_id text, OUT relation regclass)
    RETURNS record
    LANGUAGE c STABLE STRICT AS 'MODULE_PATHNAME', 'notify_ext_find_resource';

-- Internal: the same, among the rows of tracked tables only.
CREATE OR REPLACE FUNCTION notify_ext._find_tracked_resource(p_id text,
        OUT variant text, OUT parent_id text, OUT relation regclass)
    RETURNS record
    LANGUAGE c STABLE STRICT AS 'MODULE_PATHNAME', 'notify_ext_find_tracked_resource';

-- Internal: the path of a resource, root first, or NULL when unknown.  A
-- parent that no longer exists ends the walk (it stays in the path: events
-- and grants may still name it).  22000 when the parents form a cycle.
CREATE OR REPLACE FUNCTION notify_ext._resource_path(p_id text) RETURNS text[]
    LANGUAGE c STABLE STRICT AS 'MODULE_PATHNAME', 'notify_ext_resource_path';

-- Internal: variant and path of a resource; no row when unknown.
CREATE OR REPLACE FUNCTION notify_ext._resource_info(p_id text, OUT variant text, OUT path text[])
    RETURNS SETOF record
    LANGUAGE sql STABLE STRICT
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT f.variant, notify_ext._resource_path(p_id)
      FROM notify_ext._find_resource(p_id) f
     WHERE f.variant IS NOT NULL
$$;

REVOKE ALL ON FUNCTION notify_ext._find_resource(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION notify_ext._find_tracked_resource(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION notify_ext._resource_path(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION notify_ext._resource_info(text) FROM PUBLIC;

-- Internal: the path of a resource, or 42704.
CREATE OR REPLACE FUNCTION notify_ext._require_resource(resource_id text) RETURNS text[]
    LANGUAGE plpgsql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_path text[];
BEGIN
    IF resource_id IS NULL OR resource_id = '' THEN
        RAISE EXCEPTION 'resource id must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_path := notify_ext._resource_path(resource_id);
    IF v_path IS NULL THEN
        RAISE EXCEPTION 'resource "%" does not exist', resource_id
            USING ERRCODE = 'undefined_object',
                  HINT = 'Register it with notify_ext.register_resource() or track its table with notify_ext.track().';
    END IF;
    RETURN v_path;
END
$$;
REVOKE ALL ON FUNCTION notify_ext._require_resource(text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION notify_ext.resource_path(id text) RETURNS text[]
    LANGUAGE sql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT notify_ext._require_resource(id)
$$;

CREATE OR REPLACE FUNCTION notify_ext.register_resource(id text, variant text, parent_id text DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_parent_path text[];
    v_old_parent text;
    v_created boolean;
    v_tracked regclass;
BEGIN
    IF id IS NULL OR id = '' THEN
        RAISE EXCEPTION 'resource id must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF variant IS NULL OR variant = '' THEN
        RAISE EXCEPTION 'variant of resource "%" must not be empty', id
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF parent_id = '' THEN
        RAISE EXCEPTION 'parent id of resource "%" must not be empty', id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass NULL for a root resource.';
    END IF;
    PERFORM notify_ext._check_name_length(id, 'resource id');
    PERFORM notify_ext._check_name_length(variant, 'variant');
    -- One namespace: the id of a tracked row is taken.
    SELECT f.relation INTO v_tracked FROM notify_ext._find_tracked_resource(id) f;
    IF v_tracked IS NOT NULL THEN
        RAISE EXCEPTION 'resource id "%" is taken by a row of tracked table %', id, v_tracked
            USING ERRCODE = 'unique_violation',
                  HINT = 'Rows of tracked tables are resources already; register another id.';
    END IF;
    -- Serialize concurrent moves so that two of them cannot form a cycle.
    PERFORM pg_catalog.pg_advisory_xact_lock('notify_ext.resources'::regclass::oid::int, 0);
    IF parent_id IS NOT NULL THEN
        v_parent_path := notify_ext._resource_path(parent_id);
        IF v_parent_path IS NULL THEN
            RAISE EXCEPTION 'parent resource "%" of "%" does not exist', parent_id, id
                USING ERRCODE = 'undefined_object',
                      HINT = 'Register the parent first.';
        END IF;
        IF id = ANY (v_parent_path) THEN
            RAISE EXCEPTION 'cannot move resource "%" under "%": "%" is inside its subtree',
                            id, parent_id, parent_id
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
    -- Changing a resource takes ADMIN on it; hanging one under a parent
    -- takes APPEND on the parent.  New roots are anyone's to create.
    IF NOT notify_ext._is_service_caller() THEN
        SELECT r.parent_id INTO v_old_parent FROM notify_ext.resources r
         WHERE r.id = register_resource.id;
        IF FOUND THEN
            PERFORM notify_ext._require_admin(id, 'changing a registered resource');
        END IF;
        IF parent_id IS NOT NULL AND (NOT FOUND OR v_old_parent IS DISTINCT FROM parent_id)
           AND NOT notify_ext.has_permission(notify_ext.current_principal(), parent_id, 'APPEND') THEN
            RAISE EXCEPTION 'registering "%" under "%" needs APPEND on "%": principal "%" does not have it',
                            id, parent_id, parent_id, notify_ext.current_principal()
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'Ask an ADMIN of the parent (notify_ext.request_access()) or use a service role.';
        END IF;
    END IF;
    INSERT INTO notify_ext.resources AS r (id, variant, parent_id, created_by)
    VALUES (register_resource.id, register_resource.variant, register_resource.parent_id,
            notify_ext.current_principal())
    ON CONFLICT ON CONSTRAINT resources_pkey DO UPDATE
       SET variant = excluded.variant, parent_id = excluded.parent_id
     WHERE (r.variant, r.parent_id) IS DISTINCT FROM (excluded.variant, excluded.parent_id)
    RETURNING (xmax = 0) INTO v_created;
    IF FOUND THEN
        PERFORM notify_ext._resources_changed();
    END IF;
    -- Whoever creates a resource may administer it (service roles need no grant).
    IF v_created AND NOT notify_ext._is_service_caller() THEN
        INSERT INTO notify_ext.permissions (principal, resource_id, level, granted_by)
        VALUES (notify_ext.current_principal(), register_resource.id, 4, notify_ext.current_principal())
        ON CONFLICT (principal, resource_id) DO UPDATE SET level = 4;
    END IF;
END
$$;
