/*
 * launcher.c: one launcher for the workers that run per database.
 *
 * notify_ext lives in databases, a background worker in one database at a
 * time.  When notify_ext is in shared_preload_libraries, one launcher
 * worker (not connected to any database) is registered at server start.
 * It starts one worker of each kind (webhook delivery, relays) per
 * database that wants one, and starts it again after it died.  After a
 * server start it cannot know which databases have webhooks or relays, so
 * it starts each kind in every database that allows connections; a worker
 * that finds nothing to do there (or no notify_ext) leaves.  A commit that
 * changes webhooks or relays marks its database as wanted for that kind
 * and wakes the running worker, or the launcher.
 *
 * Wake-ups.  After a transaction that recorded events commits, the "events
 * committed" hook of event_buffer.c sets the latches of its database's
 * running workers: they sleep until then, or until their own timers fall
 * due, never polling.
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "catalog/pg_database.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "port/atomics.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "event_buffer.h"
#include "launcher.h"
#include "shmem.h"

/* What the launcher needs to know of each kind of worker. */
typedef struct DbWorkerKindInfo
{
	const char *what;			/* in messages: "webhook", "relay" */
	const char *function;		/* entry point in this library */
	const char *type;			/* bgw_type */
} DbWorkerKindInfo;

static const DbWorkerKindInfo kind_info[DB_WORKER_KINDS] = {
	[DB_WORKER_WEBHOOKS] = {"webhook", "notify_ext_webhook_worker_main", "notify_ext webhook worker"},
	[DB_WORKER_RELAYS] = {"relay", "notify_ext_relay_worker_main", "notify_ext relay worker"},
};

/* One kind of worker in one database. */
typedef struct DbWorkerState
{
	bool		wanted;			/* run a worker: work to do, or not checked yet */
	pid_t		pid;			/* its worker; 0 when none runs */
	Latch	   *latch;			/* its worker's latch (in its PGPROC) */
	uint64		generation;		/* bumped at every commit that changed this kind */
} DbWorkerState;

/* An entry of the shared hash table, keyed by database OID. */
typedef struct DbWorkers
{
	Oid			dboid;
	DbWorkerState kinds[DB_WORKER_KINDS];
} DbWorkers;

typedef struct LauncherShared
{
	LWLock		lock;			/* guards the table and the launcher's fields */
	int			tranche;
	pg_atomic_uint32 nentries;	/* entries ever made */
	pid_t		launcher_pid;
	Latch	   *launcher_latch;
} LauncherShared;

static LauncherShared *launcher_shared = NULL;
static HTAB *db_workers = NULL;

/* Kinds whose configuration this transaction changed, as bits. */
static uint32 changed_in_xact = 0;

/*
 * This backend's entry, for the commit hook, checked by its dboid.  When
 * there is none, the count of entries at the last look: no new look until
 * it grows.
 */
static DbWorkers *my_entry = NULL;
static uint32 entries_at_miss = 0;

/* A worker's own entry and kind. */
static DbWorkers *worker_entry = NULL;
static DbWorkerKind worker_kind;

/* ---------------------------------------------------------------------
 * Shared memory
 * --------------------------------------------------------------------- */

Size
launcher_shmem_size(void)
{
	return add_size(MAXALIGN(sizeof(LauncherShared)),
					shmem_database_table_size(sizeof(DbWorkers), LAUNCHER_MAX_DATABASES));
}

void
launcher_shmem_init(void)
{
	bool		found;

	db_workers = shmem_database_table("notify_ext per-database workers", sizeof(DbWorkers),
									  LAUNCHER_MAX_DATABASES);
	launcher_shared = ShmemInitStruct("notify_ext launcher", sizeof(LauncherShared), &found);
	if (!found)
	{
		memset(launcher_shared, 0, sizeof(LauncherShared));
		launcher_shared->tranche = LWLockNewTrancheId();
		LWLockInitialize(&launcher_shared->lock, launcher_shared->tranche);
		pg_atomic_init_u32(&launcher_shared->nentries, 0);
	}
	LWLockRegisterTranche(launcher_shared->tranche, "notify_ext launcher");
}

