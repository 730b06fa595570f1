"""The back-off function: capped exponential ceilings, jitter in the upper half."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reference_cluster.cores.backoff import backoff_delay

jitters = st.floats(0.0, 1.0, exclude_max=True)


@given(st.integers(0, 200), jitters)
def test_delay_lies_in_the_upper_half_of_the_capped_ceiling(attempt: int, jitter: float) -> None:
    """The delay is between half the ceiling and the ceiling, min(cap, base * 2**attempt)."""
    ceiling = min(2.0, 0.1 * 2.0 ** min(attempt, 100))
    delay = backoff_delay(attempt, base=0.1, cap=2.0, jitter=jitter)
    assert True is (ceiling / 2 <= delay <= ceiling)


def test_ceilings_double_until_the_cap() -> None:
    """With the largest jitter the delays approach 0.1, 0.2, 0.4, 0.8, then 1.0 for ever."""
    delays = [round(backoff_delay(a, base=0.1, cap=1.0, jitter=0.999999), 4) for a in range(6)]
    assert [0.1, 0.2, 0.4, 0.8, 1.0, 1.0] == delays


@given(jitters, jitters)
def test_more_jitter_never_means_a_shorter_wait(a: float, b: float) -> None:
    """The delay grows with the jitter value, so the random draw only spreads retries."""
    lo, hi = sorted((a, b))
    assert backoff_delay(3, base=0.1, cap=5.0, jitter=lo) <= backoff_delay(
        3, base=0.1, cap=5.0, jitter=hi
    )


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"attempt": -1}, "attempt must be an int >= 0"),
        ({"attempt": 1.0}, "attempt must be an int >= 0"),
        ({"base": 0.0}, "base must be a finite number > 0"),
        ({"cap": 0.05}, "cap must be a finite number >= base"),
        ({"cap": float("inf")}, "cap must be a finite number >= base"),
        ({"jitter": 1.0}, r"jitter must be in \[0, 1\)"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs: dict[str, float], says: str) -> None:
    """Each argument out of its domain raises ValueError naming it."""
    args = {"attempt": 0, "base": 0.1, "cap": 1.0, "jitter": 0.5, **kwargs}
    with pytest.raises(ValueError, match=says):
        backoff_delay(args.pop("attempt"), **args)  # type: ignore[arg-type]
