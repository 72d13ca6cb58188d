/*
 * inbox_bulk.c: notify_ext.create_notifications_bulk(items jsonb) returns
 * bigint[].
 *
 * All or nothing: every item must be a JSON object (the first one that is
 * not is named), then the items are checked in order and the first bad one
 * rejects the call before anything is created.  Types the recipients
 * switched off are skipped (NULL at their position); the other items get
 * ids from notifications_id_seq in item order.
 *
 * They are written straight into notify_ext.notifications the way COPY
 * writes (store_direct()), and this function then does what the insert
 * trigger does for other INSERTs (inbox.c): one count delta per (recipient,
 * type), the NOTIFYs in item order, folding.  When anything else would act
 * on an INSERT (another trigger, forced row-level security, a generated or
 * extra column, a deferred unique check) they go in by one ordinary
 * INSERT ... SELECT FROM unnest() instead, in item order, and the insert
 * trigger counts and announces them like any other rows.
 *
 * Hand-built, because it pays (docs/design.md, "Hand-built pieces"): the
 * direct write, instead of the INSERT for every call.
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_trigger.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/rls.h"
#include "utils/timestamp.h"

#include "event_write.h"
#include "extension.h"
#include "inbox.h"
#include "principal.h"
#include "spi_plan.h"

#define BULK_HINT "Each item is {\"user\": …, \"notification\": {\"type\": …, \"message\": …, \"meta\": {…}}}."

/* One checked item; its strings point into the items argument. */
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

/* Recipients and types are indexed: as _check_name_length() allows. */
#define INBOX_NAME_MAX_BYTES 1024

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

/*
 * The items of the argument, checked: an array of objects, each with a
 * "user" (a non-empty string) and a "notification" object with a "type"
 * (a non-empty string), a "message" (a string) and optionally a "meta"
 * object.  Sets *n to their number.
 */
static BulkItem *
bulk_items(Jsonb *items, int *n)
{
	BulkItem   *it;

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
	*n = JB_ROOT_COUNT(items);
	it = palloc(Max(*n, 1) * sizeof(BulkItem));

	/* Every item must be an object; the first one that is not is named. */
	for (int i = 0; i < *n; i++)
	{
		JsonbValue *v = getIthJsonbValueFromContainer(&items->root, i);

		if (!jbv_is_object(v))
			bulk_reject(i, "is not a JSON object");
		it[i].meta = *v;		/* the item itself, for the second pass */
		pfree(v);
	}

	/* Then each item in order; the first bad one rejects the call. */
	for (int i = 0; i < *n; i++)
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
		if (u.val.string.len > INBOX_NAME_MAX_BYTES)
			bulk_reject(i, "has a \"user\" longer than 1024 bytes");
		if (t.val.string.len > INBOX_NAME_MAX_BYTES)
			bulk_reject(i, "has a \"notification\".\"type\" longer than 1024 bytes");
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
	return it;
}

/*
 * The (recipient, type) pairs of the items' recipients that are switched
 * off (notify_ext.notification_preferences), as "recipient\0type" keys.
 * SPI must be connected.
 */
static inbox_keys_hash *
muted_pairs(BulkItem *it, int n)
{
	MemoryContext cxt = CurrentMemoryContext;
	inbox_keys_hash *recipients = inbox_keys_create(cxt, Min(n, 1024), NULL);
	inbox_keys_hash *muted = inbox_keys_create(cxt, 16, NULL);
	Datum	   *d;
	Datum		arg;
	Oid			argtype = TEXTARRAYOID;
	inbox_keys_iterator iter;
	InboxKeyEntry *e;
	int			nrecipients = 0;
	StringInfoData key;
	int			ret;

	for (int i = 0; i < n; i++)
		(void) inbox_keys_add(recipients, it[i].recipient, it[i].rlen, NULL);
	d = palloc(recipients->members * sizeof(Datum));
	inbox_keys_start_iterate(recipients, &iter);
	while ((e = inbox_keys_iterate(recipients, &iter)) != NULL)
		d[nrecipients++] = PointerGetDatum(cstring_to_text_with_len(e->key.data, e->key.len));
	arg = PointerGetDatum(construct_array(d, nrecipients, TEXTOID, -1, false, TYPALIGN_INT));

	ret = spi_run("SELECT p.principal, p.type FROM notify_ext.notification_preferences p "
				  "WHERE p.principal OPERATOR(pg_catalog.=) ANY ($1)",
				  1, &argtype, &arg, NULL, true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "reading notification preferences failed: %s", SPI_result_code_string(ret));
	initStringInfo(&key);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		bool		pnull,
					tnull;
		Datum		p = SPI_getbinval(tup, SPI_tuptable->tupdesc, 1, &pnull);
		Datum		t = SPI_getbinval(tup, SPI_tuptable->tupdesc, 2, &tnull);

		if (pnull || tnull)
			continue;
		inbox_pair_key(&key, VARDATA_ANY(DatumGetTextPP(p)), VARSIZE_ANY_EXHDR(DatumGetTextPP(p)),
					   VARDATA_ANY(DatumGetTextPP(t)), VARSIZE_ANY_EXHDR(DatumGetTextPP(t)));
		(void) inbox_keys_add(muted, key.data, key.len, NULL);
	}
	return muted;
}

