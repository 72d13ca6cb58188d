#!/usr/bin/env bash
# Event log benchmarks: what notify_ext.track() costs a writer, measured
# against baselines in the same run.  Prints timings and ratios; it never
# fails because of a timing (only because of an error).
#
#   1. Bulk insert (INSERT ... SELECT FROM generate_series) into
#        untracked   a table without triggers
#        tracked     notify_ext.track(), rows under a registered parent
#        plpgsql     a PL/pgSQL AFTER ROW trigger inserting to_jsonb(NEW)
#                    into an audit table (bigserial id, timestamptz now())
#        pgq         PgQ's pgq.logutriga trigger
#      Every round recreates the table and empties its log, then VACUUMs and
#      CHECKPOINTs before the timed statement; rounds alternate the order of
#      the variants.  The median per variant is compared with untracked.
#      Times are psql's \timing of the autocommit statement, so they include
#      the commit, where notify_ext writes its buffered events.
#   2. Single-row INSERT transactions with pgbench, tracked vs untracked,
#      alternating runs; the median tps of each is compared.
#   3. The same with synchronous_commit = off, where the trigger's CPU cost
#      is not hidden behind the WAL flush.
#
# Connection: the usual libpq variables (PGHOST, PGPORT, PGUSER, PGDATABASE).
# PGDATABASE (default postgres) is only used to create and drop a database
# of its own, $BENCH_DB.  The server must have notify_ext in
# shared_preload_libraries and the notify_ext and pgq extensions available.
#
# Knobs (environment):
#   BENCH_ROWS            rows per bulk insert            (default 200000)
#   BENCH_ROUNDS          bulk insert rounds per variant  (default 5)
#   BENCH_PGBENCH_SECONDS duration of one pgbench run     (default 20)
#   BENCH_PGBENCH_ROUNDS  pgbench runs per variant, 0 skips parts 2 and 3 (default 3)
#   BENCH_PGBENCH_CLIENTS pgbench clients and threads     (default 2)
#   BENCH_NOSYNC_SECONDS  one run of part 3               (default 10)
#   BENCH_NOSYNC_ROUNDS   runs per variant in part 3, 0 skips it (default 2)
#   BENCH_DB              database to create and drop     (default notify_ext_events_bench)
#   BENCH_BULK_VARIANTS   variants of part 1, untracked first
#                         (default "untracked tracked plpgsql pgq")
#   BENCH_BACKEND_CPU     1: part 1 also reports the backend's CPU time and
#                         minor page faults for the timed statement, read
#                         from /proc (the server must run on this machine)
set -euo pipefail

ROWS=${BENCH_ROWS:-200000}
ROUNDS=${BENCH_ROUNDS:-5}
PGB_SECONDS=${BENCH_PGBENCH_SECONDS:-20}
PGB_ROUNDS=${BENCH_PGBENCH_ROUNDS:-3}
PGB_CLIENTS=${BENCH_PGBENCH_CLIENTS:-2}
NOSYNC_SECONDS=${BENCH_NOSYNC_SECONDS:-10}
NOSYNC_ROUNDS=${BENCH_NOSYNC_ROUNDS:-2}
BACKEND_CPU=${BENCH_BACKEND_CPU:-0}
BENCH_DB=${BENCH_DB:-notify_ext_events_bench}
MAINT_DB=${PGDATABASE:-postgres}
[ "$MAINT_DB" != "$BENCH_DB" ] || MAINT_DB=postgres

PSQL=(psql -X -q -v ON_ERROR_STOP=1)
export PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning"
PGBENCH=pgbench
if ! command -v pgbench >/dev/null && command -v pg_config >/dev/null; then
	PGBENCH=$(pg_config --bindir)/pgbench
fi

WORK=$(mktemp -d)
cleanup() {
	"${PSQL[@]}" -d "$MAINT_DB" -c "DROP DATABASE IF EXISTS \"$BENCH_DB\" WITH (FORCE)" >/dev/null 2>&1 || true
	rm -rf "$WORK"
}
trap cleanup EXIT

die() { printf 'events_bench: %s\n' "$*" >&2; exit 1; }

# q SQL: one value from the bench database.
q() { "${PSQL[@]}" -At -d "$BENCH_DB" -c "$1"; }

