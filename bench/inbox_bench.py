#!/usr/bin/python3
"""Inbox benchmark (bench/inbox_bench.sh runs it).

1. list_notifications() first page and unread_count() for one user with
   100,000 notifications in a table of 10,000,000: median and p95 ms over
   many calls, and the plans of the queries inside them.
2. create_notifications_bulk() of 10,000 items against a plain multi-row
   INSERT of the same rows into a table of the same shape (same columns,
   defaults and indexes, no triggers), interleaved, same run.

Connection: libpq environment (PGHOST, PGPORT, PGUSER, PGDATABASE); the
user must be a superuser.  NOTIFY_EXT_BENCH_ROWS / _TARGET_ROWS scale it.

NOTIFY_EXT_BENCH_BULK_VARIANTS compares variants of the bulk call in the
same run: a JSON object {"name": "SQL run before each call of it", ...}
(e.g. SET commands that a build under evaluation reads).  The calls
(every variant and the plain INSERT) take turns, their order rotating
from round to round; each variant after the first is also given as its
per-round ratio to the first.  When the server runs on this machine, the
backend's own CPU time per call (/proc/<pid>/schedstat) is printed too:
on a machine that other work shares it varies less than the wall-clock
time, which also counts waiting for a CPU.
"""
import json
import os
import statistics
import sys
import time

import psycopg
from psycopg import sql

TOTAL = int(os.environ.get("NOTIFY_EXT_BENCH_ROWS", "10000000"))
TARGET = int(os.environ.get("NOTIFY_EXT_BENCH_TARGET_ROWS", "100000"))
BULK = int(os.environ.get("NOTIFY_EXT_BENCH_BULK", "10000"))
CALLS = int(os.environ.get("NOTIFY_EXT_BENCH_CALLS", "200"))
ROUNDS = int(os.environ.get("NOTIFY_EXT_BENCH_ROUNDS", "7"))
VARIANTS = json.loads(os.environ.get("NOTIFY_EXT_BENCH_BULK_VARIANTS", "null")
                      or "null") or {"create_notifications_bulk()": ""}
USER = "bench_target"


def ms(seconds):
    return round(seconds * 1000, 3)


def timed(conn, query, params=None, n=CALLS):
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        conn.execute(query, params).fetchall()
        samples.append(time.perf_counter() - t0)
    samples.sort()
    return ms(statistics.median(samples)), ms(samples[int(len(samples) * 0.95) - 1])


