/*
 * scope.h: which events a consumer (or a webhook) wants: the one rule,
 * used by fetches, webhook queues, wake-ups and retention's count of
 * missed events alike.
 */
#ifndef NOTIFY_EXT_SCOPE_H
#define NOTIFY_EXT_SCOPE_H

#include "datatype/timestamp.h"
#include "utils/array.h"

/*
 * An event is in scope when it is about the resource (or, with
 * include_subresources, the resource is on its path), its stream is one
 * of streams, its operation one of operations and it occurred at or after
 * from_date; each part that is absent (NULL) lets every event through.
 */
typedef struct Scope
{
	text	   *resource_id;	/* NULL: every resource */
	bool		include_subresources;
	text	  **streams;		/* NULL: every stream */
	int			nstreams;
	text	  **operations;		/* NULL: every operation */
	int			noperations;
	bool		has_from_date;
	TimestampTz from_date;
} Scope;

/* The scope made of SQL values (NULL arrays and from_date allowed). */
extern void scope_from_values(Scope *s, text *resource_id, bool include_subresources,
							  ArrayType *streams, ArrayType *operations,
							  bool has_from_date, TimestampTz from_date);

/* Whether an event's resource (resource_id and path may be NULL) is, ignoring the other parts. */
extern bool scope_contains_resource(const Scope *s, text *resource_id, ArrayType *path);

/* Whether an event (resource_id and path may be NULL) is in the scope. */
extern bool scope_contains(const Scope *s, text *resource_id, ArrayType *path,
						   text *stream, text *operation, TimestampTz occurred_at);

/* The same, with the path given as its elements (text datums). */
extern bool scope_contains_elems(const Scope *s, text *resource_id, Datum *path, int npath,
								 text *stream, text *operation, TimestampTz occurred_at);

#endif							/* NOTIFY_EXT_SCOPE_H */
