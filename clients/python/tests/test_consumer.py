"""Consumer against a real server: draining, wake-ups, the long-poll
fallback, a failing handler, stopping, and a server restart mid-drain."""

import threading
import time

import psycopg
import pytest

from notify_ext_client import Backoff, Consumer, Message


def new_consumer(db, resource, ack_wait="30 seconds"):
    db.execute("SELECT notify_ext.register_resource(%s, 'project')", (resource,))
    return db.execute(
        "SELECT notify_ext.create_stream_consumer(%s, deliver => 'new', ack_wait => %s)",
        (resource, ack_wait),
    ).fetchone()[0]


def publish(db, resource, n, start=0):
    """n events about resource, one transaction; returns nothing (the seqs
    are read back from notify_ext.events)."""
    with db.transaction():
        for i in range(start, start + n):
            db.execute("SELECT notify_ext.publish('jobs', 'JOB_DONE', jsonb_build_object('i', %s), %s)",
                       (i, resource))


def seqs_of(db, resource):
    return [r[0] for r in db.execute(
        "SELECT seq FROM notify_ext.events WHERE resource_id = %s ORDER BY seq", (resource,))]


def info(db, consumer):
    return db.execute("SELECT notify_ext.consumer_info(%s)", (consumer,)).fetchone()[0]


class Runner:
    """Runs consumer.run() in a thread, recording every message."""

    def __init__(self, consumer, handler=None):
        self.consumer = consumer
        self.got = []
        self.arrivals = []
        self.error = None
        self._handler = handler

        def handle(batch):
            now = time.monotonic()
            self.got.extend(batch)
            self.arrivals.extend(now for _ in batch)
            if self._handler:
                self._handler(batch)

        def main():
            try:
                consumer.run(handle)
            except BaseException as exc:  # reported by stop()
                self.error = exc

        self.thread = threading.Thread(target=main, daemon=True)
        self.thread.start()

    def wait_for(self, count, timeout):
        deadline = time.monotonic() + timeout
        while len({m.seq for m in self.got}) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return len({m.seq for m in self.got}) >= count

    def stop(self, timeout=5):
        self.consumer.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "run() did not return after stop()"
        if self.error:
            raise self.error


def test_drain_hands_out_batches_in_order_and_acknowledges(db, db_dsn):
    consumer = new_consumer(db, "drain")
    publish(db, "drain", 250)
    batches = []
    with Consumer(db_dsn, consumer, batch_size=100) as c:
        c.drain(batches.append)
    assert [len(b) for b in batches] == [100, 100, 50]
    got = [m.seq for b in batches for m in b]
    assert got == seqs_of(db, "drain")
    first = batches[0][0]
    assert isinstance(first, Message)
    assert (first.stream, first.operation, first.payload, first.resource_id) == \
        ("jobs", "JOB_DONE", {"i": 0}, "drain")
    assert first.delivery_count == 1
    state = info(db, consumer)
    assert state["num_ack_pending"] == 0 and state["num_pending"] == 0


def test_a_wake_up_brings_new_events_at_once(db, db_dsn):
    consumer = new_consumer(db, "wake")
    # A poll interval far longer than the test: only a wake-up can bring it.
    with Consumer(db_dsn, consumer, poll_interval=60) as c:
        runner = Runner(c)
        time.sleep(0.3)  # the consumer is idle, asleep on its channel
        for round_ in range(3):
            sent = time.monotonic()
            publish(db, "wake", 1, start=round_)
            assert runner.wait_for(round_ + 1, 5), "no delivery"
            assert runner.arrivals[-1] - sent < 1.0, "the wake-up did not wake the consumer"
        runner.stop()
    assert [m.seq for m in runner.got] == seqs_of(db, "wake")


def test_long_poll_without_listen(db, db_dsn):
    consumer = new_consumer(db, "longpoll")
    with Consumer(db_dsn, consumer, listen=False, poll_interval=30) as c:
        runner = Runner(c)
        time.sleep(0.3)
        sent = time.monotonic()
        publish(db, "longpoll", 3)
        assert runner.wait_for(3, 5)
        assert runner.arrivals[-1] - sent < 2.0
        # stop() ends a long poll that is waiting on the server.
        time.sleep(0.2)
        stopped = time.monotonic()
        runner.stop()
        assert time.monotonic() - stopped < 2.0
    assert info(db, consumer)["num_ack_pending"] == 0


