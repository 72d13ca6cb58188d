#!/usr/bin/env bash
# Webhook delivery throughput: deliveries per second from the webhook worker
# to a local sink that answers 200 at once, against the sink's own rate
# measured with a plain client in the same run.  Prints the figures and the
# target; fails on errors (a lost or failed delivery), never on a timing.
#
# The sink is a private nginx (Debian's package): its own configuration in
# a temporary directory, one worker process, listening on 127.0.0.1 only,
# `return 200` for every request (POST bodies are read and discarded, the
# connection is kept alive).  Requests to /hook are written to an access log
# with their arrival time ($msec), so the bench counts exactly what the sink
# received; requests to /plain are not logged.
#
# Each round:
#   1. The sink's own rate: wrk, one thread, BENCH_CONNECTIONS keep-alive
#      connections (default: as many as notify_ext.webhook_endpoint_concurrency,
#      what the worker opens to one endpoint), BENCH_CLIENT_SECONDS seconds,
#      POSTing a real event message with the same headers as the worker's.
#   2. notify_ext: BENCH_EVENTS events are published (JOB_PROCESSED, a small
#      payload) in BENCH_TXNS transactions, one after the other, for one
#      webhook on the sink.  The rate is BENCH_EVENTS divided by the time
#      from the first commit to the last request the sink received; it is
#      also given up to the moment every result is recorded (queue empty),
#      and between the first and last request received (the steady rate).
#      The sink's log and notify_ext.deliveries must both show exactly one
#      successful delivery per event.
# The table shows every round, the medians, their ratio and the target.
#
# Needs nginx and wrk (installed with apt-get when missing: as root, or
# through sudo), psql, awk.  Connection: the usual libpq variables (PGHOST,
# PGPORT, PGUSER, PGDATABASE).  PGDATABASE (default postgres) is only used to
# create and drop a database of its own, $BENCH_DB.  The server must be on
# this machine (the sink listens on 127.0.0.1) and have notify_ext in
# shared_preload_libraries.
#
# Knobs (environment):
#   BENCH_EVENTS          events delivered per round            (default 20000)
#   BENCH_TXNS            transactions they are published in    (default 4)
#   BENCH_ROUNDS          rounds                                (default 3)
#   BENCH_CONNECTIONS     plain client connections              (default: endpoint concurrency)
#   BENCH_CLIENT_SECONDS  plain client run per round            (default 5)
#   BENCH_TIMEOUT         seconds a round may take at most      (default 300)
#   BENCH_TARGET          target deliveries/s                   (default 2000)
#   BENCH_DB              database to create and drop           (default notify_ext_webhook_bench)
set -euo pipefail

EVENTS=${BENCH_EVENTS:-20000}
TXNS=${BENCH_TXNS:-4}
ROUNDS=${BENCH_ROUNDS:-3}
CONNS=${BENCH_CONNECTIONS:-}
CLIENT_SECONDS=${BENCH_CLIENT_SECONDS:-5}
TIMEOUT=${BENCH_TIMEOUT:-300}
TARGET=${BENCH_TARGET:-2000}
BENCH_DB=${BENCH_DB:-notify_ext_webhook_bench}
MAINT_DB=${PGDATABASE:-postgres}
[ "$MAINT_DB" != "$BENCH_DB" ] || MAINT_DB=postgres
if [ "$TXNS" -lt 1 ] || [ "$EVENTS" -lt "$TXNS" ]; then
	echo "BENCH_EVENTS must be at least BENCH_TXNS (>= 1)" >&2
	exit 1
fi

