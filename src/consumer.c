/*
 * consumer.c: stream consumers.
 *
 * Fetching takes the consumer's row lock, so two sessions never hand out
 * the same message; it reads the committed horizon (ordering.c) before the
 * snapshot that reads events, so an event that commits late with a lower
 * seq is still found: delivered_upto never passes the horizon.
 *
 * Replies are "<key generation>.<consumer>.<seq>", signed with
 * HMAC-SHA256 over reply "." salt under a key derived from the server key
 * file; verification is constant-time.
 *
 * Wake-ups: in the pre-commit step of a transaction that recorded events,
 * the consumers whose scope they touch get one NOTIFY each on their
 * channel; after the commit, sessions long-polling in this database are
 * woken through their latches.  A consumer's channel is a keyed hash of its
 * id (consumer_channel()), so knowing a consumer id is not enough to LISTEN,
 * and a wake-up carries only the consumer id and a seq.
 */
#include "postgres.h"

#include <sodium.h>

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "executor/spi.h"
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

#include "notify_ext.h"
#include "extension.h"
#include "principal.h"

#define MAX_BATCH_SIZE 10000

/*
 * Seqs of the log examined per query when looking for new messages.  The
 * seq index is BRIN, so a query reads its whole window: the first window is
 * sized to the batch (seqs are dense, so a consumer of everything fills its
 * batch from it), and each one that comes back short is four times the
 * last, up to SCAN_WINDOW_MAX, for consumers whose scope is sparse.
 */
#define SCAN_WINDOW_MIN 256
#define SCAN_WINDOW_MAX 262144
#define SALT_BYTES 16

static char *reply_key_grace = NULL;

/* ---------------------------------------------------------------------
 * Shared state: a generation bumped when consumers change, and the
 * sessions waiting in a long poll.
 * --------------------------------------------------------------------- */

typedef struct ConsumerShared
{
	pg_atomic_uint64 generation;
	pg_atomic_uint32 nwaiters;
	int			nprocs;
	pg_atomic_uint32 waiting_db[FLEXIBLE_ARRAY_MEMBER];
} ConsumerShared;

static ConsumerShared *consumer_shared = NULL;

static int
consumer_nprocs(void)
{
	return MaxBackends + NUM_AUXILIARY_PROCS;
}

Size
consumer_shmem_size(void)
{
	return add_size(offsetof(ConsumerShared, waiting_db),
					mul_size(consumer_nprocs(), sizeof(pg_atomic_uint32)));
}

void
consumer_shmem_init(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	consumer_shared = ShmemInitStruct("notify_ext consumers", consumer_shmem_size(), &found);
	if (!found)
	{
		int			i;

		consumer_shared->nprocs = consumer_nprocs();
		pg_atomic_init_u64(&consumer_shared->generation, 1);
		pg_atomic_init_u32(&consumer_shared->nwaiters, 0);
		for (i = 0; i < consumer_shared->nprocs; i++)
			pg_atomic_init_u32(&consumer_shared->waiting_db[i], InvalidOid);
	}
	LWLockRelease(AddinShmemInitLock);
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
wake_waiters(int64 first_seq, int64 count)
{
	int			i;

	if (consumer_shared == NULL || pg_atomic_read_u32(&consumer_shared->nwaiters) == 0)
		return;
	for (i = 0; i < consumer_shared->nprocs; i++)
	{
		if (pg_atomic_read_u32(&consumer_shared->waiting_db[i]) == MyDatabaseId)
			SetLatch(&ProcGlobal->allProcs[i].procLatch);
	}
}

static void
consumer_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT && consumers_changed_here && consumer_shared != NULL)
		pg_atomic_fetch_add_u64(&consumer_shared->generation, 1);
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PREPARE)
		consumers_changed_here = false;
}

