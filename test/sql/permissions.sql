-- permissions: grant_permission, revoke_permission, has_permission over
-- resource trees (a grant holds for the whole subtree; levels NONE < READ <
-- APPEND < WRITE < ADMIN); who may grant and revoke (ADMIN or a service
-- caller, 42501 otherwise); unknown level (22023) and resource (42704);
-- the PERMISSION_GRANTED / _UPDATED / _REVOKED and ACCESS_REQUESTED
-- personal notifications; notify_ext.permission_function, run as the
-- caller; row-level security on the grants table.
\set SHOW_CONTEXT never
-- The notifications of a principal, without ids or times.
CREATE FUNCTION pg_temp.inbox(p text) RETURNS TABLE (type text, message text, meta jsonb, refs jsonb)
    LANGUAGE sql AS $$
    SELECT n.type, n.message, n.meta, n.refs FROM notify_ext.notifications n
     WHERE n.recipient = p ORDER BY n.id $$;

CREATE ROLE regress_app NOLOGIN;
CREATE ROLE regress_svc NOLOGIN IN ROLE regress_app;
CREATE ROLE regress_alice NOLOGIN;
CREATE ROLE regress_bob NOLOGIN;
CREATE ROLE regress_carol NOLOGIN;
SET notify_ext.app_role = 'regress_app';

-- project > collection > dataset, and a second project.
SELECT notify_ext.register_resource('regress_p1', 'project');
SELECT notify_ext.register_resource('regress_c1', 'collection', 'regress_p1');
SELECT notify_ext.register_resource('regress_d1', 'dataset', 'regress_c1');
SELECT notify_ext.register_resource('regress_p2', 'project');

-- Nothing granted yet: only NONE holds.
SELECT notify_ext.has_permission('regress_alice', 'regress_d1', 'NONE') AS none,
       notify_ext.has_permission('regress_alice', 'regress_d1', 'READ') AS read;

-- A service caller grants; the grant holds for the subtree, not above it
-- nor beside it.
SET ROLE regress_svc;
SELECT notify_ext.grant_permission('regress_alice', 'regress_c1', 'WRITE');
RESET ROLE;
SELECT r.id, l.level, notify_ext.has_permission('regress_alice', r.id, l.level) AS has
  FROM (VALUES ('regress_p1'), ('regress_c1'), ('regress_d1'), ('regress_p2')) r(id),
       (VALUES ('READ'), ('APPEND'), ('WRITE'), ('ADMIN')) l(level)
 ORDER BY r.id, l.level;
-- Levels are case-insensitive.
SELECT notify_ext.has_permission('regress_alice', 'regress_d1', 'write');

-- The highest grant on the path wins.
SET ROLE regress_svc;
SELECT notify_ext.grant_permission('regress_alice', 'regress_p1', 'READ');
RESET ROLE;
SELECT notify_ext.has_permission('regress_alice', 'regress_d1', 'WRITE') AS d1_write,
       notify_ext.has_permission('regress_alice', 'regress_p1', 'APPEND') AS p1_append;

-- Granting the same level again changes nothing and notifies nobody;
-- another level is an update.
SET ROLE regress_svc;
SELECT notify_ext.grant_permission('regress_alice', 'regress_c1', 'WRITE');
SELECT notify_ext.grant_permission('regress_alice', 'regress_c1', 'ADMIN');
RESET ROLE;
SELECT * FROM pg_temp.inbox('regress_alice');

