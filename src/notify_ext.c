/*
 * notify_ext.c: the module's entry point and its settings.
 *
 * _PG_init defines every setting, registers each subsystem's callbacks
 * and, when the library is preloaded, its shared memory and the webhook
 * launcher.  Settings given as intervals ('7 days', 'PT36H') stay text and
 * are checked by one hook with PostgreSQL's interval parser: the unit
 * settings of PostgreSQL would refuse '7 days'.
 */
#include "postgres.h"

#include <limits.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/datetime.h"
#include "utils/guc.h"
#include "utils/varlena.h"

#include "capture.h"
#include "event_buffer.h"
#include "extension.h"
#include "launcher.h"
#include "lock_guard.h"
#include "settings.h"
#include "ordering.h"
#include "principal.h"
#include "resource_path.h"
#include "shmem.h"
#include "summarizer.h"
#include "webhook.h"
#include "webhook_policy.h"
#include "wakeup.h"
#include "commit_stats.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

int			notify_ext_event_buffer_kb = 65536;
char	   *notify_ext_app_role = NULL;
char	   *notify_ext_principal_guc = NULL;
char	   *notify_ext_permission_function = NULL;
char	   *notify_ext_reply_key_grace = NULL;
char	   *notify_ext_event_retention = NULL;
char	   *notify_ext_read_notification_retention = NULL;
char	   *notify_ext_delivery_retention = NULL;
int			notify_ext_partitions_ahead = 7;
int			notify_ext_prune_batch_size = 5000;
int			notify_ext_prune_max_batches = 100;
int			notify_ext_prune_lock_timeout_ms = 100;
int			webhook_timeout_ms = 15000;
int			webhook_disable_after_s = 5 * 24 * 3600;
int			webhook_concurrency = 128;
int			webhook_endpoint_concurrency = 32;
char	   *webhook_retry_schedule = NULL;
char	   *webhook_denied_networks = NULL;
int			relay_max_in_flight = 4096;
int			relay_ack_timeout_ms = 10000;
int			relay_connect_timeout_ms = 2000;
int			relay_retry_max_ms = 30000;
int			relay_duplicate_window_s = 120;

/*
 * Parses an interval as interval_in() does, without raising errors (check
 * hooks may run in the postmaster).
 */
static bool
interval_setting(const char *value, Interval *result)
{
	struct pg_itm_in tt;
	int			dtype;
	int			nf;
	int			dterr;
	char	   *field[MAXDATEFIELDS];
	int			ftype[MAXDATEFIELDS];
	char		workbuf[256];
	char	   *copy;

	if (value == NULL)
		return false;
	memset(&tt, 0, sizeof(tt));
	dterr = ParseDateTime(value, workbuf, sizeof(workbuf), field, ftype, MAXDATEFIELDS, &nf);
	if (dterr == 0)
		dterr = DecodeInterval(field, ftype, nf, INTERVAL_FULL_RANGE, &dtype, &tt);
	if (dterr == DTERR_BAD_FORMAT)
	{
		memset(&tt, 0, sizeof(tt));
		copy = pstrdup(value);
		dterr = DecodeISO8601Interval(copy, &dtype, &tt);
		pfree(copy);
	}
	if (dterr != 0 || dtype != DTK_DELTA)
		return false;
	return itmin2interval(&tt, result) == 0;
}

/* Interval settings are at most this long (timestamps must stay in range). */
#define INTERVAL_SETTING_MAX_YEARS 100

/* Months count as 30 days, as in interval comparison. */
static double
interval_usecs(const Interval *iv)
{
	return (double) iv->month * DAYS_PER_MONTH * USECS_PER_DAY +
		(double) iv->day * USECS_PER_DAY + (double) iv->time;
}

static bool
check_interval(char **newval, bool zero_ok, const char *hint)
{
	Interval	iv;

	if (!interval_setting(*newval, &iv))
	{
		GUC_check_errcode(ERRCODE_INVALID_PARAMETER_VALUE);
		GUC_check_errmsg("\"%s\" is not an interval", *newval ? *newval : "");
		GUC_check_errhint("%s", hint);
		return false;
	}
	if (interval_usecs(&iv) > INTERVAL_SETTING_MAX_YEARS * DAYS_PER_YEAR * USECS_PER_DAY)
	{
		GUC_check_errcode(ERRCODE_INVALID_PARAMETER_VALUE);
		GUC_check_errmsg("interval \"%s\" is too long", *newval);
		GUC_check_errhint("Give at most %d years.", INTERVAL_SETTING_MAX_YEARS);
		return false;
	}
	if (zero_ok ? interval_usecs(&iv) < 0 : interval_usecs(&iv) <= 0)
	{
		GUC_check_errcode(ERRCODE_INVALID_PARAMETER_VALUE);
		GUC_check_errmsg(zero_ok ? "interval \"%s\" is negative" : "interval \"%s\" is not positive",
						 *newval);
		GUC_check_errhint("%s", hint);
		return false;
	}
	return true;
}

