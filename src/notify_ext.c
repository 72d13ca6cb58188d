/*
 * notify_ext.c: module entry point, configuration and shared memory.
 */
#include "postgres.h"

#include <limits.h>

#include "executor/executor.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/guc.h"

#include "notify_ext.h"
#include "extension.h"
#include "resource_path.h"
#include "principal.h"
#include "retention.h"
#include "webhook.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

int			notify_ext_event_buffer_kb = 65536;

void
insert_index_entries(ResultRelInfo *rri, TupleTableSlot *slot, EState *estate)
{
	List	   *recheck;

	if (rri->ri_NumIndices == 0)
		return;
#if PG_VERSION_NUM >= 160000
	recheck = ExecInsertIndexTuples(rri, slot, estate, false, false, NULL, NIL, false);
#else
	recheck = ExecInsertIndexTuples(rri, slot, estate, false, false, NULL, NIL);
#endif
	list_free(recheck);
}

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
notify_ext_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(ordering_shmem_size());
	RequestAddinShmemSpace(consumer_shmem_size());
	RequestAddinShmemSpace(resource_path_shmem_size());
	RequestAddinShmemSpace(summarizer_shmem_size());
	RequestNamedLWLockTranche("notify_ext", 1);
}

static void
notify_ext_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	ordering_shmem_init();
	consumer_shmem_init();
	resource_path_shmem_init();
	summarizer_shmem_init();
}

void
_PG_init(void)
{
	DefineCustomIntVariable("notify_ext.event_buffer",
							"Memory a transaction may use for its events before writing them ahead of commit.",
							"Events are numbered and written when their transaction commits; a transaction "
							"that records more than this writes the excess early and renumbers it at commit.",
							&notify_ext_event_buffer_kb,
							65536, 64, MAX_KILOBYTES,
							PGC_USERSET, GUC_UNIT_KB,
							NULL, NULL, NULL);

	principal_init();
	consumer_init();
	retention_init();
	webhook_init();

	MarkGUCPrefixReserved("notify_ext");

	capture_init();
	resource_path_init();

	if (!process_shared_preload_libraries_in_progress)
		return;

	notify_ext_preloaded = true;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = notify_ext_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = notify_ext_shmem_startup;
}
