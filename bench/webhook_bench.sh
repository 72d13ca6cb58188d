#!/usr/bin/env bash
# Webhook delivery throughput: deliveries per second from the webhook worker
# to a local sink that answers 200 at once, against the sink's own rate
# measured with a plain client (Python asyncio, keep-alive connections) in
# the same run.  Prints the figures; never fails because of a timing.
#
#   1. The sink's own rate: bench/webhook_sink.py client, BENCH_CONNECTIONS
#      connections, BENCH_CLIENT_SECONDS seconds, posting an event JSON.
#   2. notify_ext: BENCH_EVENTS events are published in one transaction
#      (JOB_PROCESSED, a small payload) to one webhook on the sink; the time
#      is from the commit to the last request the sink receives, and to the
#      moment every delivery is recorded (queue empty).
#
# Connection: the usual libpq variables (PGHOST, PGPORT, PGUSER, PGDATABASE).
# PGDATABASE (default postgres) is only used to create and drop a database
# of its own, $BENCH_DB.  The server must have notify_ext in
# shared_preload_libraries.
#
# Knobs (environment):
#   BENCH_EVENTS          events delivered per round        (default 20000)
#   BENCH_ROUNDS          rounds                            (default 3)
#   BENCH_CONNECTIONS     plain client connections          (default 32)
#   BENCH_CLIENT_SECONDS  plain client run                  (default 5)
#   BENCH_DB              database to create and drop       (default notify_ext_webhook_bench)
set -euo pipefail

EVENTS=${BENCH_EVENTS:-20000}
ROUNDS=${BENCH_ROUNDS:-3}
CONNS=${BENCH_CONNECTIONS:-32}
CLIENT_SECONDS=${BENCH_CLIENT_SECONDS:-5}
BENCH_DB=${BENCH_DB:-notify_ext_webhook_bench}
MAINT_DB=${PGDATABASE:-postgres}
[ "$MAINT_DB" != "$BENCH_DB" ] || MAINT_DB=postgres
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

TMP=$(mktemp -d)
SINK_PID=
cleanup() {
	[ -z "$SINK_PID" ] || kill "$SINK_PID" 2>/dev/null || true
	psql -X -q -d "$MAINT_DB" -c "DROP DATABASE IF EXISTS $BENCH_DB WITH (FORCE)" >/dev/null 2>&1 || true
	rm -rf "$TMP"
}
trap cleanup EXIT

q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$BENCH_DB" "$@"; }
now() { date +%s.%N; }

"$PY" "$HERE/webhook_sink.py" serve "$TMP/port" >"$TMP/sink.out" &
SINK_PID=$!
for _ in $(seq 100); do [ -s "$TMP/port" ] && break; sleep 0.05; done
PORT=$(cat "$TMP/port")
# sink_count: requests the sink has answered so far, and the last one's time.
sink_stats() {
	: >"$TMP/sink.out"
	kill -USR1 "$SINK_PID"
	for _ in $(seq 100); do [ -s "$TMP/sink.out" ] && break; sleep 0.02; done
	cat "$TMP/sink.out"
}

psql -X -q -v ON_ERROR_STOP=1 -d "$MAINT_DB" \
	-c "DROP DATABASE IF EXISTS $BENCH_DB WITH (FORCE)" -c "CREATE DATABASE $BENCH_DB" >/dev/null
q -c "CREATE EXTENSION notify_ext"

echo "webhook delivery benchmark: $EVENTS events per round, $ROUNDS rounds, $(nproc) cores"
printf '{"seq": 1000001, "actor": "app", "stream": "jobs", "payload": {"type": "export", "error": null, "status": "done", "results": ["s3://bucket/out/1.csv"]}, "resource": null, "operation": "JOB_PROCESSED", "occurred_at": "2026-11-23T10:00:00.123456Z"}' >"$TMP/body.json"
CLIENT_RATE=$("$PY" "$HERE/webhook_sink.py" client "$PORT" "$CLIENT_SECONDS" "$CONNS" "$TMP/body.json")
echo "sink's own rate (plain client, $CONNS connections): $CLIENT_RATE requests/s"

WH=$(q -c "SELECT notify_ext.create_webhook('http://127.0.0.1:$PORT/hook')")
CONCURRENCY=$(q -c "SHOW notify_ext.webhook_endpoint_concurrency")
# Let the worker start (the launcher starts it at the commit above).
for _ in $(seq 100); do
	[ "$(q -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'notify_ext webhook worker' AND datname = current_database()")" = 1 ] && break
	sleep 0.1
done

RATES=()
for round in $(seq "$ROUNDS"); do
	read -r base _ _ < <(sink_stats)
	t0=$(now)
	q -c "SELECT count(notify_ext.publish('jobs', 'JOB_PROCESSED',
	          jsonb_build_object('status', 'done', 'type', 'export', 'results', jsonb_build_array('s3://bucket/out/' || i || '.csv'), 'error', NULL)))
	        FROM generate_series(1, $EVENTS) i" >/dev/null
	while :; do
		read -r count _ last < <(sink_stats)
		[ $((count - base)) -ge "$EVENTS" ] && break
		sleep 0.05
	done
	while [ "$(q -c "SELECT count(*) FROM notify_ext.webhook_queue")" != 0 ]; do sleep 0.05; done
	t2=$(now)
	rate=$(echo "$EVENTS / ($last - $t0)" | bc -l)
	recorded=$(echo "$EVENTS / ($t2 - $t0)" | bc -l)
	RATES+=("$rate")
	printf 'round %d: %.0f deliveries/s received by the sink, %.0f/s recorded (queue empty)\n' \
		"$round" "$rate" "$recorded"
done
failed=$(q -c "SELECT count(*) FROM notify_ext.deliveries WHERE status_code IS DISTINCT FROM 200")
best=$(printf '%s\n' "${RATES[@]}" | sort -g | tail -1)
median=$(printf '%s\n' "${RATES[@]}" | sort -g | sed -n "$(( (ROUNDS + 1) / 2 ))p")
printf 'notify_ext webhooks (endpoint concurrency %s): median %.0f, best %.0f deliveries/s; %.0f%% of the sink'"'"'s own rate; failed attempts: %s\n' \
	"$CONCURRENCY" "$median" "$best" "$(echo "100 * $median / $CLIENT_RATE" | bc -l)" "$failed"
