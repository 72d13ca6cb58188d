"""Relays to NATS JetStream, against a real nats-server and a real JetStream
consumer (the NATS C client, test/e2e/nats_tool.c).

Every test checks what is in the stream: each committed event in the
relay's scope exactly once, in seq order, with the documented subject,
headers and body; across a nats-server killed with SIGKILL, PostgreSQL
stopped with -m immediate, a relay deleted while it publishes, a stream that
is missing at first, authentication and TLS.
"""

import json
import os
import shutil
import subprocess
import time

import psycopg
import pytest

from conftest import PGBIN, PGLOG, dsn_for
from nats_servers import DelayProxy, NatsServer


@pytest.fixture(scope="module")
def nats():
    server = NatsServer("relays").start()
    yield server
    server.stop()


@pytest.fixture(scope="module", autouse=True)
def tree(db_dsn):
    with psycopg.connect(db_dsn, autocommit=True) as db:
        db.execute("CREATE TABLE items (id text PRIMARY KEY, parent text, name text)")
        for p in ("p1", "p2"):
            db.execute("SELECT notify_ext.register_resource(%s, 'project')", (p,))
        db.execute("SELECT notify_ext.track('items', 'dataset', parent_column => 'parent')")


@pytest.fixture(autouse=True)
def no_relays(db_dsn, nats):
    if nats.proc is None:
        nats.start()
    yield
    with psycopg.connect(db_dsn, autocommit=True) as db:
        db.execute("SELECT notify_ext.delete_relay(id) FROM notify_ext.list_relays()")


def identity(db):
    sysid = db.execute("SELECT system_identifier FROM pg_control_system()").fetchone()[0]
    dboid = db.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()[0]
    return f"{sysid}.{dboid}"


def create_relay(db, nats, stream, **kw):
    # each stream has subjects of its own: <stream in lower case>.>
    args = {"servers": [nats.url], "stream": stream, "ensure_stream": True,
            "subject_prefix": stream.lower(), **kw}
    names = ", ".join(f"{k} => %({k})s" for k in args)
    args["name"] = kw.get("name", stream.lower())
    return db.execute(
        f"SELECT notify_ext.create_relay(name => %(name)s, {names})",
        {**args, "auth": json.dumps(args["auth"]) if "auth" in args else None,
         "tls": json.dumps(args["tls"]) if "tls" in args else None},
    ).fetchone()[0]


def relay_row(db, relay):
    return db.execute(
        "SELECT state, position, lag_events, published, missed, last_error FROM notify_ext.list_relays() "
        "WHERE id = %s", (relay,)).fetchone()


def wait_relayed(db, relay, timeout=60):
    """Waits until the relay's position reaches the committed horizon."""
    target = db.execute("SELECT notify_ext.committed_seq()").fetchone()[0]
    deadline = time.monotonic() + timeout
    while True:
        row = db.execute("SELECT position, state, last_error FROM notify_ext.relays WHERE id = %s",
                         (relay,)).fetchone()
        if row[0] >= target:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"relay at {row[0]}, not {target}: {row[1]} {row[2]}")
        time.sleep(0.05)


def wait_for(pred, timeout=30, what="condition"):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def events(db, where="true", args=()):
    return db.execute(
        f"SELECT seq, operation, resource_path, message::text FROM notify_ext.events WHERE {where} ORDER BY seq",
        args).fetchall()


def assert_exactly_once_in_order(msgs, seqs):
    got = [m.seq for m in msgs]
    assert len(got) == len(set(got)), f"{len(got) - len(set(got))} duplicates in the stream"
    assert got == sorted(got), "the stream is out of seq order"
    assert got == seqs


