"""Retention seen from clients: a pg_cron job that really runs prune() in a
database other than cron.database_name, prune() deferring a partition it
cannot lock instead of waiting, prune() running once at a time, and a
consumer that lagged behind retention counting what it missed and going on
with the oldest retained event."""

import json
import threading
import time

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from conftest import dsn_for, restart_server


def backdate(db, where, days):
    """Moves events back in time (occurred_at is the partition key: the rows
    move to the partition of that day)."""
    db.execute(
        f"UPDATE notify_ext.event_log SET occurred_at = occurred_at - %s * interval '24 hours' WHERE {where}",
        (days,),
    )


def old_partitions(db, days):
    """Partitions of the event log whose day ended at least `days` days ago
    (with days = 7: those prune() drops under the default retention)."""
    return [r[0] for r in db.execute(
        "SELECT name FROM notify_ext._day_partitions() "
        "WHERE upper_bound <= now() - %s * interval '1 day' ORDER BY 1", (days,)).fetchall()]


def publish(db, n, stream, resource=None):
    """Publishes n events (one transaction); returns their seqs."""
    base = db.execute("SELECT notify_ext.committed_seq()").fetchone()[0]
    with db.transaction():
        for i in range(n):
            db.execute("SELECT notify_ext.publish(%s, 'e2e.op', %s::jsonb, %s)",
                       (stream, json.dumps({"i": i}), resource))
    return [r[0] for r in db.execute(
        "SELECT seq FROM notify_ext.event_log WHERE seq > %s AND stream = %s ORDER BY seq",
        (base, stream)).fetchall()]


@pytest.fixture(scope="module")
def cron_setup(db_dsn, admin_dsn):
    """pg_cron in the database named by cron.database_name, and a cron.host
    it can reach this cluster on (the test cluster only listens on its Unix
    socket, and pg_cron connects to cron.host for each job run).  Whatever
    was changed is put back afterwards."""
    with psycopg.connect(admin_dsn, autocommit=True) as c:
        preload = c.execute("SHOW shared_preload_libraries").fetchone()[0]
        if "pg_cron" not in preload:
            pytest.skip("pg_cron is not in shared_preload_libraries of the test cluster")
        cron_db = c.execute("SHOW cron.database_name").fetchone()[0]
        host = c.execute("SHOW cron.host").fetchone()[0]
        sockdir = c.execute("SHOW unix_socket_directories").fetchone()[0].split(",")[0].strip()
        listen = c.execute("SHOW listen_addresses").fetchone()[0]
        bgw = c.execute("SHOW cron.use_background_workers").fetchone()[0]
    need_host = bgw != "on" and host != sockdir and listen in ("", "localhost") and not host.startswith("/")
    if need_host:
        with psycopg.connect(admin_dsn, autocommit=True) as c:
            c.execute(sql.SQL("ALTER SYSTEM SET cron.host = {}").format(sql.Literal(sockdir)))
        restart_server("fast")
    with psycopg.connect(dsn_for(cron_db), autocommit=True) as c:
        had_cron = c.execute("SELECT count(*) FROM pg_extension WHERE extname = 'pg_cron'").fetchone()[0] > 0
        if not had_cron:
            c.execute("CREATE EXTENSION pg_cron")
    yield cron_db
    with psycopg.connect(dsn_for(cron_db), autocommit=True) as c:
        if not had_cron:
            c.execute("DROP EXTENSION pg_cron")
    if need_host:
        with psycopg.connect(admin_dsn, autocommit=True) as c:
            c.execute("ALTER SYSTEM RESET cron.host")
        restart_server("fast")


