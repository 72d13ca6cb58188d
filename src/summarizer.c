/*
 * summarizer.c: summarizes the BRIN block ranges of the event log that
 * writers have left behind, in a background worker per database.
 *
 * The seq index of notify_ext.event_log is a minmax BRIN index, and a BRIN
 * scan reads every unsummarized block range in full.  Ranges must therefore
 * be summarized soon after they fill up, not whenever autovacuum gets round
 * to it.  Summarizing a range means reading all of its rows, about as much
 * work as writing them once more, so the writer that starts a new range
 * does not do it itself: it queues the range it left here, and a worker of
 * its database summarizes it.  The worker is started on demand and exits
 * when it has had nothing to do for a second, so that it never holds up a
 * DROP DATABASE for long.  When no worker can be started, or the queue is
 * full, the writer summarizes in place (see capture.c).
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
#include "storage/proc.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "extension.h"
#include "shmem.h"
#include "summarizer.h"

/* Ranges waiting for a worker, for all databases. */
#define SUMMARY_QUEUE_SIZE 512
/* Databases with a worker at once. */
#define SUMMARIZER_MAX_DATABASES 16
/* A worker with nothing to do this long exits. */
#define SUMMARIZER_IDLE_MS 1000
/*
 * A slot whose worker has not attached this long after it was claimed is
 * given up: that worker failed to start (its database was dropped, or does
 * not accept connections) and will never take the database's requests.
 */
#define SUMMARIZER_ATTACH_TIMEOUT_MS 10000

typedef struct SummaryRequest
{
	Oid			dboid;
	Oid			indexoid;
	BlockNumber blk;			/* first block of the range */
	BlockNumber per_range;		/* the index's pages_per_range */
} SummaryRequest;

typedef struct SummarizerSlot
{
	Oid			dboid;			/* InvalidOid: free */
	bool		running;		/* the worker has attached; latch is set */
	Latch	   *latch;
	TimestampTz claimed_at;		/* when a writer claimed it for dboid */
} SummarizerSlot;

typedef struct SummarizerShared
{
	slock_t		mutex;
	int			nrequests;
	SummaryRequest requests[SUMMARY_QUEUE_SIZE];
	SummarizerSlot slots[SUMMARIZER_MAX_DATABASES];
} SummarizerShared;

static SummarizerShared *shared = NULL;

PGDLLEXPORT void notify_ext_summarizer_main(Datum arg);

Size
summarizer_shmem_size(void)
{
	return sizeof(SummarizerShared);
}

