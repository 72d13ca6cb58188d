/*
 * commit_stats.c: events committed per second, per database, in shared
 * memory.
 *
 * After each commit that recorded events, the committed hook adds their
 * number to the current second's bucket of the database's slot: a ring of
 * one bucket per second, so that "events committed in the last minute"
 * costs a read of 64 counters rather than a scan of the event log.  Slots
 * are claimed by the first commit of a database and kept until the server
 * restarts; counts start at zero with the server.
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/timestamp.h"

#include "commit_stats.h"
#include "event_buffer.h"
#include "shmem.h"

#define COMMIT_STATS_DATABASES 64
#define COMMIT_STATS_BUCKETS 64	/* a power of two above COMMIT_STATS_SECONDS */

typedef struct CommitBucket
{
	int64		second;			/* Unix second the count belongs to */
	int64		events;
} CommitBucket;

typedef struct CommitSlot
{
	slock_t		mutex;
	Oid			dboid;			/* InvalidOid: free */
	CommitBucket buckets[COMMIT_STATS_BUCKETS];
} CommitSlot;

typedef struct CommitStatsShared
{
	slock_t		mutex;			/* claims slots */
	CommitSlot	slots[COMMIT_STATS_DATABASES];
} CommitStatsShared;

static CommitStatsShared *commit_stats = NULL;
static CommitSlot *my_slot = NULL;	/* this backend's database's, once known */

Size
commit_stats_shmem_size(void)
{
	return sizeof(CommitStatsShared);
}

void
commit_stats_shmem_init(void)
{
	bool		found;

	commit_stats = ShmemInitStruct("notify_ext commit stats", sizeof(CommitStatsShared), &found);
	if (!found)
	{
		memset(commit_stats, 0, sizeof(CommitStatsShared));
		SpinLockInit(&commit_stats->mutex);
		for (int i = 0; i < COMMIT_STATS_DATABASES; i++)
			SpinLockInit(&commit_stats->slots[i].mutex);
	}
}

/* The slot of this database; with claim, takes a free one.  NULL if none. */
static CommitSlot *
database_slot(bool claim)
{
	CommitSlot *free_slot = NULL;

	if (my_slot != NULL)
		return my_slot;
	if (commit_stats == NULL || !OidIsValid(MyDatabaseId))
		return NULL;
	SpinLockAcquire(&commit_stats->mutex);
	for (int i = 0; i < COMMIT_STATS_DATABASES && my_slot == NULL; i++)
	{
		CommitSlot *s = &commit_stats->slots[i];

		if (s->dboid == MyDatabaseId)
			my_slot = s;
		else if (s->dboid == InvalidOid && free_slot == NULL)
			free_slot = s;
	}
	if (my_slot == NULL && claim && free_slot != NULL)
	{
		free_slot->dboid = MyDatabaseId;
		my_slot = free_slot;
	}
	SpinLockRelease(&commit_stats->mutex);
	return my_slot;
}

static int64
unix_second(void)
{
	return (int64) (GetCurrentTimestamp() / USECS_PER_SEC);
}

static void
count_committed(int64 nevents)
{
	CommitSlot *s = database_slot(true);
	int64		now = unix_second();
	CommitBucket *b;

	if (s == NULL || nevents <= 0)
		return;
	b = &s->buckets[now % COMMIT_STATS_BUCKETS];
	SpinLockAcquire(&s->mutex);
	if (b->second != now)
	{
		b->second = now;
		b->events = 0;
	}
	b->events += nevents;
	SpinLockRelease(&s->mutex);
}

int64
commit_stats_recent(int seconds)
{
	CommitSlot *s = database_slot(false);
	int64		now = unix_second();
	int64		total = 0;

	if (s == NULL)
	{
		bool		free_slot = false;

		if (commit_stats == NULL)
			return -1;
		/* No commit since the server started, unless every slot is taken. */
		SpinLockAcquire(&commit_stats->mutex);
		for (int i = 0; i < COMMIT_STATS_DATABASES && !free_slot; i++)
			free_slot = commit_stats->slots[i].dboid == InvalidOid;
		SpinLockRelease(&commit_stats->mutex);
		return free_slot ? 0 : -1;
	}
	seconds = Max(1, Min(seconds, COMMIT_STATS_SECONDS));
	SpinLockAcquire(&s->mutex);
	for (int i = 0; i < COMMIT_STATS_BUCKETS; i++)
		if (s->buckets[i].second > now - seconds && s->buckets[i].second <= now)
			total += s->buckets[i].events;
	SpinLockRelease(&s->mutex);
	return total;
}

void
commit_stats_init(void)
{
	static const EventsHooks hooks = {NULL, count_committed};

	event_buffer_add_hooks(&hooks);
}

/*
 * notify_ext._events_committed_recently(seconds integer) returns bigint:
 * events this database committed in the last seconds (1 to 60); NULL when
 * they are not counted (no slot was free for the database).
 */
PG_FUNCTION_INFO_V1(notify_ext_events_committed_recently);
Datum
notify_ext_events_committed_recently(PG_FUNCTION_ARGS)
{
	int32		seconds = PG_GETARG_INT32(0);
	int64		n;

	if (seconds < 1 || seconds > COMMIT_STATS_SECONDS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("seconds must be between 1 and %d, not %d", COMMIT_STATS_SECONDS, seconds)));
	n = commit_stats_recent(seconds);
	if (n < 0)
		PG_RETURN_NULL();
	PG_RETURN_INT64(n);
}
