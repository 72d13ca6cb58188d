#!/usr/bin/env bash
# Builds and installs notify_ext, starts a throwaway cluster in .run/, shows
# tracked tables recording events, an application event, a stream consumer,
# the inbox and pruning, then stops the cluster.  Safe to run again: each
# run starts from a fresh cluster.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DEMO_DB=notify_ext_demo

ensure_packages
build_install
set_run_dir .run
trap cluster_stop EXIT
cluster_init "$DEMO_DB"
cluster_start
pg_create_db "$DEMO_DB" >/dev/null

log "running the demo in database $DEMO_DB"
echo
pg_psql -d "$DEMO_DB" --echo-queries <<'SQL'
\pset footer off
\pset null '(null)'
CREATE EXTENSION notify_ext;

\echo '-- 1. A resource tree: project acme > collection acme/raw'
SELECT notify_ext.register_resource('acme', 'project') \gset
SELECT notify_ext.register_resource('acme/raw', 'collection', 'acme') \gset

\echo
\echo '-- 2. Track a table: each row becomes a resource under its collection'
CREATE TABLE public.datasets (
    id            text PRIMARY KEY,
    name          text NOT NULL,
    collection_id text NOT NULL,
    row_count     bigint NOT NULL DEFAULT 0
);
SELECT notify_ext.track('public.datasets', 'dataset', 'id', 'collection_id') \gset

\echo
\echo '-- 3. Change rows: one event per changed row, in the same transaction'
INSERT INTO public.datasets (id, name, collection_id)
VALUES ('d1', 'Sales 2025', 'acme/raw'), ('d2', 'Weather', 'acme/raw');
UPDATE public.datasets SET name = 'Sales 2025 (final)', row_count = 1200 WHERE id = 'd1';
\echo '-- (the next UPDATE changes nothing and records nothing)'
UPDATE public.datasets SET name = name WHERE id = 'd2';
DELETE FROM public.datasets WHERE id = 'd2';

\echo
\echo '-- 4. An application event about a resource'
SELECT notify_ext.publish('jobs', 'JOB_PROCESSED', '{"job": 17, "rows": 1200}', 'd1') \gset

\echo
\echo '-- 5. The event log'
SELECT seq, stream, operation, resource_id, resource_path, changed, payload
  FROM notify_ext.events ORDER BY seq;

\echo
\echo '-- 6. One event as consumers and webhooks receive it'
\pset format unaligned
\pset tuples_only on
SELECT jsonb_pretty(message)
  FROM notify_ext.events WHERE operation = 'dataset.update' ORDER BY seq LIMIT 1;
\pset format aligned
\pset tuples_only off

\echo
\echo '-- 7. Where a resource sits in the tree'
SELECT notify_ext.resource_path('d1');

\echo
\echo '-- 8. A stream consumer of the project: fetch a batch, acknowledge it with the signed replies'
SELECT notify_ext.create_stream_consumer('acme', deliver => 'all') AS consumer \gset
CREATE TEMP TABLE batch AS SELECT * FROM notify_ext.get_event_message_batch(:'consumer', 10);
SELECT seq, message->>'operation' AS operation, delivery_count, left(reply, 12) || '...' AS reply FROM batch;
SELECT notify_ext.acknowledge_message_batch(
  (SELECT jsonb_agg(jsonb_build_object('reply', reply, 'salt', salt, 'hmac', hmac)) FROM batch)) AS acknowledged;
SELECT notify_ext.consumer_info(:'consumer') - 'consumer' - 'created_at' AS consumer_state;

\echo
\echo '-- 9. A personal notification, and the inbox of its recipient'
SELECT notify_ext.create_notification(current_user, 'DATASET_READY', 'Sales 2025 is ready', '{"dataset": "d1"}') AS notification_id \gset
SELECT jsonb_pretty(notify_ext.list_notifications() #- '{items,0,ts}');
SELECT notify_ext.unread_count();

\echo
\echo '-- 10. Retention: prune() drops expired days and reports what it removed'
SELECT notify_ext.prune();
SQL
echo

cluster_stop
trap - EXIT
log "demo finished"
