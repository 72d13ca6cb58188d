/*
 * event_write.c: writing events into the partitions of the event log.
 *
 * Events are written at commit (and, for a transaction with many events,
 * ahead of it with provisional numbers) straight into the partition that
 * holds their day, found without locking the event log itself (see
 * event_route.c), in multi-inserts.  The log's only index is a minmax BRIN
 * index on seq per partition; events arrive in seq order, so a run of
 * events on one heap block needs only its first and last entered to widen
 * the block range's summary exactly as entering every event would.
 *
 * That step, index_seq_runs(), is hand-built where ExecInsertIndexTuples()
 * for every event would do.  It stays: entering every event would add an
 * index call per event to the commit of every transaction that writes
 * several events to a heap block, more work per tracked row than the
 * capture path may gain (see "Hand-built pieces" in docs/design.md).
 */
#include "postgres.h"

#include "access/brin.h"
#include "access/brin_internal.h"
#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_am.h"
#include "catalog/pg_index.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"

#include "extension.h"
#include "event_route.h"
#include "event_write.h"
#include "shmem.h"
#include "summarizer.h"

/* Rows written per multi-insert call. */
#define WRITE_BATCH 1000

/* The seq column of an event tuple made in memory: the first, never null. */
static inline int64 *
event_seq_ptr(HeapTuple tuple)
{
	return (int64 *) ((char *) tuple->t_data + tuple->t_data->t_hoff);
}

void
insert_index_entries(ResultRelInfo *rri, TupleTableSlot *slot, EState *estate)
{
	List	   *recheck;

	if (rri->ri_NumIndices == 0)
		return;
#if PG_VERSION_NUM >= 160000
	recheck = ExecInsertIndexTuples(rri, slot, estate, false, false, NULL, NIL, false);
#else
	recheck = ExecInsertIndexTuples(rri, slot, estate, false, false, NULL, NIL);
#endif
	list_free(recheck);
}

int64
event_write_provisional_base(void)
{
	return ((int64) (MY_PROC_INDEX + 1)) << 40;
}

typedef struct PartitionTarget
{
	Relation	rel;
	ResultRelInfo *rri;
	TimestampTz lower;			/* the occurred_at it holds: [lower, upper) */
	TimestampTz upper;
	bool		upper_unbounded;
	bool		seq_brin_only;	/* its indexes are all minmax BRIN on seq */
} PartitionTarget;

static bool is_seq_minmax_brin(Relation index);

/* Partitions one write goes to at most before it closes some. */
#define MAX_TARGETS 8

/*
 * The opened partition that holds events of ts, opening (and locking) it
 * when none of targets[0 .. *ntargets) does.  event_log itself is not
 * locked (see event_route.c): a writer does not wait for prune() detaching
 * other partitions.
 */
static PartitionTarget *
partition_target(PartitionTarget *targets, int *ntargets, TimestampTz ts)
{
	PartitionTarget *target;
	int			i;

	for (i = 0; i < *ntargets; i++)
		if (event_route_holds(ts, targets[i].lower, targets[i].upper, targets[i].upper_unbounded))
			return &targets[i];
	if (*ntargets == MAX_TARGETS)
	{
		(*ntargets)--;
		ExecCloseIndices(targets[*ntargets].rri);
		table_close(targets[*ntargets].rel, NoLock);
	}
	target = &targets[(*ntargets)++];
	target->rel = event_route_open(ts, RowExclusiveLock, &target->lower, &target->upper,
								   &target->upper_unbounded);
	if (RelationGetDescr(target->rel)->natts != EV_NATTS)
		elog(ERROR, "partition \"%s\" of notify_ext.event_log does not have the expected shape",
			 RelationGetRelationName(target->rel));
	target->rri = makeNode(ResultRelInfo);
	InitResultRelInfo(target->rri, target->rel, 1, NULL, 0);
	ExecOpenIndices(target->rri, false);
	target->seq_brin_only = true;
	for (i = 0; i < target->rri->ri_NumIndices; i++)
		if (!is_seq_minmax_brin(target->rri->ri_IndexRelationDescs[i]))
			target->seq_brin_only = false;
	return target;
}

/*
 * The log is indexed by a minmax BRIN index on seq (see 10_events.sql):
 * events are written in seq order at commit, so block ranges map onto seq
 * ranges closely and one summary per range replaces an index entry per
 * event.
 */
static bool
is_seq_minmax_brin(Relation index)
{
	return index->rd_rel->relam == BRIN_AM_OID &&
		index->rd_index->indnatts == 1 &&
		index->rd_index->indkey.values[0] == EV_SEQ + 1 &&
		heap_attisnull(index->rd_indextuple, Anum_pg_index_indpred, NULL) &&
		index_getprocid(index, 1, BRIN_PROCNUM_OPCINFO) == F_BRIN_MINMAX_OPCINFO;
}

