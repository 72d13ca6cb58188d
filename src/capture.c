/*
 * capture.c: the change-capture trigger, publish(), and the transaction's
 * event buffer.
 *
 * The trigger turns each changed row into an event tuple and keeps it in
 * memory; nothing is written to the event log until the transaction
 * commits.  In the pre-commit step the events get their seq numbers (see
 * ordering.c) and are written in one multi-insert.  A transaction whose
 * events outgrow notify_ext.event_buffer writes the excess early with
 * provisional negative numbers and renumbers those rows at commit.
 */
#include "postgres.h"

#include <sys/mman.h>

#include "access/brin.h"
#include "access/brin_internal.h"
#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_am.h"
#include "catalog/pg_index.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "partitioning/partbounds.h"
#include "partitioning/partdesc.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "port/atomics.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/partcache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "notify_ext.h"
#include "extension.h"
#include "resource_path.h"
#include "event_route.h"
#include "principal.h"

/* Columns of notify_ext.event_log, in order. */
enum
{
	EV_SEQ,
	EV_OCCURRED_AT,
	EV_STREAM,
	EV_OPERATION,
	EV_RESOURCE_ID,
	EV_RESOURCE_VARIANT,
	EV_RESOURCE_PATH,
	EV_ACTOR,
	EV_PAYLOAD,
	EV_CHANGED,
	EV_NATTS
};

/* Rows written per multi-insert call. */
#define WRITE_BATCH 1000

/* ---------------------------------------------------------------------
 * The transaction's buffered events
 * --------------------------------------------------------------------- */

typedef struct PendingEvent
{
	HeapTuple	tuple;			/* its seq column holds the ordinal */
	SubTransactionId subid;		/* recorded in this subtransaction */
} PendingEvent;

static MemoryContext pending_cxt = NULL;
static PendingEvent *pending = NULL;
static int	npending = 0;
static int	maxpending = 0;
static Size pending_bytes = 0;
static int64 next_ordinal = 0;	/* events recorded by this transaction */
static int64 spilled_ordinals = 0;	/* ordinals below this may be spilled */
static Size retained_bytes = 0; /* kept in memory by the last spill */
static int	outside_arena = 0;	/* pending[0..this) live in pending_cxt */
static bool reserved = false;	/* holds commit numbers (ordering.c) */

static int64 committed_first_seq = 0;

#define MAX_COMMIT_HOOKS 4
static events_committed_hook commit_hooks[MAX_COMMIT_HOOKS];
static int	ncommit_hooks = 0;

static TupleDesc event_desc = NULL;

/* ---------------------------------------------------------------------
 * Per-relation tracking configuration, from the trigger's arguments
 * --------------------------------------------------------------------- */

typedef struct TrackedRel
{
	Oid			relid;			/* hash key */
	bool		valid;
	MemoryContext cxt;
	Datum		variant;
	Datum		stream;
	Datum		op_create;
	Datum		op_update;
	Datum		op_delete;
	Datum		op_truncate;
	AttrNumber	id_attnum;
	AttrNumber	parent_attnum;	/* InvalidAttrNumber: no parent column */
	FmgrInfo	id_out;
	FmgrInfo	parent_out;
	bool		id_is_text;
	bool		parent_is_text;
	RowJson    *rowjson;
} TrackedRel;

static HTAB *tracked_rels = NULL;
static TrackedRel *last_tracked = NULL;	/* entries stay put in the hash */

static StringInfoData json_buf;

static void flush_at_commit(void);

/* ---------------------------------------------------------------------
 * Helpers
 * --------------------------------------------------------------------- */

TupleDesc
event_log_desc(void)
{
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

/* The seq column of a buffered event tuple: the first, never null. */
static inline int64 *
event_seq_ptr(HeapTuple tuple)
{
	return (int64 *) ((char *) tuple->t_data + tuple->t_data->t_hoff);
}

/* ---------------------------------------------------------------------
 * Memory for buffered events
 *
 * Event tuples are carved out of large blocks that are mapped with their
 * pages populated up front and partly kept between transactions: faulting
 * in fresh pages one at a time cost more than everything else the trigger
 * does per row.
 * --------------------------------------------------------------------- */

#define ARENA_BLOCK_SIZE ((Size) 4 * 1024 * 1024)
#define ARENA_KEPT_BLOCKS 2

typedef struct ArenaBlock
{
	struct ArenaBlock *next;
	Size		size;			/* mapped bytes, header included */
	Size		used;
} ArenaBlock;

static ArenaBlock *arena_used = NULL;	/* current block first */
static ArenaBlock *arena_kept = NULL;
static int	arena_nkept = 0;

static ArenaBlock *
arena_map(Size size)
{
	ArenaBlock *block = mmap(NULL, size, PROT_READ | PROT_WRITE,
							 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);

	if (block == MAP_FAILED)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory"),
				 errdetail("Failed to map %zu bytes for notify_ext events.", size)));
	block->size = size;
	block->used = MAXALIGN(sizeof(ArenaBlock));
	return block;
}

