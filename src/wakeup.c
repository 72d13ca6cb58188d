/*
 * wakeup.c: telling consumers that events have committed.
 *
 * In the pre-commit step of a transaction that recorded events, the
 * consumers whose scope they touch get one NOTIFY each on their channel
 * (it arrives once the transaction commits); after the commit, sessions
 * long-polling in this database are woken through their latches.
 * Consumers are found from their scopes, cached per session until a commit
 * changes consumers: those of a resource are indexed by its id, and an
 * event's path leads to them.
 *
 * A consumer's channel is a keyed hash of its id (consumer_channel()), so
 * knowing a consumer id is not enough to LISTEN, and a wake-up carries only
 * the consumer id and a seq.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/uuid.h"

#include "event_buffer.h"
#include "extension.h"
#include "keys.h"
#include "scope.h"
#include "shmem.h"
#include "wakeup.h"

/* ---------------------------------------------------------------------
 * Shared state: a generation bumped when consumers change, and the
 * sessions waiting in a long poll.
 * --------------------------------------------------------------------- */

typedef struct WakeupShared
{
	pg_atomic_uint64 generation;
	pg_atomic_uint32 nwaiters;
	int			nprocs;
	pg_atomic_uint32 waiting_db[FLEXIBLE_ARRAY_MEMBER];
} WakeupShared;

static WakeupShared *wakeup_shared = NULL;

Size
wakeup_shmem_size(void)
{
	return add_size(offsetof(WakeupShared, waiting_db),
					mul_size(SHMEM_NPROCS, sizeof(pg_atomic_uint32)));
}

void
wakeup_shmem_init(void)
{
	bool		found;

	wakeup_shared = ShmemInitStruct("notify_ext wake-ups", wakeup_shmem_size(), &found);
	if (!found)
	{
		int			i;

		wakeup_shared->nprocs = SHMEM_NPROCS;
		pg_atomic_init_u64(&wakeup_shared->generation, 1);
		pg_atomic_init_u32(&wakeup_shared->nwaiters, 0);
		for (i = 0; i < wakeup_shared->nprocs; i++)
			pg_atomic_init_u32(&wakeup_shared->waiting_db[i], InvalidOid);
	}
}

static bool consumers_changed_here = false;

PG_FUNCTION_INFO_V1(notify_ext_consumers_changed);
Datum
notify_ext_consumers_changed(PG_FUNCTION_ARGS)
{
	consumers_changed_here = true;
	PG_RETURN_VOID();
}

/* Wakes the long polls of this database after a commit that recorded events. */
static void
wake_waiters(int64 nevents)
{
	int			i;

	if (wakeup_shared == NULL || pg_atomic_read_u32(&wakeup_shared->nwaiters) == 0)
		return;
	for (i = 0; i < wakeup_shared->nprocs; i++)
	{
		if (pg_atomic_read_u32(&wakeup_shared->waiting_db[i]) == MyDatabaseId)
			SetLatch(&ProcGlobal->allProcs[i].procLatch);
	}
}

static void
wakeup_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT && consumers_changed_here && wakeup_shared != NULL)
		pg_atomic_fetch_add_u64(&wakeup_shared->generation, 1);
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PREPARE)
		consumers_changed_here = false;
}

void
wakeup_set_waiting(bool waiting)
{
	uint32		me = MY_PROC_INDEX;

	if (waiting)
	{
		pg_atomic_write_u32(&wakeup_shared->waiting_db[me], MyDatabaseId);
		pg_atomic_fetch_add_u32(&wakeup_shared->nwaiters, 1);
	}
	else
	{
		pg_atomic_write_u32(&wakeup_shared->waiting_db[me], InvalidOid);
		pg_atomic_fetch_sub_u32(&wakeup_shared->nwaiters, 1);
	}
}

/* ---------------------------------------------------------------------
 * Channels, and the NOTIFYs sent at commit
 * --------------------------------------------------------------------- */

/*
 * The channel of a consumer:
 *
 *     notify_ext_consumer_ || hex(BLAKE2b-128 keyed with K, the 16 uuid bytes)
 *
 * with K = notify_ext_server_key("consumer-channel").  The only place that
 * names it: get_event_message_stream() (through _consumer_channel()) and the
 * NOTIFY at commit both use it, so they cannot disagree.
 */