die() { printf 'webhook_bench: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- tools

NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if [ ! -x "$NGINX" ] || ! command -v wrk >/dev/null; then
	sudo=()
	if [ "$(id -u)" -ne 0 ]; then
		command -v sudo >/dev/null || die "nginx and wrk are missing and we are not root"
		sudo=(sudo)
	fi
	echo "installing nginx and wrk" >&2
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null || die "apt-get update failed"
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
		nginx wrk </dev/null >/dev/null || die "apt-get install nginx wrk failed"
	NGINX=$(command -v nginx || echo /usr/sbin/nginx)
fi

TMP=$(mktemp -d)
SINK_PID=
cleanup() {
	if [ -n "$SINK_PID" ]; then
		kill -TERM "$SINK_PID" 2>/dev/null || true
		wait "$SINK_PID" 2>/dev/null || true
	fi
	psql -X -q -d "$MAINT_DB" -c "DROP DATABASE IF EXISTS $BENCH_DB WITH (FORCE)" >/dev/null 2>&1 || true
	rm -rf "$TMP"
}
trap cleanup EXIT

q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$BENCH_DB" "$@"; }
now() { date +%s.%N; }
# calc EXPR: floating-point arithmetic.
calc() { awk "BEGIN { printf \"%.6f\", $1 }"; }
# median of the arguments
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# ---------------------------------------------------------------- the sink

# start_sink PORT: starts nginx on 127.0.0.1:PORT; fails when it does not
# come up (the port is taken).
start_sink() {
	local port=$1
	cat >"$TMP/nginx.conf" <<-EOF
		worker_processes 1;
		daemon off;
		master_process on;
		pid $TMP/nginx.pid;
		error_log $TMP/error.log warn;
		events { worker_connections 4096; }
		http {
		    access_log off;
		    log_not_found off;
		    server_tokens off;
		    client_body_temp_path $TMP/body;
		    proxy_temp_path $TMP/proxy;
		    fastcgi_temp_path $TMP/fastcgi;
		    uwsgi_temp_path $TMP/uwsgi;
		    scgi_temp_path $TMP/scgi;
		    keepalive_requests 1000000;
		    keepalive_timeout 300s;
		    client_max_body_size 16m;
		    log_format hook '\$msec \$status \$request_length';
		    server {
		        listen 127.0.0.1:$port;
		        location = /hook { access_log $TMP/hook.log hook; return 200; }
		        location / { return 200; }
		    }
		}
	EOF
	: >"$TMP/error.log"
	: >"$TMP/hook.log"
	"$NGINX" -p "$TMP" -c "$TMP/nginx.conf" -e "$TMP/error.log" </dev/null &
	SINK_PID=$!
	for _ in $(seq 100); do
		if ! kill -0 "$SINK_PID" 2>/dev/null; then
			wait "$SINK_PID" 2>/dev/null || true
			SINK_PID=
			return 1
		fi
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			return 0
		fi
		sleep 0.05
	done
	return 1
}

PORT=
for _ in $(seq 20); do
	p=$((20000 + RANDOM % 30000))
	if start_sink "$p"; then
		PORT=$p
		break
	fi
	[ -z "$SINK_PID" ] || { kill -TERM "$SINK_PID" 2>/dev/null || true; wait "$SINK_PID" 2>/dev/null || true; SINK_PID=; }
done
[ -n "$PORT" ] || die "nginx did not start: $(tail -3 "$TMP/error.log")"
SINK_URL=http://127.0.0.1:$PORT

# ---------------------------------------------------------------- the database

[[ "$(psql -X -At -d "$MAINT_DB" -c 'SHOW shared_preload_libraries')" == *notify_ext* ]] \
	|| die "the server does not have notify_ext in shared_preload_libraries"
psql -X -q -v ON_ERROR_STOP=1 -d "$MAINT_DB" -c "SET client_min_messages = warning" \
	-c "DROP DATABASE IF EXISTS $BENCH_DB WITH (FORCE)" -c "CREATE DATABASE $BENCH_DB" >/dev/null
q -c "CREATE EXTENSION notify_ext"
q -c "SELECT notify_ext.create_webhook('$SINK_URL/hook')" >/dev/null
CONCURRENCY=$(q -c "SHOW notify_ext.webhook_endpoint_concurrency")
WORKER_CONCURRENCY=$(q -c "SHOW notify_ext.webhook_concurrency")
CONNS=${CONNS:-$CONCURRENCY}

# hook_count: requests the sink has received on /hook so far.
hook_count() { wc -l <"$TMP/hook.log"; }

# wait_for DESCRIPTION COMMAND...: runs COMMAND until it succeeds, for at
# most TIMEOUT seconds.
wait_for() {
	local what=$1 deadline
	shift
	deadline=$(($(date +%s) + TIMEOUT))
	until "$@"; do
		[ "$(date +%s)" -lt "$deadline" ] || die "timed out after ${TIMEOUT}s waiting for $what"
		sleep 0.02
	done
}
received() { [ $(($(hook_count) - $1)) -ge "$2" ]; }
queue_empty() { [ "$(q -c "SELECT count(*) FROM notify_ext.webhook_queue")" = 0 ]; }

# Warm-up: one event, so that the worker runs and has connected; its message
# is what the plain client posts.
base=$(hook_count)
q -c "SELECT notify_ext.publish('jobs', 'JOB_PROCESSED',
          jsonb_build_object('status', 'done', 'type', 'export', 'results', jsonb_build_array('s3://bucket/out/0.csv'), 'error', NULL))" >/dev/null
