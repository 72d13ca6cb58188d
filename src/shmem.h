/*
 * shmem.h: notify_ext's shared memory and background workers: one set of
 * shared-memory hooks for every subsystem, shared tables keyed by database
 * OID, and starting a background worker.
 */
#ifndef NOTIFY_EXT_SHMEM_H
#define NOTIFY_EXT_SHMEM_H

#include "access/twophase.h"
#include "postmaster/bgworker.h"
#include "storage/proc.h"
#include "utils/hsearch.h"

/* This backend's slot in per-backend shared arrays. */
#if PG_VERSION_NUM >= 170000
#define MY_PROC_INDEX MyProcNumber
#else
#define MY_PROC_INDEX (MyProc->pgprocno)
#endif

/* Entries of a per-backend shared array: every backend and prepared transaction. */
#define SHMEM_NPROCS (MaxBackends + NUM_AUXILIARY_PROCS + max_prepared_xacts)

/*
 * A subsystem's shared memory: size() is asked for when the server starts,
 * init() runs once it is there (in the postmaster, and in every backend on
 * EXEC_BACKEND platforms), with AddinShmemInitLock held.  Called from
 * _PG_init, before shmem_install_hooks().
 */
extern void shmem_add(Size (*size) (void), void (*init) (void));

/* Installs the hooks that request and set up everything added. */
extern void shmem_install_hooks(void);

/*
 * A shared hash table keyed by database OID, for per-database state: each
 * entry starts with the Oid.  Callers lock it themselves; max_databases is
 * what it is sized for.  Call from an init function.
 */
extern HTAB *shmem_database_table(const char *name, Size entrysize, int max_databases);
extern Size shmem_database_table_size(Size entrysize, int max_databases);

/*
 * The entry of database dboid in such a table, entered if missing (found
 * says which).  A table holding max_databases entries or more first gives
 * up those of databases that no longer exist (a catalog lookup: call in a
 * transaction), so that dropped databases do not pile up; past that it
 * grows into the server's spare shared memory, and NULL means that is
 * used up.  The caller holds the table's lock exclusively.
 */
extern void *shmem_database_enter(HTAB *table, int max_databases, Oid dboid, bool *found);

/*
 * Starts a background worker of notify_ext running function (a
 * PGDLLEXPORT entry point named notify_ext_<worker>_main) with arg, for a
 * database (InvalidOid: none).  extra, when not NULL, is copied into
 * bgw_extra.  With handle, reports to this backend; returns false when no
 * worker slot is free.
 */
extern bool start_worker(const char *function, const char *type, const char *name,
						 Datum arg, const void *extra, Size extra_size,
						 bool notify_me, BackgroundWorkerHandle **handle);

/* The same, registered at server start (from _PG_init), restarted after restart_s. */
extern void register_startup_worker(const char *function, const char *type, int restart_s);

#endif							/* NOTIFY_EXT_SHMEM_H */
