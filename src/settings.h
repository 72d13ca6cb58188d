/*
 * settings.h: the settings of notify_ext, defined with their GUCs in
 * notify_ext.c.
 */
#ifndef NOTIFY_EXT_SETTINGS_H
#define NOTIFY_EXT_SETTINGS_H

/* Events */
extern int	notify_ext_event_buffer_kb;

/* Who is calling */
extern char *notify_ext_app_role;
extern char *notify_ext_principal_guc;
extern char *notify_ext_permission_function;

/* Consumers */
extern char *notify_ext_reply_key_grace;

/* Retention */
extern char *notify_ext_event_retention;
extern char *notify_ext_read_notification_retention;
extern char *notify_ext_delivery_retention;
extern int	notify_ext_partitions_ahead;
extern int	notify_ext_prune_batch_size;
extern int	notify_ext_prune_max_batches;
extern int	notify_ext_prune_lock_timeout_ms;

/* Webhooks */
extern int	webhook_timeout_ms;
extern int	webhook_disable_after_s;
extern int	webhook_concurrency;
extern int	webhook_endpoint_concurrency;
extern char *webhook_retry_schedule;
extern char *webhook_denied_networks;

/* Relays */
extern int	relay_max_in_flight;
extern int	relay_ack_timeout_ms;
extern int	relay_connect_timeout_ms;
extern int	relay_retry_max_ms;
extern int	relay_duplicate_window_s;

#define WEBHOOK_DEFAULT_RETRY_SCHEDULE "5s, 5min, 30min, 2h, 5h, 10h, 10h"

#endif							/* NOTIFY_EXT_SETTINGS_H */
