/*
 * launcher.h: one launcher for the workers that run per database.
 *
 * Webhook delivery and relays each run one background worker per database
 * that needs one.  Shared memory holds, per database (keyed by its OID),
 * whether each kind of worker is wanted, the running worker's pid and
 * latch, and a generation bumped at every commit that changed that kind's
 * configuration.  One launcher, registered at server start, starts the
 * workers that are wanted and not running, and starts them again after
 * they die.
 */
#ifndef NOTIFY_EXT_LAUNCHER_H
#define NOTIFY_EXT_LAUNCHER_H

#include "postgres.h"

typedef enum DbWorkerKind
{
	DB_WORKER_WEBHOOKS,
	DB_WORKER_RELAYS,
	DB_WORKER_KINDS
} DbWorkerKind;

/* Databases that can have per-database workers at the same time. */
#define LAUNCHER_MAX_DATABASES 1024

extern void launcher_init(void);
extern Size launcher_shmem_size(void);
extern void launcher_shmem_init(void);
extern void launcher_register(void);

/* The shared state exists: notify_ext is in shared_preload_libraries. */
extern bool launcher_available(void);

/*
 * This transaction changed a kind's configuration in this database: at
 * commit its worker, or the launcher, is told.  Errors (54000) when the
 * table of databases is full.
 */
extern void db_workers_changed(DbWorkerKind kind);

/*
 * For a worker: claims its database's entry for its kind (false when
 * another worker has it), reads the generation, and gives the entry up
 * when the process exits.
 */
extern bool db_worker_attach(DbWorkerKind kind, Oid dboid, uint64 *generation);
extern uint64 db_worker_generation(void);

/* Gives up the entry when nothing changed since generation; false otherwise. */
extern bool db_worker_detach_if(uint64 generation);

/*
 * For a worker connected to its database: leaves unless notify_ext is
 * installed there with function `needed`.
 */
extern void db_worker_leave_unless_installed(const char *needed, uint64 generation);

extern PGDLLEXPORT void notify_ext_launcher_main(Datum main_arg);

#endif							/* NOTIFY_EXT_LAUNCHER_H */
