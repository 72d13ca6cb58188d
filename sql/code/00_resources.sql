--------------------------------------------------------------------------
-- Resources: the capture trigger, tracked tables and resource paths
--------------------------------------------------------------------------

-- The C trigger every tracked table carries.  Its arguments hold the
-- tracking configuration: variant, id column, parent column, stream.
CREATE OR REPLACE FUNCTION notify_ext.capture() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'notify_ext_capture';

-- Tracked tables, read from the triggers themselves so that nothing can
-- drift: dropping a table drops its trigger and its entry here.
CREATE OR REPLACE VIEW notify_ext.tracked_tables AS
SELECT t.tgrelid::regclass                                    AS relation,
       a[1]                                                   AS variant,
       a[2]::name                                             AS id_column,
       NULLIF(a[3], '')::name                                 AS parent_column,
       COALESCE(NULLIF(a[4], ''),
                format('%s.%s', n.nspname, c.relname))        AS stream,
       (SELECT atttypid::regtype FROM pg_catalog.pg_attribute
         WHERE attrelid = t.tgrelid AND attname = a[2]
           AND NOT attisdropped)                              AS id_type
  FROM pg_catalog.pg_trigger t
  JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 CROSS JOIN LATERAL (SELECT pg_catalog.string_to_array(
            pg_catalog.rtrim(pg_catalog.encode(t.tgargs, 'escape'), '\000'),
            '\000') AS a) args
 WHERE t.tgfoid = 'notify_ext.capture()'::regprocedure
   AND t.tgname = 'notify_ext_capture'
   AND t.tgparentid = 0;

-- Internal: drop the sessions' cached resource paths when this transaction commits.
CREATE OR REPLACE FUNCTION notify_ext._resources_changed() RETURNS void
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'notify_ext_resources_changed';
REVOKE ALL ON FUNCTION notify_ext._resources_changed() FROM PUBLIC;

-- Internal: find one resource.  Registered resources win over tracked rows;
-- among tracked tables the oldest-tracked table wins.  Returns no row when
-- the id is unknown.
CREATE OR REPLACE FUNCTION notify_ext._find_resource(p_id text,
        OUT variant text, OUT parent_id text, OUT relation regclass)
    RETURNS record
    LANGUAGE plpgsql STABLE STRICT
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t record;
    v_parent text;
    v_found boolean;
BEGIN
    SELECT r.variant, r.parent_id INTO variant, parent_id
      FROM notify_ext.resources r WHERE r.id = p_id;
    IF FOUND THEN
        RETURN;
    END IF;
    FOR t IN SELECT tt.* FROM notify_ext.tracked_tables tt ORDER BY tt.relation::oid LOOP
        CONTINUE WHEN t.id_type IS NULL;
        BEGIN
            EXECUTE format('SELECT true, %s FROM %s WHERE %I = $1::%s LIMIT 1',
                           CASE WHEN t.parent_column IS NULL THEN 'NULL::text'
                                ELSE format('%I::text', t.parent_column) END,
                           t.relation, t.id_column, t.id_type)
               INTO v_found, v_parent USING p_id;
        EXCEPTION WHEN data_exception THEN
            -- The id cannot be a value of this table's id type.
            v_found := false;
        END;
        IF v_found THEN
            variant := t.variant;
            parent_id := v_parent;
            relation := t.relation;
            RETURN;
        END IF;
    END LOOP;
    variant := NULL;
    parent_id := NULL;
    relation := NULL;
END
$$;

-- Internal: the path of a resource, root first, or NULL when unknown.  A
-- parent that no longer exists ends the walk (it stays in the path: events
-- and grants may still name it).
CREATE OR REPLACE FUNCTION notify_ext._resource_path(p_id text) RETURNS text[]
    LANGUAGE plpgsql STABLE STRICT
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_path text[] := ARRAY[p_id];
    v_cur text := p_id;
    r record;
BEGIN
    r := notify_ext._find_resource(v_cur);
    IF r.variant IS NULL THEN
        RETURN NULL;
    END IF;
    LOOP
        EXIT WHEN r.parent_id IS NULL;
        IF r.parent_id = ANY (v_path) THEN
            RAISE EXCEPTION 'resource "%" is its own ancestor', r.parent_id
                USING ERRCODE = 'data_exception',
                      HINT = 'Move one of the resources in the cycle under another parent.';
        END IF;
        v_path := r.parent_id || v_path;
        v_cur := r.parent_id;
        r := notify_ext._find_resource(v_cur);
        EXIT WHEN r.variant IS NULL;
    END LOOP;
    RETURN v_path;
END
$$;

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
