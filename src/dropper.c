/*
 * dropper.c: dropping the day partitions prune() detached, once prune() has
 * committed (see docs/retention.md, "Dropping expired days").
 *
 * Removing the files of a large table at commit takes a while; done by
 * prune() itself, it would happen while prune() still holds ACCESS
 * EXCLUSIVE on event_log, stalling every writer.  A short-lived background
 * worker, registered when prune()'s transaction commits, drops them
 * instead, holding no lock anyone else needs.
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "tcop/tcopprot.h"
#include "utils/snapmgr.h"

#include "extension.h"
#include "shmem.h"

PGDLLEXPORT void notify_ext_dropper_main(Datum arg);

typedef struct DropperArgs
{
	Oid			dboid;
	Oid			useroid;
} DropperArgs;

/*
 * The dropper is registered once the requesting transaction has committed:
 * the postmaster forks it then, so neither the fork nor the worker's start
 * competes for CPU with the writers while prune() runs, and a transaction
 * that rolls back starts nothing.  The worker is fully described while the
 * transaction is open (naming it needs the catalogs, which the commit
 * callback must not read).
 */
static DropperArgs pending_dropper;
static char pending_dropper_name[BGW_MAXLEN];
static bool dropper_pending = false;
static bool dropper_callback_registered = false;

static void
dropper_xact_callback(XactEvent event, void *arg)
{
	BackgroundWorkerHandle *handle;

	if (!dropper_pending)
		return;
	switch (event)
	{
		case XACT_EVENT_COMMIT:
			dropper_pending = false;
			if (!start_worker("notify_ext_dropper_main", "notify_ext expired partition dropper",
							  pending_dropper_name, (Datum) 0, &pending_dropper,
							  sizeof(pending_dropper), false, &handle))
				ereport(LOG,
						(errmsg("notify_ext: no background worker slot to drop expired event partitions; the next notify_ext.prune() tries again")));
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			/* Nothing was detached, or the next prune() finds the tables. */
			dropper_pending = false;
			break;
		default:
			break;
	}
}

/*
 * notify_ext._start_event_table_dropper() returns boolean
 *
 * Arranges for a background worker to start once the current transaction
 * has committed; it calls notify_ext._drop_detached_event_tables() in its
 * own transaction, as the current user.  Returns true (the request is
 * recorded; if no worker slot is free at commit, the server log says so
 * and the tables stay for the next prune() run).
 */
static void start_event_table_dropper(void);

PG_FUNCTION_INFO_V1(notify_ext_start_event_table_dropper);
Datum
notify_ext_start_event_table_dropper(PG_FUNCTION_ARGS)
{
	start_event_table_dropper();
	PG_RETURN_BOOL(true);
}

static void
start_event_table_dropper(void)
{
	if (!dropper_callback_registered)
	{
		RegisterXactCallback(dropper_xact_callback, NULL);
		dropper_callback_registered = true;
	}
	memset(&pending_dropper, 0, sizeof(pending_dropper));
	pending_dropper.dboid = MyDatabaseId;
	pending_dropper.useroid = GetUserId();
	snprintf(pending_dropper_name, sizeof(pending_dropper_name),
			 "notify_ext expired partition dropper for %s", get_database_name(MyDatabaseId));
	dropper_pending = true;
}

void
notify_ext_dropper_main(Datum arg)
{
	DropperArgs args;
	int			rc;

	memcpy(&args, MyBgworkerEntry->bgw_extra, sizeof(args));
	/* Terminate only at CHECK_FOR_INTERRUPTS(), never inside a commit. */
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	worker_connect(args.dboid, args.useroid);

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "notify_ext: dropping detached event partitions");
	rc = SPI_execute("SELECT notify_ext._drop_detached_event_tables()", false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute failed: %s", SPI_result_code_string(rc));
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
	proc_exit(0);
}
