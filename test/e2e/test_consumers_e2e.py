"""Stream consumers seen from clients: LISTEN wake-ups (on a channel that
only the owner is given), long polls, random concurrent writers and
consumers, and a crash in the middle of it all."""

import json
import random
import re
import select
import threading
import time

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo


def notifies(conn, seconds, stop_after=None):
    """Notifications arriving on conn within seconds (or until stop_after)."""
    got = []
    deadline = time.monotonic() + seconds
    pg = conn.pgconn
    while True:
        n = pg.notifies()
        while n is not None:
            got.append(n)
            n = pg.notifies()
        left = deadline - time.monotonic()
        if left <= 0 or (stop_after and len(got) >= stop_after):
            return got
        ready, _, _ = select.select([pg.socket], [], [], left)
        if ready:
            pg.consume_input()


def setup_tree(db, table):
    db.execute("SELECT notify_ext.register_resource('in_scope', 'project')")
    db.execute("SELECT notify_ext.register_resource('out_of_scope', 'project')")
    db.execute(f"CREATE TABLE IF NOT EXISTS public.{table} (id text PRIMARY KEY, parent text)")
    db.execute("SELECT notify_ext.track(%s::regclass, 'item', parent_column => 'parent')",
               (f"public.{table}",))


def new_consumer(db, ack_wait="30 seconds"):
    return db.execute(
        "SELECT notify_ext.create_stream_consumer('in_scope', deliver => 'new', ack_wait => %s)",
        (ack_wait,),
    ).fetchone()[0]


def fetch(conn, consumer, batch=100, wait="0"):
    return conn.execute(
        "SELECT seq, message, reply, salt, hmac, delivery_count "
        "FROM notify_ext.get_event_message_batch(%s, %s, %s)",
        (consumer, batch, wait),
    ).fetchall()


def ack(conn, rows):
    replies = [{"reply": r[2], "salt": r[3], "hmac": r[4]} for r in rows]
    return conn.execute(
        "SELECT notify_ext.acknowledge_message_batch(%s::jsonb)", (json.dumps(replies),)
    ).fetchone()[0]


def test_listen_wakes_after_commit_only_for_the_scope(db, connect):
    setup_tree(db, "wake_items")
    consumer = new_consumer(db)
    channel = db.execute("SELECT notify_ext.get_event_message_stream(%s)", (consumer,)).fetchone()[0]

    listener = connect()
    listener.execute(f'LISTEN "{channel}"')
    writer = connect(autocommit=False)

    writer.execute("INSERT INTO public.wake_items VALUES ('w1', 'in_scope')")
    assert notifies(listener, 0.3, 1) == [], "woken before commit"
    writer.commit()
    committed = time.monotonic()
    got = notifies(listener, 2, 1)
    assert got, "no wake-up after commit"
    assert time.monotonic() - committed < 1.0
    payload = json.loads(got[0].extra.decode())
    # ids and positions only
    assert set(payload) == {"consumer", "seq"}, payload
    assert payload["consumer"] == str(consumer)
    assert payload["seq"] > 0

    writer.execute("INSERT INTO public.wake_items VALUES ('w2', 'out_of_scope')")
    writer.commit()
    assert notifies(listener, 0.5, 1) == [], "woken for another scope"

    # one wake-up per transaction, however many events it records
    writer.execute("INSERT INTO public.wake_items SELECT 'many' || g, 'in_scope' FROM generate_series(1, 50) g")
    writer.commit()
    got = notifies(listener, 0.5)
    assert len(got) == 1
    assert json.loads(got[0].extra.decode())["seq"] == db.execute(
        "SELECT max(seq) FROM notify_ext.events WHERE resource_id LIKE 'many%%'").fetchone()[0]


ATTACKER = "consumers_e2e_attacker"


def test_knowing_a_consumer_id_is_not_enough_to_listen(db, connect, db_dsn):
    """The channel is a keyed hash of the consumer id.  A role that knows the
    id (it is in every wake-up and every reply) is not given the channel,
    cannot call the function that names it, and hears nothing on any name
    built from the id."""
    setup_tree(db, "spy_items")
    consumer = new_consumer(db)
    other = new_consumer(db)
    channel = db.execute("SELECT notify_ext.get_event_message_stream(%s)", (consumer,)).fetchone()[0]
    assert re.fullmatch(r"notify_ext_consumer_[0-9a-f]{32}", channel), channel
    hexid = str(consumer).replace("-", "")
    assert hexid not in channel and str(consumer) not in channel
    assert db.execute("SELECT notify_ext.get_event_message_stream(%s)",
                      (consumer,)).fetchone()[0] == channel
    assert db.execute("SELECT notify_ext.get_event_message_stream(%s)",
                      (other,)).fetchone()[0] != channel

    db.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(ATTACKER)))
    db.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(ATTACKER)))
    attacker = psycopg.connect(make_conninfo(db_dsn, user=ATTACKER), autocommit=True)
    try:
        for query, sqlstate in (("SELECT notify_ext.get_event_message_stream(%s)", "42501"),
                                ("SELECT notify_ext._consumer_channel(%s)", "42501")):
            with pytest.raises(psycopg.Error) as exc:
                attacker.execute(query, (consumer,))
            assert exc.value.sqlstate == sqlstate, (query, exc.value.sqlstate, str(exc.value))
        guesses = [f"notify_ext_consumer_{hexid}", f"notify_ext_consumer_{consumer}",
                   str(consumer), hexid, f"notify_ext_consumer_{hexid.upper()}"]
        for guess in guesses:
            attacker.execute(sql.SQL("LISTEN {}").format(sql.Identifier(guess)))

        owner = connect()
        owner.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        db.execute("INSERT INTO public.spy_items VALUES ('s1', 'in_scope')")
        got = notifies(owner, 2, 1)
        assert len(got) == 1 and got[0].relname.decode() == channel
        assert set(json.loads(got[0].extra.decode())) == {"consumer", "seq"}
        assert notifies(attacker, 0.5) == [], "a name built from the consumer id was woken"
    finally:
        attacker.close()
        db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(ATTACKER)))


