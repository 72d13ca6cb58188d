-- Helpers for the regression tests that follow; pg_regress runs them in
-- name order in one database, so this file runs first.
\set SHOW_CONTEXT never

-- Runs a statement and returns 'ok' or its SQLSTATE and message, with
-- random ids masked, so that refusals can be listed one per row.
CREATE FUNCTION public.regress_try(statement text) RETURNS text
    LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || regexp_replace(SQLERRM,
        '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', '<uuid>', 'g');
END
$$;
