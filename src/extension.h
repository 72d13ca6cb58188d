/*
 * extension.h: where notify_ext lives, who owns it, the shape of its event
 * log, and how its code acts with another role's rights (docs/security.md).
 */
#ifndef NOTIFY_EXT_EXTENSION_H
#define NOTIFY_EXT_EXTENSION_H

#include "access/tupdesc.h"

/* Columns of notify_ext.event_log, in order. */
typedef enum EventColumn
{
	EV_SEQ,
	EV_OCCURRED_AT,
	EV_STREAM,
	EV_OPERATION,
	EV_RESOURCE_ID,
	EV_RESOURCE_VARIANT,
	EV_RESOURCE_PATH,
	EV_ACTOR,
	EV_PAYLOAD,
	EV_CHANGED,
	EV_NATTS
} EventColumn;

/* The shape of the event log's rows, for event tuples made in memory. */
extern TupleDesc event_log_desc(void);

/* Set by _PG_init when loaded through shared_preload_libraries. */
extern bool notify_ext_preloaded;

/* Raises 55000 unless the library was preloaded. */
extern void require_preload(void);

extern Oid	extension_schema(void);
extern Oid	extension_owner(void);

/*
 * The role, security context and settings to return to after acting as
 * another role.
 */
typedef struct ActingRole
{
	Oid			userid;
	int			sec_context;
	int			guc_nestlevel;
} ActingRole;

/*
 * Acts as role with search_path pinned to "pg_catalog, pg_temp".  With
 * restricted, also inside a security-restricted operation, as VACUUM and
 * ANALYZE run index expressions: for code that may run what the role
 * wrote (reading a tracked table as its owner).  An error ends it too.
 */
extern void act_as(Oid role, bool restricted, ActingRole *saved);
extern void act_as_extension_owner(ActingRole *saved);
extern void stop_acting(ActingRole *saved);

/*
 * Connects a background worker to database dboid as role useroid
 * (InvalidOid: the bootstrap superuser), the one way every worker connects.
 * A database's owner may set any user-settable parameter for every session
 * there (ALTER DATABASE ... SET); before the first query these are pinned
 * for the whole session, whatever the database's or the role's settings
 * say: search_path, the role and session user (the one connected as),
 * read-only transactions, statement, lock and idle timeouts, exit_on_error,
 * notify_ext.principal.
 */
extern void worker_connect(Oid dboid, Oid useroid);

/*
 * Bytes from outside the server as text valid in the database's encoding,
 * at most max bytes long: a NUL or an invalid byte becomes '?', a character
 * cut off at the end is left out.  palloc'd.
 */
extern char *valid_db_text(const char *data, int len, int max);

#endif							/* NOTIFY_EXT_EXTENSION_H */