def backend_cpu(conn):
    """The backend's CPU time so far in seconds, or None when it cannot be read."""
    try:
        with open(f"/proc/{conn.info.backend_pid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


def load(conn):
    have = conn.execute("SELECT count(*) FROM notify_ext.notifications").fetchone()[0]
    if have == TOTAL:
        print(f"reusing {have} rows")
        return
    print(f"loading {TOTAL} notifications ({TARGET} for {USER}) ...", flush=True)
    t0 = time.perf_counter()
    conn.execute("TRUNCATE notify_ext.notifications")
    # Loading is not what is measured: skip the triggers (NOTIFY of ten
    # million rows) and build the counts in one go afterwards.
    conn.execute("SET session_replication_role = replica")
    every = TOTAL // TARGET
    conn.execute(
        """INSERT INTO notify_ext.notifications (recipient, type, message, meta, ts, read)
           SELECT CASE WHEN g %% %(every)s = 0 THEN %(user)s ELSE 'User#' || (g %% 99991) END,
                  'TYPE_' || (g %% 7), 'Notification number ' || g || ' about something',
                  jsonb_build_object('n', g), now() - g * interval '1 second', g %% 3 = 0
             FROM generate_series(1, %(total)s) g""",
        {"every": every, "user": USER, "total": TOTAL})
    conn.execute("SET session_replication_role = origin")
    conn.execute("DELETE FROM notify_ext.inbox_counts")
    conn.execute("""INSERT INTO notify_ext.inbox_counts (recipient, type, total, unread)
                    SELECT recipient, type, count(*), count(*) FILTER (WHERE NOT read)
                      FROM notify_ext.notifications GROUP BY recipient, type""")
    print(f"loaded in {time.perf_counter() - t0:.1f} s", flush=True)


def main():
    conn = psycopg.connect(autocommit=True)
    conn.execute("CREATE EXTENSION IF NOT EXISTS notify_ext")
    load(conn)
    conn.execute("VACUUM ANALYZE notify_ext.notifications")
    conn.execute("VACUUM ANALYZE notify_ext.inbox_counts")
    n_user = conn.execute("SELECT count(*) FROM notify_ext.notifications WHERE recipient = %s",
                          (USER,)).fetchone()[0]
    n_all = conn.execute("SELECT count(*) FROM notify_ext.notifications").fetchone()[0]
    print(f"\n== reads: {USER} has {n_user} of {n_all} notifications ==")
    conn.execute("SELECT set_config('notify_ext.principal', %s, false)", (USER,))
    first = conn.execute("SELECT notify_ext.list_notifications()").fetchone()[0]
    assert first["itemsInTotal"] == n_user and len(first["items"]) == 50, first["itemsInTotal"]
    med, p95 = timed(conn, "SELECT notify_ext.list_notifications()")
    print(f"list_notifications() first page (50 items): median {med} ms, p95 {p95} ms")
    med, p95 = timed(conn, "SELECT notify_ext.unread_count()")
    print(f"unread_count():                            median {med} ms, p95 {p95} ms")
    med, p95 = timed(conn, "SELECT notify_ext.list_notifications(type => 'TYPE_3')")
    print(f"list_notifications(type => ...) first page: median {med} ms, p95 {p95} ms")
    conn.execute("RESET notify_ext.principal")
    for title, q in [
        ("page query inside list_notifications()",
         """SELECT jsonb_agg(x.item ORDER BY x.ts DESC, x.id DESC) FROM (
              SELECT n.id, n.ts, notify_ext._inbox_item(n.id, n.type, n.message, n.meta, n.ts, n.read) AS item
                FROM notify_ext.notifications n WHERE n.recipient = 'bench_target'
               ORDER BY n.ts DESC, n.id DESC LIMIT 50 OFFSET 0) x"""),
        ("itemsInTotal inside list_notifications()",
         "SELECT COALESCE(sum(c.total), 0) FROM notify_ext.inbox_counts c WHERE c.recipient = 'bench_target'"),
        ("unread_count()",
         "SELECT COALESCE(sum(c.unread), 0) FROM notify_ext.inbox_counts c WHERE c.recipient = 'bench_target'"),
    ]:
        print(f"\n-- plan: {title}")
        for (line,) in conn.execute("EXPLAIN (ANALYZE, BUFFERS, TIMING OFF, SUMMARY ON) " + q):
            print("   " + line)

    print(f"\n== writes: {BULK} notifications in one call ==")
    conn.execute("DROP TABLE IF EXISTS public.inbox_bench_plain")
    conn.execute("""CREATE TABLE public.inbox_bench_plain
                    (LIKE notify_ext.notifications INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES)""")
    rows = [(f"User#{i % 1000}", "BULK", f"Bulk notification {i} about something", json.dumps({"n": i}))
            for i in range(BULK)]
    items = json.dumps([{"user": u, "notification": {"type": t, "message": m, "meta": json.loads(meta)}}
                        for u, t, m, meta in rows])
    insert = sql.SQL("INSERT INTO public.inbox_bench_plain (recipient, type, message, meta) VALUES {}").format(
        sql.SQL(", ").join(sql.SQL("({}, {}, {}, {}::jsonb)").format(*map(sql.Literal, r)) for r in rows)
    ).as_string(conn)
    bulk = "SELECT notify_ext.create_notifications_bulk(" + sql.Literal(items).as_string(conn) + "::jsonb)"
    plain = "plain multi-row INSERT"
    kinds = list(VARIANTS) + [plain]
    times = {k: [] for k in kinds}
    cpu = {k: [] for k in kinds}
    for r in range(ROUNDS):
        for kind in kinds[r % len(kinds):] + kinds[:r % len(kinds)]:
            if kind != plain and VARIANTS[kind]:
                conn.execute(VARIANTS[kind])
            c0 = backend_cpu(conn)
            t0 = time.perf_counter()
            if kind == plain:
                conn.execute(insert)
            else:
                ids = conn.execute(bulk).fetchone()[0]
            times[kind].append(time.perf_counter() - t0)
            c1 = backend_cpu(conn)
            if c0 is not None and c1 is not None:
                cpu[kind].append(c1 - c0)
            if kind != plain:
                assert len(ids) == BULK
    first = kinds[0]
    width = max(len(k) for k in kinds) + 1
    for title, samples in (("wall-clock", times), ("backend CPU", cpu)):
        if not samples[plain]:
            continue
        print(f"-- {title} time per call, {ROUNDS} rounds")
        mp = statistics.median(samples[plain])
        for kind in kinds:
            t = samples[kind]
            m = statistics.median(t)
            line = f"{kind + ':':<{width}} median {ms(m)} ms"
            if title == "wall-clock":
                line += f"  ({BULK / m:,.0f} rows/s)"
            line += f"  range {ms(min(t))}-{ms(max(t))} ms"
            if kind != plain:
                line += f"  bulk / plain {m / mp:.2f}x"
            if kind not in (first, plain):
                paired = sorted(a / b for a, b in zip(t, samples[first]))
                line += (f"  / {first} per round: median {statistics.median(paired):.2f}x"
                         f" range {paired[0]:.2f}-{paired[-1]:.2f}x")
            print(line)
            print(f"{'':<{width}} runs {[ms(x) for x in t]}")
    print("target: bulk / plain <= 1.5x")
    # Leave the big table as it was.
    conn.execute("DELETE FROM notify_ext.notifications WHERE type = 'BULK'")
    conn.execute("DROP TABLE public.inbox_bench_plain")
    conn.close()


if __name__ == "__main__":
    sys.exit(main())
