/*
 * event_message.c: an event as JSON, the one shape consumers, webhooks and
 * queries see (contract section 2).
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "access/htup_details.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/arrayaccess.h"
#include "utils/timestamp.h"

#include "event_message.h"

/*
 * The message is written straight in jsonb's binary format (utils/jsonb.h),
 * byte for byte what jsonb_in() makes of the same JSON: only the payload
 * goes through the JSON parser, and its container is copied in whole.
 * Fetches build one message per event they hand out, so the text round
 * trip (print, then parse all of it) would be most of their work.
 */

/* A container being written: its JEntries are filled in as children end. */
typedef struct JbWriter
{
	StringInfo	buf;			/* the whole Jsonb, varlena header included */
	int			entries;		/* offset of the first JEntry */
	int			data;			/* offset where the children's data starts */
	int			next;			/* next JEntry to fill */
	uint32		prev_end;		/* end of the previous child, from data */
} JbWriter;

static void
jb_pad(StringInfo buf)
{
	int			padded = INTALIGN(buf->len);

	while (buf->len < padded)
		appendStringInfoCharMacro(buf, '\0');
}

/* Starts a container of n elements (arrays) or n pairs (objects). */
static void
jb_begin(JbWriter *w, StringInfo buf, uint32 flag, int n)
{
	uint32		header = (uint32) n | flag;
	int			nentries = flag == JB_FOBJECT ? 2 * n : n;

	jb_pad(buf);
	w->buf = buf;
	appendBinaryStringInfo(buf, (char *) &header, sizeof(header));
	w->entries = buf->len;
	enlargeStringInfo(buf, nentries * sizeof(JEntry));
	memset(buf->data + buf->len, 0, nentries * sizeof(JEntry));
	buf->len += nentries * sizeof(JEntry);
	w->data = buf->len;
	w->next = 0;
	w->prev_end = 0;
}

/* Records the child whose data was just appended, of the given JENTRY type. */
static void
jb_end_child(JbWriter *w, uint32 type)
{
	uint32		end = (uint32) (w->buf->len - w->data);
	JEntry		meta;

	if (end > JENTRY_OFFLENMASK)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("event message exceeds the maximum jsonb size of %d bytes", JENTRY_OFFLENMASK)));
	if (w->next % JB_OFFSET_STRIDE == 0)
		meta = type | end | JENTRY_HAS_OFF;
	else
		meta = type | (end - w->prev_end);
	memcpy(w->buf->data + w->entries + w->next * sizeof(JEntry), &meta, sizeof(meta));
	w->next++;
	w->prev_end = end;
}

static void
jb_string(JbWriter *w, const char *s, int len)
{
	appendBinaryStringInfo(w->buf, s, len);
	jb_end_child(w, JENTRY_ISSTRING);
}

static void
jb_text(JbWriter *w, text *t)
{
	jb_string(w, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
}

static void
jb_null(JbWriter *w)
{
	jb_end_child(w, JENTRY_ISNULL);
}

static void
jb_numeric(JbWriter *w, Numeric n)
{
	jb_pad(w->buf);
	appendBinaryStringInfo(w->buf, (char *) n, VARSIZE_ANY(n));
	jb_end_child(w, JENTRY_ISNUMERIC);
}

/* A text[] as an array of strings (NULL elements as null). */
static void
jb_text_array(JbWriter *w, ArrayType *arr)
{
	JbWriter	a;
	int			n = ArrayGetNItems(ARR_NDIM(arr), ARR_DIMS(arr));
	array_iter	it;

	jb_begin(&a, w->buf, JB_FARRAY, n);
	array_iter_setup(&it, (AnyArrayType *) arr);
	for (int i = 0; i < n; i++)
	{
		bool		isnull;
		Datum		d = array_iter_next(&it, &isnull, i, -1, false, TYPALIGN_INT);

		if (isnull)
			jb_null(&a);
		else
			jb_text(&a, DatumGetTextPP(d));
	}
	jb_end_child(w, JENTRY_ISCONTAINER);
}

/* The payload (json text), parsed once; its container is copied in whole. */
static void
jb_payload(JbWriter *w, text *payload)
{
	Jsonb	   *jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in,
														CStringGetDatum(text_to_cstring(payload))));

	if (JB_ROOT_IS_SCALAR(jb))
	{
		JsonbValue	v;

		if (!JsonbExtractScalar(&jb->root, &v))
			elog(ERROR, "payload of a scalar jsonb has no scalar");
		switch (v.type)
		{
			case jbvNull:
				jb_null(w);
				break;
			case jbvString:
				jb_string(w, v.val.string.val, v.val.string.len);
				break;
			case jbvNumeric:
				jb_numeric(w, v.val.numeric);
				break;
			case jbvBool:
				jb_end_child(w, v.val.boolean ? JENTRY_ISBOOL_TRUE : JENTRY_ISBOOL_FALSE);
				break;
			default:
				elog(ERROR, "unexpected jsonb scalar type %d", (int) v.type);
		}
		return;
	}
	jb_pad(w->buf);
	appendBinaryStringInfo(w->buf, (char *) &jb->root, VARSIZE(jb) - VARHDRSZ);
	jb_end_child(w, JENTRY_ISCONTAINER);
}

