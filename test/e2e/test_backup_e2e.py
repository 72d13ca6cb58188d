"""pg_dump and pg_restore of a database that uses notify_ext.

The module fills a database (a tracked tree, registered resources, events in
day partitions and in the default partition, a consumer with about 1,300
pending events and some delivered but not acknowledged, a caught-up
consumer, personal notifications with preferences, a webhook with a
BASIC_AUTH config and failed deliveries waiting in its queue), dumps it
with pg_dump -Fc and restores it with pg_restore --exit-on-error into a new
database of the same cluster.  The restored database must hold the same
rows, give the same answers, and carry on: the consumer gets exactly its
pending events, replies handed out before the dump still acknowledge, new
events are numbered past the restored ones, and the webhook delivers with
its old signing key and credentials.

Nothing changes the source database between the snapshot taken here and
pg_dump's: the webhook's endpoint fails while the source is filled and the
retry schedule is an hour, so its queue rests.
"""

import base64
import json
import os
import subprocess
import time

import psycopg
import pytest
from psycopg import sql

from conftest import DB_PREFIX, PGBIN, dsn_for
from webhook_servers import HookServer, verify_signature

RESTORED_DB = f"{DB_PREFIX}_backup_restored"[:63]
AUTH_USER, AUTH_PASSWORD = "bk_user", "bk pässword 0xBACKUP"


def alter_system(admin_dsn, settings):
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        for name, value in settings.items():
            if value is None:
                conn.execute(f"ALTER SYSTEM RESET {name}")
            else:
                conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
        conn.execute("SELECT pg_reload_conf()")
    time.sleep(0.5)


