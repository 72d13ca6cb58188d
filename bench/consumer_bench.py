"""Stream consumer benchmarks, each against a baseline in the same run.

1. Drain: a consumer of (a) a subtree holding every event and (b) one
   holding a tenth of them reads its events in batches of 1,000 and
   acknowledges every message with its signed reply, against PgQ reading
   as many events with next_batch / get_batch_events / finish_batch, one
   tick per 1,000 events; rounds interleaved, their order alternating.
2. Catch-up: draining from the start of a long log (as far behind as the
   log is long) against draining just below its head, at a tenth of the
   log's size and at its full size.
3. Fan-out: a fetch at the head with one consumer in the database against
   the same with a consumer on each of 1,000 subtrees.
4. Wake-up latency: commit of an in-scope transaction to arrival of the
   LISTEN notification, over 1,000 transactions.
5. Summaries (only when asked for, see NOTIFY_EXT_BENCH_PARTS): what keeping
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
created and dropped.  Knobs: NOTIFY_EXT_BENCH_EVENTS (drain, default
200,000), NOTIFY_EXT_BENCH_ROUNDS (5), NOTIFY_EXT_BENCH_CATCHUP_LOG
(10,000,000), NOTIFY_EXT_BENCH_CATCHUP_DRAIN (50,000),
NOTIFY_EXT_BENCH_FANOUT_LOG (100,000), NOTIFY_EXT_BENCH_FANOUT_ROUNDS (30),
NOTIFY_EXT_BENCH_WRITE_SECONDS (90), NOTIFY_EXT_BENCH_WRITERS (2),
NOTIFY_EXT_BENCH_WRITE_RATE (1000), NOTIFY_EXT_BENCH_WRITER_SYNC_COMMIT (the
writers' synchronous_commit, on; off makes them CPU-bound and the log grow
faster), NOTIFY_EXT_BENCH_PARTS (which parts, default "drain catchup fanout
wakeup"; "summaries" runs part 5).
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
import psycopg.types.string
from psycopg import sql

EVENTS = int(os.environ.get("NOTIFY_EXT_BENCH_EVENTS", 200_000))
ROUNDS = int(os.environ.get("NOTIFY_EXT_BENCH_ROUNDS", 5))
CATCHUP_LOG = int(os.environ.get("NOTIFY_EXT_BENCH_CATCHUP_LOG", 10_000_000))
CATCHUP_DRAIN = int(os.environ.get("NOTIFY_EXT_BENCH_CATCHUP_DRAIN", 50_000))
FANOUT_LOG = int(os.environ.get("NOTIFY_EXT_BENCH_FANOUT_LOG", 100_000))
FANOUT_ROUNDS = int(os.environ.get("NOTIFY_EXT_BENCH_FANOUT_ROUNDS", 30))
WRITE_SECONDS = int(os.environ.get("NOTIFY_EXT_BENCH_WRITE_SECONDS", 90))
WRITERS = int(os.environ.get("NOTIFY_EXT_BENCH_WRITERS", 2))
WRITER_SYNC = os.environ.get("NOTIFY_EXT_BENCH_WRITER_SYNC_COMMIT", "on")
WRITE_RATE = int(os.environ.get("NOTIFY_EXT_BENCH_WRITE_RATE", 1000))
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


def text_jsonb(conn):
    """jsonb arrives as text, as PgQ's ev_data does: neither client parses it."""
    conn.adapters.register_loader("jsonb", psycopg.types.string.TextLoader)


def drain_notify_ext(conn, resource):
    """A new consumer of resource's subtree drains everything retained, in batches of
    1,000, fetching each message and acknowledging each with its signed reply."""
    consumer = conn.execute(
        "SELECT notify_ext.create_stream_consumer(%s, deliver => 'all')", (resource,)).fetchone()[0]
    total = 0
    start = time.perf_counter()
    while True:
        rows = conn.execute(
            "SELECT seq, message, reply, salt, hmac FROM notify_ext.get_event_message_batch(%s, 1000)",
            (consumer,)).fetchall()
        if not rows:
            break
        replies = json.dumps([{"reply": r, "salt": s, "hmac": h} for _, _, r, s, h in rows])
        acked = conn.execute("SELECT notify_ext.acknowledge_message_batch(%s::jsonb)",
                             (replies,)).fetchone()[0]
        assert acked == len(rows)
        total += len(rows)
    elapsed = time.perf_counter() - start
    conn.execute("SELECT notify_ext.delete_stream_consumer(%s)", (consumer,))
    return total, elapsed