def test_events_arrive_in_order_with_subjects_headers_and_body(db, nats):
    relay = create_relay(db, nats, "ORDER", subject_prefix="notify")
    start = db.execute("SELECT notify_ext.committed_seq()").fetchone()[0]
    with db.transaction():
        db.execute("INSERT INTO items VALUES ('c1', 'p1', 'a'), ('d.1', 'c1', 'b'), ('x y*>%', 'p1', 'c')")
    db.execute("UPDATE items SET name = 'renamed' WHERE id = 'd.1'")
    db.execute("SELECT notify_ext.publish('jobs', 'JOB_PROCESSED', '{\"n\": 1}')")
    db.execute("DELETE FROM items WHERE id = 'x y*>%'")
    wait_relayed(db, relay)

    expected = events(db, "seq > %s", (start,))
    msgs = nats.dump("ORDER")
    assert_exactly_once_in_order(msgs, [e[0] for e in expected])
    ident = identity(db)
    for m, (seq, op, path, message) in zip(msgs, expected):
        assert m.headers["Nats-Msg-Id"] == f"{ident}.{seq}"
        assert m.headers["Notify-Seq"] == str(seq)
        assert m.headers["Notify-Operation"] == op
        # the body is the event JSON exactly as consumers get it
        assert m.data.decode() == message
        assert m.subject == db.execute("SELECT notify_ext.relay_subject('notify', %s, %s)",
                                       (op, path)).fetchone()[0]
    subjects = [m.subject for m in msgs]
    assert subjects == [
        "notify.dataset.create.p1.c1",
        "notify.dataset.create.p1.c1.d%2E1",
        "notify.dataset.create.p1.x%20y%2A%3E%25",
        "notify.dataset.update.p1.c1.d%2E1",
        "notify.%.JOB_PROCESSED",
        "notify.dataset.delete.p1.x%20y%2A%3E%25",
    ]
    # each token decodes back to the id
    assert db.execute("SELECT notify_ext.relay_subject_token('x%20y%2A%3E%25')").fetchone()[0] == "x y*>%"
    state, position, lag, published, missed, error = relay_row(db, relay)
    assert (state, lag, published, missed, error) == ("publishing", 0, 6, 0, None)


def test_subtree_filter_gets_exactly_that_subtree(db, nats):
    relay = create_relay(db, nats, "TREE", subject_prefix="app.events")
    start = db.execute("SELECT notify_ext.committed_seq()").fetchone()[0]
    db.execute("INSERT INTO items VALUES ('t1', 'p1', 'a'), ('t2', 'p2', 'b'), ('t3', 't1', 'c')")
    db.execute("UPDATE items SET name = 'x' WHERE id IN ('t1', 't2', 't3')")
    db.execute("UPDATE items SET name = 'y' WHERE id = 't3'")
    db.execute("DELETE FROM items WHERE id = 't2'")
    wait_relayed(db, relay)

    under_p1 = [e[0] for e in events(
        db, "seq > %s AND operation = 'dataset.update' AND 'p1' = ANY (resource_path) AND resource_id <> 'p1'",
        (start,))]
    got = nats.sub("TREE", "app.events.dataset.update.p1.>", 100)
    assert [m.seq for m in got] == under_p1 and len(under_p1) == 3
    assert all(m.subject.startswith("app.events.dataset.update.p1.") for m in got)
    # and one resource's own events, every operation
    t3 = [e[0] for e in events(db, "seq > %s AND resource_id = 't3'", (start,))]
    got = nats.sub("TREE", "app.events.*.*.p1.t1.t3", 100)
    assert [m.seq for m in got] == t3


def test_scope_arguments_select_events_as_for_consumers(db, nats):
    relay = create_relay(db, nats, "SCOPED", resource_id="p2", operations=["dataset.create"])
    start = db.execute("SELECT notify_ext.committed_seq()").fetchone()[0]
    db.execute("INSERT INTO items VALUES ('s1', 'p1', 'a'), ('s2', 'p2', 'b'), ('s3', 's2', 'c')")
    db.execute("UPDATE items SET name = 'x' WHERE id = 's2'")
    wait_relayed(db, relay)
    expected = [e[0] for e in events(
        db, "seq > %s AND operation = 'dataset.create' AND 'p2' = ANY (resource_path)", (start,))]
    assert len(expected) == 2
    assert_exactly_once_in_order(nats.dump("SCOPED"), expected)


