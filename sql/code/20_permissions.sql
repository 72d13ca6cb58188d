--------------------------------------------------------------------------
-- Permissions on resource trees
--------------------------------------------------------------------------

DROP POLICY IF EXISTS permissions_own ON notify_ext.permissions;
CREATE POLICY permissions_own ON notify_ext.permissions
    FOR SELECT USING (principal OPERATOR(pg_catalog.=) notify_ext.current_principal());

-- Internal: a level name as its number; 22023 when unknown.
CREATE OR REPLACE FUNCTION notify_ext._permission_level(level text) RETURNS smallint
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF level IS NULL THEN
        RAISE EXCEPTION 'permission level must not be null'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Levels are NONE, READ, APPEND, WRITE and ADMIN.';
    END IF;
    CASE upper(level)
        WHEN 'NONE' THEN RETURN 0;
        WHEN 'READ' THEN RETURN 1;
        WHEN 'APPEND' THEN RETURN 2;
        WHEN 'WRITE' THEN RETURN 3;
        WHEN 'ADMIN' THEN RETURN 4;
        ELSE
            RAISE EXCEPTION 'unknown permission level "%"', level
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Levels are NONE, READ, APPEND, WRITE and ADMIN.';
    END CASE;
END
$$;

CREATE OR REPLACE FUNCTION notify_ext._permission_level_name(level smallint) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (ARRAY['NONE', 'READ', 'APPEND', 'WRITE', 'ADMIN'])[level + 1]
$$;


-- Internal: the built-in level of a principal on a resource path (0 when
-- nothing is granted).
CREATE OR REPLACE FUNCTION notify_ext._granted_level(principal text, path text[]) RETURNS smallint
    LANGUAGE sql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT COALESCE(max(p.level), 0)::smallint
      FROM notify_ext.permissions p
     WHERE p.principal = _granted_level.principal
       AND p.resource_id = ANY (_granted_level.path)
$$;
REVOKE ALL ON FUNCTION notify_ext._granted_level(text, text[]) FROM PUBLIC;

-- Internal: the built-in answer of has_permission().
CREATE OR REPLACE FUNCTION notify_ext._has_permission_builtin(principal text, resource_id text, level smallint)
    RETURNS boolean
    LANGUAGE plpgsql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_path text[] := notify_ext._require_resource(resource_id);
BEGIN
    RETURN level = 0 OR notify_ext._granted_level(principal, v_path) >= level;
END
$$;
REVOKE ALL ON FUNCTION notify_ext._has_permission_builtin(text, text, smallint) FROM PUBLIC;

-- Internal: calls fn as the caller (the outer role), never as the owner of
-- the SECURITY DEFINER function it is called from.
CREATE OR REPLACE FUNCTION notify_ext._call_permission_function(fn regprocedure, principal text,
                                                     resource_id text, level text)
    RETURNS boolean
    LANGUAGE c VOLATILE STRICT AS 'MODULE_PATHNAME', 'notify_ext_call_permission_function';
REVOKE ALL ON FUNCTION notify_ext._call_permission_function(regprocedure, text, text, text) FROM PUBLIC;

-- Anyone may ask about anyone, like has_table_privilege().  A permission
-- function set by the superuser runs with the caller's privileges.
CREATE OR REPLACE FUNCTION notify_ext.has_permission(principal text, resource_id text, level text)
    RETURNS boolean
    LANGUAGE plpgsql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_level smallint := notify_ext._permission_level(level);
    v_fn text := pg_catalog.current_setting('notify_ext.permission_function', true);
    v_proc regprocedure;
