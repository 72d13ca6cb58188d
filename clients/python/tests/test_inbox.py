"""Inbox against a real server: the application role acting for end users,
live notifications, catching up, marking read, and a server restart."""

import threading
import time

import pytest

from notify_ext_client import Backoff, Inbox, Notification


def notify(db, recipient, message, type_="NOTE"):
    return db.execute(
        "SELECT notify_ext.create_notification(%s, %s, %s)", (recipient, type_, message)
    ).fetchone()[0]


def unread(db, principal):
    with db.transaction():
        db.execute("SELECT set_config('notify_ext.principal', %s, true)", (principal,))
        return db.execute("SELECT notify_ext.unread_count()").fetchone()[0]


class Collector:
    """Iterates an inbox in a thread."""

    def __init__(self, inbox, **kwargs):
        self.inbox = inbox
        self.got = []
        self.arrivals = []
        self.error = None

        def main():
            try:
                for n in inbox.notifications(**kwargs):
                    self.got.append(n)
                    self.arrivals.append(time.monotonic())
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=main, daemon=True)
        self.thread.start()

    def wait_for(self, count, timeout=5):
        deadline = time.monotonic() + timeout
        while len(self.got) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return len(self.got) >= count

    def stop(self):
        self.inbox.stop()
        self.thread.join(5)
        assert not self.thread.is_alive()
        if self.error:
            raise self.error


def test_live_for_one_principal_only(db, app_dsn):
    old = notify(db, "py_alice", "from before")
    with Inbox(app_dsn, principal="py_alice") as inbox:
        col = Collector(inbox)
        # The unread one that was already there comes first.
        assert col.wait_for(1)
        assert col.got[0].id == old and col.got[0].message == "from before"
        sent = time.monotonic()
        mine = notify(db, "py_alice", "<b>hello</b> alice")
        notify(db, "py_bob", "for bob only")
        assert col.wait_for(2)
        assert col.arrivals[1] - sent < 1.0
        time.sleep(0.3)
        col.stop()
    assert [n.id for n in col.got] == [old, mine]
    assert isinstance(col.got[1], Notification)
    assert col.got[1].message == "<b>hello</b> alice" and not col.got[1].read
    # Both were marked read once handled; bob's stays unread.
    assert unread(db, "py_alice") == 0
    assert unread(db, "py_bob") == 1


def test_break_leaves_the_last_one_unread(db, app_dsn):
    first = notify(db, "py_carol", "one")
    second = notify(db, "py_carol", "two")
    with Inbox(app_dsn, principal="py_carol") as inbox:
        for n in inbox:
            assert n.id == first
            break
        assert inbox.unread_count() == 2
        got = [n.id for n in inbox.notifications(idle_timeout=0.3)]
        assert got == [first, second]
        assert inbox.unread_count() == 0
        assert inbox.list()["itemsInTotal"] == 2


def test_calls_and_no_marking(db, app_dsn):
    ids = [notify(db, "py_dave", f"n{i}") for i in range(3)]
    with Inbox(app_dsn, principal="py_dave", mark_read=False) as inbox:
        assert [n.id for n in inbox.notifications(idle_timeout=0.3)] == ids
        assert inbox.unread_count() == 3
        assert inbox.get(ids[0]).message == "n0"
        assert inbox.mark_as_read([ids[0], 999999999]) == [999999999]
        assert inbox.mark_all_as_read() == 2
        assert inbox.unread_count() == 0


def test_reconnects_after_a_restart(db_dsn, app_dsn, restart_server):
    import psycopg

    with Inbox(app_dsn, principal="py_erin", backoff=Backoff(0.05, 0.5)) as inbox:
        col = Collector(inbox)
        with psycopg.connect(db_dsn, autocommit=True) as db:
            first = notify(db, "py_erin", "before")
        assert col.wait_for(1)
        restart_server()
        # Created while the inbox is still reconnecting, or after: either
        # way it arrives (live, or by catching up).
        with psycopg.connect(db_dsn, autocommit=True) as db:
            second = notify(db, "py_erin", "after")
        assert col.wait_for(2, 15)
        with psycopg.connect(db_dsn, autocommit=True) as db:
            third = notify(db, "py_erin", "later")
        assert col.wait_for(3, 5)
        col.stop()
    assert [n.id for n in col.got] == [first, second, third]
    assert inbox.reconnects >= 1


def test_polling_without_listen(db, app_dsn):
    with Inbox(app_dsn, principal="py_frank", listen=False, poll_interval=0.2) as inbox:
        col = Collector(inbox)
        time.sleep(0.2)
        nid = notify(db, "py_frank", "polled")
        assert col.wait_for(1)
        col.stop()
    assert col.got[0].id == nid
    with pytest.raises(ValueError):
        Inbox(app_dsn, listen=False, catch_up=False)
