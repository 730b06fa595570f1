"""No remote kill: connection churn on every port of a running cluster, big frames on the
client port, and ``shoplist cluster up`` restarting a child that died.

Theory of operation
-------------------
Rule 1 (churn every port, bounded). :func:`churn` runs one thread per port (each broker's
front end and back end, each server's peer end point) for a fixed time per pattern,
each loop also bounded in rounds. The patterns are those that aborted libzmq 4.3.5 with
``Assertion failed: !_io_error (src/stream_engine_base.cpp:310)``: two DEALERs with the
same routing id that connect and close (:func:`same_id_pairs`), a DEALER that sends
:data:`FLOOD` status requests and closes with linger 0 (:func:`floods`), plain connect
and close (:func:`connect_close`), and the same from a stranger without keys
(:func:`strangers`, whose handshake is refused). Sockets with keys dial as a client does
(front ends) or with the operator's member key (back ends, peer end points), so their
frames reach the processes.

Rule 2 (then everything still serves). Every child is still running, every broker holds
every server live again, every server answers ``Status``, and a client signs up, edits
and syncs through the cluster.

Rule 3 (memory). The broker's peak resident size (``VmHWM`` in ``/proc/PID/status``) is
read before and after several sockets send frames above and just below the client port's
frame limit; it may grow by at most what the limits allow (see
:func:`test_big_frames_on_the_client_port_stay_within_the_queue_bounds`).

Every process a test starts is stopped by the test, by pid; every wait polls with a
deadline; the network is 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import zmq
from cli_harness import cli_env
from cluster_harness import poll

from reference_cluster.cores.client import ClientConfig
from reference_cluster.errors import MalformedMessage
from reference_cluster.processes.client import Client
from reference_cluster.processes.cluster import (
    LocalCluster,
    Timing,
    free_base_port,
    probe,
    stop_process,
)
from reference_cluster.processes.config import (
    CLIENT_HWM,
    CLIENT_MAX_MESSAGE_BYTES,
    MEMBER_HWM,
    LocalLayout,
    bound_client_port,
    bound_member_port,
    exit_text,
    tune_socket,
)
from reference_cluster.processes.security import ADMIN, Security
from reference_cluster.protocol.messages import (
    MAX_MESSAGE_BYTES,
    BrokerStatus,
    ServerStatus,
    Status,
    decode,
    encode,
)
from reference_cluster.shopping_list import ShoppingList
from reference_cluster.storage.client_store import ClientStore

TIMING = Timing(heartbeat=0.25, anti_entropy=0.5, liveness=1.0, zmq_heartbeat=0.5)
CHURN_SECONDS = 1.5
"""How long each pattern runs on each port (all ports at once)."""
MAX_ROUNDS = 400
"""The most rounds of one pattern on one port, whatever the time."""
FLOOD = 2_000
"""Status requests one flooding DEALER sends before it closes with linger 0."""
DEADLINE = 20.0
MiB = 1024 * 1024

Secure = Callable[[zmq.Socket[Any]], None]


@attrs.frozen
class Port:
    """One port of the cluster: what it is, its endpoint, the child that binds it, and
    what sets a socket's keys to talk to it (None: no keys, an insecure cluster)."""

    label: str
    endpoint: str
    owner: str
    secure: Secure | None


def ports(cluster: LocalCluster) -> list[Port]:
    """Every port of ``cluster``: front ends, back ends, peer end points."""
    admin = None if cluster.keys is None else Security.member(cluster.keys, ADMIN)
    found = []
    for i, b in enumerate(cluster.brokers):
        found.append(Port(f"{b} front end", cluster.layout.frontend(i), b, cluster.dialer(b)))
        back = None if admin is None else _member_dialer(admin, b)
        found.append(Port(f"{b} back end", cluster.layout.backend(i), b, back))
    for j, s in enumerate(cluster.servers):
        found.append(Port(f"{s} peer end point", cluster.layout.peer(j + 1), s, cluster.dialer(s)))
    return found


def _member_dialer(admin: Security, name: str) -> Secure:
    def secure(sock: zmq.Socket[Any]) -> None:
        admin.dial_member(sock, name)

    return secure


