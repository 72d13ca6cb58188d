"""prune()'s usual run: expired days that VACUUM has counted, nothing else
to do, no consumers.  It detaches them, counts them from VACUUM's figures
(and with count(*) a day that changed since), defers them when the event log
is busy, and writers commit while it holds its lock."""

import threading
import time

import psycopg
from psycopg import sql

DAYS_BACK = 10
PER_DAY = 500


def load_expired_days(db):
    """PER_DAY events on each of the days 8 .. DAYS_BACK ago, VACUUMed once
    their statistics are in; returns the expired partitions' names."""
    db.execute("SELECT notify_ext.create_event_partitions(7, %s)", (DAYS_BACK,))
    for k in range(8, DAYS_BACK + 1):
        db.execute(
            "INSERT INTO notify_ext.event_log (seq, occurred_at, stream, operation, actor, payload) "
            "SELECT 800000000000000 + %s * 100000 + g, now() - %s * interval '1 day', "
            "'e2e.fast', 'old', 'e2e', '{}' FROM generate_series(1, %s) g",
            (k, k, PER_DAY))
    db.execute("SELECT pg_stat_force_next_flush()")
    db.execute("SELECT 1")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if db.execute(
                "SELECT COALESCE(sum(pg_stat_get_tuples_inserted(rel)), 0) >= %s "
                "FROM notify_ext._day_partitions() WHERE upper_bound <= now() - interval '7 days'",
                ((DAYS_BACK - 7) * PER_DAY,)).fetchone()[0]:
            break
        time.sleep(0.1)
    db.execute("VACUUM ANALYZE notify_ext.event_log")
    return [r[0] for r in db.execute(
        "SELECT name FROM notify_ext._day_partitions(now() - interval '7 days') "
        "WHERE vacuum_counted ORDER BY upper_bound").fetchall()]


def prune_in(conn):
    """prune() in conn's open transaction; returns its result."""
    return conn.execute("SELECT notify_ext.prune()").fetchone()[0]


def test_usual_run_detaches_counted_days(db, connect):
    doomed = load_expired_days(db)
    assert len(doomed) == DAYS_BACK - 7, doomed
    pruner = connect(autocommit=False)
    result = prune_in(pruner)
    assert result["partitions"] == len(doomed), result
    assert result["events"] == len(doomed) * PER_DAY, result
    assert result["events_from_vacuum_stats"] is True, result
    assert result["deferred"] == [] and result["incomplete"] == [], result
    assert result["missed"] == 0 and result["partitions_created"] == 0, result

    # A writer commits while prune() holds ACCESS EXCLUSIVE on event_log.
    writer = connect()
    writer.execute("SET statement_timeout = '5s'")
    started = time.monotonic()
    writer.execute("SELECT notify_ext.publish('e2e.fast', 'e2e.during')")
    assert time.monotonic() - started < 1.0
    # The dropper is only started once prune()'s transaction has committed.
    time.sleep(0.3)
    assert db.execute("SELECT count(*) FROM pg_stat_activity "
                      "WHERE backend_type = 'notify_ext expired partition dropper'").fetchone()[0] == 0
    pruner.commit()

    assert db.execute("SELECT count(*) FROM notify_ext.event_log WHERE stream = 'e2e.fast' "
                      "AND operation = 'old'").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM notify_ext.event_log WHERE stream = 'e2e.fast' "
                      "AND operation = 'e2e.during'").fetchone()[0] == 1
    # The worker drops the detached tables once prune() has committed.
    deadline = time.monotonic() + 10
    while db.execute("SELECT count(*) FROM notify_ext._detached_event_tables()").fetchone()[0]:
        assert time.monotonic() < deadline, "the detached tables were not dropped"
        time.sleep(0.1)

    # Nothing left to do: the next run does nothing, still without PL/pgSQL.
    again = connect(autocommit=False)
    result = prune_in(again)
    again.commit()
    assert result["partitions"] == 0 and result["events"] == 0, result
    assert "events_from_vacuum_stats" not in result, result


def test_usual_run_defers_a_busy_event_log(db, connect):
    doomed = load_expired_days(db)
    reader = connect(autocommit=False)
    reader.execute("SELECT count(*) FROM notify_ext.event_log WHERE seq > 0")
    pruner = connect(autocommit=False)
    started = time.monotonic()
    result = prune_in(pruner)
    pruner.commit()
    assert time.monotonic() - started < 2.0
    assert result["partitions"] == 0 and result["events"] == 0, result
    assert result["deferred"] == doomed, result
    reader.rollback()

    result = db.execute("SELECT notify_ext.prune()").fetchone()[0]
    assert result["partitions"] == len(doomed) and result["deferred"] == [], result


