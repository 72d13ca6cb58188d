/*
 * event_route.h: the partition of the event log an event goes to, locked
 * without locking the event log itself (see event_route.c).
 */
#ifndef NOTIFY_EXT_EVENT_ROUTE_H
#define NOTIFY_EXT_EVENT_ROUTE_H

#include "storage/lockdefs.h"
#include "utils/relcache.h"
#include "utils/timestamp.h"

extern Relation event_route_open(TimestampTz ts, LOCKMODE mode, TimestampTz *lower,
								 TimestampTz *upper, bool *upper_unbounded);
extern bool event_route_holds(TimestampTz ts, TimestampTz lower, TimestampTz upper,
							  bool upper_unbounded);

#endif							/* NOTIFY_EXT_EVENT_ROUTE_H */
