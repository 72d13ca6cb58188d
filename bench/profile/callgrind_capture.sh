#!/usr/bin/env bash
# Instruction counts of the notify_ext capture trigger with valgrind's
# callgrind: deterministic, so a change to the trigger can be judged by a
# few percent, where timings cannot.  Not a benchmark and not run by
# scripts/bench.sh; it needs valgrind and the server binaries of this
# machine, and builds a throwaway cluster of its own in $CALLGRIND_OUT (set
# up through a short-lived server on a socket there, measured in
# single-user mode).
#
# It counts the instructions of the backend (everything run for the SQL
# statements, commit included, not start-up) for
#   bulk      INSERT ... SELECT FROM generate_series of N rows
#   single    K single-row INSERT statements, each its own transaction
# into an untracked and a tracked table, at two sizes each, and prints the
# marginal cost per row / per transaction (so one-off costs such as cache
# loading cancel out), plus the hottest functions of the larger runs.
#
# Environment: CALLGRIND_ROWS (default 20000), CALLGRIND_TXNS (default
# 1000), CALLGRIND_OUT (default /tmp/notify_ext_callgrind), PG_CONFIG.
set -euo pipefail

ROWS=${CALLGRIND_ROWS:-20000}
TXNS=${CALLGRIND_TXNS:-1000}
OUT=${CALLGRIND_OUT:-/tmp/notify_ext_callgrind}
PGBIN=$(${PG_CONFIG:-pg_config} --bindir)

die() { printf 'callgrind_capture: %s\n' "$*" >&2; exit 1; }
command -v valgrind >/dev/null || die "valgrind is not installed"
command -v callgrind_annotate >/dev/null || die "callgrind_annotate is not installed"

# The server refuses to run as root.
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# Only ever replace a directory this script made.
if [ -d "$OUT" ] && [ -n "$(ls -A "$OUT")" ] && [ ! -f "$OUT/setup.sql" ]; then
	die "$OUT exists and was not made by this script; set CALLGRIND_OUT"
fi
rm -rf "$OUT"
mkdir -p "$OUT"
[ "$(id -u)" -ne 0 ] || chown postgres "$OUT"
PGDATA=$OUT/data
as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 >"$OUT/initdb.log"
as_pg tee -a "$PGDATA/postgresql.conf" >/dev/null <<'EOF'
shared_preload_libraries = 'notify_ext'
shared_buffers = 256MB
max_wal_size = 4GB
fsync = off
EOF

# setup FILE: runs FILE with psql on a short-lived server (single-user mode
# hands out OIDs below 16384, which notify_ext.track() takes for catalogs).
setup() {
	as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$OUT/setup-server.log" -w \
		-o "-c listen_addresses='' -c unix_socket_directories='$OUT' -p 5499" start >/dev/null \
		|| die "the setup server did not start: $(tail -n 5 "$OUT/setup-server.log")"
	"$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$OUT" -p 5499 -U postgres -d postgres -f "$1" >"$1.log" 2>&1 \
		|| { as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null; die "$1: $(tail -n 5 "$1.log")"; }
	as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
}

# One table per measured run, so each starts empty.
TABLES=(bulk_u_small bulk_u_big bulk_t_small bulk_t_big single_u_small single_u_big single_t_small single_t_big)
{
	printf 'CREATE EXTENSION notify_ext;\n'
	printf "SELECT notify_ext.register_resource('bench-root', 'project');\n"
	for t in "${TABLES[@]}"; do
		printf 'CREATE TABLE %s (id bigint PRIMARY KEY, parent_id text, name text, amount int, created_at timestamptz DEFAULT now());\n' "$t"
		case $t in
		*_t_*) printf "SELECT notify_ext.track('%s', 'item', 'id', 'parent_id');\n" "$t" ;;
		esac
	done
	printf 'CHECKPOINT;\n'
} >"$OUT/setup.sql"
setup "$OUT/setup.sql"

# What one statement runs, from its transaction's start to its commit (the
# stripped server binary has no symbol for exec_simple_query itself).
COLLECT=()
for f in StartTransactionCommand pg_parse_query pg_analyze_and_rewrite_fixedparams pg_plan_queries \
	PortalRun CommitTransactionCommand; do
	COLLECT+=("--toggle-collect=$f")
