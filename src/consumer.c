/*
 * consumer.c: stream consumers.
 *
 * Fetching takes the consumer's row lock, so two sessions never hand out
 * the same message; it reads the committed horizon (ordering.c) before the
 * snapshot that reads events, so an event that commits late with a lower
 * seq is still found: delivered_upto never passes the horizon.
 *
 * Replies are "<key generation>.<consumer>.<seq>", signed (keys.c) so that
 * acknowledging needs nothing but a reply handed out.  Wake-ups are sent
 * by wakeup.c; a long poll waits for them here.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "executor/spi.h"
#include "common/int.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "event_message.h"
#include "extension.h"
#include "keys.h"
#include "settings.h"
#include "ordering.h"
#include "principal.h"
#include "spi_plan.h"
#include "wakeup.h"

#define MAX_BATCH_SIZE 10000

/*
 * Seqs of the log examined per query when looking for new messages.  The
 * seq index is BRIN, so a query reads its whole window, and with ORDER BY
 * seq LIMIT it sorts all of it: a window much wider than needed wastes
 * work, one too narrow costs another query.  Each window is sized from the
 * density of the consumer's scope (messages per seq) seen in its last
 * window, remembered per session for the consumer last fetched from; a
 * window with nothing in scope makes the next one four times as wide, up
 * to SCAN_WINDOW_MAX.
 */
#define SCAN_WINDOW_MIN 256
#define SCAN_WINDOW_MAX 262144

static pg_uuid_t density_consumer;	/* the consumer whose density is known */
static double density = 1.0;		/* its messages per seq, last seen */

/* The window that should hold want messages at the known density. */
static int64
scan_window(Datum id, int want)
{
	double		d = 1.0;
	double		w;

	if (memcmp(DatumGetUUIDP(id), &density_consumer, sizeof(pg_uuid_t)) == 0)
		d = density;
	w = want / Max(d, 1.0 / SCAN_WINDOW_MAX) * 1.1 + 16;
	return (int64) Max(SCAN_WINDOW_MIN, Min(w, SCAN_WINDOW_MAX));
}

static void
remember_density(Datum id, int64 found, int64 examined)
{
	if (examined < SCAN_WINDOW_MIN)
		return;					/* too few seqs to tell */
	memcpy(&density_consumer, DatumGetUUIDP(id), sizeof(pg_uuid_t));
	/* none found: assume a quarter of one, so the next window is four times as wide */
	density = Max((double) Max(found, 0.25) / examined, 1.0 / SCAN_WINDOW_MAX);
}

/* ---------------------------------------------------------------------
 * Fetching
 * --------------------------------------------------------------------- */

typedef struct ConsumerRow
{
	char	   *owner;
	char	   *resource_id;	/* NULL: every resource */
	bool		include_subresources;
	Datum		streams;		/* text[] or 0 */
	Datum		operations;
	Datum		from_date;
	bool		from_date_null;
	Datum		ack_wait;
	int32		max_deliver;
	int64		delivered_upto;
} ConsumerRow;

static const char *consumer_columns =
"owner, resource_id, include_subresources, streams, operations, from_date, ack_wait, "
"max_deliver, delivered_upto";

static bool
read_consumer(Datum id, bool lock, ConsumerRow *c)
{
	char	   *sql = psprintf("SELECT %s FROM notify_ext.consumers WHERE id = $1%s",
							   consumer_columns, lock ? " FOR UPDATE" : "");
	Oid			argtype = UUIDOID;
	int			rc = spi_run(sql, 1, &argtype, &id, NULL, false, 1);
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	Datum		d;

	if (rc != SPI_OK_SELECT)
		elog(ERROR, "reading consumer failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0)
		return false;
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	c->owner = SPI_getvalue(tup, desc, 1);
	c->resource_id = SPI_getvalue(tup, desc, 2);
	c->include_subresources = DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull));
	d = SPI_getbinval(tup, desc, 4, &isnull);
	c->streams = isnull ? (Datum) 0 : SPI_datumTransfer(d, false, -1);
	d = SPI_getbinval(tup, desc, 5, &isnull);
	c->operations = isnull ? (Datum) 0 : SPI_datumTransfer(d, false, -1);
	c->from_date = SPI_getbinval(tup, desc, 6, &c->from_date_null);
	c->ack_wait = SPI_datumTransfer(SPI_getbinval(tup, desc, 7, &isnull), false, 16);
	c->max_deliver = DatumGetInt32(SPI_getbinval(tup, desc, 8, &isnull));
	c->delivered_upto = DatumGetInt64(SPI_getbinval(tup, desc, 9, &isnull));
	return true;
}