static void *
arena_alloc(Size size)
{
	ArenaBlock *block = arena_used;
	void	   *p;

	size = MAXALIGN(size);
	if (block == NULL || block->used + size > block->size)
	{
		if (size + MAXALIGN(sizeof(ArenaBlock)) > ARENA_BLOCK_SIZE)
			block = arena_map(size + MAXALIGN(sizeof(ArenaBlock)));
		else if (arena_kept != NULL)
		{
			block = arena_kept;
			arena_kept = block->next;
			arena_nkept--;
			block->used = MAXALIGN(sizeof(ArenaBlock));
		}
		else
			block = arena_map(ARENA_BLOCK_SIZE);
		block->next = arena_used;
		arena_used = block;
	}
	p = (char *) block + block->used;
	block->used += size;
	return p;
}

/* Frees all event memory, keeping a few ordinary blocks for next time. */
static void
arena_reset(void)
{
	while (arena_used != NULL)
	{
		ArenaBlock *block = arena_used;

		arena_used = block->next;
		if (block->size == ARENA_BLOCK_SIZE && arena_nkept < ARENA_KEPT_BLOCKS)
		{
			block->next = arena_kept;
			arena_kept = block;
			arena_nkept++;
		}
		else
			munmap(block, block->size);
	}
}

/* heap_form_tuple() into arena memory. */
static HeapTuple
form_event_tuple(TupleDesc desc, Datum *values, bool *isnull)
{
	bool		hasnull = false;
	Size		hoff;
	Size		data_len;
	Size		len;
	HeapTuple	tuple;
	HeapTupleHeader td;
	int			i;

	for (i = 0; i < desc->natts; i++)
		hasnull |= isnull[i];
	hoff = offsetof(HeapTupleHeaderData, t_bits);
	if (hasnull)
		hoff += BITMAPLEN(desc->natts);
	hoff = MAXALIGN(hoff);
	data_len = heap_compute_data_size(desc, values, isnull);
	len = hoff + data_len;

	tuple = arena_alloc(HEAPTUPLESIZE + len);
	td = (HeapTupleHeader) ((char *) tuple + HEAPTUPLESIZE);
	memset(td, 0, len);			/* alignment padding included */
	tuple->t_len = len;
	ItemPointerSetInvalid(&tuple->t_self);
	tuple->t_tableOid = InvalidOid;
	tuple->t_data = td;
	HeapTupleHeaderSetDatumLength(td, len);
	HeapTupleHeaderSetTypeId(td, desc->tdtypeid);
	HeapTupleHeaderSetTypMod(td, desc->tdtypmod);
	HeapTupleHeaderSetNatts(td, desc->natts);
	td->t_hoff = hoff;
	heap_fill_tuple(desc, values, isnull, (char *) td + hoff, data_len,
					&td->t_infomask, hasnull ? td->t_bits : NULL);
	return tuple;
}

/* ---------------------------------------------------------------------
 * Buffering
 * --------------------------------------------------------------------- */

static void spill_pending(void);

/* Adds an event; values[EV_SEQ] is ignored and replaced by the ordinal. */
static int64
buffer_event(Datum *values, bool *nulls)
{
	HeapTuple	tuple;
	int64		ordinal = next_ordinal;

	if (pending_cxt == NULL)
	{
		pending_cxt = AllocSetContextCreate(TopTransactionContext,
											"notify_ext events",
											ALLOCSET_DEFAULT_SIZES);
		maxpending = 1024;
		pending = MemoryContextAlloc(pending_cxt, sizeof(PendingEvent) * maxpending);
	}
	else if (npending == maxpending)
	{
		maxpending *= 2;
		pending = repalloc_huge(pending, sizeof(PendingEvent) * maxpending);
	}

	values[EV_SEQ] = Int64GetDatum(ordinal);
	nulls[EV_SEQ] = false;
	tuple = form_event_tuple(event_log_desc(), values, nulls);

	pending[npending].tuple = tuple;
	pending[npending].subid = GetCurrentSubTransactionId();
	npending++;
	pending_bytes += HEAPTUPLESIZE + tuple->t_len;
	next_ordinal++;

	if (pending_bytes - retained_bytes > (Size) notify_ext_event_buffer_kb * 1024)
		spill_pending();
	return ordinal;
}

