/*
 * webhook.c: webhook configuration helpers, shared state and the launcher.
 *
 * Workers.  notify_ext lives in databases, a background worker in one
 * database at a time.  When notify_ext is in shared_preload_libraries, one
 * launcher worker (not connected to any database) is registered at server
 * start.  It starts one delivery worker (webhook_worker.c) per database
 * that has active webhooks, and starts it again after it died with an
 * error.  At server start it cannot know which databases have webhooks, so
 * it starts a worker in every database that allows connections; a worker
 * that finds no active webhook there (or no notify_ext) says so and exits.
 * A commit that creates, enables or redelivers a webhook marks its database
 * as wanted and wakes the launcher (or the running worker).
 *
 * Wake-ups.  Shared memory holds, per database, whether it has active
 * webhooks and its worker's latch.  After a transaction that recorded
 * events commits, the capture commit hook sets that latch: the worker
 * sleeps until then, or until the next retry falls due, never polling.
 *
 * Secrets.  Auth config secrets and webhook signing keys are stored as
 * nonce || crypto_secretbox(secret) under notify_ext_server_key("auth-
 * secrets"), derived from the key file in the data directory: no table
 * holds the key, so neither SELECT nor pg_dump shows a secret.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "event_buffer.h"
#include "principal.h"
#include "settings.h"
#include "shmem.h"
#include "webhook.h"
#include "webhook_policy.h"

WebhookShared *webhook_shared = NULL;


int			webhook_nretries = 0;
const int  *webhook_retry_delays_ms = NULL;

#define MAX_RETRIES 100

typedef struct RetrySchedule
{
	int			n;
	int			delays_ms[FLEXIBLE_ARRAY_MEMBER];
} RetrySchedule;


/* This transaction called _webhooks_changed(). */
static bool changed_in_xact = false;

/* Cached slot of this backend's database, for the commit hook. */
static int	my_slot = -1;

/* ---------------------------------------------------------------------
 * Shared memory
 * --------------------------------------------------------------------- */

Size
webhook_shmem_size(void)
{
	return MAXALIGN(sizeof(WebhookShared));
}

void
webhook_shmem_init(void)
{
	bool		found;

	webhook_shared = ShmemInitStruct("notify_ext webhooks", webhook_shmem_size(), &found);
	if (!found)
	{
		memset(webhook_shared, 0, webhook_shmem_size());
		SpinLockInit(&webhook_shared->mutex);
	}
}

/* The slot of a database; with create, claims a free one.  Mutex held. */
WebhookDb *
webhook_db_slot(Oid dboid, bool create)
{
	WebhookDb  *free_slot = NULL;
	int			i;

	for (i = 0; i < WEBHOOK_MAX_DATABASES; i++)
	{
		WebhookDb  *db = &webhook_shared->dbs[i];

		if (db->dboid == dboid)
			return db;
		if (db->dboid == InvalidOid && free_slot == NULL)
			free_slot = db;
	}
	if (!create || free_slot == NULL)
		return NULL;
	memset(free_slot, 0, sizeof(WebhookDb));
	free_slot->dboid = dboid;
	return free_slot;
}

/* ---------------------------------------------------------------------
 * Wake-ups
 * --------------------------------------------------------------------- */

/*
 * After a commit that recorded events: wake this database's worker when
 * the database has active webhooks.  Runs outside any transaction; must not
 * fail.  Reads without the mutex: a latch pointer always points into the
 * PGPROC array, so a stale one only costs a spurious wake-up.
 */
static void
webhook_events_committed(void)
{
	volatile WebhookDb *db;
	Latch	   *latch;

	if (webhook_shared == NULL || !OidIsValid(MyDatabaseId))
		return;
	if (my_slot < 0 || webhook_shared->dbs[my_slot].dboid != MyDatabaseId)
	{
		int			i;

		my_slot = -1;
		for (i = 0; i < WEBHOOK_MAX_DATABASES; i++)
			if (webhook_shared->dbs[i].dboid == MyDatabaseId)
			{
				my_slot = i;
				break;
			}
		if (my_slot < 0)
			return;
	}
	db = &webhook_shared->dbs[my_slot];
	pg_read_barrier();
	if (!db->wanted)
		return;
	latch = db->latch;
	if (db->pid != 0 && latch != NULL)
		SetLatch(latch);
}

