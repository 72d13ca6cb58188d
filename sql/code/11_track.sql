--------------------------------------------------------------------------
-- Tracking tables
--
-- track() and untrack() are service calls: what is tracked lands in
-- everybody's event stream and names parents in everybody's resource tree.
-- They run as the extension's owner (the capture trigger is closed to
-- everyone else), so they check themselves that the caller could create a
-- trigger on the table: its owner, or a holder of TRIGGER on it.
--------------------------------------------------------------------------

-- Internal: whether the caller (the outer role, not the owner of the
-- SECURITY DEFINER function that asks) may create triggers on a table.
CREATE OR REPLACE FUNCTION notify_ext._caller_may_trigger(relation regclass) RETURNS boolean
    LANGUAGE c STABLE STRICT AS 'MODULE_PATHNAME', 'notify_ext_caller_may_trigger';
REVOKE ALL ON FUNCTION notify_ext._caller_may_trigger(regclass) FROM PUBLIC;

-- Internal: whether values of a type can be compared for equality (its
-- default btree or hash operator class), which looking ids up needs.
CREATE OR REPLACE FUNCTION notify_ext._type_has_equality(type regtype) RETURNS boolean
    LANGUAGE c STABLE STRICT AS 'MODULE_PATHNAME', 'notify_ext_type_has_equality';
REVOKE ALL ON FUNCTION notify_ext._type_has_equality(regtype) FROM PUBLIC;

-- Internal: 22023 unless the table can be tracked; 42501 unless the caller
-- may create triggers on it.  Returns the table's qualified name.
CREATE OR REPLACE FUNCTION notify_ext._check_trackable(relation regclass, what text) RETURNS text
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_kind "char";
    v_persistence "char";
    v_nsp name;
    v_extension name;
BEGIN
    IF relation IS NULL THEN
        RAISE EXCEPTION 'relation to % must not be NULL', what
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT c.relkind, c.relpersistence, n.nspname INTO v_kind, v_persistence, v_nsp
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = relation;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'relation with oid % does not exist', relation::oid
            USING ERRCODE = 'undefined_table';
    END IF;
    IF v_kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION 'cannot % "%": it is %', what, relation,
            CASE v_kind WHEN 'v' THEN 'a view' WHEN 'm' THEN 'a materialized view'
                        WHEN 'f' THEN 'a foreign table' WHEN 'S' THEN 'a sequence'
                        WHEN 'i' THEN 'an index' WHEN 'I' THEN 'an index'
                        WHEN 'c' THEN 'a composite type' ELSE 'not a table' END
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Only ordinary and partitioned tables can be tracked.';
    END IF;
    IF v_persistence = 't' THEN
        RAISE EXCEPTION 'cannot % "%": it is a temporary table', what, relation
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Only permanent and unlogged tables can be tracked: other sessions could not read a temporary one.';
    END IF;
    IF v_nsp IN ('pg_catalog', 'information_schema') OR v_nsp LIKE 'pg\_toast%'
       OR relation::oid < 16384 THEN
        RAISE EXCEPTION 'cannot % "%": it is a system catalog', what, relation
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_nsp = 'notify_ext' THEN
        RAISE EXCEPTION 'cannot % "%": it belongs to notify_ext', what, relation
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT e.extname INTO v_extension
      FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid
     WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
       AND d.objid = relation
       AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
       AND d.deptype = 'e';
    IF FOUND THEN
        RAISE EXCEPTION 'cannot % "%": it belongs to extension %', what, relation, v_extension
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT notify_ext._caller_may_trigger(relation) THEN
        RAISE EXCEPTION 'permission denied to % "%": the caller may not create triggers on it', what, relation
            USING ERRCODE = 'insufficient_privilege',
                  HINT = pg_catalog.format('Its owner can GRANT TRIGGER ON %s to the role that calls notify_ext.%s().', relation, what);
    END IF;
    RETURN relation::text;