static void
reset_pending(void)
{
	/* The array goes with TopTransactionContext. */
	arena_reset();
	pending_cxt = NULL;
	pending = NULL;
	npending = maxpending = 0;
	pending_bytes = 0;
	retained_bytes = 0;
	outside_arena = 0;
	next_ordinal = 0;
	spilled_ordinals = 0;
}

/*
 * Events written ahead of commit get the provisional seq -(base + ordinal),
 * with a base unique to this backend, until commit renumbers them.
 */
static inline int64
provisional_seq_base(void)
{
	return ((int64) (MY_PROC_INDEX + 1)) << 40;
}

/* ---------------------------------------------------------------------
 * Writing events to the log
 * --------------------------------------------------------------------- */

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
static void
write_events(PendingEvent *events, int nevents, int64 base, bool provisional)
{
	PartitionTarget targets[MAX_TARGETS];
	int			ntargets = 0;
	EState	   *estate;
	TupleTableSlot **slots;
	BulkInsertState bistate = NULL;
	CommandId	cid = GetCurrentCommandId(true);
	int64		provisional_base = provisional_seq_base();
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
			HeapTuple	tuple = events[i].tuple;
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

/*
 * Writes the buffer ahead of commit, with provisional numbers.  Only the
 * events of the current subtransaction (and of its committed children) can
 * be written now: a row written here vanishes if this subtransaction rolls
 * back, so events of enclosing ones stay in memory until commit.
 */
static void
spill_pending(void)
{
	SubTransactionId current = GetCurrentSubTransactionId();
	int			first = npending;
	int			i;

	while (first > 0 && pending[first - 1].subid >= current)
		first--;
	if (first < npending)
	{
		write_events(pending + first, npending - first, 0, true);
		spilled_ordinals = next_ordinal;
		npending = first;
		if (npending > outside_arena)
		{
			/* Move the kept events out so the arena can be reused. */
			MemoryContext old = MemoryContextSwitchTo(pending_cxt);

			for (i = outside_arena; i < npending; i++)
				pending[i].tuple = heap_copytuple(pending[i].tuple);
			MemoryContextSwitchTo(old);
			outside_arena = npending;
		}
		arena_reset();
	}
	pending_bytes = 0;
	for (i = 0; i < npending; i++)
		pending_bytes += HEAPTUPLESIZE + pending[i].tuple->t_len;
	retained_bytes = pending_bytes;
}

/* Gives spilled rows their final numbers: seq = base + ordinal. */
static void
renumber_spilled(int64 base)
{
	int64		provisional_base = provisional_seq_base();
	Oid			argtypes[4] = {INT8OID, INT8OID, INT8OID, INT8OID};
	Datum		args[4];
	ActingRole	saved_user;
	int			rc;

	args[0] = Int64GetDatum(base);
	args[1] = Int64GetDatum(provisional_base);
	args[2] = Int64GetDatum(-(provisional_base + spilled_ordinals - 1));
	args[3] = Int64GetDatum(-provisional_base);

	act_as_extension_owner(&saved_user);
	/* Pre-commit runs after the last statement released its snapshot. */
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rc = SPI_execute_with_args("UPDATE notify_ext.event_log SET seq = $1 + (-seq - $2) "
							   "WHERE seq BETWEEN $3 AND $4",
							   4, argtypes, args, NULL, false, 0);
	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "renumbering spilled events failed: %s", SPI_result_code_string(rc));
	SPI_finish();
	PopActiveSnapshot();
	stop_acting(&saved_user);
}

