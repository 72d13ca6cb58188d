/*
 * event_route.h: the partitions of the event log with their bounds, and
 * the one an event goes to, locked without locking the event log itself
 * (see event_route.c).
 */
#ifndef NOTIFY_EXT_EVENT_ROUTE_H
#define NOTIFY_EXT_EVENT_ROUTE_H

#include "storage/lockdefs.h"
#include "utils/relcache.h"
#include "utils/timestamp.h"

/* A partition of the event log and the occurred_at range it holds. */
typedef struct EventPartitionBounds
{
	Oid			rel;
	TimestampTz lower;			/* inclusive; DT_NOBEGIN when MINVALUE */
	TimestampTz upper;			/* exclusive; DT_NOEND when MAXVALUE */
	bool		lower_unbounded;	/* MINVALUE */
	bool		upper_unbounded;	/* MAXVALUE */
} EventPartitionBounds;

extern int	event_partitions_read(Oid log, EventPartitionBounds **parts, Oid *deflt);
extern Relation event_route_open(TimestampTz ts, LOCKMODE mode, TimestampTz *lower,
								 TimestampTz *upper, bool *upper_unbounded);
extern bool event_route_holds(TimestampTz ts, TimestampTz lower, TimestampTz upper,
							  bool upper_unbounded);

#endif							/* NOTIFY_EXT_EVENT_ROUTE_H */
