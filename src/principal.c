/*
 * principal.c: who is calling.
 *
 * The principal of a call is the name of the *outer* role (current_user
 * outside any SECURITY DEFINER function: GetOuterUserId(), which follows SET
 * ROLE but not the owner switch of a SECURITY DEFINER function).  A role
 * with the privileges of the role named by notify_ext.app_role (or a
 * superuser) may set notify_ext.principal to act for an end user, and is
 * then treated as that principal: its grants apply, and it makes no
 * service calls until it resets the setting.  For any other role a value
 * other than its own name is refused with 42501: at SET time when it can be
 * checked, and always at use time.
 *
 * Looking at the outer role rather than GetUserId() is what keeps the
 * extension's own SECURITY DEFINER functions (owned by a superuser) from
 * turning every caller into a service caller, and what keeps a SECURITY
 * DEFINER function owned by an application role from honouring
 * notify_ext.principal for a plain caller.
 *
 * Inside a security-restricted operation (index expressions run by VACUUM,
 * ANALYZE, REINDEX, REFRESH MATERIALIZED VIEW ...) the code that runs is the
 * table owner's while the outer role is whoever started the maintenance, so
 * there is no trustworthy answer: both questions raise 42501 there.
 *
 * The answer is cached per backend and invalidated when the outer role
 * changes, when notify_ext.principal or notify_ext.app_role is assigned, and
 * on any change to pg_authid or pg_auth_members (role renames, GRANT/REVOKE
 * of membership, superuser flag).
 */
#include "postgres.h"

#include "access/parallel.h"
#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

#include "settings.h"
#include "principal.h"

/* Principals are indexed (grants, notifications): at most this long. */
#define PRINCIPAL_MAX_BYTES 1024


/* The cached answer for one outer role. */
static bool cache_valid = false;
static Oid	cache_uid = InvalidOid;
static bool cache_service = false;	/* superuser or app role member */
static char *cache_rolename = NULL; /* TopMemoryContext */
static char *cache_principal = NULL;	/* TopMemoryContext */
static bool cache_refused = false;	/* principal GUC set but not allowed */

static void
invalidate_cache(void)
{
	cache_valid = false;
}

static void
principal_syscache_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	invalidate_cache();
}

void
principal_assign_hook(const char *newval, void *extra)
{
	invalidate_cache();
}

/* May role 'uid' act for others (and make service calls)? */
static bool
role_is_service(Oid uid)
{
	Oid			app;

	if (superuser_arg(uid))
		return true;
	if (notify_ext_app_role == NULL || notify_ext_app_role[0] == '\0')
		return false;
	app = get_role_oid(notify_ext_app_role, true);
	if (!OidIsValid(app))
		return false;
	return has_privs_of_role(uid, app);
}

static void
refuse_sro(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("notify_ext cannot tell who is calling inside a security-restricted operation"),
			 errdetail("Index expressions, materialized view queries and other code run by maintenance commands run as the table owner.")));
}

static void
fill_cache(void)
{
	Oid			uid = GetOuterUserId();
	char	   *name;
	bool		service;
	const char *guc = notify_ext_principal_guc;

	if (cache_valid && cache_uid == uid)
		return;

	name = GetUserNameFromId(uid, false);
	service = role_is_service(uid);

	if (cache_rolename)
		pfree(cache_rolename);
	if (cache_principal)
		pfree(cache_principal);
	cache_rolename = MemoryContextStrdup(TopMemoryContext, name);
	cache_refused = false;
	if (guc != NULL && guc[0] != '\0' && strcmp(guc, name) != 0)
	{
		/* Acting for an end user: treated as that principal, no more. */
		cache_principal = MemoryContextStrdup(TopMemoryContext, guc);
		cache_refused = !service;
		cache_service = false;
	}
	else
	{
		cache_principal = MemoryContextStrdup(TopMemoryContext, name);
		cache_service = service;
	}
	cache_uid = uid;
	cache_valid = true;
	pfree(name);
}

static void
refuse_principal(const char *rolename, const char *principal)
{
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("role \"%s\" may not act as principal \"%s\"", rolename, principal),
			 errdetail("Only superusers and members of the role named by notify_ext.app_role%s%s%s may set notify_ext.principal to another name.",
					   (notify_ext_app_role && notify_ext_app_role[0]) ? " (\"" : "",
					   (notify_ext_app_role && notify_ext_app_role[0]) ? notify_ext_app_role : "",
					   (notify_ext_app_role && notify_ext_app_role[0]) ? "\")" : ""),
			 errhint("RESET notify_ext.principal.")));
}

const char *
notify_current_principal(void)
{
	if (InSecurityRestrictedOperation())
		refuse_sro();
	fill_cache();
	if (cache_refused)
		refuse_principal(cache_rolename, cache_principal);
	return cache_principal;
}

bool
notify_is_service_caller(void)
{
	if (InSecurityRestrictedOperation())
		refuse_sro();
	fill_cache();
	return cache_service;
}

