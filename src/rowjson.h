/*
 * rowjson.h: a heap tuple as JSON text, the way to_json() writes it.
 */
#ifndef NOTIFY_EXT_ROWJSON_H
#define NOTIFY_EXT_ROWJSON_H

#include "access/tupdesc.h"
#include "lib/stringinfo.h"

typedef struct RowJsonColumn RowJsonColumn;
typedef struct RowJson
{
	int			natts;
	RowJsonColumn *columns;		/* one per attribute, dropped ones skipped */
} RowJson;

/* The writers of a relation's columns, made once (in cxt). */
extern RowJson *rowjson_prepare(TupleDesc tupdesc, MemoryContext cxt);
extern void rowjson_append(RowJson *rj, StringInfo buf, Datum *values, bool *nulls);

/*
 * Whether any column differs between the old and the new row, as JSON
 * would show it; *names gets the names of those that do.
 */
extern bool rowjson_changed(RowJson *rj, Datum *oldvalues, bool *oldnulls,
							Datum *newvalues, bool *newnulls, Datum **names, int *nnames);

#endif							/* NOTIFY_EXT_ROWJSON_H */