static void
check_may_fetch(Datum id, ConsumerRow *c)
{
	const char *principal = notify_current_principal();
	char	   *idtext = DatumGetCString(DirectFunctionCall1(uuid_out, id));

	if (notify_is_service_caller())
		return;
	if (strcmp(principal, c->owner) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("fetching from stream consumer %s is for its owner: principal \"%s\" is not \"%s\"",
						idtext, principal, c->owner)));
	if (c->resource_id != NULL)
	{
		Oid			argtypes[2] = {TEXTOID, TEXTOID};
		Datum		args[2];
		int			rc;
		bool		isnull;

		args[0] = CStringGetTextDatum(principal);
		args[1] = CStringGetTextDatum(c->resource_id);
		rc = spi_run("SELECT notify_ext.has_permission($1, $2, 'READ')",
								   2, argtypes, args, NULL, false, 1);
		if (rc != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "permission check failed");
		if (!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("stream consumer %s needs READ on resource \"%s\": principal \"%s\" no longer has it",
							idtext, c->resource_id, principal),
					 errhint("Ask an ADMIN of the resource to grant READ again (notify_ext.request_access()).")));
	}
}

#define EVENT_COLUMNS "seq, stream, operation, resource_id, resource_variant, resource_path, " \
	"occurred_at, actor, payload, changed"

/*
 * The scope filter, planned per shape of scope so that the commonest ones
 * pass no more to the filter than they need: every event; a resource's
 * subtree; anything else with the generic rule.  Parameters: $3 resource,
 * $4 include_subresources, $5 streams, $6 operations, $7 from_date.
 */
static const char *
scope_filter(ConsumerRow *c)
{
	bool		filtered = c->streams || c->operations || !c->from_date_null;

	if (!filtered && c->resource_id == NULL)
		return "true";
	if (!filtered && c->include_subresources)
		return "notify_ext._in_subtree($3, resource_id, resource_path)";
	return "notify_ext._in_scope($3, $4, $5, $6, $7, resource_id, resource_path, stream, "
		"operation, occurred_at)";
}

static void
scope_args(ConsumerRow *c, Datum *args, char *nulls)
{
	args[2] = c->resource_id ? CStringGetTextDatum(c->resource_id) : (Datum) 0;
	nulls[2] = c->resource_id ? ' ' : 'n';
	args[3] = BoolGetDatum(c->include_subresources);
	nulls[3] = ' ';
	args[4] = c->streams;
	nulls[4] = c->streams ? ' ' : 'n';
	args[5] = c->operations;
	nulls[5] = c->operations ? ' ' : 'n';
	args[6] = c->from_date;
	nulls[6] = c->from_date_null ? 'n' : ' ';
}

static Oid	scope_argtypes[8] = {INT8OID, INT8OID, TEXTOID, BOOLOID, TEXTARRAYOID,
	TEXTARRAYOID, TIMESTAMPTZOID, INT4OID};

/* Is anything ready to fetch?  Used by the long poll, without the lock. */
static bool
anything_ready(Datum id, int64 horizon)
{
	ConsumerRow c;
	Datum		args[8];
	char		nulls[8];
	Oid			argtype = UUIDOID;
	int			rc;

	rc = spi_run("SELECT 1 FROM notify_ext.consumer_pending "
							   "WHERE consumer = $1 AND due_at <= clock_timestamp() LIMIT 1",
							   1, &argtype, &id, NULL, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "reading pending messages failed");
	if (SPI_processed > 0)
		return true;
	if (!read_consumer(id, false, &c))
		return true;			/* deleted meanwhile: let the fetch say so */
	args[0] = Int64GetDatum(c.delivered_upto);
	args[1] = Int64GetDatum(horizon);
	nulls[0] = nulls[1] = ' ';
	scope_args(&c, args, nulls);
	rc = spi_run(psprintf("SELECT 1 FROM notify_ext.event_log WHERE seq > $1 AND seq <= $2 AND %s "
						  "LIMIT 1", scope_filter(&c)),
				 7, scope_argtypes, args, nulls, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "reading events failed");
	return SPI_processed > 0;
}


