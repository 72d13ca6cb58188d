#!/usr/bin/env bash
# Builds and installs notify_ext, starts a throwaway cluster in .run/ and
# runs every test suite against it:
#   regress    pg_regress, test/sql/*.sql against test/expected/*.out
#   isolation  pg_isolation_regress, test/specs/*.spec against test/expected/*.out
#   e2e        pytest, test/e2e/test_*.py (the relay tests start their own
#              nats-server with JetStream per module, on 127.0.0.1 and a free
#              port, its store in the run directory, and stop it after)
#   python     pytest, clients/python/tests/test_*.py (the Python client)
#   node       node --test, clients/node/test/*.test.js (the Node.js client)
#   browser    node --test, examples/inbox-web/test/*.test.js (the inbox page
#              in headless Chromium; screenshot in <run dir>/inbox-web.png)
# Both pg_regress suites run through the Makefile's `make installcheck`, in a
# copy of test/ under the run directory, so that concurrent runs never write
# into the source tree (results: <run dir>/check/test/results and
# <run dir>/check/test/output_iso/results).
#
# Ends with the line "N passed, N failed" summed over all suites and exits
# non-zero when anything failed.
#
# Environment: NOTIFY_EXT_RUN_DIR, NOTIFY_EXT_PORT (see scripts/lib.sh),
# NOTIFY_EXT_SUITE_TIMEOUT (seconds per suite, default 900),
# NOTIFY_EXT_PYTEST_ARGS (extra pytest arguments, e.g. "-k crash"; for the
# e2e and python suites).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SUITE_TIMEOUT=${NOTIFY_EXT_SUITE_TIMEOUT:-900}

# Settings the tests rely on, on top of the ones every throwaway cluster has.
#
# synchronous_standby_names names a standby that never connects, while
# synchronous_commit = local keeps ordinary commits from waiting for it.  A
# session that sets synchronous_commit = on then blocks inside COMMIT (after
# its events were numbered and its commit record flushed, before it becomes
# visible) until it is cancelled with pg_cancel_backend().  The isolation
# spec commit_order.spec runs that COMMIT over dblink, so that the spec's own
# sessions go on meanwhile.  fsync stays on: the e2e crash tests stop the
# server with -m immediate and count on committed events surviving.
TEST_CONF="
# Tests hold a transaction inside its COMMIT by setting synchronous_commit = on
# in one session: the standby below never connects, so that COMMIT waits until
# it is cancelled. Every other session commits locally.
synchronous_standby_names = 'notify_ext_absent_standby'
synchronous_commit = local
fsync = on
# Room for notify_ext's workers (webhooks, summaries, drops, pg_cron calls)
# of many test databases next to parallel queries.
max_worker_processes = 32
"

TOTAL_PASSED=0
TOTAL_FAILED=0
SUMMARY=()

# run_suite OUTPUT_FILE COMMAND...: runs COMMAND under the suite timeout,
# showing its output as it comes and keeping a copy in OUTPUT_FILE (or not,
# for an empty name); returns its exit status.  It runs in the background
# (timeout puts it in a process group of its own) so that an interrupt
# reaches on_signal at once, which ends the whole group.
SUITE_PID=
run_suite() {
	local out=$1 rc=0 tail_pid=
	shift
	if [ -n "$out" ]; then
		: >"$out"
		timeout --kill-after=30 "$SUITE_TIMEOUT" "$@" </dev/null >"$out" 2>&1 &
		SUITE_PID=$!
		tail -n +1 -f --pid="$SUITE_PID" "$out" &
		tail_pid=$!
	else
		timeout --kill-after=30 "$SUITE_TIMEOUT" "$@" </dev/null &
		SUITE_PID=$!
	fi
	wait "$SUITE_PID" || rc=$?
	SUITE_PID=
	[ -z "$tail_pid" ] || wait "$tail_pid" || true
	return "$rc"
}

# suite_started: marks the start of a suite, for the time record() shows.
SUITE_STARTED=
suite_started() { SUITE_STARTED=$SECONDS; }

