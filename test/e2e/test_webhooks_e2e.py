"""Webhook delivery end to end, against HTTP servers on 127.0.0.1.

The background worker delivers; these tests run with a short timeout and
retry schedule (set with ALTER SYSTEM for the module, reset afterwards).
Covered: a delivery and its signature, checked here independently; 500
then success with the same webhook-id; a slow endpoint timing out;
Retry-After; 410 disabling the webhook (and telling its creator); a webhook
failing for longer than webhook_disable_after; Basic auth; OAuth2 client
credentials with token caching and a refresh after 401; filters; redeliver;
the worker terminated (restarted by the launcher); the server stopped with
-m immediate in the middle of a delivery and started again; secrets not in
pg_dump's output; addresses of notify_ext.webhook_denied_networks refused
when the worker connects (webhooks and token requests); the update from
0.1.0 taking credentials out of webhook URLs; endpoints that hang leaving
a healthy one its share of the delivery slots.
"""

import base64
import json
import os
import re
import statistics
import subprocess
import threading
import time

import psycopg
import pytest

from conftest import DB_PREFIX, PGBIN, PG_OS_USER, dsn_for, start_server, stop_server
from webhook_servers import HangingServer, HookServer, TokenServer, verify_signature

TIMEOUT = "1s"
SCHEDULE = "300ms, 1s, 1s, 1s, 1s, 1s, 1s, 1s"


def alter_system(admin_dsn, settings):
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        for name, value in settings.items():
            if value is None:
                conn.execute(f"ALTER SYSTEM RESET {name}")
            else:
                conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
        conn.execute("SELECT pg_reload_conf()")
    time.sleep(0.5)


@pytest.fixture(scope="module", autouse=True)
def fast_retries(admin_dsn, db_dsn):
    alter_system(admin_dsn, {"notify_ext.webhook_timeout": TIMEOUT,
                             "notify_ext.webhook_retry_schedule": SCHEDULE})
    yield
    try:
        psycopg.connect(admin_dsn, connect_timeout=5).close()
    except psycopg.OperationalError:
        start_server()
    alter_system(admin_dsn, {"notify_ext.webhook_timeout": None,
                             "notify_ext.webhook_retry_schedule": None,
                             "notify_ext.webhook_disable_after": None})


@pytest.fixture
def servers():
    started = []

    def _start(cls=HookServer, *args, **kwargs):
        s = cls(*args, **kwargs)
        started.append(s)
        return s

    yield _start
    for s in started:
        s.close()


@pytest.fixture(autouse=True)
def no_webhooks_left(db_dsn):
    """Every test starts and ends without webhooks."""
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute("SELECT notify_ext.delete_webhook(id) FROM notify_ext.webhooks")
        conn.execute("DELETE FROM notify_ext.subscription_auth")
    yield
    try:
        with psycopg.connect(db_dsn, autocommit=True) as conn:
            conn.execute("SELECT notify_ext.delete_webhook(id) FROM notify_ext.webhooks")
    except psycopg.OperationalError:
        pass


def create_webhook(db, url, **kwargs):
    args = ", ".join([f"{k} => %({k})s" for k in kwargs])
    q = f"SELECT notify_ext.create_webhook(%(url)s{', ' + args if args else ''})"
    return db.execute(q, {"url": url, **kwargs}).fetchone()[0]


def publish(db, stream="jobs", operation="JOB_PROCESSED", payload=None, resource_id=None):
    payload = payload or {"status": "done", "type": "export", "results": ["a.csv"], "error": None}
    db.execute("SELECT notify_ext.publish(%s, %s, %s, %s)",
               (stream, operation, json.dumps(payload), resource_id))
    # publish() returns the event's place in its transaction; seq is given
    # at commit.
    return db.execute("SELECT max(seq) FROM notify_ext.event_log").fetchone()[0]


def deliveries(db, webhook):
    return db.execute(
        "SELECT seq, attempt, message_id, status_code, error, next_attempt_at, duration"
        "  FROM notify_ext.deliveries WHERE webhook = %s ORDER BY attempted_at, attempt",
        (webhook,)).fetchall()


def webhook_info(db, webhook):
    for (w,) in db.execute("SELECT * FROM notify_ext.list_webhooks()"):
        if w["id"] == str(webhook):
            return w
    return None


