"""The inbox seen from clients: live notifications over LISTEN (ids only,
fetched with get_notification()), and a plain login role that tries to
impersonate someone or read their notifications."""

import json
import select
import time

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

APP, SVC, ALICE, BOB = "inbox_e2e_app", "inbox_e2e_svc", "inbox_e2e_alice", "inbox_e2e_bob"


@pytest.fixture(scope="module")
def roles(db_dsn):
    dbname = conninfo_to_dict(db_dsn)["dbname"]
    with psycopg.connect(db_dsn, autocommit=True) as c:
        for r in (SVC, ALICE, BOB, APP):
            c.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(r)))
        c.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(APP)))
        c.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(sql.Identifier(SVC), sql.Identifier(APP)))
        for r in (ALICE, BOB):
            c.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(r)))
        # Every new session of this database knows the application role.
        c.execute(sql.SQL("ALTER DATABASE {} SET notify_ext.app_role = {}").format(
            sql.Identifier(dbname), sql.Literal(APP)))
    yield
    with psycopg.connect(db_dsn, autocommit=True) as c:
        c.execute(sql.SQL("ALTER DATABASE {} RESET notify_ext.app_role").format(sql.Identifier(dbname)))
        c.execute("DELETE FROM notify_ext.notifications WHERE recipient LIKE 'inbox\\_e2e\\_%'")
        # Terminate leftover sessions of the roles so that they can be dropped.
        c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ANY(%s)",
                  ([SVC, ALICE, BOB],))
        for r in (SVC, ALICE, BOB, APP):
            c.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(r)))


@pytest.fixture
def login(db_dsn, roles):
    conns = []

    def _login(role, autocommit=True):
        conn = psycopg.connect(make_conninfo(db_dsn, user=role), autocommit=autocommit)
        conns.append(conn)
        return conn

    yield _login
    for c in conns:
        c.close()


def collect(conn, seconds):
    """Notifications that arrive on conn within `seconds`: (channel, payload,
    arrival time) in arrival order."""
    got = []
    deadline = time.monotonic() + seconds
    pg = conn.pgconn
    while True:
        n = pg.notifies()
        while n is not None:
            got.append((n.relname.decode(), n.extra.decode(), time.monotonic()))
            n = pg.notifies()
        left = deadline - time.monotonic()
        if left <= 0:
            return got
        ready, _, _ = select.select([pg.socket], [], [], left)
        if ready:
            pg.consume_input()


def test_listener_gets_ids_within_a_second_and_fetches_its_own(login):
    """The payload is {"id": n} and nothing else; the listener fetches the
    notification with get_notification(), which only gives its own."""
    alice = login(ALICE)
    channel = alice.execute("SELECT notify_ext.subscription_channel()").fetchone()[0]
    alice.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
    # Bob listens too, on his own channel: he must not get Alice's.
    bob = login(BOB)
    bob_channel = bob.execute("SELECT notify_ext.subscription_channel()").fetchone()[0]
    assert bob_channel != channel
    bob.execute(sql.SQL("LISTEN {}").format(sql.Identifier(bob_channel)))

    svc = login(SVC, autocommit=False)
    ids = []
    ids.append(svc.execute(
        "SELECT notify_ext.create_notification(%s, 'JOB_DONE', 'job 1 done', '{\"job\": 1}')",
        (ALICE,)).fetchone()[0])
    bob_ids = [svc.execute("SELECT notify_ext.create_notification(%s, 'SECRET', 'for bob only')",
                           (BOB,)).fetchone()[0]]
    bulk = svc.execute(
        "SELECT notify_ext.create_notifications_bulk(%s)",
        (json.dumps([{"user": ALICE, "notification": {"type": "BULK", "message": "b1"}},
                     {"user": BOB, "notification": {"type": "SECRET", "message": "b2"}}]),),
    ).fetchone()[0]
    ids.append(bulk[0])
    bob_ids.append(bulk[1])
    # Nothing before commit.
    assert collect(alice, 0.3) == []
    svc.commit()
    committed = time.monotonic()

    got = collect(alice, 1.5)
    assert [c for c, _, _ in got] == [channel, channel], got
    # Exactly {"id": n}: the payload text as sent, not only its parsed keys.
    assert [p for _, p, _ in got] == [f'{{"id": {i}}}' for i in ids], got
    for _, _, arrived in got:
        assert arrived - committed < 1.0, arrived - committed

    first = alice.execute("SELECT notify_ext.get_notification(%s)", (ids[0],)).fetchone()[0]
    assert first["id"] == ids[0] and first["type"] == "JOB_DONE" and first["message"] == "job 1 done"
    assert first["meta"] == {"job": 1} and first["read"] is False and first["ts"].endswith("Z")
    assert set(first) == {"id", "type", "message", "meta", "ts", "read"}
    listed = alice.execute("SELECT notify_ext.list_notifications()").fetchone()[0]["items"]
    assert first in listed
    assert alice.execute("SELECT notify_ext.get_notification(%s)",
                         (ids[1],)).fetchone()[0]["message"] == "b1"

    bob_got = collect(bob, 0.5)
    assert [c for c, _, _ in bob_got] == [bob_channel, bob_channel]
    assert [json.loads(p) for _, p, _ in bob_got] == [{"id": i} for i in bob_ids]
    # Another principal asking for one of them learns nothing, either way round.
    for conn, other in ((bob, ids[0]), (alice, bob_ids[0])):
        refused(conn, "SELECT notify_ext.get_notification(%s)", (other,), "42704")
    refused(bob, "SELECT notify_ext.get_notification(NULL)", sqlstate="22023")


