/*
 * summarizer.c: summarizes the BRIN block ranges of the event log that
 * writers have left behind, in a background worker per database.
 *
 * The seq index of each partition is a minmax BRIN index, and a BRIN scan
 * reads every unsummarized block range in full.  BRIN's own autosummarize
 * leaves a filled range to autovacuum, which takes such work items once per
 * autovacuum_naptime; until then every read near the head of the log reads
 * all ranges filled since.  This worker summarizes each range as soon as
 * the writers leave it, which is what keeps a consumer's fetch at the head
 * cheap while writers insert (the figures are in docs/design.md, "Hand-built
 * pieces").  Summarizing a range reads all of its rows, so the writer that
 * starts a new range queues the one it left (event_write.c) instead of
 * summarizing it; when no worker can be started, or the queue is full, it
 * summarizes in place.  The worker is started on demand and exits after a
 * second without work, so that it never holds up a DROP DATABASE for long.
 * autosummarize stays on for whatever is missed.
 *
 * Each database with a worker has an entry, with its worker's latch and
 * its queue, in a shared table keyed by database OID (shmem.c).
 */
#include "postgres.h"

#include "access/table.h"
#include "access/xact.h"
#include "catalog/index.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "extension.h"
#include "shmem.h"
#include "summarizer.h"

/* Ranges waiting for a database's worker. */
#define SUMMARY_QUEUE_SIZE 256
/* Databases with a worker at once; a writer of any other summarizes itself. */
#define SUMMARIZER_MAX_DATABASES 16
/* A worker with nothing to do this long exits. */
#define SUMMARIZER_IDLE_MS 1000
/*
 * A database whose worker has not attached this long after a writer asked
 * for it is given up: that worker failed to start (its database was being
 * dropped, or did not accept connections) and will never take the
 * requests.
 */
#define SUMMARIZER_ATTACH_TIMEOUT_MS 10000

typedef struct SummaryRequest
{
	Oid			indexoid;
	BlockNumber blk;			/* first block of the range */
	BlockNumber per_range;		/* the index's pages_per_range */
} SummaryRequest;

/* A database with a worker, started or asked for. */
typedef struct SummarizerDatabase
{
	Oid			dboid;			/* the key */
	bool		running;		/* the worker has attached; latch is set */
	Latch	   *latch;
	TimestampTz claimed_at;		/* when a writer asked for the worker */
	int			nrequests;
	SummaryRequest requests[SUMMARY_QUEUE_SIZE];
} SummarizerDatabase;

typedef struct SummarizerShared
{
	LWLock		lock;			/* guards the table of databases */
} SummarizerShared;

static SummarizerShared *shared = NULL;
static HTAB *databases = NULL;	/* SummarizerDatabase by dboid */

PGDLLEXPORT void notify_ext_summarizer_main(Datum arg);

Size
summarizer_shmem_size(void)
{
	return add_size(sizeof(SummarizerShared),
					shmem_database_table_size(sizeof(SummarizerDatabase), SUMMARIZER_MAX_DATABASES));
}

void
summarizer_shmem_init(void)
{
	bool		found;

	shared = ShmemInitStruct("notify_ext summarizer", sizeof(SummarizerShared), &found);
	if (!found)
		LWLockInitialize(&shared->lock, LWLockNewTrancheId());
	LWLockRegisterTranche(shared->lock.tranche, "notify_ext summarizer");
	databases = shmem_database_table("notify_ext summarizer databases", sizeof(SummarizerDatabase),
									 SUMMARIZER_MAX_DATABASES);
}

static bool
start_summarizer(Oid dboid)
{
	char		name[BGW_MAXLEN];
	BackgroundWorkerHandle *handle;

	snprintf(name, sizeof(name), "notify_ext event log summarizer for database %u", dboid);
	return start_worker("notify_ext_summarizer_main", "notify_ext event log summarizer", name,
						ObjectIdGetDatum(dboid), NULL, 0, false, &handle);
}

/*
 * Forgets the databases whose worker never attached, with their requests
 * (a writer of such a database asks for a new worker).  The caller holds
 * the lock exclusively.
 */