def wait_until(fn, timeout=15, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def event_message(db, seq):
    return db.execute("SELECT message FROM notify_ext.events WHERE seq = %s", (seq,)).fetchone()[0]


def test_delivery_is_signed(db, servers):
    hook = servers()
    wh = create_webhook(db, hook.url())
    secret = db.execute("SELECT notify_ext.webhook_secret(%s)", (wh,)).fetchone()[0]
    t0 = time.monotonic()
    seq = publish(db)
    (req,) = hook.wait_for(1)
    # Woken by the commit, not by a periodic look (that comes every 30 s).
    assert req.at - t0 < 5
    assert req.path == "/hook"
    assert req.headers["content-type"] == "application/json"
    assert req.webhook_id == f"msg_{str(wh).replace('-', '')}_{seq}"
    assert abs(int(req.headers["webhook-timestamp"]) - time.time()) < 60
    assert req.headers["webhook-signature"].startswith("v1,")
    assert verify_signature(secret, req)
    assert req.json == event_message(db, seq)
    assert req.json["operation"] == "JOB_PROCESSED"
    assert "authorization" not in req.headers
    # A tampered body does not verify.
    req.body = req.body.replace(b"done", b"dome")
    assert not verify_signature(secret, req)
    rows = wait_until(lambda: deliveries(db, wh), what="the delivery record")
    assert [(r[0], r[1], r[3], r[4]) for r in rows] == [(seq, 1, 200, None)]
    info = wait_until(lambda: (i := webhook_info(db, wh))["last_success_at"] and i,
                      what="last_success_at")
    assert info["status"] == "active" and info["failures"] == 0 and info["pending"] == 0


def test_500_then_success_keeps_webhook_id(db, servers):
    hook = servers(HookServer, lambda req, n: (500, {}, b"oops") if n == 1 else (200, {}, b""))
    wh = create_webhook(db, hook.url())
    seq = publish(db)
    first, second = hook.wait_for(2)
    assert first.webhook_id == second.webhook_id == f"msg_{str(wh).replace('-', '')}_{seq}"
    assert first.body == second.body
    assert second.at - first.at >= 0.2   # 300 ms, less up to 20% of jitter
    rows = wait_until(lambda: len(r := deliveries(db, wh)) == 2 and r, what="two attempts")
    assert [(r[1], r[3]) for r in rows] == [(1, 500), (2, 200)]
    assert rows[0][4] == "HTTP 500: oops" and rows[0][5] is not None
    assert rows[1][4] is None and rows[1][5] is None
    time.sleep(1.5)
    assert len(hook.requests) == 2


def test_error_bodies_are_stored_as_valid_text(db, servers):
    """An endpoint's answer is stored, cut, in the error of the attempt.
    Whatever bytes it sends (invalid UTF-8, a NUL, a character cut by the
    limit), the stored text is valid in the database's encoding: text that
    is not would fail every client that converts it, and every restore of
    a dump (COPY checks the encoding)."""
    bodies = {1: b"\xff\xfe bad \x00 after", 2: b"a" * 199 + "\u00e9".encode()}
    hook = servers(HookServer, lambda req, n: (500, {}, bodies[n]) if n in bodies else (200, {}, b""))
    wh = create_webhook(db, hook.url())
    publish(db)
    hook.wait_for(3)
    wait_until(lambda: len(deliveries(db, wh)) == 3, what="three attempts")
    errors = [r[0] for r in db.execute(
        "SELECT error::bytea FROM notify_ext.deliveries WHERE webhook = %s AND error IS NOT NULL"
        " ORDER BY attempt", (wh,)).fetchall()]
    assert len(errors) == 2
    texts = [e.decode("utf-8") for e in errors]   # raises on invalid UTF-8
    assert texts[0] == "HTTP 500: ?? bad ? after"
    assert texts[1] == "HTTP 500: " + "a" * 199   # the cut character is left out


def test_slow_endpoint_times_out(db, servers):
    def respond(req, n):
        if n == 1:
            time.sleep(3)
        return 200, {}, b""

    hook = servers(HookServer, respond)
    wh = create_webhook(db, hook.url())
    publish(db)
    first, second = hook.wait_for(2, timeout=20)
    assert first.webhook_id == second.webhook_id
    rows = wait_until(lambda: len(r := deliveries(db, wh)) == 2 and r, what="two attempts")
    assert rows[0][3] is None and "timed out after 1000 ms" in rows[0][4]
    assert rows[0][6].total_seconds() < 2.5
    assert rows[1][3] == 200


def test_retry_after_is_honoured(db, servers):
    hook = servers(HookServer, lambda req, n: (503, {"Retry-After": "2"}, b"") if n == 1 else (200, {}, b""))
    wh = create_webhook(db, hook.url())
    publish(db)
    first, second = hook.wait_for(2)
    # the schedule says 300 ms; the endpoint asked for 2 s
    assert second.at - first.at >= 1.9
    rows = wait_until(lambda: len(r := deliveries(db, wh)) == 2 and r, what="two attempts")
    assert [r[3] for r in rows] == [503, 200]


def test_410_disables_the_webhook(db, servers):
    hook = servers(HookServer, lambda req, n: (410, {}, b"gone"))
    wh = create_webhook(db, hook.url())
    publish(db)
    publish(db)
    hook.wait_for(1)
    info = wait_until(lambda: (i := webhook_info(db, wh))["status"] == "disabled" and i,
                      what="the webhook to be disabled")
    assert info["disabled_at"] is not None and "410" in info["disabled_reason"]
    assert info["pending"] == 0
    note = db.execute(
        "SELECT meta FROM notify_ext.notifications WHERE recipient = current_user"
        "   AND type = 'WEBHOOK_DISABLED' AND meta ->> 'webhook' = %s", (str(wh),)).fetchone()
    assert note is not None and "410" in note[0]["reason"]
    n = len(hook.requests)
    publish(db)
    time.sleep(1)
    assert len(hook.requests) == n
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
        db.execute("SELECT notify_ext.redeliver(%s, '-infinity')", (wh,))
    # Enabled again, it delivers new events.
    hook.respond = lambda req, n: (200, {}, b"")
    db.execute("SELECT notify_ext.enable_webhook(%s)", (wh,))
    seq = publish(db)
    wait_until(lambda: any(r.json["seq"] == seq for r in hook.requests), what="delivery after enable")


def test_failing_for_too_long_disables(db, servers, admin_dsn):
    alter_system(admin_dsn, {"notify_ext.webhook_disable_after": "2s"})
    try:
        hook = servers(HookServer, lambda req, n: (500, {}, b""))
        wh = create_webhook(db, hook.url())
        publish(db)
        info = wait_until(lambda: (i := webhook_info(db, wh))["status"] == "disabled" and i,
                          timeout=20, what="the webhook to be disabled")
        assert "every attempt failed since" in info["disabled_reason"]
        assert info["failures"] >= 2
        note = db.execute(
            "SELECT message, meta, refs FROM notify_ext.notifications WHERE recipient = current_user"
            "   AND type = 'WEBHOOK_DISABLED' AND meta ->> 'webhook' = %s", (str(wh),)).fetchone()
        assert note is not None
        assert note[2] == [{"type": "webhook", "id": str(wh)}]
    finally:
        alter_system(admin_dsn, {"notify_ext.webhook_disable_after": None})


def test_basic_auth(db, servers):
    hook = servers()
    auth = db.execute("SELECT notify_ext.create_subscription_auth('BASIC_AUTH', 'hooks', 'pa:ss w0rd')").fetchone()[0]
    create_webhook(db, hook.url(), auth_config=auth)
    publish(db)
    (req,) = hook.wait_for(1)
    assert req.headers["authorization"] == "Basic " + base64.b64encode(b"hooks:pa:ss w0rd").decode()


def test_oauth_token_cached_and_refreshed_after_401(db, servers):
    tokens = servers(TokenServer)
    accepted = {"token": "token-1"}

    def respond(req, n):
        if req.headers.get("authorization") != f"Bearer {accepted['token']}":
            return 401, {}, b"bad token"
        return 200, {}, b""

    hook = servers(HookServer, respond)
    auth = db.execute(
        "SELECT notify_ext.create_subscription_auth('OAUTH_2_CLIENT_CREDENTIALS', 'client-1', 's3cret',"
        " 'events:write', %s)", (tokens.url("/oauth/token"),)).fetchone()[0]
    wh = create_webhook(db, hook.url(), auth_config=auth)
    publish(db)
    (req,) = hook.wait_for(1)
    assert req.headers["authorization"] == "Bearer token-1"
    (treq,) = tokens.requests
    assert treq.headers["authorization"] == "Basic " + base64.b64encode(b"client-1:s3cret").decode()
    assert treq.headers["content-type"] == "application/x-www-form-urlencoded"
    assert treq.body == b"grant_type=client_credentials&scope=events%3Awrite"
    # Cached: the next delivery fetches no token.
    publish(db)
    hook.wait_for(2)
    assert len(tokens.requests) == 1
    # The endpoint stops accepting token-1: one 401, one new token, success.
    accepted["token"] = "token-2"
    seq = publish(db)
    reqs = hook.wait_for(4)
    assert [r.headers["authorization"] for r in reqs[2:4]] == ["Bearer token-1", "Bearer token-2"]
    assert reqs[2].webhook_id == reqs[3].webhook_id
    assert len(tokens.requests) == 2
    rows = wait_until(lambda: [r for r in deliveries(db, wh) if r[0] == seq], what="the delivery record")
    assert [(r[1], r[3]) for r in rows] == [(1, 200)]


def test_filters(db, servers):
    hook = servers()
    db.execute("SELECT notify_ext.register_resource('wh_p1', 'project')")
    db.execute("SELECT notify_ext.register_resource('wh_d1', 'dataset', 'wh_p1')")
    db.execute("SELECT notify_ext.register_resource('wh_p2', 'project')")
    create_webhook(db, hook.url("/ops"), operations=["JOB_PROCESSED"], streams=["jobs"])
    create_webhook(db, hook.url("/tree"), resource_id="wh_p1")
    s1 = publish(db, "jobs", "JOB_PROCESSED")
    publish(db, "jobs", "JOB_STARTED")
    publish(db, "other", "JOB_PROCESSED")
    s4 = publish(db, "data", "dataset.update", {"id": "wh_d1"}, "wh_d1")
    publish(db, "data", "dataset.update", {"id": "wh_p2"}, "wh_p2")
    hook.wait_for(2)
    time.sleep(1)
    got = sorted((r.path, r.json["seq"]) for r in hook.requests)
    assert got == [("/ops", s1), ("/tree", s4)]


def test_redeliver(db, servers):
    hook = servers()
    since = db.execute("SELECT clock_timestamp()").fetchone()[0]
    wh = create_webhook(db, hook.url())
    seq = publish(db)
    (first,) = hook.wait_for(1)
    wait_until(lambda: deliveries(db, wh), what="the delivery record")
    # Every retained event in scope that occurred since then: just this one.
    n = db.execute("SELECT notify_ext.redeliver(%s, %s)", (wh, since)).fetchone()[0]
    assert n == 1
    second = hook.wait_for(2)[1]
    assert second.webhook_id == first.webhook_id and second.json["seq"] == seq


def test_worker_terminated_is_restarted(db, servers):
    hook = servers()
    create_webhook(db, hook.url())
    publish(db)
    hook.wait_for(1)
    pid = db.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'notify_ext webhook worker'"
                     " AND datname = current_database()").fetchone()[0]
    db.execute("SELECT pg_terminate_backend(%s)", (pid,))
    seq = publish(db)
    wait_until(lambda: any(r.json["seq"] == seq for r in hook.requests), timeout=20,
               what="delivery after the worker was terminated")
    new_pid = db.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'notify_ext webhook worker'"
                         " AND datname = current_database()").fetchone()[0]
    assert new_pid != pid


