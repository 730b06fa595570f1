"""Capped exponential back-off with jitter, as a pure function.

The random part comes in as an argument, so a core stays deterministic under a seeded
generator and the function is easy to test.
"""

from __future__ import annotations

import math

__all__ = ["backoff_delay"]


def backoff_delay(attempt: int, *, base: float, cap: float, jitter: float) -> float:
    """How long to wait before retry number ``attempt`` (0 for the first retry).

    The ceiling doubles with each attempt from ``base`` up to ``cap``; the delay is drawn
    from the upper half of it (``ceiling * (0.5 + jitter / 2)``), so retries from many
    clients spread out while none waits less than half the ceiling.

    Args:
        attempt: how many retries came before this one (>= 0).
        base: the ceiling of the first retry, in seconds (> 0).
        cap: the largest ceiling, in seconds (>= base).
        jitter: a number in ``[0, 1)``, for example ``rng.random()``.

    Raises:
        ValueError: an argument out of its domain.
    """
    if type(attempt) is not int or attempt < 0:
        raise ValueError(f"attempt must be an int >= 0, got {attempt!r}")
    if not (math.isfinite(base) and base > 0):
        raise ValueError(f"base must be a finite number > 0, got {base!r}")
    if not (math.isfinite(cap) and cap >= base):
        raise ValueError(f"cap must be a finite number >= base ({base}), got {cap!r}")
    if not 0.0 <= jitter < 1.0:
        raise ValueError(f"jitter must be in [0, 1), got {jitter!r}")
    ceiling = cap if attempt >= 62 else min(cap, base * 2.0**attempt)
    return ceiling * (0.5 + jitter / 2)