BEGIN
    IF principal IS NULL OR principal = '' THEN
        RAISE EXCEPTION 'principal must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF resource_id IS NULL OR resource_id = '' THEN
        RAISE EXCEPTION 'resource id must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_fn IS NULL OR v_fn = '' THEN
        RETURN notify_ext._has_permission_builtin(principal, resource_id, v_level);
    END IF;
    v_proc := pg_catalog.to_regprocedure(v_fn || '(text,text,text)');
    IF v_proc IS NULL THEN
        RAISE EXCEPTION 'permission function "%(text, text, text)" does not exist', v_fn
            USING ERRCODE = 'undefined_function',
                  HINT = 'Set notify_ext.permission_function to a schema-qualified function (principal text, resource_id text, level text) returns boolean, or to an empty string.';
    END IF;
    RETURN notify_ext._call_permission_function(v_proc, principal, resource_id,
                                                notify_ext._permission_level_name(v_level));
END
$$;

-- Internal: ADMIN on the resource for the current principal, or a service
-- caller; 42501 otherwise.
CREATE OR REPLACE FUNCTION notify_ext._require_admin(resource_id text, what text) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF notify_ext._is_service_caller() THEN
        RETURN;
    END IF;
    IF NOT notify_ext.has_permission(notify_ext.current_principal(), resource_id, 'ADMIN') THEN
        RAISE EXCEPTION '% needs ADMIN on resource "%": principal "%" does not have it',
                        what, resource_id, notify_ext.current_principal()
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Ask an ADMIN of the resource (notify_ext.request_access()) or use a service role.';
    END IF;
END
$$;

-- Internal: a reference to a resource, for refs of personal notifications.
CREATE OR REPLACE FUNCTION notify_ext._resource_ref(resource_id text) RETURNS jsonb
    LANGUAGE sql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.jsonb_build_object('type', 'resource', 'id', _resource_ref.resource_id,
                                         'variant', (notify_ext._find_resource(_resource_ref.resource_id)).variant)