@pytest.mark.parametrize("path", ["direct", "insert"])
def test_bulk_announces_in_item_order_and_counts(login, db_dsn, path):
    """create_notifications_bulk() announces each new notification in item
    order and counts it, whether it writes its rows directly or, when
    another trigger acts on an INSERT, through one."""
    alice = login(ALICE)
    channel = alice.execute("SELECT notify_ext.subscription_channel()").fetchone()[0]
    alice.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
    unread_before = alice.execute("SELECT notify_ext.unread_count()").fetchone()[0]
    admin = psycopg.connect(db_dsn, autocommit=True)
    try:
        if path == "insert":
            admin.execute("CREATE FUNCTION public.inbox_e2e_pass() RETURNS trigger LANGUAGE plpgsql "
                          "AS 'BEGIN RETURN NEW; END'")
            admin.execute("CREATE TRIGGER inbox_e2e_pass BEFORE INSERT ON notify_ext.notifications "
                          "FOR EACH ROW EXECUTE FUNCTION public.inbox_e2e_pass()")
        svc = login(SVC)
        items = [{"user": ALICE if i % 3 else BOB, "notification": {"type": f"ORDER_{path}", "message": f"m{i}"}}
                 for i in range(12)]
        ids = svc.execute("SELECT notify_ext.create_notifications_bulk(%s)",
                          (json.dumps(items),)).fetchone()[0]
    finally:
        admin.execute("DROP TRIGGER IF EXISTS inbox_e2e_pass ON notify_ext.notifications")
        admin.execute("DROP FUNCTION IF EXISTS public.inbox_e2e_pass()")
        admin.close()
    assert ids == sorted(ids)
    alices = [i for i, item in zip(ids, items) if item["user"] == ALICE]
    got = collect(alice, 1.5)
    assert [p for _, p, _ in got] == [f'{{"id": {i}}}' for i in alices], got
    assert alice.execute("SELECT notify_ext.unread_count()").fetchone()[0] == unread_before + len(alices)
    page = alice.execute("SELECT notify_ext.list_notifications(%s)", (f"ORDER_{path}",)).fetchone()[0]
    assert page["itemsInTotal"] == len(alices)
    assert [i["id"] for i in page["items"]] == sorted(alices, reverse=True)
    svc.execute("SELECT notify_ext.delete_notifications(%s)", (ids,))


def test_large_notification_is_announced_by_id(login):
    """Size makes no difference: the payload is the id, the content is fetched."""
    alice = login(ALICE)
    channel = alice.execute("SELECT notify_ext.subscription_channel()").fetchone()[0]
    alice.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
    svc = login(SVC)
    nid = svc.execute("SELECT notify_ext.create_notification(%s, 'BIG', repeat('x', 9000))",
                      (ALICE,)).fetchone()[0]
    got = collect(alice, 1.5)
    assert [json.loads(p) for _, p, _ in got] == [{"id": nid}]
    fetched = alice.execute("SELECT notify_ext.get_notification(%s)", (nid,)).fetchone()[0]
    assert fetched["message"] == "x" * 9000


def test_app_role_acts_for_end_users_on_their_channel(login):
    """The application subscribes for an end user by setting the principal,
    and fetches what arrives as that user."""
    app = login(SVC)
    app.execute("SET notify_ext.principal = 'User#42'")
    channel = app.execute("SELECT notify_ext.subscription_channel()").fetchone()[0]
    app.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
    other = login(SVC)
    n42 = other.execute("SELECT notify_ext.create_notification('User#42', 'HELLO', 'hi 42')").fetchone()[0]
    n43 = other.execute("SELECT notify_ext.create_notification('User#43', 'HELLO', 'hi 43')").fetchone()[0]
    got = collect(app, 1.0)
    assert [json.loads(p) for _, p, _ in got] == [{"id": n42}]
    assert app.execute("SELECT notify_ext.get_notification(%s)", (n42,)).fetchone()[0]["message"] == "hi 42"
    refused(app, "SELECT notify_ext.get_notification(%s)", (n43,), "42704")
    assert app.execute("SELECT notify_ext.unread_count()").fetchone()[0] == 1
    app.execute("RESET notify_ext.principal")
    assert app.execute("SELECT notify_ext.current_principal()").fetchone()[0] == SVC
    refused(app, "SELECT notify_ext.get_notification(%s)", (n42,), "42704")
    other.execute("SELECT notify_ext.delete_notifications(%s)", ([n42, n43],))