static void
forget_abandoned_databases(TimestampTz now)
{
	HASH_SEQ_STATUS status;
	SummarizerDatabase *db;

	hash_seq_init(&status, databases);
	while ((db = hash_seq_search(&status)) != NULL)
		if (!db->running && TimestampDifferenceExceeds(db->claimed_at, now, SUMMARIZER_ATTACH_TIMEOUT_MS))
			hash_search(databases, &db->dboid, HASH_REMOVE, NULL);
}

/*
 * Queues the block range of the BRIN index that starts at blk for the
 * worker of this database, starting the worker when there is none.  Returns
 * false when the range is not queued (the queue is full, or no worker can
 * be started): the caller then summarizes it itself.  Never raises errors.
 */
bool
summarizer_request(Oid indexoid, BlockNumber blk, BlockNumber per_range)
{
	SummarizerDatabase *db;
	Latch	   *latch = NULL;
	bool		launch = false;
	TimestampTz now;

	if (shared == NULL)
		return false;

	now = GetCurrentTimestamp();
	LWLockAcquire(&shared->lock, LW_EXCLUSIVE);
	forget_abandoned_databases(now);
	db = hash_search(databases, &MyDatabaseId, HASH_FIND, NULL);
	if (db == NULL)
	{
		bool		found;

		if (hash_get_num_entries(databases) < SUMMARIZER_MAX_DATABASES)
			db = hash_search(databases, &MyDatabaseId, HASH_ENTER_NULL, &found);
		if (db == NULL)
		{
			LWLockRelease(&shared->lock);
			return false;
		}
		db->running = false;
		db->latch = NULL;
		db->claimed_at = now;
		db->nrequests = 0;
		launch = true;
	}
	if (db->nrequests == SUMMARY_QUEUE_SIZE)
	{
		LWLockRelease(&shared->lock);
		return false;
	}
	db->requests[db->nrequests].indexoid = indexoid;
	db->requests[db->nrequests].blk = blk;
	db->requests[db->nrequests].per_range = per_range;
	db->nrequests++;
	if (db->running)
		latch = db->latch;
	LWLockRelease(&shared->lock);

	if (latch != NULL)
		SetLatch(latch);
	if (launch && !start_summarizer(MyDatabaseId))
	{
		/* No worker: take back this database's entry and its requests. */
		LWLockAcquire(&shared->lock, LW_EXCLUSIVE);
		db = hash_search(databases, &MyDatabaseId, HASH_FIND, NULL);
		if (db != NULL && !db->running)
			hash_search(databases, &MyDatabaseId, HASH_REMOVE, NULL);
		LWLockRelease(&shared->lock);
		return false;
	}
	return true;
}

/* Takes up to max queued ranges of database dboid. */
static int
take_requests(Oid dboid, SummaryRequest *out, int max)
{
	SummarizerDatabase *db;
	int			n = 0;

	LWLockAcquire(&shared->lock, LW_EXCLUSIVE);
	db = hash_search(databases, &dboid, HASH_FIND, NULL);
	if (db != NULL)
	{
		n = Min(max, db->nrequests);
		memcpy(out, db->requests, sizeof(SummaryRequest) * n);
		db->nrequests -= n;
		memmove(db->requests, db->requests + n, sizeof(SummaryRequest) * db->nrequests);
	}
	LWLockRelease(&shared->lock);
	return n;
}

/*
 * Summarizes the BRIN range of the index that starts at blk, and the one
 * before it in case that one's turn was skipped.  Never waits: while the
 * table is busy (another summarizer, VACUUM, a detach) or gone, nothing is
 * done, and later requests and autosummarize catch up.  Used by the worker,
 * and by writers when no worker can take a range.
 */