def test_crash_in_the_middle_of_a_delivery(db, db_dsn, servers):
    release = threading.Event()

    def respond(req, n):
        if n == 1:
            release.wait(30)   # hold the first attempt until the server is down
        return 200, {}, b""

    hook = servers(HookServer, respond)
    wh = create_webhook(db, hook.url())
    seq = publish(db)
    (first,) = hook.wait_for(1)
    db.close()
    stop_server("immediate")
    release.set()
    start_server()
    reqs = hook.wait_for(2, timeout=30)
    assert reqs[1].webhook_id == first.webhook_id
    assert reqs[1].json["seq"] == seq
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        rows = wait_until(lambda: deliveries(conn, wh), what="the delivery record")
        assert rows[-1][3] == 200


def pg_dump(conn):
    """pg_dump's plain output for the database of conn."""
    dbname = conn.execute("SELECT current_database()").fetchone()[0]
    cmd = [os.path.join(PGBIN, "pg_dump"), "-h", conn.info.host, "-p", str(conn.info.port),
           "-U", "postgres", "-d", dbname]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", PG_OS_USER, "--", *cmd]
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                          timeout=120).stdout


def test_secrets_not_in_pg_dump(db, db_dsn):
    db.execute("SELECT notify_ext.create_subscription_auth('BASIC_AUTH', 'dumpuser', 'Dump-S3cret-xyz')")
    wh = create_webhook(db, "http://127.0.0.1:9/hook")
    secret = db.execute("SELECT notify_ext.webhook_secret(%s)", (wh,)).fetchone()[0]
    out = pg_dump(db)
    assert b"dumpuser" in out              # the config is kept ...
    assert b"Dump-S3cret-xyz" not in out   # ... its secret is not readable
    assert secret.encode() not in out
    assert secret[6:].encode() not in out
    key_hex = base64.b64decode(secret[6:]).hex().encode()
    assert key_hex not in out