def wait_until(fn, timeout=30, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def fetch(conn, consumer, batch=500):
    return conn.execute(
        "SELECT seq, message, reply, salt, hmac, delivery_count "
        "FROM notify_ext.get_event_message_batch(%s, %s)", (consumer, batch)).fetchall()


def replies(rows):
    return [{"reply": r[2], "salt": r[3], "hmac": r[4]} for r in rows]


def ack(conn, reps):
    return conn.execute("SELECT notify_ext.acknowledge_message_batch(%s::jsonb)",
                        (json.dumps(reps),)).fetchone()[0]


def as_principal(conn, principal):
    conn.execute("SELECT set_config('notify_ext.principal', %s, false)", (principal,))


def tables(conn):
    """The ordinary tables of schema notify_ext."""
    return [r[0] for r in conn.execute(
        "SELECT c.relname FROM pg_class c"
        " WHERE c.relnamespace = 'notify_ext'::regnamespace AND c.relkind = 'r'"
        " ORDER BY c.relname")]


# What a table's rows are compared by; webhooks.cursor_seq moves on in the
# restored database as soon as its worker looks (see test_webhooks_come_back),
# and inbox_counts holds deltas whose sums are what counts.
def table_digest(conn, name):
    if name == "inbox_counts":
        q = ("SELECT count(DISTINCT (recipient, type)),"
             " md5(string_agg(x::text, ',' ORDER BY x::text))"
             " FROM (SELECT recipient, type, sum(total) AS total, sum(unread) AS unread"
             "       FROM notify_ext.inbox_counts GROUP BY 1, 2"
             "       HAVING sum(total) <> 0 OR sum(unread) <> 0) x")
    else:
        drop = " - 'cursor_seq'" if name == "webhooks" else ""
        q = sql.SQL("SELECT count(*), md5(string_agg(x.j::text, ',' ORDER BY x.j::text))"
                    " FROM (SELECT to_jsonb(t){} AS j FROM notify_ext.{} t) x").format(
                        sql.SQL(drop), sql.Identifier(name))
    return conn.execute(q).fetchone()


def sequences(conn):
    return dict(conn.execute(
        "SELECT sequencename, last_value FROM pg_sequences WHERE schemaname = 'notify_ext'"
        " ORDER BY 1").fetchall())


def snapshot(conn, consumers):
    """Everything the restored database is compared by, read at one time."""
    snap = {
        "tables": {t: table_digest(conn, t) for t in tables(conn)},
        "sequences": sequences(conn),
        "partitions": conn.execute(
            "SELECT tableoid::regclass::text, count(*), min(seq), max(seq)"
            " FROM notify_ext.event_log GROUP BY 1 ORDER BY 1").fetchall(),
        "consumer_info": {c: conn.execute("SELECT notify_ext.consumer_info(%s)", (c,)).fetchone()[0]
                          for c in consumers},
        "paths": conn.execute(
            "SELECT id, notify_ext.resource_path(id) FROM"
            " (VALUES ('bk_org'), ('bk_team'), ('bkf2'), ('bkfile_2'), ('bkfile2_1200')) v(id)"
            " ORDER BY 1").fetchall(),
        "permission": conn.execute(
            "SELECT notify_ext.has_permission('bk_alice', 'bkfile2_7', 'READ'),"
            "       notify_ext.has_permission('bk_bob', 'bkfile2_7', 'READ')").fetchone(),
        "inbox": {},
    }
    for p in ("bk_alice", "bk_bob"):
        as_principal(conn, p)
        snap["inbox"][p] = (
            conn.execute("SELECT notify_ext.unread_count()").fetchone()[0],
            conn.execute("SELECT notify_ext.list_notifications(items_per_page => 1000)").fetchone()[0],
            conn.execute("SELECT notify_ext.list_notifications('INFO', items_per_page => 2, page => 1)"
                         ).fetchone()[0],
        )
        conn.execute("RESET notify_ext.principal")
    return snap


@pytest.fixture(scope="module")
def sink():
    """The webhook's endpoint: fails until the restored database delivers."""
    server = HookServer(lambda req, n: (server.status, {}, b""))
    server.status = 503
    yield server
    server.close()


@pytest.fixture(scope="module")
def slow_retries(admin_dsn):
    alter_system(admin_dsn, {"notify_ext.webhook_timeout": "2s",
                             "notify_ext.webhook_retry_schedule": "1h"})
    yield
    alter_system(admin_dsn, {"notify_ext.webhook_timeout": None,
                             "notify_ext.webhook_retry_schedule": None})


def fill(db, sink):
    """Fills the source database; returns what the tests need to know of it."""
    s = {}
    db.execute("SELECT notify_ext.create_event_partitions(7, 3)")
    db.execute("SELECT notify_ext.register_resource('bk_org', 'project')")
    db.execute("SELECT notify_ext.register_resource('bk_team', 'collection', 'bk_org')")
    db.execute("SELECT notify_ext.register_resource('bk_elsewhere', 'project')")
    db.execute("CREATE TABLE public.bk_folders (id text PRIMARY KEY, parent text, name text)")
    db.execute("CREATE TABLE public.bk_files (id text PRIMARY KEY, folder text NOT NULL, size int)")
    db.execute("SELECT notify_ext.track('public.bk_folders', 'folder', parent_column => 'parent')")
    db.execute("SELECT notify_ext.track('public.bk_files', 'file', parent_column => 'folder')")
    db.execute("INSERT INTO public.bk_folders VALUES ('bkf1', 'bk_team', 'one')")
    db.execute("INSERT INTO public.bk_folders VALUES ('bkf2', 'bkf1', 'two')")
    db.execute("INSERT INTO public.bk_folders VALUES ('bkf3', 'bk_elsewhere', 'three')")

    # A consumer that falls behind, and one that keeps up.
    s["behind"] = db.execute(
        "SELECT notify_ext.create_stream_consumer('bk_org', ack_wait => '1 hour')").fetchone()[0]
    s["caught_up"] = db.execute(
        "SELECT notify_ext.create_stream_consumer('bk_team', deliver => 'all')").fetchone()[0]

    # Permissions, with their PERMISSION_GRANTED notifications.
    db.execute("SELECT notify_ext.grant_permission('bk_alice', 'bk_org', 'READ')")
    db.execute("SELECT notify_ext.grant_permission('bk_bob', 'bkf3', 'WRITE')")

    # The webhook, with Basic auth; its endpoint fails for now.
    s["auth"] = db.execute("SELECT notify_ext.create_subscription_auth('BASIC_AUTH', %s, %s)",
                           (AUTH_USER, AUTH_PASSWORD)).fetchone()[0]
    s["webhook"] = db.execute(
        "SELECT notify_ext.create_webhook(%s, streams => ARRAY['bk.jobs'], auth_config => %s)",
        (sink.url(), s["auth"])).fetchone()[0]
    s["webhook_secret"] = db.execute("SELECT notify_ext.webhook_secret(%s)",
                                     (s["webhook"],)).fetchone()[0]

    # 100 files; the lagging consumer fetches 80 of its 102 events and
    # leaves 15 unacknowledged, then 20 more under a rotated reply key and
    # leaves 15 of those too.
    db.execute("INSERT INTO public.bk_files SELECT 'bkfile_' || g, 'bkf1', g FROM generate_series(1, 100) g")
    first = fetch(db, s["behind"], 40)
    assert ack(db, replies(first)) == 40
    second = fetch(db, s["behind"], 40)
    assert ack(db, replies(second[:25])) == 25
    db.execute("SELECT notify_ext.rotate_reply_key()")
    third = fetch(db, s["behind"], 20)
    assert ack(db, replies(third[:5])) == 5
    s["unacked"] = second[25:] + third[5:]
    assert [r[2].split(".")[0] for r in s["unacked"]] == ["1"] * 15 + ["2"] * 15

    # About 1,300 events more: files, updates, application events (for the
    # webhook too), and some outside the lagging consumer's scope.
    db.execute("INSERT INTO public.bk_files SELECT 'bkfile2_' || g, 'bkf2', g FROM generate_series(1, 1200) g")
    db.execute("UPDATE public.bk_files SET size = size + 1 WHERE id LIKE 'bkfile2\\_%' AND size <= 50")
    for i in range(40):
        db.execute("SELECT notify_ext.publish('bk.jobs', 'JOB_PROCESSED', %s, 'bk_team')",
                   (json.dumps({"job": i}),))
    db.execute("INSERT INTO public.bk_files SELECT 'bkfile3_' || g, 'bkf3', g FROM generate_series(1, 20) g")
    db.execute("DELETE FROM public.bk_files WHERE id IN ('bkfile_1', 'bkfile3_1')")

    # The other consumer takes and acknowledges everything.
    while True:
        rows = fetch(db, s["caught_up"], 1000)
        if not rows:
            break
        ack(db, replies(rows))

    # Events of earlier days: some in the day partition of two days ago,
    # some in the default partition (a day without a partition, as when
    # partitions are missing).
    n = db.execute("UPDATE notify_ext.event_log SET occurred_at = occurred_at - interval '2 days'"
                   " WHERE seq % 89 = 0").rowcount
    assert n > 5
    n = db.execute("UPDATE notify_ext.event_log SET occurred_at = occurred_at - interval '20 days'"
                   " WHERE seq % 97 = 0").rowcount
    assert n > 5

    # The inbox: notifications read and unread, a switched-off type.
    for i in range(5):
        db.execute("SELECT notify_ext.create_notification('bk_alice', 'INFO', %s, %s::jsonb)",
                   (f"info {i}", json.dumps({"i": i})))
    for i in range(3):
        db.execute("SELECT notify_ext.create_notification('bk_alice', 'ALERT', %s)", (f"alert {i}",))
    db.execute("SELECT notify_ext.create_notifications_bulk(%s::jsonb)", (json.dumps(
        [{"user": "bk_bob", "notification": {"type": "INFO", "message": f"bulk {i}"}} for i in range(4)]),))
    as_principal(db, "bk_alice")
    db.execute("SELECT notify_ext.set_notification_preference('NOISE', false)")
    db.execute("SELECT notify_ext.mark_as_read(ARRAY(SELECT id FROM notify_ext.notifications"
               " WHERE recipient = 'bk_alice' AND message IN ('info 1', 'alert 2')))")
    as_principal(db, "bk_bob")
    db.execute("SELECT notify_ext.mark_all_as_read()")
    db.execute("SELECT notify_ext.set_notification_preference('NOISE', false)")
    db.execute("RESET notify_ext.principal")
    assert db.execute("SELECT notify_ext.create_notification('bk_alice', 'NOISE', 'muted')"
                      ).fetchone()[0] is None

    # The webhook's worker has tried every job once and waits an hour now.
    s["queued"] = wait_until(lambda: db.execute(
        "SELECT array_agg(q.seq ORDER BY q.seq) FROM notify_ext.webhook_queue q"
        " WHERE q.webhook = %s HAVING count(*) = 40 AND bool_and(q.attempt = 1 AND NOT q.in_flight)"
        "   AND (SELECT cursor_seq FROM notify_ext.webhooks WHERE id = %s)"
        "       >= (SELECT max(seq) FROM notify_ext.event_log)",
        (s["webhook"], s["webhook"])).fetchone(), what="the webhook's first attempts")[0]
    assert len(sink.requests) == 40
    return s


@pytest.fixture(scope="module")
def backup(db_dsn, admin_dsn, sink, slow_retries, tmp_path_factory):
    """Fills the module's database, dumps it, restores the dump into a new
    database; returns both DSNs, what fill() noted, both snapshots and
    pg_restore's output."""
    with psycopg.connect(db_dsn, autocommit=True) as db:
        s = fill(db, sink)
        consumers = [s["behind"], s["caught_up"]]
        # The lagging consumer's pending events, as the source has them.
        c = db.execute("SELECT delivered_upto FROM notify_ext.consumers WHERE id = %s",
                       (s["behind"],)).fetchone()[0]
        s["pending"] = db.execute(
            "SELECT seq, message FROM notify_ext.events"
            " WHERE seq > %s AND (resource_id = 'bk_org' OR 'bk_org' = ANY (resource_path))"
            " ORDER BY seq", (c,)).fetchall()
        s["max_seq"] = db.execute("SELECT max(seq) FROM notify_ext.event_log").fetchone()[0]
        s["source"] = snapshot(db, consumers)

    dump = tmp_path_factory.mktemp("backup") / "source.dump"
    subprocess.run([os.path.join(PGBIN, "pg_dump"), "-Fc", "-f", str(dump), "-d", db_dsn],
                   check=True, capture_output=True, text=True)
    s["dump"] = dump
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(RESTORED_DB)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(RESTORED_DB)))
    restored = dsn_for(RESTORED_DB)
    s["restore"] = subprocess.run(
        [os.path.join(PGBIN, "pg_restore"), "--exit-on-error", "-d", restored, str(dump)],
        capture_output=True, text=True)
    s["restored_dsn"] = restored
    s["source_dsn"] = db_dsn
    if s["restore"].returncode == 0:
        with psycopg.connect(restored, autocommit=True) as db:
            s["restored"] = snapshot(db, consumers)
    yield s
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(RESTORED_DB)))


