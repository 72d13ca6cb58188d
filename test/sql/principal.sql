-- principal: who is calling.  notify_ext.current_principal() and
-- notify_ext._is_service_caller(); notify_ext.principal honoured only for
-- superusers and members of notify_ext.app_role (refused with 42501 at SET
-- and at use, including after SET ROLE, a membership REVOKE and an app_role
-- change); SECURITY DEFINER functions see the caller, not their owner;
-- security-restricted operations are refused; the actor of recorded events
-- is the principal.
\set SHOW_CONTEXT never
CREATE ROLE regress_app NOLOGIN;
CREATE ROLE regress_svc NOLOGIN IN ROLE regress_app;
CREATE ROLE regress_alice NOLOGIN;
CREATE ROLE regress_bob NOLOGIN;
SET notify_ext.app_role = 'regress_app';

-- A superuser is itself by default, and a service caller.
SELECT notify_ext.current_principal() = current_user AS is_current_user,
       notify_ext._is_service_caller() AS service;

-- A plain role is itself and nothing more.
SET ROLE regress_alice;
SELECT notify_ext.current_principal(), notify_ext._is_service_caller();
SELECT regress_try($$SET notify_ext.principal = 'regress_bob'$$);
SELECT regress_try($$SET LOCAL notify_ext.principal = 'User#1'$$);
SELECT regress_try($$SELECT set_config('notify_ext.principal', 'regress_bob', false)$$);
SELECT notify_ext.current_principal();
-- Its own name is allowed (and changes nothing).
SET notify_ext.principal = 'regress_alice';
SELECT notify_ext.current_principal();
RESET notify_ext.principal;
-- It cannot make itself an application role member either.
SELECT regress_try($$SET notify_ext.app_role = 'regress_alice'$$);
SELECT regress_try($$SELECT notify_ext._require_service_caller('regress_call()')$$);
RESET ROLE;

-- A member of the application role acts for an end user, and is then
-- treated as that principal: no service calls until it resets.
SET ROLE regress_svc;
SELECT notify_ext.current_principal(), notify_ext._is_service_caller();
SET notify_ext.principal = 'User#1';
SELECT notify_ext.current_principal(), notify_ext._is_service_caller();
BEGIN;
SET LOCAL notify_ext.principal = 'User#2';
SELECT notify_ext.current_principal();
COMMIT;
SELECT notify_ext.current_principal();
SELECT regress_try($$SELECT notify_ext._require_service_caller('regress_call()')$$);
RESET notify_ext.principal;
SELECT notify_ext._require_service_caller('regress_call()');
SET notify_ext.principal = 'User#1';

-- The value stays set when the role changes: a superuser may use it, a
-- plain role is refused when it is used.
RESET ROLE;
SELECT notify_ext.current_principal();
SET ROLE regress_alice;
SELECT regress_try($$SELECT notify_ext.current_principal()$$);
RESET ROLE;

-- Losing the membership takes effect at once.
SET ROLE regress_svc;
SELECT notify_ext.current_principal();
RESET ROLE;
REVOKE regress_app FROM regress_svc;
SET ROLE regress_svc;
SELECT regress_try($$SELECT notify_ext.current_principal()$$);
SELECT notify_ext._is_service_caller();
RESET ROLE;
GRANT regress_app TO regress_svc;
SET ROLE regress_svc;
SELECT notify_ext.current_principal();
RESET ROLE;
-- So does a change of notify_ext.app_role.
SET notify_ext.app_role = 'regress_bob';
SET ROLE regress_svc;
SELECT regress_try($$SELECT notify_ext.current_principal()$$);
RESET ROLE;
SET notify_ext.app_role = 'regress_no_such_role';
SET ROLE regress_svc;
SELECT notify_ext._is_service_caller();
RESET ROLE;
SET notify_ext.app_role = 'regress_app';
RESET notify_ext.principal;

-- SECURITY DEFINER functions see the caller, not their owner.
CREATE FUNCTION public.regress_whoami() RETURNS text
    LANGUAGE sql SECURITY DEFINER
    AS $$ SELECT notify_ext.current_principal() || ' service=' || notify_ext._is_service_caller() $$;
ALTER FUNCTION public.regress_whoami() OWNER TO regress_svc;
-- A function owned by an application role member that sets the principal
-- does not let a plain caller become someone else.
CREATE FUNCTION public.regress_act_as_bob() RETURNS text
    LANGUAGE sql SECURITY DEFINER SET notify_ext.principal = 'regress_bob'
    AS $$ SELECT notify_ext.current_principal() $$;
ALTER FUNCTION public.regress_act_as_bob() OWNER TO regress_svc;
SET ROLE regress_alice;
SELECT public.regress_whoami();
SELECT regress_try($$SELECT public.regress_act_as_bob()$$);
RESET ROLE;
SET ROLE regress_svc;
SELECT public.regress_whoami();
SELECT public.regress_act_as_bob();
RESET ROLE;

-- In a security-restricted operation nobody can tell who is calling.
CREATE MATERIALIZED VIEW public.regress_mv AS
    SELECT notify_ext.current_principal() AS p WITH NO DATA;
ALTER MATERIALIZED VIEW public.regress_mv OWNER TO regress_alice;
SELECT regress_try($$REFRESH MATERIALIZED VIEW public.regress_mv$$);
DROP MATERIALIZED VIEW public.regress_mv;

-- The actor of a recorded event is the principal; an end user publishes
-- about a resource it may APPEND to.
SELECT notify_ext.register_resource('regress_principal_res', 'project');
SELECT notify_ext.grant_permission('User#7', 'regress_principal_res', 'APPEND');
SET ROLE regress_svc;
SET notify_ext.principal = 'User#7';
SELECT notify_ext.publish('regress.principal', 'user.view', '{}', 'regress_principal_res') > 0 AS published;
RESET notify_ext.principal;
RESET ROLE;
-- (an event about no resource is a service call)
SET ROLE regress_alice;
SELECT regress_try($$SELECT notify_ext.publish('regress.principal', 'user.view', '{}')$$);
RESET ROLE;
-- A principal a plain role may not use refuses the event too.
SET notify_ext.principal = 'User#8';
SET ROLE regress_alice;
SELECT regress_try($$SELECT notify_ext.publish('regress.principal', 'user.view', '{}')$$);
RESET ROLE;
RESET notify_ext.principal;
SELECT actor, operation FROM notify_ext.events
 WHERE stream = 'regress.principal' ORDER BY seq;

DROP FUNCTION public.regress_whoami();
DROP FUNCTION public.regress_act_as_bob();
RESET notify_ext.app_role;
DROP ROLE regress_alice, regress_bob, regress_svc, regress_app;
DELETE FROM notify_ext.permissions WHERE resource_id = 'regress_principal_res';
DELETE FROM notify_ext.notifications WHERE recipient = 'User#7';
DELETE FROM notify_ext.resources WHERE id = 'regress_principal_res';
