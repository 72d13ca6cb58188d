/*
 * notify_ext.h: declarations shared by the subsystems of notify_ext.
 */
#ifndef NOTIFY_EXT_H
#define NOTIFY_EXT_H

#include "postgres.h"

#include "access/tupdesc.h"
#include "lib/stringinfo.h"
#include "utils/timestamp.h"

/* notify_ext.c */
extern bool notify_ext_preloaded;
extern int	notify_ext_event_buffer_kb;

/* principal.c */
extern const char *notify_current_principal(void);

/* ordering.c: commit-time numbering of events */
extern Size ordering_shmem_size(void);
extern void ordering_shmem_init(void);
extern int64 ordering_reserve(int64 count);
extern void ordering_release(void);
extern int64 ordering_committed_seq(void);

/* capture.c: the change-capture trigger and the per-transaction buffer */
extern void capture_init(void);

/* rowjson.c: a heap tuple as JSON text */
typedef struct RowJsonColumn RowJsonColumn;
typedef struct RowJson
{
	int			natts;
	RowJsonColumn *columns;		/* one per attribute, dropped ones skipped */
} RowJson;

extern RowJson *rowjson_prepare(TupleDesc tupdesc, MemoryContext cxt);
extern void rowjson_append(RowJson *rj, StringInfo buf, Datum *values, bool *nulls);
extern bool rowjson_changed(RowJson *rj, Datum *oldvalues, bool *oldnulls,
							Datum *newvalues, bool *newnulls, Datum **names, int *nnames);

#endif							/* NOTIFY_EXT_H */
