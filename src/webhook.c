/*
 * webhook.c: what the SQL of webhooks asks of C outside the delivery
 * worker: telling the launcher (launcher.c) that webhooks changed, whether
 * delivery workers can run, and the retry schedule setting.
 *
 * Secrets of webhooks are sealed by keys.c; delivery is webhook_worker.c.
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/guc.h"

#include "launcher.h"
#include "webhook.h"

int			webhook_nretries = 0;
const int  *webhook_retry_delays_ms = NULL;

#define MAX_RETRIES 100

typedef struct RetrySchedule
{
	int			n;
	int			delays_ms[FLEXIBLE_ARRAY_MEMBER];
} RetrySchedule;

PG_FUNCTION_INFO_V1(notify_ext_webhooks_changed);
Datum
notify_ext_webhooks_changed(PG_FUNCTION_ARGS)
{
	db_workers_changed(DB_WORKER_WEBHOOKS);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(notify_ext_webhook_worker_available);
Datum
notify_ext_webhook_worker_available(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(launcher_available());
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
