/*
 * relay.c: the shared state of relays, their launcher, and the SQL helpers
 * that check a relay's configuration.
 *
 * Workers.  As for webhooks (webhook.c), one launcher worker that is not
 * connected to any database is registered at server start when notify_ext
 * is preloaded.  It starts one relay worker (relay_worker.c) per database
 * that has relays to run, and starts it again after it died.  After a
 * server start it cannot know which databases have relays, so it starts a
 * worker in every database that allows connections; a worker that finds no
 * relay to run (or no notify_ext) leaves.  A commit that creates, resumes,
 * pauses or deletes a relay marks its database as wanted and wakes the
 * launcher, or the running worker.
 *
 * Wake-ups.  A shared hash table keyed by database OID holds, per database,
 * whether it has relays and its worker's latch.  After a transaction that
 * recorded events commits, the "events committed" hook of event_buffer.c
 * sets that latch: the worker sleeps until then.  Writers in databases
 * without relays pay one atomic read.
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
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
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "event_buffer.h"
#include "relay.h"
#include "shmem.h"
#include "webhook_policy.h"

typedef struct RelayShared
{
	LWLock		lock;			/* guards the table of databases */
	int			tranche;
	pg_atomic_uint32 ndbs;		/* entries ever made: 0 means no relay anywhere */
	pid_t		launcher_pid;
	Latch	   *launcher_latch;
} RelayShared;

static RelayShared *relay_shared = NULL;
static HTAB *relay_dbs = NULL;	/* RelayDb by dboid */

/* This transaction called _relays_changed(). */
static bool changed_in_xact = false;

/* This backend's entry, for the commit hook (checked by its dboid). */
static RelayDb *my_entry = NULL;

/* The worker's entry. */
static RelayDb *worker_entry = NULL;

/* ---------------------------------------------------------------------
 * Shared memory
 * --------------------------------------------------------------------- */

Size
relay_shmem_size(void)
{
	return add_size(MAXALIGN(sizeof(RelayShared)),
					shmem_database_table_size(sizeof(RelayDb), RELAY_MAX_DATABASES));
}

void
relay_shmem_init(void)
{
	bool		found;

	relay_dbs = shmem_database_table("notify_ext relay databases", sizeof(RelayDb),
									 RELAY_MAX_DATABASES);
	relay_shared = ShmemInitStruct("notify_ext relays", sizeof(RelayShared), &found);
	if (!found)
	{
		memset(relay_shared, 0, sizeof(RelayShared));
		relay_shared->tranche = LWLockNewTrancheId();
		LWLockInitialize(&relay_shared->lock, relay_shared->tranche);
		pg_atomic_init_u32(&relay_shared->ndbs, 0);
	}
	LWLockRegisterTranche(relay_shared->tranche, "notify_ext relays");
}

/* The entry of a database; with create, makes one (NULL when full).  Lock held. */
static RelayDb *
db_entry(Oid dboid, bool create)
{
	bool		found;
	RelayDb    *db;

	db = hash_search(relay_dbs, &dboid, create ? HASH_ENTER_NULL : HASH_FIND, &found);
	if (db != NULL && create && !found)
	{
		db->wanted = false;
		db->pid = 0;
		db->latch = NULL;
		db->generation = 0;
		pg_atomic_fetch_add_u32(&relay_shared->ndbs, 1);
	}
	return db;
}

/* ---------------------------------------------------------------------
 * Wake-ups
 * --------------------------------------------------------------------- */

/*
 * After a commit that recorded events: wake this database's worker.  Runs
 * outside any transaction and must not fail.  The entry, once found, is
 * read without the lock: entries of a shared hash table stay where they
 * are, and a stale one only costs a spurious wake-up or a missed one that
 * the worker's periodic look makes up for.
 */