$$;
REVOKE ALL ON FUNCTION notify_ext._resource_ref(text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION notify_ext.grant_permission(principal text, resource_id text, level text)
    RETURNS void
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_level smallint := notify_ext._permission_level(level);
    v_by text := notify_ext.current_principal();
    v_old smallint;
BEGIN
    IF principal IS NULL OR principal = '' THEN
        RAISE EXCEPTION 'principal must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM notify_ext._check_name_length(principal, 'principal');
    PERFORM notify_ext._require_resource(resource_id);
    PERFORM notify_ext._require_admin(resource_id, 'granting a permission');
    IF v_level = 0 THEN
        PERFORM notify_ext.revoke_permission(principal, resource_id);
        RETURN;
    END IF;

    SELECT p.level INTO v_old FROM notify_ext.permissions p
     WHERE p.principal = grant_permission.principal AND p.resource_id = grant_permission.resource_id
       FOR UPDATE;
    IF v_old = v_level THEN
        RETURN;
    END IF;
    INSERT INTO notify_ext.permissions AS p (principal, resource_id, level, granted_by)
    VALUES (grant_permission.principal, grant_permission.resource_id, v_level, v_by)
    ON CONFLICT ON CONSTRAINT permissions_pkey DO UPDATE
       SET level = excluded.level, granted_by = excluded.granted_by, granted_at = excluded.granted_at;

    PERFORM notify_ext._notify(
        principal,
        CASE WHEN v_old IS NULL THEN 'PERMISSION_GRANTED' ELSE 'PERMISSION_UPDATED' END,
        CASE WHEN v_old IS NULL
             THEN pg_catalog.format('%s granted you %s on %s', v_by,
                                    notify_ext._permission_level_name(v_level), resource_id)
             ELSE pg_catalog.format('%s changed your permission on %s from %s to %s', v_by, resource_id,
                                    notify_ext._permission_level_name(v_old),
                                    notify_ext._permission_level_name(v_level)) END,
        pg_catalog.jsonb_build_object('resource_id', resource_id,
                                      'level', notify_ext._permission_level_name(v_level),
                                      'previous_level', notify_ext._permission_level_name(v_old),
                                      'by', v_by),
        pg_catalog.now(),
        pg_catalog.jsonb_build_array(notify_ext._resource_ref(resource_id)));
END
$$;

CREATE OR REPLACE FUNCTION notify_ext.revoke_permission(principal text, resource_id text)
    RETURNS void
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_by text := notify_ext.current_principal();
    v_old smallint;
BEGIN
    IF principal IS NULL OR principal = '' THEN
        RAISE EXCEPTION 'principal must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM notify_ext._require_resource(resource_id);
    PERFORM notify_ext._require_admin(resource_id, 'revoking a permission');
    DELETE FROM notify_ext.permissions p
     WHERE p.principal = revoke_permission.principal AND p.resource_id = revoke_permission.resource_id
    RETURNING p.level INTO v_old;
    IF v_old IS NULL THEN
        RETURN;
    END IF;
    PERFORM notify_ext._notify(
        principal, 'PERMISSION_REVOKED',
        pg_catalog.format('%s revoked your %s permission on %s', v_by,
                          notify_ext._permission_level_name(v_old), resource_id),
        pg_catalog.jsonb_build_object('resource_id', resource_id,
                                      'previous_level', notify_ext._permission_level_name(v_old),
                                      'by', v_by),
        pg_catalog.now(),
        pg_catalog.jsonb_build_array(notify_ext._resource_ref(resource_id)));
END
$$;

-- Internal: who may grant access to a resource: the principals with ADMIN
-- on it or an ancestor; failing that its creator (created_by of a registered
-- resource, or the actor of the earliest retained create event of a tracked
-- row).
CREATE OR REPLACE FUNCTION notify_ext._resource_admins(resource_id text) RETURNS SETOF text
    LANGUAGE plpgsql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_path text[] := notify_ext._require_resource(resource_id);
    v_creator text;
    r record;
BEGIN
    RETURN QUERY SELECT DISTINCT p.principal FROM notify_ext.permissions p
                  WHERE p.resource_id = ANY (v_path) AND p.level = 4
                  ORDER BY 1;
    IF FOUND THEN
        RETURN;
    END IF;
    SELECT r2.created_by INTO v_creator FROM notify_ext.resources r2 WHERE r2.id = resource_id;
    IF v_creator IS NULL THEN
        r := notify_ext._find_resource(resource_id);
        SELECT e.actor INTO v_creator FROM notify_ext.event_log e
         WHERE e.resource_id = _resource_admins.resource_id
           AND e.operation = r.variant || '.create'
         ORDER BY e.seq LIMIT 1;
    END IF;
    IF v_creator IS NOT NULL THEN
        RETURN NEXT v_creator;
    END IF;
END
$$;
REVOKE ALL ON FUNCTION notify_ext._resource_admins(text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION notify_ext.request_access(resource_id text, level text, message text DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_level smallint := notify_ext._permission_level(level);
    v_me text := notify_ext.current_principal();
    v_n integer := 0;
    v_admin text;
BEGIN
    PERFORM notify_ext._require_resource(resource_id);
    IF v_level = 0 THEN
        RAISE EXCEPTION 'cannot request access level "%"', level
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Request READ, APPEND, WRITE or ADMIN.';
    END IF;
    FOR v_admin IN SELECT a FROM notify_ext._resource_admins(resource_id) a LOOP
        PERFORM notify_ext._notify(
            v_admin, 'ACCESS_REQUESTED',
            COALESCE(message, pg_catalog.format('%s requests %s on %s', v_me,
                                                notify_ext._permission_level_name(v_level), resource_id)),
            pg_catalog.jsonb_build_object('resource_id', resource_id,
                                          'level', notify_ext._permission_level_name(v_level),
                                          'requester', v_me, 'message', message),
            pg_catalog.now(),
            pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('type', 'user', 'id', v_me),
                                         notify_ext._resource_ref(resource_id)));
        v_n := v_n + 1;
    END LOOP;
    IF v_n = 0 THEN
        RAISE EXCEPTION 'nobody can grant access to resource "%"', resource_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Grant ADMIN on the resource or one of its ancestors to someone first.';
    END IF;
END
$$;