@pytest.fixture
def restored(backup):
    assert backup["restore"].returncode == 0, backup["restore"].stderr
    with psycopg.connect(backup["restored_dsn"], autocommit=True) as conn:
        yield conn


def test_restore_completes_without_errors(backup):
    r = backup["restore"]
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""


def test_secrets_stay_sealed_in_the_dump(backup):
    script = subprocess.run([os.path.join(PGBIN, "pg_restore"), "-f", "-", str(backup["dump"])],
                            check=True, capture_output=True).stdout
    assert AUTH_PASSWORD.encode() not in script
    assert base64.b64encode(f"{AUTH_USER}:{AUTH_PASSWORD}".encode()) not in script
    key = backup["webhook_secret"][len("whsec_"):].encode()
    assert key not in script
    assert base64.b64decode(key).hex().encode() not in script
    # The sealed values are there (and restored as they were: see below).
    assert b"COPY notify_ext.subscription_auth" in script


def test_every_table_comes_back(backup, restored):
    src, dst = backup["source"], backup["restored"]
    assert sorted(dst["tables"]) == sorted(src["tables"])
    for name in ("event_log_default", "consumers", "consumer_pending", "notifications",
                 "notification_preferences", "inbox_counts", "permissions", "resources",
                 "reply_keys", "subscription_auth", "webhooks", "webhook_queue", "delivery_log"):
        assert src["tables"][name][0] > 0, f"the test left notify_ext.{name} empty"
    differ = {t: (src["tables"][t], dst["tables"][t])
              for t in src["tables"] if src["tables"][t] != dst["tables"][t]}
    assert differ == {}
    # Day partitions and the default partition, with the same events.
    assert dst["partitions"] == src["partitions"]
    assert any(p[0] == "notify_ext.event_log_default" for p in src["partitions"])
    assert len(src["partitions"]) >= 3
    # The tracked tables and the tree over them.
    assert dst["paths"] == src["paths"]
    assert dict(dst["paths"])["bkfile2_1200"] == ["bk_org", "bk_team", "bkf1", "bkf2", "bkfile2_1200"]
    assert dst["permission"] == src["permission"] == (True, False)
    assert restored.execute("SELECT count(*) FROM public.bk_files").fetchone()[0] == 1318
    assert restored.execute("SELECT count(*) FROM notify_ext.tracked_tables").fetchone()[0] == 2


