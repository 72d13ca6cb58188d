"""Relays to NATS JetStream: backlog throughput, commit-to-PubAck latency,
and what a running relay costs the writers.  See bench/README.md.

A private nats-server (Debian's) with JetStream and file storage runs on
127.0.0.1 on a free port, its store in a temporary directory; the JetStream
client is test/e2e/nats_tool.c (the NATS C client), compiled here.

1. Backlog: BENCH_RELAY_EVENTS events (default 1,000,000) are recorded while
   the relay is paused (INSERT ... SELECT into a tracked table, 100,000 rows
   per transaction); the relay is resumed and timed until its position
   reaches the committed horizon.  Baseline, in the same run: nats_tool
   publishing as many messages of the same size to a stream of the same
   kind, pipelined (4096 in flight), each with its own Nats-Msg-Id, waiting
   for every PubAck: what this nats-server takes from a plain C client.
   The stream must then hold exactly one message per event.
2. Latency: BENCH_RELAY_WRITERS writers (default 8) commit single-row
   INSERTs at a steady BENCH_RELAY_RATE per second in all (default 1000)
   for BENCH_RELAY_SECONDS (default 20), each noting when its COMMIT
   returned; a JetStream push consumer (nats_tool latency) notes when each
   message arrives.  Latency = arrival - commit returned: commit to PubAck
   plus the push to the consumer.  Also given from the event's occurred_at
   (the start of its transaction, so the commit's own fsync included).
3. Writers: pgbench -c 1, single-row INSERTs into the tracked table for
   BENCH_RELAY_WRITER_SECONDS (default 20), with the relay running against
   with the relay paused (so that no worker runs), alternating,
   BENCH_RELAY_ROUNDS times each (default 2).

Prints the figures, the ratios and the targets (>= 30,000 events/s, p99 <
20 ms, >= 0.9x); fails on errors only (a lost or repeated message).
"""

import base64
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parents[1]
EVENTS = int(os.environ.get("BENCH_RELAY_EVENTS", "1000000"))
RATE = int(os.environ.get("BENCH_RELAY_RATE", "1000"))
SECONDS = int(os.environ.get("BENCH_RELAY_SECONDS", "20"))
WRITER_SECONDS = int(os.environ.get("BENCH_RELAY_WRITER_SECONDS", "20"))
ROUNDS = int(os.environ.get("BENCH_RELAY_ROUNDS", "2"))
WRITERS = int(os.environ.get("BENCH_RELAY_WRITERS", "8"))
BENCH_DB = os.environ.get("BENCH_DB", "notify_ext_relay_bench")
MAINT_DB = os.environ.get("PGDATABASE", "postgres")
if MAINT_DB == BENCH_DB:
    MAINT_DB = "postgres"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dsn(db):
    return f"dbname={db}"


