#!/usr/bin/env bash
# Retention benchmark: notify_ext.prune() against a DELETE of the same rows,
# and what pruning costs a concurrent writer.  Prints timings and ratios; it
# never fails because of a timing (only because of an error).
#
#   1. The event log is loaded with BENCH_DAYS days of events
#      (BENCH_EVENTS_PER_DAY each, 10 x 1,000,000 by default), backdated to
#      the days 1 .. BENCH_DAYS ago, written straight into the log (as a
#      superuser), then (once the loading sessions' statistics are in)
#      VACUUM ANALYZE and CHECKPOINT.  Retention is 7 days:
#      the days 8, 9 and 10 ago (3,000,000 events) have expired.
#   2. A writer (pgbench, one client, single-row INSERT transactions into a
#      tracked table: one event each) runs all along each measurement.
#   3. DELETE: the expired rows are deleted with one
#      DELETE FROM notify_ext.event_log WHERE occurred_at < <boundary> while
#      the writer runs, then rolled back (so that prune() finds them again).
#   4. prune(), BENCH_PRUNE_ROUNDS times (the expired days are reloaded
#      before each round): notify_ext.prune() removes the expired day
#      partitions while the writer runs.  The session that calls it is
#      opened a second before the call, so that the window measures
#      prune() and not the start of a new backend (pg_cron opens one too,
#      but that cost is the connection's, whatever the job runs).
#   5. The control: as many rounds in which the same kind of session runs
#      SELECT pg_sleep(<median time of prune()>) instead.  Nothing else
#      happens in its window, so its ratio shows what the measurement
#      itself gives (the writer's own variation over windows this short).
#   Reported: the time of the DELETE and the median time of prune(), and
#   their ratio (target >= 50x).  For the writer, from pgbench's
#   per-transaction log of the same run: its transactions per second within
#   the window of the DELETE / of prune() (transactions that ended inside
#   it; one held across the window counts as its slowest) against the
#   BASE_SECONDS just before the window, in which nothing else ran (target
#   >= 0.9x); per round, and pooled over the rounds (transactions / time).
#   Also the first second from prune()'s start, which includes the
#   background worker that drops the detached partitions after prune()
#   has committed, and the slowest transaction.
#
# Connection: the usual libpq variables.  PGDATABASE (default postgres) is
# only used to create and drop a database of its own, $BENCH_DB.  The
# server must have notify_ext in shared_preload_libraries.
#
# Knobs (environment):
#   BENCH_DAYS             days of events                 (default 10)
#   BENCH_EVENTS_PER_DAY   events per day                 (default 1000000)
#   BENCH_BASE_SECONDS     writer-alone window before each timed
#                          statement, same writer run     (default 3)
#   BENCH_PRUNE_ROUNDS     prune() rounds (each reloads the expired days)
#                                                         (default 3)
#   BENCH_DB               database to create and drop    (default notify_ext_retention_bench)
set -euo pipefail

DAYS=${BENCH_DAYS:-10}
PER_DAY=${BENCH_EVENTS_PER_DAY:-1000000}
BASE_SECONDS=${BENCH_BASE_SECONDS:-3}
PRUNE_ROUNDS=${BENCH_PRUNE_ROUNDS:-3}
BENCH_DB=${BENCH_DB:-notify_ext_retention_bench}
MAINT_DB=${PGDATABASE:-postgres}
[ "$MAINT_DB" != "$BENCH_DB" ] || MAINT_DB=postgres
KEEP_DAYS=7

PSQL=(psql -X -q -v ON_ERROR_STOP=1)
export PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning"
PGBENCH=pgbench
if ! command -v pgbench >/dev/null && command -v pg_config >/dev/null; then
	PGBENCH=$(pg_config --bindir)/pgbench
fi
PYTHON=/usr/bin/python3
[ -x "$PYTHON" ] || PYTHON=python3

