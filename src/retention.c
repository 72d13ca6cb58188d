/*
 * retention.c: settings of retention (see docs/retention.md), and the call
 * into pg_cron's database for schedule_pruning() / unschedule_pruning().
 *
 * The pruning itself is SQL (sql/0.1.0/40_retention.sql).  This file holds
 * what SQL cannot do:
 *
 *   - the GUCs, with check hooks that refuse a value that is not a positive
 *     interval when it is set (so a typo in postgresql.conf is reported at
 *     reload, not by the next pruning run);
 *   - notify_ext._retention_settings(): the settings as jsonb (calling it
 *     also makes sure this library, and so the GUCs, are loaded);
 *   - notify_ext._cron_call(): runs one pg_cron call in the database named
 *     by cron.database_name, where pg_cron keeps its job table, when that
 *     is not the current database.  A backend cannot switch databases, so a
 *     short-lived background worker connects there as the calling role,
 *     makes the call, commits, and hands the result (or the error) back
 *     through a dynamic shared memory segment;
 *   - notify_ext._event_partitions(): the day partitions of the event log
 *     with their bounds, read from pg_inherits and pg_class.relpartbound
 *     directly (prune() calls it on every run; deparsing each bound with
 *     pg_get_expr() and matching it with a regular expression took most of
 *     a run's time);
 *   - notify_ext._index_has_key_below(): whether a btree index on a
 *     timestamptz leads to a visible row below a bound, without planning a
 *     query (prune() asks this before each kind of batched DELETE, and most
 *     runs have nothing to delete);
 *   - notify_ext._start_event_table_dropper(): starts a short-lived
 *     background worker once the calling transaction has committed, which
 *     drops the partitions prune() detached from the event log (see
 *     docs/retention.md, "Dropping expired days").  Removing the files of a
 *     large table at commit takes a while (the kernel frees their cached
 *     pages); done by prune() itself, it would happen while prune() still
 *     holds ACCESS EXCLUSIVE on event_log, stalling every writer.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/relation.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/index.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/dependency.h"
#include "catalog/pg_am.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_depend.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_type.h"
#include "catalog/storage.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/bufmgr.h"
#include "storage/dsm.h"
#include "storage/ipc.h"
#include "storage/lmgr.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/rls.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "notify_ext.h"
#include "extension.h"
#include "event_route.h"
#include "principal.h"
#include "retention.h"

PGDLLEXPORT void notify_ext_cron_worker_main(Datum arg);
PGDLLEXPORT void notify_ext_dropper_worker_main(Datum arg);

static char *event_retention = NULL;
static char *read_notification_retention = NULL;
static char *delivery_retention = NULL;
static int	partitions_ahead = 7;
static int	prune_batch_size = 5000;
static int	prune_max_batches = 100;
static int	prune_lock_timeout_ms = 100;

/* ---------------------------------------------------------------------
 * Settings
 * --------------------------------------------------------------------- */

/*
 * Parses an interval the way interval_in() does, without raising errors
 * (check hooks may run in the postmaster).  Returns false when str is not
 * an interval.
 */
static bool
parse_interval(const char *str, Interval *result)
{
	struct pg_itm_in tt;
	int			dtype;
	int			nf;
	int			dterr;
	char	   *field[MAXDATEFIELDS];
	int			ftype[MAXDATEFIELDS];
	char		workbuf[256];
	char	   *copy;

	memset(&tt, 0, sizeof(tt));
	dterr = ParseDateTime(str, workbuf, sizeof(workbuf), field, ftype, MAXDATEFIELDS, &nf);
	if (dterr == 0)
		dterr = DecodeInterval(field, ftype, nf, INTERVAL_FULL_RANGE, &dtype, &tt);
	if (dterr == DTERR_BAD_FORMAT)
	{
		memset(&tt, 0, sizeof(tt));
		copy = pstrdup(str);
		dterr = DecodeISO8601Interval(copy, &dtype, &tt);
		pfree(copy);
	}
	if (dterr != 0 || dtype != DTK_DELTA)
		return false;
	return itmin2interval(&tt, result) == 0;
}

static bool
retention_check_hook(char **newval, void **extra, GucSource source)
{
	Interval	iv;
	double		approx;

	if (*newval == NULL || !parse_interval(*newval, &iv))
	{
		GUC_check_errcode(ERRCODE_INVALID_PARAMETER_VALUE);
		GUC_check_errmsg("\"%s\" is not an interval", *newval ? *newval : "");
		GUC_check_errhint("Give a positive interval such as '7 days' or '36 hours'.");
		return false;
	}
	/* Months count as 30 days, as in interval comparison. */
	approx = (double) iv.month * DAYS_PER_MONTH * USECS_PER_DAY +
		(double) iv.day * USECS_PER_DAY + (double) iv.time;
	if (approx <= 0)
	{
		GUC_check_errcode(ERRCODE_INVALID_PARAMETER_VALUE);
		GUC_check_errmsg("retention \"%s\" is not positive", *newval);
		GUC_check_errhint("Give a positive interval such as '7 days' or '36 hours'.");
		return false;
	}
	return true;
}