def test_a_day_changed_since_vacuum_is_counted(db, connect):
    """A day whose statistics say it changed since VACUUM is counted with
    count(*)."""
    load_expired_days(db)
    db.execute("DELETE FROM notify_ext.event_log WHERE stream = 'e2e.fast' AND seq % 100 = 7")
    db.execute("SELECT pg_stat_force_next_flush()")
    db.execute("SELECT 1")
    deadline = time.monotonic() + 10
    while not db.execute(
            "SELECT bool_or(NOT vacuum_counted) FROM "
            "notify_ext._day_partitions(now() - interval '7 days')").fetchone()[0]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    expected = db.execute("SELECT count(*) FROM notify_ext.event_log WHERE stream = 'e2e.fast' "
                          "AND operation = 'old'").fetchone()[0]
    pruner = connect(autocommit=False)
    result = prune_in(pruner)
    pruner.commit()
    # The dropper is started at commit.
    deadline = time.monotonic() + 10
    while db.execute("SELECT count(*) FROM notify_ext._detached_event_tables()").fetchone()[0]:
        assert time.monotonic() < deadline, "the detached tables were not dropped"
        time.sleep(0.1)
    assert result["events"] == expected and "events_from_vacuum_stats" not in result, result




def test_a_rolled_back_prune_leaves_everything_in_place(db, connect):
    doomed = load_expired_days(db)
    pruner = connect(autocommit=False)
    result = prune_in(pruner)
    assert result["partitions"] == len(doomed), result
    pruner.rollback()
    time.sleep(0.3)
    assert db.execute("SELECT count(*) FROM pg_stat_activity "
                      "WHERE backend_type = 'notify_ext expired partition dropper'").fetchone()[0] == 0
    assert [r[0] for r in db.execute(
        "SELECT name FROM notify_ext._day_partitions(now() - interval '7 days') "
        "ORDER BY upper_bound").fetchall()] == doomed
    assert db.execute("SELECT count(*) FROM notify_ext._detached_event_tables()").fetchone()[0] == 0
    result = db.execute("SELECT notify_ext.prune()").fetchone()[0]
    assert result["partitions"] == len(doomed), result


def test_terminating_the_dropper_in_its_commit_is_safe(db, connect, admin_dsn):
    """The dropper is terminated (as DROP DATABASE ... WITH (FORCE) or
    pg_terminate_backend() would) while its commit waits for a synchronous
    standby that never comes.  The server does not restart, and the tables
    are gone: the commit was already durable locally."""
    local = "-c synchronous_commit=local"
    db.execute("SET synchronous_commit = local")
    started_at = db.execute("SELECT pg_postmaster_start_time()").fetchone()[0]
    load_expired_days(db)
    admin = psycopg.connect(admin_dsn, autocommit=True, options=local)
    admin.execute("ALTER SYSTEM SET synchronous_standby_names = 'notify_ext_absent_standby'")
    admin.execute("SELECT pg_reload_conf()")
    dbname = db.info.dbname
    admin.execute(sql.SQL("ALTER DATABASE {} SET synchronous_commit = on").format(sql.Identifier(dbname)))
    try:
        time.sleep(0.3)
        pruner = connect(autocommit=False, options=local)
        result = pruner.execute("SELECT notify_ext.prune()").fetchone()[0]
        pruner.commit()
        assert result["partitions"] > 0, result
        # The dropper runs with the default synchronous_commit = on.
        deadline = time.monotonic() + 10
        while True:
            row = db.execute(
                "SELECT pid FROM pg_stat_activity WHERE wait_event = 'SyncRep' "
                "AND backend_type = 'notify_ext expired partition dropper'").fetchone()
            if row:
                break
            assert time.monotonic() < deadline, "the dropper did not reach its commit"
            time.sleep(0.02)
        assert db.execute("SELECT pg_terminate_backend(%s, 5000)", (row[0],)).fetchone()[0]
    finally:
        admin.execute(sql.SQL("ALTER DATABASE {} RESET synchronous_commit").format(sql.Identifier(dbname)))
        admin.execute("ALTER SYSTEM RESET synchronous_standby_names")
        admin.execute("SELECT pg_reload_conf()")
        admin.close()
    assert db.execute("SELECT pg_postmaster_start_time()").fetchone()[0] == started_at
    assert db.execute("SELECT count(*) FROM notify_ext._detached_event_tables()").fetchone()[0] == 0