static void
relay_events_committed(void)
{
	volatile RelayDb *db;
	Latch	   *latch;

	if (relay_shared == NULL || !OidIsValid(MyDatabaseId) ||
		pg_atomic_read_u32(&relay_shared->ndbs) == 0)
		return;
	if (my_entry == NULL || my_entry->dboid != MyDatabaseId)
	{
		LWLockAcquire(&relay_shared->lock, LW_SHARED);
		my_entry = db_entry(MyDatabaseId, false);
		LWLockRelease(&relay_shared->lock);
		if (my_entry == NULL)
			return;
	}
	db = my_entry;
	pg_read_barrier();
	if (!db->wanted)
		return;
	latch = db->latch;
	if (db->pid != 0 && latch != NULL)
		SetLatch(latch);
}

/* At commit of a transaction that changed relays: tell the worker. */
static void
relay_xact_callback(XactEvent event, void *arg)
{
	Latch	   *latch = NULL;
	RelayDb    *db;

	if (!changed_in_xact)
		return;
	switch (event)
	{
		case XACT_EVENT_COMMIT:
			changed_in_xact = false;
			if (relay_shared == NULL)
				return;
			LWLockAcquire(&relay_shared->lock, LW_EXCLUSIVE);
			db = db_entry(MyDatabaseId, true);
			if (db != NULL)
			{
				db->wanted = true;
				db->generation++;
				if (db->pid != 0 && db->latch != NULL)
					latch = db->latch;
				else
					latch = relay_shared->launcher_latch;
			}
			LWLockRelease(&relay_shared->lock);
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

PG_FUNCTION_INFO_V1(notify_ext_relays_changed);
Datum
notify_ext_relays_changed(PG_FUNCTION_ARGS)
{
	if (relay_shared != NULL)
	{
		bool		ok;

		LWLockAcquire(&relay_shared->lock, LW_EXCLUSIVE);
		ok = db_entry(MyDatabaseId, true) != NULL;
		LWLockRelease(&relay_shared->lock);
		if (!ok)
			ereport(ERROR,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("more than %d databases have notify_ext relays", RELAY_MAX_DATABASES),
					 errhint("Restart the server to free the slots of databases that no longer have relays.")));
	}
	changed_in_xact = true;
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(notify_ext_relay_worker_available);
Datum
notify_ext_relay_worker_available(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(relay_shared != NULL);
}

/* ---------------------------------------------------------------------
 * The worker's entry
 * --------------------------------------------------------------------- */

static void
worker_on_exit(int code, Datum arg)
{
	LWLockAcquire(&relay_shared->lock, LW_EXCLUSIVE);
	if (worker_entry != NULL && worker_entry->pid == MyProcPid)
	{
		worker_entry->pid = 0;
		worker_entry->latch = NULL;
	}
	LWLockRelease(&relay_shared->lock);
}

bool
relay_worker_attach(Oid dboid, uint64 *generation)
{
	RelayDb    *db;

	LWLockAcquire(&relay_shared->lock, LW_EXCLUSIVE);
	db = db_entry(dboid, true);
	if (db == NULL || (db->pid != 0 && db->pid != MyProcPid))
	{
		LWLockRelease(&relay_shared->lock);
		return false;
	}
	db->pid = MyProcPid;
	db->latch = MyLatch;
	*generation = db->generation;
	worker_entry = db;
	LWLockRelease(&relay_shared->lock);
	before_shmem_exit(worker_on_exit, 0);
	return true;
}

uint64
relay_worker_generation(void)
{
	uint64		gen;

	LWLockAcquire(&relay_shared->lock, LW_SHARED);
	gen = worker_entry->generation;
	LWLockRelease(&relay_shared->lock);
	return gen;
}

bool
relay_worker_detach_if(uint64 generation)
{
	bool		leave = false;

	LWLockAcquire(&relay_shared->lock, LW_EXCLUSIVE);
	if (worker_entry->generation == generation)
	{
		worker_entry->wanted = false;
		worker_entry->pid = 0;
		worker_entry->latch = NULL;
		leave = true;
	}
	LWLockRelease(&relay_shared->lock);
	return leave;
}

/* ---------------------------------------------------------------------
 * Checks of a relay's configuration
 * --------------------------------------------------------------------- */

/*
 * The URL with what comes before an '@' (a user name, password or token)
 * replaced by "***", for messages: they go to the server log.
 */
static char *
server_for_message(const char *url)
{
	const char *at = strrchr(url, '@');
	const char *start = strstr(url, "://");

	if (at == NULL)
		return pstrdup(url);
	start = (start != NULL && start < at) ? start + 3 : url;
	return psprintf("%.*s***%s", (int) (start - url), url, at);
}

static void
bad_server(const char *url, const char *why)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("server URL \"%s\" is not valid for a relay: %s", server_for_message(url), why),
			 errhint("Give nats://host:port, or tls://host:port for TLS; user names, passwords and "
					 "tokens belong in the auth argument.")));
}

