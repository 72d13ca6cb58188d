/*
 * event_buffer.h: the events a transaction records, held until it commits,
 * and the hooks of the subsystems that react to them.
 */
#ifndef NOTIFY_EXT_EVENT_BUFFER_H
#define NOTIFY_EXT_EVENT_BUFFER_H

#include "access/htup.h"

/*
 * Adds an event of the current transaction: values and nulls of the event
 * log's columns (extension.h); values[EV_SEQ] is set to the event's
 * ordinal within the transaction, which is returned.
 */
extern int64 event_buffer_add(Datum *values, bool *nulls);

/*
 * Hooks of a subsystem that reacts to recorded events.  committing() runs
 * in the pre-commit step of a transaction that recorded events, after they
 * are written: it may queue NOTIFYs, and an error aborts the transaction.
 * events are those still in memory: all of them unless spilled.
 * committed() runs after the commit is visible, outside any transaction,
 * with the number of events the transaction committed: it may touch shared
 * memory and latches, not the catalogs, and must not fail.  Either may be
 * NULL.
 */
typedef struct EventsHooks
{
	void		(*committing) (HeapTuple *events, int nevents, bool spilled);
	void		(*committed) (int64 nevents);
} EventsHooks;

extern void event_buffer_add_hooks(const EventsHooks *hooks);
extern void event_buffer_init(void);

#endif							/* NOTIFY_EXT_EVENT_BUFFER_H */
