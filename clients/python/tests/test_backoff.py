"""Backoff without a server."""

import pytest

from notify_ext_client import Backoff


def test_delays_grow_stay_under_the_cap_and_start_over():
    b = Backoff(initial=0.1, maximum=1.0)
    for n in range(12):
        ceiling = min(1.0, 0.1 * 2 ** n)
        assert ceiling / 2 <= b.next_delay() <= ceiling
    b.reset()
    assert b.next_delay() <= 0.1


def test_nonsense_settings_are_refused():
    with pytest.raises(ValueError):
        Backoff(initial=0)
    with pytest.raises(ValueError):
        Backoff(initial=1, maximum=0.5)