def backlog(db, n, tag):
    db.execute("INSERT INTO items SELECT %s || '-' || g, 'p1', 'n' FROM generate_series(1, %s) g", (tag, n))


def test_nats_server_killed_mid_backlog(db, nats):
    relay = create_relay(db, nats, "KILLED")
    start = db.execute("SELECT notify_ext.committed_seq()").fetchone()[0]
    db.execute("SELECT notify_ext.pause_relay(%s)", (relay,))
    backlog(db, 30000, "k")
    db.execute("SELECT notify_ext.resume_relay(%s)", (relay,))
    wait_for(lambda: relay_row(db, relay)[3] >= 3000, what="the relay to publish")
    nats.kill()
    db.execute("INSERT INTO items VALUES ('k-while-down', 'p1', 'n')")
    wait_for(lambda: relay_row(db, relay)[0] == "failing", what="the relay to report the failure")
    assert "NATS server" in relay_row(db, relay)[5]
    time.sleep(1)
    nats.start()
    wait_relayed(db, relay, timeout=120)
    expected = [e[0] for e in events(db, "seq > %s", (start,))]
    msgs = nats.sub("KILLED", ">", len(expected) + 10)
    assert_exactly_once_in_order(msgs, expected)
    assert relay_row(db, relay)[0] == "publishing"


def test_postgres_stopped_immediately_mid_backlog(db, db_dsn, nats, restart_server):
    relay = create_relay(db, nats, "CRASH")
    start = db.execute("SELECT notify_ext.committed_seq()").fetchone()[0]
    db.execute("SELECT notify_ext.pause_relay(%s)", (relay,))
    backlog(db, 30000, "c")
    db.execute("SELECT notify_ext.resume_relay(%s)", (relay,))
    wait_for(lambda: relay_row(db, relay)[3] >= 3000, what="the relay to publish")
    restart_server("immediate")
    with psycopg.connect(db_dsn, autocommit=True) as db2:
        db2.execute("INSERT INTO items VALUES ('c-after', 'p1', 'n')")
        wait_relayed(db2, relay, timeout=120)
        expected = [e[0] for e in events(db2, "seq > %s", (start,))]
        msgs = nats.sub("CRASH", ">", len(expected) + 10)
        assert_exactly_once_in_order(msgs, expected)


def test_slow_pubacks(db, nats, admin_dsn):
    """PubAcks later than notify_ext.relay_ack_timeout end the session; the
    relay publishes again, JetStream drops the repeats."""
    proxy = DelayProxy(nats.port).start()
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute("ALTER SYSTEM SET notify_ext.relay_ack_timeout = '500ms'")
        admin.execute("SELECT pg_reload_conf()")
    try:
        nats.add_stream("SLOW", "slow.>")
        start = db.execute("SELECT notify_ext.committed_seq()").fetchone()[0]
        relay = db.execute("SELECT notify_ext.create_relay('slow', ARRAY[%s], 'SLOW', subject_prefix => 'slow')",
                           (proxy.url,)).fetchone()[0]
        db.execute("INSERT INTO items VALUES ('slow-0', 'p1', 'n')")
        wait_relayed(db, relay)
        proxy.delay = 1.5
        backlog(db, 300, "slow")
        wait_for(lambda: relay_row(db, relay)[0] == "failing", what="the PubAcks to time out")
        assert "PubAck" in relay_row(db, relay)[5] or "connect" in relay_row(db, relay)[5]
        time.sleep(2)
        proxy.delay = 0
        wait_relayed(db, relay, timeout=90)
        expected = [e[0] for e in events(db, "seq > %s", (start,))]
        assert_exactly_once_in_order(nats.dump("SLOW"), expected)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute("ALTER SYSTEM RESET notify_ext.relay_ack_timeout")
            admin.execute("SELECT pg_reload_conf()")
        proxy.stop()


