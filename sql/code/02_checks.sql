--------------------------------------------------------------------------
-- Argument checks shared by the functions
--------------------------------------------------------------------------

-- Internal: 22023 unless value (an id or name that is indexed: resource
-- ids, principals, notification types) is at most 1024 bytes.  NULL and
-- empty values are the caller's to refuse.
CREATE OR REPLACE FUNCTION notify_ext._check_name_length(value text, what text) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF octet_length(value) > 1024 THEN
        RAISE EXCEPTION '% "%..." is too long (% bytes)', what, left(value, 40), octet_length(value)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = pg_catalog.format('A %s has at most 1024 bytes.', what);
    END IF;
END
$$;
REVOKE ALL ON FUNCTION notify_ext._check_name_length(text, text) FROM PUBLIC;

-- Internal: the streams or operations of a scope (consumers, webhooks):
-- NULL for all, or a list of at most 256 distinct names, returned sorted;
-- 22023 for anything else.
CREATE OR REPLACE FUNCTION notify_ext._check_scope_list(a text[], what text) RETURNS text[]
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_list text[];
BEGIN
    IF a IS NULL THEN
        RETURN NULL;
    END IF;
    IF array_ndims(a) > 1 THEN
        RAISE EXCEPTION '% must be a one-dimensional array, not %', what, a
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF cardinality(a) = 0 THEN
        RAISE EXCEPTION '% must not be an empty array', what
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Pass NULL for all %s.', what);
    END IF;
    IF array_position(a, NULL) IS NOT NULL OR '' = ANY (a) THEN
        RAISE EXCEPTION '% must not contain NULL or empty names: %', what, a
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_list := ARRAY(SELECT DISTINCT x FROM unnest(a) x ORDER BY x);
    IF cardinality(v_list) > 256 THEN
        RAISE EXCEPTION '% has % names; at most 256 are allowed', what, cardinality(v_list)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Filter on fewer names, or on none (NULL) and select in the client.';
    END IF;
    RETURN v_list;
END
$$;
REVOKE ALL ON FUNCTION notify_ext._check_scope_list(text[], text) FROM PUBLIC;