/* At commit of a transaction that changed webhooks: tell the worker. */
static void
webhook_xact_callback(XactEvent event, void *arg)
{
	Latch	   *latch = NULL;
	WebhookDb  *db;

	if (!changed_in_xact)
		return;
	switch (event)
	{
		case XACT_EVENT_COMMIT:
			changed_in_xact = false;
			if (webhook_shared == NULL)
				return;
			SpinLockAcquire(&webhook_shared->mutex);
			db = webhook_db_slot(MyDatabaseId, true);
			if (db != NULL)
			{
				db->wanted = true;
				db->generation++;
				if (db->pid != 0 && db->latch != NULL)
					latch = db->latch;
				else
					latch = webhook_shared->launcher_latch;
			}
			SpinLockRelease(&webhook_shared->mutex);
			if (latch != NULL)
				SetLatch(latch);
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			changed_in_xact = false;
			break;
		default:
			break;
	}
}

PG_FUNCTION_INFO_V1(notify_ext_webhooks_changed);
Datum
notify_ext_webhooks_changed(PG_FUNCTION_ARGS)
{
	if (webhook_shared != NULL)
	{
		bool		ok;

		SpinLockAcquire(&webhook_shared->mutex);
		ok = webhook_db_slot(MyDatabaseId, false) != NULL ||
			webhook_db_slot(InvalidOid, false) != NULL;
		SpinLockRelease(&webhook_shared->mutex);
		if (!ok)
			ereport(ERROR,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("more than %d databases have notify_ext webhooks", WEBHOOK_MAX_DATABASES),
					 errhint("Restart the server to free the slots of databases that no longer have webhooks.")));
	}
	changed_in_xact = true;
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(notify_ext_webhook_worker_available);
Datum
notify_ext_webhook_worker_available(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(webhook_shared != NULL);
}

/* ---------------------------------------------------------------------
 * GUCs
 * --------------------------------------------------------------------- */

bool
webhook_check_retry_schedule(char **newval, void **extra, GucSource source)
{
	RetrySchedule *sched;
	char	   *copy;
	char	   *item;
	char	   *saveptr = NULL;
	int			n = 0;

	sched = (RetrySchedule *) malloc(offsetof(RetrySchedule, delays_ms) + MAX_RETRIES * sizeof(int));
	copy = strdup(*newval ? *newval : "");
	if (sched == NULL || copy == NULL)
	{
		free(sched);
		free(copy);
		return false;
	}
	for (item = strtok_r(copy, ",", &saveptr); item != NULL; item = strtok_r(NULL, ",", &saveptr))
	{
		char	   *end;
		int			ms;
		const char *hint = NULL;

		while (*item == ' ' || *item == '\t')
			item++;
		end = item + strlen(item);
		while (end > item && (end[-1] == ' ' || end[-1] == '\t'))
			*--end = '\0';
		if (*item == '\0')
			continue;
		if (n >= MAX_RETRIES)
		{
			GUC_check_errdetail("The schedule may list at most %d delays.", MAX_RETRIES);
			free(copy);
			free(sched);
			return false;
		}
		if (!parse_int(item, &ms, GUC_UNIT_MS, &hint) || ms < 0)
		{
			GUC_check_errdetail("\"%s\" is not a delay such as 5s, 5min or 2h.", item);
			if (hint)
				GUC_check_errhint("%s", hint);
			free(copy);
			free(sched);
			return false;
		}
		sched->delays_ms[n++] = ms;
	}
	free(copy);
	sched->n = n;
	*extra = sched;
	return true;
}

void
webhook_assign_retry_schedule(const char *newval, void *extra)
{
	RetrySchedule *sched = (RetrySchedule *) extra;

	webhook_nretries = sched ? sched->n : 0;
	webhook_retry_delays_ms = sched ? sched->delays_ms : NULL;
}


/* ---------------------------------------------------------------------
 * Launcher
 * --------------------------------------------------------------------- */

typedef struct LauncherDb
{
	BackgroundWorkerHandle *handle;
	TimestampTz started_at;
	TimestampTz not_before;		/* earliest time of the next start */
} LauncherDb;

static LauncherDb launcher_dbs[WEBHOOK_MAX_DATABASES];

static void
launcher_on_exit(int code, Datum arg)
{
	SpinLockAcquire(&webhook_shared->mutex);
	if (webhook_shared->launcher_pid == MyProcPid)
	{
		webhook_shared->launcher_pid = 0;
		webhook_shared->launcher_latch = NULL;
	}
	SpinLockRelease(&webhook_shared->mutex);
}

/* Databases a worker may connect to, as a palloc'd array. */
static Oid *
list_databases(int *n)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	Oid		   *oids;
	int			max = 16;
	MemoryContext cxt = CurrentMemoryContext;

	*n = 0;
	oids = palloc(max * sizeof(Oid));
	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database d = (Form_pg_database) GETSTRUCT(tup);

		if (!d->datallowconn || d->datistemplate)
			continue;
		if (*n == max)
		{
			MemoryContext old = MemoryContextSwitchTo(cxt);

			max *= 2;
			oids = repalloc(oids, max * sizeof(Oid));
			MemoryContextSwitchTo(old);
		}
		oids[(*n)++] = d->oid;
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	return oids;
}