bool
launcher_available(void)
{
	return launcher_shared != NULL;
}

/* The entry of a database; with create, makes one (NULL when full).  Lock held. */
static DbWorkers *
db_entry(Oid dboid, bool create)
{
	bool		found;
	DbWorkers  *db;

	db = hash_search(db_workers, &dboid, create ? HASH_ENTER_NULL : HASH_FIND, &found);
	if (db != NULL && create && !found)
	{
		memset(db->kinds, 0, sizeof(db->kinds));
		pg_atomic_fetch_add_u32(&launcher_shared->nentries, 1);
	}
	return db;
}

/* ---------------------------------------------------------------------
 * Wake-ups
 * --------------------------------------------------------------------- */

/*
 * After a commit that recorded events: wake this database's running
 * workers.  Runs outside any transaction and must not fail.  The entry,
 * once found, is read without the lock: entries of a shared hash table stay
 * where they are, and a stale read only costs a spurious wake-up or a
 * missed one that the worker's own timers make up for.
 */
static void
launcher_events_committed(int64 nevents)
{
	volatile DbWorkers *db;

	if (launcher_shared == NULL || !OidIsValid(MyDatabaseId))
		return;
	if (my_entry == NULL || my_entry->dboid != MyDatabaseId)
	{
		uint32		nentries = pg_atomic_read_u32(&launcher_shared->nentries);

		if (nentries == entries_at_miss)
			return;
		LWLockAcquire(&launcher_shared->lock, LW_SHARED);
		my_entry = db_entry(MyDatabaseId, false);
		LWLockRelease(&launcher_shared->lock);
		if (my_entry == NULL)
		{
			entries_at_miss = nentries;
			return;
		}
	}
	db = my_entry;
	pg_read_barrier();
	for (int k = 0; k < DB_WORKER_KINDS; k++)
	{
		Latch	   *latch = db->kinds[k].latch;

		if (db->kinds[k].wanted && db->kinds[k].pid != 0 && latch != NULL)
			SetLatch(latch);
	}
}

/* At commit of a transaction that changed a kind's configuration: tell its worker. */
static void
launcher_xact_callback(XactEvent event, void *arg)
{
	Latch	   *latches[DB_WORKER_KINDS];
	int			nlatches = 0;
	DbWorkers  *db;

	if (changed_in_xact == 0)
		return;
	switch (event)
	{
		case XACT_EVENT_COMMIT:
			if (launcher_shared == NULL)
			{
				changed_in_xact = 0;
				return;
			}
			LWLockAcquire(&launcher_shared->lock, LW_EXCLUSIVE);
			db = db_entry(MyDatabaseId, true);
			for (int k = 0; db != NULL && k < DB_WORKER_KINDS; k++)
			{
				DbWorkerState *st = &db->kinds[k];

				if ((changed_in_xact & (1U << k)) == 0)
					continue;
				st->wanted = true;
				st->generation++;
				latches[nlatches++] = st->pid != 0 && st->latch != NULL
					? st->latch : launcher_shared->launcher_latch;
			}
			LWLockRelease(&launcher_shared->lock);
			changed_in_xact = 0;
			for (int i = 0; i < nlatches; i++)
				if (latches[i] != NULL)
					SetLatch(latches[i]);
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			changed_in_xact = 0;
			break;
		default:
			break;
	}
}

void
db_workers_changed(DbWorkerKind kind)
{
	if (launcher_shared != NULL)
	{
		bool		ok;

		LWLockAcquire(&launcher_shared->lock, LW_EXCLUSIVE);
		ok = db_entry(MyDatabaseId, true) != NULL;
		LWLockRelease(&launcher_shared->lock);
		if (!ok)
			ereport(ERROR,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("more than %d databases have notify_ext %ss",
							LAUNCHER_MAX_DATABASES, kind_info[kind].what),
					 errhint("Restart the server to free the entries of databases that were dropped.")));
	}
	changed_in_xact |= 1U << kind;
}

