/*
 * cron.c: one pg_cron call in the database pg_cron works in, for
 * schedule_pruning() and unschedule_pruning().
 *
 * pg_cron keeps its jobs in the database named by cron.database_name.  A
 * backend cannot switch databases, so when that is not the current one a
 * short-lived background worker connects there as the calling role, makes
 * the call, commits, and hands the result (or the error) back through a
 * dynamic shared memory segment.
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/dsm.h"
#include "storage/ipc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "extension.h"
#include "shmem.h"

PGDLLEXPORT void notify_ext_cron_main(Datum arg);

#define CRON_TEXT 1024

typedef enum CronOp
{
	CRON_SCHEDULE = 1,
	CRON_UNSCHEDULE = 2
} CronOp;

typedef struct CronCall
{
	/* in */
	Oid			dboid;
	Oid			useroid;
	CronOp		op;
	char		cron_db[NAMEDATALEN];
	char		job_name[CRON_TEXT];
	char		schedule[CRON_TEXT];
	char		command[CRON_TEXT];
	char		target_db[NAMEDATALEN];
	/* out */
	bool		done;
	bool		failed;
	int64		result;
	int			sqlerrcode;
	char		message[CRON_TEXT];
	char		detail[CRON_TEXT];
	char		hint[CRON_TEXT];
} CronCall;

static void
copy_text(char *dst, const char *src, const char *what)
{
	if (strlen(src) >= CRON_TEXT)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s is too long (%zu bytes, at most %d)", what, strlen(src), CRON_TEXT - 1)));
	strlcpy(dst, src, CRON_TEXT);
}

/*
 * notify_ext._cron_call(op text, job_name text, schedule text, command text)
 * returns bigint
 *
 * op 'schedule': cron.schedule_in_database(job_name, schedule, command,
 * current_database()) in the database of cron.database_name; returns the
 * job id.  op 'unschedule': removes the caller's jobs of that name there;
 * returns how many.  Runs as the current user, and commits on its own: the
 * caller's transaction cannot roll it back.
 */
PG_FUNCTION_INFO_V1(notify_ext_cron_call);
Datum
notify_ext_cron_call(PG_FUNCTION_ARGS)
{
	char	   *op;
	const char *cron_db = GetConfigOption("cron.database_name", true, false);
	Oid			dboid;
	dsm_segment *seg;
	CronCall   *call;
	BackgroundWorkerHandle *handle;
	char		name[BGW_MAXLEN];
	BgwHandleStatus status;
	CronCall	out;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("op and job_name must not be null")));
	op = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (cron_db == NULL || cron_db[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_cron is not loaded"),
				 errhint("Install postgresql-15-cron, add pg_cron to shared_preload_libraries, restart, and CREATE EXTENSION pg_cron in the database named by cron.database_name.")));
	dboid = get_database_oid(cron_db, true);
	if (!OidIsValid(dboid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("database \"%s\" named by cron.database_name does not exist", cron_db),
				 errhint("Create it and run CREATE EXTENSION pg_cron there, or point cron.database_name at a database that has pg_cron.")));

	seg = dsm_create(sizeof(CronCall), 0);
	call = dsm_segment_address(seg);
	memset(call, 0, sizeof(CronCall));
	call->dboid = dboid;
	call->useroid = GetUserId();
	strlcpy(call->cron_db, cron_db, NAMEDATALEN);
	strlcpy(call->target_db, get_database_name(MyDatabaseId), NAMEDATALEN);
	copy_text(call->job_name, text_to_cstring(PG_GETARG_TEXT_PP(1)), "job_name");
	if (strcmp(op, "schedule") == 0)
	{
		if (PG_ARGISNULL(2) || PG_ARGISNULL(3))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("schedule and command must not be null")));
		call->op = CRON_SCHEDULE;
		copy_text(call->schedule, text_to_cstring(PG_GETARG_TEXT_PP(2)), "schedule");
		copy_text(call->command, text_to_cstring(PG_GETARG_TEXT_PP(3)), "command");
	}
	else if (strcmp(op, "unschedule") == 0)
		call->op = CRON_UNSCHEDULE;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown pg_cron operation \"%s\"", op)));

	snprintf(name, sizeof(name), "notify_ext pg_cron call for %s", call->target_db);
	if (!start_worker("notify_ext_cron_main", "notify_ext pg_cron call", name,
					  UInt32GetDatum(dsm_segment_handle(seg)), NULL, 0, true, &handle))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("could not start a background worker to reach pg_cron in database \"%s\"", cron_db),
				 errhint("Raise max_worker_processes, or run the pg_cron call given in docs/retention.md in database \"%s\" yourself.", cron_db)));
	status = WaitForBackgroundWorkerShutdown(handle);
	memcpy(&out, call, sizeof(CronCall));
	dsm_detach(seg);

	if (status != BGWH_STOPPED || !out.done)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the background worker calling pg_cron in database \"%s\" ended without an answer", cron_db),
				 errhint("See the server log.")));
	if (out.failed)
		ereport(ERROR,
				(errcode(out.sqlerrcode),
				 errmsg("%s", out.message),
				 out.detail[0] ? errdetail("%s", out.detail) : 0,
				 out.hint[0] ? errhint("%s", out.hint) : 0));
	PG_RETURN_INT64(out.result);
}