static bool
check_interval(char **newval, void **extra, GucSource source)
{
	MemoryContext cxt = CurrentMemoryContext;
	Interval   *iv = NULL;

	if (*newval == NULL)
		return true;
	/* A check hook must report, not raise: catch the input error. */
	PG_TRY();
	{
		iv = DatumGetIntervalP(DirectFunctionCall3(interval_in, CStringGetDatum(*newval),
												   ObjectIdGetDatum(InvalidOid),
												   Int32GetDatum(-1)));
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		FlushErrorState();
		iv = NULL;
	}
	PG_END_TRY();
	if (iv == NULL)
	{
		GUC_check_errdetail("\"%s\" is not an interval.", *newval);
		return false;
	}
	if (iv->time < 0 || iv->day < 0 || iv->month < 0)
	{
		GUC_check_errdetail("The grace period must not be negative.");
		return false;
	}
	return true;
}

void
consumer_init(void)
{
	DefineCustomStringVariable("notify_ext.reply_key_grace",
							   "How long replies signed with a rotated-out key stay valid.",
							   "After notify_ext.rotate_reply_key(), acknowledgements signed with the "
							   "previous key are accepted for this long.",
							   &reply_key_grace,
							   "1 hour",
							   PGC_SUSET, 0,
							   check_interval, NULL, NULL);
	RegisterXactCallback(consumer_xact_callback, NULL);
	capture_register_commit_hook(wake_waiters);
}

/* ---------------------------------------------------------------------
 * The event JSON
 * --------------------------------------------------------------------- */

static void
append_text_array_json(StringInfo buf, ArrayType *arr)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int			i;

	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	appendStringInfoChar(buf, '[');
	for (i = 0; i < n; i++)
	{
		if (i > 0)
			appendStringInfoString(buf, ", ");
		if (nulls[i])
			appendStringInfoString(buf, "null");
		else
			escape_json(buf, TextDatumGetCString(elems[i]));
	}
	appendStringInfoChar(buf, ']');
}

/* Field values of one event, as read from notify_ext.event_log. */
typedef struct EventFields
{
	int64		seq;
	text	   *stream;
	text	   *operation;
	text	   *resource_id;		/* may be NULL, as may the next two */
	text	   *resource_variant;
	ArrayType  *resource_path;
	TimestampTz occurred_at;
	text	   *actor;
	text	   *payload;		/* json text */
	ArrayType  *changed;		/* may be NULL */
} EventFields;

static Jsonb *
build_event_message(EventFields *e)
{
	StringInfoData buf;
	struct pg_tm tm;
	fsec_t		fsec;

	initStringInfo(&buf);
	appendStringInfo(&buf, "{\"seq\": " INT64_FORMAT ", \"stream\": ", e->seq);
	escape_json(&buf, text_to_cstring(e->stream));
	appendStringInfoString(&buf, ", \"operation\": ");
	escape_json(&buf, text_to_cstring(e->operation));
	appendStringInfoString(&buf, ", \"resource\": ");
	if (e->resource_id == NULL)
		appendStringInfoString(&buf, "null");
	else
	{
		appendStringInfoString(&buf, "{\"id\": ");
		escape_json(&buf, text_to_cstring(e->resource_id));
		appendStringInfoString(&buf, ", \"variant\": ");
		if (e->resource_variant)
			escape_json(&buf, text_to_cstring(e->resource_variant));
		else
			appendStringInfoString(&buf, "null");
		appendStringInfoString(&buf, ", \"path\": ");
		if (e->resource_path)
			append_text_array_json(&buf, e->resource_path);
		else
			appendStringInfoString(&buf, "null");
		appendStringInfoChar(&buf, '}');
	}
	if (timestamp2tm(e->occurred_at, NULL, &tm, &fsec, NULL, NULL) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("timestamp out of range")));
	appendStringInfo(&buf, ", \"occurred_at\": \"%04d-%02d-%02dT%02d:%02d:%02d.%06dZ\", \"actor\": ",
					 tm.tm_year, tm.tm_mon, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int) fsec);
	escape_json(&buf, text_to_cstring(e->actor));
	appendStringInfoString(&buf, ", \"payload\": ");
	appendBinaryStringInfo(&buf, VARDATA_ANY(e->payload), VARSIZE_ANY_EXHDR(e->payload));
	if (e->changed)
	{
		appendStringInfoString(&buf, ", \"changed\": ");
		append_text_array_json(&buf, e->changed);
	}
	appendStringInfoChar(&buf, '}');
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}

