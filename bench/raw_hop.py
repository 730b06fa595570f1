"""The limit for a cluster round trip: a raw pyzmq hop with one durable commit.

A client REQ socket sends to a ROUTER frontend of a broker, whose ROUTER backend passes the
request to a DEALER echo worker; the worker makes one durable SQLite commit per request
(WAL, ``synchronous=FULL``) and echoes the request back the same way. Broker and worker run
as separate processes on loopback, as the cluster's do, and are stopped by pid when the
measurement ends. Nothing here knows the cluster's protocol: this is the floor a real
broker and server are compared against, in the same run (``TARGETS.md``: an edit's round
trip within 1.5x of this, median and p99; edits per second with 8 clients at least half of
this hop's round trips per second).

Use from a benchmark::

    from raw_hop import drive_req, measure_raw_hop, ratio

    raw = measure_raw_hop(tmp_path, clients=8, requests=4000)
    real = ...  # the cluster measured the same way, for example with drive_req
    print(ratio(real, raw))

Or print the table: ``.venv/bin/python bench/raw_hop.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import selectors
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import attrs
import zmq

from reference_cluster.processes.cluster import stop_process

__all__ = [
    "HopStats",
    "drive_req",
    "measure_raw_hop",
    "ratio",
    "raw_hop",
    "read_line",
    "summarize",
]

_READY = b"\x01"
_REPLY = b"\x02"
_PAYLOAD = b"x" * 120  # about the size of a small edit message
_START_TIMEOUT = 30.0


@attrs.frozen
class HopStats:
    """Round-trip figures of one measurement.

    Attributes:
        clients: concurrent clients (each with one request in flight).
        requests: round trips measured (after warm-up).
        median_us: median round trip, microseconds.
        p99_us: 99th percentile round trip, microseconds.
        per_second: round trips completed per second, all clients together.
    """

    clients: int
    requests: int
    median_us: float
    p99_us: float
    per_second: float

    def row(self, label: str) -> str:
        """One line of a results table."""
        return (
            f"{label:<28} {self.clients:>7} {self.requests:>8} {self.median_us:>10.0f} "
            f"{self.p99_us:>8.0f} {self.per_second:>10.0f}"
        )


TABLE_HEADER = (
    f"{'what':<28} {'clients':>7} {'requests':>8} {'median us':>10} {'p99 us':>8} {'per s':>10}"
)


def summarize(latencies: Sequence[float], clients: int, elapsed: float) -> HopStats:
    """Figures from round-trip times and the wall time they took (all in seconds)."""
    if not latencies or elapsed <= 0:
        raise ValueError("need at least one round trip and a positive elapsed time")
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return HopStats(
        clients=clients,
        requests=len(ordered),
        median_us=statistics.median(ordered) * 1e6,
        p99_us=p99 * 1e6,
        per_second=len(ordered) / elapsed,
    )


def ratio(measured: HopStats, limit: HopStats) -> dict[str, float]:
    """``measured`` relative to ``limit``: latency ratios (lower is better, the target is
    <= 1.5) and the throughput ratio (higher is better, the target is >= 0.5)."""
    return {
        "median": measured.median_us / limit.median_us,
        "p99": measured.p99_us / limit.p99_us,
        "throughput": measured.per_second / limit.per_second,
    }


# -- the client side ----------------------------------------------------------------------


def drive_req(
    endpoint: str,
    *,
    clients: int,
    requests: int,
    warmup: int = 200,
    payload: bytes = _PAYLOAD,
    timeout: float = 60.0,
    context: zmq.Context[Any] | None = None,
) -> HopStats:
    """Measure round trips of ``clients`` REQ sockets against an echo at ``endpoint``.

    One thread polls every socket; each keeps exactly one request in flight, so the
    clients are concurrent without Python threads competing for the interpreter. Every
    reply must echo its request.

    Args:
        endpoint: where the echo service's frontend listens.
        clients: concurrent clients.
        requests: round trips to measure, all clients together (warm-up not counted).
        warmup: round trips done first and not measured.
        timeout: give up (``TimeoutError``) if the whole run takes longer.

    Raises:
        TimeoutError: the run did not finish in time. AssertionError: a wrong reply.
    """
    if clients < 1 or requests < clients:
        raise ValueError("need at least one client and one request per client")
    ctx = context or zmq.Context.instance()
    socks = []
    try:
        for _ in range(clients):
            sock = ctx.socket(zmq.REQ)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(endpoint)
            socks.append(sock)
        _run_clients(socks, warmup, payload, timeout)
        latencies, elapsed = _run_clients(socks, requests, payload, timeout)
    finally:
        for sock in socks:
            sock.close()
    return summarize(latencies, clients, elapsed)


def _run_clients(
    socks: list[zmq.Socket[Any]], total: int, payload: bytes, timeout: float
) -> tuple[list[float], float]:
    poller = zmq.Poller()
    for sock in socks:
        poller.register(sock, zmq.POLLIN)
    sent_at: dict[zmq.Socket[Any], float] = {}
    latencies: list[float] = []
    issued = 0
    start = time.perf_counter()
    deadline = start + timeout
    for sock in socks[: max(1, min(len(socks), total))]:
        sent_at[sock] = time.perf_counter()
        sock.send(payload)
        issued += 1
    while len(latencies) < total:
        left = deadline - time.perf_counter()
        if left <= 0:
            raise TimeoutError(f"{len(latencies)} of {total} round trips in {timeout}s")
        for sock, _ in poller.poll(int(left * 1000) + 1):
            reply = sock.recv()
            latencies.append(time.perf_counter() - sent_at.pop(sock))
            if reply != payload:
                raise AssertionError(f"the echo returned {reply[:40]!r}, not the request")
            if issued < total:
                sent_at[sock] = time.perf_counter()
                sock.send(payload)
                issued += 1
    return latencies, time.perf_counter() - start


# -- the broker and the worker (each in its own process) ----------------------------------


def _stop_on_sigterm() -> None:
    def stop(_signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)


def run_broker(host: str = "127.0.0.1") -> None:
    """Route between a ROUTER frontend and a ROUTER backend until SIGTERM; print the two
    bound endpoints on one line first."""
    _stop_on_sigterm()
    ctx = zmq.Context()
    frontend = ctx.socket(zmq.ROUTER)
    backend = ctx.socket(zmq.ROUTER)
    for sock in (frontend, backend):
        sock.setsockopt(zmq.LINGER, 0)
    try:
        frontend.bind(f"tcp://{host}:*")
        backend.bind(f"tcp://{host}:*")
        print(
            frontend.getsockopt_string(zmq.LAST_ENDPOINT),
            backend.getsockopt_string(zmq.LAST_ENDPOINT),
            flush=True,
        )
        workers: list[bytes] = []
        turn = 0
        poller = zmq.Poller()
        poller.register(backend, zmq.POLLIN)
        while True:
            events = dict(poller.poll())
            if backend in events:
                worker, kind, *rest = backend.recv_multipart()
                if kind == _READY and worker not in workers:
                    workers.append(worker)
                    poller.register(frontend, zmq.POLLIN)  # requests wait for a worker
                elif kind == _REPLY:
                    frontend.send_multipart(rest)
            if frontend in events:
                request = frontend.recv_multipart()
                turn = (turn + 1) % len(workers)
                backend.send_multipart([workers[turn], *request])
    finally:
        frontend.close()
        backend.close()
        ctx.term()


def run_worker(backend: str, db_path: str, *, commit: bool = True) -> None:
    """Echo every request after one durable SQLite commit (or none, to measure the hop
    alone), until SIGTERM."""
    _stop_on_sigterm()
    db = sqlite3.connect(db_path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS hops (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(backend)
        sock.send(_READY)
        while True:
            envelope = sock.recv_multipart()
            if commit:
                db.execute("BEGIN IMMEDIATE")
                db.execute("INSERT INTO hops (body) VALUES (?)", (envelope[-1],))
                db.execute("COMMIT")
            sock.send_multipart([_REPLY, *envelope])
    finally:
        sock.close()
        ctx.term()
        db.close()


def read_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    """The first line ``proc`` prints on standard output, waiting at most ``timeout``."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while b"\n" not in buf and (left := deadline - time.monotonic()) > 0:
            if sel.select(timeout=left):
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                buf += chunk
    if b"\n" not in buf:
        raise TimeoutError(f"pid {proc.pid} printed no line within {timeout}s")
    return buf.decode().strip()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    stop_process(proc, timeout=10.0)


