/*
 * rowjson.c: a heap tuple as JSON text, the way to_json() writes it.
 *
 * Per relation, the column names are escaped once and each column gets a
 * writer chosen from its type; common scalar types are written directly,
 * anything else goes through to_json() so that arrays, composites, domains
 * and types with casts to json come out exactly as PostgreSQL writes them.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/tupdesc.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "nodes/makefuncs.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "pgtime.h"

#include "rowjson.h"

typedef enum RowJsonKind
{
	RJ_INT2,
	RJ_INT4,
	RJ_INT8,
	RJ_NUMBER,					/* float and numeric: output, quoted if not finite */
	RJ_BOOL,
	RJ_STRING,					/* text-like: escaped output */
	RJ_DATETIME,
	RJ_JSON,
	RJ_JSONB,
	RJ_TO_JSON					/* anything else, through to_json() */
} RowJsonKind;

struct RowJsonColumn
{
	AttrNumber	attnum;
	RowJsonKind kind;
	Oid			typid;
	bool		typbyval;
	int16		typlen;
	char	   *key;			/* "name": */
	int			key_len;
	Datum		name;			/* the name as text, for "changed" */
	FmgrInfo	func;			/* output function, or to_json() */

	/*
	 * The last date/time value written and its JSON, reused while the value
	 * and the time zone stay the same (bulk inserts often share a default
	 * such as now()).
	 */
	bool		has_last;
	Datum		last_value;
	pg_tz	   *last_zone;
	int			last_len;
	char		last_text[MAXDATELEN + 3];
};

static RowJsonKind
kind_for_type(Oid typid)
{
	switch (typid)
	{
		case INT2OID:
			return RJ_INT2;
		case INT4OID:
			return RJ_INT4;
		case INT8OID:
			return RJ_INT8;
		case FLOAT4OID:
		case FLOAT8OID:
		case NUMERICOID:
			return RJ_NUMBER;
		case BOOLOID:
			return RJ_BOOL;
		case TEXTOID:
		case VARCHAROID:
		case BPCHAROID:
		case NAMEOID:
		case CHAROID:
		case UUIDOID:
			return RJ_STRING;
		case DATEOID:
		case TIMEOID:
		case TIMETZOID:
		case TIMESTAMPOID:
		case TIMESTAMPTZOID:
			return RJ_DATETIME;
		case JSONOID:
			return RJ_JSON;
		case JSONBOID:
			return RJ_JSONB;
		default:
			return RJ_TO_JSON;
	}
}

RowJson *
rowjson_prepare(TupleDesc tupdesc, MemoryContext cxt)
{
	MemoryContext old = MemoryContextSwitchTo(cxt);
	RowJson    *rj = palloc0(sizeof(RowJson));
	int			i;
	bool		first = true;

	rj->columns = palloc0(sizeof(RowJsonColumn) * tupdesc->natts);
	for (i = 0; i < tupdesc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);
		RowJsonColumn *col;
		StringInfoData key;

		if (att->attisdropped)
			continue;
		col = &rj->columns[rj->natts++];
		col->attnum = att->attnum;
		col->typid = att->atttypid;
		col->typbyval = att->attbyval;
		col->typlen = att->attlen;
		col->kind = kind_for_type(att->atttypid);
		col->name = CStringGetTextDatum(NameStr(att->attname));

		initStringInfo(&key);
		if (!first)
			appendStringInfoChar(&key, ',');
		first = false;
		escape_json(&key, NameStr(att->attname));
		appendStringInfoChar(&key, ':');
		col->key = key.data;
		col->key_len = key.len;

		if (col->kind == RJ_TO_JSON)
		{
			/* to_json() learns the argument type from its call expression. */
			fmgr_info_cxt(F_TO_JSON, &col->func, cxt);
			col->func.fn_expr = (Node *)
				makeFuncExpr(F_TO_JSON, JSONOID,
							 list_make1(makeNullConst(att->atttypid, att->atttypmod,
													  att->attcollation)),
							 InvalidOid, InvalidOid, COERCE_EXPLICIT_CALL);
		}
		else if (col->kind == RJ_NUMBER || col->kind == RJ_STRING)
		{
			Oid			outfunc;
			bool		isvarlena;

			getTypeOutputInfo(att->atttypid, &outfunc, &isvarlena);
			fmgr_info_cxt(outfunc, &col->func, cxt);
		}
	}
	MemoryContextSwitchTo(old);
	return rj;
}

/* appendBinaryStringInfo() for the short pieces of a row, inlined. */
static inline void
append_bytes(StringInfo buf, const char *data, int len)
{
	if (buf->len + len >= buf->maxlen)
		enlargeStringInfo(buf, len);
	memcpy(buf->data + buf->len, data, len);
	buf->len += len;
	buf->data[buf->len] = '\0';
}

/*
 * A string as a JSON string, the way escape_json() writes it, straight from
 * its bytes: the common case, nothing to escape, is one copy.
 */