/* ---------------------------------------------------------------------
 * A worker's entry
 * --------------------------------------------------------------------- */

static void
worker_on_exit(int code, Datum arg)
{
	LWLockAcquire(&launcher_shared->lock, LW_EXCLUSIVE);
	if (worker_entry != NULL && worker_entry->kinds[worker_kind].pid == MyProcPid)
	{
		worker_entry->kinds[worker_kind].pid = 0;
		worker_entry->kinds[worker_kind].latch = NULL;
	}
	LWLockRelease(&launcher_shared->lock);
}

bool
db_worker_attach(DbWorkerKind kind, Oid dboid, uint64 *generation)
{
	DbWorkers  *db;
	DbWorkerState *st;

	LWLockAcquire(&launcher_shared->lock, LW_EXCLUSIVE);
	db = db_entry(dboid, true);
	st = db != NULL ? &db->kinds[kind] : NULL;
	if (st == NULL || (st->pid != 0 && st->pid != MyProcPid))
	{
		LWLockRelease(&launcher_shared->lock);
		return false;
	}
	st->pid = MyProcPid;
	st->latch = MyLatch;
	*generation = st->generation;
	worker_entry = db;
	worker_kind = kind;
	LWLockRelease(&launcher_shared->lock);
	before_shmem_exit(worker_on_exit, 0);
	return true;
}

uint64
db_worker_generation(void)
{
	uint64		gen;

	LWLockAcquire(&launcher_shared->lock, LW_SHARED);
	gen = worker_entry->kinds[worker_kind].generation;
	LWLockRelease(&launcher_shared->lock);
	return gen;
}

bool
db_worker_detach_if(uint64 generation)
{
	DbWorkerState *st = &worker_entry->kinds[worker_kind];
	bool		leave = false;

	LWLockAcquire(&launcher_shared->lock, LW_EXCLUSIVE);
	if (st->generation == generation)
	{
		st->wanted = false;
		st->pid = 0;
		st->latch = NULL;
		leave = true;
	}
	LWLockRelease(&launcher_shared->lock);
	return leave;
}

/*
 * Leaves when this database has no notify_ext, or one of a version without
 * function `needed`, unless the kind's configuration changed meanwhile:
 * then exits with an error code so that the launcher starts it again.
 */
void
db_worker_leave_unless_installed(const char *needed, uint64 generation)
{
	int			ret;
	bool		ready;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	ret = SPI_execute_with_args("SELECT 1 FROM pg_catalog.pg_proc p "
								"JOIN pg_catalog.pg_extension x "
								"ON x.extnamespace OPERATOR(pg_catalog.=) p.pronamespace "
								"WHERE x.extname OPERATOR(pg_catalog.=) 'notify_ext'::pg_catalog.name "
								"AND p.proname OPERATOR(pg_catalog.=) $1::pg_catalog.name",
								1, (Oid[]) {TEXTOID}, (Datum[]) {CStringGetTextDatum(needed)},
								NULL, true, 0);
	ready = ret == SPI_OK_SELECT && SPI_processed > 0;
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	if (ready)
		return;
	if (db_worker_detach_if(generation))
	{
		elog(DEBUG1, "%s: notify_ext is not installed in database %u, exiting",
			 kind_info[worker_kind].type, MyDatabaseId);
		proc_exit(0);
	}
	proc_exit(1);
}

/* ---------------------------------------------------------------------
 * The launcher
 * --------------------------------------------------------------------- */

/* The launcher's own record of a worker it started. */
typedef struct Started
{
	BackgroundWorkerHandle *handle;
	TimestampTz started_at;
	TimestampTz not_before;		/* earliest time of the next start */
} Started;

