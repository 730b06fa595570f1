"""Rate limits and lock-outs (reference_cluster.cores.limits), and the server's bounded
pool that hashes passwords off its event loop (reference_cluster.processes.hashpool)."""

from __future__ import annotations

import select

import pytest

from reference_cluster.cores.accounts import HashJob, ScryptParams, hash_password
from reference_cluster.cores.limits import Lockout, Rate, RateLimiter
from reference_cluster.processes.hashpool import HashPool

CHEAP = ScryptParams(n=2**4, r=8, p=1)


def test_a_bucket_allows_its_burst_then_one_per_refill_interval() -> None:
    """Rate(3, 60): three at once, the fourth waits 20 s, and after 20 s one more passes."""
    limiter = RateLimiter(Rate(3, 60.0))
    first = [limiter.take("a", 0.0) for _ in range(4)]
    assert [None, None, None, 20.0] == first
    assert (None, 20.0) == (limiter.take("a", 20.0), limiter.take("a", 20.0))


def test_buckets_are_per_key_and_bounded_in_number() -> None:
    """Another key has its own bucket; past ``max_keys`` the least recently used is
    forgotten."""
    limiter = RateLimiter(Rate(1, 60.0), max_keys=2)
    assert [None, None, None] == [limiter.take(k, 0.0) for k in ("a", "b", "c")]
    assert (2, None) == (len(limiter), limiter.take("a", 0.0))


def test_a_lockout_starts_after_the_free_failures_and_doubles_up_to_the_cap() -> None:
    """5 free failures, then 1, 2, 4 ... seconds, never more than the cap; a success
    clears it."""
    lock = Lockout(free=5, base=1.0, cap=4.0)
    waits = []
    for _ in range(9):
        lock.failed("alice", 100.0)
        waits.append(lock.locked("alice", 100.0))
    assert [None] * 5 + [1.0, 2.0, 4.0, 4.0] == waits
    lock.succeeded("alice")
    assert None is lock.locked("alice", 100.0)


def test_the_pool_runs_jobs_off_the_caller_and_wakes_its_descriptor() -> None:
    """Submitted jobs come back through ``done`` after the descriptor turns readable;
    the answers are the jobs' results."""
    pool = HashPool(workers=2, queue=2)
    try:
        stored = hash_password("correct horse battery", params=CHEAP)
        jobs = {
            1: HashJob.verify("correct horse battery", stored),
            2: HashJob.verify("wrong password", stored),
            3: HashJob.new_hash("a new password", CHEAP, b"0123456789abcdef"),
        }
        for key, job in jobs.items():
            assert pool.submit(key, job)
        results: dict[object, object] = {}
        for _ in range(100):
            if len(results) == 3:
                break
            readable, _, _ = select.select([pool.fd], [], [], 5.0)
            assert readable, "the pool did not wake its descriptor"
            results.update(pool.done())
        assert (True, False, 0) == (results[1].verified, results[2].verified, pool.in_flight)  # type: ignore[attr-defined]
        assert results[3].encoded.startswith("scrypt$16$8$1$")  # type: ignore[attr-defined]
    finally:
        pool.close()


def test_a_full_pool_refuses_new_work_at_once_but_takes_continuations() -> None:
    """With ``workers + queue`` jobs in flight, ``submit`` returns False (the server
    answers busy); a job that continues an admitted request is taken anyway."""
    pool = HashPool(workers=1, queue=1)
    try:
        slow = HashJob.new_hash("a password!", ScryptParams(n=2**14), b"0123456789abcdef")
        assert [True, True, False, True] == [
            pool.submit(1, slow),
            pool.submit(2, slow),
            pool.submit(3, slow),
            pool.submit(4, slow, force=True),
        ]
        assert 1 == pool.refused
    finally:
        pool.close()


def test_bad_pool_sizes_are_refused() -> None:
    """A pool needs a worker."""
    with pytest.raises(ValueError, match="workers"):
        HashPool(workers=0)
