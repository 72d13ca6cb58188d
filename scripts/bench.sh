#!/usr/bin/env bash
# Builds and installs notify_ext, starts a cluster in .run-bench/ and runs
# every bench/*.sh against it, printing what each prints.  Each benchmark
# gets PGHOST, PGPORT, PGDATABASE and PGUSER in its environment (a fresh
# database with notify_ext created in it) and the server's binaries first on
# PATH; it may create databases of its own.  Unlike the demo and the tests,
# the cluster is kept between runs (so is what benchmarks leave in it);
# NOTIFY_EXT_BENCH_FRESH=1 starts from a new one.
#
# Environment: NOTIFY_EXT_RUN_DIR (default <repo>/.run-bench), NOTIFY_EXT_PORT,
# NOTIFY_EXT_BENCH_FRESH, NOTIFY_EXT_BENCH_ONLY.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BENCH_DB=notify_ext_bench

shopt -s nullglob
benches=("$REPO_DIR"/bench/*.sh)
shopt -u nullglob
# NOTIFY_EXT_BENCH_ONLY="events consumer" runs only bench/events_bench.sh and
# bench/consumer_bench.sh.
if [ -n "${NOTIFY_EXT_BENCH_ONLY:-}" ]; then
	chosen=()
	for name in $NOTIFY_EXT_BENCH_ONLY; do
		chosen+=("$REPO_DIR/bench/${name}_bench.sh")
	done
	benches=("${chosen[@]}")
fi
if [ ${#benches[@]} -eq 0 ]; then
	echo "no benchmarks in bench/"
	exit 0
fi

ensure_packages
build_install
set_run_dir .run-bench
trap cluster_stop EXIT
reuse=reuse
[ "${NOTIFY_EXT_BENCH_FRESH:-0}" = 0 ] || reuse=
# Sized like a small production server rather than initdb's defaults.
BENCH_CONF="
shared_buffers = 2GB
max_wal_size = 8GB
checkpoint_timeout = 30min
work_mem = 16MB
"
cluster_init postgres "$BENCH_CONF" "$reuse"
cluster_start

export PGDATABASE=$BENCH_DB
export PATH=$PGBIN:$PATH
failed=0
for b in "${benches[@]}"; do
	pg_create_db "$BENCH_DB" >/dev/null
	pg_psql -d "$BENCH_DB" -c "CREATE EXTENSION notify_ext"
	echo
	echo "======== bench/$(basename "$b") ========"
	if ! (cd "$REPO_DIR" && bash "$b" </dev/null); then
		echo "bench/$(basename "$b") failed"
		failed=$((failed + 1))
	fi
done

cluster_stop
trap - EXIT
[ "$failed" -eq 0 ]