def fill_pgq(conn, queue, count, readers, payload, subtrees=1):
    """A PgQ queue of count events with a tick every 1,000, and the readers
    registered before.  Each event names its subtree in ev_extra1, spread
    round-robin over drain_sub0..drain_sub<subtrees - 1> as fill_tracked()
    spreads the rows."""
    conn.execute("SELECT pgq.create_queue(%s)", (queue,))
    for r in readers:
        conn.execute("SELECT pgq.register_consumer(%s, %s)", (queue, r))
    for first in range(0, count, 1000):
        with conn.transaction():
            conn.execute("SELECT pgq.insert_event(%s, 'item.create', %s, 'drain_sub' || (g %% %s), "
                         "NULL, NULL, NULL) FROM generate_series(%s::bigint, %s::bigint) g",
                         (queue, payload, subtrees, first + 1, min(first + 1000, count)))
        conn.execute("SELECT pgq.force_tick(%s)", (queue,))
        conn.execute("SELECT pgq.ticker(%s)", (queue,))


def drain_pgq(conn, queue, reader, keep=None):
    """Reads every batch of the queue; with keep, only the events whose
    ev_extra1 is keep count (the reader filters the rest out itself)."""
    total = 0
    start = time.perf_counter()
    while True:
        batch = conn.execute("SELECT pgq.next_batch(%s, %s)", (queue, reader)).fetchone()[0]
        if batch is None:
            break
        rows = conn.execute("SELECT ev_id, ev_type, ev_data, ev_extra1 FROM pgq.get_batch_events(%s)",
                            (batch,)).fetchall()
        conn.execute("SELECT pgq.finish_batch(%s)", (batch,))
        total += len(rows) if keep is None else sum(1 for r in rows if r[3] == keep)
    return total, time.perf_counter() - start


def spread(values):
    return f"median {statistics.median(values):.2f}x, range {min(values):.2f}-{max(values):.2f}x"