wait_for "the warm-up delivery (is the webhook worker running?)" received "$base" 1
wait_for "the warm-up delivery to be recorded" queue_empty
BODY=$(q -c "SELECT message::text FROM notify_ext.events ORDER BY seq DESC LIMIT 1")
MSGID=$(q -c "SELECT message_id FROM notify_ext.deliveries ORDER BY attempted_at DESC LIMIT 1")
cat >"$TMP/post.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["User-Agent"] = "notify_ext-webhooks/0.1.0"
wrk.headers["webhook-id"] = "$MSGID"
wrk.headers["webhook-timestamp"] = "$(date +%s)"
wrk.headers["webhook-signature"] = "v1,uWVg/7nFQiICqKrgCfgU1tZ9yVR208WADMDqwtqgfko="
wrk.body = [==[$BODY]==]
EOF

# plain_rate: the sink's own rate (requests/s) with wrk.
plain_rate() {
	local out rate
	out=$(wrk -t1 -c"$CONNS" -d"${CLIENT_SECONDS}s" -s "$TMP/post.lua" "$SINK_URL/plain" 2>&1) \
		|| die "wrk failed: $out"
	if grep -q 'Non-2xx\|Socket errors' <<<"$out"; then
		die "wrk saw errors: $out"
	fi
	rate=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
	[ -n "$rate" ] || die "no rate from wrk: $out"
	echo "$rate"
}

# publish_events: publishes EVENTS events in TXNS transactions; prints the
# epoch time of each commit, one a line.
publish_events() {
	local per=$(((EVENTS + TXNS - 1) / TXNS)) k from to
	{
		for ((k = 0; k < TXNS; k++)); do
			from=$((k * per + 1))
			to=$(((k + 1) * per))
			[ "$to" -le "$EVENTS" ] || to=$EVENTS
			[ "$from" -le "$to" ] || break
			cat <<-EOF
				BEGIN;
				SELECT count(notify_ext.publish('jobs', 'JOB_PROCESSED',
				          jsonb_build_object('status', 'done', 'type', 'export',
				                             'results', jsonb_build_array('s3://bucket/out/' || i || '.csv'), 'error', NULL)))
				  FROM generate_series($from, $to) i \\g /dev/null
				COMMIT;
				SELECT extract(epoch FROM clock_timestamp());
			EOF
		done
	} | q
}

load() { cut -d' ' -f1-3 /proc/loadavg; }

echo "webhook delivery benchmark: $EVENTS events per round in $TXNS transactions, $ROUNDS rounds, $(nproc) cores, load $(load)"
echo "sink: nginx $("$NGINX" -v 2>&1 | sed 's|.*/||'), 1 worker process, $SINK_URL; plain client: wrk, 1 thread, $CONNS connections, ${CLIENT_SECONDS}s"
echo "notify_ext: webhook_concurrency $WORKER_CONCURRENCY, webhook_endpoint_concurrency $CONCURRENCY"
echo