static void
append_json_string(StringInfo buf, const char *str, int len)
{
	int			i;

	for (i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) str[i];

		if (c < ' ' || c == '"' || c == '\\')
		{
			char	   *copy = pnstrdup(str, len);

			escape_json(buf, copy);
			pfree(copy);
			return;
		}
	}
	enlargeStringInfo(buf, len + 2);
	buf->data[buf->len++] = '"';
	memcpy(buf->data + buf->len, str, len);
	buf->len += len;
	buf->data[buf->len++] = '"';
	buf->data[buf->len] = '\0';
}

static void
append_value(RowJsonColumn *col, StringInfo buf, Datum value)
{
	char		numbuf[MAXDATELEN + 32];

	switch (col->kind)
	{
		case RJ_INT2:
			pg_itoa(DatumGetInt16(value), numbuf);
			appendStringInfoString(buf, numbuf);
			break;
		case RJ_INT4:
			append_bytes(buf, numbuf, pg_ltoa(DatumGetInt32(value), numbuf));
			break;
		case RJ_INT8:
			append_bytes(buf, numbuf, pg_lltoa(DatumGetInt64(value), numbuf));
			break;
		case RJ_NUMBER:
			{
				char	   *s = OutputFunctionCall(&col->func, value);

				/* JSON has no NaN or Infinity; to_json() quotes them. */
				if (strspn(s, "0123456789+-.eE") == strlen(s))
					appendStringInfoString(buf, s);
				else
					escape_json(buf, s);
				pfree(s);
			}
			break;
		case RJ_BOOL:
			if (DatumGetBool(value))
				append_bytes(buf, "true", 4);
			else
				append_bytes(buf, "false", 5);
			break;
		case RJ_STRING:
			{
				char	   *s;

				if (col->typid == TEXTOID || col->typid == VARCHAROID)
				{
					text	   *t = DatumGetTextPP(value);

					append_json_string(buf, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
					break;
				}
				s = OutputFunctionCall(&col->func, value);
				escape_json(buf, s);
				pfree(s);
			}
			break;
		case RJ_DATETIME:
			if (!col->typbyval)
			{
				JsonEncodeDateTime(numbuf, value, col->typid, NULL);
				appendStringInfoChar(buf, '"');
				appendStringInfoString(buf, numbuf);
				appendStringInfoChar(buf, '"');
				break;
			}
			if (!col->has_last || col->last_value != value || col->last_zone != session_timezone)
			{
				JsonEncodeDateTime(numbuf, value, col->typid, NULL);
				col->last_len = snprintf(col->last_text, sizeof(col->last_text), "\"%s\"", numbuf);
				col->last_value = value;
				col->last_zone = session_timezone;
				col->has_last = true;
			}
			append_bytes(buf, col->last_text, col->last_len);
			break;
		case RJ_JSON:
			{
				text	   *t = DatumGetTextPP(value);

				appendBinaryStringInfo(buf, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
			}
			break;
		case RJ_JSONB:
			{
				Jsonb	   *jb = DatumGetJsonbP(value);

				JsonbToCString(buf, &jb->root, VARSIZE(jb));
			}
			break;
		case RJ_TO_JSON:
			{
				text	   *t = DatumGetTextPP(FunctionCall1(&col->func, value));

				appendBinaryStringInfo(buf, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
			}
			break;
	}
}

void
rowjson_append(RowJson *rj, StringInfo buf, Datum *values, bool *nulls)
{
	int			i;

	append_bytes(buf, "{", 1);
	for (i = 0; i < rj->natts; i++)
	{
		RowJsonColumn *col = &rj->columns[i];
		int			k = col->attnum - 1;

		append_bytes(buf, col->key, col->key_len);
		if (nulls[k])
			append_bytes(buf, "null", 4);
		else
			append_value(col, buf, values[k]);
	}
	append_bytes(buf, "}", 1);
}

/*
 * Compares two versions of a row column by column, by binary image.  Sets
 * *names to the text names of the changed columns (palloc'd in the current
 * context).  Returns whether anything changed.
 */
bool
rowjson_changed(RowJson *rj, Datum *oldvalues, bool *oldnulls,
				Datum *newvalues, bool *newnulls, Datum **names, int *nnames)
{
	int			i;
	int			n = 0;
	Datum	   *result = NULL;

	for (i = 0; i < rj->natts; i++)
	{
		RowJsonColumn *col = &rj->columns[i];
		int			k = col->attnum - 1;
		bool		oldnull = oldnulls[k];
		bool		newnull = newnulls[k];
		Datum		oldval = oldvalues[k];
		Datum		newval = newvalues[k];

		if (oldnull && newnull)
			continue;
		if (oldnull == newnull &&
			datum_image_eq(oldval, newval, col->typbyval, col->typlen))
			continue;
		if (result == NULL)
			result = palloc(sizeof(Datum) * rj->natts);
		result[n++] = col->name;
	}
	*names = result;
	*nnames = n;
	return n > 0;
}