PG_FUNCTION_INFO_V1(notify_ext_event_message);
Datum
notify_ext_event_message(PG_FUNCTION_ARGS)
{
	EventFields e;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2) || PG_ARGISNULL(6) ||
		PG_ARGISNULL(7) || PG_ARGISNULL(8))
		PG_RETURN_NULL();
	e.seq = PG_GETARG_INT64(0);
	e.stream = PG_GETARG_TEXT_PP(1);
	e.operation = PG_GETARG_TEXT_PP(2);
	e.resource_id = PG_ARGISNULL(3) ? NULL : PG_GETARG_TEXT_PP(3);
	e.resource_variant = PG_ARGISNULL(4) ? NULL : PG_GETARG_TEXT_PP(4);
	e.resource_path = PG_ARGISNULL(5) ? NULL : PG_GETARG_ARRAYTYPE_P(5);
	e.occurred_at = PG_GETARG_TIMESTAMPTZ(6);
	e.actor = PG_GETARG_TEXT_PP(7);
	e.payload = PG_GETARG_TEXT_PP(8);
	e.changed = PG_ARGISNULL(9) ? NULL : PG_GETARG_ARRAYTYPE_P(9);
	PG_RETURN_JSONB_P(build_event_message(&e));
}

/* ---------------------------------------------------------------------
 * Reply signing
 * --------------------------------------------------------------------- */

static void
reply_key(int generation, unsigned char key[crypto_auth_hmacsha256_KEYBYTES])
{
	char		purpose[64];

	StaticAssertStmt(crypto_auth_hmacsha256_KEYBYTES == NOTIFY_EXT_KEY_BYTES,
					 "reply keys are server keys");
	snprintf(purpose, sizeof(purpose), "stream-reply-%d", generation);
	notify_ext_server_key(purpose, key);
}

static char *
base64(const unsigned char *bin, size_t len)
{
	size_t		size = sodium_base64_encoded_len(len, sodium_base64_VARIANT_ORIGINAL);
	char	   *out = palloc(size);

	sodium_bin2base64(out, size, bin, len, sodium_base64_VARIANT_ORIGINAL);
	return out;
}

/* The HMAC input: reply "." salt. */
static char *
signed_text(const char *reply, const char *salt, size_t *len)
{
	char	   *s = psprintf("%s.%s", reply, salt);

	*len = strlen(s);
	return s;
}

/* ---------------------------------------------------------------------
 * Saved plans
 *
 * Every statement here is planned once per session, as a generic plan:
 * planning the partitioned event log costs more than running the query.
 * --------------------------------------------------------------------- */

typedef struct SavedPlan
{
	struct SavedPlan *next;
	char	   *sql;
	SPIPlanPtr	plan;
} SavedPlan;

static SavedPlan *saved_plans = NULL;