# record SUITE PASSED FAILED NOTE
record() {
	local took=
	[ -z "$SUITE_STARTED" ] || took=$(printf '%5ds' $((SECONDS - SUITE_STARTED)))
	SUITE_STARTED=
	TOTAL_PASSED=$((TOTAL_PASSED + $2))
	TOTAL_FAILED=$((TOTAL_FAILED + $3))
	SUMMARY+=("$(printf '  %-10s %4d passed, %4d failed %6s%s' "$1" "$2" "$3" "$took" "${4:+  ($4)}")")
}

# show_diffs FILE: the first lines of a regression.diffs.
show_diffs() {
	local f=$1 max=300 n
	[ -s "$f" ] || return 0
	n=$(wc -l <"$f")
	echo "---- $f (${n} lines) ----"
	head -n "$max" "$f"
	[ "$n" -le "$max" ] || echo "... $((n - max)) more lines in $f"
	echo "----"
}

# count_pg_regress OUTPUT_FILE: prints "passed failed" from pg_regress's
# per-test lines ("test foo ... ok", "     foo ... FAILED").
count_pg_regress() {
	awk '
		/ \.\.\. ok( |$)/      { p++ }
		/ \.\.\. FAILED( |$)/  { f++ }
		END { printf "%d %d\n", p, f }' "$1"
}

# run_installcheck SUITE: one of the two pg_regress suites via make installcheck.
run_installcheck() {
	local suite=$1 check=$RUN_DIR/check out rc=0 p f diffs note=
	out=$RUN_DIR/$suite.out
	local only=()
	case $suite in
	regress)
		only=(ISOLATION=)
		diffs=$check/test/regression.diffs
		;;
	isolation)
		only=(REGRESS=)
		diffs=$check/test/output_iso/regression.diffs
		;;
	esac

	echo
	echo "======== $suite ========"
	suite_started
	run_suite "$out" make --no-print-directory -C "$check" -f "$REPO_DIR/Makefile" \
		PG_CONFIG="$PG_CONFIG" "${only[@]}" installcheck || rc=$?
	read -r p f < <(count_pg_regress "$out")
	if [ "$rc" -ne 0 ]; then
		[ "$rc" -ne 124 ] || note="timed out after ${SUITE_TIMEOUT}s"
		if [ "$f" -eq 0 ]; then
			f=1
			note=${note:-"make installcheck exited with $rc"}
		fi
		show_diffs "$diffs"
	fi
	record "$suite" "$p" "$f" "$note"
}

# Copies the pg_regress inputs into the run directory and runs both suites.
run_pg_regress_suites() {
	local check=$RUN_DIR/check d
	rm -rf "$check"
	mkdir -p "$check/test"
	cp "$REPO_DIR/notify_ext.control" "$check/"
	for d in sql expected specs input output data; do
		[ ! -d "$REPO_DIR/test/$d" ] || cp -a "$REPO_DIR/test/$d" "$check/test/"
	done

	if compgen -G "$REPO_DIR/test/sql/*.sql" >/dev/null; then
		run_installcheck regress
	else
		record regress 0 0 "no tests in test/sql"
	fi
	if compgen -G "$REPO_DIR/test/specs/*.spec" >/dev/null; then
		run_installcheck isolation
	else
		record isolation 0 0 "no tests in test/specs"
	fi
}

# run_pytest SUITE DIR: pytest over DIR/test_*.py against the cluster.
run_pytest() {
	local suite=$1 dir=$2 junit rc=0 p f note=
	junit=$RUN_DIR/$suite-junit.xml
	if ! compgen -G "$dir/test_*.py" >/dev/null; then
		record "$suite" 0 0 "no tests in ${dir#"$REPO_DIR"/}"
		return
	fi
	echo
	echo "======== $suite ========"
	suite_started
	rm -f "$junit"
	# shellcheck disable=SC2086
	run_suite "" env \
		NOTIFY_EXT_TEST_DSN="host=$SOCK_DIR port=$PGPORT dbname=notify_ext_e2e user=postgres" \
		NOTIFY_EXT_PGDATA="$PGDATA" \
		NOTIFY_EXT_PGBIN="$PGBIN" \
		NOTIFY_EXT_PGLOG="$PG_LOG" \
		PYTHONDONTWRITEBYTECODE=1 \
		"$PYTHON" -m pytest -p no:cacheprovider -rfE --junitxml="$junit" \
		${NOTIFY_EXT_PYTEST_ARGS:-} "$dir" || rc=$?
	p=0 f=0
	if [ -s "$junit" ]; then
		read -r p f < <("$PYTHON" - "$junit" <<'PY'
import sys
import xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
tests = failed = skipped = 0
for s in suites:
    tests += int(s.get("tests", 0))
    failed += int(s.get("failures", 0)) + int(s.get("errors", 0))
    skipped += int(s.get("skipped", 0))
print(tests - failed - skipped, failed)
PY
		)
	fi
	case $rc in
	0) ;;
	5) note="no tests collected" ;;
	*)
		[ "$rc" -ne 124 ] || note="timed out after ${SUITE_TIMEOUT}s"
		if [ "$f" -eq 0 ]; then
			f=1
			note=${note:-"pytest exited with $rc"}
		fi
		;;
	esac
	record "$suite" "$p" "$f" "$note"
}