/*
 * notify_ext._relay_check_server(url text) returns text: the URL as
 * scheme://host:port, or 22023.
 */
PG_FUNCTION_INFO_V1(notify_ext_relay_check_server);
Datum
notify_ext_relay_check_server(PG_FUNCTION_ARGS)
{
	char	   *url;
	const char *p;
	const char *scheme = "nats";
	char	   *host;
	const char *host_end;
	long		port = 4222;
	bool		v6 = false;
	unsigned char addr[sizeof(struct in6_addr)];
	const char *denied = NULL;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("server URL must not be NULL")));
	url = text_to_cstring(PG_GETARG_TEXT_PP(0));
	p = url;
	for (const char *c = url; *c; c++)
		if ((unsigned char) *c <= ' ' || *c == 0x7f)
			bad_server(url, "it contains whitespace or control characters");
	if (strchr(url, '@') != NULL)
		bad_server(url, "it contains a user name or password");
	if (pg_strncasecmp(p, "nats://", 7) == 0)
		p += 7;
	else if (pg_strncasecmp(p, "tls://", 6) == 0)
	{
		scheme = "tls";
		p += 6;
	}
	else if (strstr(p, "://") != NULL)
		bad_server(url, "its scheme is not nats:// or tls://");
	if (*p == '[')
	{
		host_end = strchr(p, ']');
		if (host_end == NULL)
			bad_server(url, "an IPv6 address must end with ]");
		host = pnstrdup(p + 1, host_end - p - 1);
		host_end++;
		v6 = true;
	}
	else
	{
		host_end = p + strcspn(p, ":/?#");
		host = pnstrdup(p, host_end - p);
	}
	if (host[0] == '\0')
		bad_server(url, "it has no host");
	for (const char *c = host; *c && !v6; c++)
		if (!(isalnum((unsigned char) *c) || *c == '-' || *c == '.' || *c == '_'))
			bad_server(url, "its host is not a host name or an address");
	p = host_end;
	if (*p == ':')
	{
		char	   *end;

		errno = 0;
		port = strtol(p + 1, &end, 10);
		if (end == p + 1 || errno != 0 || port < 1 || port > 65535)
			bad_server(url, "its port is not a number from 1 to 65535");
		p = end;
	}
	if (*p == '/')
		p++;
	if (*p != '\0')
		bad_server(url, "it has a path, query or fragment");

	/* Addresses that webhooks may not reach are closed to relays too. */
	if (v6 && inet_pton(AF_INET6, host, addr) == 1)
	{
		struct sockaddr_in6 sa;

		memset(&sa, 0, sizeof(sa));
		sa.sin6_family = AF_INET6;
		memcpy(&sa.sin6_addr, addr, sizeof(sa.sin6_addr));
		denied = webhook_address_denied((struct sockaddr *) &sa);
	}
	else if (v6)
		bad_server(url, "the host in [] is not an IPv6 address");
	else if (inet_pton(AF_INET, host, addr) == 1)
	{
		struct sockaddr_in sa;

		memset(&sa, 0, sizeof(sa));
		sa.sin_family = AF_INET;
		memcpy(&sa.sin_addr, addr, sizeof(sa.sin_addr));
		denied = webhook_address_denied((struct sockaddr *) &sa);
	}
	else if (pg_strcasecmp(host, "metadata.google.internal") == 0)
		denied = "a cloud metadata address";
	if (denied != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("server URL \"%s\" is not allowed: its address is %s", url, denied),
				 errhint("notify_ext.webhook_denied_networks lists the networks closed to webhooks and relays.")));

	PG_RETURN_TEXT_P(cstring_to_text(psprintf(v6 ? "%s://[%s]:%ld" : "%s://%s:%ld",
											  scheme, host, port)));
}