@contextlib.contextmanager
def raw_hop(data_dir: Path, *, commit: bool = True, python: str = sys.executable) -> Iterator[str]:
    """Start the broker and the echo worker (two processes), yield the frontend endpoint,
    and stop both by pid on exit. The worker's database is ``data_dir/raw_hop.db``;
    ``commit=False`` measures the network hop alone."""
    me = str(Path(__file__).resolve())
    procs: list[subprocess.Popen[bytes]] = []
    try:
        broker = subprocess.Popen([python, me, "broker"], stdout=subprocess.PIPE)
        procs.append(broker)
        frontend, backend = read_line(broker, _START_TIMEOUT).split()
        db = str(data_dir / "raw_hop.db")
        flags = [] if commit else ["--no-commit"]
        procs.append(subprocess.Popen([python, me, "worker", backend, db, *flags]))
        yield frontend
    finally:
        for proc in reversed(procs):
            _stop(proc)


def committed_rows(data_dir: Path) -> int:
    """How many requests the worker committed (read after the worker stopped)."""
    with contextlib.closing(sqlite3.connect(data_dir / "raw_hop.db")) as db:
        return int(db.execute("SELECT count(*) FROM hops").fetchone()[0])


def measure_raw_hop(data_dir: Path, *, clients: int, requests: int) -> HopStats:
    """Start a raw hop, measure it with :func:`drive_req`, stop it, return the figures."""
    with raw_hop(data_dir) as endpoint:
        return drive_req(endpoint, clients=clients, requests=requests)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``broker``, ``worker BACKEND DB`` (used by :func:`raw_hop`), or
    ``table`` (the default) to print a measurement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="role")
    sub.add_parser("broker")
    worker = sub.add_parser("worker")
    worker.add_argument("backend")
    worker.add_argument("db")
    worker.add_argument("--no-commit", dest="commit", action="store_false")
    table = sub.add_parser("table")
    table.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args(argv)
    roles: dict[str | None, Callable[[], None]] = {
        "broker": run_broker,
        "worker": lambda: run_worker(args.backend, args.db, commit=args.commit),
    }
    if args.role in roles:
        roles[args.role]()
        return 0
    requests = getattr(args, "requests", 5000)
    print(TABLE_HEADER)
    for commit, label in ((True, "raw hop + durable commit"), (False, "raw hop, no commit")):
        with (
            tempfile.TemporaryDirectory(prefix="raw-hop-") as d,
            raw_hop(Path(d), commit=commit) as endpoint,
        ):
            for clients in (1, 8):
                stats = drive_req(endpoint, clients=clients, requests=requests)
                print(stats.row(label))
    return 0


if __name__ == "__main__":
    sys.exit(main())
