"""Draining a stream consumer."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import psycopg

from ._backoff import Backoff
from ._client import _Client
from ._connection import log

Handler = Callable[[List["Message"]], Any]


@dataclass(frozen=True)
class Message:
    """One delivery of an event.

    ``event`` is the event JSON of the contract (``seq``, ``stream``,
    ``operation``, ``resource``, ``occurred_at``, ``actor``, ``payload``
    and, for updates, ``changed``).  ``delivery_count`` is 1 on the first
    delivery and grows with each redelivery.  ``reply``, ``salt`` and
    ``hmac`` acknowledge it; :class:`Consumer` does that for you.
    """

    seq: int
    event: Dict[str, Any]
    delivery_count: int
    reply: str
    salt: str
    hmac: str

    @property
    def stream(self) -> str:
        return self.event["stream"]

    @property
    def operation(self) -> str:
        return self.event["operation"]

    @property
    def payload(self) -> Dict[str, Any]:
        return self.event.get("payload") or {}

    @property
    def resource_id(self) -> Optional[str]:
        resource = self.event.get("resource")
        return resource["id"] if resource else None

    def ack_token(self) -> Dict[str, str]:
        """The object acknowledge_message_batch() takes for this message."""
        return {"reply": self.reply, "salt": self.salt, "hmac": self.hmac}


class Consumer(_Client):
    """Drains a notify_ext stream consumer: fetch a batch, hand it to the
    caller, acknowledge it after the caller returns.

    Two connections are used: one that runs the fetches and
    acknowledgements, and a dedicated one that LISTENs on the consumer's
    channel for wake-ups.  While nothing is there to fetch, the consumer
    sleeps on that channel and fetches again when woken, or after
    ``poll_interval`` seconds in any case (that picks up redeliveries, which
    send no wake-up).  With ``listen=False`` (e.g. behind a pooler that
    cannot LISTEN) it long-polls instead: the fetch itself waits on the
    server for up to ``poll_interval``.

    Delivery is at least once.  A handler that raises leaves its batch
    unacknowledged (the server hands it out again after the consumer's
    ``ack_wait``) and the exception propagates out of :meth:`run`.

    When the server goes away (a restart, a failover, a dropped
    connection) the consumer reconnects with capped, jittered exponential
    backoff, and first acknowledges what was handled before the connection
    was lost, so that nothing is skipped and nothing handled is delivered
    again unless the server kept no record of the acknowledgement.

    Use it as a context manager, or call :meth:`close`::

        with Consumer(dsn, consumer_id) as consumer:
            consumer.run(handle_batch)

    :param conninfo: a libpq connection string or URI.
    :param consumer: the consumer's id (from create_stream_consumer()).
    :param principal: when the connecting role is the application role,
        the principal to act for (``SET notify_ext.principal``).
    :param batch_size: the most messages per batch (1 to 10,000).
    :param poll_interval: seconds to wait for a wake-up before fetching
        anyway.
    :param listen: False to long-poll instead of listening.
    :param backoff: the reconnection delays (see :class:`Backoff`).
    :param max_reconnect_time: give up (re-raising the connection error)
        when the server could not be reached again for this many seconds;
        None retries for ever.
    :param connect_kwargs: passed on to ``psycopg.connect()``.
    """

    def __init__(
        self,
        conninfo: str,
        consumer: Union[str, uuid.UUID],
        *,
        principal: Optional[str] = None,
        batch_size: int = 100,
        poll_interval: float = 10.0,
        listen: bool = True,
        backoff: Optional[Backoff] = None,
        max_reconnect_time: Optional[float] = None,
        connect_kwargs: Optional[Mapping[str, Any]] = None,
    ) -> None:
        if not 1 <= batch_size <= 10000:
            raise ValueError(f"batch_size must be between 1 and 10000, not {batch_size}")
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be positive, not {poll_interval}")
        super().__init__(
            conninfo,
            principal=principal,
            listen=listen,
            backoff=backoff,
            max_reconnect_time=max_reconnect_time,
            connect_kwargs=connect_kwargs,
        )
        self.consumer_id = str(uuid.UUID(str(consumer)))
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        # Replies of a batch that was handled but not yet acknowledged.
        self._unacked: List[Dict[str, str]] = []
        # The highest seq a wake-up announced, and the highest fetched.
        self._announced = 0
        self._fetched = 0

    _what = "consumer"

    def _describe(self) -> str:
        return f"consumer {self.consumer_id}"

    # ------------------------------------------------------------ draining

    def run(self, handler: Handler, *, until_idle: bool = False) -> None:
        """Hands each batch to handler (a list of :class:`Message`, in seq
        order, redeliveries first) and acknowledges it when handler returns.
        Returns after :meth:`stop`, or with ``until_idle`` as soon as a
        fetch comes back empty."""
        with self._loop():
            while not self._stop.is_set():
                batch = self._with_reconnect(self._next_batch)
                if batch is None:  # stopped
                    break
                if batch:
                    handler(batch)
                    self._unacked = [m.ack_token() for m in batch]
                    self._with_reconnect(self._flush_acks)
                elif until_idle:
                    break
                else:
                    self._with_reconnect(self._idle)

    def drain(self, handler: Handler) -> None:
        """Handles everything there is now, then returns."""
        self.run(handler, until_idle=True)

    def fetch(self, wait: float = 0) -> List[Message]:
        """One batch, without acknowledging it (for callers that want to
        acknowledge themselves with :meth:`acknowledge`)."""
        with self._loop():
            return self._with_reconnect(lambda: self._fetch(wait)) or []

    def acknowledge(self, messages: Sequence[Message]) -> int:
        """Acknowledges messages; returns how many were newly acknowledged."""
        tokens = [m.ack_token() for m in messages]
        return self._with_reconnect(lambda: self._ack(tokens)) or 0

    def info(self) -> Dict[str, Any]:
        """consumer_info(): the consumer's configuration and counters."""
        return self._with_reconnect(
            lambda: self._work().execute(
                "SELECT notify_ext.consumer_info(%s::uuid)", (self.consumer_id,)
            ).fetchone()[0]
        )

    # ------------------------------------------------------------ internals

    def _channel(self, conn: psycopg.Connection) -> Optional[str]:
        return conn.execute(
            "SELECT notify_ext.get_event_message_stream(%s::uuid)", (self.consumer_id,)
        ).fetchone()[0]

    def _on_connect(self) -> None:
        # What was handled before the connection was lost is acknowledged
        # before anything else happens on the new one.
        self._flush_acks()

    def _gave_up(self) -> None:
        if self._unacked:
            log.warning("consumer %s stopped before it could acknowledge %d messages;"
                        " they will be redelivered", self.consumer_id, len(self._unacked))
            self._unacked = []

    def _fetch(self, wait: float) -> List[Message]:
        rows = self._work().execute(
            "SELECT seq, message, reply, salt, hmac, delivery_count"
            " FROM notify_ext.get_event_message_batch(%s::uuid, %s, make_interval(secs => %s))",
            (self.consumer_id, self.batch_size, wait),
        ).fetchall()
        batch = [
            Message(seq=r[0], event=r[1], reply=r[2], salt=r[3], hmac=r[4], delivery_count=r[5])
            for r in rows
        ]
        if batch:
            self._fetched = max(self._fetched, batch[-1].seq)
        return batch

    def _next_batch(self) -> Optional[List[Message]]:
        if self._stop.is_set():
            return None
        if self._listener is None:
            return self._fetch(self.poll_interval)
        # Wake-ups that came before this fetch are answered by it.
        self._note_wakeups(self._listener.poll())
        batch = self._fetch(0)
        if not batch and self._announced > self._fetched:
            # An announced event can sit behind an earlier-numbered
            # transaction that is still committing: give the server a
            # moment to let it through, once.
            self._fetched = self._announced
            batch = self._fetch(min(1.0, self.poll_interval))
        return batch

    def _idle(self) -> None:
        """Nothing to fetch: sleep until a wake-up, poll_interval, or stop."""
        if self._listener is None:
            return  # the long poll has waited already
        deadline = time.monotonic() + self.poll_interval
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0 or self._note_wakeups(self._listener.wait(left, self._waker)):
                return

    def _note_wakeups(self, notifies: List[psycopg.Notify]) -> bool:
        for n in notifies:
            try:
                seq = int(json.loads(n.payload).get("seq", 0))
            except (ValueError, TypeError, AttributeError):
                seq = 0
            self._announced = max(self._announced, seq)
        return bool(notifies)

    def _ack(self, tokens: List[Dict[str, str]]) -> int:
        if not tokens:
            return 0
        return self._work().execute(
            "SELECT notify_ext.acknowledge_message_batch(%s::jsonb)", (json.dumps(tokens),)
        ).fetchone()[0]

    def _flush_acks(self) -> None:
        tokens = self._unacked
        if not tokens or self._conn is None:
            return
        try:
            self._ack(tokens)
        except psycopg.errors.InvalidAuthorizationSpecification as exc:
            # Signed under a key rotated out long ago: the server hands
            # these messages out again, with new replies.
            log.warning("consumer %s: acknowledgement refused (%s); the batch will be redelivered",
                        self.consumer_id, str(exc).strip())
        self._unacked = []