def test_changes_are_signalled_by_id_to_every_listener(login):
    """Reading and deleting are signalled on the inbox channel too, ids only:
    {"read": [ids]} and {"deleted": [ids]}, so that a second client (another
    browser tab) stays in step; a change of many ids comes in several
    NOTIFYs, each under NOTIFY's 8000 bytes."""
    tab1, tab2 = login(ALICE), login(ALICE)
    # Start from an empty inbox.
    tab1.execute("SELECT notify_ext.acknowledge_personal_notifications(ARRAY(SELECT id FROM "
                 "notify_ext.get_personal_notifications()))")
    channel = tab1.execute("SELECT notify_ext.subscription_channel()").fetchone()[0]
    tab2.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
    bob = login(BOB)
    bob.execute(sql.SQL("LISTEN {}").format(
        sql.Identifier(bob.execute("SELECT notify_ext.subscription_channel()").fetchone()[0])))
    svc = login(SVC)
    ids = svc.execute("SELECT notify_ext.create_notifications_bulk(%s)", (json.dumps(
        [{"user": ALICE, "notification": {"type": "T", "message": f"m{i}"}} for i in range(5)]),)
    ).fetchone()[0]
    bob_id = svc.execute("SELECT notify_ext.create_notification(%s, 'T', 'for bob')", (BOB,)).fetchone()[0]
    assert [json.loads(p) for _, p, _ in collect(tab2, 1.0)] == [{"id": i} for i in ids]
    collect(bob, 0.5)

    def signals(seconds=1.0):
        return [json.loads(p) for c, p, _ in collect(tab2, seconds) if c == channel]

    # Read in one tab: the other learns which, exactly once; reading again says nothing.
    tab1.execute("SELECT notify_ext.mark_as_read(%s)", (ids[:2],))
    assert signals() == [{"read": sorted(ids[:2])}]
    tab1.execute("SELECT notify_ext.mark_as_read(%s)", (ids[:2],))
    assert signals(0.5) == []
    tab1.execute("SELECT notify_ext.mark_all_as_read()")
    assert signals() == [{"read": sorted(ids[2:])}]
    # Acknowledged (deleted) by the user, or deleted by a service.
    tab1.execute("SELECT notify_ext.acknowledge_personal_notifications(%s)", (ids[:1],))
    assert signals() == [{"deleted": ids[:1]}]
    svc.execute("SELECT notify_ext.delete_notifications(%s)", (ids[1:3],))
    assert signals() == [{"deleted": sorted(ids[1:3])}]
    # Nothing reaches anyone else's channel, and payloads carry ids only.
    assert collect(bob, 0.3) == []

    # Many at once: several NOTIFYs, each under 8000 bytes, together every id once.
    many = svc.execute("SELECT notify_ext.create_notifications_bulk(%s)", (json.dumps(
        [{"user": ALICE, "notification": {"type": "M", "message": "x"}} for _ in range(2000)]),)
    ).fetchone()[0]
    collect(tab2, 1.5)
    tab1.execute("SELECT notify_ext.mark_all_as_read()")
    got = collect(tab2, 2.0)
    assert len(got) > 1 and all(len(p.encode()) < 8000 for _, p, _ in got), [len(p) for _, p, _ in got]
    read = [i for _, p, _ in got for i in json.loads(p)["read"]]
    assert sorted(read) == sorted(many) and len(read) == len(set(read))
    tab1.execute("SELECT notify_ext.acknowledge_personal_notifications(%s)", (many + ids[3:],))
    got = collect(tab2, 2.0)
    deleted = [i for _, p, _ in got for i in json.loads(p)["deleted"]]
    assert sorted(deleted) == sorted(many + ids[3:])
    svc.execute("SELECT notify_ext.delete_notifications(%s)", ([bob_id],))


def refused(conn, query, params=None, sqlstate="42501"):
    with pytest.raises(psycopg.Error) as exc:
        conn.execute(query, params)
    assert exc.value.sqlstate == sqlstate, (query, exc.value.sqlstate, str(exc.value))