class Nats:
    def __init__(self, workdir):
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        store = workdir / "store"
        store.mkdir()
        conf = workdir / "nats.conf"
        conf.write_text(f'listen: "127.0.0.1:{self.port}"\njetstream {{ store_dir: "{store}" }}\n')
        self.log = open(workdir / "nats.log", "wb")
        self.proc = subprocess.Popen([shutil.which("nats-server") or "/usr/bin/nats-server", "-c", str(conf)],
                                     stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL)
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        self.tool_bin = workdir / "nats_tool"
        subprocess.run(["gcc", "-O2", "-o", str(self.tool_bin), str(REPO / "test/e2e/nats_tool.c"), "-lnats"],
                       check=True)

    def tool(self, *args, **kw):
        r = subprocess.run([str(self.tool_bin), "-s", self.url, *map(str, args)],
                           capture_output=True, text=True, **kw)
        if r.returncode != 0:
            sys.exit(f"nats_tool {args[0]} failed: {r.stderr.strip()}")
        return r.stdout

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def wait_position(db, relay, target, timeout=1800):
    deadline = time.monotonic() + timeout
    while True:
        pos, state, err = db.execute("SELECT position, state, last_error FROM notify_ext.relays WHERE id = %s",
                                     (relay,)).fetchone()
        if pos >= target:
            return time.monotonic()
        if time.monotonic() > deadline:
            sys.exit(f"the relay is stuck at {pos} of {target}: {state} {err}")
        time.sleep(0.02)


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main():
    # An interrupted run still stops its nats-server and drops its database.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    with psycopg.connect(dsn(MAINT_DB), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{BENCH_DB}"')
    work = Path(tempfile.mkdtemp(prefix="notify_ext_relay_bench_"))
    nats = Nats(work)
    failed = False
    try:
        db = psycopg.connect(dsn(BENCH_DB), autocommit=True)
        db.execute("CREATE EXTENSION notify_ext")
        db.execute("CREATE TABLE items (id bigint PRIMARY KEY, parent text, name text, amount int)")
        db.execute("CREATE SEQUENCE items_id")
        db.execute("SELECT notify_ext.register_resource('bench-root', 'project')")
        db.execute("SELECT notify_ext.track('items', 'item', parent_column => 'parent')")
        relay = db.execute(
            "SELECT notify_ext.create_relay('bench', ARRAY[%s], 'BENCH', ensure_stream => true)",
            (nats.url,)).fetchone()[0]

        # 1. Backlog
        db.execute("SELECT notify_ext.pause_relay(%s)", (relay,))
        print(f"recording {EVENTS} events with the relay paused ...", flush=True)
        done = 0
        while done < EVENTS:
            n = min(100000, EVENTS - done)
            db.execute("INSERT INTO items SELECT nextval('items_id'), 'bench-root', 'item ' || g, g "
                       "FROM generate_series(1, %s) g", (n,))
            done += n
        horizon = db.execute("SELECT notify_ext.committed_seq()").fetchone()[0]
        sample = db.execute("SELECT message::text FROM notify_ext.events ORDER BY seq DESC LIMIT 1").fetchone()[0]
        db.execute("CHECKPOINT")
        t0 = time.monotonic()
        db.execute("SELECT notify_ext.resume_relay(%s)", (relay,))
        t1 = wait_position(db, relay, horizon)
        relay_rate = EVENTS / (t1 - t0)
        print(f"relay: {EVENTS} events in {t1 - t0:.1f} s, {relay_rate:,.0f} events/s", flush=True)
        info = json.loads(nats.tool("info", "BENCH"))
        if info["messages"] != EVENTS:
            print(f"ERROR: the stream holds {info['messages']} messages, not {EVENTS}")
            failed = True
        nats.tool("addstream", "RAW", "raw.>")
        raw = json.loads(nats.tool("pubbench", "raw.item.update.bench-root.1", EVENTS, sample))
        raw_rate = EVENTS / raw["seconds"]
        print(f"nats_tool: {EVENTS} messages in {raw['seconds']:.1f} s, {raw_rate:,.0f} msgs/s", flush=True)
        if raw["failed"]:
            print(f"ERROR: {raw['failed']} raw publishes failed")
            failed = True

        # 2. Latency at a steady rate
        # The consumer writes to a file: a pipe left unread would fill up and
        # hold it back.
        lat_out = work / "latency.out"
        with open(lat_out, "w") as f:
            lat = subprocess.Popen([str(nats.tool_bin), "-s", nats.url, "latency", "BENCH", str(SECONDS + 3)],
                                   stdout=f, text=True)
        while not lat_out.read_text().startswith('{"ready": true}'):
            time.sleep(0.05)
        committed = {}
        counts = []

        def write(k):
            conn = psycopg.connect(dsn(BENCH_DB), autocommit=True)
            rate = RATE / WRITERS
            n = 0
            begin = time.monotonic() + k / RATE
            while True:
                due = begin + n / rate
                now = time.monotonic()
                if now - begin >= SECONDS:
                    break
                if due > now:
                    time.sleep(due - now)
                row_id = conn.execute("INSERT INTO items VALUES (nextval('items_id'), 'bench-root', 'lat', 1) "
                                      "RETURNING id").fetchone()[0]
                committed[row_id] = time.time_ns() // 1000
                n += 1
            counts.append(n)
            conn.close()

        threads = [threading.Thread(target=write, args=(k,)) for k in range(WRITERS)]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        n = sum(counts)
        achieved = n / (time.monotonic() - start)
        lat.wait()
        latencies = []
        from_start = []
        for line in lat_out.read_text().splitlines()[1:]:
            m = json.loads(line)
            body = json.loads(base64.b64decode(m["data"]))
            latencies.append((m["recv_us"] - committed[body["payload"]["id"]]) / 1000.0)
            occurred = body["occurred_at"]
            # "2026-11-23T10:00:00.123456Z"
            ts = time.strptime(occurred[:19], "%Y-%m-%dT%H:%M:%S")
            occ_us = (int(time.mktime(ts) - time.timezone) * 1000000) + int(occurred[20:26])
            from_start.append((m["recv_us"] - occ_us) / 1000.0)
        if len(latencies) != n:
            print(f"ERROR: the consumer got {len(latencies)} messages, not {n}")
            failed = True

        # 3. Writers with and without a running relay
        script = work / "insert.sql"
        script.write_text("INSERT INTO items VALUES (nextval('items_id'), 'bench-root', 'w', 1);\n")
        tps = {"running": [], "paused": []}
        for r in range(ROUNDS):
            order = ["paused", "running"] if r % 2 == 0 else ["running", "paused"]
            for mode in order:
                db.execute(f"SELECT notify_ext.{'resume' if mode == 'running' else 'pause'}_relay(%s)", (relay,))
                wait_position(db, relay, db.execute("SELECT notify_ext.committed_seq()").fetchone()[0]) \
                    if mode == "running" else time.sleep(1)
                db.execute("VACUUM items")
                out = subprocess.run(["pgbench", "-n", "-c", "1", "-j", "1", "-T", str(WRITER_SECONDS),
                                      "-f", str(script), "-d", BENCH_DB],
                                     check=True, capture_output=True, text=True).stdout
                t = float([l for l in out.splitlines() if l.startswith("tps")][0].split()[2])
                tps[mode].append(t)
        db.execute("SELECT notify_ext.resume_relay(%s)", (relay,))
        final = db.execute("SELECT notify_ext.committed_seq()").fetchone()[0]
        wait_position(db, relay, final)
        total = db.execute("SELECT count(*) FROM notify_ext.event_log").fetchone()[0]
        info = json.loads(nats.tool("info", "BENCH"))
        if info["messages"] != total:
            print(f"ERROR: the stream holds {info['messages']} messages, the event log {total}")
            failed = True

        print()
        print("| measure | notify_ext relay | baseline | ratio | target |")
        print("| --- | --- | --- | --- | --- |")
        print(f"| backlog of {EVENTS:,} events to JetStream (file storage) | {relay_rate:,.0f} events/s "
              f"| {raw_rate:,.0f} msgs/s (nats_tool, pipelined) | {relay_rate / raw_rate:.2f}x | >= 30,000 events/s |")
        print(f"| commit to PubAck at {achieved:,.0f} events/s ({WRITERS} writers), {len(latencies)} events | "
              f"p50 {statistics.median(latencies):.1f} ms, p99 {pct(latencies, 99):.1f} ms, "
              f"max {max(latencies):.1f} ms | | | p99 < 20 ms |")
        print(f"| the same from the start of each transaction (its fsync included) | "
              f"p50 {statistics.median(from_start):.1f} ms, p99 {pct(from_start, 99):.1f} ms | | | |")
        run = statistics.median(tps["running"])
        paused = statistics.median(tps["paused"])
        print(f"| single-row INSERTs, 1 client, {WRITER_SECONDS} s x {ROUNDS} | {run:,.0f} tps with the relay "
              f"running ({', '.join(f'{x:,.0f}' for x in tps['running'])}) | {paused:,.0f} tps without "
              f"({', '.join(f'{x:,.0f}' for x in tps['paused'])}) | {run / paused:.2f}x | >= 0.9x |")
        db.close()
    finally:
        nats.stop()
        shutil.rmtree(work, ignore_errors=True)
        with psycopg.connect(dsn(MAINT_DB), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
