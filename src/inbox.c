/*
 * inbox.c: the inbox's C parts.
 *
 *   - the per-principal NOTIFY channel (below);
 *   - the statement-level AFTER INSERT trigger on notify_ext.notifications:
 *     count deltas per (recipient, type), one NOTIFY per new row, folding;
 *   - notify_ext.create_notifications_bulk(): validation of the items, the
 *     preference lookup, the kept items written straight into the table
 *     (or by one INSERT ... SELECT FROM unnest() when something else acts
 *     on inserts), their counts and NOTIFYs (see docs/inbox.md for the
 *     figures).
 *
 * LISTEN cannot be permission-checked in PostgreSQL: any session may LISTEN
 * on any channel name.  So the channel of a principal is a name nobody can
 * derive without a server key:
 *
 *     notify_ext_inbox_ || hex(BLAKE2b-128 keyed with K_inbox, principal)
 *
 * where K_inbox = notify_ext_server_key("inbox-channel").  Knowing one's own
 * channel (or many) tells nothing about another principal's.  The payload is
 * {"id": n} only, so that a leaked channel name reveals no content: the
 * client fetches the notification with notify_ext.get_notification(n), which
 * checks who is calling.
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_trigger.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/sequence.h"
#include "commands/trigger.h"
#include "common/hashfn.h"
#include "common/pg_prng.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/rls.h"
#include "utils/timestamp.h"

#include "event_write.h"
#include "keys.h"
#include "principal.h"

#define CHANNEL_LEN NAMEDATALEN

static void
inbox_channel(const char *principal, size_t len, char *out)
{
	notify_ext_channel_name("inbox-channel", "notify_ext_inbox_", principal, len, out);
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
	char		out[CHANNEL_LEN];

	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("notify_ext._inbox_channel() is internal"),
				 errhint("Use notify_ext.subscription_channel() for your own channel.")));
	inbox_channel(VARDATA_ANY(p), VARSIZE_ANY_EXHDR(p), out);
	PG_RETURN_TEXT_P(cstring_to_text(out));
}


/* ----------------------------------------------------------------------
 * A small hash set of byte strings, with two counters and a string per
 * entry, entries kept in insertion order.  Used per call: recipients,
 * switched-off (recipient, type) pairs, count deltas and channel names.
 * A composite key is "recipient\0type" (text values never contain \0).
 * ----------------------------------------------------------------------
 */
typedef struct KEntry
{
	const char *key;
	int			len;
	uint32		hash;
	int64		a;
	int64		b;
	char	   *str;
} KEntry;

typedef struct KSet
{
	MemoryContext cxt;
	KEntry	   *ents;			/* in insertion order */
	int			nents;
	int			maxents;
	int32	   *slots;			/* index into ents, -1 when free */
	uint32		mask;
} KSet;

static void
ks_alloc_slots(KSet *s, uint32 nslots)
{
	s->slots = MemoryContextAlloc(s->cxt, nslots * sizeof(int32));
	memset(s->slots, 0xff, nslots * sizeof(int32));
	s->mask = nslots - 1;
}

static void
ks_init(KSet *s, MemoryContext cxt, int expect)
{
	uint32		nslots = 16;

	while (nslots < (uint32) expect * 2)
		nslots <<= 1;
	s->cxt = cxt;
	s->nents = 0;
	s->maxents = Max(expect, 8);
	s->ents = MemoryContextAlloc(cxt, s->maxents * sizeof(KEntry));
	ks_alloc_slots(s, nslots);
}

/*
 * The entry for key, or NULL when there is none and insert is false.  A new
 * entry has a = b = 0 and str = NULL; its key is copied into the set's
 * context when copy is true (otherwise it must outlive the set).  The
 * pointer is valid until the next insertion.
 */
static KEntry *
ks_find(KSet *s, const char *key, int len, bool insert, bool copy, bool *found)
{
	uint32		h = hash_bytes((const unsigned char *) key, len);
	uint32		i = h & s->mask;
	KEntry	   *e;

	for (;;)
	{
		int32		idx = s->slots[i];

		if (idx < 0)
			break;
		e = &s->ents[idx];
		if (e->hash == h && e->len == len && memcmp(e->key, key, len) == 0)
		{
			if (found)
				*found = true;
			return e;
		}
		i = (i + 1) & s->mask;
	}
	if (found)
		*found = false;
	if (!insert)
		return NULL;

	if (s->nents == s->maxents)
	{
		s->maxents *= 2;
		s->ents = repalloc(s->ents, s->maxents * sizeof(KEntry));
	}
	if ((uint32) (s->nents + 1) * 2 > s->mask + 1)
	{
		/* Grow the slots and rehash. */
		pfree(s->slots);
		ks_alloc_slots(s, (s->mask + 1) * 2);
		for (int k = 0; k < s->nents; k++)
		{
			uint32		j = s->ents[k].hash & s->mask;

			while (s->slots[j] >= 0)
				j = (j + 1) & s->mask;
			s->slots[j] = k;
		}
		i = h & s->mask;
		while (s->slots[i] >= 0)
			i = (i + 1) & s->mask;
	}
	e = &s->ents[s->nents];
	if (copy)
	{
		char	   *k = MemoryContextAlloc(s->cxt, len + 1);

		memcpy(k, key, len);
		k[len] = '\0';
		e->key = k;
	}
	else
		e->key = key;
	e->len = len;
	e->hash = h;
	e->a = 0;
	e->b = 0;
	e->str = NULL;
	s->slots[i] = s->nents++;
	return e;
}