done

# measure NAME SQLFILE: callgrind over the statements of SQLFILE, one
# transaction per line (no -j); prints the instructions they took.
measure() {
	local name=$1 sql=$2 cg="$OUT/$1.callgrind"
	as_pg valgrind --tool=callgrind --callgrind-out-file="$cg" \
		--collect-atstart=no "${COLLECT[@]}" \
		"$PGBIN/postgres" --single -D "$PGDATA" postgres <"$sql" >"$OUT/$name.log" 2>&1 \
		|| die "$name failed: $(tail -n 5 "$OUT/$name.log")"
	! grep -q 'ERROR:' "$OUT/$name.log" || die "$name: $(grep -m1 'ERROR:' "$OUT/$name.log")"
	sed -n 's/^==[0-9]*== Collected : \([0-9]*\)$/\1/p' "$OUT/$name.log"
}

bulk_sql() {	# TABLE N
	printf "INSERT INTO %s (id, parent_id, name, amount) SELECT g, 'bench-root', 'item ' || g, (g %% 1000)::int FROM generate_series(1, %d) g;\n" "$1" "$2"
}
single_sql() {	# TABLE K
	local i
	for ((i = 1; i <= $2; i++)); do
		printf "INSERT INTO %s (id, parent_id, name, amount) VALUES (%d, 'bench-root', 'item', 42);\n" "$1" "$i"
	done
}

small_rows=$((ROWS / 10))
small_txns=$((TXNS / 10))
declare -A IR=()
for v in u t; do
	bulk_sql "bulk_${v}_small" "$small_rows" >"$OUT/bulk_${v}_small.sql"
	bulk_sql "bulk_${v}_big" "$ROWS" >"$OUT/bulk_${v}_big.sql"
	single_sql "single_${v}_small" "$small_txns" >"$OUT/single_${v}_small.sql"
	single_sql "single_${v}_big" "$TXNS" >"$OUT/single_${v}_big.sql"
	for run in bulk_${v}_small bulk_${v}_big single_${v}_small single_${v}_big; do
		IR[$run]=$(measure "$run" "$OUT/$run.sql")
		echo "$run: ${IR[$run]} instructions" >&2
	done
done

echo "instructions (callgrind Ir), marginal cost per row / per transaction"
awk -v us="${IR[bulk_u_small]}" -v ub="${IR[bulk_u_big]}" -v ts="${IR[bulk_t_small]}" -v tb="${IR[bulk_t_big]}" \
	-v n1="$small_rows" -v n2="$ROWS" 'BEGIN {
	u = (ub - us) / (n2 - n1); t = (tb - ts) / (n2 - n1)
	printf "bulk insert:    untracked %8.0f per row   tracked %8.0f per row   ratio %.2fx  (trigger %+.0f)\n", u, t, t / u, t - u }'
awk -v us="${IR[single_u_small]}" -v ub="${IR[single_u_big]}" -v ts="${IR[single_t_small]}" -v tb="${IR[single_t_big]}" \
	-v n1="$small_txns" -v n2="$TXNS" 'BEGIN {
	u = (ub - us) / (n2 - n1); t = (tb - ts) / (n2 - n1)
	printf "single-row txn: untracked %8.0f per txn   tracked %8.0f per txn   ratio %.2fx  (trigger %+.0f)\n", u, t, t / u, t - u }'

# top_lines N: the first N functions of a callgrind_annotate listing.
top_lines() {
	awk -v n="$1" '/^-+$/ { dashes++; next } dashes >= 4 && NF && shown < n { print; shown++ }'
}

for run in bulk_t_big single_t_big bulk_u_big single_u_big; do
	{
		echo "##### $run: inclusive"
		callgrind_annotate --inclusive=yes --auto=no "$OUT/$run.callgrind" 2>/dev/null | top_lines 80
		echo
		echo "##### $run: self"
		callgrind_annotate --inclusive=no --auto=no "$OUT/$run.callgrind" 2>/dev/null | top_lines 60
	} >"$OUT/$run.txt"
done
echo "reports: $OUT/{bulk,single}_{t,u}_big.txt; raw: $OUT/*.callgrind (kcachegrind, callgrind_annotate --tree=both)"
