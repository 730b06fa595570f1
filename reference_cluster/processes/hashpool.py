"""A bounded pool of threads that run password hash jobs off a server's event loop.

:func:`hashlib.scrypt` releases the GIL, so a few threads hash in parallel while the
server's loop keeps polling its sockets and sending heartbeats. The loop submits a
:class:`~reference_cluster.cores.accounts.HashJob` with a key and polls :attr:`HashPool.fd`
with its sockets; a worker that finishes a job queues the result and writes one byte to a
socket pair, which wakes the loop, and the loop takes the results with :meth:`HashPool.done`
and resumes the request on its own thread. Nothing but the job's immutable inputs and its
result crosses threads.

The pool is bounded: at most ``workers + queue`` jobs are in flight; :meth:`HashPool.submit`
refuses more at once (the server then answers ``busy``, which clients retry elsewhere), so
a flood of logins costs a bounded amount of memory and waiting, never the loop's time.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import contextlib
import logging
import os
import socket
from collections.abc import Hashable

import attrs

from reference_cluster.cores.accounts import DEFAULT_SCRYPT, HashJob, HashResult, ScryptParams
from reference_cluster.cores.directory import DEFAULT_QUOTA
from reference_cluster.cores.limits import Rate
from reference_cluster.processes.config import parse_count

__all__ = [
    "AccountSettings",
    "HashPool",
    "account_settings_from_args",
    "add_account_flags",
]

log = logging.getLogger(__name__)


class HashPool:
    """Threads that run hash jobs; results come back through :meth:`done`.

    Args:
        workers: threads hashing at once (each scrypt at the guidance takes 128 MiB).
        queue: jobs that may wait for a thread beyond those running.
    """

    def __init__(self, workers: int = 2, queue: int = 8) -> None:
        if workers < 1 or queue < 0:
            raise ValueError(
                f"a hash pool has >= 1 workers and a queue >= 0, got {workers}, {queue}"
            )
        self.limit = workers + queue
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="hash"
        )
        self._results: collections.deque[tuple[Hashable, HashResult]] = collections.deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.in_flight = 0
        self.refused = 0
        """Jobs refused because the pool was full, so far."""

    @property
    def fd(self) -> int:
        """The file descriptor to poll: readable when results are waiting."""
        return self._wake_r.fileno()

    def submit(self, key: Hashable, job: HashJob, *, force: bool = False) -> bool:
        """Start ``job``; its result comes back from :meth:`done` under ``key``.

        Returns:
            False (and nothing started) if the pool is full, unless ``force`` (a job that
            continues a request already admitted).
        """
        if self.in_flight >= self.limit and not force:
            self.refused += 1
            return False
        self.in_flight += 1
        future = self._executor.submit(job.run)
        future.add_done_callback(lambda f: self._finished(key, f))
        return True

    def _finished(self, key: Hashable, future: concurrent.futures.Future[HashResult]) -> None:
        """In a worker thread: queue the result and wake the loop."""
        try:
            result = future.result()
        except BaseException as exc:  # run() never raises; a cancelled job lands here
            result = HashResult(error=f"the hash job failed: {exc!r}")
        self._results.append((key, result))
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_w.send(b"\0")

    def done(self) -> list[tuple[Hashable, HashResult]]:
        """The results finished since the last call (on the loop's thread)."""
        with contextlib.suppress(BlockingIOError, OSError):
            while self._wake_r.recv(4096):
                pass
        out = []
        while self._results:
            out.append(self._results.popleft())
        self.in_flight -= len(out)
        return out

    def close(self) -> None:
        """Stop the threads: queued jobs are dropped, a running hash finishes on its own
        (the process exits once it has)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._wake_r.close()
        self._wake_w.close()


# -- the server's account settings and their flags -----------------------------------------


def _scrypt_n(text: str) -> int:
    value = parse_count(text)
    try:
        ScryptParams(n=value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


@attrs.frozen
class AccountSettings:
    """A server's account settings (flags ``--scrypt-n`` ... ``--list-quota``).

    Attributes:
        scrypt_n: the scrypt cost of new password hashes (old hashes keep their own).
        hash_workers: threads hashing passwords at once.
        hash_queue: hash jobs that may wait beyond those; more are answered ``busy``.
        signups_per_minute: sign-ups this server takes a minute, in all.
        list_quota: the most live lists one user may own.
    """

    scrypt_n: int = DEFAULT_SCRYPT.n
    hash_workers: int = 2
    hash_queue: int = 8
    signups_per_minute: int = 60
    list_quota: int = DEFAULT_QUOTA

    @property
    def params(self) -> ScryptParams:
        """The scrypt cost of new hashes."""
        return attrs.evolve(DEFAULT_SCRYPT, n=self.scrypt_n)

    @property
    def signups(self) -> Rate:
        """The server-wide sign-up rate."""
        return Rate(max(1, self.signups_per_minute), 60.0)


def add_account_flags(parser: argparse.ArgumentParser) -> None:
    """The server's account flags, each with its environment variable."""
    d = AccountSettings()
    for flag, var, kind, default, text in (
        ("--scrypt-n", "SHOPLIST_SCRYPT_N", _scrypt_n, d.scrypt_n, "scrypt cost N of new hashes"),
        ("--hash-workers", "SHOPLIST_HASH_WORKERS", parse_count, d.hash_workers, "hashing threads"),
        (
            "--hash-queue",
            "SHOPLIST_HASH_QUEUE",
            parse_count,
            d.hash_queue,
            "hash jobs that may wait",
        ),
        (
            "--signups-per-minute",
            "SHOPLIST_SIGNUPS_PER_MINUTE",
            parse_count,
            d.signups_per_minute,
            "sign-ups this server takes a minute",
        ),
        ("--list-quota", "SHOPLIST_LIST_QUOTA", parse_count, d.list_quota, "most lists per user"),
    ):
        parser.add_argument(
            flag,
            type=kind,
            default=os.environ.get(var, str(default)),  # argparse applies ``type``
            metavar="N",
            help=f"{text} ({var}; default {default})",
        )


def account_settings_from_args(args: argparse.Namespace) -> AccountSettings:
    """The account settings the flags describe.

    Raises:
        ValueError: no hashing thread.
    """
    if args.hash_workers < 1:
        raise ValueError("--hash-workers must be at least 1")
    return AccountSettings(
        scrypt_n=args.scrypt_n,
        hash_workers=args.hash_workers,
        hash_queue=args.hash_queue,
        signups_per_minute=args.signups_per_minute,
        list_quota=args.list_quota,
    )
