"""Python client for notify_ext, on psycopg 3.

- :class:`Consumer` drains a stream consumer: fetch, hand the batch to the
  caller, acknowledge when the caller returns; wakes up on LISTEN and
  reconnects after a server restart.
- :class:`Inbox` yields a principal's notifications live and marks them
  read.
"""

from ._backoff import Backoff
from ._consumer import Consumer, Message
from ._inbox import Inbox, Notification

__all__ = ["Backoff", "Consumer", "Inbox", "Message", "Notification"]
__version__ = "0.2.0"