typedef struct Delivery
{
	int64		seq;
	int32		count;
} Delivery;

static int
delivery_cmp(const void *a, const void *b)
{
	int64		x = ((const Delivery *) a)->seq;
	int64		y = ((const Delivery *) b)->seq;

	return x < y ? -1 : x > y ? 1 : 0;
}

/* Inserts one consumer_pending row; due_after NULL means due at once. */
static void
insert_pending(Datum id, int32 count, Delivery *d, int n, Datum due_after)
{
	Datum	   *seqs = palloc(sizeof(Datum) * n);
	Oid			types[4] = {UUIDOID, INT4OID, INT8ARRAYOID, INTERVALOID};
	Datum		args[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	int			i;
	int			rc;

	for (i = 0; i < n; i++)
		seqs[i] = Int64GetDatum(d[i].seq);
	args[0] = id;
	args[1] = Int32GetDatum(count);
	args[2] = PointerGetDatum(construct_array(seqs, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[3] = due_after;
	if (due_after == (Datum) 0)
		nulls[3] = 'n';
	/* d is sorted by seq: lo and hi are its ends */
	rc = spi_run("INSERT INTO notify_ext.consumer_pending "
							   "(consumer, delivery_count, seqs, lo, hi, delivered_at, due_at) "
							   "VALUES ($1, $2, $3, ($3)[1], ($3)[cardinality($3)], clock_timestamp(), "
							   "clock_timestamp() + COALESCE($4, interval '0'))",
							   4, types, args, nulls, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "recording deliveries failed");
}

/*
 * Records deliveries (sorted by seq), one consumer_pending row per delivery
 * count, each with its own copy of the deliveries of that count.
 */
static void
record_deliveries(Datum id, Delivery *d, int n, Datum due_after, bool previous_count)
{
	Delivery   *same = palloc(sizeof(Delivery) * Max(n, 1));
	bool	   *done = palloc0(sizeof(bool) * Max(n, 1));
	int			i;

	for (i = 0; i < n; i++)
	{
		int			m = 0;
		int			j;

		if (done[i])
			continue;
		for (j = i; j < n; j++)
		{
			if (!done[j] && d[j].count == d[i].count)
			{
				same[m++] = d[j];
				done[j] = true;
			}
		}
		insert_pending(id, previous_count ? d[i].count - 1 : d[i].count, same, m, due_after);
	}
}

/*
 * Takes up to max due redeliveries off consumer_pending, oldest seq first,
 * each with its new delivery count.  Messages out of deliveries are dropped
 * and counted in *terminated; due ones beyond max stay due.
 */
static int
take_redeliveries(Datum id, ConsumerRow *c, Delivery *out, int max, int64 *terminated)
{
	Oid			argtype = UUIDOID;
	int			rc;
	uint64		i;
	uint64		nrows;
	SPITupleTable *tt;
	Delivery   *all = NULL;
	int			nall = 0;
	int			maxall = 0;
	int			n;

	*terminated = 0;
	rc = spi_run("DELETE FROM notify_ext.consumer_pending "
							   "WHERE consumer = $1 AND due_at <= clock_timestamp() "
							   "RETURNING delivery_count, seqs",
							   1, &argtype, &id, NULL, false, 0);
	if (rc != SPI_OK_DELETE_RETURNING)
		elog(ERROR, "reading pending messages failed");
	tt = SPI_tuptable;
	nrows = SPI_processed;
	for (i = 0; i < nrows; i++)
	{
		bool		isnull;
		int32		count = DatumGetInt32(SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull));
		ArrayType  *arr = DatumGetArrayTypeP(SPI_getbinval(tt->vals[i], tt->tupdesc, 2, &isnull));
		Datum	   *elems;
		int			nelems;
		int			j;

		deconstruct_array(arr, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &elems, NULL, &nelems);
		for (j = 0; j < nelems; j++)
		{
			if (c->max_deliver > 0 && count >= c->max_deliver)
			{
				(*terminated)++;
				continue;
			}
			if (nall == maxall)
			{
				maxall = Max(64, maxall * 2);
				all = all ? repalloc(all, sizeof(Delivery) * maxall) : palloc(sizeof(Delivery) * maxall);
			}
			all[nall].seq = DatumGetInt64(elems[j]);
			all[nall].count = count + 1;
			nall++;
		}
	}
	if (nall > 1)
		qsort(all, nall, sizeof(Delivery), delivery_cmp);
	n = Min(nall, max);
	if (n > 0)
		memcpy(out, all, sizeof(Delivery) * n);
	/* The rest go back as they were, still due. */
	if (nall > n)
		record_deliveries(id, all + n, nall - n, (Datum) 0, true);
	return n;
}

/* When a wait that starts now ends; a wait too long to count never ends. */
static TimestampTz
wait_deadline(const Interval *wait)
{
	int64		us = wait->time;
	int64		part;
	TimestampTz deadline;

	if (pg_mul_s64_overflow((int64) wait->day, USECS_PER_DAY, &part) ||
		pg_add_s64_overflow(us, part, &us) ||
		pg_mul_s64_overflow((int64) wait->month, (int64) DAYS_PER_MONTH * USECS_PER_DAY, &part) ||
		pg_add_s64_overflow(us, part, &us) ||
		pg_add_s64_overflow(GetCurrentTimestamp(), us, &deadline))
		return PG_INT64_MAX;
	return deadline;
}

/* Waits until something is ready for the consumer or the deadline passes. */
static void
long_poll(Datum id, TimestampTz deadline)
{
	wakeup_set_waiting(true);
	PG_TRY();
	{
		for (;;)
		{
			long		timeout;

			ResetLatch(MyLatch);
			if (anything_ready(id, ordering_committed_seq()))
				break;
			timeout = (long) ((deadline - GetCurrentTimestamp()) / 1000);
			if (timeout <= 0)
				break;
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 Min(timeout, 1000L), PG_WAIT_EXTENSION);
			CHECK_FOR_INTERRUPTS();
		}
	}
	PG_FINALLY();
	{
		wakeup_set_waiting(false);
	}
	PG_END_TRY();
}

PG_FUNCTION_INFO_V1(notify_ext_get_event_message_batch);
Datum
notify_ext_get_event_message_batch(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Datum		id;
	int32		batch_size;
	Interval   *wait;
	ConsumerRow c;
	Delivery   *deliveries;
	int			ndeliveries;
	int64		terminated;
	int64		missed = 0;
	int64		redelivered;
	int64		horizon;
	int64		new_upto;
	ReplyKey	key;
	char	   *idtext;
	int			rc;
	uint64		i;
	MemoryContext fn_cxt = CurrentMemoryContext;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("consumer must not be NULL")));
	id = PG_GETARG_DATUM(0);
	idtext = DatumGetCString(DirectFunctionCall1(uuid_out, id));
	batch_size = PG_ARGISNULL(1) ? 25 : PG_GETARG_INT32(1);
	if (batch_size < 1 || batch_size > MAX_BATCH_SIZE)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("batch_size must be between 1 and %d, not %d", MAX_BATCH_SIZE, batch_size)));
	wait = PG_ARGISNULL(2) ? NULL : PG_GETARG_INTERVAL_P(2);
	if (wait && (wait->time < 0 || wait->day < 0 || wait->month < 0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("wait must not be negative, not %s",
						DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(wait)))),
				 errhint("Pass 0 to return at once, or a positive interval to wait.")));
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TRANSACTION_STATE),
				 errmsg("fetching stream messages needs READ COMMITTED isolation"),
				 errdetail("A transaction snapshot taken earlier could miss events that commit meanwhile."),
				 errhint("Fetch outside an explicit REPEATABLE READ or SERIALIZABLE transaction.")));

	InitMaterializedSRF(fcinfo, 0);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	/* Who may fetch, checked before waiting. */
	if (!read_consumer(id, false, &c))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("stream consumer %s does not exist", idtext)));
	check_may_fetch(id, &c);

	/* Long poll: wait, without holding the consumer, until something is ready. */
	if (wait && (wait->time > 0 || wait->day > 0 || wait->month > 0))
		long_poll(id, wait_deadline(wait));

	/* Fetch under the consumer's lock. */
	if (!read_consumer(id, true, &c))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("stream consumer %s does not exist", idtext)));
	check_may_fetch(id, &c);

	deliveries = palloc(sizeof(Delivery) * batch_size);
	ndeliveries = take_redeliveries(id, &c, deliveries, batch_size, &terminated);
	redelivered = ndeliveries;

	/* The highest generation signs; no row at all means generation 1. */
	rc = spi_run("SELECT COALESCE(pg_catalog.max(generation), 1) FROM notify_ext.reply_keys",
				 0, NULL, NULL, NULL, false, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "reading the reply key failed");
	{
		bool		isnull;
		int			generation = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
															 SPI_tuptable->tupdesc, 1, &isnull));

		if (isnull)
			elog(ERROR, "no reply key");
		reply_key_load(&key, generation);
	}

	/* Redeliveries: their events, where retention has not removed them. */
	if (ndeliveries > 0)
	{
		Datum	   *seqs = palloc(sizeof(Datum) * ndeliveries);
		Oid			argtype = INT8ARRAYOID;
		Datum		arg;
		int			found = 0;
		int			j = 0;

		for (i = 0; i < (uint64) ndeliveries; i++)
			seqs[i] = Int64GetDatum(deliveries[i].seq);
		arg = PointerGetDatum(construct_array(seqs, ndeliveries, INT8OID, 8, FLOAT8PASSBYVAL,
											  TYPALIGN_DOUBLE));
		rc = spi_run("SELECT " EVENT_COLUMNS " FROM notify_ext.event_log "
								   "WHERE seq = ANY ($1) ORDER BY seq",
								   1, &argtype, &arg, NULL, false, 0);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "reading events failed");
		/* Keep only the deliveries whose events still exist, in order. */
		for (i = 0; i < SPI_processed; i++)
		{
			bool		isnull;
			int64		seq = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));

			while (j < ndeliveries && deliveries[j].seq < seq)
				j++;
			if (j < ndeliveries && deliveries[j].seq == seq)
				deliveries[found++] = deliveries[j];
		}
		missed += ndeliveries - found;
		ndeliveries = found;
	}

	/* Then new events, up to the committed horizon read before this snapshot. */
	{
		SPITupleTable *redelivery_rows = SPI_tuptable;
		uint64		nredelivery_rows = ndeliveries > 0 ? SPI_processed : 0;
		int			remaining = batch_size - ndeliveries;
		HeapTuple  *new_tuples;
		TupleDesc	new_desc = NULL;
		uint64		nnew = 0;
		int			total;
		Delivery   *all;
		int			k = 0;
		int			nall = 0;
		uint64		r = 0;
		uint64		nn = 0;
		MemoryContext msg_cxt;
		MemoryContext old_cxt;
		char	   *new_events_sql;
		char		reply[64 + MAXINT8LEN];
		int			reply_prefix_len;

		horizon = ordering_committed_seq();
		new_upto = c.delivered_upto;
		new_events_sql = psprintf("SELECT " EVENT_COLUMNS " FROM notify_ext.event_log "
								  "WHERE seq > $1 AND seq <= $2 AND %s ORDER BY seq LIMIT $8",
								  scope_filter(&c));
		new_tuples = palloc(sizeof(HeapTuple) * Max(remaining, 1));

		/*
		 * Read in windows of seq so that each query stays bounded, however
		 * far behind the consumer is.
		 */
		while (remaining > (int) nnew && new_upto < horizon)
		{
			Datum		args[8];
			char		nulls[8];
			int			want = remaining - (int) nnew;
			int64		window = scan_window(id, want);
			int64		window_end = Min(horizon, new_upto + window);
			uint64		j;

			args[0] = Int64GetDatum(new_upto);
			args[1] = Int64GetDatum(window_end);
			nulls[0] = nulls[1] = ' ';
			scope_args(&c, args, nulls);
			args[7] = Int32GetDatum(want);
			nulls[7] = ' ';
			rc = spi_run(new_events_sql, 8, scope_argtypes, args, nulls, false, 0);
			if (rc != SPI_OK_SELECT)
				elog(ERROR, "reading events failed");
			new_desc = SPI_tuptable->tupdesc;
			for (j = 0; j < SPI_processed; j++)
				new_tuples[nnew++] = SPI_tuptable->vals[j];
			if (SPI_processed == (uint64) want)
			{
				bool		isnull;
				int64		last = DatumGetInt64(SPI_getbinval(new_tuples[nnew - 1], new_desc, 1, &isnull));

				remember_density(id, want, last - new_upto);
				new_upto = last;
			}
			else
			{
				remember_density(id, SPI_processed, window_end - new_upto);
				new_upto = window_end;
			}
		}

		/* Emit redeliveries and new messages merged in seq order. */
		total = ndeliveries + (int) nnew;
		all = palloc(sizeof(Delivery) * Max(total, 1));
		msg_cxt = AllocSetContextCreate(CurrentMemoryContext, "notify_ext message",
										ALLOCSET_DEFAULT_SIZES);
		/* Every reply of the fetch starts "<generation>.<consumer>." */
		reply_prefix_len = snprintf(reply, sizeof(reply), "%d.%s.", key.generation, idtext);
		while (r < nredelivery_rows || nn < nnew)
		{
			HeapTuple	tup;
			TupleDesc	desc;
			EventFields e;
			int32		count;
			Datum		values[6];
			bool		nulls[6] = {false, false, false, false, false, false};
			char	   *salt;
			int			reply_len;
			bool		isnull;
			int64		rseq = r < nredelivery_rows ?
				DatumGetInt64(SPI_getbinval(redelivery_rows->vals[r], redelivery_rows->tupdesc, 1, &isnull)) : PG_INT64_MAX;
			int64		nseq = nn < nnew ?
				DatumGetInt64(SPI_getbinval(new_tuples[nn], new_desc, 1, &isnull)) : PG_INT64_MAX;

			if (rseq <= nseq)
			{
				tup = redelivery_rows->vals[r];
				desc = redelivery_rows->tupdesc;
				while (deliveries[k].seq != rseq)
					k++;
				count = deliveries[k].count;
				r++;
			}
			else
			{
				tup = new_tuples[nn];
				desc = new_desc;
				count = 1;
				nn++;
			}
			old_cxt = MemoryContextSwitchTo(msg_cxt);
			event_fields_from_row(tup, desc, &e);
			all[nall].seq = e.seq;
			all[nall].count = count;
			nall++;

			salt = reply_salt();
			pg_lltoa(e.seq, reply + reply_prefix_len);
			reply_len = reply_prefix_len + strlen(reply + reply_prefix_len);

			values[0] = Int64GetDatum(e.seq);
			values[1] = JsonbPGetDatum(event_message(&e));
			values[2] = PointerGetDatum(cstring_to_text_with_len(reply, reply_len));
			values[3] = CStringGetTextDatum(salt);
			values[4] = CStringGetTextDatum(reply_hmac(&key, reply, salt));
			values[5] = Int32GetDatum(count);
			MemoryContextSwitchTo(fn_cxt);
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
			MemoryContextSwitchTo(old_cxt);
			MemoryContextReset(msg_cxt);
		}
		MemoryContextDelete(msg_cxt);
		reply_key_forget(&key);

		if (nall > 0)
			record_deliveries(id, all, nall, c.ack_wait, false);

		/* Advance the consumer. */
		{
			Oid			types[6] = {UUIDOID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID};
			Datum		args[6];
			int64		last = 0;
			int			m;

			for (m = 0; m < nall; m++)
				last = Max(last, all[m].seq);
			args[0] = id;
			args[1] = Int64GetDatum(new_upto);
			args[2] = Int64GetDatum(last);
			args[3] = Int64GetDatum(redelivered);
			args[4] = Int64GetDatum(terminated);
			args[5] = Int64GetDatum(missed);
			rc = spi_run(
									   "UPDATE notify_ext.consumers c SET delivered_upto = $2, "
									   "last_delivered = CASE WHEN $3 > 0 THEN GREATEST(c.last_delivered, $3) ELSE c.last_delivered END, "
									   "num_redelivered = c.num_redelivered + $4, "
									   "num_terminated = c.num_terminated + $5, missed = c.missed + $6, "
									   "ack_floor = COALESCE((SELECT min(p.lo) - 1 FROM notify_ext.consumer_pending p "
									   "WHERE p.consumer = $1), $2) "
									   "WHERE c.id = $1",
									   6, types, args, NULL, false, 0);
			if (rc != SPI_OK_UPDATE)
				elog(ERROR, "updating consumer failed");
		}
	}

	SPI_finish();
	return (Datum) 0;
}