/* "recipient\0type" into buf. */
static void
pair_key(StringInfo buf, const char *r, int rlen, const char *t, int tlen)
{
	resetStringInfo(buf);
	appendBinaryStringInfo(buf, r, rlen);
	appendStringInfoChar(buf, '\0');
	appendBinaryStringInfo(buf, t, tlen);
}

/* ----------------------------------------------------------------------
 * The NOTIFY payload of one notification
 * ----------------------------------------------------------------------
 */

/*
 * Sets buf to the payload of a new notification: {"id": n}, nothing of its
 * content (see the top of this file).
 */
static void
inbox_payload(StringInfo buf, int64 id)
{
	resetStringInfo(buf);
	appendStringInfo(buf, "{\"id\": " INT64_FORMAT "}", id);
}

/*
 * notify_ext._inbox_notify(recipient text, id bigint) returns void: queues
 * the NOTIFY of one new notification on the recipient's channel (sent at
 * commit).  Internal, like _inbox_channel().  The insert trigger below does
 * the same for every new row without going through it.
 */
PG_FUNCTION_INFO_V1(notify_ext_inbox_notify);
Datum
notify_ext_inbox_notify(PG_FUNCTION_ARGS)
{
	text	   *recipient;
	char		channel[CHANNEL_LEN];
	StringInfoData buf;

	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("notify_ext._inbox_notify() is internal")));
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_VOID();
	recipient = PG_GETARG_TEXT_PP(0);
	inbox_channel(VARDATA_ANY(recipient), VARSIZE_ANY_EXHDR(recipient), channel);
	initStringInfo(&buf);
	inbox_payload(&buf, PG_GETARG_INT64(1));
	Async_Notify(channel, buf.data);
	pfree(buf.data);
	PG_RETURN_VOID();
}

/* ----------------------------------------------------------------------
 * The statement-level AFTER INSERT trigger on notify_ext.notifications
 * ----------------------------------------------------------------------
 */

static SPIPlanPtr counts_plan = NULL;
static SPIPlanPtr compact_plan = NULL;

/*
 * Set by create_notifications_bulk() around the INSERT it runs when it
 * cannot write its rows directly (bulk_store_insert()).  When the trigger
 * fires for that INSERT (it does not when it is disabled, e.g. under
 * session_replication_role = replica) it only says so in bulk_trigger_fired:
 * the bulk function then adds the count deltas, queues the NOTIFYs and folds
 * itself, from the items it already holds, in item order.  (Only the
 * extension's own trigger inserts into the table, so the first firing is
 * that INSERT's.)
 */
static bool bulk_insert_active = false;
static bool bulk_trigger_fired = false;

static SPIPlanPtr
keep_plan(const char *query, int nargs, Oid *argtypes)
{
	SPIPlanPtr	plan = SPI_prepare(query, nargs, argtypes);

	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed for \"%s\": %s", query, SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "SPI_keepplan failed");
	return plan;
}

static Datum
text_array(KSet *s, int n, bool second)
{
	Datum	   *d = palloc(Max(n, 1) * sizeof(Datum));

	for (int i = 0; i < n; i++)
	{
		const char *k = s->ents[i].key;
		int			rlen = strlen(k);

		d[i] = second ? PointerGetDatum(cstring_to_text(k + rlen + 1))
			: PointerGetDatum(cstring_to_text_with_len(k, rlen));
	}
	return PointerGetDatum(construct_array(d, n, TEXTOID, -1, false, TYPALIGN_INT));
}