static int
spi_run(const char *sql, int nargs, Oid *argtypes, Datum *values, const char *nulls,
		bool read_only, long count)
{
	SavedPlan  *sp;

	for (sp = saved_plans; sp != NULL; sp = sp->next)
		if (strcmp(sp->sql, sql) == 0)
			break;
	if (sp == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare_cursor(sql, nargs, argtypes, CURSOR_OPT_GENERIC_PLAN);

		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed for \"%s\": %s", sql, SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		sp = MemoryContextAlloc(TopMemoryContext, sizeof(SavedPlan));
		sp->sql = MemoryContextStrdup(TopMemoryContext, sql);
		sp->plan = plan;
		sp->next = saved_plans;
		saved_plans = sp;
	}
	return SPI_execute_plan(sp->plan, values, nulls, read_only, count);
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

/* The scope filter: $3 resource, $4 include_subresources, $5 streams, $6 operations, $7 from_date. */
#define SCOPE_FILTER \
	"($3::text IS NULL OR resource_id = $3 OR ($4 AND $3 = ANY (resource_path))) " \
	"AND ($5::text[] IS NULL OR stream = ANY ($5)) " \
	"AND ($6::text[] IS NULL OR operation = ANY ($6)) " \
	"AND ($7::timestamptz IS NULL OR occurred_at >= $7)"

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
	rc = spi_run("SELECT 1 FROM notify_ext.event_log WHERE seq > $1 AND seq <= $2 AND "
							   SCOPE_FILTER " LIMIT 1",
							   7, scope_argtypes, args, nulls, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "reading events failed");
	return SPI_processed > 0;
}

static void
fields_from_tuple(HeapTuple tup, TupleDesc desc, EventFields *e)
{
	bool		isnull;
	Datum		d;

	e->seq = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	e->stream = DatumGetTextPP(SPI_getbinval(tup, desc, 2, &isnull));
	e->operation = DatumGetTextPP(SPI_getbinval(tup, desc, 3, &isnull));
	d = SPI_getbinval(tup, desc, 4, &isnull);
	e->resource_id = isnull ? NULL : DatumGetTextPP(d);
	d = SPI_getbinval(tup, desc, 5, &isnull);
	e->resource_variant = isnull ? NULL : DatumGetTextPP(d);
	d = SPI_getbinval(tup, desc, 6, &isnull);
	e->resource_path = isnull ? NULL : DatumGetArrayTypeP(d);
	e->occurred_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 7, &isnull));
	e->actor = DatumGetTextPP(SPI_getbinval(tup, desc, 8, &isnull));
	e->payload = DatumGetTextPP(SPI_getbinval(tup, desc, 9, &isnull));
	d = SPI_getbinval(tup, desc, 10, &isnull);
	e->changed = isnull ? NULL : DatumGetArrayTypeP(d);
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

