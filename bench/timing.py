"""Timing shared by ``ratios.py`` and ``peers.py``: one batch in CPU time, less the timer.

A timed batch is ``t0 = timer(); run(*args); timer() - t0``. Besides the work, that figure
holds the timer's own cost: the part of the first call after it read the clock, the call
of ``run``, and the part of the second call before it reads the clock. With
``time.process_time`` (a system call on Linux) that is about 600-700 ns, as much as ten
plain set operations, so a batch of 100 plain operations reads 8-20% slow and every ratio
against it reads low by as much. ``timer_cost`` measures it the same way, on an empty
batch, and callers subtract it from every timed batch on both sides.

Spreads: a figure taken in several independent runs is reported as its median over the
runs and the lowest and highest run (``Spread``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Timer = Callable[[], float]

TIMERS: dict[str, Timer] = {
    "process_time": time.process_time,
    "perf_counter": time.perf_counter,
    "monotonic": time.monotonic,
    "thread_time": time.thread_time,
    "time": time.time,
}
"""Timers a pytest-benchmark JSON file may name, by their name in the ``time`` module."""


def _empty(*args: Any) -> None:
    """The empty batch: a call with the arguments of a real one, and no work."""


def timer_cost(samples: int = 2_001, arity: int = 1, timer: Timer = time.process_time) -> float:
    """Median seconds that timing an empty batch takes: what every timed batch holds
    besides its work (the median, so that a preempted sample does not count)."""
    args = (None,) * arity
    run = _empty
    found: list[float] = []
    for _ in range(samples):
        t0 = timer()
        run(*args)
        found.append(timer() - t0)
    return statistics.median(found)


def timed(run: Callable[..., Any], args: tuple[Any, ...], cost: float) -> float:
    """CPU seconds of one batch ``run(*args)``, less ``cost`` (the timer's own)."""
    t0 = time.process_time()
    run(*args)
    return time.process_time() - t0 - cost


@dataclass(frozen=True)
class Spread:
    """A figure over independent runs: the median run, and the lowest and highest."""

    median: float
    low: float
    high: float
    runs: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values), len(values))


def ratio_text(value: float) -> str:
    """A ratio, with as many digits as it is worth: ``3.4``, ``11.1``, ``1,234``."""
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}"


def spread_text(spread: Spread, unit: str = "x") -> str:
    """``11.1x (10.6-11.8)`` (with an en dash): the median over the runs, then the lowest
    and highest run; a figure from one run is written alone."""
    head = f"{ratio_text(spread.median)}{unit}"
    if spread.runs < 2:
        return head
    return f"{head} ({ratio_text(spread.low)}–{ratio_text(spread.high)})"