static Datum
int8_array(KSet *s, int n, bool second)
{
	Datum	   *d = palloc(Max(n, 1) * sizeof(Datum));

	for (int i = 0; i < n; i++)
		d[i] = Int64GetDatum(second ? s->ents[i].b : s->ents[i].a);
	return PointerGetDatum(construct_array(d, n, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

/*
 * Which recipients of a statement get their deltas checked for folding.
 * Checking reads all of a recipient's delta rows, which for a statement
 * with a thousand recipients costs more than inserting its deltas.  Every
 * statement adds at most one row per (recipient, type), so a recipient
 * need not be checked on every statement: one that touches at most
 * FOLD_CHECK_ALL recipients checks them all, a larger one checks each with
 * probability max(FOLD_CHECK_ALL / n, 1 / FOLD_CHECK_ONE_IN).  A recipient
 * therefore gets folded, on average, within FOLD_CHECK_ONE_IN statements
 * of passing the threshold, whatever mix of statements adds its deltas.
 * The counts stay exact either way: folding only merges rows.
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

/*
 * Inserts one count delta row per entry of counts (key "recipient\0type",
 * copied; a = total, b = unread), then folds the deltas of those recipients
 * that have many (notify_ext._inbox_compact()), checking a sample of them
 * when there are many (fold_check_sampled()).  However many are checked,
 * _inbox_compact() locks only those it folds, at most 32 per call.  SPI
 * must be connected.
 */
static void
add_counts_and_fold(KSet *counts, MemoryContext cxt)
{
	Datum		args[4];
	Datum		recipients;
	int			ret;
	KSet		distinct;
	KSet		to_check;

	args[0] = text_array(counts, counts->nents, false);
	args[1] = text_array(counts, counts->nents, true);
	args[2] = int8_array(counts, counts->nents, false);
	args[3] = int8_array(counts, counts->nents, true);
	/* The recipients, once each, then those checked for folding. */
	ks_init(&distinct, cxt, counts->nents);
	for (int i = 0; i < counts->nents; i++)
		(void) ks_find(&distinct, counts->ents[i].key, strlen(counts->ents[i].key),
					   true, false, NULL);
	ks_init(&to_check, cxt, Min(distinct.nents, FOLD_CHECK_ALL * 2));
	for (int i = 0; i < distinct.nents; i++)
		if (fold_check_sampled(distinct.nents))
			(void) ks_find(&to_check, distinct.ents[i].key, distinct.ents[i].len,
						   true, false, NULL);

	if (counts_plan == NULL)
	{
		Oid			t[4] = {TEXTARRAYOID, TEXTARRAYOID, INT8ARRAYOID, INT8ARRAYOID};

		counts_plan = keep_plan("INSERT INTO notify_ext.inbox_counts (recipient, type, total, unread) "
								"SELECT u.r, u.t, u.n, u.x "
								"FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), "
								"pg_catalog.unnest($3), pg_catalog.unnest($4)) AS u(r, t, n, x)",
								4, t);
	}
	ret = SPI_execute_plan(counts_plan, args, NULL, false, 0);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "inserting count deltas failed: %s", SPI_result_code_string(ret));
	if (to_check.nents == 0)
		return;
	recipients = text_array(&to_check, to_check.nents, false);
	if (compact_plan == NULL)
	{
		Oid			t[1] = {TEXTARRAYOID};

		compact_plan = keep_plan("SELECT notify_ext._inbox_compact($1)", 1, t);
	}
	ret = SPI_execute_plan(compact_plan, &recipients, NULL, false, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "folding count deltas failed: %s", SPI_result_code_string(ret));
}

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

/* Positions (0-based) of the columns of notify_ext.notifications. */
typedef struct NotificationColumns
{
	int			id;
	int			recipient;
	int			type;
	int			message;
	int			meta;
	int			refs;
	int			ts;
	int			read;
} NotificationColumns;

static void
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
 * insertion order (the channel is computed once per recipient) and folds
 * the deltas of recipients that have many.
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
	KSet		counts;
	KSet		channels;
	StringInfoData key;
	StringInfoData payload;
	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		!TRIGGER_FIRED_BY_INSERT(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_STATEMENT(trigdata->tg_event) ||
		trigdata->tg_newtable == NULL)
		elog(ERROR, "notify_ext._inbox_after_insert() must be an AFTER INSERT statement trigger with a NEW TABLE");
	if (bulk_insert_active)
	{
		/* Only for the bulk INSERT's own rows. */
		bulk_insert_active = false;
		bulk_trigger_fired = true;
		return PointerGetDatum(NULL);
	}

	desc = RelationGetDescr(trigdata->tg_relation);
	rows = trigdata->tg_newtable;
	notification_columns(desc, &col);

	ks_init(&counts, cxt, 64);
	ks_init(&channels, cxt, 64);
	initStringInfo(&key);
	initStringInfo(&payload);
	rowcxt = AllocSetContextCreate(cxt, "notify_ext inbox row", ALLOCSET_SMALL_SIZES);
	slot = MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple);

	tuplestore_rescan(rows);
	while (tuplestore_gettupleslot(rows, true, false, slot))
	{
		Datum	   *v;
		bool	   *isnull;
		text	   *recipient;
		text	   *type;
		KEntry	   *e;
		bool		found;
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

		pair_key(&key, VARDATA_ANY(recipient), VARSIZE_ANY_EXHDR(recipient),
				 VARDATA_ANY(type), VARSIZE_ANY_EXHDR(type));
		e = ks_find(&counts, key.data, key.len, true, true, NULL);
		e->a++;
		if (!isnull[col.read] && !DatumGetBool(v[col.read]))
			e->b++;

		if (!isnull[col.id])
		{
			e = ks_find(&channels, VARDATA_ANY(recipient), VARSIZE_ANY_EXHDR(recipient),
						true, true, &found);
			if (!found)
			{
				e->str = MemoryContextAlloc(cxt, CHANNEL_LEN);
				inbox_channel(VARDATA_ANY(recipient), VARSIZE_ANY_EXHDR(recipient), e->str);
			}
			inbox_payload(&payload, DatumGetInt64(v[col.id]));
			Async_Notify(e->str, payload.data);
		}
		MemoryContextSwitchTo(old);
		MemoryContextReset(rowcxt);
	}
	ExecDropSingleTupleTableSlot(slot);
	MemoryContextDelete(rowcxt);

	if (counts.nents > 0)
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		add_counts_and_fold(&counts, cxt);
		SPI_finish();
	}
	return PointerGetDatum(NULL);
}

