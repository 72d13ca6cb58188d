/*
 * event_route.c: which partition of notify_ext.event_log an event goes to,
 * found without locking event_log itself.
 *
 * prune() detaches expired day partitions under ACCESS EXCLUSIVE on
 * event_log; a writer that opened event_log (ROW EXCLUSIVE) to route its
 * events through the partition descriptor would wait for prune()'s
 * transaction to end, although it only ever writes into today's partition.
 * So the day partitions and their bounds are cached per backend, read from
 * pg_inherits and pg_class.relpartbound, and a writer locks only the
 * partition it writes into, as INSERT INTO <partition> would.
 *
 * Why that is safe:
 *   - Attaching or detaching a partition (or dropping one) invalidates the
 *     relcache entry of event_log and of the partition; the callback below
 *     then marks the cache stale.  Those invalidations are sent before the
 *     DDL's transaction releases its locks.
 *   - A writer locks the partition the cache names and only then checks
 *     that no invalidation arrived since the cache was read (locking a
 *     relation takes in the invalidations that are pending).  If one did,
 *     it unlocks and looks again.  Once it holds the lock, the partition
 *     cannot be detached or dropped (both need ACCESS EXCLUSIVE on it) until
 *     the writer's transaction ends.
 *   - Events of a day without a partition go to the default partition.  A
 *     partition for that day can only be attached under ACCESS EXCLUSIVE on
 *     the default partition, so the gap a writer found stays a gap while it
 *     holds its lock on the default partition.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/pg_class.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_partitioned_table.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "extension.h"
#include "event_route.h"

static MemoryContext route_cxt = NULL;
static EventPartitionBounds *routed = NULL;	/* sorted by lower */
static int	nrouted = 0;
static Oid	routed_log = InvalidOid;
static Oid	routed_default = InvalidOid;
static bool route_valid = false;
static uint64 route_generation = 0;	/* bumped by every relevant invalidation */
static bool callback_registered = false;

static void
route_relcache_callback(Datum arg, Oid relid)
{
	int			i;

	if (!route_valid)
		return;
	if (relid == InvalidOid || relid == routed_log || relid == routed_default)
	{
		route_valid = false;
		route_generation++;
		return;
	}
	for (i = 0; i < nrouted; i++)
		if (routed[i].rel == relid)
		{
			route_valid = false;
			route_generation++;
			return;
		}
}

static void
wrong_shape(const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("notify_ext.event_log does not have the expected shape: %s", what),
			 errhint("Recreate the extension.")));
}

/* One bound of a range partition of event_log; false for MINVALUE/MAXVALUE. */
static bool
bound_value(List *datums, TimestampTz *value)
{
	PartitionRangeDatum *prd;
	Const	   *c;

	if (list_length(datums) != 1)
		wrong_shape("a partition bound with more than one column");
	prd = linitial_node(PartitionRangeDatum, datums);
	if (prd->kind != PARTITION_RANGE_DATUM_VALUE)
		return false;
	if (prd->value == NULL || !IsA(prd->value, Const))
		wrong_shape("a partition bound that is not a constant");
	c = (Const *) prd->value;
	if (c->constisnull || c->consttype != TIMESTAMPTZOID)
		wrong_shape("a partition bound that is not a timestamptz");
	*value = DatumGetTimestampTz(c->constvalue);
	return true;
}

static int
compare_lower(const void *a, const void *b)
{
	TimestampTz la = ((const EventPartitionBounds *) a)->lower;
	TimestampTz lb = ((const EventPartitionBounds *) b)->lower;

	return la < lb ? -1 : (la > lb ? 1 : 0);
}

/*
 * The partitions of event_log (log), read from pg_inherits and
 * pg_class.relpartbound: into *parts (allocated in the current memory
 * context), returns how many, in pg_inherits order.  The default partition
 * is left out and returned in *deflt (InvalidOid: none).  Takes no lock on
 * the partitions.  Raises an error on a bound the extension never makes.
 */
int
event_partitions_read(Oid log, EventPartitionBounds **parts, Oid *deflt)
{
	Relation	inh;
	ScanKeyData skey;
	SysScanDesc scan;
	HeapTuple	tup;
	int			n = 0;
	int			size = 32;

	*parts = palloc(size * sizeof(EventPartitionBounds));
	*deflt = InvalidOid;
	inh = table_open(InheritsRelationId, AccessShareLock);
	ScanKeyInit(&skey, Anum_pg_inherits_inhparent, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(log));
	scan = systable_beginscan(inh, InheritsParentIndexId, true, NULL, 1, &skey);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		Oid			child = ((Form_pg_inherits) GETSTRUCT(tup))->inhrelid;
		HeapTuple	ctup;
		Datum		datum;
		bool		isnull;
		PartitionBoundSpec *spec;
		EventPartitionBounds *p;

		ctup = SearchSysCache1(RELOID, ObjectIdGetDatum(child));
		if (!HeapTupleIsValid(ctup))
			continue;
		datum = SysCacheGetAttr(RELOID, ctup, Anum_pg_class_relpartbound, &isnull);
		if (isnull)
			wrong_shape("a partition without a bound");
		spec = (PartitionBoundSpec *) stringToNode(TextDatumGetCString(datum));
		ReleaseSysCache(ctup);
		if (!IsA(spec, PartitionBoundSpec))
			wrong_shape("a partition without a bound");
		if (spec->is_default)
		{
			*deflt = child;
			continue;
		}
		if (n == size)
		{
			size *= 2;
			*parts = repalloc(*parts, size * sizeof(EventPartitionBounds));
		}
		p = &(*parts)[n++];
		p->rel = child;
		p->lower_unbounded = !bound_value(spec->lowerdatums, &p->lower);
		if (p->lower_unbounded)
			p->lower = DT_NOBEGIN;
		p->upper_unbounded = !bound_value(spec->upperdatums, &p->upper);
		if (p->upper_unbounded)
			p->upper = DT_NOEND;
	}
	systable_endscan(scan);
	table_close(inh, AccessShareLock);
	return n;
}

