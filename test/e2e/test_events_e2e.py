"""Event numbering seen from clients: commit order, open transactions, crashes."""

import time

import psycopg
import pytest
from psycopg import sql

from conftest import DB_PREFIX, create_database


def events_of(conn, stream):
    """{resource_id: seq} of the retained events of one stream."""
    rows = conn.execute(
        "SELECT resource_id, seq FROM notify_ext.events WHERE stream = %s ORDER BY seq",
        (stream,),
    ).fetchall()
    return {rid: seq for rid, seq in rows}


def make_tracked_table(db, name, variant):
    db.execute(f"CREATE TABLE public.{name} (id text PRIMARY KEY, note text)")
    db.execute("SELECT notify_ext.track(%s::regclass, %s)", (f"public.{name}", variant))
    return f"public.{name}"


def test_out_of_order_commits_get_commit_ordered_seqs(db, connect):
    stream = make_tracked_table(db, "e2e_order", "order_item")
    a = connect(autocommit=False)
    b = connect(autocommit=False)

    a.execute("INSERT INTO public.e2e_order VALUES ('a1', 'written first, committed last')")
    b.execute("INSERT INTO public.e2e_order VALUES ('b1', 'written last, committed first')")
    b.commit()
    a.commit()

    seqs = events_of(db, stream)
    assert set(seqs) == {"a1", "b1"}
    assert seqs["a1"] > seqs["b1"], seqs


def test_open_transaction_holds_back_nobody(db, connect):
    stream = make_tracked_table(db, "e2e_open", "open_item")
    a = connect(autocommit=False)
    b = connect(autocommit=False)

    a.execute("INSERT INTO public.e2e_open VALUES ('a1', 'stays open')")
    b.execute("INSERT INTO public.e2e_open VALUES ('b1', 'commits')")
    b.commit()

    assert set(events_of(db, stream)) == {"b1"}
    a.rollback()
    assert set(events_of(db, stream)) == {"b1"}


def test_events_survive_a_crash(db, connect, restart_server):
    stream = make_tracked_table(db, "e2e_crash", "crash_item")
    singles = [f"s{i}" for i in range(50)]
    batch = [f"b{i}" for i in range(50)]

    for rid in singles:  # one transaction each
        db.execute("INSERT INTO public.e2e_crash VALUES (%s, 'single')", (rid,))
    with db.transaction():  # one transaction for all
        for rid in batch:
            db.execute("INSERT INTO public.e2e_crash VALUES (%s, 'batch')", (rid,))
    db.execute("SELECT notify_ext.publish('e2e.app', 'JOB_PROCESSED', '{\"job\": 1}')")

    before = events_of(db, stream)
    assert set(before) == set(singles) | set(batch)
    assert len(set(before.values())) == len(before)

    # Not committed when the server goes down: must leave no event.
    open_tx = connect(autocommit=False)
    open_tx.execute("INSERT INTO public.e2e_crash VALUES ('lost', 'never committed')")

    restart_server("immediate")
    with pytest.raises(psycopg.OperationalError):
        open_tx.execute("SELECT 1")

    after_db = connect()
    after = events_of(after_db, stream)
    assert after == before, "events or their seqs changed across the crash"
    all_before = after_db.execute("SELECT max(seq) FROM notify_ext.events").fetchone()[0]
    assert all_before >= max(before.values())

    after_db.execute("INSERT INTO public.e2e_crash VALUES ('new', 'after restart')")
    new_seq = events_of(after_db, stream)["new"]
    assert new_seq > all_before


def test_paths_follow_changes_made_by_other_sessions(db, connect):
    """Each session caches parent paths; changes committed elsewhere must show."""
    db.execute("CREATE TABLE public.e2e_folders (id text PRIMARY KEY, parent text)")
    db.execute("SELECT notify_ext.track('public.e2e_folders', 'folder', parent_column => 'parent')")
    db.execute("CREATE TABLE public.e2e_files (id text PRIMARY KEY, folder text)")
    db.execute("SELECT notify_ext.track('public.e2e_files', 'file', parent_column => 'folder')")
    a = connect()
    b = connect()

    # A parent that does not exist yet is refused, and accepted once another
    # session has inserted it.
    with pytest.raises(psycopg.errors.UndefinedObject):
        a.execute("INSERT INTO public.e2e_files VALUES ('f1', 'later')")
    b.execute("INSERT INTO public.e2e_folders VALUES ('later', NULL)")
    a.execute("INSERT INTO public.e2e_files VALUES ('f1', 'later')")

    # A move by another session changes the path of what is written next.
    b.execute("INSERT INTO public.e2e_folders VALUES ('root2', NULL)")
    a.execute("INSERT INTO public.e2e_files VALUES ('f2', 'later')")
    b.execute("UPDATE public.e2e_folders SET parent = 'root2' WHERE id = 'later'")
    a.execute("INSERT INTO public.e2e_files VALUES ('f3', 'later')")
    paths = dict(db.execute(
        "SELECT resource_id, resource_path FROM notify_ext.events WHERE stream = 'public.e2e_files'"
    ).fetchall())
    assert paths == {"f1": ["later", "f1"], "f2": ["later", "f2"], "f3": ["root2", "later", "f3"]}

    # A parent deleted elsewhere is no longer accepted.
    b.execute("DELETE FROM public.e2e_folders WHERE id = 'root2'")
    b.execute("INSERT INTO public.e2e_folders VALUES ('gone', NULL)")
    a.execute("INSERT INTO public.e2e_files VALUES ('f4', 'gone')")
    b.execute("DELETE FROM public.e2e_folders WHERE id = 'gone'")
    with pytest.raises(psycopg.errors.UndefinedObject):
        a.execute("INSERT INTO public.e2e_files VALUES ('f5', 'gone')")