def test_sequences_come_back(backup, restored):
    src, dst = backup["source"]["sequences"], backup["restored"]["sequences"]
    assert set(src) == {"consumer_pending_batch_seq", "delivery_log_id_seq",
                        "notifications_id_seq", "seq_reservation"}
    assert dst == src
    assert src["seq_reservation"] >= backup["max_seq"]


def test_consumer_info_is_identical(backup, restored):
    src, dst = backup["source"]["consumer_info"], backup["restored"]["consumer_info"]
    assert dst == src
    behind = src[backup["behind"]]
    assert behind["num_pending"] == len(backup["pending"])
    assert 1250 <= behind["num_pending"] <= 1350
    assert behind["num_ack_pending"] == 30
    assert behind["missed"] == 0
    assert src[backup["caught_up"]]["num_pending"] == 0
    assert src[backup["caught_up"]]["num_ack_pending"] == 0


def test_inbox_comes_back(backup, restored):
    src, dst = backup["source"]["inbox"], backup["restored"]["inbox"]
    assert dst == src
    unread, listing, _ = src["bk_alice"]
    # 5 INFO, 3 ALERT, 1 PERMISSION_GRANTED; 2 of them read.
    assert (unread, listing["itemsInTotal"], len(listing["items"])) == (7, 9, 9)
    unread, listing, _ = src["bk_bob"]
    assert (unread, listing["itemsInTotal"]) == (0, 5)
    # The preference holds, and new notifications get new ids.
    old_max = restored.execute("SELECT max(id) FROM notify_ext.notifications").fetchone()[0]
    assert restored.execute("SELECT notify_ext.create_notification('bk_alice', 'NOISE', 'muted')"
                            ).fetchone()[0] is None
    new_id = restored.execute("SELECT notify_ext.create_notification('bk_alice', 'INFO', 'after')"
                              ).fetchone()[0]
    assert new_id > old_max
    as_principal(restored, "bk_alice")
    assert restored.execute("SELECT notify_ext.unread_count()").fetchone()[0] == 8
    assert restored.execute("SELECT notify_ext.list_notifications() -> 'itemsInTotal'").fetchone()[0] == 10


