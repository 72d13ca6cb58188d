/*
 * capture.c: recording events: the change-capture trigger of tracked tables
 * and publish().
 *
 * The trigger turns each changed row into an event (the new row as JSON,
 * the columns an UPDATE changed, the row's place in the resource tree) and
 * hands it to the transaction's event buffer (event_buffer.c), which writes
 * it when the transaction commits.  The tracking configuration of a table
 * comes from the trigger's arguments and is cached per relation.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "capture.h"
#include "event_buffer.h"
#include "extension.h"
#include "principal.h"
#include "resource_path.h"
#include "rowjson.h"

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

/* ---------------------------------------------------------------------
 * Helpers
 * --------------------------------------------------------------------- */

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
		event_buffer_add(values, nulls);
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

	event_buffer_add(values, nulls);

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
	PG_RETURN_INT64(event_buffer_add(values, nulls) + 1);
}

void
capture_init(void)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

	initStringInfo(&json_buf);
	MemoryContextSwitchTo(old);
}