/*
 * Index entries of events just written to a partition whose only indexes
 * are minmax BRIN on seq.  Events come in ascending seq order, so within a
 * run of events on one heap block the first and the last carry the block's
 * minimum and maximum of the run: inserting those two widens the summary
 * exactly as inserting every event would.
 */
static void
index_seq_runs(PartitionTarget *target, TupleTableSlot **slots, int nslots)
{
	ResultRelInfo *rri = target->rri;
	int			k;

	for (k = 0; k < rri->ri_NumIndices; k++)
	{
		Relation	index = rri->ri_IndexRelationDescs[k];
		IndexInfo  *info = rri->ri_IndexRelationInfo[k];
		BlockNumber per_range = BrinGetPagesPerRange(index);
		int			j = 0;

		while (j < nslots)
		{
			BlockNumber blk = ItemPointerGetBlockNumber(&slots[j]->tts_tid);
			int			last = j;
			bool		isnull = false;
			Datum		seq;

			while (last + 1 < nslots && ItemPointerGetBlockNumber(&slots[last + 1]->tts_tid) == blk)
				last++;
			/*
			 * Starting a range: the one left behind wants its summary, from
			 * the summarizer worker or, when none can take it, right here.
			 */
			if (blk % per_range == 0 && blk >= per_range &&
				ItemPointerGetOffsetNumber(&slots[j]->tts_tid) == FirstOffsetNumber &&
				!summarizer_request(RelationGetRelid(index), blk - per_range, per_range))
				summarize_range_nowait(RelationGetRelid(index), blk - per_range, per_range);
			seq = slot_getattr(slots[j], EV_SEQ + 1, &isnull);
			index_insert(index, &seq, &isnull, &slots[j]->tts_tid, target->rel,
						 UNIQUE_CHECK_NO, false, info);
			if (last != j)
			{
				seq = slot_getattr(slots[last], EV_SEQ + 1, &isnull);
				index_insert(index, &seq, &isnull, &slots[last]->tts_tid, target->rel,
							 UNIQUE_CHECK_NO, false, info);
			}
			j = last + 1;
		}
	}
}

/*
 * Writes buffered events into the partitions of notify_ext.event_log.  Each
 * tuple's seq column holds its ordinal; it is rewritten as seq_of(ordinal).
 */
void
event_write(HeapTuple *events, int nevents, int64 base, bool provisional)
{
	PartitionTarget targets[MAX_TARGETS];
	int			ntargets = 0;
	EState	   *estate;
	TupleTableSlot **slots;
	BulkInsertState bistate = NULL;
	CommandId	cid = GetCurrentCommandId(true);
	int64		provisional_base = event_write_provisional_base();
	int			i;
	int			nslots_made;

	estate = CreateExecutorState();
	nslots_made = Min(nevents, WRITE_BATCH);
	slots = palloc(sizeof(TupleTableSlot *) * nslots_made);
	for (i = 0; i < nslots_made; i++)
		slots[i] = MakeSingleTupleTableSlot(event_log_desc(), &TTSOpsHeapTuple);
	if (nevents > WRITE_BATCH)
		bistate = GetBulkInsertState();

	i = 0;
	while (i < nevents)
	{
		PartitionTarget *target = NULL;
		int			nslots = 0;
		int			j;

		/* A run of events that go to the same partition. */
		while (i < nevents && nslots < WRITE_BATCH)
		{
			HeapTuple	tuple = events[i];
			int64	   *seq = event_seq_ptr(tuple);
			bool		isnull;
			TimestampTz occurred = DatumGetTimestampTz(heap_getattr(tuple, EV_OCCURRED_AT + 1,
																	event_log_desc(), &isnull));

			if (target == NULL)
				target = partition_target(targets, &ntargets, occurred);
			else if (!event_route_holds(occurred, target->lower, target->upper,
										target->upper_unbounded))
				break;

			*seq = provisional ? -(provisional_base + *seq) : base + *seq;
			ExecStoreHeapTuple(tuple, slots[nslots++], false);
			i++;
		}

		table_multi_insert(target->rel, slots, nslots, cid, 0, bistate);
		if (target->seq_brin_only)
			index_seq_runs(target, slots, nslots);
		for (j = 0; j < nslots; j++)
		{
			if (!target->seq_brin_only)
				insert_index_entries(target->rri, slots[j], estate);
			ExecClearTuple(slots[j]);
		}
		ResetPerTupleExprContext(estate);
	}

	if (bistate)
		FreeBulkInsertState(bistate);
	for (i = 0; i < ntargets; i++)
	{
		ExecCloseIndices(targets[i].rri);
		table_close(targets[i].rel, NoLock);
	}
	for (i = 0; i < nslots_made; i++)
		ExecDropSingleTupleTableSlot(slots[i]);
	FreeExecutorState(estate);
}