def test_sockets_detect_dead_links_by_tcp_without_zmtp_heartbeats() -> None:
    """``tune_socket`` sets no ZMTP heartbeat (the timer that aborted libzmq) but TCP
    keepalives, a retransmission limit of three heartbeats and a connect timeout of one;
    the client port's bounds and the member ports' queue bounds are what they say."""
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        front, member = ctx.socket(zmq.ROUTER), ctx.socket(zmq.ROUTER)
        for sock in (front, member):
            tune_socket(sock, heartbeat=0.5)
        bound_client_port(front)
        bound_member_port(member)
        options = [
            zmq.HEARTBEAT_IVL,
            zmq.TCP_KEEPALIVE,
            zmq.TCP_KEEPALIVE_IDLE,
            zmq.TCP_MAXRT,
            zmq.CONNECT_TIMEOUT,
        ]
        assert [0, 1, 1, 1500, 500] == [front.getsockopt(o) for o in options]
        limits = [zmq.MAXMSGSIZE, zmq.RCVHWM, zmq.SNDHWM]
        assert [CLIENT_MAX_MESSAGE_BYTES, CLIENT_HWM, CLIENT_HWM] == [
            front.getsockopt(o) for o in limits
        ]
        assert [MAX_MESSAGE_BYTES, MEMBER_HWM, MEMBER_HWM] == [member.getsockopt(o) for o in limits]
    finally:
        ctx.destroy(linger=0)


# -- the churn tool -----------------------------------------------------------------------


def _dealer(ctx: zmq.Context[Any], port: Port, *, keys: bool = True) -> zmq.Socket[Any]:
    sock: zmq.Socket[Any] = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, FLOOD + 10)
    if keys and port.secure is not None:
        port.secure(sock)
    return sock