/*
 * The items that have ids by one INSERT ... SELECT FROM unnest(), in item
 * order, with ts = now (the column's default, given so that it is the same
 * as store_direct() writes).  SPI must be connected.
 */
static void
store_by_insert(BulkItem *it, int n, Datum *ids, bool *idnull, int kept, TimestampTz now)
{
	Datum	   *kid = palloc(kept * sizeof(Datum));
	Datum	   *krecipient = palloc(kept * sizeof(Datum));
	Datum	   *ktype = palloc(kept * sizeof(Datum));
	Datum	   *kmessage = palloc(kept * sizeof(Datum));
	Datum	   *kmeta = palloc(kept * sizeof(Datum));
	bool	   *kmetanull = palloc(kept * sizeof(bool));
	Datum		args[6];
	Oid			argtypes[6] = {INT8ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
		JSONBARRAYOID, TIMESTAMPTZOID};
	int			dims[1] = {kept};
	int			lbs[1] = {1};
	int			j = 0;
	int			ret;

	for (int i = 0; i < n; i++)
	{
		if (idnull[i])
			continue;
		kid[j] = ids[i];
		krecipient[j] = PointerGetDatum(cstring_to_text_with_len(it[i].recipient, it[i].rlen));
		ktype[j] = PointerGetDatum(cstring_to_text_with_len(it[i].type, it[i].tlen));
		kmessage[j] = PointerGetDatum(cstring_to_text_with_len(it[i].message, it[i].mlen));
		kmetanull[j] = it[i].meta.type == jbvNull;
		kmeta[j] = kmetanull[j] ? (Datum) 0 : JsonbPGetDatum(JsonbValueToJsonb(&it[i].meta));
		j++;
	}
	args[0] = PointerGetDatum(construct_array(kid, kept, INT8OID, sizeof(int64),
											  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[1] = PointerGetDatum(construct_array(krecipient, kept, TEXTOID, -1, false, TYPALIGN_INT));
	args[2] = PointerGetDatum(construct_array(ktype, kept, TEXTOID, -1, false, TYPALIGN_INT));
	args[3] = PointerGetDatum(construct_array(kmessage, kept, TEXTOID, -1, false, TYPALIGN_INT));
	args[4] = PointerGetDatum(construct_md_array(kmeta, kmetanull, 1, dims, lbs,
												 JSONBOID, -1, false, TYPALIGN_INT));
	args[5] = TimestampTzGetDatum(now);
	ret = spi_run("INSERT INTO notify_ext.notifications "
				  "(id, recipient, type, message, meta, ts, read) "
				  "SELECT u.id, u.recipient, u.type, u.message, u.meta, $6, false "
				  "FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), "
				  "pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5)) "
				  "AS u(id, recipient, type, message, meta)",
				  6, argtypes, args, NULL, false, 0);
	if (ret != SPI_OK_INSERT || SPI_processed != (uint64) kept)
		elog(ERROR, "inserting notifications failed: %s", SPI_result_code_string(ret));
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

#define INSERT_TRIGGER_NAME "notifications_after_insert"
#define NOTIFICATION_COLUMNS 8

/*
 * Whether the rows may be written into rel directly: nothing but the insert
 * trigger acts on an INSERT into it (no other trigger, no forced row-level
 * security, no generated or extra column, no deferred unique check, not a
 * partition).  Sets *insert_trigger_fires to whether that trigger would
 * fire for an INSERT.
 */
static bool
direct_write_allowed(Relation rel, ResultRelInfo *rri, bool *insert_trigger_fires)
{
	TupleDesc	desc = RelationGetDescr(rel);
	TriggerDesc *trigdesc = rel->trigdesc;
	int			live_columns = 0;

	*insert_trigger_fires = false;
	if (rel->rd_rel->relkind != RELKIND_RELATION || rel->rd_rel->relispartition ||
		(desc->constr != NULL && desc->constr->has_generated_stored) ||
		check_enable_rls(RelationGetRelid(rel), InvalidOid, true) == RLS_ENABLED)
		return false;
	for (int i = 0; trigdesc != NULL && i < trigdesc->numtriggers; i++)
	{
		Trigger    *t = &trigdesc->triggers[i];

		if (!TRIGGER_FOR_INSERT(t->tgtype))
			continue;
		if (strcmp(t->tgname, INSERT_TRIGGER_NAME) != 0 || TRIGGER_FOR_ROW(t->tgtype) ||
			!TRIGGER_FOR_AFTER(t->tgtype))
			return false;
		*insert_trigger_fires = trigger_fires(t->tgenabled);
	}
	for (int i = 0; i < desc->natts; i++)
		if (!TupleDescAttr(desc, i)->attisdropped)
			live_columns++;
	if (live_columns != NOTIFICATION_COLUMNS)
		return false;
	for (int i = 0; i < rri->ri_NumIndices; i++)
		if (!rri->ri_IndexRelationDescs[i]->rd_index->indimmediate)
			return false;
	return true;
}

typedef struct SortContext
{
	BulkItem   *items;
	Datum	   *ids;
} SortContext;

/*
 * qsort_arg() comparator of item positions: (recipient, id descending), the
 * order of notifications_recipient_ts_idx (ts is the same for all).
 */
static int
index_order(const void *pa, const void *pb, void *arg)
{
	SortContext *sc = (SortContext *) arg;
	const BulkItem *a = &sc->items[*(const int *) pa];
	const BulkItem *b = &sc->items[*(const int *) pb];
	int64		ia = DatumGetInt64(sc->ids[*(const int *) pa]);
	int64		ib = DatumGetInt64(sc->ids[*(const int *) pb]);
	int			c = memcmp(a->recipient, b->recipient, Min(a->rlen, b->rlen));

	if (c != 0)
		return c;
	if (a->rlen != b->rlen)
		return a->rlen < b->rlen ? -1 : 1;
	return ia > ib ? -1 : (ia < ib ? 1 : 0);
}

#define DIRECT_BATCH 1000

/*
 * Writes the items that have ids straight into notify_ext.notifications,
 * the way COPY does: heap pages filled a batch at a time (one WAL record per
 * page, not per row), then the index entries of each row.  An INSERT would
 * instead copy every row through a function scan of the arrays, into the
 * table one by one, and into the insert trigger's transition table, which
 * is not needed here (the caller counts and announces from its items).  The
 * rows go in index order (index_order()), so that consecutive index entries
 * go to the same leaf page of notifications_recipient_ts_idx.
 *
 * Returns false, having written nothing, when direct_write_allowed() says
 * no.  Otherwise *insert_trigger_fires says whether the insert trigger
 * would have fired for an INSERT of these rows.
 */
static bool
store_direct(BulkItem *it, int n, Datum *ids, bool *idnull, int kept, TimestampTz now,
			 bool *insert_trigger_fires)
{
	Oid			relid = get_relname_relid("notifications", extension_schema());
	Relation	rel;
	TupleDesc	desc;
	EState	   *estate;
	ResultRelInfo *rri;
	BulkInsertState bistate;
	CommandId	cid;
	MemoryContext batchcxt;
	TupleTableSlot **slots;
	int			nslots = Min(kept, DIRECT_BATCH);
	NotificationColumns col;
	int		   *order;
	int			j = 0;
	SortContext sc;

	if (!OidIsValid(relid))
		elog(ERROR, "table notify_ext.notifications is missing");
	rel = table_open(relid, RowExclusiveLock);
	desc = RelationGetDescr(rel);
	estate = CreateExecutorState();
	rri = makeNode(ResultRelInfo);
	InitResultRelInfo(rri, rel, 0, NULL, 0);
	ExecOpenIndices(rri, false);
	if (!direct_write_allowed(rel, rri, insert_trigger_fires))
	{
		ExecCloseIndices(rri);
		FreeExecutorState(estate);
		table_close(rel, NoLock);
		return false;
	}
	notification_columns(desc, &col);

	order = palloc(kept * sizeof(int));
	for (int i = 0; i < n; i++)
		if (!idnull[i])
			order[j++] = i;
	sc.items = it;
	sc.ids = ids;
	qsort_arg(order, kept, sizeof(int), index_order, &sc);

	bistate = GetBulkInsertState();
	cid = GetCurrentCommandId(true);
	batchcxt = AllocSetContextCreate(CurrentMemoryContext, "notify_ext bulk batch",
									 ALLOCSET_DEFAULT_SIZES);
	slots = palloc(nslots * sizeof(TupleTableSlot *));
	for (int s = 0; s < nslots; s++)
		slots[s] = table_slot_create(rel, NULL);

	for (int start = 0; start < kept; start += DIRECT_BATCH)
	{
		int			nbatch = Min(DIRECT_BATCH, kept - start);
		MemoryContext old = MemoryContextSwitchTo(batchcxt);

		for (int s = 0; s < nbatch; s++)
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
			slot->tts_values[col.ts] = TimestampTzGetDatum(now);
			slot->tts_isnull[col.ts] = false;
			slot->tts_values[col.read] = BoolGetDatum(false);
			slot->tts_isnull[col.read] = false;
			ExecStoreVirtualTuple(slot);
			if (desc->constr != NULL)
				ExecConstraints(rri, slot, estate);
		}
		table_multi_insert(rel, slots, nbatch, cid, 0, bistate);
		for (int s = 0; s < nbatch; s++)
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
	return true;
}

/*
 * What the insert trigger does for the rows of an INSERT, from the items
 * that have ids: one count delta per (recipient, type) (stored unread), the
 * NOTIFY of each in item order, folding.  SPI must be connected.
 */
static void
count_and_announce(BulkItem *it, int n, Datum *ids, bool *idnull, int kept)
{
	MemoryContext cxt = CurrentMemoryContext;
	inbox_keys_hash *pairs = inbox_keys_create(cxt, Min(kept, 1024), NULL);
	inbox_keys_hash *recipients = inbox_keys_create(cxt, Min(kept, 1024), NULL);
	StringInfoData key;

	initStringInfo(&key);
	for (int i = 0; i < n; i++)
	{
		InboxKeyEntry *e;

		if (idnull[i])
			continue;
		inbox_pair_key(&key, it[i].recipient, it[i].rlen, it[i].type, it[i].tlen);
		e = inbox_keys_add(pairs, key.data, key.len, NULL);
		e->total++;
		e->unread++;
		e = inbox_keys_add(recipients, it[i].recipient, it[i].rlen, NULL);
		inbox_announce(recipients, e, DatumGetInt64(ids[i]));
	}
	inbox_add_counts_and_fold(pairs, recipients);
}

PG_FUNCTION_INFO_V1(notify_ext_create_notifications_bulk);
Datum
notify_ext_create_notifications_bulk(PG_FUNCTION_ARGS)
{
	BulkItem   *it;
	int			n;
	inbox_keys_hash *muted;
	Datum	   *ids;
	bool	   *idnull;
	int			kept = 0;
	Oid			seq;
	int			dims[1];
	int			lbs[1] = {1};
	StringInfoData key;
	TimestampTz now = GetCurrentTransactionStartTimestamp();

	notify_require_service_caller("notify_ext.create_notifications_bulk()");
	it = bulk_items(PG_ARGISNULL(0) ? NULL : PG_GETARG_JSONB_P(0), &n);
	if (n == 0)
		PG_RETURN_ARRAYTYPE_P(construct_empty_array(INT8OID));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	muted = muted_pairs(it, n);

	/* Ids in item order, NULL for a switched-off type. */
	seq = get_relname_relid("notifications_id_seq", extension_schema());
	if (!OidIsValid(seq))
		elog(ERROR, "sequence notify_ext.notifications_id_seq is missing");
	ids = SPI_palloc(n * sizeof(Datum));
	idnull = SPI_palloc(n * sizeof(bool));
	initStringInfo(&key);
	for (int i = 0; i < n; i++)
	{
		if (muted->members > 0)
		{
			InboxKey	pair;

			inbox_pair_key(&key, it[i].recipient, it[i].rlen, it[i].type, it[i].tlen);
			pair.data = key.data;
			pair.len = key.len;
			if (inbox_keys_lookup(muted, pair) != NULL)
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

	if (kept > 0)
	{
		bool		insert_trigger_fires;

		if (!store_direct(it, n, ids, idnull, kept, now, &insert_trigger_fires))
			store_by_insert(it, n, ids, idnull, kept, now);
		else if (insert_trigger_fires)
			count_and_announce(it, n, ids, idnull, kept);
	}
	SPI_finish();

	dims[0] = n;
	PG_RETURN_ARRAYTYPE_P(construct_md_array(ids, idnull, 1, dims, lbs,
											 INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}
