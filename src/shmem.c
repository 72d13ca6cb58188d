/*
 * shmem.c: one set of shared-memory hooks for every subsystem, shared
 * tables keyed by database OID, and starting background workers.
 */
#include "postgres.h"

#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/syscache.h"

#include "shmem.h"

#define MAX_PARTS 16

typedef struct ShmemPart
{
	Size		(*size) (void);
	void		(*init) (void);
} ShmemPart;

static ShmemPart parts[MAX_PARTS];
static int	nparts = 0;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

void
shmem_add(Size (*size) (void), void (*init) (void))
{
	if (nparts == MAX_PARTS)
		elog(ERROR, "too many notify_ext shared memory parts");
	parts[nparts].size = size;
	parts[nparts].init = init;
	nparts++;
}

static void
shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	for (int i = 0; i < nparts; i++)
		RequestAddinShmemSpace(parts[i].size());
	RequestNamedLWLockTranche("notify_ext", 1);
}

static void
shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	for (int i = 0; i < nparts; i++)
		parts[i].init();
	LWLockRelease(AddinShmemInitLock);
}

void
shmem_install_hooks(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = shmem_startup;
}

Size
shmem_database_table_size(Size entrysize, int max_databases)
{
	return hash_estimate_size(max_databases, entrysize);
}

HTAB *
shmem_database_table(const char *name, Size entrysize, int max_databases)
{
	HASHCTL		ctl;

	ctl.keysize = sizeof(Oid);
	ctl.entrysize = entrysize;
	return ShmemInitHash(name, max_databases, max_databases, &ctl, HASH_ELEM | HASH_BLOBS);
}

void *
shmem_database_enter(HTAB *table, int max_databases, Oid dboid, bool *found)
{
	void	   *entry = hash_search(table, &dboid, HASH_FIND, found);

	if (entry != NULL)
		return entry;
	if (hash_get_num_entries(table) >= max_databases)
	{
		HASH_SEQ_STATUS hs;
		Oid		   *key;

		hash_seq_init(&hs, table);
		while ((key = hash_seq_search(&hs)) != NULL)
			if (!SearchSysCacheExists1(DATABASEOID, ObjectIdGetDatum(*key)))
				hash_search(table, key, HASH_REMOVE, NULL);
	}
	return hash_search(table, &dboid, HASH_ENTER_NULL, found);
}

static void
fill_worker(BackgroundWorker *worker, const char *function, const char *type, const char *name)
{
	memset(worker, 0, sizeof(*worker));
	worker->bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker->bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker->bgw_restart_time = BGW_NEVER_RESTART;
	strlcpy(worker->bgw_library_name, "notify_ext", BGW_MAXLEN);
	strlcpy(worker->bgw_function_name, function, BGW_MAXLEN);
	strlcpy(worker->bgw_type, type, BGW_MAXLEN);
	strlcpy(worker->bgw_name, name, BGW_MAXLEN);
}

bool
start_worker(const char *function, const char *type, const char *name,
			 Datum arg, const void *extra, Size extra_size,
			 bool notify_me, BackgroundWorkerHandle **handle)
{
	BackgroundWorker worker;

	fill_worker(&worker, function, type, name);
	worker.bgw_main_arg = arg;
	if (extra != NULL)
	{
		Assert(extra_size <= BGW_EXTRALEN);
		memcpy(worker.bgw_extra, extra, extra_size);
	}
	worker.bgw_notify_pid = notify_me ? MyProcPid : 0;
	return RegisterDynamicBackgroundWorker(&worker, handle);
}

void
register_startup_worker(const char *function, const char *type, int restart_s)
{
	BackgroundWorker worker;

	fill_worker(&worker, function, type, type);
	worker.bgw_restart_time = restart_s;
	RegisterBackgroundWorker(&worker);
}
