"""Stream consumer benchmarks, each against a baseline in the same run.

1. Drain: one consumer reads N events in batches of 1,000 and acknowledges
   every message with its signed reply, against PgQ reading the same number
   of events with next_batch / get_batch_events / finish_batch.
2. Fan-out: 1,000 consumers on disjoint subtrees; time of one fetch with a
   small log against a large one.
3. Wake-up latency: commit of an in-scope transaction to arrival of the
   LISTEN notification, over 1,000 transactions.
4. Summaries (only when asked for, see NOTIFY_EXT_BENCH_PARTS): what keeping
   the BRIN summaries of the log current is worth to readers and costs
   writers.  pgbench writers make single-row INSERT transactions into a
   tracked table (one event each, in one of ten subtrees):
   a. alone, as fast as they go, for a third of
      NOTIFY_EXT_BENCH_WRITE_SECONDS: their tps;
   b. at NOTIFY_EXT_BENCH_WRITE_RATE tps for NOTIFY_EXT_BENCH_WRITE_SECONDS,
      while a consumer of one subtree fetches at the head every 0.1 s:
      its fetch times (median, p90, max);
   c. then a consumer of everything, left behind since b started, is
      drained at once: its rate.
   Run it against builds that keep summaries differently (see
   ab/compare_builds.sh); b should outlast autovacuum_naptime.

Connection settings come from the PG* environment; a scratch database is
created and dropped.  Sizes: NOTIFY_EXT_BENCH_EVENTS (default 1,000,000),
NOTIFY_EXT_BENCH_SMALL_LOG / NOTIFY_EXT_BENCH_LARGE_LOG (100,000 /
10,000,000), NOTIFY_EXT_BENCH_WRITE_SECONDS (90),
NOTIFY_EXT_BENCH_WRITERS (2), NOTIFY_EXT_BENCH_WRITE_RATE (1000),
NOTIFY_EXT_BENCH_WRITER_SYNC_COMMIT (the
writers' synchronous_commit, on; off makes them CPU-bound and the log grow
faster).  NOTIFY_EXT_BENCH_PARTS (default
"drain fanout wakeup") chooses the parts, e.g. "summaries".
"""

import json
import os
import select
import shutil
import statistics
import subprocess
import tempfile
import threading
import time

import psycopg
from psycopg import sql

EVENTS = int(os.environ.get("NOTIFY_EXT_BENCH_EVENTS", 1_000_000))
SMALL_LOG = int(os.environ.get("NOTIFY_EXT_BENCH_SMALL_LOG", 100_000))
LARGE_LOG = int(os.environ.get("NOTIFY_EXT_BENCH_LARGE_LOG", 10_000_000))
WRITE_SECONDS = int(os.environ.get("NOTIFY_EXT_BENCH_WRITE_SECONDS", 90))
WRITERS = int(os.environ.get("NOTIFY_EXT_BENCH_WRITERS", 2))
WRITER_SYNC = os.environ.get("NOTIFY_EXT_BENCH_WRITER_SYNC_COMMIT", "on")
WRITE_RATE = int(os.environ.get("NOTIFY_EXT_BENCH_WRITE_RATE", 1000))
PARTS = os.environ.get("NOTIFY_EXT_BENCH_PARTS", "drain fanout wakeup").split()
SUBTREES = 1000
DB = "notify_ext_consumer_bench"


def connect(dbname=DB, autocommit=True):
    return psycopg.connect(dbname=dbname, autocommit=autocommit)


def fresh_database():
    with connect("postgres") as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB)))
    with connect() as conn:
        conn.execute("CREATE EXTENSION notify_ext")
        conn.execute("CREATE EXTENSION pgq")


def drop_database():
    with connect("postgres") as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB)))


def fill_tracked(conn, table, count, parents, start=0, chunk=100_000):
    """Inserts count rows spread round-robin over parents, chunk rows per transaction."""
    conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (id bigint PRIMARY KEY, parent text, "
                 "name text, amount int)")
    conn.execute(f"SELECT notify_ext.track('{table}', 'item', parent_column => 'parent')")
    done = 0
    while done < count:
        n = min(chunk, count - done)
        conn.execute(
            f"INSERT INTO {table} SELECT g, (%s::text[])[1 + g %% %s::int], 'name ' || g, g %% 1000 "
            "FROM generate_series(%s::bigint, %s::bigint) g",
            (parents, len(parents), start + done + 1, start + done + n))
        done += n