void
retention_init(void)
{
	DefineCustomStringVariable("notify_ext.event_retention",
							   "How long events are kept in the event log.",
							   "An interval. notify_ext.prune() drops the daily partitions of the event log whose "
							   "whole day is older than this.",
							   &event_retention,
							   "7 days",
							   PGC_SUSET, 0,
							   retention_check_hook, NULL, NULL);
	DefineCustomStringVariable("notify_ext.read_notification_retention",
							   "How long read personal notifications are kept.",
							   "An interval, counted from the notification's ts. Unread notifications are never pruned.",
							   &read_notification_retention,
							   "90 days",
							   PGC_SUSET, 0,
							   retention_check_hook, NULL, NULL);
	DefineCustomStringVariable("notify_ext.delivery_retention",
							   "How long webhook delivery records are kept.",
							   "An interval, counted from the record's created_at.",
							   &delivery_retention,
							   "14 days",
							   PGC_SUSET, 0,
							   retention_check_hook, NULL, NULL);
	DefineCustomIntVariable("notify_ext.partitions_ahead",
							"Days ahead for which notify_ext.prune() keeps partitions of the event log ready.",
							NULL,
							&partitions_ahead,
							7, 1, 366,
							PGC_SUSET, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("notify_ext.prune_batch_size",
							"Rows notify_ext.prune() deletes per statement (notifications, deliveries, stray events).",
							NULL,
							&prune_batch_size,
							5000, 100, 1000000,
							PGC_SUSET, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("notify_ext.prune_max_batches",
							"Batches of each kind one notify_ext.prune() call deletes at most; the rest waits for the next call.",
							NULL,
							&prune_max_batches,
							100, 1, 1000000,
							PGC_SUSET, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("notify_ext.prune_lock_timeout",
							"How long notify_ext.prune() tries to get the lock to drop or attach a partition.",
							"It retries NOWAIT for this long, then waits once for at most this long; "
							"if it still has no lock it leaves the partition for the next run. 0 means one NOWAIT try.",
							&prune_lock_timeout_ms,
							100, 0, 10000,
							PGC_SUSET, GUC_UNIT_MS,
							NULL, NULL, NULL);
}

static void
add_key(JsonbParseState **state, const char *key)
{
	JsonbValue	k;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	pushJsonbValue(state, WJB_KEY, &k);
}

static void
add_text(JsonbParseState **state, const char *key, const char *value)
{
	JsonbValue	v;

	add_key(state, key);
	v.type = jbvString;
	v.val.string.val = (char *) value;
	v.val.string.len = strlen(value);
	pushJsonbValue(state, WJB_VALUE, &v);
}

static void
add_int(JsonbParseState **state, const char *key, int64 value)
{
	JsonbValue	v;

	add_key(state, key);
	v.type = jbvNumeric;
	v.val.numeric = int64_to_numeric(value);
	pushJsonbValue(state, WJB_VALUE, &v);
}

/* notify_ext._retention_settings() returns jsonb */
PG_FUNCTION_INFO_V1(notify_ext_retention_settings);
Datum
notify_ext_retention_settings(PG_FUNCTION_ARGS)
{
	JsonbParseState *state = NULL;
	JsonbValue *res;

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	add_text(&state, "event_retention", event_retention);
	add_text(&state, "read_notification_retention", read_notification_retention);
	add_text(&state, "delivery_retention", delivery_retention);
	add_int(&state, "partitions_ahead", partitions_ahead);
	add_int(&state, "prune_batch_size", prune_batch_size);
	add_int(&state, "prune_max_batches", prune_max_batches);
	add_int(&state, "prune_lock_timeout_ms", prune_lock_timeout_ms);
	res = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	PG_RETURN_JSONB_P(JsonbValueToJsonb(res));
}

/*
 * notify_ext._retention_interval(settings jsonb, name text) returns interval
 *
 * settings ->> name as an interval; an error unless it is a positive one.
 * (In C so that prune() does not compile a PL/pgSQL function and enter
 * three subtransactions to read its settings.)
 */
PG_FUNCTION_INFO_V1(notify_ext_retention_interval);
Datum
notify_ext_retention_interval(PG_FUNCTION_ARGS)
{
	char	   *name;
	char	   *str = NULL;
	Interval   *iv = palloc0(sizeof(Interval));
	Interval	zero;

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("notify_ext.%s must be a positive interval, not \"%s\"", "<NULL>", "<NULL>"),
				 errhint("Set it to an interval such as '7 days'.")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (!PG_ARGISNULL(0))
	{
		Jsonb	   *settings = PG_GETARG_JSONB_P(0);
		JsonbValue	vbuf;
		JsonbValue *v = NULL;

		if (JB_ROOT_IS_OBJECT(settings))
			v = getKeyJsonValueFromContainer(&settings->root, name, strlen(name), &vbuf);
		if (v == NULL || v->type == jbvNull)
			str = NULL;
		else if (v->type == jbvString)
			str = pnstrdup(v->val.string.val, v->val.string.len);
		else if (v->type == jbvNumeric)
			str = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v->val.numeric)));
		else if (v->type == jbvBool)
			str = pstrdup(v->val.boolean ? "true" : "false");
		else
			str = JsonbToCString(NULL, v->val.binary.data, v->val.binary.len);
	}
	memset(&zero, 0, sizeof(zero));
	if (str == NULL || !parse_interval(str, iv) ||
		DatumGetBool(DirectFunctionCall2(interval_le, IntervalPGetDatum(iv),
										 IntervalPGetDatum(&zero))))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("notify_ext.%s must be a positive interval, not \"%s\"", name,
						str ? str : "<NULL>"),
				 errhint("Set it to an interval such as '7 days'.")));
	PG_RETURN_INTERVAL_P(iv);
}

/*
 * notify_ext._index_has_key_below(index regclass, bound timestamptz)
 *   returns boolean
 *
 * Whether the btree index, whose first column is a timestamptz, has an
 * entry below bound for a row visible to the current snapshot: the same
 * answer as EXISTS (SELECT 1 FROM <table> WHERE <index predicate> AND
 * <column> < bound), without parsing or planning a query.  Takes
 * ACCESS SHARE on the table and the index, as that query would.  When row
 * level security applies to the table for the current user it answers
 * true (the caller's own statement then decides).
 */
static bool index_has_key_below(Oid indexoid, TimestampTz bound);

PG_FUNCTION_INFO_V1(notify_ext_index_has_key_below);
Datum
notify_ext_index_has_key_below(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(index_has_key_below(PG_GETARG_OID(0), PG_GETARG_TIMESTAMPTZ(1)));
}

