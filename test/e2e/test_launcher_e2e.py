"""The one launcher of per-database workers (src/launcher.c).

It starts a webhook worker and a relay worker for each database that has
webhooks or relays to run, restarts them after they die, is itself restarted
by the postmaster, and forgets a database that was dropped.  The webhook and
relay targets here are unreachable on purpose: only the workers' lives are
under test.
"""

import re
import time

import psycopg
import pytest
from psycopg import sql

from conftest import DB_PREFIX, PGLOG, create_database


def wait_for(what, check, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def workers(admin, datname=None):
    """backend_type -> pids of notify_ext workers (of one database, if given)."""
    rows = admin.execute(
        "SELECT backend_type, pid FROM pg_stat_activity WHERE backend_type LIKE 'notify_ext%%' "
        "AND (%(d)s::text IS NULL OR datname = %(d)s)", {"d": datname}).fetchall()
    found = {}
    for kind, pid in rows:
        found.setdefault(kind, []).append(pid)
    return found


def add_webhook_and_relay(conn):
    conn.execute("SELECT notify_ext.create_webhook('http://192.0.2.1:9/hook')")
    conn.execute("SELECT notify_ext.create_relay('r', ARRAY['nats://192.0.2.1:4222'], 'S')")


@pytest.fixture
def admin(admin_dsn):
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def other_db(admin):
    name = f"{DB_PREFIX}_launcher_other"
    dsn = create_database(admin, name)
    yield name, dsn
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_one_launcher_starts_both_kinds_per_database(admin, db, db_dsn):
    launchers = workers(admin).get("notify_ext launcher", [])
    assert len(launchers) == 1
    datname = db.execute("SELECT current_database()").fetchone()[0]
    add_webhook_and_relay(db)
    found = wait_for("both workers", lambda: (
        w := workers(admin, datname)) and "notify_ext webhook worker" in w
        and "notify_ext relay worker" in w and w)
    assert len(found["notify_ext webhook worker"]) == 1
    assert len(found["notify_ext relay worker"]) == 1

    # One kind leaving does not stop the other.
    db.execute("SELECT notify_ext.delete_relay(id) FROM notify_ext.list_relays()")
    wait_for("the relay worker to leave",
             lambda: "notify_ext relay worker" not in workers(admin, datname))
    assert workers(admin, datname)["notify_ext webhook worker"] == found["notify_ext webhook worker"]
    db.execute("SELECT notify_ext.delete_webhook((w->>'id')::uuid) FROM notify_ext.list_webhooks() w")
    wait_for("the webhook worker to leave",
             lambda: "notify_ext webhook worker" not in workers(admin, datname))


def test_dead_workers_and_launcher_are_started_again(admin, db):
    datname = db.execute("SELECT current_database()").fetchone()[0]
    add_webhook_and_relay(db)
    before = wait_for("both workers", lambda: (
        w := workers(admin, datname)) and len(w) == 2 and w)
    (launcher,) = workers(admin)["notify_ext launcher"]

    admin.execute("SELECT pg_terminate_backend(%s)", (launcher,))
    admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                  "WHERE datname = %s AND backend_type LIKE 'notify_ext%%worker'", (datname,))
    # The postmaster restarts the launcher after 5 s; it starts the workers again.
    after = wait_for("a new launcher", lambda: (
        pids := workers(admin).get("notify_ext launcher")) and pids != [launcher] and pids)
    assert len(after) == 1
    again = wait_for("both workers again", lambda: (
        w := workers(admin, datname)) and len(w) == 2 and w)
    for kind in again:
        assert again[kind] != before[kind]
    db.execute("SELECT notify_ext.delete_relay(id) FROM notify_ext.list_relays()")
    db.execute("SELECT notify_ext.delete_webhook((w->>'id')::uuid) FROM notify_ext.list_webhooks() w")


def test_dropped_database_is_forgotten(admin, other_db):
    name, dsn = other_db
    with psycopg.connect(dsn, autocommit=True) as conn:
        add_webhook_and_relay(conn)
        oid = conn.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()[0]
    wait_for("both workers", lambda: len(workers(admin, name)) == 2)
    (launcher,) = workers(admin)["notify_ext launcher"]
    log_start = open(PGLOG, "rb").seek(0, 2)

    admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
    # The dead workers want to run again; the launcher finds the database
    # gone and neither starts them nor dies.
    time.sleep(8)
    assert workers(admin)["notify_ext launcher"] == [launcher]
    with open(PGLOG, "rb") as log:
        log.seek(log_start)
        tail = log.read().decode(errors="replace")
    assert not re.search(rf"database {oid} does not exist", tail), tail
    assert not re.search(rf"could not start a \w+ worker for database {oid}\b", tail), tail


def test_workers_leave_databases_without_work(admin, db):
    """A new launcher does not know which databases have webhooks or relays,
    so it starts both kinds everywhere; each leaves cleanly (exit code 0)
    where notify_ext is missing or nothing is configured."""
    (launcher,) = workers(admin)["notify_ext launcher"]
    log_start = open(PGLOG, "rb").seek(0, 2)
    admin.execute("SELECT pg_terminate_backend(%s)", (launcher,))
    wait_for("a new launcher", lambda: (
        pids := workers(admin).get("notify_ext launcher")) and pids != [launcher])
    wait_for("the workers to leave", lambda: set(workers(admin)) == {"notify_ext launcher"})
    time.sleep(2)
    assert set(workers(admin)) == {"notify_ext launcher"}
    with open(PGLOG, "rb") as log:
        log.seek(log_start)
        tail = log.read().decode(errors="replace")
    assert not re.search(r'"notify_ext (webhook|relay) worker" \(PID \d+\) exited with exit code', tail), tail
