/*
 * event_buffer.c: the events a transaction records, held until it commits.
 *
 * The capture trigger and publish() add event tuples here; nothing is
 * written to the event log before the transaction commits.  In its
 * pre-commit step the events get their seq numbers (ordering.c) and are
 * written in multi-inserts (event_write.c).  A transaction whose events
 * outgrow notify_ext.event_buffer writes the excess early with provisional
 * negative numbers and renumbers those rows at commit.  Events recorded in
 * a subtransaction that rolls back are forgotten.
 *
 * Subsystems that react to events (wake-ups, webhooks) add hooks: one runs
 * in the pre-commit step, after the write, and one after the commit.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "event_buffer.h"
#include "event_write.h"
#include "extension.h"
#include "settings.h"
#include "ordering.h"

/*
 * The event tuples live in a generation context, PostgreSQL's allocator for
 * chunks that are freed together: it is reset at transaction end.  Events
 * written ahead or rolled back are freed one by one, which gives back the
 * blocks they filled.
 */
static MemoryContext events_cxt = NULL;
static HeapTuple *pending = NULL;	/* their seq columns hold their ordinals */
static SubTransactionId *pending_subids = NULL; /* the subtransaction of each */
static int	npending = 0;
static int	maxpending = 0;
static Size pending_bytes = 0;
static int64 next_ordinal = 0;	/* events recorded by this transaction */
static int64 spilled_ordinals = 0;	/* ordinals below this may be spilled */
static Size retained_bytes = 0; /* kept in memory by the last spill */
static bool reserved = false;	/* holds commit numbers (ordering.c) */

#define MAX_HOOKS 4
static EventsHooks hooks[MAX_HOOKS];
static int	nhooks = 0;

/* ---------------------------------------------------------------------
 * Buffering
 * --------------------------------------------------------------------- */

static void spill_pending(void);

int64
event_buffer_add(Datum *values, bool *nulls)
{
	HeapTuple	tuple;
	int64		ordinal = next_ordinal;
	MemoryContext oldcxt;

	if (events_cxt == NULL)
		events_cxt = GenerationContextCreate(TopMemoryContext, "notify_ext events",
											 ALLOCSET_DEFAULT_SIZES);
	if (pending == NULL)
	{
		/* The arrays go with the transaction. */
		maxpending = 1024;
		pending = MemoryContextAlloc(TopTransactionContext, sizeof(HeapTuple) * maxpending);
		pending_subids = MemoryContextAlloc(TopTransactionContext,
											sizeof(SubTransactionId) * maxpending);
	}
	else if (npending == maxpending)
	{
		maxpending *= 2;
		pending = repalloc_huge(pending, sizeof(HeapTuple) * maxpending);
		pending_subids = repalloc_huge(pending_subids, sizeof(SubTransactionId) * maxpending);
	}

	values[EV_SEQ] = Int64GetDatum(ordinal);
	nulls[EV_SEQ] = false;
	oldcxt = MemoryContextSwitchTo(events_cxt);
	tuple = heap_form_tuple(event_log_desc(), values, nulls);
	MemoryContextSwitchTo(oldcxt);

	pending[npending] = tuple;
	pending_subids[npending] = GetCurrentSubTransactionId();
	npending++;
	pending_bytes += HEAPTUPLESIZE + tuple->t_len;
	next_ordinal++;

	if (pending_bytes - retained_bytes > (Size) notify_ext_event_buffer_kb * 1024)
		spill_pending();
	return ordinal;
}

/* Forgets pending[from ..], freeing their tuples. */
static void
drop_pending_from(int from)
{
	while (npending > from)
	{
		npending--;
		pending_bytes -= HEAPTUPLESIZE + pending[npending]->t_len;
		heap_freetuple(pending[npending]);
	}
}

static void
reset_pending(void)
{
	if (events_cxt != NULL)
		MemoryContextReset(events_cxt);
	pending = NULL;
	pending_subids = NULL;
	npending = maxpending = 0;
	pending_bytes = 0;
	retained_bytes = 0;
	next_ordinal = 0;
	spilled_ordinals = 0;
}

/* ---------------------------------------------------------------------
 * Writing ahead of commit, and at commit
 * --------------------------------------------------------------------- */

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

	while (first > 0 && pending_subids[first - 1] >= current)
		first--;
	if (first < npending)
	{
		event_write(pending + first, npending - first, 0, true);
		spilled_ordinals = next_ordinal;
		drop_pending_from(first);
	}
	retained_bytes = pending_bytes;
}

/* Gives spilled rows their final numbers: seq = base + ordinal. */
static void
renumber_spilled(int64 base)
{
	int64		provisional_base = event_write_provisional_base();
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
	if (spilled_ordinals > 0)
		renumber_spilled(base);
	if (npending > 0)
		event_write(pending, npending, base, false);
	for (int i = 0; i < nhooks; i++)
		if (hooks[i].committing)
			hooks[i].committing(pending, npending, spilled_ordinals > 0);
}

static void
event_buffer_xact_callback(XactEvent event, void *arg)
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
				for (i = 0; i < nhooks; i++)
					if (hooks[i].committed)
						hooks[i].committed(next_ordinal);
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
event_buffer_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						 SubTransactionId parentSubid, void *arg)
{
	int			first = npending;

	if (event != SUBXACT_EVENT_ABORT_SUB)
		return;

	/*
	 * Everything recorded since the subtransaction began carries its id or
	 * a later one, and sits at the end of the buffer.  Spilled rows of the
	 * subtransaction vanish with it.
	 */
	while (first > 0 && pending_subids[first - 1] >= mySubid)
		first--;
	drop_pending_from(first);
	retained_bytes = Min(retained_bytes, pending_bytes);
}

void
event_buffer_add_hooks(const EventsHooks *h)
{
	if (nhooks >= MAX_HOOKS)
		elog(ERROR, "too many notify_ext event hooks");
	hooks[nhooks++] = *h;
}

void
event_buffer_init(void)
{
	RegisterXactCallback(event_buffer_xact_callback, NULL);
	RegisterSubXactCallback(event_buffer_subxact_callback, NULL);
}