def test_relay_deleted_while_publishing(db, nats):
    relay = create_relay(db, nats, "DELETED")
    start = db.execute("SELECT notify_ext.committed_seq()").fetchone()[0]
    db.execute("SELECT notify_ext.pause_relay(%s)", (relay,))
    backlog(db, 30000, "d")
    db.execute("SELECT notify_ext.resume_relay(%s)", (relay,))
    wait_for(lambda: relay_row(db, relay)[3] >= 2000, what="the relay to publish")
    db.execute("SELECT notify_ext.delete_relay(%s)", (relay,))
    time.sleep(1)
    n = nats.info("DELETED")["messages"]
    time.sleep(1)
    assert nats.info("DELETED")["messages"] == n, "the deleted relay went on publishing"
    expected = [e[0] for e in events(db, "seq > %s", (start,))]
    msgs = nats.sub("DELETED", ">", n + 10)
    assert 2000 <= len(msgs) < len(expected)
    assert_exactly_once_in_order(msgs, expected[:len(msgs)])


def test_missing_stream_is_reported_retried_and_nothing_dropped(db, nats):
    relay = create_relay(db, nats, "LATER", ensure_stream=False, subject_prefix="later")
    start = db.execute("SELECT notify_ext.committed_seq()").fetchone()[0]
    db.execute("INSERT INTO items VALUES ('m1', 'p1', 'a'), ('m2', 'p1', 'b')")
    wait_for(lambda: relay_row(db, relay)[0] == "failing", what="the failure")
    assert "no stream takes subject" in relay_row(db, relay)[5]
    db.execute("INSERT INTO items VALUES ('m3', 'p1', 'c')")
    nats.add_stream("LATER", "later.>")
    wait_relayed(db, relay, timeout=60)
    expected = [e[0] for e in events(db, "seq > %s", (start,))]
    assert_exactly_once_in_order(nats.dump("LATER"), expected)
    assert relay_row(db, relay)[0] == "publishing"


def test_existing_stream_with_other_subjects_is_reported(db, nats):
    nats.add_stream("OTHER", "other.>")
    relay = create_relay(db, nats, "OTHER", subject_prefix="mine")
    wait_for(lambda: relay_row(db, relay)[0] == "failing", what="the failure")
    assert "do not take mine.>" in relay_row(db, relay)[5]


def test_pause_and_resume(db, nats):
    relay = create_relay(db, nats, "PAUSED")
    start = db.execute("SELECT notify_ext.committed_seq()").fetchone()[0]
    db.execute("SELECT notify_ext.pause_relay(%s)", (relay,))
    db.execute("INSERT INTO items VALUES ('q1', 'p1', 'a')")
    time.sleep(0.5)
    row = relay_row(db, relay)
    assert row[0] == "paused" and row[2] == 1
    db.execute("SELECT notify_ext.resume_relay(%s)", (relay,))
    wait_relayed(db, relay)
    assert_exactly_once_in_order(nats.dump("PAUSED"), [e[0] for e in events(db, "seq > %s", (start,))])


def test_retention_counts_what_a_relay_missed(db, nats):
    relay = create_relay(db, nats, "MISSED", resource_id="p2")
    db.execute("SELECT notify_ext.pause_relay(%s)", (relay,))
    db.execute("INSERT INTO items VALUES ('r1', 'p2', 'a'), ('r2', 'p2', 'b'), ('r3', 'p1', 'c')")
    # events that landed in the default partition, expired
    db.execute("UPDATE notify_ext.event_log SET occurred_at = occurred_at - interval '30 days' "
               "WHERE resource_id IN ('r1', 'r2', 'r3')")
    result = db.execute("SELECT notify_ext.prune()").fetchone()[0]
    assert result["missed"] >= 2
    assert relay_row(db, relay)[4] == 2


