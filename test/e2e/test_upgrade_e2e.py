"""ALTER EXTENSION notify_ext UPDATE from every released version.

Two ways:

- In the test cluster, with the current library: CREATE EXTENSION ...
  VERSION '<old>' then ALTER EXTENSION ... UPDATE gives the same schema as
  a fresh install of the current version.

- As a server is really upgraded: the released version's library is built
  from the repository's history (git archive of the commit it was released
  at) and installed into a private copy of the PostgreSQL installation under
  the run directory; a cluster of its own runs it, and a database is filled
  with the old version (tracked tables with a tree, events, consumers with
  pending and delivered-not-acknowledged messages, an inbox with read and
  unread notifications and preferences, grants, a webhook with an auth
  config delivering to a local sink).  Then the server is stopped, the
  current library is installed into the same copy, the server started again
  and the extension updated.  Nothing may be lost and everything must go on:
  the same rows and answers as before, consumers continue without skipping
  anything, replies handed out before the update still acknowledge, the
  webhook delivers with its old secret and credentials, and the schema is
  that of a fresh install.

The schemas are compared as pg_dump --schema-only --binary-upgrade prints
them (that mode prints the extension's member objects one by one), less
what differs between any two databases (object ids, frozen xids, where
sequences stand).  The
event log's day partitions are data, not schema: CREATE EXTENSION of 0.1.0
made some, the current version makes none; they are dropped before the
comparison.
"""

import base64
import difflib
import json
import os
import re
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from conftest import DSN, PGBIN, PGDATA, PG_OS_USER, REPO_DIR, create_database, dsn_for, DB_PREFIX
from webhook_servers import HookServer, verify_signature

RELEASED = sorted(
    m.group(1)
    for name in os.listdir(REPO_DIR / "sql")
    if (m := re.fullmatch(r"notify_ext--(\d+\.\d+\.\d+)\.sql", name))
)
CURRENT = re.search(
    r"default_version = '([^']+)'", (REPO_DIR / "notify_ext.control").read_text()
).group(1)
OLDER = [v for v in RELEASED if v != CURRENT]

# The commit each released version was released at.
RELEASE_COMMITS = {"0.1.0": "9e24218"}


def schema_of(dsn):
    """The database's schema as comparable text lines."""
    out = subprocess.run(
        [os.path.join(PGBIN, "pg_dump"), "--schema-only", "--binary-upgrade", "-d", dsn],
        check=True, capture_output=True, text=True,
    ).stdout
    with psycopg.connect(dsn) as conn:
        config = conn.execute(
            """SELECT (SELECT array_agg(c.relname ORDER BY c.relname)
                         FROM unnest(e.extconfig) WITH ORDINALITY x(oid, i)
                         JOIN pg_class c ON c.oid = x.oid),
                      (SELECT array_agg(c.relname || ': ' || e.extcondition[x.i] ORDER BY c.relname)
                         FROM unnest(e.extconfig) WITH ORDINALITY x(oid, i)
                         JOIN pg_class c ON c.oid = x.oid)
                 FROM pg_extension e WHERE e.extname = 'notify_ext'"""
        ).fetchone()
    lines = [f"extconfig {config}"]
    for line in out.splitlines():
        if re.match(r"^(--|\\(un)?restrict |SELECT pg_catalog\.binary_upgrade_|SET relfrozenxid)", line):
            continue
        if "binary_upgrade_create_empty_extension" in line:
            continue
        line = re.sub(r"\boid = '?\d+'?", "oid = N", line)
        # Where a sequence stands is data.
        line = re.sub(r"(pg_catalog\.setval\('[^']+', )\d+, (true|false)\)", r"\1N)", line)
        lines.append(line)
    return [l for l in lines if l.strip()]


def drop_day_partitions(conn):
    for (rel,) in conn.execute(
        "SELECT c.oid::regclass::text FROM pg_class c"
        " WHERE c.relnamespace = 'notify_ext'::regnamespace AND c.relname ~ '^event_log_p[0-9]{8}$'"
    ).fetchall():
        conn.execute(f"DROP TABLE {rel}")


def assert_same_schema(want_dsn, got_dsn, what):
    want = schema_of(want_dsn)
    got = schema_of(got_dsn)
    if got != want:
        diff = "\n".join(difflib.unified_diff(want, got, "fresh", what, lineterm="", n=2))
        pytest.fail(f"the schema after the update differs from a fresh install:\n{diff[:20000]}")