/* ----------------------------------------------------------------------
 * notify_ext.create_notifications_bulk(items jsonb) returns bigint[]
 * ----------------------------------------------------------------------
 */

static SPIPlanPtr prefs_plan = NULL;
static SPIPlanPtr insert_plan = NULL;

#define BULK_HINT "Each item is {\"user\": …, \"notification\": {\"type\": …, \"message\": …, \"meta\": {…}}}."

static void
bulk_reject(int64 idx, const char *reason)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("item " INT64_FORMAT " of items %s", idx, reason),
			 errdetail("Items are counted from 0. Nothing was created."),
			 errhint(BULK_HINT)));
}

/* jsonb_typeof() of a value taken out of a container. */
static const char *
jbv_typeof(const JsonbValue *v)
{
	switch (v->type)
	{
		case jbvNull:
			return "null";
		case jbvString:
			return "string";
		case jbvNumeric:
			return "number";
		case jbvBool:
			return "boolean";
		case jbvObject:
			return "object";
		case jbvArray:
			return "array";
		case jbvBinary:
			if (JsonContainerIsObject(v->val.binary.data))
				return "object";
			if (JsonContainerIsArray(v->val.binary.data))
				return "array";
			break;
		default:
			break;
	}
	return "unknown";
}

static inline bool
jbv_is_object(const JsonbValue *v)
{
	return v->type == jbvBinary && JsonContainerIsObject(v->val.binary.data);
}

typedef struct BulkItem
{
	const char *recipient;
	int			rlen;
	const char *type;
	int			tlen;
	const char *message;
	int			mlen;
	JsonbValue	meta;			/* jbvNull when absent or null */
} BulkItem;

/* Runs the bulk INSERT, telling the insert trigger to leave its rows alone. */
static int
bulk_insert(Datum *args)
{
	int			ret;

	bulk_insert_active = true;
	bulk_trigger_fired = false;
	PG_TRY();
	{
		ret = SPI_execute_plan(insert_plan, args, NULL, false, 0);
	}
	PG_FINALLY();
	{
		bulk_insert_active = false;
	}
	PG_END_TRY();
	return ret;
}

/* qsort() context for bulk_index_order(). */
static BulkItem *sort_items;
static Datum *sort_ids;

static int
bulk_index_order(const void *pa, const void *pb)
{
	const BulkItem *a = &sort_items[*(const int *) pa];
	const BulkItem *b = &sort_items[*(const int *) pb];
	int64		ia = DatumGetInt64(sort_ids[*(const int *) pa]);
	int64		ib = DatumGetInt64(sort_ids[*(const int *) pb]);
	int			c = memcmp(a->recipient, b->recipient, Min(a->rlen, b->rlen));

	if (c != 0)
		return c;
	if (a->rlen != b->rlen)
		return a->rlen < b->rlen ? -1 : 1;
	return ia > ib ? -1 : (ia < ib ? 1 : 0);
}

/*
 * The kept items by one INSERT ... SELECT FROM unnest(), when they cannot
 * be written directly.  Returns whether the insert trigger fired for it.
 */