static bool
index_has_key_below(Oid indexoid, TimestampTz bound)
{
	Oid			heapoid = IndexGetRelation(indexoid, false);
	Relation	hrel;
	Relation	irel;
	ScanKeyData key;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	bool		any;
	bool		found;

	/*
	 * First the index alone: most of the time it has no entry below bound
	 * at all, and then the table is not even opened (its relcache entry,
	 * with policies and triggers, costs more than the rest in a new
	 * session).  A scan begun as a bitmap scan has no table to fetch from;
	 * amgettuple stops at the first entry.  Only the table's lock is taken,
	 * before the index's, as a query would.
	 */
	LockRelationOid(heapoid, AccessShareLock);
	irel = index_open(indexoid, AccessShareLock);
	if (irel->rd_rel->relam != BTREE_AM_OID ||
		TupleDescAttr(RelationGetDescr(irel), 0)->atttypid != TIMESTAMPTZOID)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a btree index on a timestamptz", RelationGetRelationName(irel))));
	ScanKeyInit(&key, 1, BTLessStrategyNumber, F_TIMESTAMPTZ_LT, TimestampTzGetDatum(bound));
	scan = index_beginscan_bitmap(irel, GetActiveSnapshot(), 1);
	index_rescan(scan, &key, 1, NULL, 0);
	any = index_getnext_tid(scan, ForwardScanDirection) != NULL;
	index_endscan(scan);
	if (!any)
	{
		index_close(irel, NoLock);
		return false;
	}

	/* Entries below bound: is one of their rows visible? */
	hrel = table_open(heapoid, AccessShareLock);
	if (check_enable_rls(heapoid, InvalidOid, true) == RLS_ENABLED)
	{
		index_close(irel, NoLock);
		table_close(hrel, NoLock);
		return true;
	}
	slot = table_slot_create(hrel, NULL);
	scan = index_beginscan(hrel, irel, GetActiveSnapshot(), 1, 0);
	index_rescan(scan, &key, 1, NULL, 0);
	found = index_getnext_slot(scan, ForwardScanDirection, slot);
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(irel, NoLock);
	table_close(hrel, NoLock);
	return found;
}

/* ---------------------------------------------------------------------
 * The partitions of the event log
 * --------------------------------------------------------------------- */

typedef struct EventPartition
{
	Oid			rel;
	char		name[NAMEDATALEN];
	TimestampTz lower;
	TimestampTz upper;
	float4		reltuples;
} EventPartition;

/*
 * The range partitions of notify_ext.event_log whose bounds are values (the
 * default partition has none and is left out), in pg_inherits order; into
 * *parts, returns how many.  Reads the catalogs as of the current catalog
 * snapshot; takes no lock on the partitions.
 */
static int
collect_event_partitions(EventPartition **parts)
{
	Oid			nsp;
	Oid			parent;
	EventPartitionBounds *bounds;
	Oid			deflt;
	int			nbounds;
	int			n = 0;
	int			i;

	nsp = get_namespace_oid("notify_ext", false);
	parent = get_relname_relid("event_log", nsp);
	if (!OidIsValid(parent))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation \"notify_ext.event_log\" does not exist")));

	nbounds = event_partitions_read(parent, &bounds, &deflt);
	*parts = palloc(Max(nbounds, 1) * sizeof(EventPartition));
	for (i = 0; i < nbounds; i++)
	{
		HeapTuple	ctup;
		Form_pg_class form;

		if (bounds[i].lower_unbounded || bounds[i].upper_unbounded)
			continue;
		ctup = SearchSysCache1(RELOID, ObjectIdGetDatum(bounds[i].rel));
		if (!HeapTupleIsValid(ctup))
			continue;
		form = (Form_pg_class) GETSTRUCT(ctup);
		(*parts)[n].rel = bounds[i].rel;
		strlcpy((*parts)[n].name, NameStr(form->relname), NAMEDATALEN);
		(*parts)[n].lower = bounds[i].lower;
		(*parts)[n].upper = bounds[i].upper;
		(*parts)[n].reltuples = form->reltuples;
		n++;
		ReleaseSysCache(ctup);
	}
	pfree(bounds);
	return n;
}

/*
 * notify_ext._event_partitions()
 *   returns table (rel regclass, name text, lower_bound timestamptz, upper_bound timestamptz)
 *
 * The day partitions of the event log with their bounds, unordered.
 */
