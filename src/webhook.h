/*
 * webhook.h: webhook delivery (see docs/webhooks.md).
 *
 * webhook.c
 *   webhook_init(): GUCs, the commit hooks, and (when preloaded) the shared
 *     memory and the launcher background worker; called from _PG_init.
 *   The SQL-callable helpers: sealing secrets, _webhooks_changed().
 *   notify_ext_webhook_launcher_main(): the launcher, which starts one delivery
 *     worker per database that has active webhooks.
 *
 * webhook_worker.c
 *   notify_ext_webhook_worker_main(): the delivery worker of one database.
 */
#ifndef NOTIFY_EXT_WEBHOOK_H
#define NOTIFY_EXT_WEBHOOK_H

#include "postgres.h"

#include "storage/latch.h"
#include "storage/spin.h"
#include "utils/timestamp.h"

/* Databases that can have a webhook worker at the same time. */
#define WEBHOOK_MAX_DATABASES 128

/* One database the launcher knows of. */
typedef struct WebhookDb
{
	Oid			dboid;			/* InvalidOid: free slot */
	bool		wanted;			/* run a worker: active webhooks, or not checked yet */
	pid_t		pid;			/* its worker; 0 when none runs */
	Latch	   *latch;			/* its worker's latch (in its PGPROC) */
	uint64		generation;		/* bumped at every commit that changed webhooks */
} WebhookDb;

typedef struct WebhookShared
{
	slock_t		mutex;
	pid_t		launcher_pid;
	Latch	   *launcher_latch;
	WebhookDb	dbs[WEBHOOK_MAX_DATABASES];
} WebhookShared;

extern WebhookShared *webhook_shared;


/* The parsed retry schedule: delays after the 1st, 2nd, ... failure. */
extern int	webhook_nretries;
extern const int *webhook_retry_delays_ms;


#include "utils/guc.h"
extern bool webhook_check_retry_schedule(char **newval, void **extra, GucSource source);
extern void webhook_assign_retry_schedule(const char *newval, void *extra);
extern void webhook_init(void);
extern void webhook_register_launcher(void);
extern Size webhook_shmem_size(void);
extern void webhook_shmem_init(void);
extern WebhookDb *webhook_db_slot(Oid dboid, bool create);

extern PGDLLEXPORT void notify_ext_webhook_launcher_main(Datum main_arg);
extern PGDLLEXPORT void notify_ext_webhook_worker_main(Datum main_arg);

#endif							/* NOTIFY_EXT_WEBHOOK_H */
