# Shared shell code for scripts/demo.sh, scripts/test.sh, scripts/bench.sh and
# scripts/inbox-web.sh.
# Source it; it does not run anything by itself.
#
# Environment:
#   NOTIFY_EXT_RUN_DIR  where the throwaway cluster lives (default <repo>/.run;
#                       bench.sh uses <repo>/.run-bench)
#   NOTIFY_EXT_PORT     the cluster's port, i.e. its socket name (default 5432)
#   NOTIFY_EXT_PGBIN    the PostgreSQL binaries to build against and run
#                       (default Debian's /usr/lib/postgresql/15/bin); a copy
#                       of the server elsewhere gets its own installation
#
# The cluster listens on a Unix socket in $RUN_DIR/sock only
# (listen_addresses = ''), so clusters in different run directories never
# clash, whatever their ports.

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_MAJOR=15
PGBIN=${NOTIFY_EXT_PGBIN:-/usr/lib/postgresql/$PG_MAJOR/bin}
PG_CONFIG=$PGBIN/pg_config
BUILD_LOCK=/tmp/notify_ext_build$(printf '%s' "$PGBIN" | cksum | cut -d' ' -f1).lock
PG_OS_USER=postgres
# Debian's interpreter, which python3-pytest and python3-psycopg are for
# (another python3 may come first on PATH).
PYTHON=/usr/bin/python3

# nodejs and chromium are for the client libraries and the inbox page
# (clients/node, examples/inbox-web) and their browser test.  npm comes with
# some builds of nodejs and is a package of its own in Debian's: it is
# installed only when there is no npm command (see ensure_packages).
REQUIRED_PACKAGES=(
	postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR
	libsodium-dev libcurl4-openssl-dev
	nats-server libnats-dev openssl
	postgresql-$PG_MAJOR-cron postgresql-$PG_MAJOR-pgq3
	python3-psycopg python3-pytest
	nodejs chromium
	make gcc
)

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# Runs a command as the OS user that owns the cluster: postgres when we are
# root (the server refuses to run as root), ourselves otherwise.  The run
# directory's lock (fd 9) is not handed down, so that a server never holds it.
as_pg() {
	if is_root; then
		runuser -u "$PG_OS_USER" -- "$@" 9>&-
	else
		"$@" 9>&-
	fi
}

# ---------------------------------------------------------------- packages