R_SINK=() R_E2E=() R_REC=() R_STEADY=() ROWS=()
for round in $(seq "$ROUNDS"); do
	sink=$(plain_rate)
	base=$(hook_count)
	log_base=$(q -c "SELECT count(*) FROM notify_ext.delivery_log")
	publish_events >"$TMP/commits"
	mapfile -t commits <"$TMP/commits"
	[ "${#commits[@]}" -ge 1 ] || die "round $round: publishing printed no commit time"
	t_first=${commits[0]}
	t_last_commit=${commits[${#commits[@]} - 1]}
	wait_for "$EVENTS deliveries in round $round" received "$base" "$EVENTS"
	wait_for "the results of round $round to be recorded" queue_empty
	t_rec=$(now)
	got=$(($(hook_count) - base))
	read -r first_req last_req < <(tail -n +"$((base + 1))" "$TMP/hook.log" | awk 'NR == 1 { f = $1 } { l = $1 } END { print f, l }')
	read -r ok other < <(q -F' ' -c "SELECT count(*) FILTER (WHERE status_code = 200), count(*) FILTER (WHERE status_code IS DISTINCT FROM 200)
	                                  FROM (SELECT * FROM notify_ext.delivery_log ORDER BY id OFFSET $log_base) l")
	[ "$got" -eq "$EVENTS" ] || die "round $round: the sink received $got requests for $EVENTS events"
	[ "$ok" -eq "$EVENTS" ] && [ "$other" -eq 0 ] \
		|| die "round $round: $ok successful and $other other attempts recorded for $EVENTS events"
	e2e=$(calc "$EVENTS / ($last_req - $t_first)")
	rec=$(calc "$EVENTS / ($t_rec - $t_first)")
	steady=$(calc "($EVENTS - 1) / ($last_req - $first_req)")
	publish_s=$(calc "$t_last_commit - $t_first")
	R_SINK+=("$sink") R_E2E+=("$e2e") R_REC+=("$rec") R_STEADY+=("$steady")
	ROWS+=("$(printf '%-7s %12.0f %12.0f %12.0f %12.0f %8.2f %9.2f  %s' "$round" "$sink" "$e2e" "$rec" "$steady" \
		"$(calc "$e2e / $sink")" "$publish_s" "$(load)")")
	printf 'round %d done: %.0f deliveries/s, sink alone %.0f requests/s\n' "$round" "$e2e" "$sink"
done

m_sink=$(median "${R_SINK[@]}")
m_e2e=$(median "${R_E2E[@]}")
m_rec=$(median "${R_REC[@]}")
m_steady=$(median "${R_STEADY[@]}")
echo
echo "deliveries/s: from the first commit to the last request received (delivered),"
echo "to every result recorded (recorded), first to last request (steady);"
echo "sink alone: wrk against the same nginx, requests/s; publish: first to last commit, s"
printf '%-7s %12s %12s %12s %12s %8s %9s  %s\n' round "sink alone" delivered recorded steady ratio publish "load"
printf '%s\n' "${ROWS[@]}"
printf '%-7s %12.0f %12.0f %12.0f %12.0f %8.2f\n' median "$m_sink" "$m_e2e" "$m_rec" "$m_steady" "$(calc "$m_e2e / $m_sink")"
echo
verdict=met
awk "BEGIN { exit !($m_e2e >= $TARGET) }" || verdict="not met"
printf 'target: >= %d deliveries/s on 2 cores; median %.0f delivered/s (%.0f%% of the target): %s\n' \
	"$TARGET" "$m_e2e" "$(calc "100 * $m_e2e / $TARGET")" "$verdict"
printf 'notify_ext reached %.0f%% of the rate of the sink alone; every delivery was received once and recorded as 200\n' \
	"$(calc "100 * $m_e2e / $m_sink")"
