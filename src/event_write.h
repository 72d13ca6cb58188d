/*
 * event_write.h: writing events into the partitions of the event log.
 */
#ifndef NOTIFY_EXT_EVENT_WRITE_H
#define NOTIFY_EXT_EVENT_WRITE_H

#include "access/htup.h"

/*
 * Writes event tuples whose seq column holds their ordinal within their
 * transaction, rewriting it first: base + ordinal, or with provisional the
 * negative -(event_write_provisional_base() + ordinal), unique to this
 * backend until the commit renumbers it.
 */
extern void event_write(HeapTuple *events, int nevents, int64 base, bool provisional);
extern int64 event_write_provisional_base(void);

/* Index entries of a row just written straight into a table (no unique check). */
struct ResultRelInfo;
struct TupleTableSlot;
struct EState;
extern void insert_index_entries(struct ResultRelInfo *rri, struct TupleTableSlot *slot,
								 struct EState *estate);

#endif							/* NOTIFY_EXT_EVENT_WRITE_H */
