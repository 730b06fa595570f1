"""Limits on password attempts: token buckets per key, and lock-outs after failed logins.

Theory of operation
-------------------
Rule 1 (rates). A :class:`RateLimiter` keeps one token bucket per key (a client's
address at a broker, or one key for a whole server): it holds at most ``rate.count``
tokens and refills ``rate.count`` every ``rate.per`` seconds. An attempt takes a token;
with none left it is refused, and :meth:`RateLimiter.take` says how long until the next
token.

Rule 2 (lock-outs). A :class:`Lockout` counts an account's failed logins in a row. The
first ``free`` failures cost nothing; each later one locks the account for ``base``
seconds, doubled at each further failure, at most ``cap``. A success clears the count.
While locked, attempts are refused before any password is hashed.

Rule 3 (bounded memory, in memory only). Both keep at most ``max_keys`` keys, forgetting
the least recently used first (a forgotten key starts afresh), and nothing survives a
restart: a restart forgives. No clock is read here: time comes in as ``now``.
"""

from __future__ import annotations

import math

import attrs

__all__ = ["Lockout", "Rate", "RateLimiter", "retry_text"]


def _positive(_inst: object, attr: attrs.Attribute[float], value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{attr.name} must be a positive number, got {value!r}")


@attrs.frozen
class Rate:
    """``count`` attempts per ``per`` seconds (and a burst of ``count``)."""

    count: int = attrs.field(
        validator=attrs.validators.and_(attrs.validators.instance_of(int), attrs.validators.gt(0))
    )
    per: float = attrs.field(validator=_positive)


def retry_text(seconds: float) -> str:
    """``retry after 3 s``: the wait, rounded up to a whole second, as errors say it."""
    return f"retry after {max(1, math.ceil(seconds))} s"


@attrs.define
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """Token buckets per key (Rule 1).

    Args:
        rate: the bucket size and refill.
        max_keys: the most keys remembered (Rule 3).
    """

    def __init__(self, rate: Rate, *, max_keys: int = 100_000) -> None:
        self.rate = rate
        self._max = max_keys
        self._buckets: dict[str, _Bucket] = {}

    def take(self, key: str, now: float) -> float | None:
        """Take a token for ``key`` at ``now``: None if allowed, else the seconds until
        one is free."""
        refill = self.rate.count / self.rate.per
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = _Bucket(float(self.rate.count), now)
        else:
            elapsed = max(0.0, now - bucket.at)
            bucket.tokens = min(float(self.rate.count), bucket.tokens + elapsed * refill)
            bucket.at = now
        self._buckets[key] = bucket  # most recently used last
        if len(self._buckets) > self._max:
            del self._buckets[next(iter(self._buckets))]
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return (1.0 - bucket.tokens) / refill

    def __len__(self) -> int:
        return len(self._buckets)


@attrs.define
class _Failures:
    count: int
    until: float


class Lockout:
    """Failed logins in a row per account, and the lock-outs they earn (Rule 2).

    Args:
        free: failures in a row that cost nothing.
        base: the first lock-out, in seconds; each further failure doubles it.
        cap: the longest lock-out.
        max_keys: the most accounts remembered (Rule 3).
    """

    def __init__(
        self, *, free: int = 5, base: float = 1.0, cap: float = 900.0, max_keys: int = 100_000
    ) -> None:
        if free < 0 or not base > 0 or not cap >= base:
            raise ValueError(f"bad lock-out: free={free!r}, base={base!r}, cap={cap!r}")
        self.free = free
        self.base = base
        self.cap = cap
        self._max = max_keys
        self._failures: dict[str, _Failures] = {}

    def locked(self, key: str, now: float) -> float | None:
        """None if ``key`` may try now, else the seconds its lock-out lasts."""
        entry = self._failures.get(key)
        if entry is None or entry.until <= now:
            return None
        return entry.until - now

    def failed(self, key: str, now: float) -> int:
        """Record a failure of ``key`` at ``now``; return its failures in a row."""
        entry = self._failures.pop(key, None) or _Failures(0, now)
        entry.count += 1
        if entry.count > self.free:
            lock = min(self.cap, self.base * 2 ** min(entry.count - self.free - 1, 60))
            entry.until = now + lock
        self._failures[key] = entry
        if len(self._failures) > self._max:
            del self._failures[next(iter(self._failures))]
        return entry.count

    def succeeded(self, key: str) -> None:
        """Clear ``key``'s failures."""
        self._failures.pop(key, None)

    def __len__(self) -> int:
        return len(self._failures)
