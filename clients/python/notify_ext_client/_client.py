"""What Consumer and Inbox share: a working connection, a LISTEN
connection, reconnection with backoff, stop() and close()."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, TypeVar

import psycopg

from ._backoff import Backoff
from ._connection import Listener, Waker, close_quietly, connect, is_connection_lost, log

T = TypeVar("T")


class _Client:
    """Holds the two connections and reconnects them.

    Subclasses say which channel to LISTEN on (:meth:`_channel`) and what to
    do on every new connection before anything else (:meth:`_on_connect`).
    """

    _what = "client"

    def __init__(
        self,
        conninfo: str,
        *,
        principal: Optional[str],
        listen: bool,
        backoff: Optional[Backoff],
        max_reconnect_time: Optional[float],
        connect_kwargs: Optional[Mapping[str, Any]],
    ) -> None:
        self.conninfo = conninfo
        self.principal = principal
        self.listen = listen
        self.backoff = backoff or Backoff()
        self.max_reconnect_time = max_reconnect_time
        self.connect_kwargs: Dict[str, Any] = dict(connect_kwargs or {})
        #: How many times the connections were lost and made again.
        self.reconnects = 0

        self._conn: Optional[psycopg.Connection] = None
        self._listener: Optional[Listener] = None
        self._waker = Waker()
        self._stop = threading.Event()
        self._closed = False
        self._ever_connected = False

    # ------------------------------------------------------------ lifecycle

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def stop(self) -> None:
        """Makes the loop that is running (or the next one) return at its
        next safe point.  Safe to call from another thread or a signal
        handler."""
        self._stop.set()
        self._waker.wake()
        conn = self._conn
        if conn is not None and not self.listen:
            try:
                conn.cancel()  # ends a long poll in progress
            except Exception:
                pass

    def close(self) -> None:
        """Closes both connections.  The object cannot be used afterwards."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._disconnect()
        self._waker.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @contextlib.contextmanager
    def _loop(self) -> Iterator[None]:
        """Around each public loop: refuses a closed client, and consumes a
        stop() once the loop is over (so that a stop() that came before the
        loop started still ends it)."""
        if self._closed:
            raise RuntimeError(f"the {self._what} is closed")
        try:
            yield
        finally:
            if not self._closed:
                self._stop.clear()
                self._waker.clear()

    # ------------------------------------------------------------ connections

    def _channel(self, conn: psycopg.Connection) -> Optional[str]:
        raise NotImplementedError

    def _on_connect(self) -> None:
        """Runs after every (re)connection, before the step that needed it."""

    def _work(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._connect()
        assert self._conn is not None
        return self._conn

    def _connect(self) -> None:
        self._disconnect()
        conn = connect(self.conninfo, self.principal, self.connect_kwargs)
        self._conn = conn
        if self.listen:
            channel = self._channel(conn)
            if channel is not None:
                listener = Listener(connect(self.conninfo, None, self.connect_kwargs))
                self._listener = listener
                # LISTEN before anything is read: whatever commits later
                # is announced.
                listener.listen(channel)
        if self._ever_connected:
            self.reconnects += 1
            log.info("%s reconnected", self._describe())
        self._ever_connected = True
        self.backoff.reset()
        self._on_connect()

    def _disconnect(self) -> None:
        conn, listener = self._conn, self._listener
        self._conn = self._listener = None
        close_quietly(conn)
        if listener is not None:
            listener.close()

    def _describe(self) -> str:
        return self._what

    def _gave_up(self) -> None:
        """Called when stop() ends a reconnection."""

    def _with_reconnect(self, step: Callable[[], T]) -> Optional[T]:
        """Runs step, reconnecting and running it again while the server is
        unreachable.  Returns None when stopped while reconnecting."""
        lost_since: Optional[float] = None
        while True:
            try:
                if self._conn is None:
                    self._connect()
                return step()
            except psycopg.errors.QueryCanceled:
                if self._stop.is_set():  # stop() ended a long poll
                    return None
                raise
            except psycopg.OperationalError as exc:
                listener = self._listener.conn if self._listener else None
                # A first connection that fails is a configuration problem
                # more often than not: say so at once.
                if not self._ever_connected or not is_connection_lost(exc, self._conn, listener):
                    raise
                self._disconnect()
                now = time.monotonic()
                if lost_since is None:
                    lost_since = now
                    log.warning("%s lost its connection (%s); reconnecting",
                                self._describe(), str(exc).strip())
                elif self.max_reconnect_time is not None and now - lost_since > self.max_reconnect_time:
                    raise
                if not self._stop.is_set():
                    self._waker.sleep(self.backoff.next_delay())
                if self._stop.is_set():
                    self._gave_up()
                    return None