static void
flush_at_commit(void)
{
	int64		base;

	if (npending == 0 && spilled_ordinals == 0)
		return;

	base = ordering_reserve(next_ordinal);
	reserved = true;
	committed_first_seq = base;
	if (spilled_ordinals > 0)
		renumber_spilled(base);
	if (npending > 0)
		write_events(pending, npending, base, false);

	/* Wake the consumers whose scope these events touch. */
	{
		HeapTuple  *tuples = palloc(sizeof(HeapTuple) * Max(npending, 1));
		int			i;

		for (i = 0; i < npending; i++)
			tuples[i] = pending[i].tuple;
		consumer_notify_committing(tuples, npending, spilled_ordinals > 0);
		pfree(tuples);
	}
}

static void
capture_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			flush_at_commit();
			break;
		case XACT_EVENT_PRE_PREPARE:
			if (npending > 0 || spilled_ordinals > 0)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot PREPARE a transaction that recorded notify_ext events"),
						 errdetail("Events are numbered when their transaction commits.")));
			break;
		case XACT_EVENT_COMMIT:
			if (reserved)
			{
				int			i;

				ordering_release();
				reserved = false;
				for (i = 0; i < ncommit_hooks; i++)
					commit_hooks[i] (committed_first_seq, next_ordinal);
			}
			reset_pending();
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PARALLEL_ABORT:
			if (reserved)
			{
				ordering_release();
				reserved = false;
			}
			reset_pending();
			break;
		default:
			break;
	}
}

static void
capture_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						 SubTransactionId parentSubid, void *arg)
{
	if (event != SUBXACT_EVENT_ABORT_SUB)
		return;

	/*
	 * Everything recorded since the subtransaction began carries its id or
	 * a later one, and sits at the end of the buffer.  Spilled rows of the
	 * subtransaction vanish with it.
	 */
	while (npending > 0 && pending[npending - 1].subid >= mySubid)
	{
		npending--;
		pending_bytes -= HEAPTUPLESIZE + pending[npending].tuple->t_len;
	}
	retained_bytes = Min(retained_bytes, pending_bytes);
	outside_arena = Min(outside_arena, npending);
}

/* path = parent's path (or just the parent when unknown) + id */
static Datum
make_path(Datum *parent_elems, int nparent, Datum id)
{
	int			n = nparent + 1;
	Size		total = ARR_OVERHEAD_NONULLS(1);
	ArrayType  *arr;
	char	   *p;
	int			i;

	/* What construct_array() builds for text[], without its generality. */
	for (i = 0; i < n; i++)
	{
		text	   *t = DatumGetTextPP(i < nparent ? parent_elems[i] : id);

		total += INTALIGN(VARHDRSZ + VARSIZE_ANY_EXHDR(t));
	}
	arr = (ArrayType *) palloc(total);
	SET_VARSIZE(arr, total);
	arr->ndim = 1;
	arr->dataoffset = 0;
	arr->elemtype = TEXTOID;
	ARR_DIMS(arr)[0] = n;
	ARR_LBOUND(arr)[0] = 1;
	p = ARR_DATA_PTR(arr);
	for (i = 0; i < n; i++)
	{
		text	   *t = DatumGetTextPP(i < nparent ? parent_elems[i] : id);
		int			len = VARSIZE_ANY_EXHDR(t);
		int			padded = INTALIGN(VARHDRSZ + len);

		SET_VARSIZE(p, VARHDRSZ + len);
		memcpy(VARDATA(p), VARDATA_ANY(t), len);
		memset(p + VARHDRSZ + len, 0, padded - VARHDRSZ - len);
		p += padded;
	}
	return PointerGetDatum(arr);
}

/* ---------------------------------------------------------------------
 * Tracked relations
 * --------------------------------------------------------------------- */

static void
tracked_rel_invalidate(Datum arg, Oid relid)
{
	HASH_SEQ_STATUS status;
	TrackedRel *entry;

	if (tracked_rels == NULL)
		return;
	hash_seq_init(&status, tracked_rels);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		if (relid == InvalidOid || entry->relid == relid)
			entry->valid = false;
	}
}

static Datum
operation_name(const char *a, const char *b)
{
	return CStringGetTextDatum(psprintf("%s%s", a, b));
}

static AttrNumber
tracked_column(Relation rel, const char *colname, const char *what)
{
	int			i;
	TupleDesc	desc = RelationGetDescr(rel);

	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (!att->attisdropped && strcmp(NameStr(att->attname), colname) == 0)
			return att->attnum;
	}
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_COLUMN),
			 errmsg("%s column \"%s\" of tracked table \"%s\" does not exist",
					what, colname, RelationGetRelationName(rel)),
			 errhint("Track the table again with notify_ext.track() naming an existing column.")));
	return InvalidAttrNumber;	/* keep compiler quiet */
}

