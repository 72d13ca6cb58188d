--------------------------------------------------------------------------
-- Who is calling (see docs/inbox.md)
--
-- The principal is the outer role's name (current_user outside SECURITY
-- DEFINER functions), or notify_ext.principal when a superuser or a member
-- of the role named by notify_ext.app_role has set it.
--------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION notify_ext.current_principal() RETURNS text
    LANGUAGE c STABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'notify_ext_current_principal';

-- True when the caller (not the owner of a SECURITY DEFINER function being
-- run) may make service calls: a superuser or a member of notify_ext.app_role.
CREATE OR REPLACE FUNCTION notify_ext._is_service_caller() RETURNS boolean
    LANGUAGE c STABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'notify_ext_is_service_caller';

-- Raises 42501 naming the call unless the caller may make service calls.
CREATE OR REPLACE FUNCTION notify_ext._require_service_caller(what text) RETURNS void
    LANGUAGE c STABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'notify_ext_require_service_caller';

-- Internal: the inbox channel of a principal (see notify_ext.subscription_channel()).
CREATE OR REPLACE FUNCTION notify_ext._inbox_channel(principal text) RETURNS text
    LANGUAGE c STABLE STRICT PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'notify_ext_inbox_channel';
REVOKE ALL ON FUNCTION notify_ext._inbox_channel(text) FROM PUBLIC;

-- Raises 42501 naming the view unless the caller is a service caller or
-- has the privileges of pg_monitor (the monitoring views).
CREATE OR REPLACE FUNCTION notify_ext._require_monitor(what text) RETURNS void
    LANGUAGE c STABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'notify_ext_require_monitor';
