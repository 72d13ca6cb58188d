#!/usr/bin/env bash
# Runs one benchmark against several builds of notify_ext in turn, round
# after round, so that every build meets the same load on a shared machine.
# Each build is a PostgreSQL installation notify_ext was installed into
# (make install PG_CONFIG=<its bin>/pg_config); each gets a throwaway
# cluster configured like scripts/bench.sh's, all running for the whole
# comparison and idle but for the one measured.
#
#   BENCH_AB_BUILDS="main=/opt/pg-a/usr/lib/postgresql/15/bin other=/opt/pg-b/..."
#   BENCH_AB_ROUNDS=3 bench/ab/compare_builds.sh bench/retention_bench.sh
#
# Prints each round's output under "==== round R: NAME ====".  Clusters live
# in $NOTIFY_EXT_RUN_DIR/NAME (default /tmp/notify_ext-ab/NAME) on ports from
# $NOTIFY_EXT_PORT (default 5700) upwards.  Not run by scripts/bench.sh.
set -euo pipefail

BENCH=${1:?usage: compare_builds.sh BENCHMARK [ARGS...]}
shift
ROUNDS=${BENCH_AB_ROUNDS:-3}
BASE_DIR=${NOTIFY_EXT_RUN_DIR:-/tmp/notify_ext-ab}
BASE_PORT=${NOTIFY_EXT_PORT:-5700}
LIB=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../scripts" && pwd)/lib.sh
BENCH_CONF="
shared_buffers = 2GB
max_wal_size = 8GB
checkpoint_timeout = 30min
work_mem = 16MB
"
read -r -a builds <<<"${BENCH_AB_BUILDS:?set BENCH_AB_BUILDS}"

# cluster ACTION NAME BIN PORT: starts or stops the cluster of one build.
cluster() (
	export NOTIFY_EXT_PGBIN=$3 NOTIFY_EXT_RUN_DIR=$BASE_DIR/$2 NOTIFY_EXT_PORT=$4
	. "$LIB"
	set_run_dir "$2"
	if [ "$1" = start ]; then
		cluster_init postgres "$BENCH_CONF"
		cluster_start
	else
		cluster_stop
	fi
)

stop_all() {
	local i=0 b
	for b in "${builds[@]}"; do
		cluster stop "${b%%=*}" "${b#*=}" $((BASE_PORT + i)) || true
		i=$((i + 1))
	done
}
trap stop_all EXIT

i=0
for b in "${builds[@]}"; do
	cluster start "${b%%=*}" "${b#*=}" $((BASE_PORT + i))
	i=$((i + 1))
done

for ((round = 1; round <= ROUNDS; round++)); do
	i=0
	for b in "${builds[@]}"; do
		name=${b%%=*} bin=${b#*=}
		echo "==== round $round: $name ===="
		(
			export PGHOST=$BASE_DIR/$name/sock PGPORT=$((BASE_PORT + i)) PGUSER=postgres
			export PGDATABASE=postgres PATH=$bin:$PATH
			unset PGOPTIONS
			bash "$BENCH" "$@" </dev/null
		) || echo "$BENCH failed against $name"
		i=$((i + 1))
	done
done