PG_FUNCTION_INFO_V1(notify_ext_event_partitions);
Datum
notify_ext_event_partitions(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	EventPartition *parts;
	int			n;
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	n = collect_event_partitions(&parts);
	for (i = 0; i < n; i++)
	{
		Datum		values[4];
		bool		nulls[4] = {false, false, false, false};

		values[0] = ObjectIdGetDatum(parts[i].rel);
		values[1] = CStringGetTextDatum(parts[i].name);
		values[2] = TimestampTzGetDatum(parts[i].lower);
		values[3] = TimestampTzGetDatum(parts[i].upper);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* Whether rel is a member of an extension (pg_depend, deptype 'e'). */
static bool
is_extension_member(Relation dep, Oid rel)
{
	ScanKeyData keys[3];
	SysScanDesc scan;
	HeapTuple	tup;
	bool		member = false;

	ScanKeyInit(&keys[0], Anum_pg_depend_classid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(RelationRelationId));
	ScanKeyInit(&keys[1], Anum_pg_depend_objid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(rel));
	ScanKeyInit(&keys[2], Anum_pg_depend_objsubid, BTEqualStrategyNumber, F_INT4EQ,
				Int32GetDatum(0));
	scan = systable_beginscan(dep, DependDependerIndexId, true, NULL, 3, keys);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		Form_pg_depend d = (Form_pg_depend) GETSTRUCT(tup);

		if (d->refclassid == ExtensionRelationId && d->deptype == DEPENDENCY_EXTENSION)
		{
			member = true;
			break;
		}
	}
	systable_endscan(scan);
	return member;
}

/*
 * Whether VACUUM has counted the partition since it last changed: reltuples
 * >= 0, no insert since the last VACUUM, no change since the last ANALYZE,
 * no dead row, and it has been vacuumed.  Then reltuples is its count.
 */
static bool
vacuum_counted(const EventPartition *part)
{
	PgStat_StatTabEntry *tab = pgstat_fetch_stat_tabentry(part->rel);

	return part->reltuples >= 0 && tab != NULL &&
		tab->inserts_since_vacuum == 0 &&
		tab->changes_since_analyze == 0 &&
		tab->n_dead_tuples == 0 &&
		(tab->vacuum_timestamp != 0 || tab->autovac_vacuum_timestamp != 0);
}

/*
 * notify_ext._expired_event_partitions(cutoff timestamptz)
 *   returns table (rel regclass, name text, upper_bound timestamptz,
 *                  reltuples real, vacuum_counted boolean, extension_member boolean)
 *
 * The day partitions of the event log whose upper bound is at or before
 * cutoff, with what prune() needs to know of them before it detaches them:
 * pg_class.reltuples; whether VACUUM has counted the partition since it
 * last changed (vacuum_counted()); whether it is a member of an extension.  All
 * from the catalogs and the statistics, without planning a query.
 */
PG_FUNCTION_INFO_V1(notify_ext_expired_event_partitions);
Datum
notify_ext_expired_event_partitions(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	TimestampTz cutoff = PG_GETARG_TIMESTAMPTZ(0);
	EventPartition *parts;
	Relation	dep = NULL;
	int			n;
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	n = collect_event_partitions(&parts);
	for (i = 0; i < n; i++)
	{
		Datum		values[6];
		bool		nulls[6] = {false, false, false, false, false, false};

		if (parts[i].upper > cutoff)
			continue;
		if (dep == NULL)
			dep = table_open(DependRelationId, AccessShareLock);
		values[0] = ObjectIdGetDatum(parts[i].rel);
		values[1] = CStringGetTextDatum(parts[i].name);
		values[2] = TimestampTzGetDatum(parts[i].upper);
		values[3] = Float4GetDatum(parts[i].reltuples);
		values[4] = BoolGetDatum(vacuum_counted(&parts[i]));
		values[5] = BoolGetDatum(is_extension_member(dep, parts[i].rel));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	if (dep != NULL)
		table_close(dep, AccessShareLock);
	return (Datum) 0;
}

/* ---------------------------------------------------------------------
 * A pg_cron call in pg_cron's database
 * --------------------------------------------------------------------- */

#define CRON_TEXT 1024

typedef enum CronOp
{
	CRON_SCHEDULE = 1,
	CRON_UNSCHEDULE = 2
} CronOp;

typedef struct CronCall
{
	/* in */
	Oid			dboid;
	Oid			useroid;
	CronOp		op;
	char		cron_db[NAMEDATALEN];
	char		job_name[CRON_TEXT];
	char		schedule[CRON_TEXT];
	char		command[CRON_TEXT];
	char		target_db[NAMEDATALEN];
	/* out */
	bool		done;
	bool		failed;
	int64		result;
	int			sqlerrcode;
	char		message[CRON_TEXT];
	char		detail[CRON_TEXT];
	char		hint[CRON_TEXT];
} CronCall;

static void
copy_text(char *dst, const char *src, const char *what)
{
	if (strlen(src) >= CRON_TEXT)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s is too long (%zu bytes, at most %d)", what, strlen(src), CRON_TEXT - 1)));
	strlcpy(dst, src, CRON_TEXT);
}

/*
 * notify_ext._cron_call(op text, job_name text, schedule text, command text)
 * returns bigint
 *
 * op 'schedule': cron.schedule_in_database(job_name, schedule, command,
 * current_database()) in the database of cron.database_name; returns the
 * job id.  op 'unschedule': removes the caller's jobs of that name there;
 * returns how many.  Runs as the current user, and commits on its own: the
 * caller's transaction cannot roll it back.
 */
PG_FUNCTION_INFO_V1(notify_ext_cron_call);
Datum
notify_ext_cron_call(PG_FUNCTION_ARGS)
{
	char	   *op;
	const char *cron_db = GetConfigOption("cron.database_name", true, false);
	Oid			dboid;
	dsm_segment *seg;
	CronCall   *call;
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	BgwHandleStatus status;
	CronCall	out;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("op and job_name must not be null")));
	op = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (cron_db == NULL || cron_db[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_cron is not loaded"),
				 errhint("Install postgresql-15-cron, add pg_cron to shared_preload_libraries, restart, and CREATE EXTENSION pg_cron in the database named by cron.database_name.")));
	dboid = get_database_oid(cron_db, true);
	if (!OidIsValid(dboid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("database \"%s\" named by cron.database_name does not exist", cron_db),
				 errhint("Create it and run CREATE EXTENSION pg_cron there, or point cron.database_name at a database that has pg_cron.")));

	seg = dsm_create(sizeof(CronCall), 0);
	call = dsm_segment_address(seg);
	memset(call, 0, sizeof(CronCall));
	call->dboid = dboid;
	call->useroid = GetUserId();
	strlcpy(call->cron_db, cron_db, NAMEDATALEN);
	strlcpy(call->target_db, get_database_name(MyDatabaseId), NAMEDATALEN);
	copy_text(call->job_name, text_to_cstring(PG_GETARG_TEXT_PP(1)), "job_name");
	if (strcmp(op, "schedule") == 0)
	{
		if (PG_ARGISNULL(2) || PG_ARGISNULL(3))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("schedule and command must not be null")));
		call->op = CRON_SCHEDULE;
		copy_text(call->schedule, text_to_cstring(PG_GETARG_TEXT_PP(2)), "schedule");
		copy_text(call->command, text_to_cstring(PG_GETARG_TEXT_PP(3)), "command");
	}
	else if (strcmp(op, "unschedule") == 0)
		call->op = CRON_UNSCHEDULE;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown pg_cron operation \"%s\"", op)));

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "notify_ext");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "notify_ext_cron_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "notify_ext pg_cron call for %s", call->target_db);
	snprintf(worker.bgw_type, BGW_MAXLEN, "notify_ext pg_cron call");
	worker.bgw_main_arg = UInt32GetDatum(dsm_segment_handle(seg));
	worker.bgw_notify_pid = MyProcPid;

	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("could not start a background worker to reach pg_cron in database \"%s\"", cron_db),
				 errhint("Raise max_worker_processes, or run the pg_cron call given in docs/retention.md in database \"%s\" yourself.", cron_db)));
	status = WaitForBackgroundWorkerShutdown(handle);
	memcpy(&out, call, sizeof(CronCall));
	dsm_detach(seg);

	if (status != BGWH_STOPPED || !out.done)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the background worker calling pg_cron in database \"%s\" ended without an answer", cron_db),
				 errhint("See the server log.")));
	if (out.failed)
		ereport(ERROR,
				(errcode(out.sqlerrcode),
				 errmsg("%s", out.message),
				 out.detail[0] ? errdetail("%s", out.detail) : 0,
				 out.hint[0] ? errhint("%s", out.hint) : 0));
	PG_RETURN_INT64(out.result);
}

