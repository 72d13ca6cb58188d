"""Connections, LISTEN without losing notifications, and telling a lost
connection from an error the caller has to see."""

from __future__ import annotations

import logging
import os
import select
from collections import deque
from typing import Any, Deque, List, Optional

import psycopg
from psycopg import sql

log = logging.getLogger("notify_ext_client")

# SQLSTATEs after which a reconnection can succeed: connection exceptions
# (class 08) and the server shutting down, crashing or starting up.
_RETRYABLE_SQLSTATES = ("57P01", "57P02", "57P03")


def is_connection_lost(exc: BaseException, *conns: Optional[psycopg.Connection]) -> bool:
    """True when exc means that the server went away (or is not accepting
    connections yet), so that reconnecting is the remedy."""
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = getattr(exc, "sqlstate", None)
    if state and (state.startswith("08") or state in _RETRYABLE_SQLSTATES):
        return True
    if any(c is not None and (c.closed or c.broken) for c in conns):
        return True
    # A failed connection attempt carries no SQLSTATE.
    return state is None


def connect(conninfo: str, principal: Optional[str], connect_kwargs: dict[str, Any]) -> psycopg.Connection:
    """An autocommit connection acting for principal (when given)."""
    conn = psycopg.connect(conninfo, autocommit=True, **connect_kwargs)
    try:
        if principal is not None:
            conn.execute("SELECT set_config('notify_ext.principal', %s, false)", (principal,))
    except BaseException:
        conn.close()
        raise
    return conn


def close_quietly(conn: Optional[psycopg.Connection]) -> None:
    if conn is None:
        return
    try:
        conn.close()
    except Exception:  # a broken connection may fail to say goodbye
        pass


class Waker:
    """A pipe that interrupts a wait: :meth:`wake` may be called from another
    thread or a signal handler while :meth:`sleep` or a
    :meth:`Listener.wait` runs, or before (then the next one returns at
    once)."""

    def __init__(self) -> None:
        self.fd, self._w = os.pipe()
        os.set_blocking(self.fd, False)
        os.set_blocking(self._w, False)

    def wake(self) -> None:
        try:
            os.write(self._w, b"x")
        except OSError:  # full (a wake-up is pending anyway) or closed
            pass

    def clear(self) -> None:
        try:
            while os.read(self.fd, 512):
                pass
        except OSError:
            pass

    def sleep(self, seconds: float) -> bool:
        """Sleeps up to seconds; True when woken early."""
        ready, _, _ = select.select([self.fd], [], [], max(seconds, 0))
        return bool(ready)

    def close(self) -> None:
        for fd in (self.fd, self._w):
            try:
                os.close(fd)
            except OSError:
                pass


class Listener:
    """A connection that only LISTENs.

    psycopg 3.1 hands a notification that arrives while a query runs to the
    connection's notify handlers and nowhere else, and its ``notifies()``
    generator cannot time out.  So this connection runs nothing but LISTEN,
    keeps what its handler receives, and otherwise waits on the socket
    itself, with a timeout and a :class:`Waker`.
    """

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self._queue: Deque[psycopg.Notify] = deque()
        conn.add_notify_handler(self._queue.append)

    def listen(self, channel: str) -> None:
        self.conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))

    def _collect(self) -> None:
        pg = self.conn.pgconn
        pg.consume_input()
        n = pg.notifies()
        while n is not None:
            self._queue.append(
                psycopg.Notify(n.relname.decode(), n.extra.decode("utf-8", "replace"), n.be_pid)
            )
            n = pg.notifies()

    def wait(self, timeout: float, waker: Optional[Waker] = None) -> List[psycopg.Notify]:
        """The notifications received so far, or, if there are none, those
        that arrive within timeout seconds: an empty list when none do, or
        when waker is woken.  Raises psycopg.OperationalError when the
        connection is lost."""
        if self.conn.closed:
            raise psycopg.OperationalError("the LISTEN connection is closed")
        if not self._queue and timeout > 0:
            fds = [self.conn.pgconn.socket]
            if waker is not None:
                fds.append(waker.fd)
            select.select(fds, [], [], timeout)
        self._collect()
        got = list(self._queue)
        self._queue.clear()
        return got

    def poll(self) -> List[psycopg.Notify]:
        """The notifications received so far, without waiting."""
        return self.wait(0)

    def close(self) -> None:
        close_quietly(self.conn)