def test_scheduled_job_runs_in_this_database_and_prunes(db_dsn, cron_setup):
    cron_db = cron_setup
    dbname = conninfo_to_dict(db_dsn)["dbname"]
    assert dbname != cron_db
    db = psycopg.connect(db_dsn, autocommit=True)
    cron = psycopg.connect(dsn_for(cron_db), autocommit=True)
    try:
        db.execute("SELECT notify_ext.create_event_partitions(7, 10)")
        seqs = publish(db, 20, "e2e.cron")
        backdate(db, f"seq = ANY(ARRAY{seqs[:12]}::bigint[])", 9)
        assert len(old_partitions(db, 8)) >= 2
        db.execute("SELECT notify_ext.create_notification('cron_user', 'T', 'old read', ts => now() - interval '200 days')")
        db.execute("UPDATE notify_ext.notifications SET read = true WHERE recipient = 'cron_user'")

        job = db.execute("SELECT notify_ext.schedule_pruning('* * * * *')").fetchone()[0]
        # Scheduling again replaces the job (same id), it does not add one.
        assert db.execute("SELECT notify_ext.schedule_pruning('* * * * *')").fetchone()[0] == job
        rows = cron.execute(
            "SELECT jobid, schedule, command, database FROM cron.job WHERE jobname = %s",
            (f"notify_ext_prune_{dbname}",)).fetchall()
        command = db.execute("SELECT notify_ext._prune_job_command()").fetchone()[0]
        assert rows == [(job, "* * * * *", command, dbname)]
        assert "PERFORM notify_ext.prune();" in command

        # pg_cron starts it at the next full minute.
        deadline = time.monotonic() + 150
        run = None
        while time.monotonic() < deadline:
            run = cron.execute(
                "SELECT status, return_message FROM cron.job_run_details "
                "WHERE jobid = %s AND status IN ('succeeded', 'failed') ORDER BY runid LIMIT 1",
                (job,)).fetchone()
            if run:
                break
            time.sleep(1)
        assert run is not None, "the pg_cron job did not run within 150 seconds"
        assert run[0] == "succeeded", run

        left = db.execute("SELECT count(*) FROM notify_ext.event_log WHERE seq = ANY(%s)", (seqs,)).fetchone()[0]
        assert left == 8
        assert old_partitions(db, 8) == []
        assert db.execute(
            "SELECT count(*) FROM notify_ext.notifications WHERE recipient = 'cron_user'").fetchone()[0] == 0

        assert db.execute("SELECT notify_ext.unschedule_pruning()").fetchone()[0] is True
        assert db.execute("SELECT notify_ext.unschedule_pruning()").fetchone()[0] is False
        assert cron.execute("SELECT count(*) FROM cron.job WHERE jobid = %s", (job,)).fetchone()[0] == 0
    finally:
        cron.execute("SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = %s",
                     (f"notify_ext_prune_{dbname}",))
        db.close()
        cron.close()


def test_scheduling_in_the_cron_database_itself(cron_setup):
    cron_db = cron_setup
    with psycopg.connect(dsn_for(cron_db), autocommit=True) as c:
        if c.execute("SELECT count(*) FROM pg_extension WHERE extname = 'notify_ext'").fetchone()[0]:
            pytest.skip(f"notify_ext is already installed in {cron_db}")
        c.execute("CREATE EXTENSION notify_ext")
        try:
            job = c.execute("SELECT notify_ext.schedule_pruning()").fetchone()[0]
            assert c.execute("SELECT notify_ext.schedule_pruning('*/10 * * * *')").fetchone()[0] == job
            assert c.execute("SELECT schedule, database FROM cron.job WHERE jobid = %s", (job,)).fetchall() == [
                ("*/10 * * * *", cron_db)]
            assert c.execute("SELECT notify_ext.unschedule_pruning()").fetchone()[0] is True
        finally:
            c.execute("SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = %s",
                      (f"notify_ext_prune_{cron_db}",))
            c.execute("DROP EXTENSION notify_ext")


def test_busy_partition_is_deferred_not_waited_for(db, connect):
    db.execute("SELECT notify_ext.create_event_partitions(7, 10)")
    seqs = publish(db, 10, "e2e.busy")
    backdate(db, f"seq = ANY(ARRAY{seqs}::bigint[])", 9)
    doomed = old_partitions(db, 7)
    assert doomed

    # A reader in an open transaction holds the event log.
    reader = connect(autocommit=False)
    reader.execute("SELECT count(*) FROM notify_ext.event_log WHERE seq > 0")
    # A writer keeps committing events meanwhile.
    writer = connect()
    started = time.monotonic()
    result = db.execute("SELECT notify_ext.prune()").fetchone()[0]
    took = time.monotonic() - started
    writer.execute("SELECT notify_ext.publish('e2e.busy', 'e2e.during')")
    assert result["partitions"] == 0, result
    assert result["deferred"] == doomed, result
    assert took < 2.0, took  # NOWAIT tries plus one short wait, not a stall
    assert old_partitions(db, 7) == doomed

    # Once the reader is done, the next run drops them.
    reader.rollback()
    result = db.execute("SELECT notify_ext.prune()").fetchone()[0]
    assert result["partitions"] == len(doomed), result
    assert result["events"] >= 10 and result["deferred"] == [], result
    assert old_partitions(db, 7) == []