def drain_notify_ext(conn):
    consumer = conn.execute(
        "SELECT notify_ext.create_stream_consumer(deliver => 'all')").fetchone()[0]
    total = 0
    start = time.perf_counter()
    while True:
        rows = conn.execute(
            "SELECT reply, salt, hmac FROM notify_ext.get_event_message_batch(%s, 1000)",
            (consumer,)).fetchall()
        if not rows:
            break
        replies = json.dumps([{"reply": r, "salt": s, "hmac": h} for r, s, h in rows])
        acked = conn.execute("SELECT notify_ext.acknowledge_message_batch(%s::jsonb)",
                             (replies,)).fetchone()[0]
        assert acked == len(rows)
        total += len(rows)
    return total, time.perf_counter() - start


def drain_pgq(conn, payload):
    conn.execute("SELECT pgq.create_queue('bench')")
    conn.execute("SELECT pgq.register_consumer('bench', 'reader')")
    # One tick per 1,000 events, so that batches hold 1,000 events like the fetches above.
    for first in range(0, EVENTS, 1000):
        with conn.transaction():
            conn.execute("SELECT pgq.insert_event('bench', 'item.create', %s) "
                         "FROM generate_series(1, %s::int)", (payload, min(1000, EVENTS - first)))
        conn.execute("SELECT pgq.force_tick('bench')")
        conn.execute("SELECT pgq.ticker('bench')")
    total = 0
    start = time.perf_counter()
    while True:
        batch = conn.execute("SELECT pgq.next_batch('bench', 'reader')").fetchone()[0]
        if batch is None:
            break
        rows = conn.execute("SELECT ev_id, ev_type, ev_data FROM pgq.get_batch_events(%s)",
                            (batch,)).fetchall()
        conn.execute("SELECT pgq.finish_batch(%s)", (batch,))
        total += len(rows)
    return total, time.perf_counter() - start


def bench_drain():
    with connect() as conn:
        conn.execute("SELECT notify_ext.register_resource('drain_root', 'project')")
        fill_tracked(conn, "drain_items", EVENTS, ["drain_root"])
        conn.execute("VACUUM ANALYZE")
        n_ext, t_ext = drain_notify_ext(conn)
        payload = conn.execute("SELECT payload::text FROM notify_ext.event_log LIMIT 1").fetchone()[0]
        n_pgq, t_pgq = drain_pgq(conn, payload)
    print(f"drain, {EVENTS:,} events, batches of 1,000")
    print(f"  notify_ext fetch + signed ack   {n_ext:>10,} events  {t_ext:8.2f} s  {n_ext / t_ext:>10,.0f} events/s")
    print(f"  PgQ next_batch/get_batch_events {n_pgq:>10,} events  {t_pgq:8.2f} s  {n_pgq / t_pgq:>10,.0f} events/s")
    print(f"  ratio notify_ext / PgQ: {(n_ext / t_ext) / (n_pgq / t_pgq):.2f}x (target >= 0.5x)")


