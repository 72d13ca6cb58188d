/*
 * relay.h: relays of the event log to NATS JetStream (see docs/relays.md).
 *
 * relay.c
 *   The SQL-callable helpers: _relays_changed(), _relay_worker_available(),
 *   the checks of server URLs and names.
 *
 * relay_worker.c
 *   notify_ext_relay_worker_main(): the relay worker of one database,
 *   started by the launcher (launcher.c).
 */
#ifndef NOTIFY_EXT_RELAY_H
#define NOTIFY_EXT_RELAY_H

#include "postgres.h"

extern PGDLLEXPORT void notify_ext_relay_worker_main(Datum main_arg);

#endif							/* NOTIFY_EXT_RELAY_H */
