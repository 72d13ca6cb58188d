/*
 * compat.c: C functions that older versions of the extension's SQL name
 * and the current version no longer has.
 *
 * After the library is updated and before ALTER EXTENSION notify_ext
 * UPDATE, a database still holds the older version's functions; each of
 * these names stays defined so that such a database loads and its
 * functions can be created (CREATE EXTENSION ... VERSION), and tells its
 * caller to update instead of failing to load.
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "settings.h"

#define RETIRED_FUNCTION(symbol, sqlname) \
PG_FUNCTION_INFO_V1(symbol); \
Datum \
symbol(PG_FUNCTION_ARGS) \
{ \
	ereport(ERROR, \
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE), \
			 errmsg("%s() belongs to an older version of notify_ext", sqlname), \
			 errhint("Run ALTER EXTENSION notify_ext UPDATE."))); \
	PG_RETURN_NULL(); \
}

/* 0.1.0 */
RETIRED_FUNCTION(notify_ext_event_partitions, "notify_ext._event_partitions")
RETIRED_FUNCTION(notify_ext_expired_event_partitions, "notify_ext._expired_event_partitions")
RETIRED_FUNCTION(notify_ext_index_has_key_below, "notify_ext._index_has_key_below")
RETIRED_FUNCTION(notify_ext_retention_interval, "notify_ext._retention_interval")
RETIRED_FUNCTION(notify_ext_prune, "notify_ext.prune")
RETIRED_FUNCTION(notify_ext_inbox_notify, "notify_ext._inbox_notify")

/*
 * notify_ext._retention_settings() of 0.1.0, which its install script
 * calls: the retention settings as jsonb.
 */
PG_FUNCTION_INFO_V1(notify_ext_retention_settings);
Datum
notify_ext_retention_settings(PG_FUNCTION_ARGS)
{
	char	   *json = psprintf("{\"event_retention\": \"%s\", \"read_notification_retention\": \"%s\", "
							"\"delivery_retention\": \"%s\", \"partitions_ahead\": %d, "
							"\"prune_batch_size\": %d, \"prune_max_batches\": %d, "
							"\"prune_lock_timeout_ms\": %d}",
							notify_ext_event_retention, notify_ext_read_notification_retention,
							notify_ext_delivery_retention, notify_ext_partitions_ahead,
							notify_ext_prune_batch_size, notify_ext_prune_max_batches,
							notify_ext_prune_lock_timeout_ms);

	return DirectFunctionCall1(jsonb_in, CStringGetDatum(json));
}