def test_secrets_are_sealed_not_listed_and_not_in_pg_dump(db, db_dsn, nats):
    relay = create_relay(db, nats, "SECRET", ensure_stream=False,
                         auth={"token": "tok-very-secret-123"})
    row = db.execute("SELECT auth FROM notify_ext.list_relays() WHERE id = %s", (relay,)).fetchone()[0]
    assert row == {"type": "token"}
    dump = subprocess.run([os.path.join(PGBIN, "pg_dump"), "-d", db_dsn, "--data-only",
                           "-t", "notify_ext.relays"],
                          check=True, capture_output=True, text=True).stdout
    assert "SECRET" in dump and "tok-very-secret-123" not in dump


# The user NKey of the NATS documentation: its seed and public key.
NKEY_SEED = "SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VY"
NKEY_PUBLIC = "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4"


@pytest.fixture(scope="module")
def auth_nats():
    user = NatsServer("user", 'authorization { user: "relay", password: "s3cret pass" }\n').start()
    token = NatsServer("token", 'authorization { token: "t0ken-abc" }\n').start()
    nkey = NatsServer("nkey", f'authorization {{ users: [ {{ nkey: "{NKEY_PUBLIC}" }} ] }}\n').start()
    yield user, token, nkey
    user.stop()
    token.stop()
    nkey.stop()


def test_nkey_seed(db, auth_nats):
    """The worker signs the server's nonce with the seed; the server knows
    only the public key."""
    nkey = auth_nats[2]
    relay = create_relay(db, nkey, "AUTHN", auth={"nkey_seed": NKEY_SEED})
    db.execute("INSERT INTO items VALUES ('nk1', 'p1', 'a')")
    wait_relayed(db, relay)
    assert db.execute("SELECT auth FROM notify_ext.list_relays() WHERE id = %s", (relay,)).fetchone()[0] == \
        {"type": "nkey", "public_key": NKEY_PUBLIC}
    assert relay_row(db, relay)[3] == 1


def test_user_password_and_token(db, auth_nats):
    user, token, _ = auth_nats
    user.tool_args = ["-u", "relay", "-p", "s3cret pass"]
    token.tool_args = ["-t", "t0ken-abc"]
    start = db.execute("SELECT notify_ext.committed_seq()").fetchone()[0]
    good_user = create_relay(db, user, "AUTHU", auth={"user": "relay", "password": "s3cret pass"})
    good_token = create_relay(db, token, "AUTHT", auth={"token": "t0ken-abc"})
    bad = create_relay(db, token, "AUTHBAD", auth={"token": "wrong"})
    db.execute("INSERT INTO items VALUES ('a1', 'p1', 'a')")
    wait_relayed(db, good_user)
    wait_relayed(db, good_token)
    expected = [e[0] for e in events(db, "seq > %s", (start,))]
    assert_exactly_once_in_order(user.dump("AUTHU"), expected)
    assert_exactly_once_in_order(token.dump("AUTHT"), expected)
    wait_for(lambda: relay_row(db, bad)[0] == "failing", what="the refused relay to fail")
    assert "uthorization" in relay_row(db, bad)[5]


@pytest.fixture(scope="module")
def tls_nats():
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    server = NatsServer("tls", tls=True)
    d = server.dir

    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=notify_ext test CA",
            "-keyout", "ca.key", "-out", "ca.pem")
    (d / "san.cnf").write_text("subjectAltName = IP:127.0.0.1, DNS:localhost\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", "server.key", "-out", "server.csr")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "san.cnf", "-out", "server.pem")
    with open(server.conf, "a") as f:
        f.write(f'tls {{ cert_file: "{d / "server.pem"}", key_file: "{d / "server.key"}" }}\n')
    server.tool_args = ["-c", str(d / "ca.pem")]
    server.start()
    yield server
    server.stop()