static bool
oid_in(Oid oid, Oid *oids, int n)
{
	int			i;

	for (i = 0; i < n; i++)
		if (oids[i] == oid)
			return true;
	return false;
}

static bool
start_database_worker(Oid dboid, BackgroundWorkerHandle **handle)
{
	char		name[BGW_MAXLEN];

	/* the launcher restarts it */
	snprintf(name, sizeof(name), "notify_ext webhook worker for database %u", dboid);
	return start_worker("notify_ext_webhook_worker_main", "notify_ext webhook worker", name,
						ObjectIdGetDatum(dboid), NULL, 0, true, handle);
}

void
notify_ext_webhook_launcher_main(Datum main_arg)
{
	bool		first = true;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("notify_ext webhook launcher");

	SpinLockAcquire(&webhook_shared->mutex);
	webhook_shared->launcher_pid = MyProcPid;
	webhook_shared->launcher_latch = MyLatch;
	SpinLockRelease(&webhook_shared->mutex);
	before_shmem_exit(launcher_on_exit, 0);
	memset(launcher_dbs, 0, sizeof(launcher_dbs));

	for (;;)
	{
		Oid		   *dbs = NULL;
		int			ndbs = 0;
		long		timeout = 60000;
		TimestampTz now;
		int			i;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		if (first)
		{
			/* After a server start: look into every database once. */
			dbs = list_databases(&ndbs);
			SpinLockAcquire(&webhook_shared->mutex);
			for (i = 0; i < ndbs; i++)
			{
				WebhookDb  *db = webhook_db_slot(dbs[i], true);

				if (db != NULL && db->pid == 0)
					db->wanted = true;
			}
			SpinLockRelease(&webhook_shared->mutex);
			first = false;
		}

		now = GetCurrentTimestamp();
		for (i = 0; i < WEBHOOK_MAX_DATABASES; i++)
		{
			WebhookDb  *db = &webhook_shared->dbs[i];
			LauncherDb *ld = &launcher_dbs[i];
			Oid			dboid;
			bool		wanted;
			pid_t		pid;

			SpinLockAcquire(&webhook_shared->mutex);
			dboid = db->dboid;
			wanted = db->wanted;
			pid = db->pid;
			SpinLockRelease(&webhook_shared->mutex);

			if (ld->handle != NULL)
			{
				pid_t		wpid;
				BgwHandleStatus st = GetBackgroundWorkerPid(ld->handle, &wpid);

				if (st == BGWH_STARTED || st == BGWH_NOT_YET_STARTED)
					continue;
				pfree(ld->handle);
				ld->handle = NULL;
				/* It died; start it again soon, later if it keeps dying. */
				if (now - ld->started_at < 10 * USECS_PER_SEC)
					ld->not_before = now + 5 * USECS_PER_SEC;
				else
					ld->not_before = now + USECS_PER_SEC;
			}
			if (!OidIsValid(dboid) || !wanted || pid != 0)
				continue;
			if (now < ld->not_before)
			{
				timeout = Min(timeout, (ld->not_before - now) / 1000 + 1);
				continue;
			}
			if (dbs == NULL)
				dbs = list_databases(&ndbs);
			if (!oid_in(dboid, dbs, ndbs))
			{
				/* Dropped (or closed to connections): forget it. */
				SpinLockAcquire(&webhook_shared->mutex);
				if (db->pid == 0)
					memset(db, 0, sizeof(WebhookDb));
				SpinLockRelease(&webhook_shared->mutex);
				continue;
			}
			if (start_database_worker(dboid, &ld->handle))
			{
				ld->started_at = now;
				ld->not_before = 0;
			}
			else
			{
				ld->handle = NULL;
				ld->not_before = now + USECS_PER_SEC;
				timeout = Min(timeout, 1000);
				ereport(LOG,
						(errmsg("notify_ext could not start a webhook worker for database %u", dboid),
						 errhint("Raise max_worker_processes.")));
			}
		}
		if (dbs != NULL)
			pfree(dbs);

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 timeout, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/* ---------------------------------------------------------------------
 * Initialization
 * --------------------------------------------------------------------- */

void
webhook_init(void)
{
	static const EventsHooks hooks = {NULL, webhook_events_committed};

	event_buffer_add_hooks(&hooks);
	RegisterXactCallback(webhook_xact_callback, NULL);
}

void
webhook_register_launcher(void)
{
	register_startup_worker("notify_ext_webhook_launcher_main", "notify_ext webhook launcher", 5);
}