static bool
bulk_store_insert(BulkItem *it, Datum *ids, int *order, int kept, TimestampTz now)
{
	Datum	   *kid = palloc(kept * sizeof(Datum));
	Datum	   *krec = palloc(kept * sizeof(Datum));
	Datum	   *ktyp = palloc(kept * sizeof(Datum));
	Datum	   *kmsg = palloc(kept * sizeof(Datum));
	Datum	   *kmeta = palloc(kept * sizeof(Datum));
	bool	   *kmetanull = palloc(kept * sizeof(bool));
	Datum		args[6];
	int			dims[1];
	int			lbs[1] = {1};
	int			j = 0;
	int			ret;

	for (int o = 0; o < kept; o++)
	{
		int			i = order[o];

		kid[j] = ids[i];
		krec[j] = PointerGetDatum(cstring_to_text_with_len(it[i].recipient, it[i].rlen));
		ktyp[j] = PointerGetDatum(cstring_to_text_with_len(it[i].type, it[i].tlen));
		kmsg[j] = PointerGetDatum(cstring_to_text_with_len(it[i].message, it[i].mlen));
		if (it[i].meta.type == jbvNull)
		{
			kmeta[j] = (Datum) 0;
			kmetanull[j] = true;
		}
		else
		{
			kmeta[j] = JsonbPGetDatum(JsonbValueToJsonb(&it[i].meta));
			kmetanull[j] = false;
		}
		j++;
	}
	dims[0] = kept;
	args[0] = PointerGetDatum(construct_array(kid, kept, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[1] = PointerGetDatum(construct_array(krec, kept, TEXTOID, -1, false, TYPALIGN_INT));
	args[2] = PointerGetDatum(construct_array(ktyp, kept, TEXTOID, -1, false, TYPALIGN_INT));
	args[3] = PointerGetDatum(construct_array(kmsg, kept, TEXTOID, -1, false, TYPALIGN_INT));
	args[4] = PointerGetDatum(construct_md_array(kmeta, kmetanull, 1, dims, lbs,
												 JSONBOID, -1, false, TYPALIGN_INT));
	/* now(), given explicitly: the same ts as the direct write stores. */
	args[5] = TimestampTzGetDatum(now);
	if (insert_plan == NULL)
	{
		Oid			t[6] = {INT8ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, JSONBARRAYOID,
			TIMESTAMPTZOID};

		insert_plan = keep_plan("INSERT INTO notify_ext.notifications "
								"(id, recipient, type, message, meta, ts, read) "
								"SELECT u.id, u.recipient, u.type, u.message, u.meta, $6, false "
								"FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), "
								"pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5)) "
								"AS u(id, recipient, type, message, meta)",
								6, t);
	}
	ret = bulk_insert(args);
	if (ret != SPI_OK_INSERT || SPI_processed != (uint64) kept)
		elog(ERROR, "inserting notifications failed: %s", SPI_result_code_string(ret));
	return bulk_trigger_fired;
}

/*
 * Whether a trigger with this tgenabled fires in this session, as the
 * executor decides it (session_replication_role).
 */
static bool
trigger_fires(char tgenabled)
{
	if (tgenabled == TRIGGER_DISABLED)
		return false;
	if (SessionReplicationRole == SESSION_REPLICATION_ROLE_REPLICA)
		return tgenabled == TRIGGER_FIRES_ON_REPLICA || tgenabled == TRIGGER_FIRES_ALWAYS;
	return tgenabled != TRIGGER_FIRES_ON_REPLICA;
}

#define BULK_TRIGGER_NAME "notifications_after_insert"
#define BULK_STORE_BATCH 1000

/*
 * Writes the kept items straight into notify_ext.notifications, the way
 * COPY does: heap pages filled a batch at a time (one WAL record per page,
 * not per row), then the index entries of each row.  An INSERT would
 * instead copy every row through a function scan of the arrays, into the
 * table one by one, and into the insert trigger's transition table, which
 * the bulk call does not need (it counts and notifies from its items).
 *
 * Only done when nothing but that trigger would act on an INSERT: no other
 * trigger, no forced row-level security, no generated or unknown column,
 * no deferred unique check, not a partition.  Otherwise returns false
 * without writing anything, and the caller runs the INSERT.  On success
 * *trigger_fires_out says whether the insert trigger would have fired.
 * The rows go in the order given by order[] (index order).
 */
static bool
bulk_store_direct(BulkItem *it, Datum *ids, int *order, int kept, TimestampTz now,
				  bool *trigger_fires_out)
{
	Oid			relid = get_relname_relid("notifications", get_namespace_oid("notify_ext", false));
	Relation	rel;
	TupleDesc	desc;
	TriggerDesc *trigdesc;
	bool		fires = false;
	int			live_columns = 0;
	EState	   *estate;
	ResultRelInfo *rri;
	BulkInsertState bistate;
	CommandId	cid;
	MemoryContext batchcxt;
	TupleTableSlot **slots;
	int			nslots = Min(kept, BULK_STORE_BATCH);
	NotificationColumns col;

	if (!OidIsValid(relid))
		elog(ERROR, "table notify_ext.notifications is missing");
	rel = table_open(relid, RowExclusiveLock);
	desc = RelationGetDescr(rel);
	trigdesc = rel->trigdesc;

	if (rel->rd_rel->relkind != RELKIND_RELATION || rel->rd_rel->relispartition ||
		(desc->constr != NULL && desc->constr->has_generated_stored) ||
		check_enable_rls(relid, InvalidOid, true) == RLS_ENABLED)
	{
		table_close(rel, NoLock);
		return false;
	}
	for (int i = 0; trigdesc != NULL && i < trigdesc->numtriggers; i++)
	{
		Trigger    *t = &trigdesc->triggers[i];

		if (!TRIGGER_FOR_INSERT(t->tgtype))
			continue;
		if (strcmp(t->tgname, BULK_TRIGGER_NAME) != 0 || TRIGGER_FOR_ROW(t->tgtype) ||
			!TRIGGER_FOR_AFTER(t->tgtype))
		{
			table_close(rel, NoLock);
			return false;
		}
		fires = trigger_fires(t->tgenabled);
	}
	for (int i = 0; i < desc->natts; i++)
		if (!TupleDescAttr(desc, i)->attisdropped)
			live_columns++;
	if (live_columns != 8)
	{
		table_close(rel, NoLock);
		return false;
	}
	notification_columns(desc, &col);

	estate = CreateExecutorState();
	rri = makeNode(ResultRelInfo);
	InitResultRelInfo(rri, rel, 0, NULL, 0);
	ExecOpenIndices(rri, false);
	for (int i = 0; i < rri->ri_NumIndices; i++)
	{
		if (!rri->ri_IndexRelationDescs[i]->rd_index->indimmediate)
		{
			ExecCloseIndices(rri);
			FreeExecutorState(estate);
			table_close(rel, NoLock);
			return false;
		}
	}

	bistate = GetBulkInsertState();
	cid = GetCurrentCommandId(true);
	batchcxt = AllocSetContextCreate(CurrentMemoryContext, "notify_ext bulk batch",
									 ALLOCSET_DEFAULT_SIZES);
	slots = palloc(nslots * sizeof(TupleTableSlot *));
	for (int s = 0; s < nslots; s++)
		slots[s] = table_slot_create(rel, NULL);

	for (int start = 0; start < kept; start += BULK_STORE_BATCH)
	{
		int			n = Min(BULK_STORE_BATCH, kept - start);
		MemoryContext old = MemoryContextSwitchTo(batchcxt);

		for (int s = 0; s < n; s++)
		{
			int			i = order[start + s];
			TupleTableSlot *slot = slots[s];

			ExecClearTuple(slot);
			memset(slot->tts_isnull, true, desc->natts * sizeof(bool));
			slot->tts_values[col.id] = ids[i];
			slot->tts_isnull[col.id] = false;
			slot->tts_values[col.recipient] =
				PointerGetDatum(cstring_to_text_with_len(it[i].recipient, it[i].rlen));
			slot->tts_isnull[col.recipient] = false;
			slot->tts_values[col.type] = PointerGetDatum(cstring_to_text_with_len(it[i].type, it[i].tlen));
			slot->tts_isnull[col.type] = false;
			slot->tts_values[col.message] =
				PointerGetDatum(cstring_to_text_with_len(it[i].message, it[i].mlen));
			slot->tts_isnull[col.message] = false;
			if (it[i].meta.type != jbvNull)
			{
				slot->tts_values[col.meta] = JsonbPGetDatum(JsonbValueToJsonb(&it[i].meta));
				slot->tts_isnull[col.meta] = false;
			}
			slot->tts_isnull[col.refs] = true;
			slot->tts_values[col.ts] = TimestampTzGetDatum(now);
			slot->tts_isnull[col.ts] = false;
			slot->tts_values[col.read] = BoolGetDatum(false);
			slot->tts_isnull[col.read] = false;
			ExecStoreVirtualTuple(slot);
			if (desc->constr != NULL)
				ExecConstraints(rri, slot, estate);
		}
		table_multi_insert(rel, slots, n, cid, 0, bistate);
		for (int s = 0; s < n; s++)
		{
			ResetPerTupleExprContext(estate);
			insert_index_entries(rri, slots[s], estate);
			ExecClearTuple(slots[s]);
		}
		MemoryContextSwitchTo(old);
		MemoryContextReset(batchcxt);
	}

	for (int s = 0; s < nslots; s++)
		ExecDropSingleTupleTableSlot(slots[s]);
	FreeBulkInsertState(bistate);
	ExecCloseIndices(rri);
	FreeExecutorState(estate);
	MemoryContextDelete(batchcxt);
	table_close(rel, NoLock);
	/* Later commands of the transaction see the rows. */
	CommandCounterIncrement();
	*trigger_fires_out = fires;
	return true;
}

PG_FUNCTION_INFO_V1(notify_ext_create_notifications_bulk);
Datum
notify_ext_create_notifications_bulk(PG_FUNCTION_ARGS)
{
	Jsonb	   *items;
	int			n;
	BulkItem   *it;
	MemoryContext cxt = CurrentMemoryContext;
	KSet		recipients;
	KSet		muted;
	Datum	   *ids;
	bool	   *idnull;
	int			kept = 0;
	Oid			seq;
	int			dims[1];
	int			lbs[1] = {1};
	TimestampTz now = GetCurrentTransactionStartTimestamp();

	notify_require_service_caller("notify_ext.create_notifications_bulk()");
	items = PG_ARGISNULL(0) ? NULL : PG_GETARG_JSONB_P(0);
	if (items == NULL || !JB_ROOT_IS_ARRAY(items) || JB_ROOT_IS_SCALAR(items))
	{
		const char *t = "NULL";

		if (items != NULL)
		{
			JsonbValue	sv;

			if (JB_ROOT_IS_OBJECT(items))
				t = "object";
			else if (JsonbExtractScalar(&items->root, &sv))
				t = jbv_typeof(&sv);
		}
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("items must be a JSON array, not %s", t),
				 errhint("Pass [{\"user\": …, \"notification\": {\"type\": …, \"message\": …, \"meta\": {…}}}, …].")));
	}
	n = JB_ROOT_COUNT(items);
	if (n == 0)
		PG_RETURN_ARRAYTYPE_P(construct_empty_array(INT8OID));

	/* Every item must be an object; the first one that is not is named. */
	it = palloc(n * sizeof(BulkItem));
	for (int i = 0; i < n; i++)
	{
		JsonbValue *v = getIthJsonbValueFromContainer(&items->root, i);

		if (!jbv_is_object(v))
			bulk_reject(i, "is not a JSON object");
		it[i].meta = *v;		/* the item itself, for the second pass */
		pfree(v);
	}

	/* Then each item in order; the first bad one rejects the call. */
	for (int i = 0; i < n; i++)
	{
		JsonbContainer *obj = it[i].meta.val.binary.data;
		JsonbContainer *notif;
		JsonbValue	u,
					nv,
					t,
					m;

		if (getKeyJsonValueFromContainer(obj, "user", 4, &u) == NULL ||
			u.type != jbvString || u.val.string.len == 0)
			bulk_reject(i, "has no \"user\" (a non-empty string)");
		if (getKeyJsonValueFromContainer(obj, "notification", 12, &nv) == NULL ||
			!jbv_is_object(&nv))
			bulk_reject(i, "has no \"notification\" object");
		notif = nv.val.binary.data;
		if (getKeyJsonValueFromContainer(notif, "type", 4, &t) == NULL ||
			t.type != jbvString || t.val.string.len == 0)
			bulk_reject(i, "has no \"notification\".\"type\" (a non-empty string)");
		if (getKeyJsonValueFromContainer(notif, "message", 7, &m) == NULL ||
			m.type != jbvString)
			bulk_reject(i, "has no \"notification\".\"message\" (a string)");
		it[i].recipient = u.val.string.val;
		it[i].rlen = u.val.string.len;
		it[i].type = t.val.string.val;
		it[i].tlen = t.val.string.len;
		it[i].message = m.val.string.val;
		it[i].mlen = m.val.string.len;
		if (getKeyJsonValueFromContainer(notif, "meta", 4, &it[i].meta) == NULL)
			it[i].meta.type = jbvNull;
		else if (it[i].meta.type != jbvNull && !jbv_is_object(&it[i].meta))
			bulk_reject(i, "\"notification\".\"meta\" is not a JSON object");
	}

	/* The types the recipients switched off. */
	ks_init(&recipients, cxt, Min(n, 1024));
	for (int i = 0; i < n; i++)
		(void) ks_find(&recipients, it[i].recipient, it[i].rlen, true, false, NULL);
	ks_init(&muted, cxt, 16);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	{
		Datum		arg;
		Datum	   *d = palloc(recipients.nents * sizeof(Datum));
		int			ret;

		for (int i = 0; i < recipients.nents; i++)
			d[i] = PointerGetDatum(cstring_to_text_with_len(recipients.ents[i].key,
															  recipients.ents[i].len));
		arg = PointerGetDatum(construct_array(d, recipients.nents, TEXTOID, -1, false, TYPALIGN_INT));
		if (prefs_plan == NULL)
		{
			Oid			t[1] = {TEXTARRAYOID};

			prefs_plan = keep_plan("SELECT p.principal, p.type FROM notify_ext.notification_preferences p "
								   "WHERE p.principal OPERATOR(pg_catalog.=) ANY ($1)", 1, t);
		}
		ret = SPI_execute_plan(prefs_plan, &arg, NULL, true, 0);
		if (ret != SPI_OK_SELECT)
			elog(ERROR, "reading notification preferences failed: %s", SPI_result_code_string(ret));
		for (uint64 r = 0; r < SPI_processed; r++)
		{
			HeapTuple	tup = SPI_tuptable->vals[r];
			bool		isnull1,
						isnull2;
			Datum		p = SPI_getbinval(tup, SPI_tuptable->tupdesc, 1, &isnull1);
			Datum		ty = SPI_getbinval(tup, SPI_tuptable->tupdesc, 2, &isnull2);
			StringInfoData k;
			MemoryContext old;

			if (isnull1 || isnull2)
				continue;
			old = MemoryContextSwitchTo(cxt);
			initStringInfo(&k);
			pair_key(&k, VARDATA_ANY(DatumGetTextPP(p)), VARSIZE_ANY_EXHDR(DatumGetTextPP(p)),
					 VARDATA_ANY(DatumGetTextPP(ty)), VARSIZE_ANY_EXHDR(DatumGetTextPP(ty)));
			(void) ks_find(&muted, k.data, k.len, true, false, NULL);
			MemoryContextSwitchTo(old);
		}
	}

	/* Ids in item order, NULL for a switched-off type. */
	seq = get_relname_relid("notifications_id_seq", get_namespace_oid("notify_ext", false));
	if (!OidIsValid(seq))
		elog(ERROR, "sequence notify_ext.notifications_id_seq is missing");
	ids = MemoryContextAlloc(cxt, n * sizeof(Datum));
	idnull = MemoryContextAlloc(cxt, n * sizeof(bool));
	{
		StringInfoData k;

		initStringInfo(&k);
		for (int i = 0; i < n; i++)
		{
			if (muted.nents > 0)
			{
				pair_key(&k, it[i].recipient, it[i].rlen, it[i].type, it[i].tlen);
				if (ks_find(&muted, k.data, k.len, false, false, NULL) != NULL)
				{
					ids[i] = (Datum) 0;
					idnull[i] = true;
					continue;
				}
			}
			ids[i] = Int64GetDatum(nextval_internal(seq, true));
			idnull[i] = false;
			kept++;
		}
	}

	/* One INSERT of all kept items. */
	if (kept > 0)
	{
		int		   *order = palloc(kept * sizeof(int));
		int			j = 0;
		bool		trigger_fired;

		/*
		 * Stored in index order, (recipient, id descending) (ts is the same
		 * for all), so that consecutive rows go to the same leaf page of
		 * notifications_recipient_ts_idx.  The NOTIFYs are sent below in
		 * item (= id) order.
		 */
		for (int i = 0; i < n; i++)
			if (!idnull[i])
				order[j++] = i;
		sort_items = it;
		sort_ids = ids;
		qsort(order, kept, sizeof(int), bulk_index_order);
		if (!bulk_store_direct(it, ids, order, kept, now, &trigger_fired))
			trigger_fired = bulk_store_insert(it, ids, order, kept, now);

		/*
		 * What the insert trigger does for other INSERTs: one count delta
		 * per (recipient, type), the NOTIFY of every new notification in
		 * creation order (each recipient's channel computed once), folding.
		 */
		if (trigger_fired)
		{
			KSet		counts;
			KSet		kept_recipients;
			StringInfoData k;
			StringInfoData payload;

			ks_init(&counts, cxt, Min(kept, 1024));
			initStringInfo(&k);
			initStringInfo(&payload);
			for (int i = 0; i < n; i++)
			{
				KEntry	   *e;

				if (idnull[i])
					continue;
				pair_key(&k, it[i].recipient, it[i].rlen, it[i].type, it[i].tlen);
				e = ks_find(&counts, k.data, k.len, true, true, NULL);
				e->a++;
				e->b++;			/* stored unread */
			}
			add_counts_and_fold(&counts, cxt);

			ks_init(&kept_recipients, cxt, Min(kept, 1024));
			for (int i = 0; i < n; i++)
			{
				KEntry	   *e;
				bool		found;

				if (idnull[i])
					continue;
				e = ks_find(&kept_recipients, it[i].recipient, it[i].rlen, true, false, &found);
				if (!found)
				{
					e->str = MemoryContextAlloc(cxt, CHANNEL_LEN);
					inbox_channel(it[i].recipient, it[i].rlen, e->str);
				}
				inbox_payload(&payload, DatumGetInt64(ids[i]));
				Async_Notify(e->str, payload.data);
			}
		}
	}
	SPI_finish();

	dims[0] = n;
	PG_RETURN_ARRAYTYPE_P(construct_md_array(ids, idnull, 1, dims, lbs,
											 INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}
