#!/usr/bin/env bash
# The CPU time of one notify_ext.prune() call in a new session (as a pg_cron
# run makes one), read from the backend's /proc/<pid>/schedstat before and
# after the call, so that a busy machine's waiting is not counted.  Each
# round makes three expired days of BENCH_EVENTS_PER_DAY events (VACUUMed,
# so that prune() takes VACUUM's counts) and prunes them.  Needs the server
# on this machine and the right to read its processes' /proc entries.
# Prints one line per round and the median.  For ab/compare_builds.sh.
#
# Knobs: BENCH_ROUNDS (10), BENCH_EVENTS_PER_DAY (1000),
# BENCH_DB (notify_ext_prune_cpu).
set -euo pipefail

ROUNDS=${BENCH_ROUNDS:-10}
PER_DAY=${BENCH_EVENTS_PER_DAY:-1000}
BENCH_DB=${BENCH_DB:-notify_ext_prune_cpu}
MAINT_DB=${PGDATABASE:-postgres}
PSQL=(psql -X -q -v ON_ERROR_STOP=1)
export PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning"
bq() { "${PSQL[@]}" -d "$BENCH_DB" -A -t "$@"; }
WORK=$(mktemp -d)
chmod 0755 "$WORK"

cleanup() {
	rm -rf "$WORK"
	"${PSQL[@]}" -d "$MAINT_DB" -c "DROP DATABASE IF EXISTS $BENCH_DB WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT
"${PSQL[@]}" -d "$MAINT_DB" -c "DROP DATABASE IF EXISTS $BENCH_DB WITH (FORCE)" -c "CREATE DATABASE $BENCH_DB"
bq -c "CREATE EXTENSION notify_ext" >/dev/null

cpu=()
for ((round = 1; round <= ROUNDS; round++)); do
	bq -c "SELECT notify_ext.create_event_partitions(7, 10)" >/dev/null
	for k in 8 9 10; do
		bq -c "INSERT INTO notify_ext.event_log
		       SELECT 1000000000000 + $round::bigint * 100000000 + $k * $PER_DAY + i,
		              ((now() AT TIME ZONE 'UTC')::date - $k)::timestamp AT TIME ZONE 'UTC'
		                  + (i::double precision / $PER_DAY) * interval '1 day',
		              'bench.stream', 'item.update', 'r' || i, 'item', ARRAY['root'], 'bench',
		              '{\"note\": \"some payload text\"}'::json, ARRAY['note']
		         FROM generate_series(0, $PER_DAY - 1) i" >/dev/null
	done
	sleep 0.5 # the loading sessions' statistics
	bq -c "VACUUM ANALYZE notify_ext.event_log" -c "CHECKPOINT" >/dev/null
	line=$(WORK=$WORK bq <<'EOF'
SELECT pg_backend_pid() AS pid \gset
\setenv PRUNE_PID :pid
\! sed 's/ .*//' /proc/$PRUNE_PID/schedstat > $WORK/before
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
SELECT notify_ext.prune() ->> 'partitions' AS parts \gset
SELECT extract(epoch FROM clock_timestamp()) AS t1 \gset
\! sed 's/ .*//' /proc/$PRUNE_PID/schedstat > $WORK/after
\echo :t0 :t1 :parts
EOF
	)
	read -r t0 t1 parts <<<"$line"
	ns=$(($(cat "$WORK/after") - $(cat "$WORK/before")))
	ms=$(python3 -c "print('%.1f' % ($ns / 1e6))")
	echo "round $round: prune() of $parts partitions: CPU $ms ms, wall $(python3 -c "print('%.1f' % (($t1 - $t0) * 1000))") ms"
	cpu+=("$ms")
	sleep 1 # the dropper
done
echo "median CPU of prune() in a new session: $(printf '%s\n' "${cpu[@]}" | sort -n | sed -n "$(((${#cpu[@]} + 1) / 2))p") ms over $ROUNDS rounds"