/* ---------------------------------------------------------------------
 * Acknowledging
 * --------------------------------------------------------------------- */

typedef struct AckItem
{
	char		consumer[UUID_LEN * 2 + 5];
	int64		seq;
} AckItem;

static char *
reply_field(JsonbContainer *obj, const char *field, int index)
{
	JsonbValue *v = getKeyJsonValueFromContainer(obj, field, strlen(field), NULL);

	if (v == NULL || v->type != jbvString)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("reply %d has no string \"%s\"", index, field),
				 errhint("Pass the reply, salt and hmac exactly as get_event_message_batch() returned them.")));
	return pnstrdup(v->val.string.val, v->val.string.len);
}

static void
bad_reply(int index, const char *why)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
			 errmsg("reply %d does not carry a valid signature: %s", index, why),
			 errdetail("Nothing was acknowledged.")));
}

/* Generations whose replies are accepted now. */
static void
valid_generations(List **gens)
{
	int			rc;
	uint64		i;
	Oid			argtype = TEXTOID;
	Datum		arg = CStringGetTextDatum(notify_ext_reply_key_grace ? notify_ext_reply_key_grace : "0");

	/* No row at all means generation 1, in use (see rotate_reply_key()). */
	rc = spi_run("SELECT generation FROM notify_ext.reply_keys "
				 "WHERE retired_at IS NULL OR retired_at + $1::interval > pg_catalog.now() "
				 "UNION ALL SELECT 1 WHERE NOT EXISTS (SELECT FROM notify_ext.reply_keys)",
				 1, &argtype, &arg, NULL, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "reading reply keys failed");
	for (i = 0; i < SPI_processed; i++)
	{
		bool		isnull;

		*gens = lappend_int(*gens, DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i],
															   SPI_tuptable->tupdesc, 1, &isnull)));
	}
}