DENY_LOOPBACK = {"notify_ext.webhook_denied_networks": "127.0.0.0/8, ::1/128"}
DENIED = (r"address (127\.0\.0\.1|::1) of host localhost is denied: "
          r"it is in (127\.0\.0\.0/8|::1/128) \(notify_ext\.webhook_denied_networks\)")


def test_denied_address_refused_when_connecting(db, servers, admin_dsn):
    """A host name passes creation; the addresses it resolves to are checked
    when the worker connects.  With loopback denied, localhost gets nothing,
    not even over a connection kept open from before, and the delivery log
    names the address.  Allowed again, the retry goes through."""
    hook = servers()
    wh = create_webhook(db, f"http://localhost:{hook.port}/hook")
    publish(db)
    hook.wait_for(1)
    alter_system(admin_dsn, DENY_LOOPBACK)
    try:
        seq = publish(db)
        row = wait_until(lambda: [r for r in deliveries(db, wh) if r[0] == seq], what="a refused attempt")[0]
        assert row[3] is None and re.fullmatch(DENIED, row[4]), row[4]
        assert row[5] is not None                       # retried on the schedule
        assert len(hook.requests) == 1
        info = webhook_info(db, wh)
        assert re.fullmatch(DENIED, info["last_error"])
    finally:
        alter_system(admin_dsn, {name: None for name in DENY_LOOPBACK})
    (_, second) = hook.wait_for(2)
    assert second.json["seq"] == seq