def test_consumer_continues_where_it_was(backup, restored):
    consumer = backup["behind"]
    max_batch = restored.execute("SELECT max(batch) FROM notify_ext.consumer_pending").fetchone()[0]
    got = []
    while True:
        rows = fetch(restored, consumer, 500)
        if not rows:
            break
        got.extend(rows)
    # Exactly the pending events, in order, each once, nothing skipped.
    assert [(r[0], r[1]) for r in got] == backup["pending"]
    assert all(r[5] == 1 for r in got)
    assert restored.execute("SELECT min(batch) FROM notify_ext.consumer_pending WHERE batch > %s",
                            (max_batch,)).fetchone()[0] is not None
    # Replies handed out before the dump, under both key generations.
    assert ack(restored, replies(backup["unacked"])) == 30
    assert ack(restored, replies(backup["unacked"])) == 0
    assert ack(restored, replies(got)) == len(got)
    info = restored.execute("SELECT notify_ext.consumer_info(%s)", (consumer,)).fetchone()[0]
    assert (info["num_pending"], info["num_ack_pending"], info["missed"]) == (0, 0, 0)
    assert info["delivered_upto"] >= backup["pending"][-1][0]
    # A forged reply is still refused.
    forged = dict(replies(got[:1])[0], hmac=base64.b64encode(b"x" * 32).decode())
    with pytest.raises(psycopg.errors.InvalidAuthorizationSpecification):
        ack(restored, [forged])