@pytest.mark.parametrize("old", OLDER)
def test_update_gives_the_schema_of_a_fresh_install(old, admin_dsn):
    fresh_name = f"{DB_PREFIX}_upgrade_fresh"
    updated_name = f"{DB_PREFIX}_upgrade_from_{old.replace('.', '_')}"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        fresh = create_database(admin, fresh_name)
        admin.execute(f'DROP DATABASE IF EXISTS "{updated_name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{updated_name}"')
    updated = dsn_for(updated_name)
    with psycopg.connect(updated, autocommit=True) as conn:
        conn.execute(f"CREATE EXTENSION notify_ext VERSION '{old}'")
        conn.execute("ALTER EXTENSION notify_ext UPDATE")
        drop_day_partitions(conn)
        assert conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'notify_ext'"
        ).fetchone()[0] == CURRENT
    assert_same_schema(fresh, updated, f"updated from {old}")
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{fresh_name}" WITH (FORCE)')
        admin.execute(f'DROP DATABASE "{updated_name}" WITH (FORCE)')


# ---------------------------------------------------------------------------
# A real upgrade: the old library, a cluster of its own, then the current one


def run(cmd, what, **kwargs):
    """Runs cmd; a failure shows its output."""
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, **kwargs)
    if proc.returncode != 0:
        pytest.fail(f"{what} failed ({proc.returncode}): {' '.join(map(str, cmd))}\n"
                    f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc.stdout


def as_server_user(cmd):
    """cmd run as the OS user that owns the clusters (the server refuses to
    run as root)."""
    return ["runuser", "-u", PG_OS_USER, "--", *map(str, cmd)] if os.geteuid() == 0 else list(map(str, cmd))


def give_to_server_user(*paths):
    if os.geteuid() == 0:
        for p in paths:
            shutil.chown(p, PG_OS_USER, PG_OS_USER)


class Installation:
    """A private copy of the PostgreSQL installation of PGBIN (Debian's
    layout: <root>/usr/lib/postgresql/<major>/bin), whose pg_config and
    server find the copy's own directories."""

    def __init__(self, root):
        src_bin = Path(PGBIN).resolve()
        m = re.fullmatch(r"(.*)/usr/lib/postgresql/(\d+)/bin", str(src_bin))
        if not m:
            pytest.fail(f"NOTIFY_EXT_PGBIN {PGBIN} is not laid out as <root>/usr/lib/postgresql/<major>/bin")
        src_root, major = Path(m.group(1) or "/"), m.group(2)
        self.root = root
        self.bindir = root / f"usr/lib/postgresql/{major}/bin"
        parts = [f"usr/lib/postgresql/{major}", f"usr/share/postgresql/{major}", "usr/include/postgresql"]
        for part in parts:
            (root / part).parent.mkdir(parents=True, exist_ok=True)
            run(["cp", "-a", src_root / part, root / part], "copying the PostgreSQL installation")
        self.pg_config = self.bindir / "pg_config"
        self.pkglibdir = Path(run([self.pg_config, "--pkglibdir"], "pg_config").strip())
        self.sharedir = Path(run([self.pg_config, "--sharedir"], "pg_config").strip())

    def remove_notify_ext(self):
        """Takes every file of notify_ext out of the copy."""
        for p in [*self.pkglibdir.glob("notify_ext.so"), *(self.pkglibdir / "bitcode").glob("notify_ext*"),
                  *(self.sharedir / "extension").glob("notify_ext*")]:
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()

    def make_install(self, source, what, *options):
        run(["make", "-C", source, "-s", f"-j{os.cpu_count() or 2}", f"PG_CONFIG={self.pg_config}",
             *options, "install"], what)


class Cluster:
    """A cluster of its own, on the binaries of an Installation, listening
    on a Unix socket in its directory only."""

    def __init__(self, base, installation, port):
        self.base = base
        self.inst = installation
        self.pgdata = base / "pgdata"
        self.sock = base / "sock"
        self.log = base / "postgresql.log"
        self.port = port

    def pg_ctl(self, *args):
        return run(as_server_user([self.inst.bindir / "pg_ctl", "-D", self.pgdata, *args]), f"pg_ctl {args[-1]}")

    def init(self):
        for d in (self.pgdata, self.sock):
            d.mkdir(mode=0o700)
        self.log.touch()
        give_to_server_user(self.base, self.pgdata, self.sock, self.log)
        run(as_server_user([self.inst.bindir / "initdb", "-D", self.pgdata, "-U", "postgres", "--auth=trust",
                            "--encoding=UTF8", "--locale=C.UTF-8"]), "initdb")
        with open(self.pgdata / "postgresql.conf", "a") as f:
            f.write(f"""
listen_addresses = ''
port = {self.port}
unix_socket_directories = '{self.sock}'
unix_socket_permissions = 0700
shared_preload_libraries = 'notify_ext'
log_min_messages = warning
log_line_prefix = '%m [%p] %q%u@%d '
""")

    def start(self):
        self.pg_ctl("-l", self.log, "-w", "-t", "120", "start")

    def stop(self, mode="fast"):
        if (self.pgdata / "postmaster.pid").exists():
            self.pg_ctl("-m", mode, "-w", "-t", "120", "stop")

    def dsn(self, dbname):
        return f"host={self.sock} port={self.port} user=postgres dbname={dbname}"

    def connect(self, dbname):
        return psycopg.connect(self.dsn(dbname), autocommit=True)


def stop_left_over(base):
    """Stops a server an interrupted run left in base."""
    pid = base / "pgdata" / "postmaster.pid"
    if pid.exists():
        subprocess.run(as_server_user([Path(PGBIN) / "pg_ctl", "-D", base / "pgdata", "-m", "immediate", "-w", "stop"]),
                       capture_output=True)


def release_commit(version):
    """The commit version was released at, checked to be in the repository's
    history."""
    commit = RELEASE_COMMITS.get(version)
    if commit is None:
        pytest.fail(f"released version {version} has no entry in RELEASE_COMMITS of {Path(__file__).name}")
    probe = subprocess.run(["git", "-C", REPO_DIR, "cat-file", "-e", f"{commit}^{{commit}}"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.fail(
            f"notify_ext {version} was released at commit {commit}, which this repository's history does not "
            f"have ({probe.stderr.strip() or 'git failed'}): the update from {version} is tested with the library "
            f"built from that commit. Fetch the full history (e.g. git fetch --unshallow) and run the tests again.")
    return commit


# --- filling the old version, and what it looks like

APP_DDL = [
    "CREATE TABLE collections (id text PRIMARY KEY, project_id text, name text)",
    "CREATE TABLE datasets (id text PRIMARY KEY, collection_id text REFERENCES collections, name text)",
    "SELECT notify_ext.track('collections', 'collection', parent_column => 'project_id')",
    "SELECT notify_ext.track('datasets', 'dataset', parent_column => 'collection_id')",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON collections, datasets TO webapp",
]
HOOK_USER, HOOK_PASSWORD = "hook-user", "hook pässword"


def acting_for(conn, principal):
    conn.execute("SELECT set_config('notify_ext.principal', %s, false)", (principal,))


def fetch(conn, consumer, n=100, principal=None):
    if principal:
        acting_for(conn, principal)
    try:
        return conn.execute(
            "SELECT seq, message, reply, salt, hmac, delivery_count"
            " FROM notify_ext.get_event_message_batch(%s, %s)", (consumer, n)).fetchall()
    finally:
        if principal:
            conn.execute("RESET notify_ext.principal")


def ack(conn, rows):
    replies = [{"reply": r[2], "salt": r[3], "hmac": r[4]} for r in rows]
    return conn.execute("SELECT notify_ext.acknowledge_message_batch(%s::jsonb)",
                        (json.dumps(replies),)).fetchone()[0]


def in_scope(conn, resource):
    """The seqs of the retained events in resource's subtree."""
    return [r[0] for r in conn.execute(
        "SELECT seq FROM notify_ext.events WHERE %s = ANY (resource_path) ORDER BY seq", (resource,)).fetchall()]


def fill(conn, sink):
    """Fills a database of the old version; returns what the checks after
    the update need."""
    c = conn
    c.execute("SELECT notify_ext.register_resource('acme', 'project')")
    c.execute("SELECT notify_ext.register_resource('reports', 'collection', 'acme')")
    for stmt in APP_DDL:
        c.execute(stmt)
    c.execute("INSERT INTO collections VALUES ('c1', 'acme', 'Raw data'), ('c2', 'acme', 'Clean data')")
    for i in range(1, 7):
        c.execute("INSERT INTO datasets VALUES (%s, %s, %s)", (f"d{i}", "c1" if i <= 3 else "c2", f"dataset {i}"))
    c.execute("UPDATE datasets SET name = 'renamed' WHERE id IN ('d1', 'd4')")
    c.execute("DELETE FROM datasets WHERE id = 'd6'")
    c.execute("SELECT notify_ext.publish('jobs', 'JOB_PROCESSED', '{\"job\": 1}', 'd2')")

    c.execute("SELECT notify_ext.grant_permission('alice', 'c1', 'READ')")
    c.execute("SELECT notify_ext.grant_permission('bob', 'acme', 'WRITE')")
    c.execute("SELECT notify_ext.grant_permission('carol', 'c2', 'ADMIN')")

    # Consumers: one caught up in part (acknowledged, then delivered and not
    # acknowledged, then pending), one whose deliveries are due again after
    # the update, and one an end user owns.
    s = {}
    s["c_all"] = c.execute(
        "SELECT notify_ext.create_stream_consumer('acme', deliver => 'all', ack_wait => '1 hour')").fetchone()[0]
    first = fetch(c, s["c_all"], 3)
    assert ack(c, first) == 3
    s["c_all_unacked"] = fetch(c, s["c_all"], 3)
    s["c_all_delivered"] = [r[0] for r in first + s["c_all_unacked"]]
    s["c_redeliver"] = c.execute(
        "SELECT notify_ext.create_stream_consumer('acme', deliver => 'all', ack_wait => '1 second')").fetchone()[0]
    s["c_redeliver_unacked"] = [r[0] for r in fetch(c, s["c_redeliver"], 2)]
    c.execute("SET ROLE webapp")
    acting_for(c, "alice")
    s["c_alice"] = c.execute("SELECT notify_ext.create_stream_consumer('c1', deliver => 'all')").fetchone()[0]
    c.execute("RESET notify_ext.principal")
    alice_first = fetch(c, s["c_alice"], 2, principal="alice")
    assert ack(c, alice_first) == 2
    s["c_alice_delivered"] = [r[0] for r in alice_first]
    c.execute("RESET ROLE")

    # The inbox: read and unread notifications, a type switched off.
    s["jobs"] = [c.execute("SELECT notify_ext.create_notification('alice', 'JOB_DONE', %s, %s::jsonb)",
                           (f"Job {i} finished", json.dumps({"job": i}))).fetchone()[0] for i in range(1, 4)]
    acting_for(c, "alice")
    assert c.execute("SELECT notify_ext.mark_as_read(%s)", ([s["jobs"][0]],)).fetchone()[0] == []
    c.execute("SELECT notify_ext.set_notification_preference('NEWS', false)")
    c.execute("RESET notify_ext.principal")
    bulk = c.execute("SELECT notify_ext.create_notifications_bulk(%s::jsonb)", (json.dumps([
        {"user": "alice", "notification": {"type": "NEWS", "message": "Version 2"}},
        {"user": "bob", "notification": {"type": "NEWS", "message": "Version 2", "meta": {"v": 2}}},
    ]),)).fetchone()[0]
    assert bulk[0] is None and bulk[1] is not None

    # A webhook with a BASIC_AUTH config, delivering to the local sink.
    s["auth"] = c.execute("SELECT notify_ext.create_subscription_auth('BASIC_AUTH', key => %s, secret => %s)",
                          (HOOK_USER, HOOK_PASSWORD)).fetchone()[0]
    s["webhook"] = c.execute("SELECT notify_ext.create_webhook(%s, streams => '{jobs}', auth_config => %s)",
                             (sink.url("/hook"), s["auth"])).fetchone()[0]
    s["secret"] = c.execute("SELECT notify_ext.webhook_secret(%s)", (s["webhook"],)).fetchone()[0]
    c.execute("SELECT notify_ext.publish('jobs', 'JOB_PROCESSED', '{\"job\": 2}')")
    check_delivery(sink, 1, s["secret"], {"job": 2})
    wait_until(lambda: c.execute("SELECT count(*) FROM notify_ext.deliveries WHERE webhook = %s AND status_code = 200",
                                 (s["webhook"],)).fetchone()[0] == 1, "the delivery record")
    return s


def wait_until(fn, what, timeout=30):
    deadline = time.monotonic() + timeout
    while not fn():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def check_delivery(sink, n, secret, payload):
    """The n-th request the sink got is the event with payload, signed with
    secret and sent with the auth config's credentials."""
    req = sink.wait_for(n, timeout=60)[n - 1]
    assert verify_signature(secret, req), "the delivery's signature does not verify with the webhook's secret"
    expected = "Basic " + base64.b64encode(f"{HOOK_USER}:{HOOK_PASSWORD}".encode()).decode()
    assert req.headers.get("authorization") == expected
    assert req.json["payload"] == payload and req.json["operation"] == "JOB_PROCESSED"
    return req


def snapshot(c, s):
    """What must be the same before and after the update."""
    def rows(query, *args):
        return [tuple(r) for r in c.execute(query, args).fetchall()]

    def inbox(principal):
        acting_for(c, principal)
        try:
            return {
                "unread": c.execute("SELECT notify_ext.unread_count()").fetchone()[0],
                "list": c.execute("SELECT notify_ext.list_notifications(items_per_page => 1000)").fetchone()[0],
                "personal": rows("SELECT id, type, message, meta, refs, read"
                                 " FROM notify_ext.get_personal_notifications() ORDER BY id"),
            }
        finally:
            c.execute("RESET notify_ext.principal")

    info_keys = ["num_pending", "num_ack_pending", "ack_floor", "last_delivered", "missed", "owner",
                 "resource_id", "include_subresources", "deliver", "ack_wait", "max_deliver"]
    return {
        "events": rows("SELECT seq, stream, operation, resource_id, resource_variant, resource_path, actor,"
                       " payload::jsonb, changed, message FROM notify_ext.events ORDER BY seq"),
        "resources": rows("SELECT id, variant, parent_id, created_by FROM notify_ext.resources ORDER BY id"),
        "paths": rows("SELECT id, notify_ext.resource_path(id) FROM datasets ORDER BY id"),
        "permissions": rows("SELECT principal, resource_id, level, granted_by FROM notify_ext.permissions ORDER BY 1, 2"),
        "has_permission": rows(
            "SELECT p, r, l, notify_ext.has_permission(p, r, l)"
            " FROM unnest(ARRAY['alice', 'bob', 'carol', 'dave']) p,"
            "      unnest(ARRAY['acme', 'c1', 'c2', 'd1', 'd5', 'reports']) r,"
            "      unnest(ARRAY['READ', 'APPEND', 'WRITE', 'ADMIN']) l ORDER BY 1, 2, 3"),
        "tracked": rows("SELECT relation::text, variant, id_column, parent_column, stream"
                        " FROM notify_ext.tracked_tables ORDER BY 1"),
        "notifications": rows("SELECT id, recipient, type, message, meta, refs, ts, read"
                              " FROM notify_ext.notifications ORDER BY id"),
        "preferences": rows("SELECT * FROM notify_ext.notification_preferences ORDER BY 1, 2"),
        "inbox": {p: inbox(p) for p in ("alice", "bob", "carol")},
        "consumers": {k: {f: c.execute("SELECT notify_ext.consumer_info(%s)", (s[k],)).fetchone()[0].get(f)
                          for f in info_keys}
                      for k in ("c_all", "c_redeliver", "c_alice")},
        "pending": rows("SELECT consumer, count(*) FROM notify_ext.consumer_pending GROUP BY 1 ORDER BY 1"),
        "auth": rows("SELECT id, auth_type, key, scope, token_url FROM notify_ext.list_subscription_auth()"),
        "webhooks": [{k: w[k] for k in ("id", "url", "operations", "streams", "resource_id", "auth_config",
                                        "auth_type", "status", "failures", "pending")}
                     for (w,) in c.execute("SELECT * FROM notify_ext.list_webhooks()").fetchall()],
        "secret": c.execute("SELECT notify_ext.webhook_secret(%s)", (s["webhook"],)).fetchone()[0],
        "deliveries": rows("SELECT webhook, seq, attempt, message_id, status_code FROM notify_ext.deliveries"
                           " ORDER BY seq, attempt"),
    }


@pytest.fixture(scope="module", params=OLDER)
def upgraded(request):
    """A database filled by the old version's library and then updated on
    the current one, in a cluster of its own; yields (cluster, database,
    fill state, snapshot before, snapshot after, sink)."""
    old = request.param
    commit = release_commit(old)
    base = Path(PGDATA).resolve().parent / f"upgrade-{old}"
    stop_left_over(base)
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)

    inst = Installation(base / "pg")
    inst.remove_notify_ext()
    archive = base / "src.tar"
    run(["git", "-C", REPO_DIR, "archive", "--format=tar", "-o", archive, commit], f"git archive {commit}")
    with tarfile.open(archive) as tar:
        tar.extractall(base / "src")
    # Without JIT bitcode, which the old library does not need here.
    inst.make_install(base / "src", f"building notify_ext {old} from {commit}", "with_llvm=no")

    port = int(conninfo_to_dict(DSN).get("port") or 5432) + 1
    cluster = Cluster(base, inst, port)
    cluster.init()
    cluster.start()
    sink = HookServer()
    db = "upgrade_app"
    try:
        with cluster.connect("postgres") as admin:
            admin.execute("CREATE ROLE notify_service NOLOGIN")
            admin.execute("CREATE ROLE webapp LOGIN")
            admin.execute("GRANT notify_service TO webapp")
            admin.execute(f"CREATE DATABASE {db}")
            admin.execute(f"ALTER DATABASE {db} SET notify_ext.app_role = 'notify_service'")
        with cluster.connect(db) as c:
            c.execute(sql.SQL("CREATE EXTENSION notify_ext VERSION {}").format(sql.Literal(old)))
            state = fill(c, sink)
            before = snapshot(c, state)
        cluster.stop()

        inst.make_install(REPO_DIR, "installing the current notify_ext")
        cluster.start()
        with cluster.connect(db) as c:
            c.execute("ALTER EXTENSION notify_ext UPDATE")
            assert c.execute("SELECT extversion FROM pg_extension WHERE extname = 'notify_ext'").fetchone()[0] == CURRENT
            after = snapshot(c, state)
        yield cluster, db, state, before, after, sink
    finally:
        sink.close()
        cluster.stop()
        for part in ("pg", "src", "src.tar", "pgdata"):
            p = base / part
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            elif p.exists():
                p.unlink()


def test_update_loses_nothing(upgraded):
    _, _, _, before, after, _ = upgraded
    diff = [k for k in before if before[k] != after[k]]
    assert not diff, "changed by the update: " + "; ".join(
        f"{k}: before {before[k]!r:.2000} after {after[k]!r:.2000}" for k in diff)


def test_consumers_continue_after_the_update(upgraded):
    cluster, db, s, _, _, _ = upgraded
    with cluster.connect(db) as c:
        # Replies handed out by the old version acknowledge.
        assert ack(c, s["c_all_unacked"]) == len(s["c_all_unacked"])
        assert ack(c, s["c_all_unacked"]) == 0

        # The consumer goes on where it was: exactly the events it had not
        # fetched, then the ones recorded after the update.
        scope = in_scope(c, "acme")
        rest = fetch(c, s["c_all"])
        assert [r[0] for r in rest] == [q for q in scope if q not in s["c_all_delivered"]]
        assert all(r[5] == 1 for r in rest)
        assert ack(c, rest) == len(rest)

        c.execute("INSERT INTO datasets VALUES ('d7', 'c2', 'after the update')")
        c.execute("UPDATE datasets SET name = 'renamed again' WHERE id = 'd1'")
        new = fetch(c, s["c_all"])
        assert [(r[1]["operation"], r[1]["resource"]["path"], r[1].get("changed")) for r in new] == [
            ("dataset.create", ["acme", "c2", "d7"], None),
            ("dataset.update", ["acme", "c1", "d1"], ["name"]),
        ]
        assert new[0][0] > max(scope)
        assert ack(c, new) == 2
        info = c.execute("SELECT notify_ext.consumer_info(%s)", (s["c_all"],)).fetchone()[0]
        assert (info["num_pending"], info["num_ack_pending"], info["missed"]) == (0, 0, 0)

        # Deliveries the old version handed out and nobody acknowledged come
        # again once their ack_wait has passed, first, then the rest.
        time.sleep(1.1)
        again = fetch(c, s["c_redeliver"], 1000)
        n = len(s["c_redeliver_unacked"])
        assert [(r[0], r[5]) for r in again[:n]] == [(q, 2) for q in s["c_redeliver_unacked"]]
        assert [r[0] for r in again[n:]] == [q for q in in_scope(c, "acme") if q not in s["c_redeliver_unacked"]]
        assert ack(c, again) == len(again)

        # An end user's consumer, fetched by the application acting for it.
        c.execute("SET ROLE webapp")
        alice = fetch(c, s["c_alice"], principal="alice")
        assert [r[0] for r in alice] == [q for q in in_scope(c, "c1") if q not in s["c_alice_delivered"]]
        assert ack(c, alice) == len(alice)
        c.execute("RESET ROLE")


def test_inbox_and_permissions_after_the_update(upgraded):
    cluster, db, s, before, _, _ = upgraded
    with cluster.connect(db) as c:
        # The type alice switched off stays off; ids go on.
        assert c.execute("SELECT notify_ext.create_notification('alice', 'NEWS', 'Version 3')").fetchone()[0] is None
        new = c.execute("SELECT notify_ext.create_notification('alice', 'JOB_DONE', 'Job 4 finished')").fetchone()[0]
        assert new > max(r[0] for r in before["notifications"])

        c.execute("SET ROLE webapp")
        acting_for(c, "alice")
        unread = before["inbox"]["alice"]["unread"]
        assert c.execute("SELECT notify_ext.unread_count()").fetchone()[0] == unread + 1
        assert c.execute("SELECT notify_ext.mark_as_read(%s)", ([s["jobs"][1], new],)).fetchone()[0] == []
        assert c.execute("SELECT notify_ext.unread_count()").fetchone()[0] == unread - 1
        assert c.execute("SELECT notify_ext.get_notification(%s)", (s["jobs"][2],)).fetchone()[0]["message"] == "Job 3 finished"
        assert c.execute("SELECT notify_ext.acknowledge_personal_notifications(%s)",
                         ([s["jobs"][0]],)).fetchone()[0] == []
        acting_for(c, "bob")
        with pytest.raises(psycopg.errors.UndefinedObject):
            c.execute("SELECT notify_ext.get_notification(%s)", (s["jobs"][2],))
        c.execute("RESET notify_ext.principal")
        c.execute("RESET ROLE")

        # Grants made by the old version hold; new ones notify as before.
        assert c.execute("SELECT notify_ext.has_permission('bob', 'd2', 'WRITE')").fetchone()[0]
        assert not c.execute("SELECT notify_ext.has_permission('alice', 'd5', 'READ')").fetchone()[0]
        c.execute("SELECT notify_ext.grant_permission('alice', 'c2', 'READ')")
        assert c.execute("SELECT notify_ext.has_permission('alice', 'd5', 'READ')").fetchone()[0]
        assert c.execute("SELECT count(*) FROM notify_ext.notifications WHERE recipient = 'alice'"
                         " AND type = 'PERMISSION_GRANTED'").fetchone()[0] == 2


def test_webhook_delivers_after_the_update(upgraded):
    cluster, db, s, _, _, sink = upgraded
    with cluster.connect(db) as c:
        c.execute("SELECT notify_ext.publish('jobs', 'JOB_PROCESSED', '{\"job\": 3}')")
        req = check_delivery(sink, 2, s["secret"], {"job": 3})
        assert req.path == "/hook"
        wait_until(lambda: c.execute(
            "SELECT count(*) FROM notify_ext.deliveries WHERE webhook = %s AND status_code = 200",
            (s["webhook"],)).fetchone()[0] == 2, "the delivery record")
        (w,) = c.execute("SELECT * FROM notify_ext.list_webhooks()").fetchone()
        assert (w["status"], w["failures"]) == ("active", 0)


def test_updated_database_has_the_schema_of_a_fresh_install(upgraded):
    cluster, db, _, _, _, _ = upgraded
    fresh = "upgrade_fresh"
    with cluster.connect("postgres") as admin:
        admin.execute(f"CREATE DATABASE {fresh}")
    with cluster.connect(fresh) as c:
        c.execute("CREATE EXTENSION notify_ext")
        for stmt in APP_DDL:
            c.execute(stmt)
    with cluster.connect(db) as c:
        drop_day_partitions(c)
    assert_same_schema(cluster.dsn(fresh), cluster.dsn(db), "updated with the released library")