# count_node_tap OUTPUT_FILE: prints "passed failed" from the closing
# summary of node --test --test-reporter=tap ("# pass N", "# fail N",
# "# cancelled N"; cancelled tests count as failed).
count_node_tap() {
	awk '
		/^# pass [0-9]+$/      { p = $3 }
		/^# fail [0-9]+$/      { f = $3 }
		/^# cancelled [0-9]+$/ { c = $3 }
		END { printf "%d %d\n", p, f + c }' "$1"
}

# run_node_tests SUITE DIR: npm ci in DIR, then node --test over
# DIR/test/*.test.js against the cluster.
run_node_tests() {
	local suite=$1 dir=$2 out rc=0 p f note= files
	out=$RUN_DIR/$suite.out
	files=("$dir"/test/*.test.js)
	if [ ! -e "${files[0]}" ]; then
		record "$suite" 0 0 "no tests in ${dir#"$REPO_DIR"/}/test"
		return
	fi
	echo
	echo "======== $suite ========"
	suite_started
	if ! npm_ci "$dir"; then
		record "$suite" 0 1 "npm ci failed in ${dir#"$REPO_DIR"/}"
		return
	fi
	run_suite "$out" env \
		NOTIFY_EXT_RUN_DIR="$RUN_DIR" \
		NOTIFY_EXT_PGDATA="$PGDATA" \
		NOTIFY_EXT_PGBIN="$PGBIN" \
		NOTIFY_EXT_PGLOG="$PG_LOG" \
		node --test --test-reporter=tap "${files[@]}" || rc=$?
	read -r p f < <(count_node_tap "$out")
	if [ "$rc" -ne 0 ]; then
		[ "$rc" -ne 124 ] || note="timed out after ${SUITE_TIMEOUT}s"
		if [ "$f" -eq 0 ]; then
			f=1
			note=${note:-"node --test exited with $rc"}
		fi
	fi
	record "$suite" "$p" "$f" "$note"
}

# A set-up step that fails (packages, build, cluster) counts as one failure,
# so that the run still ends with its summary line.
die() {
	printf 'error: %s\n' "$*" >&2
	cluster_stop >/dev/null 2>&1 || true
	trap - EXIT
	echo "$TOTAL_PASSED passed, $((TOTAL_FAILED + 1)) failed"
	exit 1
}

on_exit() {
	cluster_stop >/dev/null 2>&1 || true
}

on_signal() {
	[ -z "$SUITE_PID" ] || kill -TERM -- "-$SUITE_PID" 2>/dev/null || true
	exit 130
}

ensure_packages
build_install
set_run_dir .run
trap on_exit EXIT
trap on_signal INT TERM
cluster_init postgres "$TEST_CONF"
cluster_start

run_pg_regress_suites
run_pytest e2e "$REPO_DIR/test/e2e"
run_pytest python "$REPO_DIR/clients/python/tests"
run_node_tests node "$REPO_DIR/clients/node"
run_node_tests browser "$REPO_DIR/examples/inbox-web"

if [ "$TOTAL_FAILED" -ne 0 ]; then
	echo
	echo "---- last lines of the server log ($PG_LOG) ----"
	tail -n 40 "$PG_LOG" || true
	echo "----"
fi

cluster_stop
trap - EXIT

echo
echo "Summary:"
printf '%s\n' "${SUMMARY[@]}"
echo "$TOTAL_PASSED passed, $TOTAL_FAILED failed"
[ "$TOTAL_FAILED" -eq 0 ]
