--------------------------------------------------------------------------
-- Tracking tables
--------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION notify_ext.track(relation regclass, variant text, id_column name DEFAULT 'id',
                                 parent_column name DEFAULT NULL, stream text DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_kind "char";
    v_nsp name;
BEGIN
    IF relation IS NULL THEN
        RAISE EXCEPTION 'relation to track must not be NULL'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT c.relkind, n.nspname INTO v_kind, v_nsp
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = relation;
    IF v_kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION 'cannot track "%": it is %', relation,
            CASE v_kind WHEN 'v' THEN 'a view' WHEN 'm' THEN 'a materialized view'
                        WHEN 'f' THEN 'a foreign table' WHEN 'S' THEN 'a sequence'
                        WHEN 'i' THEN 'an index' WHEN 'I' THEN 'an index'
                        WHEN 'c' THEN 'a composite type' ELSE 'not a table' END
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Only ordinary and partitioned tables can be tracked.';
    END IF;
    IF v_nsp IN ('pg_catalog', 'information_schema') OR v_nsp LIKE 'pg\_toast%'
       OR relation::oid < 16384 THEN
        RAISE EXCEPTION 'cannot track "%": it is a system catalog', relation
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_nsp = 'notify_ext' THEN
        RAISE EXCEPTION 'cannot track "%": it belongs to notify_ext', relation
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
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
    IF id_column IS NULL OR NOT EXISTS (
            SELECT FROM pg_attribute
             WHERE attrelid = relation AND attname = id_column
               AND attnum > 0 AND NOT attisdropped) THEN
        RAISE EXCEPTION 'id column "%" of table "%" does not exist', id_column, relation
            USING ERRCODE = 'undefined_column';
    END IF;
    IF parent_column IS NOT NULL AND NOT EXISTS (
            SELECT FROM pg_attribute
             WHERE attrelid = relation AND attname = parent_column
               AND attnum > 0 AND NOT attisdropped) THEN
        RAISE EXCEPTION 'parent column "%" of table "%" does not exist', parent_column, relation
            USING ERRCODE = 'undefined_column';
    END IF;
    IF parent_column = id_column THEN
        RAISE EXCEPTION 'parent column of table "%" must differ from its id column "%"',
                        relation, id_column
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- Tracking again replaces the configuration.
    IF EXISTS (SELECT FROM pg_trigger WHERE tgrelid = relation AND tgname = 'notify_ext_capture') THEN
        EXECUTE format('DROP TRIGGER notify_ext_capture ON %s', relation);
    END IF;
    IF EXISTS (SELECT FROM pg_trigger WHERE tgrelid = relation AND tgname = 'notify_ext_capture_truncate') THEN
        EXECUTE format('DROP TRIGGER notify_ext_capture_truncate ON %s', relation);
    END IF;
    EXECUTE format('CREATE TRIGGER notify_ext_capture AFTER INSERT OR UPDATE OR DELETE ON %s '
                   'FOR EACH ROW EXECUTE FUNCTION notify_ext.capture(%L, %L, %L, %L)',
                   relation, variant, id_column, COALESCE(parent_column, ''), COALESCE(stream, ''));
    EXECUTE format('CREATE TRIGGER notify_ext_capture_truncate AFTER TRUNCATE ON %s '
                   'FOR EACH STATEMENT EXECUTE FUNCTION notify_ext.capture(%L, %L, %L, %L)',
                   relation, variant, id_column, COALESCE(parent_column, ''), COALESCE(stream, ''));
END
$$;

CREATE OR REPLACE FUNCTION notify_ext.untrack(relation regclass) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM notify_ext.tracked_tables t WHERE t.relation = untrack.relation) THEN
        RAISE EXCEPTION 'table "%" is not tracked', relation
            USING ERRCODE = 'undefined_object';
    END IF;
    EXECUTE format('DROP TRIGGER notify_ext_capture ON %s', relation);
    IF EXISTS (SELECT FROM pg_trigger WHERE tgrelid = relation AND tgname = 'notify_ext_capture_truncate') THEN
        EXECUTE format('DROP TRIGGER notify_ext_capture_truncate ON %s', relation);
    END IF;
END
$$;