def test_long_poll_returns_when_an_event_commits(db, connect):
    setup_tree(db, "poll_items")
    consumer = new_consumer(db)
    poller = connect()
    result = {}

    def poll():
        start = time.monotonic()
        result["rows"] = fetch(poller, consumer, 10, "20 seconds")
        result["done"] = time.monotonic()
        result["waited"] = result["done"] - start

    t = threading.Thread(target=poll)
    t.start()
    time.sleep(0.5)
    assert t.is_alive(), "returned before anything happened"
    db.execute("INSERT INTO public.poll_items VALUES ('p-out', 'out_of_scope')")
    time.sleep(0.3)
    assert t.is_alive(), "woke for an event out of scope"
    db.execute("INSERT INTO public.poll_items VALUES ('p1', 'in_scope')")
    committed = time.monotonic()
    t.join(10)
    assert not t.is_alive()
    assert [r[1]["resource"]["id"] for r in result["rows"]] == ["p1"]
    assert result["done"] - committed < 0.5, result

    # and gives up empty when wait passes
    start = time.monotonic()
    assert fetch(poller, consumer, 10, "0.3 seconds") == []
    assert 0.25 < time.monotonic() - start < 2


def _writer(dsn, table, prefix, n, committed, rolled_back, lock, seed):
    rnd = random.Random(seed)
    with psycopg.connect(dsn, autocommit=False) as conn:
        for i in range(n):
            ids = []
            for j in range(rnd.randint(1, 4)):
                rid = f"{prefix}-{i}-{j}"
                parent = rnd.choice(["in_scope", "in_scope", "out_of_scope"])
                conn.execute(f"INSERT INTO public.{table} VALUES (%s, %s)", (rid, parent))
                ids.append((rid, parent))
            if rnd.random() < 0.7:
                time.sleep(rnd.random() * 0.01)  # overlap commits
                conn.commit()
                with lock:
                    committed.extend(ids)
            else:
                conn.rollback()
                with lock:
                    rolled_back.extend(ids)


def _consumer(dsn, consumer, stop, delivered, acked, lock, seed):
    rnd = random.Random(seed)
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            rows = fetch(conn, consumer, rnd.randint(1, 20), "0.2 seconds")
            with lock:
                for r in rows:
                    delivered.append((r[0], r[1]["resource"]["id"]))
            if rows:
                keep = [r for r in rows if rnd.random() < 0.8]  # drop some acks on purpose
                if keep:
                    ack(conn, keep)
                    with lock:
                        acked.update(r[0] for r in keep)
            elif stop.is_set():
                return


def test_random_writers_and_consumers_skip_nothing(db, db_dsn):
    setup_tree(db, "rand_items")
    consumer = new_consumer(db, ack_wait="1 second")
    committed, rolled_back, delivered, acked = [], [], [], set()
    lock = threading.Lock()
    stop = threading.Event()

    writers = [threading.Thread(target=_writer, args=(db_dsn, "rand_items", f"w{k}", 60,
                                                        committed, rolled_back, lock, k))
               for k in range(4)]
    consumers = [threading.Thread(target=_consumer, args=(db_dsn, consumer, stop, delivered,
                                                          acked, lock, 100 + k))
                 for k in range(2)]
    for t in writers + consumers:
        t.start()
    for t in writers:
        t.join(120)
    # let redeliveries of dropped acks come back and be acknowledged
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        info = db.execute("SELECT notify_ext.consumer_info(%s)", (consumer,)).fetchone()[0]
        if info["num_pending"] == 0 and info["num_ack_pending"] == 0:
            break
        time.sleep(0.5)
    stop.set()
    for t in consumers:
        t.join(30)

    expected = {rid for rid, parent in committed if parent == "in_scope"}
    got = {rid for _, rid in delivered}
    assert expected <= got, f"missing: {sorted(expected - got)[:10]}"
    assert not got & {rid for rid, _ in rolled_back}, "a rolled-back event was delivered"
    assert not got & {rid for rid, parent in committed if parent == "out_of_scope"}, "out of scope"
    seq_of = {rid: seq for seq, rid in delivered}
    assert {seq_of[rid] for rid in expected} <= acked, "every in-scope event acknowledged"
    info = db.execute("SELECT notify_ext.consumer_info(%s)", (consumer,)).fetchone()[0]
    assert info["num_ack_pending"] == 0 and info["num_pending"] == 0, info