def test_tls_with_a_self_signed_ca(db, tls_nats):
    ca = (tls_nats.dir / "ca.pem").read_text()
    start = db.execute("SELECT notify_ext.committed_seq()").fetchone()[0]
    trusted = create_relay(db, tls_nats, "TLSOK", tls={"ca": ca})
    untrusted = create_relay(db, tls_nats, "TLSBAD", tls={})
    db.execute("INSERT INTO items VALUES ('tls1', 'p1', 'a')")
    wait_relayed(db, trusted)
    assert_exactly_once_in_order(tls_nats.dump("TLSOK"), [e[0] for e in events(db, "seq > %s", (start,))])
    wait_for(lambda: relay_row(db, untrusted)[0] == "failing", what="verification to fail")
    assert relay_row(db, untrusted)[5]


# Attacks by a plain role (see also test_attacks_e2e.py): a role with APPEND
# on one resource, and nothing else, publishes what it likes about it.

ATTACKER = "relay_mallory"


@pytest.fixture
def mallory(db, db_dsn):
    db.execute(f"DROP ROLE IF EXISTS {ATTACKER}")
    db.execute(f"CREATE ROLE {ATTACKER} LOGIN")
    db.execute("SELECT notify_ext.register_resource('m_res', 'thing', 'p2')")
    db.execute("SELECT notify_ext.grant_permission(%s, 'm_res', 'APPEND')", (ATTACKER,))
    with psycopg.connect(db_dsn, user=ATTACKER, autocommit=True) as m:
        yield m
    db.execute("SELECT notify_ext.revoke_permission(%s, 'm_res')", (ATTACKER,))
    db.execute(f"DROP OWNED BY {ATTACKER}")
    db.execute(f"DROP ROLE {ATTACKER}")


def test_oversized_events_do_not_stall_a_relay(db, nats, mallory):
    """An event whose subject is longer than the server's control line, or
    whose message is larger than its max_payload, was refused by the server
    again after every reconnect: the relay never got past it."""
    relay = create_relay(db, nats, "POISON")
    start = db.execute("SELECT notify_ext.committed_seq()").fetchone()[0]
    mallory.execute("SELECT notify_ext.publish('s', 'ok.before', '{}', 'm_res')")
    mallory.execute("SELECT notify_ext.publish('s', repeat('x', 5000), '{}', 'm_res')")
    mallory.execute("SELECT notify_ext.publish('s', repeat('y', 5000) || '.' || repeat('z', 5000), '{}', 'm_res')")
    mallory.execute("SELECT notify_ext.publish('s', 'big.payload', jsonb_build_object('pad', repeat('p', 2000000)), 'm_res')")
    mallory.execute("SELECT notify_ext.publish('s', repeat('o', 2000000), '{}', 'm_res')")
    db.execute("INSERT INTO items VALUES ('after-poison', 'p1', 'a')")
    wait_relayed(db, relay, timeout=30)
    expected = events(db, "seq > %s", (start,))
    msgs = nats.dump("POISON")
    assert_exactly_once_in_order(msgs, [e[0] for e in expected])
    for m, (seq, op, path, message) in zip(msgs, expected):
        assert len(m.subject) <= 2048
        if len(message) < 1000000:
            assert m.data.decode() == message
            assert "Notify-Omitted" not in m.headers
        else:
            # too large for the server: the event's seq, the rest omitted
            assert m.json == {"seq": seq, "omitted": True}
            assert m.headers["Notify-Omitted"] == "max_payload"
    assert msgs[-1].subject == "poison.dataset.create.p1.after-poison"
    assert relay_row(db, relay)[0] == "publishing"


