/*
 * webhook.h: webhook delivery (see docs/webhooks.md).
 *
 * webhook.c
 *   The SQL-callable helpers _webhooks_changed() and
 *   _webhook_worker_available(); the retry schedule setting.
 *
 * webhook_worker.c
 *   notify_ext_webhook_worker_main(): the delivery worker of one database,
 *   started by the launcher (launcher.c).
 */
#ifndef NOTIFY_EXT_WEBHOOK_H
#define NOTIFY_EXT_WEBHOOK_H

#include "postgres.h"

#include "utils/guc.h"

/* The parsed retry schedule: delays after the 1st, 2nd, ... failure. */
extern int	webhook_nretries;
extern const int *webhook_retry_delays_ms;

extern bool webhook_check_retry_schedule(char **newval, void **extra, GucSource source);
extern void webhook_assign_retry_schedule(const char *newval, void *extra);

extern PGDLLEXPORT void notify_ext_webhook_worker_main(Datum main_arg);

#endif							/* NOTIFY_EXT_WEBHOOK_H */