def test_new_events_are_numbered_past_the_restored_ones(backup, restored):
    restored.execute("INSERT INTO public.bk_files VALUES ('bk_after', 'bkf2', 1)")
    seq = restored.execute("SELECT seq FROM notify_ext.events WHERE resource_id = 'bk_after'").fetchone()[0]
    assert seq > backup["max_seq"]
    assert seq > backup["source"]["sequences"]["seq_reservation"]
    assert restored.execute("SELECT notify_ext.committed_seq()").fetchone()[0] >= seq
    # Both consumers get it next, and nothing else.
    for consumer in (backup["behind"], backup["caught_up"]):
        rows = fetch(restored, consumer, 100)
        assert [r[0] for r in rows] == [seq]
        assert ack(restored, replies(rows)) == 1
        info = restored.execute("SELECT notify_ext.consumer_info(%s)", (consumer,)).fetchone()[0]
        assert info["missed"] == 0


def test_webhook_delivers_after_the_restore(backup, restored, sink):
    webhook = backup["webhook"]
    # The restored database's worker started by itself: it has looked at
    # the event log up to the restored horizon (and queued nothing old).
    horizon = backup["source"]["sequences"]["seq_reservation"]
    wait_until(lambda: restored.execute(
        "SELECT cursor_seq >= %s FROM notify_ext.webhooks WHERE id = %s",
        (horizon, webhook)).fetchone()[0], what="the restored database's webhook worker")
    assert restored.execute("SELECT count(*) FROM notify_ext.webhook_queue WHERE webhook = %s",
                            (webhook,)).fetchone()[0] == 40
    assert restored.execute("SELECT notify_ext.webhook_secret(%s)", (webhook,)).fetchone()[0] \
        == backup["webhook_secret"]
    # The endpoint works now; the queued deliveries fall due and one new
    # event joins them.
    sink.status = 200
    before = len(sink.requests)
    restored.execute("UPDATE notify_ext.webhook_queue SET next_attempt_at = now() WHERE webhook = %s",
                     (webhook,))
    restored.execute("SELECT notify_ext.publish('bk.jobs', 'JOB_PROCESSED', '{\"job\": \"after\"}', 'bk_team')")
    new_seq = restored.execute("SELECT max(seq) FROM notify_ext.events WHERE stream = 'bk.jobs'").fetchone()[0]
    assert new_seq > backup["max_seq"]
    requests = sink.wait_for(before + 41)[before:]
    expected = {f"msg_{str(webhook).replace('-', '')}_{seq}" for seq in backup["queued"] + [new_seq]}
    assert {r.webhook_id for r in requests} == expected
    auth = "Basic " + base64.b64encode(f"{AUTH_USER}:{AUTH_PASSWORD}".encode()).decode()
    for r in requests:
        assert verify_signature(backup["webhook_secret"], r), r.headers
        assert r.headers.get("authorization") == auth
    assert {r.json["seq"] for r in requests} == set(backup["queued"]) | {new_seq}
    wait_until(lambda: restored.execute(
        "SELECT count(*) = 0 FROM notify_ext.webhook_queue WHERE webhook = %s", (webhook,)).fetchone()[0],
        what="the queue to empty")
    # Delivery records are numbered past the restored ones.
    ids = restored.execute(
        "SELECT min(id) FROM notify_ext.delivery_log WHERE status_code = 200").fetchone()[0]
    assert ids > backup["source"]["sequences"]["delivery_log_id_seq"]
