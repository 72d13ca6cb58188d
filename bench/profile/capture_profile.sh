#!/usr/bin/env bash
# CPU profile of the notify_ext capture trigger, for optimising it (not a
# benchmark: it is slow and is not run by scripts/bench.sh).
#
# With perf (sampling on cpu-clock, which works where hardware counters do
# not, e.g. in most VMs), against a running server on this machine:
#   bulk-untracked  INSERT ... SELECT of $PROFILE_ROWS rows, no trigger
#   bulk-tracked    the same into a table tracked with notify_ext.track()
#   single-tracked  pgbench, one client, single-row INSERT transactions
# Each profile records only the backend that runs the statement (sampled at
# 2 kHz with DWARF call graphs, which slows it down: the statement's time
# printed here is not a benchmark) and writes $PROFILE_OUT/NAME.txt: perf's
# hottest functions, then perf_stacks.py's summary of the call stacks,
# with where the trigger, the commit-time write and their callees spend
# their time.
#
# Connection: PGHOST, PGPORT, PGUSER, PGDATABASE as for bench/*.sh; the
# server must run on this machine (perf attaches to the backend) and this
# script needs the rights to profile it (root, or perf_event_paranoid <= 1
# as the server's user).
#
# Environment: PROFILE_ROWS (default 200000), PROFILE_SECONDS (pgbench run,
# default 10), PROFILE_OUT (default /tmp/notify_ext_profile), PROFILE_DB
# (default notify_ext_profile, created and dropped).
#
# For deterministic instruction counts instead of samples, see
# callgrind_capture.sh next to this file.
set -euo pipefail

ROWS=${PROFILE_ROWS:-200000}
SECONDS_PGBENCH=${PROFILE_SECONDS:-10}
OUT=${PROFILE_OUT:-/tmp/notify_ext_profile}
DB=${PROFILE_DB:-notify_ext_profile}
MAINT_DB=${PGDATABASE:-postgres}
[ "$MAINT_DB" != "$DB" ] || MAINT_DB=postgres
export PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning"
PSQL=(psql -X -q -v ON_ERROR_STOP=1)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

die() { printf 'capture_profile: %s\n' "$*" >&2; exit 1; }

command -v perf >/dev/null || die "perf is not installed (apt-get install linux-perf)"
perf record -e cpu-clock -o /dev/null -- true >/dev/null 2>&1 \
	|| die "perf cannot record here; try callgrind_capture.sh"