ensure_packages() {
	local missing=() p status
	for p in "${REQUIRED_PACKAGES[@]}"; do
		status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
		[ "$status" = "install ok installed" ] || missing+=("$p")
	done
	# Debian's nodejs comes without npm, other builds (e.g. NodeSource's)
	# with it, and conflict with Debian's npm package.
	command -v npm >/dev/null 2>&1 || missing+=(npm)
	if [ ${#missing[@]} -eq 0 ]; then
		return 0
	fi
	log "installing: ${missing[*]}"
	local sudo=()
	if ! is_root; then
		command -v sudo >/dev/null || die "missing packages (${missing[*]}) and not root"
		sudo=(sudo)
	fi
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q \
		|| die "apt-get update failed"
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
		--no-install-recommends "${missing[@]}" </dev/null \
		|| die "apt-get install failed"
}

# npm_ci DIR: installs DIR's node packages exactly as its package-lock.json
# says (npm ci), from npm's cache when it can.  Skipped when node_modules was
# installed from the same package.json and package-lock.json already.
npm_ci() {
	local dir=$1 sum stamp lock
	stamp=$dir/node_modules/.notify_ext_installed
	sum=$(cat "$dir/package.json" "$dir/package-lock.json" | cksum | cut -d' ' -f1)
	if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sum" ]; then
		return 0
	fi
	log "installing node packages in ${dir#"$REPO_DIR"/} (npm ci)"
	lock=/tmp/notify_ext_npm$(printf '%s' "$dir" | cksum | cut -d' ' -f1).lock
	# puppeteer-core never downloads a browser; PUPPETEER_SKIP_DOWNLOAD
	# keeps it that way should a dependency ever try.
	(cd "$dir" && flock "$lock" env PUPPETEER_SKIP_DOWNLOAD=1 \
		npm ci --prefer-offline --no-audit --no-fund --loglevel=error </dev/null) || return 1
	echo "$sum" >"$stamp"
}

# ---------------------------------------------------------------- build

# make, then make install, under a lock shared by everyone building in
# this tree.
build_install() {
	local jobs
	jobs=$(nproc 2>/dev/null || echo 2)
	log "building notify_ext"
	(cd "$REPO_DIR" && flock "$BUILD_LOCK" make -s -j"$jobs" PG_CONFIG="$PG_CONFIG") \
		|| die "build failed"
	log "installing notify_ext"
	(cd "$REPO_DIR" && flock "$BUILD_LOCK" make -s install PG_CONFIG="$PG_CONFIG") >/dev/null \
		|| die "make install failed"
}

# ---------------------------------------------------------------- cluster

# set_run_dir DEFAULT_NAME: sets RUN_DIR, PGDATA, SOCK_DIR, PG_LOG and the
# libpq variables, and takes the run directory's lock so that two runs
# cannot share one cluster.
set_run_dir() {
	local name=$1 explicit=${NOTIFY_EXT_RUN_DIR:-}
	RUN_DIR=${explicit:-$REPO_DIR/$name}
	if is_root; then
		local parent
		parent=$(dirname "$RUN_DIR")
		mkdir -p "$parent"
		if ! runuser -u "$PG_OS_USER" -- test -x "$parent"; then
			[ -z "$explicit" ] || die "$RUN_DIR is not reachable by the $PG_OS_USER user; choose another NOTIFY_EXT_RUN_DIR"
			# The checkout sits under a directory the server's user cannot
			# enter (e.g. a mode 0700 temporary directory): keep the cluster
			# in a directory of its own instead.
			RUN_DIR=${TMPDIR:-/tmp}/notify_ext-$(printf '%s' "$REPO_DIR" | cksum | cut -d' ' -f1)/$name
			log "$REPO_DIR is not reachable by $PG_OS_USER; using $RUN_DIR"
		fi
	fi
	PGDATA=$RUN_DIR/pgdata
	SOCK_DIR=$RUN_DIR/sock
	PG_LOG=$RUN_DIR/postgresql.log
	# A Unix socket path is limited to 107 bytes.
	if [ $((${#SOCK_DIR} + 20)) -gt 107 ]; then
		die "socket directory $SOCK_DIR is too long; set NOTIFY_EXT_RUN_DIR to a shorter path"
	fi
	mkdir -p "$RUN_DIR"
	if is_root; then
		chown "$PG_OS_USER:" "$RUN_DIR"
	fi
	chmod 0755 "$RUN_DIR"

	exec 9>>"$RUN_DIR/lock"
	if ! flock -n 9; then
		log "waiting for another run using $RUN_DIR"
		flock 9
	fi

	export PGHOST=$SOCK_DIR
	export PGPORT=${NOTIFY_EXT_PORT:-5432}
	export PGUSER=postgres
	export PGDATA
	unset PGPASSWORD PGSERVICE PGOPTIONS PGHOSTADDR
}

cluster_running() {
	[ -n "${PGDATA:-}" ] && [ -f "$PGDATA/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1
}

# cluster_init CRON_DATABASE [EXTRA_CONF_LINES [reuse]]: a cluster in
# $PGDATA, configured for notify_ext.  It replaces any cluster left by an
# earlier run, unless "reuse" is given and one is there: then only its
# settings are rewritten.  A server left running there is stopped first.
cluster_init() {
	local cron_db=$1 extra=${2:-} reuse=${3:-}
	if cluster_running; then
		log "stopping a cluster left running in $PGDATA"
		as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1 || true
	fi
	if [ "$reuse" = reuse ] && [ -f "$PGDATA/PG_VERSION" ] \
		&& [ -f "$PGDATA/notify_ext_run.conf" ]; then
		log "reusing the cluster in $PGDATA"
	else
		rm -rf "$PGDATA"
		mkdir -p "$PGDATA"
		: >"$PG_LOG"
		if is_root; then
			chown "$PG_OS_USER:" "$PGDATA" "$PG_LOG"
		fi
		chmod 0700 "$PGDATA"
		log "initialising a cluster in $PGDATA"
		as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres --auth=trust \
			--encoding=UTF8 --locale=C.UTF-8 >"$RUN_DIR/initdb.log" 2>&1 \
			|| { cat "$RUN_DIR/initdb.log" >&2; die "initdb failed"; }
		printf "\ninclude 'notify_ext_run.conf'\n" \
			| as_pg tee -a "$PGDATA/postgresql.conf" >/dev/null
	fi
	rm -rf "$SOCK_DIR"
	mkdir -p "$SOCK_DIR"
	if is_root; then
		chown "$PG_OS_USER:" "$SOCK_DIR"
	fi
	chmod 0700 "$SOCK_DIR"

	as_pg tee "$PGDATA/notify_ext_run.conf" >/dev/null <<EOF
# Throwaway cluster for notify_ext, written by scripts/lib.sh on every run.
listen_addresses = ''
port = $PGPORT
unix_socket_directories = '$SOCK_DIR'
unix_socket_permissions = 0700
shared_preload_libraries = 'notify_ext,pg_cron'
cron.database_name = '$cron_db'
max_prepared_transactions = 10
log_min_messages = warning
log_line_prefix = '%m [%p] %q%u@%d '
$extra
EOF
}

cluster_start() {
	log "starting the cluster (socket $SOCK_DIR, port $PGPORT, log $PG_LOG)"
	if ! as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PG_LOG" -w -t 120 start >/dev/null; then
		tail -n 40 "$PG_LOG" >&2
		die "the cluster did not start"
	fi
}

cluster_stop() {
	if cluster_running; then
		log "stopping the cluster"
		as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w -t 120 stop >/dev/null 2>&1 \
			|| as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1 \
			|| true
	fi
}

# ---------------------------------------------------------------- psql

# pg_psql [psql args...]: psql against the throwaway cluster, stopping on
# the first error.
pg_psql() {
	"$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 "$@"
}

# pg_query DB SQL: one value (or unaligned rows) as plain text.
pg_query() {
	local db=$1
	shift
	"$PGBIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -d "$db" -c "$*"
}

pg_create_db() {
	local db=$1
	PGOPTIONS='-c client_min_messages=warning' \
		pg_psql -d postgres -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" \
		-c "CREATE DATABASE \"$db\""
}