void
notify_ext_cron_worker_main(Datum arg)
{
	dsm_segment *seg;
	CronCall   *call;
	MemoryContext cxt;

	/* Terminate only at CHECK_FOR_INTERRUPTS(), never inside a commit. */
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	seg = dsm_attach(DatumGetUInt32(arg));
	if (seg == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("notify_ext pg_cron call: could not attach to its shared memory segment")));
	call = dsm_segment_address(seg);
	BackgroundWorkerInitializeConnectionByOid(call->dboid, call->useroid, 0);
	pin_worker_search_path();

	cxt = CurrentMemoryContext;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PG_TRY();
	{
		Datum		args[4];
		Oid			argtypes[4] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID};
		bool		isnull;
		int			rc;

		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		PushActiveSnapshot(GetTransactionSnapshot());
		pgstat_report_activity(STATE_RUNNING, "notify_ext pg_cron call");

		rc = SPI_execute("SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron'", true, 1);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "SPI_execute failed: %s", SPI_result_code_string(rc));
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("pg_cron is not installed in database \"%s\" (named by cron.database_name)",
							call->cron_db),
					 errhint("Run CREATE EXTENSION pg_cron in database \"%s\".", call->cron_db)));

		args[0] = CStringGetTextDatum(call->job_name);
		if (call->op == CRON_SCHEDULE)
		{
			args[1] = CStringGetTextDatum(call->schedule);
			args[2] = CStringGetTextDatum(call->command);
			args[3] = CStringGetTextDatum(call->target_db);
			rc = SPI_execute_with_args("SELECT cron.schedule_in_database($1, $2, $3, $4)",
									   4, argtypes, args, NULL, false, 1);
		}
		else
			rc = SPI_execute_with_args("SELECT count(cron.unschedule(j.jobid)) FROM cron.job j "
									   "WHERE j.jobname = $1 AND j.username = current_user",
									   1, argtypes, args, NULL, false, 1);
		if (rc != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "pg_cron call failed: %s", SPI_result_code_string(rc));
		call->result = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
												   1, &isnull));
		if (isnull)
			elog(ERROR, "pg_cron call returned null");

		SPI_finish();
		PopActiveSnapshot();
		CommitTransactionCommand();
		call->done = true;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		call->failed = true;
		call->sqlerrcode = edata->sqlerrcode;
		strlcpy(call->message, edata->message ? edata->message : "pg_cron call failed", CRON_TEXT);
		strlcpy(call->detail, edata->detail ? edata->detail : "", CRON_TEXT);
		strlcpy(call->hint, edata->hint ? edata->hint : "", CRON_TEXT);
		call->done = true;
		AbortCurrentTransaction();
	}
	PG_END_TRY();
	pgstat_report_activity(STATE_IDLE, NULL);
	dsm_detach(seg);
	proc_exit(0);
}

/* ---------------------------------------------------------------------
 * Dropping detached event partitions, after prune() has committed
 * --------------------------------------------------------------------- */

/*
 * Most of the WAL that prune() and the dropper write is full-page images of
 * catalog pages (the first change to each since the last checkpoint), and
 * every writer that commits meanwhile flushes it ahead of its own commit
 * record.  Compressed, it is a third to a half of the size.  Only this
 * backend's records are affected.  A server that already compresses is
 * left as it is.
 */
static void
compress_own_wal(GucAction action)
{
	static const char *const methods[] = {"zstd", "lz4", "pglz"};
	const char *current = GetConfigOption("wal_compression", true, false);
	int			i;

	if (current == NULL || strcmp(current, "off") != 0)
		return;
	/* A method this server was built without is refused quietly. */
	for (i = 0; i < lengthof(methods); i++)
		if (set_config_option("wal_compression", methods[i], PGC_SUSET, PGC_S_SESSION,
							  action, true, DEBUG1, false) > 0)
			return;
}

typedef struct DropperArgs
{
	Oid			dboid;
	Oid			useroid;
} DropperArgs;

/*
 * The dropper is registered once the requesting transaction has committed:
 * the postmaster forks it then, so neither the fork nor the worker's start
 * competes for CPU with the writers while prune() runs, and a transaction
 * that rolls back starts nothing.  The worker is fully described while the
 * transaction is open (naming it needs the catalogs, which the commit
 * callback must not read).
 */
static BackgroundWorker pending_dropper;
static bool dropper_pending = false;
static bool dropper_callback_registered = false;

static void
dropper_xact_callback(XactEvent event, void *arg)
{
	BackgroundWorkerHandle *handle;

	if (!dropper_pending)
		return;
	switch (event)
	{
		case XACT_EVENT_COMMIT:
			dropper_pending = false;
			if (!RegisterDynamicBackgroundWorker(&pending_dropper, &handle))
				ereport(LOG,
						(errmsg("notify_ext: no background worker slot to drop expired event partitions; the next notify_ext.prune() tries again")));
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			/* Nothing was detached, or the next prune() finds the tables. */
			dropper_pending = false;
			break;
		default:
			break;
	}
}

/*
 * notify_ext._start_event_table_dropper() returns boolean
 *
 * Arranges for a background worker to start once the current transaction
 * has committed; it calls notify_ext._drop_detached_event_tables() in its
 * own transaction, as the current user.  Returns true (the request is
 * recorded; if no worker slot is free at commit, the server log says so
 * and the tables stay for the next prune() run).
 */