# median: the median of the numbers on stdin.
median() {
	sort -g | awk '{ v[NR] = $1 } END {
		if (NR == 0) exit 1
		if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# ------------------------------------------------------------ preflight

"${PSQL[@]}" -d "$MAINT_DB" -c "SELECT 1" >/dev/null || die "cannot connect to database $MAINT_DB"
preload=$("${PSQL[@]}" -At -d "$MAINT_DB" -c "SHOW shared_preload_libraries")
case ",${preload// /}," in
*,notify_ext,*) ;;
*) die "notify_ext is not in shared_preload_libraries (it is '$preload')" ;;
esac
for ext in notify_ext pgq; do
	[ "$("${PSQL[@]}" -At -d "$MAINT_DB" -c "SELECT count(*) FROM pg_available_extensions WHERE name = '$ext'")" = 1 ] \
		|| die "extension $ext is not installed on the server"
done
command -v "$PGBENCH" >/dev/null || die "pgbench not found"

"${PSQL[@]}" -d "$MAINT_DB" -c "DROP DATABASE IF EXISTS \"$BENCH_DB\" WITH (FORCE)" -c "CREATE DATABASE \"$BENCH_DB\"" >/dev/null

"${PSQL[@]}" -d "$BENCH_DB" >/dev/null <<'SQL'
CREATE EXTENSION notify_ext;
CREATE EXTENSION pgq;
SELECT notify_ext.register_resource('bench-root', 'project');

-- The hand-written audit trigger to compare with: one jsonb row per change.
CREATE TABLE audit_log (
    id         bigserial PRIMARY KEY,
    table_name text        NOT NULL,
    operation  text        NOT NULL,
    row_data   jsonb       NOT NULL,
    logged_at  timestamptz NOT NULL DEFAULT now()
);
CREATE FUNCTION audit_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO audit_log (table_name, operation, row_data)
        VALUES (TG_TABLE_NAME, TG_OP, to_jsonb(OLD));
    ELSE
        INSERT INTO audit_log (table_name, operation, row_data)
        VALUES (TG_TABLE_NAME, TG_OP, to_jsonb(NEW));
    END IF;
    RETURN NULL;
END
$$;