def test_a_failing_handler_leaves_its_batch_for_redelivery(db, db_dsn):
    consumer = new_consumer(db, "failing", ack_wait="1 second")
    publish(db, "failing", 5)

    def fail(batch):
        raise RuntimeError("handler failed")

    with Consumer(db_dsn, consumer, batch_size=10, poll_interval=0.2) as c:
        with pytest.raises(RuntimeError, match="handler failed"):
            c.run(fail)
        assert info(db, consumer)["num_ack_pending"] == 5
        # After ack_wait the same messages come again, counted.
        time.sleep(1.1)
        again = []
        c.drain(again.extend)
    assert [m.seq for m in again] == seqs_of(db, "failing")
    assert {m.delivery_count for m in again} == {2}
    assert info(db, consumer)["num_ack_pending"] == 0


def test_stop_before_run_and_close_twice(db, db_dsn):
    consumer = new_consumer(db, "stopping")
    c = Consumer(db_dsn, consumer, poll_interval=60)
    c.stop()
    started = time.monotonic()
    c.run(lambda batch: None)  # returns at once: stop() came first
    assert time.monotonic() - started < 1.0
    c.close()
    c.close()
    with pytest.raises(RuntimeError, match="closed"):
        c.run(lambda batch: None)


def test_errors_are_clear(db, db_dsn):
    with pytest.raises(ValueError, match="batch_size"):
        Consumer(db_dsn, "00000000-0000-0000-0000-000000000000", batch_size=0)
    # An unknown consumer: the server's error, not a reconnection loop.
    with Consumer(db_dsn, "00000000-0000-0000-0000-000000000000") as c:
        with pytest.raises(psycopg.errors.UndefinedObject):
            c.drain(lambda batch: None)
    # A server that cannot be reached on the first connection.
    with Consumer("host=/nonexistent port=1 connect_timeout=2",
                  "00000000-0000-0000-0000-000000000000") as c:
        with pytest.raises(psycopg.OperationalError):
            c.drain(lambda batch: None)


def test_restart_in_the_middle_of_a_drain(db_dsn, restart_server):
    """The server stops (as in a crash) while the consumer is handling
    batches and starts again: the consumer reconnects and every event
    comes through, none skipped; only the batch in flight may come twice."""
    with psycopg.connect(db_dsn, autocommit=True) as db:
        consumer = new_consumer(db, "restart", ack_wait="2 seconds")
        publish(db, "restart", 300)

    handled = threading.Event()

    def slow(batch):
        handled.set()
        time.sleep(0.05)

    backoff = Backoff(initial=0.05, maximum=0.5)
    with Consumer(db_dsn, consumer, batch_size=20, poll_interval=0.5, backoff=backoff) as c:
        runner = Runner(c, slow)
        assert handled.wait(5)
        assert runner.wait_for(40, 10)
        restart_server()
        assert len({m.seq for m in runner.got}) < 300, "drained before the restart"
        with psycopg.connect(db_dsn, autocommit=True) as db:
            publish(db, "restart", 50, start=300)
            expected = seqs_of(db, "restart")
        assert len(expected) == 350
        assert runner.wait_for(350, 30), "events were lost"
        # Anything delivered twice is acknowledged by now too.
        deadline = time.monotonic() + 10
        with psycopg.connect(db_dsn, autocommit=True) as db:
            while info(db, consumer)["num_ack_pending"] and time.monotonic() < deadline:
                time.sleep(0.1)
            state = info(db, consumer)
        runner.stop()
    assert c.reconnects >= 1
    seen = [m.seq for m in runner.got]
    assert sorted(set(seen)) == expected, "an event was skipped"
    # Within what was delivered once, seq order holds.
    assert seen == sorted(seen) or len(seen) > len(set(seen))
    assert len(seen) - len(set(seen)) <= 20, "more than one batch came twice"
    assert state["num_ack_pending"] == 0 and state["num_pending"] == 0