static void
column_output(Relation rel, AttrNumber attnum, FmgrInfo *out, bool *is_text, MemoryContext cxt)
{
	Oid			typid = TupleDescAttr(RelationGetDescr(rel), attnum - 1)->atttypid;
	Oid			outfunc;
	bool		isvarlena;

	*is_text = (typid == TEXTOID || typid == VARCHAROID);
	getTypeOutputInfo(typid, &outfunc, &isvarlena);
	fmgr_info_cxt(outfunc, out, cxt);
}

static TrackedRel *
tracked_rel(Relation rel, Trigger *trigger)
{
	Oid			relid = RelationGetRelid(rel);
	TrackedRel *entry;
	bool		found;
	MemoryContext old;
	const char *stream;

	if (tracked_rels == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(TrackedRel);
		ctl.hcxt = CacheMemoryContext;
		tracked_rels = hash_create("notify_ext tracked relations", 32, &ctl,
								   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
		CacheRegisterRelcacheCallback(tracked_rel_invalidate, (Datum) 0);
	}

	/* Consecutive rows nearly always come from the same table. */
	if (last_tracked != NULL && last_tracked->relid == relid && last_tracked->valid)
		return last_tracked;
	entry = hash_search(tracked_rels, &relid, HASH_ENTER, &found);
	if (found && entry->valid)
	{
		last_tracked = entry;
		return entry;
	}
	if (!found)
		entry->cxt = NULL;
	entry->valid = false;
	if (entry->cxt)
		MemoryContextReset(entry->cxt);
	else
		entry->cxt = AllocSetContextCreate(CacheMemoryContext, "notify_ext tracked relation",
										   ALLOCSET_SMALL_SIZES);

	if (trigger->tgnargs != 4 || trigger->tgargs[0][0] == '\0' || trigger->tgargs[1][0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("trigger \"%s\" on \"%s\" has invalid arguments for notify_ext.capture()",
						trigger->tgname, RelationGetRelationName(rel)),
				 errhint("Install the trigger with notify_ext.track().")));

	old = MemoryContextSwitchTo(entry->cxt);
	entry->relid = relid;
	entry->variant = CStringGetTextDatum(trigger->tgargs[0]);
	entry->op_create = operation_name(trigger->tgargs[0], ".create");
	entry->op_update = operation_name(trigger->tgargs[0], ".update");
	entry->op_delete = operation_name(trigger->tgargs[0], ".delete");
	entry->op_truncate = operation_name(trigger->tgargs[0], ".truncate");
	stream = trigger->tgargs[3];
	if (stream[0] == '\0')
		stream = psprintf("%s.%s", get_namespace_name(RelationGetNamespace(rel)),
						  RelationGetRelationName(rel));
	entry->stream = CStringGetTextDatum(stream);
	entry->id_attnum = tracked_column(rel, trigger->tgargs[1], "id");
	column_output(rel, entry->id_attnum, &entry->id_out, &entry->id_is_text, entry->cxt);
	entry->parent_attnum = InvalidAttrNumber;
	if (trigger->tgargs[2][0] != '\0')
	{
		entry->parent_attnum = tracked_column(rel, trigger->tgargs[2], "parent");
		column_output(rel, entry->parent_attnum, &entry->parent_out, &entry->parent_is_text, entry->cxt);
	}
	entry->rowjson = rowjson_prepare(RelationGetDescr(rel), entry->cxt);
	MemoryContextSwitchTo(old);
	entry->valid = true;
	last_tracked = entry;
	return entry;
}

static text *
column_text(FmgrInfo *out, bool is_text, Datum value)
{
	if (is_text)
		return DatumGetTextPP(value);
	/* Integer ids, the common case, without a trip through the cstring. */
	if (out->fn_oid == F_INT8OUT || out->fn_oid == F_INT4OUT)
	{
		text	   *t = palloc(VARHDRSZ + MAXINT8LEN + 1);
		int			len = out->fn_oid == F_INT8OUT ?
			pg_lltoa(DatumGetInt64(value), VARDATA(t)) :
			pg_ltoa(DatumGetInt32(value), VARDATA(t));

		SET_VARSIZE(t, VARHDRSZ + len);
		return t;
	}
	return cstring_to_text(OutputFunctionCall(out, value));
}

static inline bool
text_equal(text *a, text *b)
{
	return VARSIZE_ANY_EXHDR(a) == VARSIZE_ANY_EXHDR(b) &&
		memcmp(VARDATA_ANY(a), VARDATA_ANY(b), VARSIZE_ANY_EXHDR(a)) == 0;
}

/* The principal as text, rebuilt only when it changes. */
static Datum
actor_text(void)
{
	static char *last_name = NULL;
	static Datum last_text = (Datum) 0;
	const char *name = notify_current_principal();

	if (last_name == NULL || strcmp(last_name, name) != 0)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		if (last_name != NULL)
		{
			pfree(last_name);
			pfree(DatumGetPointer(last_text));
		}
		last_name = pstrdup(name);
		last_text = CStringGetTextDatum(name);
		MemoryContextSwitchTo(old);
	}
	return last_text;
}