def test_an_operation_cannot_move_an_event_into_another_subtree(db, nats, mallory):
    """Operations were split at every dot, so an operation could end with
    the ids of another tenant's subtree and land under its filter subject."""
    relay = create_relay(db, nats, "FORGE")
    start = db.execute("SELECT notify_ext.committed_seq()").fetchone()[0]
    db.execute("INSERT INTO items VALUES ('f1', 'p1', 'a')")
    db.execute("UPDATE items SET name = 'b' WHERE id = 'f1'")
    for op in ("dataset.update.p1", "dataset.update.p1.f1", "JOB.p1", "x.y.z.p1"):
        mallory.execute("SELECT notify_ext.publish('s', %s, '{}', 'm_res')", (op,))
    wait_relayed(db, relay)
    p1 = [e[0] for e in events(db, "seq > %s AND 'p1' = ANY (resource_path)", (start,))]
    assert len(p1) == 2
    for filt in ("forge.*.*.p1.>", "forge.dataset.update.p1.>", "forge.*.JOB.p1.>", "forge.%.JOB.p1.>",
                 "forge.*.*.*.p1.>", "forge.*.*.*.*.p1.>"):
        got = nats.sub("FORGE", filt, 100)
        assert all(m.seq in p1 for m in got), f"{filt} selects events outside p1: {[m.subject for m in got]}"
    assert [m.seq for m in nats.sub("FORGE", "forge.*.*.p1.>", 100)] == p1


def test_server_url_credentials_are_not_echoed(db):
    """A password put in a server URL by mistake was shown in the error,
    and so written to the server log."""
    log_from = os.path.getsize(PGLOG)
    for servers in (["nats://relay:pa55-in-url@127.0.0.1:4222"],
                    ["nats://t0ken-in-url@127.0.0.1:4222"],
                    ["nats://relay:pa55-in-url@127.0.0.1:4222", None]):
        with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
            db.execute("SELECT notify_ext.create_relay('leak', %s, 'LEAK')", (servers,))
        text = str(e.value) + (e.value.diag.message_hint or "")
        assert "pa55-in-url" not in text and "t0ken-in-url" not in text
    for arg, value in (("auth", '"t0ken-as-a-string"'), ("auth", '["t0ken-as-a-string"]'),
                       ("tls", '"-----BEGIN PRIVATE KEY----- t0ken-as-a-string"')):
        with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
            db.execute(f"SELECT notify_ext.create_relay('leak', ARRAY['nats://127.0.0.1:4222'], 'LEAK', "
                       f"{arg} => %s::jsonb)", (value,))
        assert "t0ken-as-a-string" not in str(e.value)
    with open(PGLOG, errors="replace") as f:
        f.seek(log_from)
        log = f.read()
    assert "is not valid for a relay" in log
    assert "pa55-in-url" not in log and "t0ken-in-url" not in log and "t0ken-as-a-string" not in log


def test_a_servers_error_text_is_stored_as_valid_text(db_dsn):
    """A NATS server refuses the connection with -ERR and bytes that are
    not UTF-8.  last_error keeps what the server said, as text valid in the
    database's encoding: text that is not would fail clients that convert
    it and the restore of every dump (COPY checks the encoding)."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                conn.settimeout(5)
                conn.sendall(b'INFO {"server_id":"fake","version":"2.9.0","proto":1,'
                             b'"max_payload":1048576,"headers":true}\r\n')
                conn.recv(4096)
                conn.sendall(b"-ERR '\xff\xfe bad \x80'\r\n")
                conn.recv(4096)
            except OSError:
                pass
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        with psycopg.connect(db_dsn, autocommit=True) as db:
            relay = db.execute(
                "SELECT notify_ext.create_relay('refused', ARRAY[%s], 'REFUSED', ensure_stream => false)",
                (f"nats://127.0.0.1:{port}",)).fetchone()[0]
            query = "SELECT last_error::bytea FROM notify_ext.relays WHERE id = %s"
            wait_for(lambda: db.execute(query, (relay,)).fetchone()[0] is not None, what="last_error")
            text = db.execute(query, (relay,)).fetchone()[0].decode("utf-8")   # raises on invalid UTF-8
            assert text.endswith("?? bad ?"), text
    finally:
        listener.close()