WORK=$(mktemp -d)
cleanup() {
	rm -rf "$WORK"
	"${PSQL[@]}" -d "$MAINT_DB" -c "DROP DATABASE IF EXISTS $BENCH_DB WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT

bq() { "${PSQL[@]}" -d "$BENCH_DB" -A -t "$@"; }

# The partitions of the event log (rel, upper_bound), the default one with
# a null bound; read from the catalogs alone, so that the bench runs
# against every version of notify_ext.
PARTITIONS="SELECT c.oid::regclass AS rel,
       CASE WHEN c.relname ~ '^event_log_p[0-9]{8}\$'
            THEN (to_date(substr(c.relname, 12), 'YYYYMMDD') + 1)::timestamp AT TIME ZONE 'UTC'
       END AS upper_bound
  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
 WHERE i.inhparent = 'notify_ext.event_log'::regclass"

echo "retention bench: $DAYS days x $PER_DAY events, keep $KEEP_DAYS days"
"${PSQL[@]}" -d "$MAINT_DB" -c "DROP DATABASE IF EXISTS $BENCH_DB WITH (FORCE)" -c "CREATE DATABASE $BENCH_DB"
bq -c "CREATE EXTENSION notify_ext" \
   -c "CREATE TABLE public.ret_bench_items (id bigserial PRIMARY KEY, note text)" \
   -c "SELECT notify_ext.track('public.ret_bench_items', 'item')" \
   -c "SELECT notify_ext.create_event_partitions(7, $DAYS + 1)" >/dev/null

# load_day K: PER_DAY events spread over the UTC day K days ago.  seqs are
# far above anything the writer gets, so they never collide.
load_day() {
	local k=$1
	bq -c "
	INSERT INTO notify_ext.event_log
	SELECT 1000000000000 + $k::bigint * $PER_DAY + i,
	       ((now() AT TIME ZONE 'UTC')::date - $k)::timestamp AT TIME ZONE 'UTC'
	           + (i::double precision / $PER_DAY) * interval '1 day',
	       'bench.stream', 'item.update', 'r' || (i % 1000), 'item',
	       ARRAY['root', 'r' || (i % 1000)], 'bench',
	       ('{\"id\": ' || i || ', \"note\": \"some payload text\"}')::json, ARRAY['note']
	  FROM generate_series(0, $PER_DAY - 1) i" >/dev/null
}

# load_days FIRST LAST, two at a time.
load_days() {
	local k
	for ((k = $1; k <= $2; k += 2)); do
		load_day "$k" &
		if ((k + 1 <= $2)); then load_day $((k + 1)) & fi
		wait
	done
}

# settled_stats: waits until the statistics of the loaded rows are in (a
# backend sends its counts when it exits, which can be after its client has
# gone).  Counts that arrive after the VACUUM below would make the expired
# partitions look changed since VACUUM counted them, and prune() would count
# their rows again (correctly, but that is not the case measured here: a past
# day that autovacuum has visited since it filled up).
settled_stats() {
	local i
	for ((i = 0; i < 100; i++)); do
		[ "$(bq -c "SELECT COALESCE(sum(pg_stat_get_tuples_inserted(rel)), 0) >= $DAYS::bigint * $PER_DAY
		              FROM ($PARTITIONS) p")" = t ] && return 0
		sleep 0.1
	done
	echo "warning: the statistics of the loaded rows did not settle" >&2
}

# Autovacuum would wake up on the freshly loaded tables in the middle of
# the timed windows and take a CPU from the writer: it is switched off for
# the bench's tables, and the bench VACUUMs them itself.
quiet_autovacuum() {
	bq -c "DO \$\$ DECLARE r regclass; BEGIN
	         FOR r IN SELECT rel FROM ($PARTITIONS) p
	                  UNION ALL SELECT 'public.ret_bench_items'::regclass LOOP
	             EXECUTE format('ALTER TABLE %s SET (autovacuum_enabled = off)', r);
	         END LOOP; END \$\$" >/dev/null
	while [ "$(bq -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'
	                    AND datname = current_database()")" != 0 ]; do
		sleep 1
	done
}

t0=$(date +%s.%N)
quiet_autovacuum
load_days 1 "$DAYS"
settled_stats
bq -c "VACUUM ANALYZE notify_ext.event_log" -c "CHECKPOINT" >/dev/null
t1=$(date +%s.%N)
total=$(bq -c "SELECT count(*) FROM notify_ext.event_log")
printf "loaded %s events in %s s\n" "$total" "$("$PYTHON" -c "print(round($t1 - $t0))")"

# The boundary prune() uses: day partitions that ended at least 7 days ago.
BOUNDARY=$(bq -c "SELECT max(upper_bound) FROM ($PARTITIONS) p
                  WHERE upper_bound <= now() - interval '$KEEP_DAYS days'")
EXPIRED=$(bq -c "SELECT count(*) FROM notify_ext.event_log WHERE occurred_at < '$BOUNDARY'")
echo "expired: $EXPIRED events before $BOUNDARY"

cat >"$WORK/insert.sql" <<'EOF'
INSERT INTO public.ret_bench_items (note) VALUES ('written while pruning');
EOF

# writer SECONDS PREFIX: pgbench in the background with a per-transaction log.
writer() {
	(cd "$WORK" && "$PGBENCH" -n -c 1 -j 1 -T "$1" -f insert.sql -l --log-prefix="log_$2" "$BENCH_DB" \
		>"$WORK/$2.out" 2>&1) || { cat "$WORK/$2.out" >&2; return 1; }
}

# window_stats PREFIX T0 T1: "tps max_latency_ms" of the transactions that
# ended within [T0, T1] (T0 = T1 = 0: the whole run, first/last second cut).
window_stats() {
	cat "$WORK"/log_"$1".* | "$PYTHON" -c '
import sys
t0, t1 = float(sys.argv[1]), float(sys.argv[2])
ends, lat = [], []
for line in sys.stdin:
    f = line.split()
    ends.append(int(f[4]) + int(f[5]) / 1e6)
    lat.append(int(f[2]) / 1000.0)
pairs = sorted(zip(ends, lat))
if t0 == 0 and t1 == 0:
    t0, t1 = pairs[0][0] + 1, pairs[-1][0] - 1
inside = [l for e, l in pairs if t0 <= e <= t1]
# a transaction that was held across the window ends after it: count it
held = max([l for e, l in pairs if e > t1 and e - l / 1000.0 < t1] or [0])
print("%.1f %.1f" % (len(inside) / (t1 - t0), max(inside + [held])))
' "$2" "$3"
}

ratio() { "$PYTHON" -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); print('%.2f' % (a / b) if b else 'inf')" "$1" "$2"; }

# timed PREFIX SQL SECONDS: runs SQL while a writer runs (started
# BASE_SECONDS + 1 s before it); prints "t0 t1".
timed() {
	local prefix=$1 sql=$2 secs=$3
	writer "$secs" "$prefix" &
	local wpid=$!
	sleep $((BASE_SECONDS + 1))
	bq -v sql="$sql" >"$WORK/$prefix.timing" <<'EOF'
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
BEGIN;
:sql
ROLLBACK;
SELECT extract(epoch FROM clock_timestamp()) AS t1 \gset
\echo :t0 :t1
EOF
	wait "$wpid"
	cat "$WORK/$prefix.timing"
}

# before T0: the writer-alone window just before T0 in the same run
before() { "$PYTHON" -c "import sys; t = float(sys.argv[1]); print(t - $BASE_SECONDS - 0.1, t - 0.1)" "$1"; }

# ---- DELETE of the expired rows (rolled back) while the writer runs
# The writer runs for as long as the DELETE takes, and some.
del_est=$(( (EXPIRED / 150000) + BASE_SECONDS + 15 ))
read -r d0 d1 < <(timed del "DELETE FROM notify_ext.event_log WHERE occurred_at < '$BOUNDARY';" "$del_est")
delete_s=$("$PYTHON" -c "print('%.3f' % ($d1 - $d0))")
read -r base_tps base_max < <(window_stats del $(before "$d0"))
read -r del_tps del_max < <(window_stats del "$d0" "$d1")
echo "DELETE of $EXPIRED rows: $delete_s s; writer alone just before $base_tps tps (slowest $base_max ms);"
echo "  writer meanwhile $del_tps tps ($(ratio "$del_tps" "$base_tps")x), slowest $del_max ms"
# What the rolled-back DELETE left (aborted xmax) is hinted before prune().
bq -c "SELECT count(*) FROM notify_ext.event_log WHERE occurred_at < '$BOUNDARY'" -c "VACUUM notify_ext.event_log" -c "CHECKPOINT" >/dev/null

# ---- prune(), a few rounds: each one drops the expired days (reloaded
# after the first round) while the writer runs.
prune_times=()
prune_ratios=()
win_tx=0
win_s=0
base_sum=0
for ((round = 1; round <= PRUNE_ROUNDS; round++)); do
	if ((round > 1)); then
		bq -c "SELECT notify_ext.create_event_partitions(7, $DAYS + 1)" >/dev/null
		quiet_autovacuum
		load_days $((KEEP_DAYS + 1)) "$DAYS"
		settled_stats
		bq -c "VACUUM ANALYZE notify_ext.event_log" -c "CHECKPOINT" >/dev/null
	fi
	writer $((BASE_SECONDS + 7)) "prune$round" &
	wpid=$!
	sleep $((BASE_SECONDS + 1))
	bq >"$WORK/prune$round.timing" <<'EOF'
SELECT 1 AS connected \gset
\! sleep 1
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
SELECT notify_ext.prune() AS result \gset
SELECT extract(epoch FROM clock_timestamp()) AS t1 \gset
\echo :t0 :t1 :result
EOF
	wait "$wpid"
	read -r p0 p1 result <"$WORK/prune$round.timing"
	prune_s=$("$PYTHON" -c "print('%.3f' % ($p1 - $p0))")
	read -r b_tps b_max < <(window_stats "prune$round" $(before "$p0"))
	read -r p_tps p_max < <(window_stats "prune$round" "$p0" "$p1")
	p1s=$("$PYTHON" -c "print($p0 + 1)")
	read -r s_tps s_max < <(window_stats "prune$round" "$p0" "$p1s")
	r=$(ratio "$p_tps" "$b_tps")
	echo "prune() round $round: $prune_s s $result"
	echo "  writer alone just before: $b_tps tps (slowest $b_max ms); within the prune() window $p_tps tps (${r}x), slowest $p_max ms;"
	echo "  first second from prune()'s start (with the background drop) $s_tps tps ($(ratio "$s_tps" "$b_tps")x), slowest $s_max ms"
	prune_times+=("$prune_s")
	prune_ratios+=("$r")
	win_tx=$("$PYTHON" -c "print($win_tx + $p_tps * ($p1 - $p0))")
	win_s=$("$PYTHON" -c "print($win_s + $p1 - $p0)")
	base_sum=$("$PYTHON" -c "print($base_sum + $b_tps)")
done

best_prune=$(printf '%s\n' "${prune_times[@]}" | sort -n | sed -n "$(( (${#prune_times[@]} + 1) / 2 ))p")

# ---- the control: the same session and window, with nothing in it
ctl_tx=0
ctl_s=0
ctl_base_sum=0
ctl_ratios=()
for ((round = 1; round <= PRUNE_ROUNDS; round++)); do
	writer $((BASE_SECONDS + 7)) "control$round" &
	wpid=$!
	sleep $((BASE_SECONDS + 1))
	bq -v secs="$best_prune" >"$WORK/control$round.timing" <<'EOF'
SELECT 1 AS connected \gset
\! sleep 1
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
SELECT pg_sleep(:secs) \gset
SELECT extract(epoch FROM clock_timestamp()) AS t1 \gset
\echo :t0 :t1
EOF
	wait "$wpid"
	read -r c0 c1 <"$WORK/control$round.timing"
	read -r b_tps b_max < <(window_stats "control$round" $(before "$c0"))
	read -r c_tps c_max < <(window_stats "control$round" "$c0" "$c1")
	r=$(ratio "$c_tps" "$b_tps")
	echo "control round $round: writer alone just before $b_tps tps; within a pg_sleep() window of the same length $c_tps tps (${r}x)"
	ctl_ratios+=("$r")
	ctl_tx=$("$PYTHON" -c "print($ctl_tx + $c_tps * ($c1 - $c0))")
	ctl_s=$("$PYTHON" -c "print($ctl_s + $c1 - $c0)")
	ctl_base_sum=$("$PYTHON" -c "print($ctl_base_sum + $b_tps)")
done
ctl_pooled=$("$PYTHON" -c "print('%.2f' % (($ctl_tx / $ctl_s) / ($ctl_base_sum / $PRUNE_ROUNDS)))")
ctl_med=$(printf '%s\n' "${ctl_ratios[@]}" | sort -n | sed -n "$(( (${#ctl_ratios[@]} + 1) / 2 ))p")
min_ratio=$(printf '%s\n' "${prune_ratios[@]}" | sort -n | head -1)
med_ratio=$(printf '%s\n' "${prune_ratios[@]}" | sort -n | sed -n "$(( (${#prune_ratios[@]} + 1) / 2 ))p")
echo
echo "summary:"
echo "  DELETE $delete_s s vs prune() median $best_prune s: $(ratio "$delete_s" "$best_prune")x faster (target >= 50x)"
pooled=$("$PYTHON" -c "print('%.2f' % (($win_tx / $win_s) / ($base_sum / $PRUNE_ROUNDS)))")
echo "  writer throughput within the prune() windows: ${pooled}x of the writer alone, all rounds pooled;"
echo "    median round ${med_ratio}x, worst round ${min_ratio}x (target >= 0.9x)"
echo "  control (pg_sleep() for as long, nothing else): ${ctl_pooled}x pooled, median round ${ctl_med}x"
echo "  writer throughput while the DELETE runs: $(ratio "$del_tps" "$base_tps")x"