/* ---------------------------------------------------------------------
 * The trigger
 * --------------------------------------------------------------------- */

PG_FUNCTION_INFO_V1(notify_ext_capture);
Datum
notify_ext_capture(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	Relation	rel;
	TupleDesc	tupdesc;
	TrackedRel *tr;
	Datum		values[EV_NATTS];
	bool		nulls[EV_NATTS];
	HeapTuple	row;
	Datum	   *rowvalues;
	bool	   *rownulls;
	Datum	   *changed = NULL;
	int			nchanged = 0;
	text	   *id = NULL;
	text	   *parent = NULL;
	bool		parent_moved = false;
	Datum	   *pelems = NULL;
	int			npelems = 0;
	Datum		dangling_parent;
	text	   *parent_variant;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("notify_ext.capture() must be called as a trigger")));
	if (!TRIGGER_FIRED_AFTER(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("notify_ext.capture() must be fired AFTER the change"),
				 errhint("Install the trigger with notify_ext.track().")));
	require_preload();

	rel = td->tg_relation;
	tupdesc = RelationGetDescr(rel);
	tr = tracked_rel(rel, td->tg_trigger);

	memset(nulls, true, sizeof(nulls));
	values[EV_OCCURRED_AT] = TimestampTzGetDatum(GetCurrentTimestamp());
	nulls[EV_OCCURRED_AT] = false;
	values[EV_STREAM] = tr->stream;
	nulls[EV_STREAM] = false;
	values[EV_ACTOR] = actor_text();
	nulls[EV_ACTOR] = false;

	if (TRIGGER_FIRED_BY_TRUNCATE(td->tg_event))
	{
		values[EV_OPERATION] = tr->op_truncate;
		nulls[EV_OPERATION] = false;
		values[EV_PAYLOAD] = CStringGetTextDatum("{}");
		nulls[EV_PAYLOAD] = false;
		buffer_event(values, nulls);
		resources_changed();
		return PointerGetDatum(NULL);
	}
	if (!TRIGGER_FIRED_FOR_ROW(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("notify_ext.capture() must be fired FOR EACH ROW on INSERT, UPDATE and DELETE"),
				 errhint("Install the trigger with notify_ext.track().")));

	row = TRIGGER_FIRED_BY_DELETE(td->tg_event) ? td->tg_trigtuple :
		TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? td->tg_newtuple : td->tg_trigtuple;
	rowvalues = palloc(sizeof(Datum) * tupdesc->natts);
	rownulls = palloc(sizeof(bool) * tupdesc->natts);
	heap_deform_tuple(row, tupdesc, rowvalues, rownulls);

	if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
	{
		Datum	   *oldvalues = palloc(sizeof(Datum) * tupdesc->natts);
		bool	   *oldnulls = palloc(sizeof(bool) * tupdesc->natts);
		int			i;

		heap_deform_tuple(td->tg_trigtuple, tupdesc, oldvalues, oldnulls);
		if (!rowjson_changed(tr->rowjson, oldvalues, oldnulls, rowvalues, rownulls,
							 &changed, &nchanged))
			return PointerGetDatum(NULL);	/* nothing changed, nothing to record */
		for (i = 0; i < nchanged; i++)
		{
			char	   *name = TextDatumGetCString(changed[i]);

			if (strcmp(name, NameStr(TupleDescAttr(tupdesc, tr->id_attnum - 1)->attname)) == 0 ||
				(tr->parent_attnum != InvalidAttrNumber &&
				 strcmp(name, NameStr(TupleDescAttr(tupdesc, tr->parent_attnum - 1)->attname)) == 0))
				parent_moved = true;
		}
		values[EV_OPERATION] = tr->op_update;
		values[EV_CHANGED] = PointerGetDatum(construct_array(changed, nchanged, TEXTOID,
															 -1, false, TYPALIGN_INT));
		nulls[EV_CHANGED] = false;
	}
	else if (TRIGGER_FIRED_BY_DELETE(td->tg_event))
		values[EV_OPERATION] = tr->op_delete;
	else
		values[EV_OPERATION] = tr->op_create;
	nulls[EV_OPERATION] = false;

	if (!rownulls[tr->id_attnum - 1])
		id = column_text(&tr->id_out, tr->id_is_text, rowvalues[tr->id_attnum - 1]);
	else if (!TRIGGER_FIRED_BY_DELETE(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("row of tracked table \"%s\" has a null id in column \"%s\"",
						RelationGetRelationName(rel),
						NameStr(TupleDescAttr(tupdesc, tr->id_attnum - 1)->attname)),
				 errhint("Every row of a tracked table is a resource and needs an id.")));

	if (tr->parent_attnum != InvalidAttrNumber && !rownulls[tr->parent_attnum - 1])
	{
		parent = column_text(&tr->parent_out, tr->parent_is_text,
							 rowvalues[tr->parent_attnum - 1]);
		if (id != NULL && text_equal(id, parent))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("row \"%s\" of tracked table \"%s\" names itself as its parent",
							text_to_cstring(id), RelationGetRelationName(rel))));
		/* A move is checked against the tree as it is now, cycles included. */
		if (parent_moved)
			resources_changed();
		if (!resource_path_find(parent, &parent_variant, &pelems, &npelems))
		{
			if (TRIGGER_FIRED_BY_INSERT(td->tg_event) || parent_moved)
				ereport(ERROR,
						(errcode(ERRCODE_UNDEFINED_OBJECT),
						 errmsg("parent \"%s\" of row \"%s\" in tracked table \"%s\" is not a resource",
								text_to_cstring(parent), text_to_cstring(id),
								RelationGetRelationName(rel)),
						 errhint("Insert the parent row or register it with notify_ext.register_resource() first.")));
			/* A parent deleted earlier: the path ends with it. */
			dangling_parent = PointerGetDatum(parent);
			pelems = &dangling_parent;
			npelems = 1;
		}
	}

	if (id != NULL)
	{
		values[EV_RESOURCE_ID] = PointerGetDatum(id);
		nulls[EV_RESOURCE_ID] = false;
		values[EV_RESOURCE_VARIANT] = tr->variant;
		nulls[EV_RESOURCE_VARIANT] = false;
		values[EV_RESOURCE_PATH] = make_path(pelems, npelems, PointerGetDatum(id));
		nulls[EV_RESOURCE_PATH] = false;
	}

	/* The JSON is written behind room for a varlena header: no copy. */
	resetStringInfo(&json_buf);
	appendBinaryStringInfo(&json_buf, "\0\0\0\0", VARHDRSZ);
	rowjson_append(tr->rowjson, &json_buf, rowvalues, rownulls);
	SET_VARSIZE(json_buf.data, json_buf.len);
	values[EV_PAYLOAD] = PointerGetDatum(json_buf.data);
	nulls[EV_PAYLOAD] = false;

	buffer_event(values, nulls);

	/* Resources under this row may have moved or lost their parent. */
	if (parent_moved || TRIGGER_FIRED_BY_DELETE(td->tg_event))
		resources_changed();

	return PointerGetDatum(NULL);
}