def test_plain_role_cannot_impersonate_or_read_others(login, db_dsn):
    svc = login(SVC)
    bob_id = svc.execute("SELECT notify_ext.create_notification(%s, 'SECRET', 'bob private')",
                         (BOB,)).fetchone()[0]
    svc.execute("SELECT notify_ext.create_notification(%s, 'MINE', 'alice own')", (ALICE,))

    alice = login(ALICE)
    # Becoming someone else, every way a plain role can try.
    refused(alice, "SET notify_ext.principal = %s" % sql.Literal(BOB).as_string(alice))
    refused(alice, "SELECT set_config('notify_ext.principal', %s, false)", (BOB,))
    refused(alice, "SELECT set_config('notify_ext.principal', %s, true)", (BOB,))
    refused(alice, "SET notify_ext.app_role = %s" % sql.Literal(ALICE).as_string(alice))
    refused(alice, sql.SQL("SET ROLE {}").format(sql.Identifier(BOB)))
    refused(alice, sql.SQL("SET SESSION AUTHORIZATION {}").format(sql.Identifier(BOB)))
    refused(alice, sql.SQL("ALTER ROLE {} SET notify_ext.principal = 'x'").format(sql.Identifier(BOB)))
    # Nor can a function of her own with a SET clause.
    refused(alice, f"CREATE FUNCTION pg_temp.as_bob() RETURNS text LANGUAGE sql "
                   f"SET notify_ext.principal = '{BOB}' AS 'SELECT notify_ext.current_principal()'")
    # A session started with the option set is refused when it is used.
    sneaky = psycopg.connect(make_conninfo(db_dsn, user=ALICE, options=f"-c notify_ext.principal={BOB}"),
                             autocommit=True)
    try:
        refused(sneaky, "SELECT notify_ext.current_principal()")
        refused(sneaky, "SELECT notify_ext.list_notifications()")
        refused(sneaky, "SELECT count(*) FROM notify_ext.notifications")
    finally:
        sneaky.close()
    assert alice.execute("SELECT notify_ext.current_principal()").fetchone()[0] == ALICE

    # Reading and changing Bob's rows, with any SQL she can write.
    rows = alice.execute("SELECT recipient, message FROM notify_ext.notifications").fetchall()
    assert rows and all(r == ALICE for r, _ in rows), rows
    assert alice.execute("SELECT count(*) FROM notify_ext.notifications WHERE id = %s",
                         (bob_id,)).fetchone()[0] == 0
    assert alice.execute("UPDATE notify_ext.notifications SET read = true WHERE id = %s",
                         (bob_id,)).rowcount == 0
    assert alice.execute("DELETE FROM notify_ext.notifications WHERE id = %s", (bob_id,)).rowcount == 0
    assert alice.execute("SELECT notify_ext.mark_as_read(%s)", ([bob_id],)).fetchone()[0] == [bob_id]
    assert alice.execute("SELECT notify_ext.acknowledge_personal_notifications(%s)",
                         ([bob_id],)).fetchone()[0] == [bob_id]
    page = alice.execute("SELECT notify_ext.list_notifications()").fetchone()[0]
    assert all(i["id"] != bob_id for i in page["items"])
    refused(alice, "SELECT notify_ext.get_notification(%s)", (bob_id,), "42704")
    refused(alice, "UPDATE notify_ext.notifications SET recipient = %s", (ALICE,))
    refused(alice, "INSERT INTO notify_ext.notifications (recipient, type, message) VALUES (%s, 'X', 'y')",
            (BOB,))
    refused(alice, "SELECT * FROM notify_ext.inbox_counts")
    refused(alice, "SELECT notify_ext._inbox_channel(%s)", (BOB,))
    refused(alice, "SELECT notify_ext._notify(%s, 'X', 'y', NULL, now(), NULL)", (BOB,))
    refused(alice, "SELECT notify_ext.create_notification(%s, 'X', 'y')", (BOB,))
    refused(alice, "SELECT notify_ext.delete_notifications(%s)", ([bob_id],))
    refused(alice, "ALTER TABLE notify_ext.notifications DISABLE ROW LEVEL SECURITY")
    refused(alice, "CREATE POLICY p ON notify_ext.notifications USING (true)")
    # Her channel is her own; Bob's is nowhere for her to read.
    mine = alice.execute("SELECT notify_ext.subscription_channel()").fetchone()[0]
    bobs = login(BOB).execute("SELECT notify_ext.subscription_channel()").fetchone()[0]
    assert mine != bobs and ALICE not in mine and BOB not in bobs

    # Bob's notification is untouched.
    bob = login(BOB)
    row = bob.execute("SELECT message, read FROM notify_ext.notifications WHERE id = %s",
                      (bob_id,)).fetchone()
    assert row == ("bob private", False)
