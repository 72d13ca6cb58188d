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
#include "mb/pg_wchar.h"
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

/*
 * The payload of a tracked row is a flat JSON object (rowjson.c): column
 * names and scalar values.  Such an object, without escapes in its strings
 * and without repeated keys, is written here in one pass; anything else
 * (nesting, escapes, more than FLAT_MAX_PAIRS keys) returns false and goes
 * through jsonb_in().  Numbers are read by numeric_in(), as jsonb_in() reads
 * them.  The payload column is json, so its text is valid JSON.
 */
#define FLAT_MAX_PAIRS 64

typedef struct FlatToken
{
	const char *s;
	int			len;
	char		kind;			/* 's' string, 'n' number, 't', 'f', 'z' null */
} FlatToken;

typedef struct FlatPair
{
	FlatToken	key;
	FlatToken	value;
} FlatPair;

static const char *
flat_space(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

/* A string (no escapes) or a scalar token at p; NULL when not flat. */
static const char *
flat_token(const char *p, const char *end, FlatToken *t)
{
	const char *q;

	if (p >= end)
		return NULL;
	if (*p == '"')
	{
		for (q = p + 1; q < end && *q != '"'; q++)
			if (*q == '\\')
				return NULL;
		if (q >= end)
			return NULL;
		t->s = p + 1;
		t->len = q - p - 1;
		t->kind = 's';
		return q + 1;
	}
	if (*p == '{' || *p == '[')
		return NULL;
	for (q = p; q < end && *q != ',' && *q != '}' && *q != ' ' && *q != '\t' &&
		 *q != '\n' && *q != '\r'; q++)
		;
	t->s = p;
	t->len = q - p;
	if (t->len == 4 && memcmp(p, "true", 4) == 0)
		t->kind = 't';
	else if (t->len == 5 && memcmp(p, "false", 5) == 0)
		t->kind = 'f';
	else if (t->len == 4 && memcmp(p, "null", 4) == 0)
		t->kind = 'z';
	else if (t->len > 0 && t->len < 64 && (*p == '-' || (*p >= '0' && *p <= '9')))
		t->kind = 'n';
	else
		return NULL;
	return q;
}

/* jsonb's order of keys: shorter first, then bytewise. */
static int
flat_pair_cmp(const void *a, const void *b)
{
	const FlatToken *x = &((const FlatPair *) a)->key;
	const FlatToken *y = &((const FlatPair *) b)->key;

	if (x->len != y->len)
		return x->len < y->len ? -1 : 1;
	return memcmp(x->s, y->s, x->len);
}

static bool
jb_flat_object(JbWriter *w, const char *p, int len)
{
	const char *end = p + len;
	FlatPair	pairs[FLAT_MAX_PAIRS];
	int			n = 0;
	JbWriter	o;

	p = flat_space(p, end);
	if (p >= end || *p++ != '{')
		return false;
	p = flat_space(p, end);
	if (p < end && *p == '}')
		p++;
	else
	{
		for (;;)
		{
			if (n == FLAT_MAX_PAIRS)
				return false;
			p = flat_token(p, end, &pairs[n].key);
			if (p == NULL || pairs[n].key.kind != 's')
				return false;
			p = flat_space(p, end);
			if (p >= end || *p++ != ':')
				return false;
			p = flat_token(flat_space(p, end), end, &pairs[n].value);
			if (p == NULL)
				return false;
			n++;
			p = flat_space(p, end);
			if (p < end && *p == ',')
			{
				p = flat_space(p + 1, end);
				continue;
			}
			if (p < end && *p == '}')
			{
				p++;
				break;
			}
			return false;
		}
	}
	if (flat_space(p, end) != end)
		return false;
	if (n > 1)
		qsort(pairs, n, sizeof(FlatPair), flat_pair_cmp);
	for (int i = 1; i < n; i++)
		if (flat_pair_cmp(&pairs[i - 1], &pairs[i]) == 0)
			return false;		/* a repeated key: jsonb_in() keeps the last */

	jb_begin(&o, w->buf, JB_FOBJECT, n);
	for (int i = 0; i < n; i++)
		jb_string(&o, pairs[i].key.s, pairs[i].key.len);
	for (int i = 0; i < n; i++)
	{
		FlatToken  *v = &pairs[i].value;

		switch (v->kind)
		{
			case 's':
				jb_string(&o, v->s, v->len);
				break;
			case 't':
				jb_end_child(&o, JENTRY_ISBOOL_TRUE);
				break;
			case 'f':
				jb_end_child(&o, JENTRY_ISBOOL_FALSE);
				break;
			case 'z':
				jb_null(&o);
				break;
			default:
				{
					char		num[64];

					memcpy(num, v->s, v->len);
					num[v->len] = '\0';
					jb_numeric(&o, DatumGetNumeric(DirectFunctionCall3(numeric_in,
																	   CStringGetDatum(num),
																	   ObjectIdGetDatum(InvalidOid),
																	   Int32GetDatum(-1))));
				}
		}
	}
	jb_end_child(w, JENTRY_ISCONTAINER);
	return true;
}

static int
hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* The code unit of the escape "\uXXXX" at p (p < end), or -1. */
static int
unicode_escape(const char *p, const char *end)
{
	int			u = 0;

	if (end - p < 6 || p[0] != '\\' || p[1] != 'u')
		return -1;
	for (int i = 2; i < 6; i++)
	{
		int			d = hex_digit(p[i]);

		if (d < 0)
			return -1;
		u = u * 16 + d;
	}
	return u;
}

/*
 * The payload's JSON text with the escapes jsonb cannot hold, \u0000 and
 * surrogates that are not a high one followed by a low one, replaced by
 * U+FFFD (by "?" in databases whose encoding is not UTF-8).  The json type
 * accepts them, so a json column of a tracked row can carry them, and
 * jsonb_in() would refuse the payload: the event could then never be
 * fetched, and would stop every consumer whose scope holds it.  Backslashes
 * of valid JSON are all inside strings, so each one starts an escape.
 */
static char *
payload_for_jsonb(const char *s, int len)
{
	const char *end = s + len;
	const char *p = s;
	const char *copied = s;
	const char *replacement = GetDatabaseEncoding() == PG_UTF8 ? "\\ufffd" : "?";
	StringInfoData out;
	bool		changed = false;

	initStringInfo(&out);
	while ((p = memchr(p, '\\', end - p)) != NULL)
	{
		int			u = unicode_escape(p, end);
		int			bad = 0;	/* bytes of a bad escape at p */

		if (u == 0 || (u >= 0xDC00 && u <= 0xDFFF))
			bad = 6;
		else if (u >= 0xD800 && u <= 0xDBFF)
		{
			int			low = unicode_escape(p + 6, end);

			if (low >= 0xDC00 && low <= 0xDFFF)
			{
				p += 12;		/* a valid pair */
				continue;
			}
			bad = 6;
		}
		if (bad == 0)
		{
			p = Min(p + ((u >= 0) ? 6 : 2), end);
			continue;
		}
		appendBinaryStringInfo(&out, copied, p - copied);
		appendStringInfoString(&out, replacement);
		p += bad;
		copied = p;
		changed = true;
	}
	if (!changed)
	{
		pfree(out.data);
		return pnstrdup(s, len);
	}
	appendBinaryStringInfo(&out, copied, end - copied);
	return out.data;
}

/* The payload (json text), parsed once; its container is copied in whole. */
static void
jb_payload(JbWriter *w, text *payload)
{
	Jsonb	   *jb;

	if (jb_flat_object(w, VARDATA_ANY(payload), VARSIZE_ANY_EXHDR(payload)))
		return;
	jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in,
											CStringGetDatum(payload_for_jsonb(VARDATA_ANY(payload),
																			  VARSIZE_ANY_EXHDR(payload)))));

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