void
notify_require_service_caller(const char *what)
{
	if (notify_is_service_caller())
		return;
	if (strcmp(cache_principal, cache_rolename) != 0 && role_is_service(cache_uid))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("%s is a service call: role \"%s\" acts for principal \"%s\"",
						what, cache_rolename, cache_principal),
				 errdetail("A role acting for an end user (notify_ext.principal) is treated as that principal."),
				 errhint("RESET notify_ext.principal for service calls.")));
	if (notify_ext_app_role && notify_ext_app_role[0])
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("%s is a service call: role \"%s\" is not a member of the application role \"%s\"",
						what, cache_rolename, notify_ext_app_role),
				 errhint("A superuser can GRANT \"%s\" TO \"%s\".", notify_ext_app_role, cache_rolename)));
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("%s is a service call: role \"%s\" is not a superuser and notify_ext.app_role is not set",
					what, cache_rolename),
			 errhint("A superuser sets notify_ext.app_role to the role of the application and grants it to the roles that serve end users.")));
}

/*
 * Refuse SET notify_ext.principal early for a role that may not use it.  Only
 * plain SET / SET LOCAL / set_config() / function SET clauses in a normal
 * backend inside a transaction are checked here; everything else (startup
 * options, ALTER ROLE ... SET, parallel workers restoring state) is checked
 * when the principal is used.
 */
bool
principal_check_hook(char **newval, void **extra, GucSource source)
{
	Oid			uid;
	char	   *name;
	bool		ok;

	if (*newval == NULL || (*newval)[0] == '\0')
		return true;
	if (strlen(*newval) > PRINCIPAL_MAX_BYTES)
	{
		GUC_check_errcode(ERRCODE_INVALID_PARAMETER_VALUE);
		GUC_check_errmsg("principal \"%.40s...\" is too long (%zu bytes)", *newval, strlen(*newval));
		GUC_check_errhint("A principal has at most %d bytes.", PRINCIPAL_MAX_BYTES);
		return false;
	}
	if (source != PGC_S_SESSION || !IsTransactionState() ||
		IsParallelWorker() || InitializingParallelWorker ||
		!OidIsValid(GetOuterUserId()))
		return true;
	uid = GetOuterUserId();
	name = GetUserNameFromId(uid, true);
	if (name == NULL || strcmp(name, *newval) == 0)
		return true;
	ok = !InSecurityRestrictedOperation() && role_is_service(uid);
	if (!ok)
	{
		GUC_check_errcode(ERRCODE_INSUFFICIENT_PRIVILEGE);
		GUC_check_errmsg("role \"%s\" may not act as principal \"%s\"", name, *newval);
		GUC_check_errdetail("Only superusers and members of the role named by notify_ext.app_role may set notify_ext.principal to another name.");
	}
	return ok;
}

void
principal_init(void)
{
	CacheRegisterSyscacheCallback(AUTHOID, principal_syscache_callback, (Datum) 0);
	CacheRegisterSyscacheCallback(AUTHMEMROLEMEM, principal_syscache_callback, (Datum) 0);
}

PG_FUNCTION_INFO_V1(notify_ext_current_principal);
Datum
notify_ext_current_principal(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(notify_current_principal()));
}

PG_FUNCTION_INFO_V1(notify_ext_is_service_caller);
Datum
notify_ext_is_service_caller(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(notify_is_service_caller());
}

bool
notify_may_monitor(void)
{
	return notify_is_service_caller() || has_privs_of_role(GetOuterUserId(), ROLE_PG_MONITOR);
}

void
notify_require_monitor(const char *what)
{
	if (notify_may_monitor())
		return;
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("%s is for monitoring: role \"%s\" is neither a service caller nor a member of pg_monitor",
					what, cache_rolename),
			 errhint("A superuser can GRANT pg_monitor TO \"%s\".", cache_rolename)));
}

/* notify_ext._require_monitor(what text) returns void */
PG_FUNCTION_INFO_V1(notify_ext_require_monitor);
Datum
notify_ext_require_monitor(PG_FUNCTION_ARGS)
{
	notify_require_monitor(PG_ARGISNULL(0) ? "this view" : text_to_cstring(PG_GETARG_TEXT_PP(0)));
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(notify_ext_require_service_caller);
Datum
notify_ext_require_service_caller(PG_FUNCTION_ARGS)
{
	char	   *what = PG_ARGISNULL(0) ? "this function" : text_to_cstring(PG_GETARG_TEXT_PP(0));

	notify_require_service_caller(what);
	PG_RETURN_VOID();
}

/*
 * notify_ext._caller_may_trigger(relation regclass): whether the caller
 * (the outer role) may create triggers on the table, as CREATE TRIGGER
 * would check it for that role.
 */
PG_FUNCTION_INFO_V1(notify_ext_caller_may_trigger);
Datum
notify_ext_caller_may_trigger(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);

	if (InSecurityRestrictedOperation())
		refuse_sro();
	PG_RETURN_BOOL(pg_class_aclcheck(relid, GetOuterUserId(), ACL_TRIGGER) == ACLCHECK_OK);
}