static int
int64_cmp(const void *a, const void *b)
{
	int64		x = *(const int64 *) a;
	int64		y = *(const int64 *) b;

	return x < y ? -1 : x > y ? 1 : 0;
}

static int
ack_item_cmp(const void *a, const void *b)
{
	const AckItem *x = a;
	const AckItem *y = b;
	int			c = strcmp(x->consumer, y->consumer);

	return c != 0 ? c : int64_cmp(&x->seq, &y->seq);
}

/* Reads "<generation>.<consumer uuid>.<seq>", as fetches write replies. */
static bool
parse_reply(const char *reply, int *generation, char consumer[UUID_LEN * 2 + 5], int64 *seq)
{
	const char *p = reply;
	int64		n = 0;
	uint64		u = 0;
	int			digits;

	for (digits = 0; *p >= '0' && *p <= '9' && digits < 9; p++, digits++)
		n = n * 10 + (*p - '0');
	if (digits == 0 || *p++ != '.')
		return false;
	*generation = (int) n;
	for (digits = 0; digits < UUID_LEN * 2 + 4; digits++, p++)
	{
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') || *p == '-'))
			return false;
		consumer[digits] = *p;
	}
	consumer[digits] = '\0';
	if (*p++ != '.')
		return false;
	for (digits = 0; *p >= '0' && *p <= '9' && digits < 19; p++, digits++)
		u = u * 10 + (*p - '0');
	if (digits == 0 || *p != '\0' || u > (uint64) PG_INT64_MAX)
		return false;
	*seq = (int64) u;
	return true;
}

