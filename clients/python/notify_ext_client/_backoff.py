"""Capped exponential backoff with jitter, for reconnecting."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays between reconnection attempts.

    The n-th delay (counted from 0) is drawn uniformly from
    ``[d / 2, d]`` with ``d = min(maximum, initial * multiplier ** n)``:
    it grows exponentially, never exceeds ``maximum``, and the jitter keeps
    many clients that lost the same server from reconnecting in lockstep.
    :meth:`reset` starts over after a successful connection.
    """

    initial: float = 0.1
    maximum: float = 10.0
    multiplier: float = 2.0
    attempt: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.maximum < self.initial or self.multiplier < 1:
            raise ValueError(
                "Backoff needs 0 < initial <= maximum and multiplier >= 1, "
                f"not initial={self.initial}, maximum={self.maximum}, "
                f"multiplier={self.multiplier}"
            )

    def next_delay(self) -> float:
        """The delay before the next attempt, in seconds."""
        # Cap the exponent so that the power cannot overflow a float.
        ceiling = min(self.maximum, self.initial * self.multiplier ** min(self.attempt, 64))
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        """Starts over from ``initial``."""
        self.attempt = 0
