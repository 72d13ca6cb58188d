/*
 * relay.h: relays of the event log to NATS JetStream (see docs/relays.md).
 *
 * relay.c
 *   relay_init(): the commit hooks; called from _PG_init.
 *   relay_shmem_size(), relay_shmem_init(), relay_register_launcher():
 *     when preloaded, the shared state and the launcher, which starts one
 *     relay worker per database that has relays to run.
 *   The SQL-callable helpers: _relays_changed(), the checks of server
 *     URLs and names.
 *
 * relay_worker.c
 *   notify_ext_relay_worker_main(): the relay worker of one database.
 */
#ifndef NOTIFY_EXT_RELAY_H
#define NOTIFY_EXT_RELAY_H

#include "postgres.h"

#include "storage/latch.h"

/* Databases that can have a relay worker at the same time. */
#define RELAY_MAX_DATABASES 128

/* One database the launcher knows of (an entry of a shared hash table). */
typedef struct RelayDb
{
	Oid			dboid;			/* hash key */
	bool		wanted;			/* run a worker: relays to run, or not checked yet */
	pid_t		pid;			/* its worker; 0 when none runs */
	Latch	   *latch;			/* its worker's latch (in its PGPROC) */
	uint64		generation;		/* bumped at every commit that changed relays */
} RelayDb;

extern void relay_init(void);
extern Size relay_shmem_size(void);
extern void relay_shmem_init(void);
extern void relay_register_launcher(void);

/*
 * For the worker: claims the entry of its database (false when another
 * worker has it), reads its generation, and gives it up on exit.
 */
extern bool relay_worker_attach(Oid dboid, uint64 *generation);
extern uint64 relay_worker_generation(void);

/* Leaves when the relays did not change since generation; false otherwise. */
extern bool relay_worker_detach_if(uint64 generation);

extern PGDLLEXPORT void notify_ext_relay_launcher_main(Datum main_arg);
extern PGDLLEXPORT void notify_ext_relay_worker_main(Datum main_arg);

#endif							/* NOTIFY_EXT_RELAY_H */
