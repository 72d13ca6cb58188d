/*
 * ordering.c: numbering events in commit order.
 *
 * A transaction's events get their seq numbers in its pre-commit step, from
 * a per-database counter in shared memory.  Between taking its numbers and
 * becoming visible, the committing backend is listed here as "in flight"
 * with the lowest number it took.  The committed horizon of a database is
 * one below the lowest in-flight number, or the last number handed out when
 * nothing is in flight: every event at or below it is committed (or gone
 * with its aborted transaction), so readers never skip one that appears
 * later.  Open transactions hold numbers only while they commit, so a long
 * transaction holds back nobody.  See docs/ordering.md.
 *
 * The counter is persisted in chunks through the sequence
 * notify_ext.seq_reservation, so numbers are never reused after a restart.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/twophase.h"
#include "access/xact.h"
#include "commands/sequence.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/lmgr.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "catalog/pg_class.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

#include "extension.h"
#include "ordering.h"
#include "shmem.h"

/*
 * Databases the slots are sized for; more use the server's spare shared
 * memory, and slots of dropped databases are reused past this many.
 */
#define ORDERING_MAX_DATABASES 256

/* How many numbers one write to the reservation sequence covers. */
#define ORDERING_RESERVE_CHUNK INT64CONST(1000000)

typedef struct OrderingDatabase
{
	Oid			dboid;			/* hash key */
	Oid			seqrelid;		/* reservation sequence the state belongs to */
	int64		next;			/* next number to hand out */
	int64		limit;			/* numbers below this are persisted as used */
} OrderingDatabase;

typedef struct OrderingInFlight
{
	Oid			dboid;
	pg_atomic_uint64 lo;		/* lowest number taken; 0 when not committing */
} OrderingInFlight;

typedef struct OrderingShared
{
	LWLock	   *lock;
	int			nprocs;
	OrderingInFlight procs[FLEXIBLE_ARRAY_MEMBER];
} OrderingShared;

static OrderingShared *ordering = NULL;
static HTAB *databases = NULL;	/* OrderingDatabase by dboid */

Size
ordering_shmem_size(void)
{
	return add_size(add_size(offsetof(OrderingShared, procs),
							 mul_size(SHMEM_NPROCS, sizeof(OrderingInFlight))),
					shmem_database_table_size(sizeof(OrderingDatabase), ORDERING_MAX_DATABASES));
}

void
ordering_shmem_init(void)
{
	bool		found;

	Size		size = add_size(offsetof(OrderingShared, procs),
									mul_size(SHMEM_NPROCS, sizeof(OrderingInFlight)));

	databases = shmem_database_table("notify_ext ordering databases", sizeof(OrderingDatabase),
									 ORDERING_MAX_DATABASES);
	ordering = ShmemInitStruct("notify_ext ordering", size, &found);
	if (!found)
	{
		int			i;

		memset(ordering, 0, size);
		ordering->lock = &(GetNamedLWLockTranche("notify_ext"))->lock;
		ordering->nprocs = SHMEM_NPROCS;
		for (i = 0; i < ordering->nprocs; i++)
			pg_atomic_init_u64(&ordering->procs[i].lo, 0);
	}
}

static Oid
reservation_sequence(void)
{
	Oid			nsp = extension_schema();
	Oid			relid = get_relname_relid("seq_reservation", nsp);

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("sequence notify_ext.seq_reservation is missing"),
				 errhint("Recreate the extension.")));
	return relid;
}

static Oid
relation_owner(Oid relid)
{
	HeapTuple	tp = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Oid			owner;

	if (!HeapTupleIsValid(tp))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tp))->relowner;
	ReleaseSysCache(tp);
	return owner;
}

/* The slot of this database; with create, claims one (shmem_database_enter()).  Lock held. */
static OrderingDatabase *
database_slot(bool create)
{
	OrderingDatabase *db;
	bool		found;

	if (create)
		db = shmem_database_enter(databases, ORDERING_MAX_DATABASES, MyDatabaseId, &found);
	else
		db = hash_search(databases, &MyDatabaseId, HASH_FIND, &found);
	if (create && db == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("no shared memory is left for the state of database %u", MyDatabaseId),
				 errhint("Restart the server to free the state of databases that no longer use notify_ext.")));
	if (create && !found)
	{
		db->seqrelid = InvalidOid;
		db->next = db->limit = 0;
	}
	return db;
}

/*
 * Extend this database's persisted reservation so that count numbers fit.
 * Runs under a self-conflicting heavyweight lock on the sequence, never
 * under the LWLock, since writing the sequence may wait.
 */