/* Waits until something is ready for the consumer or the deadline passes. */
static void
long_poll(Datum id, TimestampTz deadline)
{
	uint32		me = MY_PROC_INDEX;

	pg_atomic_write_u32(&consumer_shared->waiting_db[me], MyDatabaseId);
	pg_atomic_fetch_add_u32(&consumer_shared->nwaiters, 1);
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
		pg_atomic_write_u32(&consumer_shared->waiting_db[me], InvalidOid);
		pg_atomic_fetch_sub_u32(&consumer_shared->nwaiters, 1);
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
	int			generation;
	unsigned char key[crypto_auth_hmacsha256_KEYBYTES];
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
				 errmsg("wait must not be negative")));
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
		long_poll(id, GetCurrentTimestamp() + wait->time + (int64) wait->day * USECS_PER_DAY +
				  (int64) wait->month * DAYS_PER_MONTH * USECS_PER_DAY);

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

		generation = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		if (isnull)
			elog(ERROR, "no reply key");
	}
	reply_key(generation, key);

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
		int64		window;
		MemoryContext msg_cxt;
		MemoryContext old_cxt;
		unsigned char *salts;

		horizon = ordering_committed_seq();
		new_upto = c.delivered_upto;
		new_tuples = palloc(sizeof(HeapTuple) * Max(remaining, 1));

		/*
		 * Read in windows of seq so that each query stays bounded, however
		 * far behind the consumer is.
		 */
		window = Max(SCAN_WINDOW_MIN, 2 * (int64) remaining);
		while (remaining > (int) nnew && new_upto < horizon)
		{
			Datum		args[8];
			char		nulls[8];
			int64		window_end = Min(horizon, new_upto + window);
			int			want = remaining - (int) nnew;
			uint64		j;

			args[0] = Int64GetDatum(new_upto);
			args[1] = Int64GetDatum(window_end);
			nulls[0] = nulls[1] = ' ';
			scope_args(&c, args, nulls);
			args[7] = Int32GetDatum(want);
			nulls[7] = ' ';
			rc = spi_run("SELECT " EVENT_COLUMNS " FROM notify_ext.event_log "
									   "WHERE seq > $1 AND seq <= $2 AND " SCOPE_FILTER
									   " ORDER BY seq LIMIT $8",
									   8, scope_argtypes, args, nulls, false, 0);
			if (rc != SPI_OK_SELECT)
				elog(ERROR, "reading events failed");
			new_desc = SPI_tuptable->tupdesc;
			for (j = 0; j < SPI_processed; j++)
				new_tuples[nnew++] = SPI_tuptable->vals[j];
			if (SPI_processed == (uint64) want)
			{
				bool		isnull;

				new_upto = DatumGetInt64(SPI_getbinval(new_tuples[nnew - 1], new_desc, 1, &isnull));
			}
			else
			{
				new_upto = window_end;
				window = Min(SCAN_WINDOW_MAX, window * 4);
			}
		}

		/* Emit redeliveries and new messages merged in seq order. */
		total = ndeliveries + (int) nnew;
		all = palloc(sizeof(Delivery) * Max(total, 1));
		msg_cxt = AllocSetContextCreate(CurrentMemoryContext, "notify_ext message",
										ALLOCSET_DEFAULT_SIZES);
		/* one fresh random salt per delivery, drawn at once */
		salts = palloc(SALT_BYTES * Max(total, 1));
		randombytes_buf(salts, SALT_BYTES * Max(total, 1));
		while (r < nredelivery_rows || nn < nnew)
		{
			HeapTuple	tup;
			TupleDesc	desc;
			EventFields e;
			int32		count;
			Datum		values[6];
			bool		nulls[6] = {false, false, false, false, false, false};
			unsigned char mac[crypto_auth_hmacsha256_BYTES];
			char	   *reply;
			char	   *salt;
			char	   *msg;
			size_t		msglen;
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
			fields_from_tuple(tup, desc, &e);
			all[nall].seq = e.seq;
			all[nall].count = count;
			nall++;

			salt = base64(salts + (nall - 1) * SALT_BYTES, SALT_BYTES);
			reply = psprintf("%d.%s." INT64_FORMAT, generation, idtext, e.seq);
			msg = signed_text(reply, salt, &msglen);
			crypto_auth_hmacsha256(mac, (unsigned char *) msg, msglen, key);

			values[0] = Int64GetDatum(e.seq);
			values[1] = JsonbPGetDatum(build_event_message(&e));
			values[2] = CStringGetTextDatum(reply);
			values[3] = CStringGetTextDatum(salt);
			values[4] = CStringGetTextDatum(base64(mac, sizeof(mac)));
			values[5] = Int32GetDatum(count);
			MemoryContextSwitchTo(fn_cxt);
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
			MemoryContextSwitchTo(old_cxt);
			MemoryContextReset(msg_cxt);
		}
		MemoryContextDelete(msg_cxt);
		sodium_memzero(key, sizeof(key));

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
	Datum		arg = CStringGetTextDatum(reply_key_grace ? reply_key_grace : "0");

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