END
$$;
REVOKE ALL ON FUNCTION notify_ext._check_trackable(regclass, text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION notify_ext.track(relation regclass, variant text, id_column name DEFAULT 'id',
                                            parent_column name DEFAULT NULL, stream text DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id_type regtype;
BEGIN
    PERFORM notify_ext._require_preload();
    PERFORM notify_ext._require_service_caller('notify_ext.track()');
    PERFORM notify_ext._check_trackable(relation, 'track');
    IF variant IS NULL OR variant = '' THEN
        RAISE EXCEPTION 'variant for tracked table "%" must not be empty', relation
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The variant names the kind of resource a row is, e.g. ''dataset''.';
    END IF;
    IF stream = '' THEN
        RAISE EXCEPTION 'stream for tracked table "%" must not be empty', relation
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass NULL to use the table''s qualified name.';
    END IF;
    SELECT a.atttypid::pg_catalog.regtype INTO v_id_type FROM pg_catalog.pg_attribute a
     WHERE a.attrelid = relation AND a.attname = id_column
       AND a.attnum > 0 AND NOT a.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'id column "%" of table "%" does not exist', id_column, relation
            USING ERRCODE = 'undefined_column';
    END IF;
    IF NOT notify_ext._type_has_equality(v_id_type) THEN
        RAISE EXCEPTION 'id column "%" of table "%" has type %, which has no equality operator', id_column, relation, v_id_type
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Track a column whose type has a default btree or hash operator class, such as text, integer or uuid.';
    END IF;
    IF parent_column IS NOT NULL AND NOT EXISTS (
            SELECT FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = relation AND a.attname = parent_column
               AND a.attnum > 0 AND NOT a.attisdropped) THEN
        RAISE EXCEPTION 'parent column "%" of table "%" does not exist', parent_column, relation
            USING ERRCODE = 'undefined_column';
    END IF;
    IF parent_column = id_column THEN
        RAISE EXCEPTION 'parent column of table "%" must differ from its id column "%"',
                        relation, id_column
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- Tracking again replaces the configuration.  Only triggers that exist
    -- are dropped, so that tracking a table the first time says nothing.
    IF EXISTS (SELECT FROM pg_catalog.pg_trigger t
                WHERE t.tgrelid = relation AND t.tgname = 'notify_ext_capture') THEN
        EXECUTE pg_catalog.format('DROP TRIGGER notify_ext_capture ON %s', relation);
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_trigger t
                WHERE t.tgrelid = relation AND t.tgname = 'notify_ext_capture_truncate') THEN
        EXECUTE pg_catalog.format('DROP TRIGGER notify_ext_capture_truncate ON %s', relation);
    END IF;
    EXECUTE pg_catalog.format('CREATE TRIGGER notify_ext_capture AFTER INSERT OR UPDATE OR DELETE ON %s '
                              'FOR EACH ROW EXECUTE FUNCTION notify_ext.capture(%L, %L, %L, %L)',
                              relation, variant, id_column, COALESCE(parent_column, ''), COALESCE(stream, ''));
    EXECUTE pg_catalog.format('CREATE TRIGGER notify_ext_capture_truncate AFTER TRUNCATE ON %s '
                              'FOR EACH STATEMENT EXECUTE FUNCTION notify_ext.capture(%L, %L, %L, %L)',
                              relation, variant, id_column, COALESCE(parent_column, ''), COALESCE(stream, ''));
    PERFORM notify_ext._resources_changed();
END
$$;

CREATE OR REPLACE FUNCTION notify_ext.untrack(relation regclass) RETURNS void
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM notify_ext._require_service_caller('notify_ext.untrack()');
    IF relation IS NULL THEN
        RAISE EXCEPTION 'relation to untrack must not be NULL'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT EXISTS (SELECT FROM notify_ext._tracked_tables() t WHERE t.relation = untrack.relation) THEN
        RAISE EXCEPTION 'table "%" is not tracked', relation
            USING ERRCODE = 'undefined_object';
    END IF;
    IF NOT notify_ext._caller_may_trigger(relation) THEN
        RAISE EXCEPTION 'permission denied to untrack "%": the caller may not drop triggers on it', relation
            USING ERRCODE = 'insufficient_privilege',
                  HINT = pg_catalog.format('Its owner can GRANT TRIGGER ON %s to the role that calls notify_ext.untrack().', relation);
    END IF;
    EXECUTE pg_catalog.format('DROP TRIGGER notify_ext_capture ON %s', relation);
    IF EXISTS (SELECT FROM pg_catalog.pg_trigger t
                WHERE t.tgrelid = relation AND t.tgname = 'notify_ext_capture_truncate') THEN
        EXECUTE pg_catalog.format('DROP TRIGGER notify_ext_capture_truncate ON %s', relation);
    END IF;
    PERFORM notify_ext._resources_changed();
END
$$;
