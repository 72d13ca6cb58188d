/*
 * inbox.c: the inbox's insert trigger and its counts.
 *
 *   - notify_ext._inbox_channel(principal): the principal's NOTIFY channel,
 *     a keyed hash made by keys.c (docs/inbox.md: channel names are
 *     capabilities);
 *   - notify_ext._inbox_after_insert(), the statement-level AFTER INSERT
 *     trigger on notify_ext.notifications: one count delta per (recipient,
 *     type), one NOTIFY per new row in insertion order, then folding of
 *     the deltas of recipients that have many (notify_ext._inbox_compact());
 *     create_notifications_bulk() does the same through inbox_announce()
 *     and inbox_add_counts_and_fold() for the rows it writes directly.
 *
 * The payload of a NOTIFY is {"id": n} only, so that a leaked channel name
 * reveals no content: the client fetches the notification with
 * notify_ext.get_notification(n), which checks who is calling.
 *
 * Hand-built, because it pays (docs/design.md, "Hand-built pieces"): which
 * recipients of a large statement are checked for folding is sampled
 * (fold_check_sampled()) instead of checking every one.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/trigger.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "inbox.h"
#include "keys.h"
#include "spi_plan.h"

static void
inbox_channel(const char *principal, size_t len, char out[NAMEDATALEN])
{
	notify_ext_channel_name("inbox-channel", "notify_ext_inbox_", principal, len, out);
}

#define PAYLOAD_LEN 32

/* The payload of a new notification's NOTIFY: {"id": n}. */
static void
inbox_payload(char out[PAYLOAD_LEN], int64 id)
{
	snprintf(out, PAYLOAD_LEN, "{\"id\": " INT64_FORMAT "}", id);
}

void
inbox_announce(inbox_keys_hash *recipients, InboxKeyEntry *recipient, int64 id)
{
	char		payload[PAYLOAD_LEN];

	if (recipient->channel == NULL)
	{
		recipient->channel = MemoryContextAlloc(recipients->ctx, NAMEDATALEN);
		inbox_channel(recipient->key.data, recipient->key.len, recipient->channel);
	}
	inbox_payload(payload, id);
	Async_Notify(recipient->channel, payload);
}

/*
 * notify_ext._inbox_channel(principal text) returns text: internal, for the
 * extension's SECURITY DEFINER functions only (EXECUTE is revoked from
 * PUBLIC, and it refuses to run unless the current user is a superuser,
 * i.e. inside one of them).
 */
PG_FUNCTION_INFO_V1(notify_ext_inbox_channel);
Datum
notify_ext_inbox_channel(PG_FUNCTION_ARGS)
{
	text	   *p = PG_GETARG_TEXT_PP(0);
	char		out[NAMEDATALEN];

	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("notify_ext._inbox_channel() is internal"),
				 errhint("Use notify_ext.subscription_channel() for your own channel.")));
	inbox_channel(VARDATA_ANY(p), VARSIZE_ANY_EXHDR(p), out);
	PG_RETURN_TEXT_P(cstring_to_text(out));
}

/* ----------------------------------------------------------------------
 * Counts: deltas and folding
 * ----------------------------------------------------------------------
 */

/*
 * Whether one of the nrecipients recipients of a statement is checked for
 * folding.  Checking reads all of a recipient's delta rows, which for a
 * statement with a thousand recipients costs a large share of the
 * statement.  Every statement adds at most one delta row per (recipient,
 * type), so a recipient need not be checked on every statement: one that
 * touches at most FOLD_CHECK_ALL recipients checks them all, a larger one
 * checks each with probability max(FOLD_CHECK_ALL / n, 1 / FOLD_CHECK_ONE_IN).
 * A recipient therefore gets folded, on average, within FOLD_CHECK_ONE_IN
 * statements of passing the threshold, whatever mix of statements adds its
 * deltas.  The counts stay exact either way: folding only merges rows.
 */