def fetch_times(conn, consumers, batch):
    times = []
    for c in consumers:
        start = time.perf_counter()
        conn.execute("SELECT count(*) FROM notify_ext.get_event_message_batch(%s, %s)",
                     (c, batch)).fetchone()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def fanout_at(conn, log_size, already):
    """Grows the log to log_size, then times fetches of fresh consumers."""
    parents = [f"fan{i}" for i in range(SUBTREES)]
    if log_size > already:
        fill_tracked(conn, "fan_items", log_size - already, parents, start=already, chunk=500_000)
        conn.execute("VACUUM ANALYZE notify_ext.event_log")
    sample = parents[:: SUBTREES // 20]
    # first fetch of consumers reading their subtree from the beginning
    first = [conn.execute("SELECT notify_ext.create_stream_consumer(%s)", (p,)).fetchone()[0]
             for p in sample]
    t_first = fetch_times(conn, first, 25)
    # consumers at the head: one new event in their subtree among 1,000 others
    head = [conn.execute("SELECT notify_ext.create_stream_consumer(%s, deliver => 'new')",
                         (p,)).fetchone()[0] for p in sample]
    fill_tracked(conn, "fan_items", SUBTREES, parents, start=log_size + 1_000_000_000)
    t_head = fetch_times(conn, head, 25)
    for c in first + head:
        conn.execute("SELECT notify_ext.delete_stream_consumer(%s)", (c,))
    return t_first, t_head


def bench_fanout():
    with connect() as conn:
        for i in range(SUBTREES):
            conn.execute("SELECT notify_ext.register_resource(%s, 'project')", (f"fan{i}",))
        before = conn.execute("SELECT count(*) FROM notify_ext.event_log").fetchone()[0]
        small = fanout_at(conn, SMALL_LOG, 0)
        large = fanout_at(conn, LARGE_LOG, SMALL_LOG + SUBTREES)
    print(f"fan-out, {SUBTREES:,} consumers' subtrees, median fetch time (ms)")
    print(f"  {'':32} {SMALL_LOG:>12,} {LARGE_LOG:>12,}  ratio")
    print(f"  first fetch of 25 from 'all'     {small[0]:12.2f} {large[0]:12.2f}  {large[0] / small[0]:.2f}x")
    print(f"  fetch at the head                {small[1]:12.2f} {large[1]:12.2f}  {large[1] / small[1]:.2f}x"
          "  (target <= 2)")
    return before


def bench_wakeup(count=1000):
    with connect() as conn:
        conn.execute("SELECT notify_ext.register_resource('wake_root', 'project')")
        conn.execute("CREATE TABLE wake_items (id bigint PRIMARY KEY, parent text)")
        conn.execute("SELECT notify_ext.track('wake_items', 'item', parent_column => 'parent')")
        consumer = conn.execute(
            "SELECT notify_ext.create_stream_consumer('wake_root', deliver => 'new')").fetchone()[0]
        channel = conn.execute("SELECT notify_ext.get_event_message_stream(%s)",
                               (consumer,)).fetchone()[0]
    listener = connect()
    listener.execute(f'LISTEN "{channel}"')
    arrivals = {}
    done = threading.Event()

    def listen():
        pg = listener.pgconn
        while not done.is_set() or len(arrivals) < count:
            ready, _, _ = select.select([pg.socket], [], [], 0.5)
            now = time.perf_counter()
            if ready:
                pg.consume_input()
            n = pg.notifies()
            while n is not None:
                arrivals[json.loads(n.extra)["seq"]] = now
                n = pg.notifies()
            if done.is_set() and not ready:
                return

    t = threading.Thread(target=listen)
    t.start()
    # Latency is counted from the moment the client sends the (autocommit)
    # INSERT, so it includes the transaction itself: an upper bound.
    commits = []
    with connect() as writer:
        for i in range(count):
            commits.append(time.perf_counter())
            writer.execute("INSERT INTO wake_items VALUES (%s, 'wake_root')", (i,))
            time.sleep(0.002)
        seqs = [r[0] for r in writer.execute(
            "SELECT seq FROM notify_ext.events WHERE stream = 'public.wake_items' ORDER BY seq")]
    done.set()
    t.join(10)
    listener.close()
    lat = sorted((arrivals[s] - c) * 1000 for s, c in zip(seqs, commits) if s in arrivals)
    p50 = lat[len(lat) // 2]
    p99 = lat[int(len(lat) * 0.99) - 1]
    print(f"wake-up latency, INSERT sent -> LISTEN notification received, {len(lat):,} of {count:,} transactions")
    print(f"  p50 {p50:.2f} ms   p99 {p99:.2f} ms   max {lat[-1]:.2f} ms  (target p99 < 10 ms)")


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def drain(conn, consumer):
    total = 0
    start = time.perf_counter()
    while True:
        rows = conn.execute(
            "SELECT reply, salt, hmac FROM notify_ext.get_event_message_batch(%s, 1000)",
            (consumer,)).fetchall()
        if not rows:
            return total, time.perf_counter() - start
        replies = json.dumps([{"reply": r, "salt": s, "hmac": h} for r, s, h in rows])
        conn.execute("SELECT notify_ext.acknowledge_message_batch(%s::jsonb)", (replies,))
        total += len(rows)


def pgbench(script, seconds, rate=0):
    """Runs pgbench's writers; returns (tps, average latency in ms)."""
    args = [shutil.which("pgbench") or "pgbench", "-n", "-c", str(WRITERS), "-j", str(WRITERS),
            "-T", str(seconds), "-f", script]
    if rate:
        args += ["-R", str(rate)]
    return subprocess.Popen(args + [DB], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, PGOPTIONS=f"-c synchronous_commit={WRITER_SYNC}"))


def pgbench_result(proc):
    out = proc.communicate()[0]
    if proc.returncode != 0:
        raise RuntimeError("pgbench failed: " + out)
    tps = float([line for line in out.splitlines() if line.startswith("tps")][0].split()[2])
    latency = float([line for line in out.splitlines() if line.startswith("latency average")][0].split()[3])
    return tps, latency


def bench_summaries():
    with connect() as conn:
        conn.execute("SELECT notify_ext.register_resource('sum' || g, 'project') FROM generate_series(0, 9) g")
        conn.execute("CREATE TABLE sum_items (id bigserial PRIMARY KEY, parent text, note text)")
        conn.execute("SELECT notify_ext.track('sum_items', 'item', parent_column => 'parent')")
        conn.execute("SELECT notify_ext.create_event_partitions(1, 0)")
    work = tempfile.mkdtemp()
    try:
        script = os.path.join(work, "insert.sql")
        with open(script, "w") as f:
            f.write("\\set p random(0, 9)\n"
                    "INSERT INTO sum_items (parent, note) VALUES ('sum' || :p, 'written at the head');\n")
        # 1. the writers alone, as fast as they go
        alone_tps, alone_lat = pgbench_result(pgbench(script, WRITE_SECONDS // 3))
        # 2. the writers at a fixed rate, a consumer of one subtree of ten at
        # the head, and one of everything left behind
        with connect() as conn:
            head = conn.execute("SELECT notify_ext.create_stream_consumer('sum0', deliver => 'new')").fetchone()[0]
            behind = conn.execute("SELECT notify_ext.create_stream_consumer(deliver => 'new')").fetchone()[0]
            writer = pgbench(script, WRITE_SECONDS, WRITE_RATE)
            times = []
            fetched = 0
            while writer.poll() is None:
                start = time.perf_counter()
                rows = conn.execute(
                    "SELECT reply, salt, hmac FROM notify_ext.get_event_message_batch(%s, 1000)",
                    (head,)).fetchall()
                times.append((time.perf_counter() - start) * 1000)
                if rows:
                    replies = json.dumps([{"reply": r, "salt": s, "hmac": h} for r, s, h in rows])
                    conn.execute("SELECT notify_ext.acknowledge_message_batch(%s::jsonb)", (replies,))
                    fetched += len(rows)
                time.sleep(0.1)
            rate_tps, rate_lat = pgbench_result(writer)
            # 3. the consumer left behind catches up at once
            n_behind, t_behind = drain(conn, behind)
            pages = conn.execute(
                "SELECT (sum(pg_relation_size(c.oid)) / current_setting('block_size')::int)::bigint"
                "  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = 'notify_ext.event_log'::regclass").fetchone()[0]
    finally:
        shutil.rmtree(work)
    print(f"summaries, {WRITERS} pgbench writers (synchronous_commit {WRITER_SYNC})")
    print(f"  writers alone, {WRITE_SECONDS // 3} s          {alone_tps:10,.0f} tps  latency {alone_lat:.3f} ms")
    print(f"  writers at {WRITE_RATE} tps, {WRITE_SECONDS} s        {rate_tps:10,.0f} tps  latency {rate_lat:.3f} ms")
    print(f"  head fetch of 1 subtree of 10, every 0.1 s  median {statistics.median(times):.2f} ms"
          f"  p90 {percentile(times, 0.9):.2f}  max {max(times):.2f}  ({len(times)} fetches, {fetched:,} events)")
    print(f"  drain of the consumer behind  {n_behind:,} events in {t_behind:.2f} s"
          f"  {n_behind / t_behind:,.0f} events/s  (log {pages:,} pages)")


def main():
    fresh_database()
    try:
        if "drain" in PARTS:
            bench_drain()
        if "fanout" in PARTS:
            bench_fanout()
        if "wakeup" in PARTS:
            bench_wakeup()
        if "summaries" in PARTS:
            bench_summaries()
    finally:
        drop_database()


if __name__ == "__main__":
    main()