static void start_event_table_dropper(void);

PG_FUNCTION_INFO_V1(notify_ext_start_event_table_dropper);
Datum
notify_ext_start_event_table_dropper(PG_FUNCTION_ARGS)
{
	start_event_table_dropper();
	PG_RETURN_BOOL(true);
}

static void
start_event_table_dropper(void)
{
	BackgroundWorker *worker = &pending_dropper;
	DropperArgs args;

	if (!dropper_callback_registered)
	{
		RegisterXactCallback(dropper_xact_callback, NULL);
		dropper_callback_registered = true;
	}
	memset(&args, 0, sizeof(args));
	args.dboid = MyDatabaseId;
	args.useroid = GetUserId();

	memset(worker, 0, sizeof(*worker));
	worker->bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker->bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker->bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker->bgw_library_name, BGW_MAXLEN, "notify_ext");
	snprintf(worker->bgw_function_name, BGW_MAXLEN, "notify_ext_dropper_worker_main");
	snprintf(worker->bgw_name, BGW_MAXLEN, "notify_ext expired partition dropper for %s",
			 get_database_name(MyDatabaseId));
	snprintf(worker->bgw_type, BGW_MAXLEN, "notify_ext expired partition dropper");
	StaticAssertStmt(sizeof(DropperArgs) <= BGW_EXTRALEN, "DropperArgs too large");
	memcpy(worker->bgw_extra, &args, sizeof(args));
	worker->bgw_main_arg = (Datum) 0;
	worker->bgw_notify_pid = 0;
	dropper_pending = true;
}

/*
 * Removing a large file at once stalls other backends' WAL flushes: on
 * ext4 the truncate of 250 MB day partitions at DROP's commit held a
 * writer's commit back for 50-65 ms.  The dropper therefore shortens each
 * detached table (and its TOAST table) from the end, 32 MB at a time with
 * a 10 ms pause in between, before it drops it (slowest writer commit:
 * 13-19 ms, for about the same throughput).  Truncating is not transactional,
 * which is fine here: the tables are no longer part of the event log, and
 * one left behind (emptied) by a failed drop is dropped by the next run.
 */
#define SHRINK_STEP_BLOCKS ((BlockNumber) (32 * 1024 * 1024 / BLCKSZ))
#define SHRINK_PAUSE_US 10000L

static void
shrink_relation(Oid relid)
{
	Relation	rel;
	BlockNumber nblocks;
	Oid			toastrelid;

	/* Nobody else should be using it; if somebody is, leave it to DROP. */
	if (!ConditionalLockRelationOid(relid, AccessExclusiveLock))
		return;
	rel = try_relation_open(relid, NoLock);
	if (rel == NULL)
		return;
	toastrelid = rel->rd_rel->reltoastrelid;
	nblocks = RelationGetNumberOfBlocks(rel);
	while (nblocks > 0)
	{
		nblocks = nblocks > SHRINK_STEP_BLOCKS ? nblocks - SHRINK_STEP_BLOCKS : 0;
		RelationTruncate(rel, nblocks);
		CHECK_FOR_INTERRUPTS();
		if (nblocks > 0)
			pg_usleep(SHRINK_PAUSE_US);
	}
	relation_close(rel, NoLock);	/* the lock is kept until commit */
	if (OidIsValid(toastrelid))
		shrink_relation(toastrelid);
}