def test_writers_are_not_queued_behind_a_waiting_prune(db, connect):
    """While prune() waits for its lock, writers that need the event log are
    not held for longer than notify_ext.prune_lock_timeout."""
    db.execute("SELECT notify_ext.create_event_partitions(7, 10)")
    seqs = publish(db, 5, "e2e.queue")
    backdate(db, f"seq = ANY(ARRAY{seqs}::bigint[])", 9)
    reader = connect(autocommit=False)
    reader.execute("SELECT count(*) FROM notify_ext.event_log WHERE seq > 0")
    pruner = connect()
    pruner.execute("SET notify_ext.prune_lock_timeout = '300ms'")
    out = {}
    t = threading.Thread(target=lambda: out.update(r=pruner.execute("SELECT notify_ext.prune()").fetchone()[0]))
    t.start()
    writer = connect()
    worst = 0.0
    while t.is_alive():
        s = time.monotonic()
        writer.execute("SELECT notify_ext.publish('e2e.queue', 'e2e.during')")
        worst = max(worst, time.monotonic() - s)
    t.join()
    reader.rollback()
    assert out["r"]["partitions"] == 0 and out["r"]["deferred"], out
    assert worst < 0.6, worst
    db.execute("SELECT notify_ext.prune()")


def test_concurrent_prune_returns_at_once(db, connect):
    a = connect(autocommit=False)
    a.execute("SELECT notify_ext.prune()")  # holds its lock until commit
    started = time.monotonic()
    result = db.execute("SELECT notify_ext.prune()").fetchone()[0]
    assert time.monotonic() - started < 1.0
    assert "another notify_ext.prune() is running" in result["note"]
    assert result["events"] == 0
    a.commit()
    assert "note" not in db.execute("SELECT notify_ext.prune()").fetchone()[0]


def fetch(conn, consumer, batch):
    return conn.execute(
        "SELECT seq, message, reply, salt, hmac FROM notify_ext.get_event_message_batch(%s, %s)",
        (consumer, batch)).fetchall()


def ack(conn, rows):
    replies = [{"reply": r[2], "salt": r[3], "hmac": r[4]} for r in rows]
    return conn.execute("SELECT notify_ext.acknowledge_message_batch(%s::jsonb)",
                        (json.dumps(replies),)).fetchone()[0]


def test_lagging_consumer_counts_missed_and_goes_on(db):
    db.execute("SELECT notify_ext.create_event_partitions(7, 10)")
    db.execute("SELECT notify_ext.register_resource('lag_root', 'project')")
    db.execute("SELECT notify_ext.register_resource('lag_other', 'project')")
    consumer = db.execute(
        "SELECT notify_ext.create_stream_consumer('lag_root', deliver => 'new')").fetchone()[0]
    other = db.execute(
        "SELECT notify_ext.create_stream_consumer('lag_other', deliver => 'new')").fetchone()[0]
    seqs = publish(db, 10, "e2e.lag", "lag_root")

    # The consumer got the first three, acknowledged two; the third is out.
    got = fetch(db, consumer, 3)
    assert [r[0] for r in got] == seqs[:3]
    assert ack(db, got[:2]) == 2

    # The first six fall out of retention: 4, 5 and 6 were never delivered.
    backdate(db, f"seq = ANY(ARRAY{seqs[:6]}::bigint[])", 9)
    result = db.execute("SELECT notify_ext.prune()").fetchone()[0]
    assert result["events"] >= 6 and result["missed"] >= 3, result

    info = db.execute("SELECT notify_ext.consumer_info(%s)", (consumer,)).fetchone()[0]
    assert info["missed"] == 3, info
    assert db.execute("SELECT notify_ext.consumer_info(%s)", (other,)).fetchone()[0]["missed"] == 0

    # Not stuck: it goes on with the oldest retained event.
    got = fetch(db, consumer, 10)
    assert [r[0] for r in got] == seqs[6:]
    assert ack(db, got) == 4
    info = db.execute("SELECT notify_ext.consumer_info(%s)", (consumer,)).fetchone()[0]
    assert info["num_pending"] == 0 and info["missed"] == 3, info

    # A second prune() counts nothing twice.
    db.execute("SELECT notify_ext.prune()")
    assert db.execute("SELECT notify_ext.consumer_info(%s)", (consumer,)).fetchone()[0]["missed"] == 3