#define FOLD_CHECK_ALL 16
#define FOLD_CHECK_ONE_IN 8

static bool
fold_check_sampled(int nrecipients)
{
	double		share;

	if (nrecipients <= FOLD_CHECK_ALL)
		return true;
	share = Max((double) FOLD_CHECK_ALL / nrecipients, 1.0 / FOLD_CHECK_ONE_IN);
	return pg_prng_double(&pg_global_prng_state) < share;
}

static Datum
text_array(Datum *d, int n)
{
	return PointerGetDatum(construct_array(d, n, TEXTOID, -1, false, TYPALIGN_INT));
}

static Datum
int8_array(Datum *d, int n)
{
	return PointerGetDatum(construct_array(d, n, INT8OID, sizeof(int64), FLOAT8PASSBYVAL,
										   TYPALIGN_DOUBLE));
}

/*
 * notify_ext._inbox_compact() locks only the recipients it folds, at most
 * 32 per call, however many it is given.
 */
void
inbox_add_counts_and_fold(inbox_keys_hash *pairs, inbox_keys_hash *recipients)
{
	int			n = pairs->members;
	Datum	   *recipient = palloc(Max(n, 1) * sizeof(Datum));
	Datum	   *type = palloc(Max(n, 1) * sizeof(Datum));
	Datum	   *total = palloc(Max(n, 1) * sizeof(Datum));
	Datum	   *unread = palloc(Max(n, 1) * sizeof(Datum));
	Datum	   *to_check = palloc(Max(recipients->members, 1) * sizeof(Datum));
	int			nchecked = 0;
	Datum		args[4];
	Oid			argtypes[4] = {TEXTARRAYOID, TEXTARRAYOID, INT8ARRAYOID, INT8ARRAYOID};
	inbox_keys_iterator it;
	InboxKeyEntry *e;
	int			i = 0;
	int			ret;

	inbox_keys_start_iterate(pairs, &it);
	while ((e = inbox_keys_iterate(pairs, &it)) != NULL)
	{
		int			rlen = strlen(e->key.data);

		recipient[i] = PointerGetDatum(cstring_to_text_with_len(e->key.data, rlen));
		type[i] = PointerGetDatum(cstring_to_text_with_len(e->key.data + rlen + 1,
														   e->key.len - rlen - 1));
		total[i] = Int64GetDatum(e->total);
		unread[i] = Int64GetDatum(e->unread);
		i++;
	}
	args[0] = text_array(recipient, n);
	args[1] = text_array(type, n);
	args[2] = int8_array(total, n);
	args[3] = int8_array(unread, n);
	ret = spi_run("INSERT INTO notify_ext.inbox_counts (recipient, type, total, unread) "
				  "SELECT u.r, u.t, u.n, u.x "
				  "FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), "
				  "pg_catalog.unnest($3), pg_catalog.unnest($4)) AS u(r, t, n, x)",
				  4, argtypes, args, NULL, false, 0);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "inserting count deltas failed: %s", SPI_result_code_string(ret));

	inbox_keys_start_iterate(recipients, &it);
	while ((e = inbox_keys_iterate(recipients, &it)) != NULL)
		if (fold_check_sampled(recipients->members))
			to_check[nchecked++] = PointerGetDatum(cstring_to_text_with_len(e->key.data,
																			e->key.len));
	if (nchecked == 0)
		return;
	args[0] = text_array(to_check, nchecked);
	argtypes[0] = TEXTARRAYOID;
	ret = spi_run("SELECT notify_ext._inbox_compact($1)", 1, argtypes, args, NULL, false, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "folding count deltas failed: %s", SPI_result_code_string(ret));
}

/* ----------------------------------------------------------------------
 * The statement-level AFTER INSERT trigger on notify_ext.notifications
 * ----------------------------------------------------------------------
 */