PG_FUNCTION_INFO_V1(notify_ext_acknowledge_message_batch);
Datum
notify_ext_acknowledge_message_batch(PG_FUNCTION_ARGS)
{
	Jsonb	   *replies;
	int			n;
	int			i;
	AckItem    *items;
	List	   *gens = NIL;
	unsigned char key[crypto_auth_hmacsha256_KEYBYTES];
	int			key_generation = -1;
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
		unsigned char mac[crypto_auth_hmacsha256_BYTES];
		size_t		maclen;
		int			generation;
		char		consumer[64];
		long long	seq;
		int			consumed = 0;
		char	   *msg;
		size_t		msglen;

		if (elem == NULL || elem->type != jbvBinary || !JsonContainerIsObject(elem->val.binary.data))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("reply %d is not a JSON object", i),
					 errhint("Pass the reply, salt and hmac exactly as get_event_message_batch() returned them.")));
		reply = reply_field(elem->val.binary.data, "reply", i);
		salt = reply_field(elem->val.binary.data, "salt", i);
		hmac_b64 = reply_field(elem->val.binary.data, "hmac", i);

		if (sscanf(reply, "%d.%36[0-9a-f-].%lld%n", &generation, consumer, &seq, &consumed) != 3 ||
			consumed != (int) strlen(reply) || strlen(consumer) != 36)
			bad_reply(i, "the reply is malformed");
		if (!list_member_int(gens, generation))
			bad_reply(i, "its key has been rotated out");
		if (sodium_base642bin(mac, sizeof(mac), hmac_b64, strlen(hmac_b64), NULL, &maclen, NULL,
							  sodium_base64_VARIANT_ORIGINAL) != 0 || maclen != sizeof(mac))
			bad_reply(i, "the hmac is not a base64 HMAC-SHA256");
		if (generation != key_generation)
		{
			reply_key(generation, key);
			key_generation = generation;
		}
		msg = signed_text(reply, salt, &msglen);
		if (crypto_auth_hmacsha256_verify(mac, (unsigned char *) msg, msglen, key) != 0)
		{
			sodium_memzero(key, sizeof(key));
			bad_reply(i, "the hmac does not match");
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
	sodium_memzero(key, sizeof(key));
	SPI_finish();
	PG_RETURN_INT32((int32) acked);
}