/* Reads the partitions of event_log from the catalogs. */
static void
load_routes(void)
{
	Oid			nsp;
	Oid			log;
	HeapTuple	tup;
	Form_pg_partitioned_table key;
	EventPartitionBounds *read;
	EventPartitionBounds *parts;
	int			n;
	Oid			deflt;
	uint64		generation;

	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(route_relcache_callback, (Datum) 0);
		callback_registered = true;
	}
	if (route_cxt == NULL)
		route_cxt = AllocSetContextCreate(TopMemoryContext, "notify_ext event partitions",
										  ALLOCSET_SMALL_SIZES);

	/* What committed before now must be seen (the catalog snapshot too). */
	AcceptInvalidationMessages();
	generation = route_generation;

	nsp = extension_schema();
	log = get_relname_relid("event_log", nsp);
	if (!OidIsValid(log))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table notify_ext.event_log is missing"),
				 errhint("Recreate the extension.")));
	tup = SearchSysCache1(PARTRELID, ObjectIdGetDatum(log));
	if (!HeapTupleIsValid(tup))
		wrong_shape("it is not partitioned");
	key = (Form_pg_partitioned_table) GETSTRUCT(tup);
	if (key->partstrat != PARTITION_STRATEGY_RANGE || key->partnatts != 1 ||
		key->partattrs.values[0] != get_attnum(log, "occurred_at"))
		wrong_shape("it is not partitioned by range of occurred_at");
	ReleaseSysCache(tup);

	/* Read in the caller's context (the parsed bounds are garbage after). */
	n = event_partitions_read(log, &read, &deflt);
	parts = MemoryContextAlloc(route_cxt, Max(n, 1) * sizeof(EventPartitionBounds));
	memcpy(parts, read, n * sizeof(EventPartitionBounds));
	pfree(read);
	qsort(parts, n, sizeof(EventPartitionBounds), compare_lower);

	if (routed != NULL)
		pfree(routed);
	routed = parts;
	nrouted = n;
	routed_log = log;
	routed_default = deflt;
	/* An invalidation taken in while reading: read again next time. */
	route_valid = (generation == route_generation);
}

/*
 * The partition that holds events of ts according to the cache, and the
 * range of ts it is chosen for: a day partition's bounds, or the gap
 * between day partitions for the default one.  InvalidOid when there is no
 * partition for ts.
 */
static Oid
lookup_route(TimestampTz ts, TimestampTz *lower, TimestampTz *upper, bool *upper_unbounded)
{
	int			lo = 0;
	int			hi = nrouted;

	/* the last partition whose lower bound is <= ts */
	while (lo < hi)
	{
		int			mid = (lo + hi) / 2;

		if (routed[mid].lower <= ts)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo > 0 && (routed[lo - 1].upper_unbounded || ts < routed[lo - 1].upper))
	{
		*lower = routed[lo - 1].lower;
		*upper = routed[lo - 1].upper;
		*upper_unbounded = routed[lo - 1].upper_unbounded;
		return routed[lo - 1].rel;
	}
	*lower = lo > 0 ? routed[lo - 1].upper : DT_NOBEGIN;
	*upper_unbounded = (lo == nrouted);
	*upper = lo < nrouted ? routed[lo].lower : DT_NOEND;
	return routed_default;
}

/*
 * Opens and locks (with mode) the partition of notify_ext.event_log that
 * holds events that occurred at ts, without locking event_log.  Sets
 * [*lower, *upper) to the range of occurred_at that belongs in it
 * (*upper_unbounded: no upper end); that stays so until the transaction
 * ends.  Raises 23514 when no partition holds ts.
 */
Relation
event_route_open(TimestampTz ts, LOCKMODE mode,
				 TimestampTz *lower, TimestampTz *upper, bool *upper_unbounded)
{
	for (;;)
	{
		uint64		generation;
		Oid			rel;

		if (!route_valid)
			load_routes();
		generation = route_generation;
		rel = lookup_route(ts, lower, upper, upper_unbounded);
		if (!OidIsValid(rel))
		{
			if (!route_valid)
				continue;
			ereport(ERROR,
					(errcode(ERRCODE_CHECK_VIOLATION),
					 errmsg("no partition of notify_ext.event_log holds events of %s",
							timestamptz_to_str(ts)),
					 errhint("Run notify_ext.create_event_partitions().")));
		}
		/* Takes in the invalidations of whoever held the lock before. */
		LockRelationOid(rel, mode);
		if (route_valid && generation == route_generation)
			return table_open(rel, NoLock);
		UnlockRelationOid(rel, mode);
	}
}

/* Whether ts lies in [lower, upper). */
bool
event_route_holds(TimestampTz ts, TimestampTz lower, TimestampTz upper, bool upper_unbounded)
{
	return ts >= lower && (upper_unbounded || ts < upper);
}