static int
attnum_of(TupleDesc desc, const char *name)
{
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (!att->attisdropped && strcmp(NameStr(att->attname), name) == 0)
			return i;
	}
	elog(ERROR, "notify_ext.notifications has no column \"%s\"", name);
	return -1;					/* keep compiler quiet */
}

void
notification_columns(TupleDesc desc, NotificationColumns *col)
{
	col->id = attnum_of(desc, "id");
	col->recipient = attnum_of(desc, "recipient");
	col->type = attnum_of(desc, "type");
	col->message = attnum_of(desc, "message");
	col->meta = attnum_of(desc, "meta");
	col->refs = attnum_of(desc, "refs");
	col->ts = attnum_of(desc, "ts");
	col->read = attnum_of(desc, "read");
}

/*
 * notify_ext._inbox_after_insert(): for the new rows of one INSERT, adds
 * one count delta per (recipient, type), queues the NOTIFY of every row in
 * insertion order (each recipient's channel made once) and folds the deltas
 * of recipients that have many.
 */
PG_FUNCTION_INFO_V1(notify_ext_inbox_after_insert);
Datum
notify_ext_inbox_after_insert(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TupleDesc	desc;
	Tuplestorestate *rows;
	TupleTableSlot *slot;
	NotificationColumns col;
	MemoryContext cxt = CurrentMemoryContext;
	MemoryContext rowcxt;
	inbox_keys_hash *pairs;
	inbox_keys_hash *recipients;
	StringInfoData key;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		!TRIGGER_FIRED_BY_INSERT(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_STATEMENT(trigdata->tg_event) ||
		trigdata->tg_newtable == NULL)
		elog(ERROR, "notify_ext._inbox_after_insert() must be an AFTER INSERT statement trigger with a NEW TABLE");

	desc = RelationGetDescr(trigdata->tg_relation);
	rows = trigdata->tg_newtable;
	notification_columns(desc, &col);

	pairs = inbox_keys_create(cxt, 64, NULL);
	recipients = inbox_keys_create(cxt, 64, NULL);
	initStringInfo(&key);
	rowcxt = AllocSetContextCreate(cxt, "notify_ext inbox row", ALLOCSET_SMALL_SIZES);
	slot = MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple);

	tuplestore_rescan(rows);
	while (tuplestore_gettupleslot(rows, true, false, slot))
	{
		Datum	   *v;
		bool	   *isnull;
		text	   *recipient;
		text	   *type;
		InboxKeyEntry *e;
		MemoryContext old;

		slot_getallattrs(slot);
		v = slot->tts_values;
		isnull = slot->tts_isnull;
		/* NOT NULL columns; a row without them is neither counted nor sent. */
		if (isnull[col.recipient] || isnull[col.type])
			continue;

		old = MemoryContextSwitchTo(rowcxt);
		recipient = DatumGetTextPP(v[col.recipient]);
		type = DatumGetTextPP(v[col.type]);

		inbox_pair_key(&key, VARDATA_ANY(recipient), VARSIZE_ANY_EXHDR(recipient),
					   VARDATA_ANY(type), VARSIZE_ANY_EXHDR(type));
		e = inbox_keys_add(pairs, key.data, key.len, NULL);
		e->total++;
		if (!isnull[col.read] && !DatumGetBool(v[col.read]))
			e->unread++;

		e = inbox_keys_add(recipients, VARDATA_ANY(recipient), VARSIZE_ANY_EXHDR(recipient), NULL);
		if (!isnull[col.id])
			inbox_announce(recipients, e, DatumGetInt64(v[col.id]));
		MemoryContextSwitchTo(old);
		MemoryContextReset(rowcxt);
	}
	ExecDropSingleTupleTableSlot(slot);
	MemoryContextDelete(rowcxt);

	if (pairs->members > 0)
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		inbox_add_counts_and_fold(pairs, recipients);
		SPI_finish();
	}
	return PointerGetDatum(NULL);
}