PG_FUNCTION_INFO_V1(notify_ext_acknowledge_message_batch);
Datum
notify_ext_acknowledge_message_batch(PG_FUNCTION_ARGS)
{
	Jsonb	   *replies;
	int			n;
	int			i;
	AckItem    *items;
	List	   *gens = NIL;
	ReplyKey	key = {0};
	int64		acked = 0;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("replies must not be NULL")));
	replies = PG_GETARG_JSONB_P(0);
	if (!JB_ROOT_IS_ARRAY(replies) || JB_ROOT_IS_SCALAR(replies))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("replies must be a JSON array of {\"reply\", \"salt\", \"hmac\"} objects")));
	n = JB_ROOT_COUNT(replies);
	if (n == 0)
		PG_RETURN_INT32(0);
	items = palloc(sizeof(AckItem) * n);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	valid_generations(&gens);

	/* Verify every reply before acknowledging any. */
	for (i = 0; i < n; i++)
	{
		JsonbValue *elem = getIthJsonbValueFromContainer(&replies->root, i);
		char	   *reply;
		char	   *salt;
		char	   *hmac_b64;
		ReplyCheck	check;
		int			generation;
		char		consumer[UUID_LEN * 2 + 5];
		int64		seq;

		if (elem == NULL || elem->type != jbvBinary || !JsonContainerIsObject(elem->val.binary.data))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("reply %d is not a JSON object", i),
					 errhint("Pass the reply, salt and hmac exactly as get_event_message_batch() returned them.")));
		reply = reply_field(elem->val.binary.data, "reply", i);
		salt = reply_field(elem->val.binary.data, "salt", i);
		hmac_b64 = reply_field(elem->val.binary.data, "hmac", i);

		if (!parse_reply(reply, &generation, consumer, &seq))
			bad_reply(i, "the reply is malformed");
		if (!list_member_int(gens, generation))
			bad_reply(i, "its key has been rotated out");
		if (generation != key.generation)
			reply_key_load(&key, generation);
		check = reply_verify(&key, reply, salt, hmac_b64);
		if (check != REPLY_VALID)
		{
			reply_key_forget(&key);
			bad_reply(i, check == REPLY_MALFORMED ? "the hmac is not a base64 HMAC-SHA256"
					  : "the hmac does not match");
		}
		strlcpy(items[i].consumer, consumer, sizeof(items[i].consumer));
		items[i].seq = seq;
	}

	/* Remove acknowledged messages from the pending rows, consumer by consumer. */
	qsort(items, n, sizeof(AckItem), ack_item_cmp);
	for (i = 0; i < n;)
	{
		int			first = i;
		int64	   *seqs = palloc(sizeof(int64) * n);
		int			m = 0;
		Oid			types[3] = {UUIDOID, INT8OID, INT8OID};
		Datum		args[3];
		int			rc;
		uint64		r;
		SPITupleTable *rows;
		uint64		nrows;

		for (; i < n && strcmp(items[i].consumer, items[first].consumer) == 0; i++)
			if (m == 0 || seqs[m - 1] != items[i].seq)
				seqs[m++] = items[i].seq;	/* sorted, without repeats */

		args[0] = DirectFunctionCall1(uuid_in, CStringGetDatum(items[first].consumer));
		args[1] = Int64GetDatum(seqs[0]);
		args[2] = Int64GetDatum(seqs[m - 1]);
		rc = spi_run("SELECT batch, seqs FROM notify_ext.consumer_pending "
								   "WHERE consumer = $1 AND hi >= $2 AND lo <= $3 FOR UPDATE",
								   3, types, args, NULL, false, 0);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "acknowledging failed");
		rows = SPI_tuptable;
		nrows = SPI_processed;
		for (r = 0; r < nrows; r++)
		{
			bool		isnull;
			Datum		batch = SPI_getbinval(rows->vals[r], rows->tupdesc, 1, &isnull);
			ArrayType  *arr = DatumGetArrayTypeP(SPI_getbinval(rows->vals[r], rows->tupdesc, 2, &isnull));
			Datum	   *elems;
			int			nelems;
			int			kept = 0;
			int			k;

			deconstruct_array(arr, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &elems, NULL, &nelems);
			for (k = 0; k < nelems; k++)
			{
				int64		seq = DatumGetInt64(elems[k]);

				if (bsearch(&seq, seqs, m, sizeof(int64), int64_cmp) == NULL)
					elems[kept++] = elems[k];
			}
			if (kept == nelems)
				continue;
			acked += nelems - kept;
			if (kept == 0)
			{
				Oid			dtypes[2] = {UUIDOID, INT8OID};
				Datum		dargs[2] = {args[0], batch};

				rc = spi_run("DELETE FROM notify_ext.consumer_pending "
										   "WHERE consumer = $1 AND batch = $2",
										   2, dtypes, dargs, NULL, false, 0);
				if (rc != SPI_OK_DELETE)
					elog(ERROR, "acknowledging failed");
			}
			else
			{
				Oid			utypes[5] = {UUIDOID, INT8OID, INT8ARRAYOID, INT8OID, INT8OID};
				Datum		uargs[5];

				uargs[0] = args[0];
				uargs[1] = batch;
				uargs[2] = PointerGetDatum(construct_array(elems, kept, INT8OID, 8, FLOAT8PASSBYVAL,
														   TYPALIGN_DOUBLE));
				uargs[3] = elems[0];
				uargs[4] = elems[kept - 1];
				rc = spi_run("UPDATE notify_ext.consumer_pending "
										   "SET seqs = $3, lo = $4, hi = $5 "
										   "WHERE consumer = $1 AND batch = $2",
										   5, utypes, uargs, NULL, false, 0);
				if (rc != SPI_OK_UPDATE)
					elog(ERROR, "acknowledging failed");
			}
		}
		pfree(seqs);
	}
	reply_key_forget(&key);
	SPI_finish();
	PG_RETURN_INT32((int32) acked);
}
