/*
 * extension.c: where notify_ext lives, who owns it, the shape of its event
 * log, and how its code acts with another role's rights.
 *
 * Every path that acts as the extension owner, or reads a user table as its
 * owner, goes through act_as(): the search path is pinned to
 * "pg_catalog, pg_temp" so that no operator, function or type another role
 * created is picked up by name, and reads of user tables run in a
 * security-restricted operation.  The list of such paths is in
 * docs/security.md.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

#include "extension.h"

bool		notify_ext_preloaded = false;

void
require_preload(void)
{
	if (!notify_ext_preloaded)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("notify_ext must be loaded via shared_preload_libraries"),
				 errdetail("Events are numbered at commit using shared memory."),
				 errhint("Add notify_ext to shared_preload_libraries in postgresql.conf and restart the server.")));
}

/* notify_ext._require_preload(): CREATE EXTENSION and track() call it first. */
PG_FUNCTION_INFO_V1(notify_ext_require_preload);
Datum
notify_ext_require_preload(PG_FUNCTION_ARGS)
{
	require_preload();
	PG_RETURN_VOID();
}

Oid
extension_schema(void)
{
	return get_namespace_oid("notify_ext", false);
}

/* The owner of the extension's schema, which owns every internal object. */
Oid
extension_owner(void)
{
	HeapTuple	tp = SearchSysCache1(NAMESPACEOID, ObjectIdGetDatum(extension_schema()));
	Oid			owner;

	if (!HeapTupleIsValid(tp))
		elog(ERROR, "cache lookup failed for schema notify_ext");
	owner = ((Form_pg_namespace) GETSTRUCT(tp))->nspowner;
	ReleaseSysCache(tp);
	return owner;
}

TupleDesc
event_log_desc(void)
{
	static TupleDesc event_desc = NULL;

	if (event_desc == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
		TupleDesc	desc = CreateTemplateTupleDesc(EV_NATTS);

		TupleDescInitEntry(desc, EV_SEQ + 1, "seq", INT8OID, -1, 0);
		TupleDescInitEntry(desc, EV_OCCURRED_AT + 1, "occurred_at", TIMESTAMPTZOID, -1, 0);
		TupleDescInitEntry(desc, EV_STREAM + 1, "stream", TEXTOID, -1, 0);
		TupleDescInitEntry(desc, EV_OPERATION + 1, "operation", TEXTOID, -1, 0);
		TupleDescInitEntry(desc, EV_RESOURCE_ID + 1, "resource_id", TEXTOID, -1, 0);
		TupleDescInitEntry(desc, EV_RESOURCE_VARIANT + 1, "resource_variant", TEXTOID, -1, 0);
		TupleDescInitEntry(desc, EV_RESOURCE_PATH + 1, "resource_path", TEXTARRAYOID, -1, 0);
		TupleDescInitEntry(desc, EV_ACTOR + 1, "actor", TEXTOID, -1, 0);
		TupleDescInitEntry(desc, EV_PAYLOAD + 1, "payload", JSONOID, -1, 0);
		TupleDescInitEntry(desc, EV_CHANGED + 1, "changed", TEXTARRAYOID, -1, 0);
		event_desc = desc;
		MemoryContextSwitchTo(old);
	}
	return event_desc;
}

void
act_as(Oid role, bool restricted, ActingRole *saved)
{
	int			sec_context;

	GetUserIdAndSecContext(&saved->userid, &saved->sec_context);
	sec_context = saved->sec_context | SECURITY_LOCAL_USERID_CHANGE;
	if (restricted)
		sec_context |= SECURITY_RESTRICTED_OPERATION;
	SetUserIdAndSecContext(role, sec_context);
	saved->guc_nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp",
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
}

/* See worker_connect(). */
static void
pin_worker_settings(void)
{
	Oid			self = GetAuthenticatedUserId();

	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("default_transaction_read_only", "off", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("statement_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("lock_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("idle_in_transaction_session_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("exit_on_error", "off", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("notify_ext.principal", "", PGC_SUSET, PGC_S_OVERRIDE);

	/*
	 * A worker connected without naming a role takes the database's
	 * session_authorization; its check looks the role up in the catalogs.
	 */
	if (GetSessionUserId() != self)
	{
		StartTransactionCommand();
		SetConfigOption("session_authorization", GetUserNameFromId(self, false),
						PGC_SUSET, PGC_S_OVERRIDE);
		CommitTransactionCommand();
	}
	SetConfigOption("role", "none", PGC_SUSET, PGC_S_OVERRIDE);
	if (GetSessionUserId() != self || GetUserId() != self)
		ereport(FATAL,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("notify_ext background worker runs as role %u, not as role %u it connected as",
						GetUserId(), self)));
}

void
worker_connect(Oid dboid, Oid useroid)
{
	BackgroundWorkerInitializeConnectionByOid(dboid, useroid, 0);
	pin_worker_settings();
}

void
act_as_extension_owner(ActingRole *saved)
{
	act_as(extension_owner(), false, saved);
}

void
stop_acting(ActingRole *saved)
{
	AtEOXact_GUC(false, saved->guc_nestlevel);
	SetUserIdAndSecContext(saved->userid, saved->sec_context);
}

/*
 * Bytes from outside the server (a webhook endpoint's answer, a NATS
 * server's error) as text valid in the database's encoding, of at most max
 * bytes: a NUL or an invalid byte becomes '?', and a character cut off at
 * the end is left out.  Stored text that is not valid would fail clients
 * that convert it and the restore of every dump.
 */
char *
valid_db_text(const char *data, int len, int max)
{
	int			enc = GetDatabaseEncoding();
	StringInfoData out;
	int			i = 0;

	initStringInfo(&out);
	while (i < len && out.len < max)
	{
		int			l = pg_encoding_mblen(enc, data + i);

		if (l > len - i)
			break;
		if (data[i] == '\0' || pg_encoding_verifymbchar(enc, data + i, l) != l)
		{
			appendStringInfoChar(&out, '?');
			i++;
			continue;
		}
		if (out.len + l > max)
			break;
		appendBinaryStringInfo(&out, data + i, l);
		i += l;
	}
	return out.data;
}