static void
refill(Oid seqrelid, int64 count)
{
	OrderingDatabase *db;
	bool		initialized;
	int64		next;
	int64		new_limit;
	ActingRole	saved_user;

	LockRelationOid(seqrelid, ShareUpdateExclusiveLock);

	LWLockAcquire(ordering->lock, LW_SHARED);
	db = database_slot(false);
	initialized = db != NULL && db->seqrelid == seqrelid;
	next = initialized ? db->next : 0;
	if (initialized && db->next + count <= db->limit)
	{
		/* Another backend refilled meanwhile. */
		LWLockRelease(ordering->lock);
		UnlockRelationOid(seqrelid, ShareUpdateExclusiveLock);
		return;
	}
	LWLockRelease(ordering->lock);

	/* The sequence is closed to users; write it as its owner. */
	act_as(relation_owner(seqrelid), false, &saved_user);

	if (!initialized)
	{
		/* After a restart: continue past everything ever reserved. */
		next = nextval_internal(seqrelid, false) + 1;
	}
	new_limit = next + count + ORDERING_RESERVE_CHUNK;
	DirectFunctionCall2(setval_oid, ObjectIdGetDatum(seqrelid), Int64GetDatum(new_limit - 1));

	stop_acting(&saved_user);

	LWLockAcquire(ordering->lock, LW_EXCLUSIVE);
	db = database_slot(true);
	if (db->seqrelid != seqrelid)
	{
		db->seqrelid = seqrelid;
		db->next = next;
		db->limit = new_limit;
	}
	else
		db->limit = Max(db->limit, new_limit);
	LWLockRelease(ordering->lock);

	UnlockRelationOid(seqrelid, ShareUpdateExclusiveLock);
}

/*
 * Takes count consecutive numbers for the committing transaction and lists
 * it as in flight until ordering_release().  Returns the first number.
 */
int64
ordering_reserve(int64 count)
{
	Oid			seqrelid;

	require_preload();
	Assert(count > 0);
	seqrelid = reservation_sequence();

	for (;;)
	{
		OrderingDatabase *db;

		LWLockAcquire(ordering->lock, LW_EXCLUSIVE);
		db = database_slot(false);
		if (db != NULL && db->seqrelid == seqrelid && db->next + count <= db->limit)
		{
			int64		lo = db->next;
			OrderingInFlight *me = &ordering->procs[MY_PROC_INDEX];

			db->next += count;
			me->dboid = MyDatabaseId;
			pg_atomic_write_u64(&me->lo, (uint64) lo);
			LWLockRelease(ordering->lock);
			return lo;
		}
		LWLockRelease(ordering->lock);
		refill(seqrelid, count);
	}
}

/* The committing transaction is visible now (or gone). */
void
ordering_release(void)
{
	if (ordering == NULL || MyProc == NULL)
		return;
	/* A reader that still sees the old value only stays more cautious. */
	pg_atomic_write_u64(&ordering->procs[MY_PROC_INDEX].lo, 0);
}

int64
ordering_committed_seq(void)
{
	Oid			seqrelid;
	OrderingDatabase *db;
	int64		horizon = -1;
	Datum		last;
	bool		isnull;
	ActingRole	saved_user;

	require_preload();
	seqrelid = reservation_sequence();

	LWLockAcquire(ordering->lock, LW_SHARED);
	db = database_slot(false);
	if (db != NULL && db->seqrelid == seqrelid)
	{
		int			i;

		horizon = db->next - 1;
		for (i = 0; i < ordering->nprocs; i++)
		{
			OrderingInFlight *p = &ordering->procs[i];
			int64		lo = (int64) pg_atomic_read_u64(&p->lo);

			if (lo > 0 && p->dboid == MyDatabaseId && lo - 1 < horizon)
				horizon = lo - 1;
		}
	}
	LWLockRelease(ordering->lock);
	if (horizon >= 0)
		return horizon;

	/*
	 * Nothing was numbered here since the server started, so every number
	 * persisted as used belongs to a finished transaction.  Reading (not
	 * writing) the sequence keeps this usable in read-only transactions.
	 */
	act_as(relation_owner(seqrelid), false, &saved_user);
	{
		LOCAL_FCINFO(fcinfo, 1);

		InitFunctionCallInfoData(*fcinfo, NULL, 1, InvalidOid, NULL, NULL);
		fcinfo->args[0].value = ObjectIdGetDatum(seqrelid);
		fcinfo->args[0].isnull = false;
		last = pg_sequence_last_value(fcinfo);
		isnull = fcinfo->isnull;
	}
	stop_acting(&saved_user);
	return isnull ? 0 : DatumGetInt64(last);
}

PG_FUNCTION_INFO_V1(notify_ext_committed_seq);
Datum
notify_ext_committed_seq(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64(ordering_committed_seq());
}