static void
jb_key(JbWriter *w, const char *key)
{
	jb_string(w, key, strlen(key));
}

Jsonb *
event_message(EventFields *e)
{
	StringInfoData buf;
	JbWriter	top;
	struct pg_tm tm;
	fsec_t		fsec;
	char		when[64];

	if (TIMESTAMP_NOT_FINITE(e->occurred_at))
		strlcpy(when, TIMESTAMP_IS_NOBEGIN(e->occurred_at) ? "-infinity" : "infinity", sizeof(when));
	else
	{
		if (timestamp2tm(e->occurred_at, NULL, &tm, &fsec, NULL, NULL) != 0 || tm.tm_year <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
					 errmsg("occurred_at of event %lld is out of range", (long long) e->seq)));
		snprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ",
				 tm.tm_year, tm.tm_mon, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int) fsec);
	}

	initStringInfo(&buf);
	appendStringInfoSpaces(&buf, VARHDRSZ);

	/* jsonb orders keys by length, then bytewise: keys first, then values. */
	jb_begin(&top, &buf, JB_FOBJECT, e->changed ? 8 : 7);
	jb_key(&top, "seq");
	jb_key(&top, "actor");
	jb_key(&top, "stream");
	if (e->changed)
		jb_key(&top, "changed");
	jb_key(&top, "payload");
	jb_key(&top, "resource");
	jb_key(&top, "operation");
	jb_key(&top, "occurred_at");

	jb_numeric(&top, int64_to_numeric(e->seq));
	jb_text(&top, e->actor);
	jb_text(&top, e->stream);
	if (e->changed)
		jb_text_array(&top, e->changed);
	jb_payload(&top, e->payload);
	if (e->resource_id == NULL)
		jb_null(&top);
	else
	{
		JbWriter	r;

		jb_begin(&r, &buf, JB_FOBJECT, 3);
		jb_key(&r, "id");
		jb_key(&r, "path");
		jb_key(&r, "variant");
		jb_text(&r, e->resource_id);
		if (e->resource_path)
			jb_text_array(&r, e->resource_path);
		else
			jb_null(&r);
		if (e->resource_variant)
			jb_text(&r, e->resource_variant);
		else
			jb_null(&r);
		jb_end_child(&top, JENTRY_ISCONTAINER);
	}
	jb_text(&top, e->operation);
	jb_string(&top, when, strlen(when));

	SET_VARSIZE(buf.data, buf.len);
	return (Jsonb *) buf.data;
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
	PG_RETURN_JSONB_P(event_message(&e));
}

void
event_fields_from_row(HeapTuple tup, TupleDesc desc, EventFields *e)
{
	Datum		v[10];
	bool		n[10];

	Assert(desc->natts == 10);
	heap_deform_tuple(tup, desc, v, n);
	e->seq = DatumGetInt64(v[0]);
	e->stream = DatumGetTextPP(v[1]);
	e->operation = DatumGetTextPP(v[2]);
	e->resource_id = n[3] ? NULL : DatumGetTextPP(v[3]);
	e->resource_variant = n[4] ? NULL : DatumGetTextPP(v[4]);
	e->resource_path = n[5] ? NULL : DatumGetArrayTypeP(v[5]);
	e->occurred_at = DatumGetTimestampTz(v[6]);
	e->actor = DatumGetTextPP(v[7]);
	e->payload = DatumGetTextPP(v[8]);
	e->changed = n[9] ? NULL : DatumGetArrayTypeP(v[9]);
}