mkdir -p "$OUT"
cleanup() {
	"${PSQL[@]}" -d "$MAINT_DB" -c "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT

"${PSQL[@]}" -d "$MAINT_DB" -c "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" -c "CREATE DATABASE \"$DB\"" >/dev/null
"${PSQL[@]}" -d "$DB" >/dev/null <<'SQL'
CREATE EXTENSION notify_ext;
SELECT notify_ext.register_resource('bench-root', 'project');
CREATE TABLE bulk_untracked (id bigint PRIMARY KEY, parent_id text, name text, amount int,
                             created_at timestamptz DEFAULT now());
CREATE TABLE bulk_tracked (LIKE bulk_untracked INCLUDING ALL);
CREATE TABLE single_tracked (LIKE bulk_untracked INCLUDING ALL);
SELECT notify_ext.track('bulk_tracked', 'item', 'id', 'parent_id');
SELECT notify_ext.track('single_tracked', 'item', 'id', 'parent_id');
CREATE SEQUENCE single_ids;
SQL

# keep_library PID: when the notify_ext.so that the backend has mapped was
# replaced on disk since the server started (make install), perf cannot
# read its symbols; then build a mirror of the file system in which that
# path holds a copy of the mapped file, taken from /proc, for perf report
# --symfs.
PERF_SYMFS=()
keep_library() {
	local pid=$1 range path sym cur symcur c
	read -r range path < <(awk '/notify_ext\.so/ { print $1, $6; exit }' "/proc/$pid/maps") || true
	grep -q 'notify_ext\.so (deleted)' "/proc/$pid/maps" || { PERF_SYMFS=(); return 0; }
	log_note "notify_ext.so was reinstalled after the server started; using the mapped copy"
	cp "/proc/$pid/map_files/$range" "$OUT/notify_ext.so.mapped" || die "cannot copy the mapped notify_ext.so"
	sym=$OUT/symfs
	rm -rf "$sym"
	cur=/
	symcur=$sym
	IFS=/ read -ra comps <<<"${path#/}"
	for c in "${comps[@]}"; do
		mirror_dir "$cur" "$symcur" "$c"
		cur=${cur%/}/$c
		symcur=$symcur/$c
	done
	rmdir "$symcur"
	cp "$OUT/notify_ext.so.mapped" "$symcur"
	cp "$OUT/notify_ext.so.mapped" "$symcur (deleted)"
	PERF_SYMFS=(--symfs="$sym")
}

# mirror_dir DIR MIRROR SKIP: MIRROR gets a symlink to every entry of DIR
# but SKIP, which becomes an empty directory.
mirror_dir() {
	mkdir -p "$2"
	ln -s "$1"/* "$2"/
	ln -s "$1"/.[!.]* "$2"/ 2>/dev/null || true
	rm -f "$2/$3"
	mkdir "$2/$3"
}

log_note() { printf 'capture_profile: %s\n' "$*" >&2; }

# report NAME ROOT...: text report of $OUT/NAME.data: the hottest functions
# as perf names them, then perf_stacks.py's summary of the call stacks with
# what each ROOT spends its time on.
report() {
	local name=$1 data="$OUT/$1.data" txt="$OUT/$1.txt" roots=() r
	shift
	for r in "$@"; do roots+=(--root "$r"); done
	{
		echo "##### $name: hottest functions, self time (perf report)"
		perf report -i "$data" "${PERF_SYMFS[@]}" --no-children --sort dso,sym -g none \
			--percent-limit 0.5 --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' || true
		echo
		echo "##### $name: call stacks (perf_stacks.py)"
		perf script -i "$data" "${PERF_SYMFS[@]}" -F comm,tid,ip,sym,dso 2>/dev/null \
			| python3 "$HERE/perf_stacks.py" "${roots[@]}"
	} >"$txt"
	echo "wrote $txt"
}

# profile_statement NAME SQL ROOT...: profiles the backend running SQL.
profile_statement() {
	local name=$1 sql=$2 pid line perfpid
	coproc SESSION { "${PSQL[@]}" -At -d "$DB" 2>&1; }
	echo "SELECT pg_backend_pid();" >&"${SESSION[1]}"
	read -r -t 60 pid <&"${SESSION[0]}" || die "no answer from the session"
	[[ $pid =~ ^[0-9]+$ ]] || die "could not start a session: $pid"
	keep_library "$pid"
	# Warm the session's caches (and the trigger's) on a few rows, then
	# start from a clean table and checkpoint.
	echo "BEGIN; ${sql//\$N/100}; ROLLBACK; VACUUM; CHECKPOINT; SELECT 'ready';" >&"${SESSION[1]}"
	read -r -t 600 line <&"${SESSION[0]}" || die "$name: warm-up timed out"
	[ "$line" = ready ] || die "$name warm-up: $line"
	perf record -e cpu-clock -F 2000 -m 1024 --call-graph dwarf,32768 -p "$pid" -o "$OUT/$name.data" \
		>/dev/null 2>"$OUT/$name.perf.log" &
	perfpid=$!
	sleep 1
	echo "\\timing on
${sql//\$N/$ROWS};
\\timing off
SELECT 'done';" >&"${SESSION[1]}"
	while read -r -t 3600 line <&"${SESSION[0]}"; do
		case $line in
		done) break ;;
		Time:*) echo "$name: $line" ;;
		*ERROR:*) kill -INT "$perfpid"; die "$name: $line" ;;
		esac
	done
	[ "$line" = done ] || { kill -INT "$perfpid"; die "$name: the session ended early"; }
	kill -INT "$perfpid"
	wait "$perfpid" || true
	echo '\q' >&"${SESSION[1]}"
	wait "$SESSION_PID" 2>/dev/null || true
	shift 2
	report "$name" "$@"
}

BULK="INSERT INTO TABLE (id, parent_id, name, amount)
SELECT g, 'bench-root', 'item ' || g, (g % 1000)::int FROM generate_series(1, \$N) g"
profile_statement bulk-untracked "${BULK/TABLE/bulk_untracked}" \
	standard_ExecutorRun heap_insert ExecInsertIndexTuples CommitTransactionCommand
profile_statement bulk-tracked "${BULK/TABLE/bulk_tracked}" \
	standard_ExecutorRun AfterTriggerEndQuery notify_ext_capture buffer_event rowjson_append \
	CommitTransactionCommand write_events table_multi_insert ExecInsertIndexTuples

# Single-row transactions: profile one pgbench client's backend.
cat >"$OUT/single.sql" <<'SQL'
INSERT INTO single_tracked (id, parent_id, name, amount) VALUES (nextval('single_ids'), 'bench-root', 'item', 42);
SQL
"${PSQL[@]}" -d "$DB" -c "CHECKPOINT" >/dev/null
pgbench -n -c 1 -j 1 -T "$SECONDS_PGBENCH" -f "$OUT/single.sql" "$DB" >"$OUT/single-tracked.pgbench.log" 2>&1 &
pgbench_pid=$!
# pgbench's first connection only looks around; wait for the client's.
sleep 1
pid=
for _ in $(seq 50); do
	pid=$("${PSQL[@]}" -At -d "$MAINT_DB" -c "SELECT pid FROM pg_stat_activity
		WHERE datname = '$DB' AND application_name = 'pgbench' ORDER BY backend_start DESC LIMIT 1")
	[ -z "$pid" ] || break
	sleep 0.1
done
[ -n "$pid" ] && [ -d "/proc/$pid" ] || die "pgbench's backend did not show up"
keep_library "$pid"
perf record -e cpu-clock -F 2000 -m 1024 --call-graph dwarf,32768 -p "$pid" -o "$OUT/single-tracked.data" \
	-- sleep $((SECONDS_PGBENCH > 4 ? SECONDS_PGBENCH - 3 : 1)) >/dev/null 2>"$OUT/single-tracked.perf.log" || true
wait "$pgbench_pid" || die "pgbench failed: $(cat "$OUT/single-tracked.pgbench.log")"
grep -E '^(tps|latency average)' "$OUT/single-tracked.pgbench.log" | sed 's/^/single-tracked: /'
report single-tracked PortalRun notify_ext_capture lookup_resource SPI_execute_plan \
	CommitTransactionCommand capture_xact_callback write_events XLogFlush