def bench_drain():
    """(a) a consumer of a resource whose subtree holds every event, (b) one whose
    subtree holds a tenth of them; each against PgQ reading as many events, and
    (b) also against PgQ reading every event while its reader keeps the tenth;
    in the same run, rounds interleaved and their order alternated."""
    tenth = EVENTS // 10
    with connect() as conn:
        text_jsonb(conn)
        conn.execute("SELECT notify_ext.register_resource('drain_root', 'project')")
        subs = [f"drain_sub{i}" for i in range(10)]
        for sub in subs:
            conn.execute("SELECT notify_ext.register_resource(%s, 'project', 'drain_root')", (sub,))
        fill_tracked(conn, "drain_items", EVENTS, subs)
        payload = conn.execute("SELECT payload::text FROM notify_ext.event_log LIMIT 1").fetchone()[0]
        fill_pgq(conn, "bench_all", EVENTS, [f"all{r}" for r in range(ROUNDS)]
                 + [f"filter{r}" for r in range(ROUNDS)], payload, subtrees=len(subs))
        fill_pgq(conn, "bench_tenth", tenth, [f"tenth{r}" for r in range(ROUNDS)], payload)
        conn.execute("VACUUM ANALYZE")
        # who: (a) against PgQ reading as many events; (b) against PgQ reading as
        # many events (a queue of the subtree's events only) and against PgQ
        # reading every event and keeping the subtree's (its readers filter).
        runs = {"a": ("drain_root", EVENTS, {"pgq": ("bench_all", "all", None)}),
                "b": ("drain_sub0", tenth, {"pgq": ("bench_tenth", "tenth", None),
                                            "pgq_filter": ("bench_all", "filter", "drain_sub0")})}
        rates = {k: {who: [] for who in ["ext", *baselines]} for k, (_, _, baselines) in runs.items()}
        for r in range(ROUNDS):
            for k, (resource, expect, baselines) in runs.items():
                order = ["ext", *baselines]
                if r % 2 == 1:
                    order.reverse()
                for who in order:
                    if who == "ext":
                        n, t = drain_notify_ext(conn, resource)
                    else:
                        queue, reader, keep = baselines[who]
                        n, t = drain_pgq(conn, queue, f"{reader}{r}", keep)
                    assert n == expect, (k, who, n, expect)
                    rates[k][who].append(n / t)
    print(f"drain, batches of 1,000, every message fetched and acknowledged with its signed reply; "
          f"PgQ ticking every 1,000 events; {ROUNDS} rounds, interleaved, order alternating")
    labels = {"pgq": "PgQ, same count", "pgq_filter": "PgQ, all, reader filters"}
    for k, label in (("a", f"(a) subtree with every event: {EVENTS:,} of {EVENTS:,}"),
                     ("b", f"(b) subtree with a tenth: {tenth:,} of {EVENTS:,}")):
        ext = rates[k]["ext"]
        print(f"  {label}")
        print(f"    {'notify_ext events/s':42}" + " ".join(f"{x:>9,.0f}" for x in ext))
        for who, base in rates[k].items():
            if who == "ext":
                continue
            ratios = [e / q for e, q in zip(ext, base)]
            print(f"    {labels[who] + ' events/s':42}" + " ".join(f"{x:>9,.0f}" for x in base))
            print(f"    {'ratio per round':42}" + " ".join(f"{x:>9.2f}" for x in ratios))
            print(f"    notify_ext / {labels[who]}: {spread(ratios)} (target >= 0.5x)")


def drain_some(conn, consumer, count):
    """Drains count messages in batches of 1,000 with signed acks; events/s."""
    total = 0
    start = time.perf_counter()
    while total < count:
        rows = conn.execute(
            "SELECT message, reply, salt, hmac FROM notify_ext.get_event_message_batch(%s, %s)",
            (consumer, min(1000, count - total))).fetchall()
        assert rows, f"only {total:,} of {count:,} messages"
        replies = json.dumps([{"reply": r, "salt": s, "hmac": h} for _, r, s, h in rows])
        conn.execute("SELECT notify_ext.acknowledge_message_batch(%s::jsonb)", (replies,))
        total += len(rows)
    return total / (time.perf_counter() - start)


def catchup_at(conn, rounds):
    """Rates of draining CATCHUP_DRAIN events from the start of the log (as far
    behind as the log is long) and just below its head, rounds alternating."""
    head = conn.execute("SELECT notify_ext.committed_seq()").fetchone()[0]
    first = conn.execute("SELECT min(seq) FROM notify_ext.events WHERE stream = 'public.catchup_items'"
                         ).fetchone()[0]
    behind, at_head = [], []
    for r in range(rounds):
        for where in (("behind", "head") if r % 2 == 0 else ("head", "behind")):
            start = first if where == "behind" else head - CATCHUP_DRAIN + 1
            c = conn.execute("SELECT notify_ext.create_stream_consumer('catchup_root', "
                             "deliver => 'from_sequence', from_sequence => %s)", (start,)).fetchone()[0]
            rate = drain_some(conn, c, CATCHUP_DRAIN)
            conn.execute("SELECT notify_ext.delete_stream_consumer(%s)", (c,))
            (behind if where == "behind" else at_head).append(rate)
    return head, behind, at_head


