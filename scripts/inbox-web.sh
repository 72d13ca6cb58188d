#!/usr/bin/env bash
# Runs the live inbox page of examples/inbox-web against a throwaway
# cluster, the way scripts/demo.sh does: installs what is missing, builds
# and installs notify_ext, starts a fresh cluster in .run/, creates the
# database notify_ext_inbox_web with an application role, then serves the
# page on http://127.0.0.1:8080/ until Ctrl-C (which also stops the cluster).
#
# Environment: NOTIFY_EXT_RUN_DIR, NOTIFY_EXT_PORT, NOTIFY_EXT_PGBIN (see
# scripts/lib.sh), INBOX_WEB_PORT (default 8080), INBOX_WEB_HOST (default
# 127.0.0.1).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

WEB_DB=notify_ext_inbox_web
APP_ROLE=inbox_web_app # the role named by notify_ext.app_role
LOGIN_ROLE=inbox_web   # the server's login role, a member of it
WEB_DIR=$REPO_DIR/examples/inbox-web
export INBOX_WEB_PORT=${INBOX_WEB_PORT:-8080}
export INBOX_WEB_HOST=${INBOX_WEB_HOST:-127.0.0.1}

ensure_packages
npm_ci "$WEB_DIR" || die "npm ci failed in $WEB_DIR"
build_install
set_run_dir .run
trap cluster_stop EXIT
cluster_init "$WEB_DB"
cluster_start
pg_create_db "$WEB_DB" >/dev/null

log "creating $WEB_DB: notify_ext, roles $APP_ROLE and $LOGIN_ROLE, two welcome notifications"
PGOPTIONS='-c client_min_messages=warning' pg_psql -d "$WEB_DB" <<SQL
CREATE EXTENSION notify_ext;
DROP ROLE IF EXISTS $LOGIN_ROLE;
DROP ROLE IF EXISTS $APP_ROLE;
CREATE ROLE $APP_ROLE NOLOGIN;
CREATE ROLE $LOGIN_ROLE LOGIN IN ROLE $APP_ROLE;
ALTER DATABASE $WEB_DB SET notify_ext.app_role = '$APP_ROLE';
SELECT notify_ext.create_notification('alice', 'WELCOME', 'Welcome, alice!') \gset
SELECT notify_ext.create_notification('bob', 'WELCOME', 'Welcome, bob!') \gset
SQL

printf '\n  Open http://%s:%s/ and sign in as alice or bob (a demo sign-in: any\n' "$INBOX_WEB_HOST" "$INBOX_WEB_PORT"
printf '  name will do). Then create notifications from another shell:\n\n'
printf '    %s/psql -h %s -p %s -U postgres -d %s \\\n' "$PGBIN" "$SOCK_DIR" "$PGPORT" "$WEB_DB"
printf "      -c \"SELECT notify_ext.create_notification('alice', 'NOTE', 'Hello from SQL')\"\n\n"
printf '  Ctrl-C stops the server and the cluster.\n\n'

# The server stays in the foreground until Ctrl-C; the trap then stops the
# cluster.
PGHOST=$SOCK_DIR PGPORT=$PGPORT PGUSER=$LOGIN_ROLE PGDATABASE=$WEB_DB \
	node "$WEB_DIR/server.js" || true