void
consumer_channel(const pg_uuid_t *id, char out[NAMEDATALEN])
{
	notify_ext_channel_name("consumer-channel", "notify_ext_consumer_",
							id->data, UUID_LEN, out);
}

/*
 * notify_ext._consumer_channel(consumer uuid) returns text: internal, for
 * get_event_message_stream() only (EXECUTE is revoked from PUBLIC, and it
 * refuses to run unless the current user is a superuser, i.e. inside one of
 * the extension's SECURITY DEFINER functions).
 */
PG_FUNCTION_INFO_V1(notify_ext_consumer_channel);
Datum
notify_ext_consumer_channel(PG_FUNCTION_ARGS)
{
	char		out[NAMEDATALEN];

	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("notify_ext._consumer_channel() is internal"),
				 errhint("Use notify_ext.get_event_message_stream() for the channel of your consumer.")));
	consumer_channel(PG_GETARG_UUID_P(0), out);
	PG_RETURN_TEXT_P(cstring_to_text(out));
}

typedef struct CachedConsumer
{
	char		channel[NAMEDATALEN];
	char		id[UUID_LEN * 2 + 5];
	Scope		scope;
} CachedConsumer;

typedef struct ScopeEntry
{
	char		key[NAMEDATALEN * 4];
	List	   *consumers;		/* indexes into cached_consumers */
} ScopeEntry;

static MemoryContext cache_cxt = NULL;
static uint64 cache_generation = 0;
static CachedConsumer *cached_consumers = NULL;
static int	ncached = 0;
static HTAB *scope_index = NULL;
static List *unscoped = NIL;

static void
load_consumers(void)
{
	uint64		generation = pg_atomic_read_u64(&wakeup_shared->generation);
	ActingRole	saved_user;
	int			rc;
	uint64		i;
	HASHCTL		ctl;
	MemoryContext old;

	if (cache_cxt != NULL && generation == cache_generation)
		return;
	if (cache_cxt == NULL)
		cache_cxt = AllocSetContextCreate(TopMemoryContext, "notify_ext consumer scopes",
										  ALLOCSET_DEFAULT_SIZES);
	else
		MemoryContextReset(cache_cxt);
	cached_consumers = NULL;
	ncached = 0;
	unscoped = NIL;
	cache_generation = 0;

	ctl.keysize = sizeof(((ScopeEntry *) 0)->key);
	ctl.entrysize = sizeof(ScopeEntry);
	ctl.hcxt = cache_cxt;
	scope_index = hash_create("notify_ext consumer scopes", 64, &ctl,
							  HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);

	act_as_extension_owner(&saved_user);
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rc = SPI_execute("SELECT id::text, resource_id, include_subresources, streams, operations, from_date "
					 "FROM notify_ext.consumers", true, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "reading consumers failed");
	old = MemoryContextSwitchTo(cache_cxt);
	cached_consumers = palloc0(sizeof(CachedConsumer) * Max(SPI_processed, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		CachedConsumer *cc = &cached_consumers[ncached];
		bool		isnull;
		Datum		d;
		char	   *uuid = SPI_getvalue(tup, desc, 1);
		char	   *resource_id;
		ArrayType  *streams;
		ArrayType  *operations;
		bool		from_date_null;

		strlcpy(cc->id, uuid, sizeof(cc->id));
		consumer_channel(DatumGetUUIDP(DirectFunctionCall1(uuid_in, CStringGetDatum(uuid))),
						 cc->channel);
		resource_id = SPI_getvalue(tup, desc, 2);
		d = SPI_getbinval(tup, desc, 4, &isnull);
		streams = isnull ? NULL : DatumGetArrayTypePCopy(d);
		d = SPI_getbinval(tup, desc, 5, &isnull);
		operations = isnull ? NULL : DatumGetArrayTypePCopy(d);
		d = SPI_getbinval(tup, desc, 6, &from_date_null);
		scope_from_values(&cc->scope, resource_id ? cstring_to_text(resource_id) : NULL,
						  DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull)),
						  streams, operations,
						  !from_date_null, from_date_null ? 0 : DatumGetTimestampTz(d));

		if (resource_id == NULL)
			unscoped = lappend_int(unscoped, ncached);
		else if (strlen(resource_id) >= sizeof(((ScopeEntry *) 0)->key))
		{
			/* too long to index: checked against every event */
			unscoped = lappend_int(unscoped, ncached);
		}
		else
		{
			bool		found;
			ScopeEntry *se = hash_search(scope_index, resource_id, HASH_ENTER, &found);

			if (!found)
				se->consumers = NIL;
			se->consumers = lappend_int(se->consumers, ncached);
		}
		ncached++;
	}
	MemoryContextSwitchTo(old);
	SPI_finish();
	PopActiveSnapshot();
	stop_acting(&saved_user);
	cache_generation = generation;
}