/*
 * notify_ext._relay_check_name(value text, is_stream boolean): 22023
 * unless value is a stream name (is_stream) or a subject prefix.
 */
PG_FUNCTION_INFO_V1(notify_ext_relay_check_name);
Datum
notify_ext_relay_check_name(PG_FUNCTION_ARGS)
{
	char	   *v = text_to_cstring(PG_GETARG_TEXT_PP(0));
	bool		is_stream = PG_GETARG_BOOL(1);
	const char *what = is_stream ? "stream name" : "subject prefix";
	const char *why = NULL;
	size_t		len = strlen(v);

	if (len == 0)
		why = "it is empty";
	else if (len > (is_stream ? 255 : 200))
		why = is_stream ? "it is longer than 255 bytes" : "it is longer than 200 bytes";
	for (const char *c = v; *c && why == NULL; c++)
	{
		unsigned char ch = (unsigned char) *c;

		if (ch <= ' ' || ch == 0x7f)
			why = "it contains whitespace or control characters";
		else if (*c == '*' || *c == '>')
			why = "it contains the wildcard characters * or >";
		else if (is_stream && (*c == '.' || *c == '/' || *c == '\\'))
			why = "it contains ., / or \\";
		else if (!is_stream && *c == '.' && (c == v || c[1] == '\0' || c[1] == '.'))
			why = "it has an empty token";
	}
	if (why == NULL && !is_stream && v[0] == '$')
		why = "subjects starting with $ are NATS's own";
	if (why != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s \"%s\" is not valid: %s", what, v, why),
				 is_stream
				 ? errhint("JetStream stream names are letters, digits, - and _, such as NOTIFY_EVENTS.")
				 : errhint("A subject prefix is one or more tokens separated by dots, such as notify or app.events.")));
	PG_RETURN_VOID();
}

/* ---------------------------------------------------------------------
 * Launcher
 * --------------------------------------------------------------------- */

typedef struct LauncherDb
{
	Oid			dboid;
	BackgroundWorkerHandle *handle;
	TimestampTz started_at;
	TimestampTz not_before;		/* earliest time of the next start */
} LauncherDb;

static LauncherDb launcher_dbs[RELAY_MAX_DATABASES];

static void
launcher_on_exit(int code, Datum arg)
{
	LWLockAcquire(&relay_shared->lock, LW_EXCLUSIVE);
	if (relay_shared->launcher_pid == MyProcPid)
	{
		relay_shared->launcher_pid = 0;
		relay_shared->launcher_latch = NULL;
	}
	LWLockRelease(&relay_shared->lock);
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
	for (int i = 0; i < n; i++)
		if (oids[i] == oid)
			return true;
	return false;
}

static LauncherDb *
launcher_slot(Oid dboid)
{
	LauncherDb *free_slot = NULL;

	for (int i = 0; i < RELAY_MAX_DATABASES; i++)
	{
		if (launcher_dbs[i].dboid == dboid)
			return &launcher_dbs[i];
		if (free_slot == NULL && launcher_dbs[i].dboid == InvalidOid)
			free_slot = &launcher_dbs[i];
	}
	if (free_slot != NULL)
	{
		memset(free_slot, 0, sizeof(LauncherDb));
		free_slot->dboid = dboid;
	}
	return free_slot;
}