typedef struct LauncherDb
{
	Oid			dboid;			/* InvalidOid: free */
	Started		kinds[DB_WORKER_KINDS];
} LauncherDb;

static LauncherDb launcher_dbs[LAUNCHER_MAX_DATABASES];

static void
launcher_on_exit(int code, Datum arg)
{
	LWLockAcquire(&launcher_shared->lock, LW_EXCLUSIVE);
	if (launcher_shared->launcher_pid == MyProcPid)
	{
		launcher_shared->launcher_pid = 0;
		launcher_shared->launcher_latch = NULL;
	}
	LWLockRelease(&launcher_shared->lock);
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
oid_in(Oid oid, const Oid *oids, int n)
{
	for (int i = 0; i < n; i++)
		if (oids[i] == oid)
			return true;
	return false;
}

/* The launcher's record of a database; with create, makes one (NULL when full). */
static LauncherDb *
launcher_db(Oid dboid, bool create)
{
	LauncherDb *free_slot = NULL;

	for (int i = 0; i < LAUNCHER_MAX_DATABASES; i++)
	{
		if (launcher_dbs[i].dboid == dboid)
			return &launcher_dbs[i];
		if (free_slot == NULL && launcher_dbs[i].dboid == InvalidOid)
			free_slot = &launcher_dbs[i];
	}
	if (create && free_slot != NULL)
	{
		memset(free_slot, 0, sizeof(LauncherDb));
		free_slot->dboid = dboid;
		return free_slot;
	}
	return NULL;
}

/* After a server start: every kind is wanted in every database, until its worker has looked. */
static void
want_everywhere(void)
{
	int			ndbs;
	Oid		   *dbs = list_databases(&ndbs);

	LWLockAcquire(&launcher_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < ndbs; i++)
	{
		DbWorkers  *db = db_entry(dbs[i], true);

		for (int k = 0; db != NULL && k < DB_WORKER_KINDS; k++)
			if (db->kinds[k].pid == 0)
				db->kinds[k].wanted = true;
	}
	LWLockRelease(&launcher_shared->lock);
	pfree(dbs);
}

/*
 * Notes workers that ended: one that left because it had nothing to do
 * gave up wanted; one that died still wants to run, and is started again
 * soon, later if it keeps dying.
 */
static void
note_ended_workers(TimestampTz now)
{
	for (int i = 0; i < LAUNCHER_MAX_DATABASES; i++)
	{
		LauncherDb *ld = &launcher_dbs[i];

		if (ld->dboid == InvalidOid)
			continue;
		for (int k = 0; k < DB_WORKER_KINDS; k++)
		{
			Started    *s = &ld->kinds[k];
			pid_t		wpid;
			BgwHandleStatus st;
			DbWorkers  *db;
			bool		wanted;

			if (s->handle == NULL)
				continue;
			st = GetBackgroundWorkerPid(s->handle, &wpid);
			if (st == BGWH_STARTED || st == BGWH_NOT_YET_STARTED)
				continue;
			pfree(s->handle);
			s->handle = NULL;
			LWLockAcquire(&launcher_shared->lock, LW_SHARED);
			db = db_entry(ld->dboid, false);
			wanted = db != NULL && db->kinds[k].wanted;
			LWLockRelease(&launcher_shared->lock);
			if (!wanted)
				s->not_before = 0;
			else
				s->not_before = now + (now - s->started_at < 10 * USECS_PER_SEC
									   ? 5 * USECS_PER_SEC : USECS_PER_SEC);
		}
	}
}

/* A database that was dropped, or closed to connections: forget it where no worker runs. */
static void
forget_database(Oid dboid)
{
	DbWorkers  *db;
	LauncherDb *ld = launcher_db(dboid, false);
	bool		idle = true;

	LWLockAcquire(&launcher_shared->lock, LW_EXCLUSIVE);
	db = db_entry(dboid, false);
	for (int k = 0; db != NULL && k < DB_WORKER_KINDS; k++)
	{
		if (db->kinds[k].pid == 0)
			db->kinds[k].wanted = false;
		else
			idle = false;
	}
	if (idle && db != NULL)
		hash_search(db_workers, &dboid, HASH_REMOVE, NULL);
	LWLockRelease(&launcher_shared->lock);
	for (int k = 0; idle && ld != NULL && k < DB_WORKER_KINDS; k++)
		if (ld->kinds[k].handle != NULL)
			idle = false;
	if (idle && ld != NULL)
		ld->dboid = InvalidOid;
}

static bool
start_db_worker(DbWorkerKind kind, Oid dboid, BackgroundWorkerHandle **handle)
{
	char		name[BGW_MAXLEN];

	snprintf(name, sizeof(name), "%s for database %u", kind_info[kind].type, dboid);
	return start_worker(kind_info[kind].function, kind_info[kind].type, name,
						ObjectIdGetDatum(dboid), NULL, 0, true, handle);
}

typedef struct Wanted
{
	Oid			dboid;
	DbWorkerKind kind;
} Wanted;

void
notify_ext_launcher_main(Datum main_arg)
{
	static Wanted want[LAUNCHER_MAX_DATABASES * DB_WORKER_KINDS];

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("notify_ext launcher");

	LWLockAcquire(&launcher_shared->lock, LW_EXCLUSIVE);
	launcher_shared->launcher_pid = MyProcPid;
	launcher_shared->launcher_latch = MyLatch;
	LWLockRelease(&launcher_shared->lock);
	before_shmem_exit(launcher_on_exit, 0);
	memset(launcher_dbs, 0, sizeof(launcher_dbs));

	want_everywhere();
	for (;;)
	{
		Oid		   *dbs = NULL;
		int			ndbs = 0;
		long		timeout = 60000;
		TimestampTz now;
		int			nwant = 0;
		HASH_SEQ_STATUS hs;
		DbWorkers  *db;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		now = GetCurrentTimestamp();
		note_ended_workers(now);

		/* Workers that are wanted and do not run. */
		LWLockAcquire(&launcher_shared->lock, LW_SHARED);
		hash_seq_init(&hs, db_workers);
		while ((db = hash_seq_search(&hs)) != NULL)
			for (int k = 0; k < DB_WORKER_KINDS; k++)
				if (db->kinds[k].wanted && db->kinds[k].pid == 0)
					want[nwant++] = (Wanted) {db->dboid, k};
		LWLockRelease(&launcher_shared->lock);

		for (int i = 0; i < nwant; i++)
		{
			LauncherDb *ld = launcher_db(want[i].dboid, true);
			Started    *s;

			if (ld == NULL)
				continue;
			s = &ld->kinds[want[i].kind];
			if (s->handle != NULL)
				continue;
			if (now < s->not_before)
			{
				timeout = Min(timeout, (s->not_before - now) / 1000 + 1);
				continue;
			}
			if (dbs == NULL)
				dbs = list_databases(&ndbs);
			if (!oid_in(want[i].dboid, dbs, ndbs))
			{
				forget_database(want[i].dboid);
				continue;
			}
			if (start_db_worker(want[i].kind, want[i].dboid, &s->handle))
			{
				s->started_at = now;
				s->not_before = 0;
			}
			else
			{
				s->handle = NULL;
				s->not_before = now + USECS_PER_SEC;
				timeout = Min(timeout, 1000);
				ereport(LOG,
						(errmsg("notify_ext could not start a %s worker for database %u",
								kind_info[want[i].kind].what, want[i].dboid),
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
launcher_init(void)
{
	static const EventsHooks hooks = {NULL, launcher_events_committed};

	event_buffer_add_hooks(&hooks);
	RegisterXactCallback(launcher_xact_callback, NULL);
}

void
launcher_register(void)
{
	register_startup_worker("notify_ext_launcher_main", "notify_ext launcher", 5);
}
