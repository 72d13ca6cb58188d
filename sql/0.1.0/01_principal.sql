--------------------------------------------------------------------------
-- Who is calling
--------------------------------------------------------------------------

CREATE FUNCTION notify_ext.current_principal() RETURNS text
    LANGUAGE c STABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'notify_ext_current_principal';