def test_denied_token_url_refused_when_connecting(db, servers, admin_dsn):
    """The token request of an OAuth2 auth config gets the same check."""
    tokens = servers(TokenServer)
    hook = servers()
    auth = db.execute(
        "SELECT notify_ext.create_subscription_auth('OAUTH_2_CLIENT_CREDENTIALS', 'client-1', 's3cret',"
        " 'events:write', %s)", (f"http://localhost:{tokens.port}/oauth/token",)).fetchone()[0]
    wh = create_webhook(db, hook.url(), auth_config=auth)
    alter_system(admin_dsn, DENY_LOOPBACK)
    try:
        publish(db)
        row = wait_until(lambda: deliveries(db, wh), what="a failed attempt")[0]
        prefix = f"token request to http://localhost:{tokens.port}/oauth/token failed: "
        assert row[4].startswith(prefix) and re.fullmatch(DENIED, row[4][len(prefix):]), row[4]
        assert tokens.requests == [] and hook.requests == []
    finally:
        alter_system(admin_dsn, {name: None for name in DENY_LOOPBACK})


def test_update_from_0_1_0_takes_credentials_out_of_urls(admin_dsn, servers):
    """0.1.0 accepted http://user:password@host/ and curl sent the pair as
    Basic authentication.  The update moves it into a sealed BASIC_AUTH auth
    config (which keeps working) when the webhook has none, drops it from the
    URL otherwise and from token URLs, and no password is left in the
    tables, list_webhooks(), the notifications or pg_dump."""
    hook = servers()
    name = f"{DB_PREFIX}_webhook_update"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        with psycopg.connect(dsn_for(name), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION notify_ext VERSION '0.1.0'")
            moved = create_webhook(conn, f"http://u:Url-S3cret@127.0.0.1:{hook.port}/x")
            none_auth = conn.execute("SELECT notify_ext.create_subscription_auth('NO_AUTH')").fetchone()[0]
            stripped = create_webhook(conn, "http://v:Url-Pw2@127.0.0.1:9/y", auth_config=none_auth)
            oauth = conn.execute(
                "SELECT notify_ext.create_subscription_auth('OAUTH_2_CLIENT_CREDENTIALS', 'c', 'client-secret',"
                " 'read', 'http://c:Token-Pw3@127.0.0.1:9/token')").fetchone()[0]
            conn.execute("SELECT notify_ext._webhook_disable(%s, 'for the test')", (stripped,))
            assert conn.execute("SELECT count(*) FROM notify_ext.notifications"
                                " WHERE message LIKE '%%Url-Pw2%%'").fetchone()[0] == 1

            conn.execute("ALTER EXTENSION notify_ext UPDATE")

            rows = dict(conn.execute("SELECT id, url FROM notify_ext.webhooks").fetchall())
            assert rows == {moved: f"http://127.0.0.1:{hook.port}/x", stripped: "http://127.0.0.1:9/y"}
            listed = json.dumps([w for (w,) in conn.execute("SELECT * FROM notify_ext.list_webhooks()")])
            auths = conn.execute(
                "SELECT a.id, a.auth_type, a.key, a.token_url, a.secret_sealed"
                "  FROM notify_ext.subscription_auth a ORDER BY a.created_at").fetchall()
            by_id = {a[0]: a for a in auths}
            new_auth = conn.execute("SELECT auth_config FROM notify_ext.webhooks WHERE id = %s",
                                    (moved,)).fetchone()[0]
            assert by_id[new_auth][1:3] == ("BASIC_AUTH", "u")
            assert b"Url-S3cret" not in by_id[new_auth][4]
            assert conn.execute("SELECT auth_config FROM notify_ext.webhooks WHERE id = %s",
                                (stripped,)).fetchone()[0] == none_auth
            assert by_id[oauth][3] == "http://127.0.0.1:9/token"
            notes = conn.execute("SELECT message, meta::text FROM notify_ext.notifications").fetchall()
            dump = pg_dump(conn)
            for secret in ("Url-S3cret", "Url-Pw2", "Token-Pw3"):
                assert secret not in listed
                assert all(secret not in str(a) for a in auths)
                assert all(secret not in m and secret not in meta for m, meta in notes)
                assert secret.encode() not in dump
            assert "127.0.0.1:9/y" in notes[0][0]

            # The moved credentials are sent as before.
            publish(conn)
            (req,) = hook.wait_for(1, timeout=30)
            assert req.path == "/x"
            assert req.headers["authorization"] == "Basic " + base64.b64encode(b"u:Url-S3cret").decode()
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.parametrize("n_hanging", [10, 4])
def test_hanging_endpoints_leave_a_healthy_one_its_slots(db, servers, capsys, n_hanging):
    """Endpoints that accept connections and never answer hold their slots
    until notify_ext.webhook_timeout; they get their share of
    notify_ext.webhook_concurrency (128), not all of it, and a healthy
    endpoint's deliveries go out at once.  The hanging endpoints get their
    work first, so they hold every slot they may before the healthy one
    has any (with 4 of them, 32 each would be all 128)."""
    hanging = [servers(HangingServer) for _ in range(n_hanging)]
    healthy = servers()
    for h in hanging:
        create_webhook(db, h.url())
    create_webhook(db, healthy.url(), operations=["PING"])
    for _ in range(40):
        publish(db, operation="LOAD")
    wait_until(lambda: sum(h.open_connections() for h in hanging) >= 100, timeout=10,
               what="the hanging endpoints to hold 100 connections")

    latencies = []
    for i in range(20):
        t0 = time.monotonic()
        seq = publish(db, operation="PING")
        req = healthy.wait_for(i + 1, timeout=30)[i]
        assert req.json["seq"] == seq
        latencies.append(req.at - t0)
        time.sleep(0.05)
    held = sum(h.open_connections() for h in hanging)
    ms = sorted(round(x * 1000, 1) for x in latencies)
    median = statistics.median(latencies)
    p90 = ms[int(len(ms) * 0.9) - 1] / 1000
    with capsys.disabled():
        print(f"\n{n_hanging} hanging endpoints holding {held} connections; the healthy endpoint's "
              f"latency from commit to arrival: median {median * 1000:.1f} ms, p90 {p90 * 1000:.1f} ms, "
              f"max {ms[-1]:.1f} ms; all (ms): {ms}")
    assert p90 < 0.1
    # None waited for a hanging delivery to time out (1 s).
    assert max(latencies) < 0.5