/* Shrinks every detached event table (see shrink_relation()). */
static void
shrink_detached_tables(void)
{
	Oid		   *relids;
	uint64		n;
	uint64		i;

	if (SPI_execute("SELECT t::oid FROM notify_ext._detached_event_tables() t", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "notify_ext._detached_event_tables() failed");
	n = SPI_processed;
	relids = palloc(sizeof(Oid) * Max(n, 1));
	for (i = 0; i < n; i++)
	{
		bool		isnull;

		relids[i] = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
	}
	for (i = 0; i < n; i++)
		shrink_relation(relids[i]);
	pfree(relids);
}

void
notify_ext_dropper_worker_main(Datum arg)
{
	DropperArgs args;
	int			rc;

	memcpy(&args, MyBgworkerEntry->bgw_extra, sizeof(args));
	/* Terminate only at CHECK_FOR_INTERRUPTS(), never inside a commit. */
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(args.dboid, args.useroid, 0);
	pin_worker_search_path();
	compress_own_wal(GUC_ACTION_SET);	/* for the rest of this short life */

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "notify_ext: dropping detached event partitions");
	shrink_detached_tables();
	rc = SPI_execute("SELECT notify_ext._drop_detached_event_tables()", false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute failed: %s", SPI_result_code_string(rc));
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
	proc_exit(0);
}

/* ---------------------------------------------------------------------
 * prune(): the usual run in C, the rest in PL/pgSQL
 * --------------------------------------------------------------------- */

/*
 * A pg_cron run of prune() is the first call in a new session, and almost
 * always finds nothing to delete row by row and no partition to create:
 * it only detaches the days that expired.  Compiling the PL/pgSQL function
 * and parsing and planning its statements then cost about 30 ms of CPU, on
 * a machine whose writers want that CPU.  notify_ext.prune() therefore
 * checks here, from the catalogs and the indexes, whether this is such a
 * run, and does it itself.  Anything else (rows to delete, partitions to
 * create, expired partitions VACUUM has not counted, consumers that may
 * miss events) goes to notify_ext._prune_all(), the PL/pgSQL version, which
 * does the whole run as before.  The checks change nothing, so handing over
 * after them is safe.
 */

/* Whether any visible row of rel (AccessShareLock taken) has attribute
 * attnum (a timestamptz) below bound. */
static bool
table_has_time_below(Oid relid, AttrNumber attnum, TimestampTz bound)
{
	Relation	rel = table_open(relid, AccessShareLock);
	TableScanDesc scan;
	TupleTableSlot *slot;
	bool		found = false;

	if (RelationGetNumberOfBlocks(rel) == 0)
	{
		table_close(rel, NoLock);
		return false;
	}
	slot = table_slot_create(rel, NULL);
	scan = table_beginscan(rel, GetActiveSnapshot(), 0, NULL);
	while (!found && table_scan_getnextslot(scan, ForwardScanDirection, slot))
	{
		bool		isnull;
		Datum		d = slot_getattr(slot, attnum, &isnull);

		found = !isnull && DatumGetTimestampTz(d) < bound;
	}
	table_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	table_close(rel, NoLock);
	return found;
}

/* Whether any visible row of rel exists (AccessShareLock taken). */
static bool
table_has_rows(Oid relid)
{
	Relation	rel = table_open(relid, AccessShareLock);
	TableScanDesc scan;
	TupleTableSlot *slot;
	bool		found = false;

	if (RelationGetNumberOfBlocks(rel) > 0)
	{
		slot = table_slot_create(rel, NULL);
		scan = table_beginscan(rel, GetActiveSnapshot(), 0, NULL);
		found = table_scan_getnextslot(scan, ForwardScanDirection, slot);
		table_endscan(scan);
		ExecDropSingleTupleTableSlot(slot);
	}
	table_close(rel, NoLock);
	return found;
}

/* The name of the day partition for the UTC day of ts plus days. */
static void
day_partition_name(TimestampTz ts, int days, char *name)
{
	int			year;
	int			month;
	int			mday;
	int64		day = ts / USECS_PER_DAY - (ts < 0 && ts % USECS_PER_DAY != 0 ? 1 : 0);

	j2date((int) (day + days + POSTGRES_EPOCH_JDATE), &year, &month, &mday);
	snprintf(name, NAMEDATALEN, "event_log_p%04d%02d%02d", year, month, mday);
}

/* Whether there are detached tables that wait for the dropper. */
static bool
detached_tables_exist(Oid nsp)
{
	Relation	rel = table_open(RelationRelationId, AccessShareLock);
	SysScanDesc scan;
	HeapTuple	tup;
	bool		found = false;

	scan = systable_beginscan(rel, InvalidOid, false, NULL, 0, NULL);
	while (!found && HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		Form_pg_class form = (Form_pg_class) GETSTRUCT(tup);

		found = form->relnamespace == nsp && form->relkind == RELKIND_RELATION &&
			!form->relispartition &&
			strncmp(NameStr(form->relname), "event_log_expired_", 18) == 0;
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return found;
}

/*
 * Locks rel within budget_ms as notify_ext._lock_within() does: NOWAIT
 * tries every 2 ms, then one wait under lock_timeout (which the caller has
 * set to the budget); that wait raises lock_not_available when it fails.
 */
static bool
lock_within(Oid rel, LOCKMODE mode, int budget_ms)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), budget_ms);

	for (;;)
	{
		if (ConditionalLockRelationOid(rel, mode))
			return true;
		if (GetCurrentTimestamp() >= deadline)
			break;
		pg_usleep(2000L);
		CHECK_FOR_INTERRUPTS();
	}
	if (budget_ms <= 0)
		return false;
	LockRelationOid(rel, mode);
	return true;
}

static void
run_utility(const char *sql)
{
	int			rc = SPI_execute(sql, false, 0);

	if (rc != SPI_OK_UTILITY)
		elog(ERROR, "\"%s\" failed: %s", sql, SPI_result_code_string(rc));
}

/*
 * Detaches the expired partitions and renames them event_log_expired_<oid>
 * under the short lock budget, all or nothing (in a subtransaction).
 * Returns false, with nothing changed, when a lock was not to be had.
 */
static bool
detach_expired(Oid log, EventPartition *expired, bool *members, int n)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool done = false;
	char		budget[32];

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		int			nestlevel = NewGUCNestLevel();
		int			i;

		snprintf(budget, sizeof(budget), "%dms", Max(prune_lock_timeout_ms, 1));
		(void) set_config_option("lock_timeout", budget, PGC_SUSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
		if (!lock_within(log, AccessExclusiveLock, prune_lock_timeout_ms))
			ereport(ERROR, (errcode(ERRCODE_LOCK_NOT_AVAILABLE),
							errmsg("could not lock notify_ext.event_log")));
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		for (i = 0; i < n; i++)
		{
			const char *qname = quote_qualified_identifier("notify_ext", expired[i].name);
			char		newname[NAMEDATALEN];

			if (!lock_within(expired[i].rel, AccessExclusiveLock, prune_lock_timeout_ms))
				ereport(ERROR, (errcode(ERRCODE_LOCK_NOT_AVAILABLE),
								errmsg("could not lock %s", qname)));
			run_utility(psprintf("ALTER TABLE notify_ext.event_log DETACH PARTITION %s", qname));
			snprintf(newname, sizeof(newname), "event_log_expired_%u", expired[i].rel);
			run_utility(psprintf("ALTER TABLE %s RENAME TO %s", qname, quote_identifier(newname)));
			/* A member of the extension (CREATE EXTENSION made it) cannot be dropped alone. */
			if (members[i])
				run_utility(psprintf("ALTER EXTENSION notify_ext DROP TABLE %s",
									 quote_qualified_identifier("notify_ext", newname)));
		}
		SPI_finish();
		AtEOXact_GUC(true, nestlevel);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		done = true;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		if (edata->sqlerrcode != ERRCODE_LOCK_NOT_AVAILABLE &&
			edata->sqlerrcode != ERRCODE_T_R_DEADLOCK_DETECTED)
			PG_RE_THROW();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_END_TRY();
	return done;
}

static void
add_names(JsonbParseState **state, const char *key, EventPartition *parts, int n)
{
	int			i;

	add_key(state, key);
	pushJsonbValue(state, WJB_BEGIN_ARRAY, NULL);
	for (i = 0; i < n; i++)
	{
		JsonbValue	v;

		v.type = jbvString;
		v.val.string.val = parts[i].name;
		v.val.string.len = strlen(parts[i].name);
		pushJsonbValue(state, WJB_ELEM, &v);
	}
	pushJsonbValue(state, WJB_END_ARRAY, NULL);
}