-- An ADMIN may grant and revoke inside its subtree, not outside it.
SET ROLE regress_alice;
SELECT notify_ext.grant_permission('regress_bob', 'regress_d1', 'APPEND');
SELECT regress_try($$SELECT notify_ext.grant_permission('regress_bob', 'regress_p1', 'READ')$$);
SELECT regress_try($$SELECT notify_ext.grant_permission('regress_bob', 'regress_p2', 'READ')$$);
RESET ROLE;
-- A non-ADMIN may not grant, not even to itself, nor revoke.
SET ROLE regress_bob;
SELECT regress_try($$SELECT notify_ext.grant_permission('regress_bob', 'regress_d1', 'ADMIN')$$);
SELECT regress_try($$SELECT notify_ext.revoke_permission('regress_alice', 'regress_c1')$$);
-- Each role sees its own grants only.
SELECT principal, resource_id, level, granted_by FROM notify_ext.permissions ORDER BY resource_id;
SELECT regress_try($$INSERT INTO notify_ext.permissions (principal, resource_id, level, granted_by) VALUES ('regress_bob', 'regress_p1', 4, 'x')$$);
SELECT regress_try($$UPDATE notify_ext.permissions SET level = 4$$);
RESET ROLE;
SET ROLE regress_alice;
SELECT notify_ext.revoke_permission('regress_bob', 'regress_d1');
-- Revoking what is not granted is a no-op.
SELECT notify_ext.revoke_permission('regress_bob', 'regress_d1');
RESET ROLE;
SELECT * FROM pg_temp.inbox('regress_bob');
SELECT notify_ext.has_permission('regress_bob', 'regress_d1', 'READ');

-- Granting NONE revokes.
SELECT notify_ext.grant_permission('regress_alice', 'regress_p1', 'NONE');
SELECT notify_ext.has_permission('regress_alice', 'regress_p1', 'READ') AS p1_read,
       notify_ext.has_permission('regress_alice', 'regress_d1', 'ADMIN') AS d1_admin;

-- A switched-off type is not stored.
SET ROLE regress_bob;
SELECT notify_ext.set_notification_preference('PERMISSION_GRANTED', false);
RESET ROLE;
SELECT notify_ext.grant_permission('regress_bob', 'regress_p2', 'READ');
SELECT count(*) AS bob_grant_notifications FROM pg_temp.inbox('regress_bob') WHERE type = 'PERMISSION_GRANTED';
SET ROLE regress_bob;
SELECT notify_ext.set_notification_preference('PERMISSION_GRANTED', true);
RESET ROLE;

-- Errors.
SELECT regress_try($$SELECT notify_ext.grant_permission('regress_bob', 'regress_d1', 'OWNER')$$);
SELECT regress_try($$SELECT notify_ext.grant_permission('regress_bob', 'regress_nope', 'READ')$$);
SELECT regress_try($$SELECT notify_ext.grant_permission('', 'regress_d1', 'READ')$$);
SELECT regress_try($$SELECT notify_ext.grant_permission(NULL, 'regress_d1', 'READ')$$);
SELECT regress_try($$SELECT notify_ext.grant_permission('regress_bob', NULL, 'READ')$$);
SELECT regress_try($$SELECT notify_ext.grant_permission('regress_bob', 'regress_d1', NULL)$$);
SELECT regress_try($$SELECT notify_ext.revoke_permission('regress_bob', 'regress_nope')$$);
SELECT regress_try($$SELECT notify_ext.revoke_permission('', 'regress_d1')$$);
SELECT regress_try($$SELECT notify_ext.has_permission('regress_bob', 'regress_d1', 'SUPER')$$);
SELECT regress_try($$SELECT notify_ext.has_permission('regress_bob', 'regress_nope', 'READ')$$);
SELECT regress_try($$SELECT notify_ext.has_permission('', 'regress_d1', 'READ')$$);
SELECT regress_try($$SELECT notify_ext.has_permission('regress_bob', '', 'READ')$$);
-- Unknown resource is checked before the caller's rights, unknown level first of all.
SET ROLE regress_bob;
SELECT regress_try($$SELECT notify_ext.grant_permission('regress_bob', 'regress_nope', 'READ')$$);
SELECT regress_try($$SELECT notify_ext.grant_permission('regress_bob', 'regress_nope', 'OWNER')$$);
RESET ROLE;