def test_crash_loses_no_committed_event_and_redelivers_no_acked_one(db, db_dsn, restart_server):
    setup_tree(db, "crash_items")
    consumer = new_consumer(db, ack_wait="1 second")
    committed = []
    acked_seqs = set()
    delivered = []

    with psycopg.connect(db_dsn, autocommit=True) as writer, \
            psycopg.connect(db_dsn, autocommit=True) as reader:
        for i in range(200):
            writer.execute("INSERT INTO public.crash_items VALUES (%s, 'in_scope')", (f"c{i}",))
            committed.append(f"c{i}")
            if i % 20 == 0:
                rows = fetch(reader, consumer, 15)
                delivered.extend((r[0], r[1]["resource"]["id"]) for r in rows)
                if rows:
                    ack(reader, rows[: len(rows) // 2])
                    acked_seqs.update(r[0] for r in rows[: len(rows) // 2])
        # a transaction in flight when the server dies
        pending = psycopg.connect(db_dsn, autocommit=False)
        pending.execute("INSERT INTO public.crash_items VALUES ('never', 'in_scope')")
        restart_server("immediate")
        try:
            pending.close()
        except Exception:
            pass

    with psycopg.connect(db_dsn, autocommit=True) as conn:
        for i in range(200, 220):  # writers go on after the restart
            conn.execute("INSERT INTO public.crash_items VALUES (%s, 'in_scope')", (f"c{i}",))
            committed.append(f"c{i}")
        time.sleep(1.1)  # everything unacknowledged is due again
        after = []
        while True:
            rows = fetch(conn, consumer, 50)
            if not rows:
                break
            after.extend((r[0], r[1]["resource"]["id"]) for r in rows)
            ack(conn, rows)
        got = {rid for _, rid in delivered + after}
        assert set(committed) <= got, sorted(set(committed) - got)[:10]
        assert "never" not in got
        assert not acked_seqs & {seq for seq, _ in after}, "an acknowledged event came back"
        seqs = conn.execute("SELECT array_agg(seq ORDER BY seq) FROM notify_ext.events "
                            "WHERE stream = 'public.crash_items'").fetchone()[0]
        assert len(seqs) == len(set(seqs)) == len(committed)


def test_fan_out_wakes_only_the_consumers_whose_scope_holds_the_commit(db, connect):
    """1,000 consumers on 1,000 subtrees (and one on their common root): a
    commit in one subtree wakes exactly its consumer and the root's."""
    subtrees = 1000
    db.execute("SELECT notify_ext.register_resource('fan_root', 'project')")
    db.execute("SELECT notify_ext.register_resource('fan_s' || g, 'project', 'fan_root') "
               "FROM generate_series(0, %s) g", (subtrees - 1,))
    db.execute("CREATE TABLE public.fan_items (id text PRIMARY KEY, parent text)")
    db.execute("SELECT notify_ext.track('public.fan_items', 'item', parent_column => 'parent')")
    consumers = {}
    for i in range(subtrees):
        consumers[f"fan_s{i}"] = db.execute(
            "SELECT notify_ext.create_stream_consumer(%s, deliver => 'new')", (f"fan_s{i}",)).fetchone()[0]
    consumers["fan_root"] = db.execute(
        "SELECT notify_ext.create_stream_consumer('fan_root', deliver => 'new')").fetchone()[0]
    by_id = {str(c): r for r, c in consumers.items()}

    listener = connect()
    for c in consumers.values():
        channel = db.execute("SELECT notify_ext.get_event_message_stream(%s)", (c,)).fetchone()[0]
        listener.execute(f'LISTEN "{channel}"')
    writer = connect()

    for target in ("fan_s7", "fan_s500", "fan_s999"):
        writer.execute("INSERT INTO public.fan_items SELECT %s || '_' || g, %s FROM generate_series(1, 3) g",
                       (target, target))
        got = notifies(listener, 1.5)
        woken = sorted(by_id[json.loads(n.extra.decode())["consumer"]] for n in got)
        assert woken == sorted([target, "fan_root"]), (target, len(got), woken[:10])

    # A commit touching two subtrees wakes those two and the root, once each.
    writer.execute("INSERT INTO public.fan_items VALUES ('two_a', 'fan_s1'), ('two_b', 'fan_s2')")
    woken = sorted(by_id[json.loads(n.extra.decode())["consumer"]] for n in notifies(listener, 1.5))
    assert woken == ["fan_root", "fan_s1", "fan_s2"], woken
    # Outside every subtree: nobody.
    db.execute("SELECT notify_ext.register_resource('fan_elsewhere', 'project')")
    writer.execute("INSERT INTO public.fan_items VALUES ('away', 'fan_elsewhere')")
    assert notifies(listener, 1.0) == []