/* Writes n digits of v, zero-padded. */
static char *
put_digits(char *p, int v, int n)
{
	for (int i = n - 1; i >= 0; i--)
	{
		p[i] = '0' + v % 10;
		v /= 10;
	}
	return p + n;
}

/*
 * "YYYY-MM-DDTHH:MM:SS.ffffffZ" (years past 9999 get their digits), as
 * snprintf("%04d-%02d-%02dT%02d:%02d:%02d.%06dZ") would write it, without
 * the cost of a format string for every message.
 */
static void
format_utc(char *out, size_t size, struct pg_tm *tm, fsec_t fsec)
{
	char	   *p = out;

	if (tm->tm_year > 9999)
	{
		snprintf(out, size, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ",
				 tm->tm_year, tm->tm_mon, tm->tm_mday, tm->tm_hour, tm->tm_min, tm->tm_sec, (int) fsec);
		return;
	}
	Assert(size >= 28);
	p = put_digits(p, tm->tm_year, 4);
	*p++ = '-';
	p = put_digits(p, tm->tm_mon, 2);
	*p++ = '-';
	p = put_digits(p, tm->tm_mday, 2);
	*p++ = 'T';
	p = put_digits(p, tm->tm_hour, 2);
	*p++ = ':';
	p = put_digits(p, tm->tm_min, 2);
	*p++ = ':';
	p = put_digits(p, tm->tm_sec, 2);
	*p++ = '.';
	p = put_digits(p, (int) fsec, 6);
	*p++ = 'Z';
	*p = '\0';
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
		format_utc(when, sizeof(when), &tm, fsec);
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