/* Raises the consumer's best seq to this event's when it is in scope. */
static void
consider(int idx, Datum *values, bool *isnull, int64 *best)
{
	int64		seq = DatumGetInt64(values[EV_SEQ]);

	if (best[idx] >= seq)
		return;
	if (scope_contains(&cached_consumers[idx].scope,
					   isnull[EV_RESOURCE_ID] ? NULL : DatumGetTextPP(values[EV_RESOURCE_ID]),
					   isnull[EV_RESOURCE_PATH] ? NULL : DatumGetArrayTypeP(values[EV_RESOURCE_PATH]),
					   DatumGetTextPP(values[EV_STREAM]), DatumGetTextPP(values[EV_OPERATION]),
					   DatumGetTimestampTz(values[EV_OCCURRED_AT])))
		best[idx] = seq;
}

/*
 * Called in the pre-commit step with the transaction's events (seq already
 * assigned).  all: some events were written ahead and are not in memory,
 * so every consumer is woken.
 */
static void
notify_committing(HeapTuple *events, int nevents, bool all)
{
	int64	   *best;
	int			e;
	int			i;

	if (wakeup_shared == NULL)
		return;
	load_consumers();
	if (ncached == 0)
		return;

	best = palloc0(sizeof(int64) * ncached);
	for (e = 0; e < nevents; e++)
	{
		Datum		values[EV_NATTS];
		bool		isnull[EV_NATTS];
		Datum	   *path;
		int			npath;
		ListCell   *lc;

		heap_deform_tuple(events[e], event_log_desc(), values, isnull);
		foreach(lc, unscoped)
			consider(lfirst_int(lc), values, isnull, best);
		if (hash_get_num_entries(scope_index) == 0 || isnull[EV_RESOURCE_PATH])
			continue;
		/* The consumers of the resources on the event's path. */
		deconstruct_array(DatumGetArrayTypeP(values[EV_RESOURCE_PATH]), TEXTOID, -1, false,
						  TYPALIGN_INT, &path, NULL, &npath);
		for (int k = 0; k < npath; k++)
		{
			char		key[sizeof(((ScopeEntry *) 0)->key)];
			text	   *id = DatumGetTextPP(path[k]);
			int			len = VARSIZE_ANY_EXHDR(id);
			ScopeEntry *se;
			ListCell   *lc2;

			if (len >= (int) sizeof(key))
				continue;
			memcpy(key, VARDATA_ANY(id), len);
			key[len] = '\0';
			se = hash_search(scope_index, key, HASH_FIND, NULL);
			if (se == NULL)
				continue;
			foreach(lc2, se->consumers)
				consider(lfirst_int(lc2), values, isnull, best);
		}
	}

	for (i = 0; i < ncached; i++)
	{
		int64		seq = best[i];

		if (seq == 0 && !all)
			continue;
		Async_Notify(cached_consumers[i].channel,
					 psprintf("{\"consumer\": \"%s\", \"seq\": " INT64_FORMAT "}",
							  cached_consumers[i].id, seq));
	}
	pfree(best);
}

void
wakeup_init(void)
{
	static const EventsHooks hooks = {notify_committing, wake_waiters};

	RegisterXactCallback(wakeup_xact_callback, NULL);
	event_buffer_add_hooks(&hooks);
}
