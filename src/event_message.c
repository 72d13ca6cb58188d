/*
 * event_message.c: an event as JSON, the one shape consumers, webhooks and
 * queries see (contract section 2).
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "event_message.h"

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


Jsonb *
event_message(EventFields *e)
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
	appendStringInfoString(&buf, ", \"occurred_at\": ");
	if (TIMESTAMP_NOT_FINITE(e->occurred_at))
		appendStringInfoString(&buf, TIMESTAMP_IS_NOBEGIN(e->occurred_at) ? "\"-infinity\"" : "\"infinity\"");
	else
	{
		if (timestamp2tm(e->occurred_at, NULL, &tm, &fsec, NULL, NULL) != 0 || tm.tm_year <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
					 errmsg("occurred_at of event %lld is out of range", (long long) e->seq)));
		appendStringInfo(&buf, "\"%04d-%02d-%02dT%02d:%02d:%02d.%06dZ\"",
						 tm.tm_year, tm.tm_mon, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int) fsec);
	}
	appendStringInfoString(&buf, ", \"actor\": ");
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
	PG_RETURN_JSONB_P(event_message(&e));
}

void
event_fields_from_row(HeapTuple tup, TupleDesc desc, EventFields *e)
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