/* ---------------------------------------------------------------------
 * Wake-ups sent at commit
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
static void
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
	char	   *resource_id;
	bool		include_subresources;
	char	  **streams;
	int			nstreams;
	char	  **operations;
	int			noperations;
	bool		has_from_date;
	TimestampTz from_date;
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
static bool cache_has_long_ids = false;

static char **
text_array_strings(Datum d, int *n)
{
	Datum	   *elems;
	int			i;
	char	  **out;

	deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false, TYPALIGN_INT, &elems, NULL, n);
	out = palloc(sizeof(char *) * Max(*n, 1));
	for (i = 0; i < *n; i++)
		out[i] = TextDatumGetCString(elems[i]);
	return out;
}

static void
load_consumers(void)
{
	uint64		generation = pg_atomic_read_u64(&consumer_shared->generation);
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
	cache_has_long_ids = false;
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

		strlcpy(cc->id, uuid, sizeof(cc->id));
		consumer_channel(DatumGetUUIDP(DirectFunctionCall1(uuid_in, CStringGetDatum(uuid))),
						 cc->channel);
		cc->resource_id = SPI_getvalue(tup, desc, 2);
		cc->include_subresources = DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull));
		d = SPI_getbinval(tup, desc, 4, &isnull);
		cc->streams = isnull ? NULL : text_array_strings(d, &cc->nstreams);
		d = SPI_getbinval(tup, desc, 5, &isnull);
		cc->operations = isnull ? NULL : text_array_strings(d, &cc->noperations);
		d = SPI_getbinval(tup, desc, 6, &isnull);
		cc->has_from_date = !isnull;
		cc->from_date = isnull ? 0 : DatumGetTimestampTz(d);

		if (cc->resource_id == NULL)
			unscoped = lappend_int(unscoped, ncached);
		else if (strlen(cc->resource_id) >= sizeof(((ScopeEntry *) 0)->key))
		{
			/* too long to index: checked against every event */
			unscoped = lappend_int(unscoped, ncached);
			cache_has_long_ids = true;
		}
		else
		{
			bool		found;
			ScopeEntry *se = hash_search(scope_index, cc->resource_id, HASH_ENTER, &found);

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

static bool
string_in(char **list, int n, text *t)
{
	int			len = VARSIZE_ANY_EXHDR(t);
	int			i;

	for (i = 0; i < n; i++)
		if ((int) strlen(list[i]) == len && memcmp(list[i], VARDATA_ANY(t), len) == 0)
			return true;
	return false;
}

static bool
text_is(text *t, const char *s)
{
	int			len = VARSIZE_ANY_EXHDR(t);

	return (int) strlen(s) == len && memcmp(s, VARDATA_ANY(t), len) == 0;
}

/* The checks other than the resource. */
static bool
filters_match(CachedConsumer *cc, Datum *values)
{
	if (cc->streams && !string_in(cc->streams, cc->nstreams, DatumGetTextPP(values[2])))
		return false;
	if (cc->operations && !string_in(cc->operations, cc->noperations, DatumGetTextPP(values[3])))
		return false;
	if (cc->has_from_date && DatumGetTimestampTz(values[1]) < cc->from_date)
		return false;
	return true;
}

static void
consider(int idx, Datum *values, bool *isnull, int64 *best, bool exact)
{
	CachedConsumer *cc = &cached_consumers[idx];
	int64		seq = DatumGetInt64(values[0]);

	if (best[idx] >= seq)
		return;
	if (cc->resource_id != NULL && !exact)
	{
		/* a long id: compare the resource and, with subresources, the path */
		bool		in = false;

		if (!isnull[4] && text_is(DatumGetTextPP(values[4]), cc->resource_id))
			in = true;
		else if (cc->include_subresources && !isnull[6])
		{
			Datum	   *elems;
			int			n,
						i;

			deconstruct_array(DatumGetArrayTypeP(values[6]), TEXTOID, -1, false, TYPALIGN_INT,
							  &elems, NULL, &n);
			for (i = 0; i < n && !in; i++)
				in = text_is(DatumGetTextPP(elems[i]), cc->resource_id);
		}
		if (!in)
			return;
	}
	if (filters_match(cc, values))
		best[idx] = seq;
}

/*
 * Called in the pre-commit step with the transaction's events (seq already
 * assigned).  all: some events were written ahead and are not in memory,
 * so every consumer is woken.
 */
void
consumer_notify_committing(HeapTuple *events, int nevents, bool all)
{
	int64	   *best;
	int			e;
	int			i;

	if (consumer_shared == NULL)
		return;
	load_consumers();
	if (ncached == 0)
		return;

	best = palloc0(sizeof(int64) * ncached);
	for (e = 0; e < nevents; e++)
	{
		Datum		values[10];
		bool		isnull[10];
		ListCell   *lc;

		heap_deform_tuple(events[e], event_log_desc(), values, isnull);
		foreach(lc, unscoped)
			consider(lfirst_int(lc), values, isnull, best, false);
		if (hash_get_num_entries(scope_index) == 0)
			continue;
		if (!isnull[6])
		{
			Datum	   *elems;
			int			n;
			int			k;
			int			len;

			deconstruct_array(DatumGetArrayTypeP(values[6]), TEXTOID, -1, false, TYPALIGN_INT,
							  &elems, NULL, &n);
			for (k = 0; k < n; k++)
			{
				char		key[NAMEDATALEN * 4];
				text	   *t = DatumGetTextPP(elems[k]);
				ScopeEntry *se;
				ListCell   *lc2;
				bool		is_own = (k == n - 1);

				len = VARSIZE_ANY_EXHDR(t);
				if (len >= (int) sizeof(key))
					continue;
				memcpy(key, VARDATA_ANY(t), len);
				key[len] = '\0';
				se = hash_search(scope_index, key, HASH_FIND, NULL);
				if (se == NULL)
					continue;
				foreach(lc2, se->consumers)
				{
					int			idx = lfirst_int(lc2);

					/* own events always; a subtree's only with subresources */
					if (is_own || cached_consumers[idx].include_subresources)
						consider(idx, values, isnull, best, true);
				}
			}
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
