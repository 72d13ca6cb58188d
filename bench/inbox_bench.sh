#!/bin/sh
# Inbox benchmark: list_notifications() / unread_count() for a user with
# 100,000 notifications among 10,000,000, and create_notifications_bulk()
# against a plain multi-row INSERT.  See bench/inbox_bench.py.
#
# Usage: PGHOST=... PGPORT=... PGUSER=postgres bench/inbox_bench.sh [dbname]
# The database (default notify_ext_inbox_bench) is created if missing and
# kept, so that a second run reuses the ten million rows.  The server needs
# shared_preload_libraries = 'notify_ext'.
set -eu
DB=${1:-notify_ext_inbox_bench}
HERE=$(cd "$(dirname "$0")" && pwd)
if ! psql -X -d postgres -Atc "SELECT 1 FROM pg_database WHERE datname = '$DB'" | grep -q 1; then
    createdb "$DB"
fi
PGDATABASE=$DB exec /usr/bin/python3 "$HERE/inbox_bench.py"