-- (Re)creates one benchmark table, empty, with the variant's trigger, and
-- empties the variant's log.  Every variant has the same table shape.
CREATE FUNCTION bench_table(p_name text, p_variant text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('DROP TABLE IF EXISTS %I', p_name);
    EXECUTE format('CREATE TABLE %I (
                        id         bigint PRIMARY KEY,
                        parent_id  text,
                        name       text,
                        amount     int,
                        created_at timestamptz DEFAULT now())', p_name);
    CASE p_variant
    WHEN 'untracked' THEN
        NULL;
    WHEN 'tracked' THEN
        TRUNCATE notify_ext.event_log;
        PERFORM notify_ext.track(p_name::regclass, 'item', 'id', 'parent_id');
    WHEN 'plpgsql' THEN
        TRUNCATE audit_log RESTART IDENTITY;
        EXECUTE format('CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON %I
                        FOR EACH ROW EXECUTE FUNCTION audit_row()', p_name);
    WHEN 'pgq' THEN
        IF EXISTS (SELECT FROM pgq.queue WHERE queue_name = 'bench') THEN
            PERFORM pgq.drop_queue('bench');
        END IF;
        PERFORM pgq.create_queue('bench');
        EXECUTE format('CREATE TRIGGER pgq AFTER INSERT OR UPDATE OR DELETE ON %I
                        FOR EACH ROW EXECUTE FUNCTION pgq.logutriga(''bench'')', p_name);
    END CASE;
END
$$;

-- How many rows the variant's log holds for the table (its own row count
-- for untracked): a check that the trigger really ran.
CREATE FUNCTION bench_logged(p_name text, p_variant text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    CASE p_variant
    WHEN 'untracked' THEN
        EXECUTE format('SELECT count(*) FROM %I', p_name) INTO n;
    WHEN 'tracked' THEN
        SELECT count(*) INTO n FROM notify_ext.event_log
         WHERE stream = 'public.' || p_name AND operation = 'item.create'
           AND resource_path = ARRAY['bench-root', resource_id] AND seq > 0;
    WHEN 'plpgsql' THEN
        SELECT count(*) INTO n FROM audit_log WHERE table_name = p_name;
    WHEN 'pgq' THEN
        -- the queue's parent event table; its child tables inherit from it
        EXECUTE format('SELECT count(*) FROM %s',
                       (SELECT queue_data_pfx FROM pgq.queue WHERE queue_name = 'bench')) INTO n;
    END CASE;
    RETURN n;
END
$$;
SQL

echo "notify_ext event log benchmarks"
q "SELECT format('server: %s', version())"
q "SELECT format('settings: shared_buffers=%s max_wal_size=%s checkpoint_timeout=%s synchronous_commit=%s fsync=%s wal_level=%s',
        current_setting('shared_buffers'), current_setting('max_wal_size'),
        current_setting('checkpoint_timeout'), current_setting('synchronous_commit'),
        current_setting('fsync'), current_setting('wal_level'))"
# Timings from a machine that is busy with other work are noise: say how
# busy this one is (the server's, when it runs here).
loadavg() { cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?'; }
echo "client: $(nproc 2>/dev/null || echo '?') CPUs, load average $(loadavg); PGHOST=${PGHOST:-} PGPORT=${PGPORT:-} database $BENCH_DB"

# ------------------------------------------------------------ 1. bulk insert

read -r -a VARIANTS <<<"${BENCH_BULK_VARIANTS:-untracked tracked plpgsql pgq}"
[ "${VARIANTS[0]:-}" = untracked ] || die "BENCH_BULK_VARIANTS must start with untracked"
REVERSED=()
for ((i = ${#VARIANTS[@]} - 1; i >= 0; i--)); do REVERSED+=("${VARIANTS[i]}"); done
declare -A LABEL=(
	[untracked]="untracked table"
	[tracked]="notify_ext.track()"
	[plpgsql]="PL/pgSQL to_jsonb audit trigger"
	[pgq]="pgq.logutriga"
)

# With BENCH_BACKEND_CPU=1, a psql line that prints the backend's CPU time
# (ns, /proc/PID/schedstat), minor page faults and system time (ticks, the
# 10th and 15th fields of /proc/PID/stat).
PROBE=
if [ "$BACKEND_CPU" = 1 ]; then
	PROBE="\\! echo \"backend \$(cut -d' ' -f1 /proc/\$BENCH_BACKEND_PID/schedstat) \$(cut -d' ' -f10,15 /proc/\$BENCH_BACKEND_PID/stat)\""
fi
CLK_TCK=$(getconf CLK_TCK)

# bulk_run VARIANT: prints the milliseconds and the WAL bytes of one timed
# bulk insert, then (BENCH_BACKEND_CPU=1) the backend's CPU and system
# milliseconds and minor page faults, or dashes.
bulk_run() {
	local v=$1 table="bulk_$1" out ms wal logged cpu="- - -"
	q "SELECT bench_table('$table', '$v')" >/dev/null
	out=$("${PSQL[@]}" -At -d "$BENCH_DB" <<SQL
VACUUM;
CHECKPOINT;
SELECT pg_current_wal_insert_lsn() AS wal_before \\gset
SELECT pg_backend_pid() AS backend_pid \\gset
\\setenv BENCH_BACKEND_PID :backend_pid
$PROBE
\\timing on
INSERT INTO $table (id, parent_id, name, amount)
SELECT g, 'bench-root', 'item ' || g, (g % 1000)::int
  FROM generate_series(1, $ROWS) g;
\\timing off
$PROBE
SELECT 'wal ' || pg_wal_lsn_diff(pg_current_wal_insert_lsn(), :'wal_before');
SQL
	)
	ms=$(printf '%s\n' "$out" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -n 1)
	wal=$(printf '%s\n' "$out" | sed -n 's/^wal \([0-9]*\)$/\1/p')
	[ -n "$ms" ] && [ -n "$wal" ] || die "no timing for $v: $out"
	if [ "$BACKEND_CPU" = 1 ]; then
		cpu=$(printf '%s\n' "$out" | awk -v tck="$CLK_TCK" '
			/^backend [0-9]+ [0-9]+ [0-9]+$/ { n++; ns[n] = $2; flt[n] = $3; st[n] = $4 }
			END { if (n == 2) printf "%.1f %.0f %d", (ns[2] - ns[1]) / 1e6, (st[2] - st[1]) * 1000 / tck, flt[2] - flt[1] }')
		[ -n "$cpu" ] || die "BENCH_BACKEND_CPU=1: cannot read the backend's /proc entries (is the server on this machine?): $out"
	fi
	logged=$(q "SELECT bench_logged('$table', '$v')")
	[ "$logged" = "$ROWS" ] || die "$v: expected $ROWS logged rows, found $logged"
	echo "$ms $wal $cpu"
}

echo
echo "== 1. bulk insert of $ROWS rows, $ROUNDS rounds (ms per round; median, ratio vs untracked) =="
declare -A TIMES=() WAL=() CPU=() SYS=() FAULTS=()
for ((r = 1; r <= ROUNDS; r++)); do
	if ((r % 2)); then order=("${VARIANTS[@]}"); else order=("${REVERSED[@]}"); fi
	line="round $r:"
	for v in "${order[@]}"; do
		res=$(bulk_run "$v")
		read -r ms wal cpu sys faults <<<"$res"
		TIMES[$v]="${TIMES[$v]:-} $ms"
		WAL[$v]=$wal
		line+=$(printf '  %s %.0f' "$v" "$ms")
		if [ "$BACKEND_CPU" = 1 ]; then
			CPU[$v]="${CPU[$v]:-} $cpu"
			SYS[$v]="${SYS[$v]:-} $sys"
			FAULTS[$v]="${FAULTS[$v]:-} $faults"
			line+=$(printf ' (cpu %.0f, system %.0f)' "$cpu" "$sys")
		fi
	done
	echo "$line"
done

declare -A MEDIAN=()
for v in "${VARIANTS[@]}"; do
	MEDIAN[$v]=$(printf '%s\n' ${TIMES[$v]} | median)
done
echo
printf '%-32s %10s %8s %8s %7s %9s %11s\n' variant "median ms" "min" "max" ratio "rows/s" "WAL B/row"
for v in "${VARIANTS[@]}"; do
	min=$(printf '%s\n' ${TIMES[$v]} | sort -g | head -n 1)
	max=$(printf '%s\n' ${TIMES[$v]} | sort -g | tail -n 1)
	awk -v l="${LABEL[$v]}" -v m="${MEDIAN[$v]}" -v lo="$min" -v hi="$max" \
		-v base="${MEDIAN[untracked]}" -v n="$ROWS" -v wal="${WAL[$v]}" \
		'BEGIN { printf "%-32s %10.1f %8.1f %8.1f %6.2fx %9.0f %11.0f\n", l, m, lo, hi, m / base, n / (m / 1000), wal / n }'
done
awk -v t="${MEDIAN[tracked]:-}" -v p="${MEDIAN[plpgsql]:-}" -v g="${MEDIAN[pgq]:-}" -v b="${MEDIAN[untracked]}" -v n="$ROWS" 'BEGIN {
	line = ""
	if (t != "") line = line sprintf(", tracked %.2f us", (t - b) * 1000 / n)
	if (p != "") line = line sprintf(", plpgsql %.2f us", (p - b) * 1000 / n)
	if (g != "") line = line sprintf(", pgq %.2f us", (g - b) * 1000 / n)
	if (line != "") print "added per row (median - untracked):" substr(line, 2)
	if (t != "" && p != "") printf "tracked takes %.2fx the time of the PL/pgSQL audit trigger\n", t / p
	if (t != "") printf "target: tracked <= 1.60x untracked (now %.2fx)\n", t / b }'
if [ "$BACKEND_CPU" = 1 ]; then
	echo
	echo "the backend's CPU time for the timed statement (commit included):"
	printf '%-32s %10s %8s %8s %7s %10s %10s\n' variant "median ms" "min" "max" ratio "system ms" "faults/row"
	cpu_u=$(printf '%s\n' ${CPU[untracked]} | median)
	for v in "${VARIANTS[@]}"; do
		awk -v l="${LABEL[$v]}" -v m="$(printf '%s\n' ${CPU[$v]} | median)" \
			-v lo="$(printf '%s\n' ${CPU[$v]} | sort -g | head -n 1)" \
			-v hi="$(printf '%s\n' ${CPU[$v]} | sort -g | tail -n 1)" \
			-v s="$(printf '%s\n' ${SYS[$v]} | median)" -v f="$(printf '%s\n' ${FAULTS[$v]} | median)" \
			-v base="$cpu_u" -v n="$ROWS" \
			'BEGIN { printf "%-32s %10.1f %8.1f %8.1f %6.2fx %10.0f %10.3f\n", l, m, lo, hi, m / base, s, f / n }'
	done
fi

if [ "$PGB_ROUNDS" -eq 0 ]; then
	echo
	echo "load average at the end: $(loadavg)"
	exit 0
fi

# ------------------------------------------------------------ 2. pgbench

echo
echo "== 2. single-row INSERT transactions: pgbench -n -c $PGB_CLIENTS -j $PGB_CLIENTS -T $PGB_SECONDS, $PGB_ROUNDS rounds =="
"${PSQL[@]}" -d "$BENCH_DB" >/dev/null <<'SQL'
SELECT bench_table('pgb_untracked', 'untracked');
SELECT bench_table('pgb_tracked', 'tracked');
CREATE SEQUENCE pgb_ids;
SQL
for v in untracked tracked; do
	cat >"$WORK/insert_$v.sql" <<SQL
\\set amount random(1, 1000)
INSERT INTO pgb_$v (id, parent_id, name, amount) VALUES (nextval('pgb_ids'), 'bench-root', 'item', :amount);
SQL
done

# pgbench_run VARIANT SECONDS [SETTING...]: prints "tps latency_ms
# wal_bytes_per_transaction" of one run; SETTINGs (name=value) apply to the
# run's sessions.
pgbench_run() {
	local v=$1 seconds=$2 out tps lat txns wal_before wal empty="TRUNCATE pgb_$1" opts=$PGOPTIONS setting
	shift 2
	for setting in "$@"; do opts+=" -c $setting"; done
	[ "$v" = untracked ] || empty+=", notify_ext.event_log"
	"${PSQL[@]}" -d "$BENCH_DB" -c "$empty" -c "VACUUM" -c "CHECKPOINT" >/dev/null
	wal_before=$(q "SELECT pg_current_wal_insert_lsn()")
	out=$(PGOPTIONS=$opts "$PGBENCH" -n -c "$PGB_CLIENTS" -j "$PGB_CLIENTS" -T "$seconds" \
		-f "$WORK/insert_$v.sql" "$BENCH_DB" 2>&1) || die "pgbench ($v) failed: $out"
	wal=$(q "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '$wal_before')")
	tps=$(printf '%s\n' "$out" | sed -n 's/^tps = \([0-9.]*\) .*/\1/p' | tail -n 1)
	lat=$(printf '%s\n' "$out" | sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p')
	txns=$(printf '%s\n' "$out" | sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p')
	[ -n "$tps" ] && [ -n "$txns" ] && [ "$txns" -gt 0 ] || die "no tps from pgbench ($v): $out"
	echo "$tps ${lat:-?} $((wal / txns))"
}

# pgbench_compare ROUNDS SECONDS TARGET [SETTING...]: alternating runs of
# the untracked and the tracked script; prints each round and the medians.
pgbench_compare() {
	local rounds=$1 seconds=$2 target=$3 r v res tps lat wal line tps_u tps_t
	local -A all=() this=() walb=()
	shift 3
	for ((r = 1; r <= rounds; r++)); do
		if ((r % 2)); then order=(untracked tracked); else order=(tracked untracked); fi
		line="round $r:"
		for v in "${order[@]}"; do
			res=$(pgbench_run "$v" "$seconds" "$@")
			read -r tps lat wal <<<"$res"
			this[$v]=$tps
			all[$v]="${all[$v]:-} $tps"
			walb[$v]=$wal
			line+=$(printf '  %s %.1f tps (%s ms)' "$v" "$tps" "$lat")
		done
		[ "$(q "SELECT count(*) = (SELECT count(*) FROM pgb_tracked) FROM notify_ext.event_log
		        WHERE seq > 0 AND operation = 'item.create'")" = t ] \
			|| die "pgbench: the tracked table and the event log disagree"
		line+=$(awk -v t="${this[tracked]}" -v u="${this[untracked]}" 'BEGIN { printf "  ratio %.3f", t / u }')
		echo "$line"
	done
	echo
	printf '%-32s %12s %8s %11s\n' variant "median tps" ratio "WAL B/txn"
	tps_u=$(printf '%s\n' ${all[untracked]} | median)
	tps_t=$(printf '%s\n' ${all[tracked]} | median)
	awk -v u="$tps_u" -v t="$tps_t" -v wu="${walb[untracked]}" -v wt="${walb[tracked]}" -v target="$target" 'BEGIN {
		printf "%-32s %12.1f %7.3fx %11d\n", "untracked table", u, 1, wu
		printf "%-32s %12.1f %7.3fx %11d\n", "notify_ext.track()", t, t / u, wt
		if (target != "") printf "target: tracked >= %sx untracked (now %.3fx)\n", target, t / u }'
}

pgbench_compare "$PGB_ROUNDS" "$PGB_SECONDS" 0.87

# The same without waiting for the WAL flush at commit: on a machine whose
# fsync is slow or shared with other work, the flush hides (and its noise
# swamps) what the trigger costs; this shows the CPU side on its own.
if [ "$NOSYNC_ROUNDS" -gt 0 ]; then
	echo
	echo "== 3. the same with synchronous_commit = off: -T $NOSYNC_SECONDS, $NOSYNC_ROUNDS rounds =="
	pgbench_compare "$NOSYNC_ROUNDS" "$NOSYNC_SECONDS" "" synchronous_commit=off
fi

echo
echo "load average at the end: $(loadavg)"