-- request_access: every ADMIN of the resource (grants on ancestors count)
-- gets ACCESS_REQUESTED referencing the requester.
SELECT notify_ext.grant_permission('regress_carol', 'regress_p1', 'ADMIN');
SET ROLE regress_bob;
SELECT notify_ext.request_access('regress_d1', 'WRITE', 'please');
SELECT notify_ext.request_access('regress_d1', 'read');
SELECT regress_try($$SELECT notify_ext.request_access('regress_d1', 'NONE')$$);
SELECT regress_try($$SELECT notify_ext.request_access('regress_d1', 'MORE')$$);
SELECT regress_try($$SELECT notify_ext.request_access('regress_nope', 'READ')$$);
RESET ROLE;
SELECT n.recipient, n.type, n.message, n.meta, n.refs
  FROM notify_ext.notifications n
 WHERE n.type = 'ACCESS_REQUESTED' ORDER BY n.recipient, n.id;
-- With no ADMIN, the creator of the resource is asked.
SET ROLE regress_carol;
SELECT notify_ext.register_resource('regress_p3', 'project');
RESET ROLE;
SET ROLE regress_bob;
SELECT notify_ext.request_access('regress_p3', 'READ');
RESET ROLE;
SELECT n.recipient, n.meta ->> 'resource_id' AS resource
  FROM notify_ext.notifications n
 WHERE n.type = 'ACCESS_REQUESTED' AND n.meta ->> 'resource_id' = 'regress_p3';

-- notify_ext.permission_function decides instead of the grants, and runs
-- as the caller (not as the extension's owner).
CREATE FUNCTION public.regress_perm(principal text, resource_id text, level text)
    RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    RAISE NOTICE 'regress_perm(%, %, %) as %', principal, resource_id, level, current_user;
    RETURN principal = 'regress_bob' AND level IN ('NONE', 'READ');
END $$;
SET notify_ext.permission_function = 'public.regress_perm';
SET ROLE regress_alice;
SELECT notify_ext.has_permission('regress_bob', 'anything', 'read') AS bob_read,
       notify_ext.has_permission('regress_bob', 'anything', 'WRITE') AS bob_write,
       notify_ext.has_permission('regress_alice', 'regress_c1', 'ADMIN') AS alice_admin;
-- It also decides who may grant.
SELECT regress_try($$SELECT notify_ext.grant_permission('regress_bob', 'regress_d1', 'READ')$$);
SELECT regress_try($$SET notify_ext.permission_function = ''$$);
RESET ROLE;
SET notify_ext.permission_function = 'public.regress_no_such_function';
SELECT regress_try($$SELECT notify_ext.has_permission('regress_bob', 'regress_d1', 'READ')$$);
CREATE FUNCTION public.regress_perm_int(principal text, resource_id text, level text)
    RETURNS integer LANGUAGE sql AS $$ SELECT 1 $$;
SET notify_ext.permission_function = 'public.regress_perm_int';
SELECT regress_try($$SELECT notify_ext.has_permission('regress_bob', 'regress_d1', 'READ')$$);
RESET notify_ext.permission_function;
SELECT notify_ext.has_permission('regress_alice', 'regress_c1', 'ADMIN') AS alice_admin;

-- Clean up.
DROP FUNCTION public.regress_perm(text, text, text);
DROP FUNCTION public.regress_perm_int(text, text, text);
DELETE FROM notify_ext.notifications WHERE recipient LIKE 'regress\_%';
DELETE FROM notify_ext.permissions WHERE principal LIKE 'regress\_%';
DELETE FROM notify_ext.notification_preferences WHERE principal LIKE 'regress\_%';
DELETE FROM notify_ext.resources WHERE id LIKE 'regress\_%';
RESET notify_ext.app_role;
DROP ROLE regress_alice, regress_bob, regress_carol, regress_svc, regress_app;