/* ---------------------------------------------------------------------
 * publish()
 * --------------------------------------------------------------------- */

/* Publishing about a resource takes APPEND on it (or a service caller). */
static void
require_append(text *id)
{
	const char *principal;
	Oid			argtypes[2] = {TEXTOID, TEXTOID};
	Datum		args[2];
	bool		isnull;
	bool		allowed;

	if (notify_is_service_caller())
		return;
	principal = notify_current_principal();
	args[0] = CStringGetTextDatum(principal);
	args[1] = PointerGetDatum(id);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args("SELECT notify_ext.has_permission($1, $2, 'APPEND')",
							  2, argtypes, args, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "permission check failed");
	allowed = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	if (!allowed)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("publishing an event about resource \"%s\" needs APPEND on it: principal \"%s\" does not have it",
						text_to_cstring(id), principal),
				 errhint("Ask an ADMIN of the resource (notify_ext.request_access()) or use a service role.")));
}

PG_FUNCTION_INFO_V1(notify_ext_publish);
Datum
notify_ext_publish(PG_FUNCTION_ARGS)
{
	Datum		values[EV_NATTS];
	bool		nulls[EV_NATTS];
	text	   *stream;
	text	   *operation;
	StringInfoData payload;

	require_preload();
	if (PG_ARGISNULL(0) || VARSIZE_ANY_EXHDR(PG_GETARG_TEXT_PP(0)) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("stream must not be empty")));
	if (PG_ARGISNULL(1) || VARSIZE_ANY_EXHDR(PG_GETARG_TEXT_PP(1)) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("operation of an event on stream \"%s\" must not be empty",
						text_to_cstring(PG_GETARG_TEXT_PP(0)))));
	stream = PG_GETARG_TEXT_PP(0);
	operation = PG_GETARG_TEXT_PP(1);

	memset(nulls, true, sizeof(nulls));
	values[EV_OCCURRED_AT] = TimestampTzGetDatum(GetCurrentTimestamp());
	nulls[EV_OCCURRED_AT] = false;
	values[EV_STREAM] = PointerGetDatum(stream);
	nulls[EV_STREAM] = false;
	values[EV_OPERATION] = PointerGetDatum(operation);
	nulls[EV_OPERATION] = false;
	values[EV_ACTOR] = actor_text();
	nulls[EV_ACTOR] = false;

	initStringInfo(&payload);
	if (PG_ARGISNULL(2))
		appendStringInfoString(&payload, "{}");
	else
	{
		Jsonb	   *jb = PG_GETARG_JSONB_P(2);

		JsonbToCString(&payload, &jb->root, VARSIZE(jb));
	}
	values[EV_PAYLOAD] = PointerGetDatum(cstring_to_text_with_len(payload.data, payload.len));
	nulls[EV_PAYLOAD] = false;

	if (!PG_ARGISNULL(3))
	{
		text	   *id = PG_GETARG_TEXT_PP(3);
		text	   *variant;
		Datum	   *elems;
		int			nelems;

		if (VARSIZE_ANY_EXHDR(id) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("resource id of an event on stream \"%s\" must not be empty",
							text_to_cstring(stream)),
					 errhint("Pass NULL for an event about no resource.")));
		require_append(id);
		/* (the path points into the lookup cache: copied before any other lookup) */
		if (!resource_path_find(id, &variant, &elems, &nelems))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("resource \"%s\" does not exist", text_to_cstring(id)),
					 errhint("Register it with notify_ext.register_resource() or track its table with notify_ext.track().")));
		values[EV_RESOURCE_ID] = PointerGetDatum(id);
		nulls[EV_RESOURCE_ID] = false;
		if (variant != NULL)
		{
			values[EV_RESOURCE_VARIANT] = PointerGetDatum(DatumGetTextPCopy(PointerGetDatum(variant)));
			nulls[EV_RESOURCE_VARIANT] = false;
		}
		values[EV_RESOURCE_PATH] = PointerGetDatum(construct_array(elems, nelems, TEXTOID,
																   -1, false, TYPALIGN_INT));
		nulls[EV_RESOURCE_PATH] = false;
	}
	else
		notify_require_service_caller("notify_ext.publish() of an event about no resource");

	/* seq is given at commit; the caller learns the event's place in its transaction. */
	PG_RETURN_INT64(buffer_event(values, nulls) + 1);
}

/*
 * Subsystems that react to committed events (wake-ups, the webhook worker)
 * register here; hooks run after the commit is visible and must not fail.
 */
void
capture_register_commit_hook(events_committed_hook hook)
{
	if (ncommit_hooks >= MAX_COMMIT_HOOKS)
		elog(ERROR, "too many notify_ext commit hooks");
	commit_hooks[ncommit_hooks++] = hook;
}

void
capture_init(void)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

	initStringInfo(&json_buf);
	MemoryContextSwitchTo(old);
	RegisterXactCallback(capture_xact_callback, NULL);
	RegisterSubXactCallback(capture_subxact_callback, NULL);
}