void
notify_ext_relay_launcher_main(Datum main_arg)
{
	bool		first = true;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("notify_ext relay launcher");

	LWLockAcquire(&relay_shared->lock, LW_EXCLUSIVE);
	relay_shared->launcher_pid = MyProcPid;
	relay_shared->launcher_latch = MyLatch;
	LWLockRelease(&relay_shared->lock);
	before_shmem_exit(launcher_on_exit, 0);
	memset(launcher_dbs, 0, sizeof(launcher_dbs));

	for (;;)
	{
		Oid		   *dbs = NULL;
		int			ndbs = 0;
		long		timeout = 60000;
		TimestampTz now;
		Oid			want[RELAY_MAX_DATABASES];
		int			nwant = 0;
		HASH_SEQ_STATUS hs;
		RelayDb    *db;

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
			LWLockAcquire(&relay_shared->lock, LW_EXCLUSIVE);
			for (int i = 0; i < ndbs; i++)
			{
				db = db_entry(dbs[i], true);
				if (db != NULL && db->pid == 0)
					db->wanted = true;
			}
			LWLockRelease(&relay_shared->lock);
			first = false;
		}

		/* Databases that want a worker and have none. */
		LWLockAcquire(&relay_shared->lock, LW_SHARED);
		hash_seq_init(&hs, relay_dbs);
		while ((db = hash_seq_search(&hs)) != NULL)
			if (db->wanted && db->pid == 0 && nwant < RELAY_MAX_DATABASES)
				want[nwant++] = db->dboid;
		LWLockRelease(&relay_shared->lock);

		now = GetCurrentTimestamp();
		for (int i = 0; i < RELAY_MAX_DATABASES; i++)
		{
			LauncherDb *ld = &launcher_dbs[i];
			pid_t		wpid;
			BgwHandleStatus st;
			bool		wanted;

			if (ld->handle == NULL)
				continue;
			st = GetBackgroundWorkerPid(ld->handle, &wpid);
			if (st == BGWH_STARTED || st == BGWH_NOT_YET_STARTED)
				continue;
			pfree(ld->handle);
			ld->handle = NULL;
			/*
			 * A worker that left because it had nothing to do gave up
			 * wanted; one that died still wants to run: start it again
			 * soon, later if it keeps dying.
			 */
			LWLockAcquire(&relay_shared->lock, LW_SHARED);
			db = db_entry(ld->dboid, false);
			wanted = db != NULL && db->wanted;
			LWLockRelease(&relay_shared->lock);
			if (!wanted)
				ld->not_before = 0;
			else
				ld->not_before = now + (now - ld->started_at < 10 * USECS_PER_SEC
										? 5 * USECS_PER_SEC : USECS_PER_SEC);
		}

		for (int i = 0; i < nwant; i++)
		{
			Oid			dboid = want[i];
			LauncherDb *ld = launcher_slot(dboid);
			char		name[BGW_MAXLEN];

			if (ld == NULL || ld->handle != NULL)
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
				LWLockAcquire(&relay_shared->lock, LW_EXCLUSIVE);
				db = db_entry(dboid, false);
				if (db != NULL && db->pid == 0)
					db->wanted = false;
				LWLockRelease(&relay_shared->lock);
				ld->dboid = InvalidOid;
				continue;
			}
			snprintf(name, sizeof(name), "notify_ext relay worker for database %u", dboid);
			if (start_worker("notify_ext_relay_worker_main", "notify_ext relay worker", name,
							 ObjectIdGetDatum(dboid), NULL, 0, true, &ld->handle))
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
						(errmsg("notify_ext could not start a relay worker for database %u", dboid),
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
relay_init(void)
{
	static const EventsHooks hooks = {NULL, relay_events_committed};

	event_buffer_add_hooks(&hooks);
	RegisterXactCallback(relay_xact_callback, NULL);
}

void
relay_register_launcher(void)
{
	register_startup_worker("notify_ext_relay_launcher_main", "notify_ext relay launcher", 5);
}
