/*
 * event_message.h: an event as JSON, as consumers, webhooks and queries see it.
 */
#ifndef NOTIFY_EXT_EVENT_MESSAGE_H
#define NOTIFY_EXT_EVENT_MESSAGE_H

#include "access/htup.h"
#include "access/tupdesc.h"
#include "datatype/timestamp.h"
#include "utils/array.h"
#include "utils/jsonb.h"

/* Field values of one event, as read from notify_ext.event_log. */
typedef struct EventFields
{
	int64		seq;
	text	   *stream;
	text	   *operation;
	text	   *resource_id;	/* may be NULL, as may the next two */
	text	   *resource_variant;
	ArrayType  *resource_path;
	TimestampTz occurred_at;
	text	   *actor;
	text	   *payload;		/* json text */
	ArrayType  *changed;		/* may be NULL */
} EventFields;

extern Jsonb *event_message(EventFields *e);

/*
 * The fields of a row read with the columns seq, stream, operation,
 * resource_id, resource_variant, resource_path, occurred_at, actor,
 * payload, changed, in that order.
 */
extern void event_fields_from_row(HeapTuple tup, TupleDesc desc, EventFields *e);

#endif							/* NOTIFY_EXT_EVENT_MESSAGE_H */