def _send_all(sock: zmq.Socket[Any], data: bytes, count: int) -> None:
    """Send ``data`` ``count`` times without blocking; stop early if ZeroMQ will not queue
    it (a refused handshake leaves a DEALER without a connection to queue for)."""
    for _ in range(count):
        try:
            sock.send(data, zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return


def _repeat(until: float, one_round: Callable[[int], None]) -> int:
    """Run ``one_round(n)`` for n = 0, 1, ... until ``until`` (at least once, at most
    :data:`MAX_ROUNDS` times); return how many rounds ran."""
    for n in range(MAX_ROUNDS):
        one_round(n)
        if time.monotonic() >= until:
            return n + 1
    return MAX_ROUNDS


def same_id_pairs(ctx: zmq.Context[Any], port: Port, until: float) -> int:
    """Two DEALERs with one routing id connect, each sends a status request, both close;
    repeated until ``until``. Returns the rounds run."""
    status = encode(Status("churn"))

    def one_round(n: int) -> None:
        pair = [_dealer(ctx, port) for _ in range(2)]
        for sock in pair:
            sock.setsockopt(zmq.ROUTING_ID, f"churn-{n % 4}".encode())
            sock.connect(port.endpoint)
            _send_all(sock, status, 1)
        pair[0].poll(5)  # let both connections get going before they close
        for sock in pair:
            sock.close()

    return _repeat(until, one_round)


def floods(ctx: zmq.Context[Any], port: Port, until: float) -> int:
    """A DEALER sends :data:`FLOOD` status requests, waits for the first answer (at most
    50 ms), and closes with linger 0; repeated until ``until``."""
    status = encode(Status("flood"))

    def one_round(_n: int) -> None:
        sock = _dealer(ctx, port)
        sock.connect(port.endpoint)
        _send_all(sock, status, FLOOD)
        sock.poll(50)
        sock.close()

    return _repeat(until, one_round)


def connect_close(ctx: zmq.Context[Any], port: Port, until: float) -> int:
    """A DEALER connects and closes at once; repeated until ``until``."""

    def one_round(_n: int) -> None:
        sock = _dealer(ctx, port)
        sock.connect(port.endpoint)
        sock.poll(2)
        sock.close()

    return _repeat(until, one_round)


def strangers(ctx: zmq.Context[Any], port: Port, until: float) -> int:
    """A DEALER without keys (whose handshake a secure cluster refuses) sends 100 status
    requests and closes; repeated until ``until``."""
    status = encode(Status("stranger"))

    def one_round(_n: int) -> None:
        sock = _dealer(ctx, port, keys=False)
        sock.connect(port.endpoint)
        _send_all(sock, status, 100)
        sock.poll(5)
        sock.close()

    return _repeat(until, one_round)


Pattern = Callable[[zmq.Context[Any], Port, float], int]
PATTERNS: dict[str, Pattern] = {
    "same-id pairs": same_id_pairs,
    "floods": floods,
    "connect-close": connect_close,
    "strangers": strangers,
}


def churn(
    targets: list[Port], *, seconds: float = CHURN_SECONDS, patterns: dict[str, Pattern] = PATTERNS
) -> dict[str, dict[str, int]]:
    """Run every pattern on every port, all ports at once, each pattern for ``seconds``.

    Returns:
        ``{port label: {pattern: rounds}}``.
    """
    done: dict[str, dict[str, int]] = {port.label: {} for port in targets}
    errors: list[str] = []

    def run(port: Port) -> None:
        ctx: zmq.Context[Any] = zmq.Context()
        try:
            for name, pattern in patterns.items():
                done[port.label][name] = pattern(ctx, port, time.monotonic() + seconds)
        except zmq.ZMQError as exc:  # the tool must not hide its own failure
            errors.append(f"{port.label}: {exc}")
        finally:
            ctx.destroy(linger=0)

    threads = [threading.Thread(target=run, args=(port,), daemon=True) for port in targets]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + len(patterns) * seconds + 30.0
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    stuck = [port.label for port, t in zip(targets, threads, strict=True) if t.is_alive()]
    assert ([], []) == (errors, stuck)
    return done


# -- checks ---------------------------------------------------------------------------------


def dead_children(cluster: LocalCluster) -> dict[str, str]:
    """``{name: how it ended and its last assertion or log line}`` of children that exited."""
    dead = {}
    for name, child in cluster.children.items():
        if child.proc is None or child.proc.poll() is None:
            continue
        log = cluster.log_dir / f"{name}.log"
        lines = log.read_text("utf-8", "replace").splitlines() if log.exists() else []
        said = [line for line in lines if "Assertion" in line] or lines[-1:]
        dead[name] = f"{exit_text(child.proc.returncode)}: {said[-1] if said else ''}"
    return dead


def client_edit_succeeds(cluster: LocalCluster, folder: Path) -> bool:
    """A new client signs up, creates a list, adds an item and syncs it: True if the sync
    is acknowledged."""
    store: ClientStore[ShoppingList] = ClientStore(folder / "client.sqlite", ShoppingList)
    client = Client(
        store,
        cluster.layout.frontends,
        broker_key=cluster.broker_key,
        config=ClientConfig(request_timeout=2.0),
    )
    try:
        client.sign_up(f"churn-{uuid.uuid4().hex[:8]}", "correct horse battery")
        list_id = client.create("After the churn")
        client.edit(list_id, lambda s, r: s.add_item(r, "milk", 2))
        outcome = client.sync([list_id])
        return bool(outcome.ok) and client.queued(list_id) == 0
    finally:
        client.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Two brokers and three servers, started once for the module and stopped by pid."""
    data = tmp_path_factory.mktemp("churn")
    with LocalCluster(
        data, layout=LocalLayout("127.0.0.1", free_base_port()), timing=TIMING
    ) as running:
        running.start()
        yield running


@pytest.mark.timeout(180)
def test_churn_on_every_port_kills_no_process(cluster: LocalCluster, tmp_path: Path) -> None:
    """Same-id DEALER pairs, request floods closed with linger 0, plain connect-close and
    strangers without keys, on every port at once: afterwards every process is running,
    the brokers hold every server live, every server answers, and a client's edit syncs."""
    targets = ports(cluster)
    rounds = churn(targets)
    assert all(all(n > 0 for n in by.values()) for by in rounds.values()), rounds
    assert {} == dead_children(cluster), rounds
    cluster.wait_for_servers(cluster.servers, timeout=DEADLINE)
    statuses = [cluster.server_status(s, timeout=2.0) for s in cluster.servers]
    assert cluster.servers == [s.server if isinstance(s, ServerStatus) else None for s in statuses]
    assert client_edit_succeeds(cluster, tmp_path)


# -- memory bounds on the client port ------------------------------------------------------


def vm_kib(pid: int, field: str) -> int:
    """A ``Vm...`` line of ``/proc/PID/status``, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def send_frames(port: Port, *, sockets: int, frames: int, size: int, timeout: float) -> int:
    """From ``sockets`` DEALERs (with a client's keys), send ``frames`` frames of ``size``
    bytes each, all at once, then a status request on each, and read until each has its
    status answer (the broker then read every frame before it) or ``timeout`` passes.
    Returns how many sockets got their answer."""
    ctx: zmq.Context[Any] = zmq.Context()
    payload = b"\0" * size  # one buffer for every frame: ZeroMQ sends it without copies
    try:
        socks = [_dealer(ctx, port) for _ in range(sockets)]
        for sock in socks:
            sock.setsockopt(zmq.SNDHWM, frames + 2)
            sock.connect(port.endpoint)
            for _ in range(frames):
                sock.send(payload, copy=False)
            sock.send(encode(Status("after the frames")))
        answered = 0
        deadline = time.monotonic() + timeout
        for sock in socks:
            while (left := deadline - time.monotonic()) > 0 and sock.poll(int(left * 1000)):
                with contextlib.suppress(MalformedMessage):
                    if isinstance(decode(sock.recv()), BrokerStatus):
                        answered += 1
                        break
        return answered
    finally:
        ctx.destroy(linger=0)


TRANSIENT_MIB = 96
"""What a broker may hold beyond its queues while frames arrive: per connection the frame
being read, its decrypted copy and the copy the broker reads it into, and the allocator's
slack."""


@pytest.mark.timeout(120)
def test_big_frames_on_the_client_port_stay_within_the_queue_bounds(
    cluster: LocalCluster,
) -> None:
    """Four client connections send 24 MiB frames (above the client port's frame limit):
    the broker's peak resident size does not grow (each is dropped at its header). Then
    they send 6 MiB frames (below it): it grows by less than the four queues may hold,
    ``4 * (CLIENT_HWM + 1) * 6 MiB`` (216 MiB), plus :data:`TRANSIENT_MIB`; with
    ZeroMQ's defaults (1,000 frames of up to 64 MiB per connection) it grew by about
    500 MiB. The broker reads and answers every socket afterwards."""
    front = ports(cluster)[0]
    pid = cluster.pid(front.owner)
    before = vm_kib(pid, "VmHWM")
    above = send_frames(front, sockets=4, frames=8, size=24 * MiB, timeout=DEADLINE)
    grown_above = (vm_kib(pid, "VmHWM") - before) / 1024
    below = send_frames(front, sockets=4, frames=40, size=6 * MiB, timeout=DEADLINE)
    grown = (vm_kib(pid, "VmHWM") - before) / 1024
    queues = 4 * (CLIENT_HWM + 1) * 6
    assert 6 * MiB < CLIENT_MAX_MESSAGE_BYTES < 24 * MiB
    assert (4, 4, True, True) == (
        above,
        below,
        grown_above < 32,
        grown < queues + TRANSIENT_MIB,
    ), (grown_above, grown, queues + TRANSIENT_MIB)


# -- cluster up restarts a child that died ------------------------------------------------


def _read_until(
    proc: subprocess.Popen[bytes], fd: int, marker: bytes, buf: bytearray, timeout: float
) -> str:
    """Read ``fd`` (one of ``proc``'s pipes) into ``buf`` until it holds ``marker``."""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while marker not in buf and (left := deadline - time.monotonic()) > 0:
            if not sel.select(timeout=left):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk
    if marker not in buf:
        raise AssertionError(f"pid {proc.pid} printed no {marker!r} in {timeout:g}s: {buf!r}")
    return buf.decode()


def _pid_of(text: str, name: str) -> int:
    """The pid ``cluster up`` printed for child ``name`` (``  s2  pid 4242 ...``)."""
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 3 and words[:2] == [name, "pid"] and words[2].isdigit():
            return int(words[2])
    raise AssertionError(f"no pid of {name} in {text!r}")


@pytest.mark.timeout(120)
def test_cluster_up_restarts_a_server_killed_with_sigkill(tmp_path: Path) -> None:
    """``cluster up`` restarts a server killed with SIGKILL after a back-off, says which
    child died, how and when it restarts, and the new process answers ``Status``."""
    base = free_base_port()
    home = tmp_path / "home"
    up = subprocess.Popen(
        [sys.executable, "-m", "reference_cluster.cli.shoplist", "cluster", "up", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=cli_env(home, {"SHOPLIST_BASE_PORT": str(base)}),
        cwd=tmp_path,
    )
    assert up.stdout is not None and up.stderr is not None
    out, err = bytearray(), bytearray()
    killed = 0
    try:
        text = _read_until(up, up.stdout.fileno(), b"ready:", out, timeout=60.0)
        killed = _pid_of(text, "s2")
        os.kill(killed, signal.SIGKILL)
        said = _read_until(up, up.stderr.fileno(), b"server s2 restarted", err, timeout=30.0)
        layout = LocalLayout("127.0.0.1", base)
        admin = Security.member(home / "cluster" / "keys", ADMIN)
        secure = _member_dialer(admin, "s2")
        answer = poll(
            lambda: probe(layout.peer(2), Status("up?"), timeout=1.0, secure=secure),
            "the restarted s2 answers",
            timeout=DEADLINE,
        )
        up.send_signal(signal.SIGINT)
        assert 0 == up.wait(timeout=30)
    finally:
        stop_process(up)  # it stops its children by pid
    lines = [line for line in said.splitlines() if line.startswith("server s2")]
    died = re.fullmatch(
        rf"server s2 \(pid {killed}\) was killed by SIGKILL; restarting it in ([0-9.]+) s",
        lines[0] if lines else "",
    )
    restarted = re.fullmatch(r"server s2 restarted \(pid ([0-9]+)\)", lines[-1] if lines else "")
    assert (True, True, 2) == (died is not None, restarted is not None, len(lines)), said
    assert died is not None and restarted is not None
    new_pid = int(restarted.group(1))
    assert (True, True, True) == (
        0.2 <= float(died.group(1)) <= 0.5,  # backoff_delay(0): 0.25 to 0.5 s, rounded
        new_pid != killed,
        isinstance(answer, ServerStatus),
    ), said
