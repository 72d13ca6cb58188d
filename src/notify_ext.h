/*
 * notify_ext.h: declarations shared by the subsystems of notify_ext.
 */
#ifndef NOTIFY_EXT_H
#define NOTIFY_EXT_H

#include "postgres.h"

#include "access/htup.h"
#include "access/tupdesc.h"
#include "lib/stringinfo.h"
#include "storage/block.h"
#include "utils/timestamp.h"

/* This backend's slot in per-backend shared arrays. */
#if PG_VERSION_NUM >= 170000
#define MY_PROC_INDEX MyProcNumber
#else
#define MY_PROC_INDEX (MyProc->pgprocno)
#endif

/* notify_ext.c */
extern int	notify_ext_event_buffer_kb;


/* Index entries of a row just written directly into a table (no unique check). */
struct ResultRelInfo;
struct TupleTableSlot;
struct EState;
extern void insert_index_entries(struct ResultRelInfo *rri, struct TupleTableSlot *slot,
								 struct EState *estate);

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
extern TupleDesc event_log_desc(void);

/*
 * Called after a transaction that recorded events committed and became
 * visible: its events hold seqs first_seq .. first_seq + count - 1 (with
 * gaps where subtransactions rolled back).  Runs in the committing backend,
 * outside any transaction: it may touch shared memory and latches, not the
 * catalogs, and must not raise errors.
 */
typedef void (*events_committed_hook) (int64 first_seq, int64 count);
extern void capture_register_commit_hook(events_committed_hook hook);

/* summarizer.c: BRIN summaries of the event log, off the writers' path */
extern Size summarizer_shmem_size(void);
extern void summarizer_shmem_init(void);
extern bool summarizer_request(Oid indexoid, BlockNumber blk, BlockNumber per_range);
extern void summarize_range_nowait(Oid indexoid, BlockNumber blk, BlockNumber per_range);

/* consumer.c: stream consumers */
extern Size consumer_shmem_size(void);
extern void consumer_shmem_init(void);
extern void consumer_init(void);
extern void consumer_notify_committing(HeapTuple *events, int nevents, bool all);

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