void
notify_ext_cron_main(Datum arg)
{
	dsm_segment *seg;
	CronCall   *call;
	MemoryContext cxt;

	/* Terminate only at CHECK_FOR_INTERRUPTS(), never inside a commit. */
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	seg = dsm_attach(DatumGetUInt32(arg));
	if (seg == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("notify_ext pg_cron call: could not attach to its shared memory segment")));
	call = dsm_segment_address(seg);
	worker_connect(call->dboid, call->useroid);

	cxt = CurrentMemoryContext;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PG_TRY();
	{
		Datum		args[4];
		Oid			argtypes[4] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID};
		bool		isnull;
		int			rc;

		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		PushActiveSnapshot(GetTransactionSnapshot());
		pgstat_report_activity(STATE_RUNNING, "notify_ext pg_cron call");

		rc = SPI_execute("SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron'", true, 1);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "SPI_execute failed: %s", SPI_result_code_string(rc));
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("pg_cron is not installed in database \"%s\" (named by cron.database_name)",
							call->cron_db),
					 errhint("Run CREATE EXTENSION pg_cron in database \"%s\".", call->cron_db)));

		args[0] = CStringGetTextDatum(call->job_name);
		if (call->op == CRON_SCHEDULE)
		{
			args[1] = CStringGetTextDatum(call->schedule);
			args[2] = CStringGetTextDatum(call->command);
			args[3] = CStringGetTextDatum(call->target_db);
			rc = SPI_execute_with_args("SELECT cron.schedule_in_database($1, $2, $3, $4)",
									   4, argtypes, args, NULL, false, 1);
		}
		else
			rc = SPI_execute_with_args("SELECT count(cron.unschedule(j.jobid)) FROM cron.job j "
									   "WHERE j.jobname = $1 AND j.username = current_user",
									   1, argtypes, args, NULL, false, 1);
		if (rc != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "pg_cron call failed: %s", SPI_result_code_string(rc));
		call->result = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
												   1, &isnull));
		if (isnull)
			elog(ERROR, "pg_cron call returned null");

		SPI_finish();
		PopActiveSnapshot();
		CommitTransactionCommand();
		call->done = true;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		call->failed = true;
		call->sqlerrcode = edata->sqlerrcode;
		strlcpy(call->message, edata->message ? edata->message : "pg_cron call failed", CRON_TEXT);
		strlcpy(call->detail, edata->detail ? edata->detail : "", CRON_TEXT);
		strlcpy(call->hint, edata->hint ? edata->hint : "", CRON_TEXT);
		call->done = true;
		AbortCurrentTransaction();
	}
	PG_END_TRY();
	pgstat_report_activity(STATE_IDLE, NULL);
	dsm_detach(seg);
	proc_exit(0);
}