static TimestampTz
minus_interval(TimestampTz ts, const char *setting, const char *name)
{
	Interval	iv;

	if (setting == NULL || !parse_interval(setting, &iv))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("notify_ext.%s must be a positive interval, not \"%s\"", name,
						setting ? setting : "<NULL>"),
				 errhint("Set it to an interval such as '7 days'.")));
	return DatumGetTimestampTz(DirectFunctionCall2(timestamptz_mi_interval,
												   TimestampTzGetDatum(ts),
												   IntervalPGetDatum(&iv)));
}

/* The whole run by the PL/pgSQL version. */
static Datum
prune_all(void)
{
	MemoryContext cxt = CurrentMemoryContext;
	Datum		result;
	bool		isnull;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute("SELECT notify_ext._prune_all()", false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "notify_ext._prune_all() failed");
	result = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	MemoryContextSwitchTo(cxt);
	result = isnull ? (Datum) 0 : datumCopy(result, false, -1);
	SPI_finish();
	if (isnull)
		elog(ERROR, "notify_ext._prune_all() returned null");
	return result;
}

/* The run of notify_ext.prune(), with its own WAL compressed. */
static Datum
prune_run(void)
{
	TimestampTz now = GetCurrentTransactionStartTimestamp();
	TimestampTz cutoff;
	Oid			nsp;
	Oid			log;
	Oid			rel;
	Oid			deflt;
	EventPartition *parts;
	EventPartition *expired;
	bool	   *members;
	Relation	dep = NULL;
	int			nparts;
	int			nexpired = 0;
	int64		events = 0;
	bool		detached = false;
	int			i;
	JsonbParseState *state = NULL;
	JsonbValue *res;

	notify_require_service_caller("notify_ext.prune()");
	if (!DatumGetBool(DirectFunctionCall1(pg_try_advisory_xact_lock_int8,
										  Int64GetDatum((int64) DatumGetInt32(
											  DirectFunctionCall1Coll(hashtext, C_COLLATION_OID,
																	  CStringGetTextDatum("notify_ext.prune")))))))
		return prune_all();		/* it reports the other run */
	nsp = get_namespace_oid("notify_ext", false);

	/* Read notifications or delivery records to delete: the PL/pgSQL run. */
	rel = get_relname_relid("notifications_read_ts_idx", nsp);
	if (!OidIsValid(rel) ||
		index_has_key_below(rel, minus_interval(now, read_notification_retention,
												"read_notification_retention")))
		return prune_all();
	if (OidIsValid(get_relname_relid("delivery_log", nsp)))
	{
		rel = get_relname_relid("delivery_log_created_at_idx", nsp);
		if (!OidIsValid(rel) ||
			index_has_key_below(rel, minus_interval(now, delivery_retention, "delivery_retention")))
			return prune_all();
	}

	/* Expired events in the default partition (normally empty). */
	cutoff = minus_interval(now, event_retention, "event_retention");
	log = get_relname_relid("event_log", nsp);
	deflt = get_relname_relid("event_log_default", nsp);
	if (!OidIsValid(log) || !OidIsValid(deflt) ||
		table_has_time_below(deflt, get_attnum(deflt, "occurred_at"), cutoff))
		return prune_all();

	/* Partitions of the coming days to create. */
	for (i = 0; i <= partitions_ahead; i++)
	{
		char		name[NAMEDATALEN];

		day_partition_name(now, i, name);
		if (!OidIsValid(get_relname_relid(name, nsp)))
			return prune_all();
	}

	/*
	 * The expired days: each must be counted by VACUUM, and no consumer may
	 * be behind (then _count_missed_before_drop() has work to do).
	 */
	nparts = collect_event_partitions(&parts);
	expired = palloc(sizeof(EventPartition) * Max(nparts, 1));
	members = palloc(sizeof(bool) * Max(nparts, 1));
	for (i = 0; i < nparts; i++)
	{
		if (parts[i].upper > cutoff)
			continue;
		if (!vacuum_counted(&parts[i]))
			return prune_all();
		if (dep == NULL)
			dep = table_open(DependRelationId, AccessShareLock);
		members[nexpired] = is_extension_member(dep, parts[i].rel);
		expired[nexpired++] = parts[i];
		events += (int64) parts[i].reltuples;
	}
	if (dep != NULL)
		table_close(dep, AccessShareLock);
	if (nexpired > 0)
	{
		rel = get_relname_relid("consumers", nsp);
		if (OidIsValid(rel) && table_has_rows(rel))
			return prune_all();
		detached = detach_expired(log, expired, members, nexpired);
	}

	/* The detached tables (of this run, or left by an earlier one) go once this transaction has committed. */
	if (detached || detached_tables_exist(nsp))
		start_event_table_dropper();

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	add_int(&state, "events", detached ? events : 0);
	add_int(&state, "partitions", detached ? nexpired : 0);
	add_int(&state, "read_notifications", 0);
	add_int(&state, "deliveries", 0);
	add_int(&state, "missed", 0);
	add_int(&state, "partitions_created", 0);
	add_names(&state, "deferred", expired, detached ? 0 : nexpired);
	add_names(&state, "incomplete", NULL, 0);
	if (nexpired > 0)
	{
		JsonbValue	v;

		add_key(&state, "events_from_vacuum_stats");
		v.type = jbvBool;
		v.val.boolean = true;
		pushJsonbValue(&state, WJB_VALUE, &v);
	}
	res = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	return JsonbPGetDatum(JsonbValueToJsonb(res));
}

/* notify_ext.prune() returns jsonb (SECURITY DEFINER; see docs/retention.md) */
PG_FUNCTION_INFO_V1(notify_ext_prune);
Datum
notify_ext_prune(PG_FUNCTION_ARGS)
{
	int			nestlevel = NewGUCNestLevel();
	Datum		result;

	compress_own_wal(GUC_ACTION_SAVE);	/* until this function returns */
	result = prune_run();
	AtEOXact_GUC(true, nestlevel);
	PG_RETURN_DATUM(result);
}