def bench_catchup():
    """A consumer far behind drains as fast as one at the head: measured on a
    log of CATCHUP_LOG / 10 events and again on one of CATCHUP_LOG."""
    results = []
    with connect() as conn:
        text_jsonb(conn)
        conn.execute("SELECT notify_ext.register_resource('catchup_root', 'project')")
        done = 0
        for size in (CATCHUP_LOG // 10, CATCHUP_LOG):
            # Transactions of 100,000 events, which fit in notify_ext.event_buffer:
            # a larger one is written ahead and renumbered at commit, and the
            # renumbered rows widen the BRIN ranges of the pages they leave.
            fill_tracked(conn, "catchup_items", size - done, ["catchup_root"], start=done)
            done = size
            conn.execute("VACUUM ANALYZE")
            results.append((size, *catchup_at(conn, ROUNDS)))
    print(f"catch-up: a consumer of a subtree drains {CATCHUP_DRAIN:,} events from the start of the log "
          f"against {CATCHUP_DRAIN:,} just below the head; {ROUNDS} rounds each, alternating")
    for size, head, behind, at_head in results:
        ratios = [b / h for b, h in zip(behind, at_head)]
        print(f"  log of {size:,} events (head at seq {head:,}), behind by {size - CATCHUP_DRAIN:,}+")
        print("    behind  events/s " + " ".join(f"{x:>9,.0f}" for x in behind))
        print("    at head events/s " + " ".join(f"{x:>9,.0f}" for x in at_head))
        print(f"    behind / at head: {spread(ratios)} (target >= 0.9x)")


def head_fetch_times(conn, consumer, parents, rounds):
    """Milliseconds of a fetch at the head after one new event in the consumer's
    subtree among len(parents) - 1 in others, committed together."""
    times = []
    for _ in range(rounds):
        n = conn.execute("SELECT count(*) FROM fan_items").fetchone()[0]
        conn.execute("INSERT INTO fan_items SELECT %s + g, (%s::text[])[g], 'x', 0 "
                     "FROM generate_series(1, %s) g", (n, parents, len(parents)))
        start = time.perf_counter()
        rows = conn.execute("SELECT reply, salt, hmac FROM notify_ext.get_event_message_batch(%s, 25)",
                            (consumer,)).fetchall()
        times.append((time.perf_counter() - start) * 1000)
        assert len(rows) == 1, len(rows)
        conn.execute("SELECT notify_ext.acknowledge_message_batch(%s::jsonb)",
                     (json.dumps([{"reply": r, "salt": s, "hmac": h} for r, s, h in rows]),))
    return times


def bench_fanout():
    """A fetch at the head with one consumer in the database, against the same
    with a consumer on each of SUBTREES subtrees; phases alternate."""
    parents = [f"fan{i}" for i in range(SUBTREES)]
    single, many = [], []
    with connect() as conn:
        for p in parents:
            conn.execute("SELECT notify_ext.register_resource(%s, 'project')", (p,))
        fill_tracked(conn, "fan_items", FANOUT_LOG, parents)
        conn.execute("VACUUM ANALYZE")
        mine = conn.execute("SELECT notify_ext.create_stream_consumer('fan0', deliver => 'new')"
                            ).fetchone()[0]
        for phase in range(4):
            others = []
            if phase % 2 == 1:
                others = [conn.execute("SELECT notify_ext.create_stream_consumer(%s, deliver => 'new')",
                                       (p,)).fetchone()[0] for p in parents[1:]]
            t = head_fetch_times(conn, mine, parents, FANOUT_ROUNDS)
            (many if others else single).append(statistics.median(t))
            for c in others:
                conn.execute("SELECT notify_ext.delete_stream_consumer(%s)", (c,))
    print(f"fan-out: fetch at the head (one new event in the subtree among {SUBTREES:,} committed together), "
          f"median ms of {FANOUT_ROUNDS} fetches per phase, phases alternating")
    print("  1 consumer          " + " ".join(f"{x:8.2f}" for x in single))
    print(f"  {SUBTREES:,} consumers     " + " ".join(f"{x:8.2f}" for x in many))
    ratios = [m / s for m, s in zip(many, single)]
    print(f"  {SUBTREES:,} consumers / 1: {spread(ratios)} (target <= 2x)")


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


PARTS = os.environ.get("NOTIFY_EXT_BENCH_PARTS", "drain catchup fanout wakeup").split()


def main():
    fresh_database()
    try:
        for part in PARTS:
            globals()[f"bench_{part}"]()
    finally:
        drop_database()


if __name__ == "__main__":
    main()