def lossy_blocks_read(conn, lo, hi):
    """Heap blocks a BRIN scan of the log reads for seq lo..hi."""
    with conn.transaction():
        conn.execute("SET LOCAL enable_seqscan = off")
        plan = conn.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) SELECT count(*) FROM notify_ext.event_log"
            " WHERE seq BETWEEN %s AND %s",
            (lo, hi),
        ).fetchone()[0]

    def walk(node):
        yield node.get("Lossy Heap Blocks", 0) + node.get("Exact Heap Blocks", 0)
        for child in node.get("Plans", []):
            yield from walk(child)

    return sum(walk(plan[0]["Plan"]))


def test_block_ranges_left_behind_get_summarized(db):
    """A bulk insert fills hundreds of BRIN ranges; the summarizer worker
    summarizes every one it leaves, so a narrow read touches a few ranges,
    not the whole log."""
    db.execute("CREATE TABLE public.e2e_bulk (id bigint PRIMARY KEY, note text)")
    db.execute("SELECT notify_ext.track('public.e2e_bulk'::regclass, 'bulk_item')")
    db.execute("INSERT INTO public.e2e_bulk SELECT g, repeat('x', 100) FROM generate_series(1, 60000) g")
    lo, hi = db.execute(
        "SELECT min(seq), max(seq) FROM notify_ext.events WHERE stream = 'public.e2e_bulk'"
    ).fetchone()
    assert hi - lo == 59999
    total_blocks = db.execute(
        "SELECT sum(pg_relation_size(c.oid) / current_setting('block_size')::int)"
        "  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'notify_ext.event_log'::regclass"
    ).fetchone()[0]
    assert total_blocks > 1000, total_blocks

    middle = lo + 30000
    deadline = time.monotonic() + 20
    while True:
        read = lossy_blocks_read(db, middle, middle + 10)
        # the ranges holding the seqs (two when they straddle a boundary),
        # plus the one still being filled
        if read <= 3 * 32 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert read <= 3 * 32, f"{read} of {total_blocks} blocks read"
    assert db.execute(
        "SELECT count(*) FROM notify_ext.events WHERE seq BETWEEN %s AND %s", (middle, middle + 10)
    ).fetchone()[0] == 11


def test_summarizer_recovers_from_a_worker_that_could_not_start(admin_dsn):
    """A worker that cannot connect (its database does not accept connections
    at that moment) never takes up its database's requests; once its slot
    has been given up (10 s), the next writer starts one that does."""
    name = f"{DB_PREFIX}_summarizer_restart"
    ident = sql.Identifier(name)
    worker_query = ("SELECT count(*) FROM pg_stat_activity "
                    "WHERE backend_type = 'notify_ext event log summarizer' AND datname = %s")
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        dsn = create_database(admin, name)
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("CREATE TABLE t (id bigint PRIMARY KEY, note text)")
                conn.execute("SELECT notify_ext.track('t', 'item')")
                admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(ident))
                try:
                    # several block ranges: the worker is asked for, and fails
                    conn.execute("INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(1, 5000) g")
                    time.sleep(1)
                    assert admin.execute(worker_query, (name,)).fetchone()[0] == 0
                finally:
                    admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(ident))
                time.sleep(10.5)
                conn.execute("INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(5001, 10000) g")
                deadline = time.monotonic() + 5
                while admin.execute(worker_query, (name,)).fetchone()[0] == 0:
                    assert time.monotonic() < deadline, "no worker started for the database again"
                    time.sleep(0.05)
        finally:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))


def test_summarizer_does_not_hold_up_drop_database(admin_dsn):
    """The worker leaves its database once idle: a plain DROP DATABASE
    (which waits only a few seconds for other sessions) succeeds."""
    name = f"{DB_PREFIX}_summarizer_drop"
    ident = sql.Identifier(name)
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        with psycopg.connect(create_database(admin, name), autocommit=True) as conn:
            conn.execute("CREATE TABLE t (id bigint PRIMARY KEY)")
            conn.execute("SELECT notify_ext.track('t', 'item')")
            conn.execute("INSERT INTO t SELECT generate_series(1, 20000)")
        workers = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'notify_ext event log summarizer'"
            " AND datname = %s",
            (name,),
        ).fetchone()[0]
        assert workers <= 1
        admin.execute(sql.SQL("DROP DATABASE {}").format(ident))
