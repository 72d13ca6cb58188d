"""A principal's inbox, live."""

from __future__ import annotations

import json
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Deque, Dict, Iterable, Iterator, List, Mapping, Optional

import psycopg

from ._backoff import Backoff
from ._client import _Client

# How many yielded ids are remembered, so that one announced twice (once
# live, once by a catch-up after a reconnection) is yielded once.
_SEEN_MAX = 10000


@dataclass(frozen=True)
class Notification:
    """A personal notification, in the item shape of list_notifications()."""

    id: int
    type: str
    message: str
    meta: Optional[Dict[str, Any]]
    ts: datetime
    read: bool

    @classmethod
    def from_json(cls, item: Mapping[str, Any]) -> "Notification":
        ts = item["ts"]
        if isinstance(ts, str):
            ts = datetime.fromisoformat(ts.replace("Z", "+00:00"))
        return cls(
            id=int(item["id"]),
            type=item["type"],
            message=item["message"],
            meta=item.get("meta"),
            ts=ts,
            read=bool(item.get("read", False)),
        )


class Inbox(_Client):
    """The calling principal's notifications, live.

    Iterating yields each new notification as it is created: the inbox
    LISTENs on the principal's channel (notify_ext.subscription_channel())
    on a dedicated connection, and fetches each announced id with
    notify_ext.get_notification().  With ``catch_up`` (the default) it
    first yields the unread notifications already there, oldest first,
    and does so again after a reconnection, so that nothing created while
    the connection was down is missed.

    With ``mark_read`` (the default) a notification is marked read once
    the loop body that received it has finished, i.e. when the next one is
    asked for (or the loop ends through :meth:`stop` or ``idle_timeout``).
    A loop left by ``break`` or an exception leaves the last one unread, so
    it comes again on the next catch-up::

        with Inbox(dsn) as inbox:
            for n in inbox:
                print(n.type, n.message)

    :param conninfo: a libpq connection string or URI.
    :param principal: when the connecting role is the application role,
        the end user to act for (``SET notify_ext.principal``).
    :param mark_read: mark each yielded notification read.
    :param catch_up: yield unread notifications that are already there.
    :param poll_interval: with ``listen=False``, seconds between looks for
        unread notifications.
    :param listen: False to poll instead of listening.
    :param backoff: the reconnection delays (see :class:`Backoff`).
    :param max_reconnect_time: give up (re-raising the connection error)
        when the server could not be reached again for this many seconds;
        None retries for ever.
    :param connect_kwargs: passed on to ``psycopg.connect()``.
    """

    _what = "inbox"

    def __init__(
        self,
        conninfo: str,
        *,
        principal: Optional[str] = None,
        mark_read: bool = True,
        catch_up: bool = True,
        poll_interval: float = 5.0,
        listen: bool = True,
        backoff: Optional[Backoff] = None,
        max_reconnect_time: Optional[float] = None,
        connect_kwargs: Optional[Mapping[str, Any]] = None,
    ) -> None:
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be positive, not {poll_interval}")
        if not listen and not catch_up:
            raise ValueError("an inbox that does not listen finds notifications by catching up")
        super().__init__(
            conninfo,
            principal=principal,
            listen=listen,
            backoff=backoff,
            max_reconnect_time=max_reconnect_time,
            connect_kwargs=connect_kwargs,
        )
        self.mark_read = mark_read
        self.catch_up = catch_up
        self.poll_interval = poll_interval
        self._pending: Deque[int] = deque()
        self._seen: "OrderedDict[int, None]" = OrderedDict()
        self._needs_catch_up = True

    def _describe(self) -> str:
        return f"inbox of {self.principal}" if self.principal else "inbox"

    # ------------------------------------------------------------ live

    def __iter__(self) -> Iterator[Notification]:
        return self.notifications()

    def notifications(self, *, idle_timeout: Optional[float] = None) -> Iterator[Notification]:
        """Yields notifications as they come (see the class).  Ends after
        :meth:`stop`, or when nothing came for ``idle_timeout`` seconds."""
        with self._loop():
            while not self._stop.is_set():
                deadline = None if idle_timeout is None else time.monotonic() + idle_timeout
                item = self._with_reconnect(lambda: self._next(deadline))
                if item is None:
                    return
                handled = False
                try:
                    yield item
                    handled = True
                finally:
                    if not handled:
                        # The loop was left by break or an exception: the
                        # item stays unread and comes first next time.
                        self._seen.pop(item.id, None)
                        self._pending.appendleft(item.id)
                if self.mark_read:
                    self._mark_yielded(item)

    def _mark_yielded(self, item: Notification) -> None:
        try:
            self._with_reconnect(lambda: self._mark([item.id]))
        except psycopg.Error:
            # It stays unread and comes again on the next catch-up.
            self._seen.pop(item.id, None)
            raise

    # ------------------------------------------------------------ calls

    def get(self, notification_id: int) -> Notification:
        """One of the principal's notifications (get_notification()).
        Raises psycopg.errors.UndefinedObject for an unknown id or someone
        else's."""
        return self._with_reconnect(lambda: self._get(notification_id))  # type: ignore[return-value]

    def list(
        self,
        *,
        type: Optional[str] = None,
        since: Optional[datetime] = None,
        items_per_page: int = 50,
        page: int = 0,
    ) -> Dict[str, Any]:
        """list_notifications(): ``{"itemsInTotal", "itemsPerPage",
        "pageNumber", "items"}``, newest first (items as plain dicts)."""
        return self._with_reconnect(  # type: ignore[return-value]
            lambda: self._work().execute(
                "SELECT notify_ext.list_notifications(%s, %s, %s, %s)",
                (type, since, items_per_page, page),
            ).fetchone()[0]
        )

    def unread_count(self) -> int:
        """unread_count()."""
        return self._with_reconnect(  # type: ignore[return-value]
            lambda: self._work().execute("SELECT notify_ext.unread_count()").fetchone()[0]
        )

    def mark_as_read(self, ids: Iterable[int]) -> List[int]:
        """mark_as_read(): returns the ids that are unknown or not the
        principal's."""
        ids = list(ids)
        return self._with_reconnect(lambda: self._mark(ids))  # type: ignore[return-value]

    def mark_all_as_read(self) -> int:
        """mark_all_as_read(): how many were unread."""
        return self._with_reconnect(  # type: ignore[return-value]
            lambda: self._work().execute("SELECT notify_ext.mark_all_as_read()").fetchone()[0]
        )

    # ------------------------------------------------------------ internals

    def _channel(self, conn: psycopg.Connection) -> Optional[str]:
        return conn.execute("SELECT notify_ext.subscription_channel()").fetchone()[0]

    def _on_connect(self) -> None:
        # Announcements sent while no one listened are lost: look again.
        self._needs_catch_up = True

    def _get(self, notification_id: int) -> Notification:
        item = self._work().execute(
            "SELECT notify_ext.get_notification(%s)", (notification_id,)
        ).fetchone()[0]
        return Notification.from_json(item)

    def _mark(self, ids: List[int]) -> List[int]:
        return list(
            self._work().execute("SELECT notify_ext.mark_as_read(%s::bigint[])", (ids,)).fetchone()[0]
            or []
        )

    def _enqueue(self, ids: Iterable[int]) -> None:
        queued = set(self._pending)
        for i in ids:
            if i not in self._seen and i not in queued:
                self._pending.append(i)
                queued.add(i)

    def _look_for_unread(self) -> None:
        rows = self._work().execute(
            "SELECT id FROM notify_ext.get_personal_notifications() WHERE NOT read ORDER BY ts, id"
        ).fetchall()
        self._enqueue(r[0] for r in rows)

    def _next(self, deadline: Optional[float]) -> Optional[Notification]:
        """The next notification to yield; None when stopped or idle past
        the deadline."""
        if self._needs_catch_up:
            self._needs_catch_up = False
            if self.catch_up:
                self._look_for_unread()
        while not self._stop.is_set():
            while self._pending:
                nid = self._pending[0]
                try:
                    item = self._get(nid)
                except psycopg.errors.UndefinedObject:
                    item = None  # deleted or acknowledged meanwhile
                self._pending.popleft()
                if item is None or item.read:
                    continue
                self._seen[nid] = None
                while len(self._seen) > _SEEN_MAX:
                    self._seen.popitem(last=False)
                return item
            left = self.poll_interval if deadline is None else deadline - time.monotonic()
            if left <= 0:
                return None
            if self._listener is None:
                self._waker.sleep(min(left, self.poll_interval))
                self._look_for_unread()
                continue
            for n in self._listener.wait(left, self._waker):
                try:
                    self._enqueue([int(json.loads(n.payload)["id"])])
                except (ValueError, KeyError, TypeError):
                    pass  # not an announcement
        return None