void
summarize_range_nowait(Oid indexoid, BlockNumber blk, BlockNumber per_range)
{
	Oid			heapoid = IndexGetRelation(indexoid, true);
	Relation	heap;
	ActingRole	saved_user;

	if (!OidIsValid(heapoid) || !ConditionalLockRelationOid(heapoid, ShareUpdateExclusiveLock))
		return;
	/* Dropped while we were not holding the lock? */
	heap = try_table_open(heapoid, NoLock);
	if (heap != NULL && SearchSysCacheExists1(RELOID, ObjectIdGetDatum(indexoid)))
	{
		/* brin_summarize_range() wants the index's owner. */
		act_as(heap->rd_rel->relowner, true, &saved_user);
		if (blk >= per_range)
			DirectFunctionCall2(brin_summarize_range, ObjectIdGetDatum(indexoid),
								Int64GetDatum((int64) (blk - per_range)));
		DirectFunctionCall2(brin_summarize_range, ObjectIdGetDatum(indexoid),
							Int64GetDatum((int64) blk));
		stop_acting(&saved_user);
	}
	if (heap != NULL)
		table_close(heap, NoLock);
	/* A summary is not transactional: no need to keep the lock to commit. */
	UnlockRelationOid(heapoid, ShareUpdateExclusiveLock);
}

static Oid	my_dboid = InvalidOid;

/*
 * Removes this worker's database entry, if it is still this worker's, with
 * the requests queued there; the caller holds the lock exclusively.
 */
static void
leave_database(void)
{
	SummarizerDatabase *db = hash_search(databases, &my_dboid, HASH_FIND, NULL);

	if (db != NULL && db->running && db->latch == MyLatch)
		hash_search(databases, &my_dboid, HASH_REMOVE, NULL);
}

/*
 * At exit.  A worker that leaves when idle has removed its entry already,
 * and requests queued since then belong to the next worker.  One that
 * still has its entry was terminated (DROP DATABASE ... WITH (FORCE), say):
 * the requests it leaves go with it, or no one might ever take them.  A
 * range left unsummarized that way is summarized by autosummarize.
 */
static void
release_database(int code, Datum arg)
{
	LWLockAcquire(&shared->lock, LW_EXCLUSIVE);
	leave_database();
	LWLockRelease(&shared->lock);
}

void
notify_ext_summarizer_main(Datum arg)
{
	SummaryRequest batch[64];
	TimestampTz idle_since;
	SummarizerDatabase *db;
	bool		attached = false;
	int			i;

	my_dboid = DatumGetObjectId(arg);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	worker_connect(my_dboid, InvalidOid);

	LWLockAcquire(&shared->lock, LW_EXCLUSIVE);
	db = hash_search(databases, &my_dboid, HASH_FIND, NULL);
	if (db != NULL && !db->running)
	{
		db->running = true;
		db->latch = MyLatch;
		attached = true;
	}
	LWLockRelease(&shared->lock);
	if (!attached)
		proc_exit(0);			/* another worker serves this database */
	before_shmem_exit(release_database, (Datum) 0);

	idle_since = GetCurrentTimestamp();
	for (;;)
	{
		int			n;

		CHECK_FOR_INTERRUPTS();
		n = take_requests(my_dboid, batch, lengthof(batch));
		if (n > 0)
		{
			SetCurrentStatementStartTimestamp();
			StartTransactionCommand();
			pgstat_report_activity(STATE_RUNNING, "notify_ext: summarizing event log block ranges");
			for (i = 0; i < n; i++)
				summarize_range_nowait(batch[i].indexoid, batch[i].blk, batch[i].per_range);
			CommitTransactionCommand();
			pgstat_report_activity(STATE_IDLE, NULL);
			idle_since = GetCurrentTimestamp();
			continue;
		}
		if (TimestampDifferenceExceeds(idle_since, GetCurrentTimestamp(), SUMMARIZER_IDLE_MS))
		{
			bool		pending;

			/* Leave only when no request can be stranded. */
			LWLockAcquire(&shared->lock, LW_EXCLUSIVE);
			db = hash_search(databases, &my_dboid, HASH_FIND, NULL);
			pending = (db != NULL && db->nrequests > 0);
			if (!pending)
				leave_database();
			LWLockRelease(&shared->lock);
			if (!pending)
				proc_exit(0);
			continue;
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 SUMMARIZER_IDLE_MS / 4, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