void
summarizer_shmem_init(void)
{
	bool		found;

	shared = ShmemInitStruct("notify_ext summarizer", sizeof(SummarizerShared), &found);
	if (!found)
	{
		memset(shared, 0, sizeof(SummarizerShared));
		SpinLockInit(&shared->mutex);
	}
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

/* Drops the queued requests of database dboid; the caller holds the mutex. */
static void
forget_requests(Oid dboid)
{
	int			kept = 0;
	int			i;

	for (i = 0; i < shared->nrequests; i++)
		if (shared->requests[i].dboid != dboid)
			shared->requests[kept++] = shared->requests[i];
	shared->nrequests = kept;
}

/*
 * Frees the slots whose worker never attached, with their databases'
 * requests (a writer of such a database claims a slot again and starts a
 * new worker).  The caller holds the mutex.
 */
static void
free_abandoned_slots(TimestampTz now)
{
	int			i;

	for (i = 0; i < SUMMARIZER_MAX_DATABASES; i++)
	{
		SummarizerSlot *slot = &shared->slots[i];

		if (slot->dboid != InvalidOid && !slot->running &&
			TimestampDifferenceExceeds(slot->claimed_at, now, SUMMARIZER_ATTACH_TIMEOUT_MS))
		{
			forget_requests(slot->dboid);
			slot->dboid = InvalidOid;
		}
	}
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
	SummarizerSlot *slot = NULL;
	Latch	   *latch = NULL;
	bool		launch = false;
	TimestampTz now;
	int			i;

	if (shared == NULL)
		return false;

	now = GetCurrentTimestamp();
	SpinLockAcquire(&shared->mutex);
	free_abandoned_slots(now);
	for (i = 0; i < SUMMARIZER_MAX_DATABASES; i++)
		if (shared->slots[i].dboid == MyDatabaseId)
			slot = &shared->slots[i];
	if (slot == NULL)
	{
		for (i = 0; i < SUMMARIZER_MAX_DATABASES && slot == NULL; i++)
			if (shared->slots[i].dboid == InvalidOid)
				slot = &shared->slots[i];
		if (slot == NULL || shared->nrequests == SUMMARY_QUEUE_SIZE)
		{
			SpinLockRelease(&shared->mutex);
			return false;
		}
		slot->dboid = MyDatabaseId;
		slot->running = false;
		slot->latch = NULL;
		slot->claimed_at = now;
		launch = true;
	}
	if (shared->nrequests == SUMMARY_QUEUE_SIZE)
	{
		SpinLockRelease(&shared->mutex);
		return false;
	}
	shared->requests[shared->nrequests].dboid = MyDatabaseId;
	shared->requests[shared->nrequests].indexoid = indexoid;
	shared->requests[shared->nrequests].blk = blk;
	shared->requests[shared->nrequests].per_range = per_range;
	shared->nrequests++;
	if (slot->running)
		latch = slot->latch;
	SpinLockRelease(&shared->mutex);

	if (latch != NULL)
		SetLatch(latch);
	if (launch && !start_summarizer(MyDatabaseId))
	{
		/* No worker: take back this database's requests and its slot. */
		SpinLockAcquire(&shared->mutex);
		forget_requests(MyDatabaseId);
		slot->dboid = InvalidOid;
		SpinLockRelease(&shared->mutex);
		return false;
	}
	return true;
}

/* Takes up to max queued ranges of database dboid. */
static int
take_requests(Oid dboid, SummaryRequest *out, int max)
{
	int			n = 0;
	int			kept = 0;
	int			i;

	SpinLockAcquire(&shared->mutex);
	for (i = 0; i < shared->nrequests; i++)
	{
		if (shared->requests[i].dboid == dboid && n < max)
			out[n++] = shared->requests[i];
		else
			shared->requests[kept++] = shared->requests[i];
	}
	shared->nrequests = kept;
	SpinLockRelease(&shared->mutex);
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

/* Frees this worker's slot, if it still holds one; the caller holds the mutex. */
static bool
free_my_slot(void)
{
	bool		freed = false;
	int			i;

	for (i = 0; i < SUMMARIZER_MAX_DATABASES; i++)
		if (shared->slots[i].dboid == my_dboid && shared->slots[i].latch == MyLatch)
		{
			shared->slots[i].dboid = InvalidOid;
			shared->slots[i].running = false;
			shared->slots[i].latch = NULL;
			freed = true;
		}
	return freed;
}

/*
 * At exit.  A worker that leaves when idle has freed its slot already, and
 * requests queued since then belong to the next worker.  One that still
 * holds its slot was terminated (DROP DATABASE ... WITH (FORCE), say): the
 * requests it leaves go with it, or no one might ever take them.  A range
 * left unsummarized that way is summarized by autosummarize.
 */
static void
release_slot(int code, Datum arg)
{
	SpinLockAcquire(&shared->mutex);
	if (free_my_slot())
		forget_requests(my_dboid);
	SpinLockRelease(&shared->mutex);
}

void
notify_ext_summarizer_main(Datum arg)
{
	SummaryRequest batch[64];
	TimestampTz idle_since;
	bool		attached = false;
	int			i;

	my_dboid = DatumGetObjectId(arg);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(my_dboid, InvalidOid, 0);
	pin_worker_search_path();

	SpinLockAcquire(&shared->mutex);
	for (i = 0; i < SUMMARIZER_MAX_DATABASES; i++)
		if (shared->slots[i].dboid == my_dboid && !shared->slots[i].running)
		{
			shared->slots[i].running = true;
			shared->slots[i].latch = MyLatch;
			attached = true;
			break;
		}
	SpinLockRelease(&shared->mutex);
	if (!attached)
		proc_exit(0);			/* another worker serves this database */
	before_shmem_exit(release_slot, (Datum) 0);

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
			bool		pending = false;

			/* Leave only when no request can be stranded. */
			SpinLockAcquire(&shared->mutex);
			for (i = 0; i < shared->nrequests && !pending; i++)
				pending = (shared->requests[i].dboid == my_dboid);
			if (!pending)
				free_my_slot();
			SpinLockRelease(&shared->mutex);
			if (!pending)
				proc_exit(0);
			continue;
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 SUMMARIZER_IDLE_MS / 4, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