/*
 * notify_ext.permission_function: empty, or the name of a function,
 * schema-qualified or not, without its argument list.
 */
static bool
check_permission_function(char **newval, void **extra, GucSource source)
{
	char	   *copy;
	List	   *names;
	bool		ok;

	if (*newval == NULL || (*newval)[0] == '\0')
		return true;
	copy = pstrdup(*newval);
	ok = strchr(*newval, '(') == NULL &&
		SplitIdentifierString(copy, '.', &names) && list_length(names) <= 2;
	if (!ok)
	{
		GUC_check_errcode(ERRCODE_INVALID_PARAMETER_VALUE);
		GUC_check_errmsg("\"%s\" is not a function name", *newval);
		GUC_check_errhint("Name a function (principal text, resource_id text, level text) returns boolean, e.g. app.may_access, without its argument list.");
	}
	return ok;
}

static bool
check_retention(char **newval, void **extra, GucSource source)
{
	return check_interval(newval, false, "Give a positive interval such as '7 days' or '36 hours'.");
}

static bool
check_grace(char **newval, void **extra, GucSource source)
{
	return check_interval(newval, true, "Give an interval such as '1 hour', or 0 for none.");
}

static void
define_settings(void)
{
	DefineCustomIntVariable("notify_ext.event_buffer",
							"Memory a transaction may use for its events before writing them ahead of commit.",
							"Events are numbered and written when their transaction commits; a transaction "
							"that records more than this writes the excess early and renumbers it at commit.",
							&notify_ext_event_buffer_kb,
							65536, 64, MAX_KILOBYTES,
							PGC_USERSET, GUC_UNIT_KB,
							NULL, NULL, NULL);

	DefineCustomStringVariable("notify_ext.app_role",
							   "Role whose members may act for end users and make service calls.",
							   "Members of this role may SET notify_ext.principal; superusers always may.",
							   &notify_ext_app_role,
							   "",
							   PGC_SUSET, 0,
							   NULL, principal_assign_hook, NULL);
	DefineCustomStringVariable("notify_ext.principal",
							   "End user the application acts for (members of notify_ext.app_role only).",
							   "Empty means current_user. Any other role setting it to another name is refused.",
							   &notify_ext_principal_guc,
							   "",
							   PGC_USERSET, 0,
							   principal_check_hook, principal_assign_hook, NULL);
	DefineCustomStringVariable("notify_ext.permission_function",
							   "Function (principal text, resource_id text, level text) returns boolean deciding permissions instead of the built-in grants.",
							   "Empty uses the grants made with notify_ext.grant_permission().",
							   &notify_ext_permission_function,
							   "",
							   PGC_SUSET, 0,
							   check_permission_function, NULL, NULL);

	DefineCustomStringVariable("notify_ext.reply_key_grace",
							   "How long replies signed with a rotated-out key stay valid.",
							   "After notify_ext.rotate_reply_key(), acknowledgements signed with the "
							   "previous key are accepted for this long.",
							   &notify_ext_reply_key_grace,
							   "1 hour",
							   PGC_SUSET, 0,
							   check_grace, NULL, NULL);

	DefineCustomStringVariable("notify_ext.event_retention",
							   "How long events are kept in the event log.",
							   "An interval. notify_ext.prune() drops the daily partitions of the event log whose "
							   "whole day is older than this.",
							   &notify_ext_event_retention,
							   "7 days",
							   PGC_SUSET, 0,
							   check_retention, NULL, NULL);
	DefineCustomStringVariable("notify_ext.read_notification_retention",
							   "How long read personal notifications are kept.",
							   "An interval, counted from the notification's ts. Unread notifications are never pruned.",
							   &notify_ext_read_notification_retention,
							   "90 days",
							   PGC_SUSET, 0,
							   check_retention, NULL, NULL);
	DefineCustomStringVariable("notify_ext.delivery_retention",
							   "How long webhook delivery records are kept.",
							   "An interval, counted from the record's created_at.",
							   &notify_ext_delivery_retention,
							   "14 days",
							   PGC_SUSET, 0,
							   check_retention, NULL, NULL);
	DefineCustomIntVariable("notify_ext.partitions_ahead",
							"Days ahead for which notify_ext.prune() keeps partitions of the event log ready.",
							NULL,
							&notify_ext_partitions_ahead,
							7, 1, 366,
							PGC_SUSET, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("notify_ext.prune_batch_size",
							"Rows notify_ext.prune() deletes per statement (notifications, deliveries, stray events).",
							NULL,
							&notify_ext_prune_batch_size,
							5000, 100, 1000000,
							PGC_SUSET, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("notify_ext.prune_max_batches",
							"Batches of each kind one notify_ext.prune() call deletes at most; the rest waits for the next call.",
							NULL,
							&notify_ext_prune_max_batches,
							100, 1, 1000000,
							PGC_SUSET, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("notify_ext.prune_lock_timeout",
							"How long notify_ext.prune() tries to get the lock to drop or attach a partition.",
							"It retries NOWAIT for this long, then waits once for at most this long; "
							"if it still has no lock it leaves the partition for the next run. 0 means one NOWAIT try.",
							&notify_ext_prune_lock_timeout_ms,
							100, 0, 10000,
							PGC_SUSET, GUC_UNIT_MS,
							NULL, NULL, NULL);


	DefineCustomIntVariable("notify_ext.webhook_timeout",
							"How long a webhook endpoint may take to answer one delivery.",
							"A delivery (or token request) that has not completed by then "
							"fails and is retried on the schedule of notify_ext.webhook_retry_schedule.",
							&webhook_timeout_ms,
							15000, 100, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomStringVariable("notify_ext.webhook_retry_schedule",
							   "Delays before the retries of a failed webhook delivery.",
							   "A comma-separated list of delays (ms, s, min, h, d; a bare number is "
							   "milliseconds): the first retry comes that long after the first failure, "
							   "and so on.  Each delay gets up to 20% of random jitter either way; a "
							   "Retry-After header replaces it.  After the last, the delivery is given up.",
							   &webhook_retry_schedule,
							   WEBHOOK_DEFAULT_RETRY_SCHEDULE,
							   PGC_SIGHUP, 0,
							   webhook_check_retry_schedule, webhook_assign_retry_schedule, NULL);
	DefineCustomIntVariable("notify_ext.webhook_disable_after",
							"How long a webhook may fail continuously before it is disabled.",
							"When every attempt to deliver to a webhook has failed for this long, the "
							"webhook is disabled and its creator gets a WEBHOOK_DISABLED notification.",
							&webhook_disable_after_s,
							5 * 24 * 3600, 1, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);
	DefineCustomIntVariable("notify_ext.webhook_concurrency",
							"Deliveries one database's webhook worker sends at the same time.",
							NULL,
							&webhook_concurrency,
							128, 1, 10000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("notify_ext.webhook_endpoint_concurrency",
							"Deliveries to one webhook in flight at the same time.",
							"While other webhooks have deliveries waiting, a webhook gets at most "
							"its share of notify_ext.webhook_concurrency, if that is less.",
							&webhook_endpoint_concurrency,
							32, 1, 10000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomStringVariable("notify_ext.webhook_denied_networks",
							   "Networks that webhooks may not reach, on top of link-local and cloud metadata addresses.",
							   "A comma-separated list of networks in CIDR notation, such as "
							   "10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7.  Checked when a webhook "
							   "or auth config is created and on every address the worker connects to.",
							   &webhook_denied_networks,
							   "",
							   PGC_SUSET, 0,
							   webhook_check_denied_networks, webhook_assign_denied_networks, NULL);

	DefineCustomIntVariable("notify_ext.relay_max_in_flight",
							"Messages one relay publishes ahead of their PubAcks.",
							"A relay publishes asynchronously, pipelined; it stops reading events "
							"while this many messages wait for their acknowledgement.",
							&relay_max_in_flight,
							4096, 1, 1000000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("notify_ext.relay_ack_timeout",
							"How long a relay waits for the PubAck of a message.",
							"A PubAck that has not come by then ends the relay's connection; the relay "
							"connects again and publishes from its position, and JetStream drops the repeats.",
							&relay_ack_timeout_ms,
							10000, 100, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("notify_ext.relay_connect_timeout",
							"How long a relay waits for a NATS server to accept a connection.",
							NULL,
							&relay_connect_timeout_ms,
							2000, 100, 600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("notify_ext.relay_retry_max",
							"The longest wait before a failing relay tries again.",
							"A relay whose connection or publishing failed tries again after 0.5 s, "
							"doubling the wait after each failure up to this.",
							&relay_retry_max_ms,
							30000, 500, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("notify_ext.relay_duplicate_window",
							"The duplicate window of the streams that relays create.",
							"For create_relay(..., ensure_stream => true): JetStream drops a message "
							"whose Nats-Msg-Id it has stored within this window.",
							&relay_duplicate_window_s,
							120, 1, 7 * 24 * 3600,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);
}

void
_PG_init(void)
{
	webhook_policy_init();
	define_settings();
	MarkGUCPrefixReserved("notify_ext");

	principal_init();
	resource_path_init();
	capture_init();
	event_buffer_init();
	wakeup_init();
	launcher_init();
	commit_stats_init();
	lock_guard_init();

	if (!process_shared_preload_libraries_in_progress)
		return;
	notify_ext_preloaded = true;
	shmem_add(ordering_shmem_size, ordering_shmem_init);
	shmem_add(resource_path_shmem_size, resource_path_shmem_init);
	shmem_add(wakeup_shmem_size, wakeup_shmem_init);
	shmem_add(commit_stats_shmem_size, commit_stats_shmem_init);
	shmem_add(summarizer_shmem_size, summarizer_shmem_init);
	shmem_add(launcher_shmem_size, launcher_shmem_init);
	shmem_install_hooks();
	launcher_register();
}
