"""The real-partition harness, tested with tiny echo processes in a network namespace:
connected, cut (requests time out), healed (they work again), and cleaned up."""

from __future__ import annotations

import os
import selectors
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from netns import Host, Namespace, namespace_or_skip, remove_stale, unavailable_reason

# An echo server: answers each connection's first chunk with the same bytes.
TCP_ECHO = """
import socket, sys, threading
def serve(conn):
    with conn:
        conn.settimeout(5.0)
        try:
            conn.sendall(conn.recv(1024))
        except OSError:
            pass
srv = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("listening", flush=True)
while True:
    conn, _ = srv.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""

# A prober: for each stdin line "SRC DST PORT", connects from SRC to DST:PORT, sends a
# ping and prints ok / timeout / error. Ends at end of input.
TCP_PROBER = """
import socket, sys
for line in sys.stdin:
    src, dst, port = line.split()
    try:
        with socket.socket() as s:
            s.settimeout(float(sys.argv[1]))
            s.bind((src, 0))
            s.connect((dst, int(port)))
            s.sendall(b"ping")
            print("ok" if s.recv(16) == b"ping" else "bad", flush=True)
    except TimeoutError:
        print("timeout", flush=True)
    except OSError as exc:
        print("error", exc.errno, flush=True)
"""

# A ZeroMQ echo (ROUTER) and a DEALER prober that connects from its own host with the
# source-address endpoint form; each stdin line is one request, matched by its id.
ZMQ_ECHO = """
import sys, zmq
sock = zmq.Context().socket(zmq.ROUTER)
sock.bind(sys.argv[1])
print("listening", flush=True)
while True:
    sock.send_multipart(sock.recv_multipart())
"""

ZMQ_PROBER = """
import sys, time, zmq
sock = zmq.Context().socket(zmq.DEALER)
sock.setsockopt(zmq.LINGER, 0)
sock.connect(sys.argv[1])
for n, line in enumerate(sys.stdin):
    sock.send(str(n).encode())
    deadline = time.monotonic() + float(sys.argv[2])
    answer = "timeout"
    while (left := deadline - time.monotonic()) > 0 and sock.poll(int(left * 1000) + 1):
        if sock.recv() == str(n).encode():
            answer = "ok"
            break
    print(answer, flush=True)
"""

PROBE_TIMEOUT = 0.5


@pytest.fixture
def ns() -> Iterator[Namespace]:
    """A fresh namespace, deleted after the test (skips where namespaces cannot work)."""
    with namespace_or_skip("rc-test") as namespace:
        yield namespace


def read_line(proc: subprocess.Popen[Any], timeout: float) -> str:
    """The next line a child prints, waiting at most ``timeout`` seconds."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while b"\n" not in buf and (left := deadline - time.monotonic()) > 0:
            if sel.select(timeout=left):
                chunk = os.read(fd, 1)
                if not chunk:
                    break
                buf += chunk
    if not buf.endswith(b"\n"):
        raise AssertionError(f"no line from pid {proc.pid} within {timeout}s (got {buf!r})")
    return buf.decode().strip()


def ask(prober: subprocess.Popen[Any], line: str) -> str:
    """Send one request line to a prober and return its one-line answer."""
    assert prober.stdin is not None
    prober.stdin.write(line.encode() + b"\n")
    prober.stdin.flush()
    return read_line(prober, timeout=PROBE_TIMEOUT + 10.0)


def spawn_python(ns: Namespace, code: str, *args: str, **kw: Any) -> subprocess.Popen[Any]:
    """Start ``python -c code args`` in the namespace with pipes for stdin and stdout."""
    return ns.spawn(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        **kw,
    )


def test_reason_names_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the iptables commands the harness says so instead of failing."""
    real_which = shutil.which
    monkeypatch.setattr(
        shutil,
        "which",
        lambda name: None if name.startswith("iptables") else real_which(name),
    )
    reason = unavailable_reason()
    if sys.platform.startswith("linux") and real_which("ip") is not None:
        assert reason is not None and "iptables is missing" in reason
    else:
        assert reason is not None


def test_tcp_echo_connected_cut_and_healed(ns: Namespace) -> None:
    """Between groups of a partition requests time out both ways, within a group and
    after healing they succeed."""
    a, b, c = ns.host("a"), ns.host("b"), ns.host("c")
    ports = {a: 7001, b: 7002, c: 7003}
    for host, port in ports.items():
        server = spawn_python(ns, TCP_ECHO, host.address, str(port), host=host, ports=[port])
        assert "listening" == read_line(server, timeout=20.0)
    prober = spawn_python(ns, TCP_PROBER, str(PROBE_TIMEOUT))

    pairs = [(src, dst) for src in ports for dst in ports if src != dst]
    everything_ok = {(src.name, dst.name): "ok" for src, dst in pairs}

    def matrix(expected: dict[tuple[str, str], str]) -> dict[tuple[str, str], str]:
        # A cut link can never answer "ok", so a link expected to work may be asked again
        # (a loaded machine can be slow) without weakening the check.
        answers = {}
        for src, dst in pairs:
            line = f"{src.address} {dst.address} {ports[dst]}"
            if expected[(src.name, dst.name)] == "ok":
                answers[(src.name, dst.name)] = ask_until_ok(prober, line, timeout=10.0)
            else:
                answers[(src.name, dst.name)] = ask(prober, line)
        return answers

    assert everything_ok == matrix(everything_ok)

    ns.partition([[7001, 7003], [b]])
    cut = {("a", "b"), ("b", "a"), ("c", "b"), ("b", "c")}
    expected = {pair: "timeout" if pair in cut else "ok" for pair in everything_ok}
    assert expected == matrix(expected)
    assert (4, {frozenset("ab"), frozenset("bc")}) == (len(ns.rules()), set(ns.cuts))

    ns.heal()
    assert ([], everything_ok) == (ns.rules(), matrix(everything_ok))

    ns.cut(a, c)
    expected = {pair: "timeout" if set(pair) == {"a", "c"} else "ok" for pair in everything_ok}
    assert expected == matrix(expected)


def test_zmq_connections_from_a_host_endpoint_are_cut_and_recover(ns: Namespace) -> None:
    """A DEALER connecting with the host's source endpoint loses its requests while cut
    and gets answers again after healing, on the same connection."""
    pytest.importorskip("zmq")
    server, client = ns.host("server"), ns.host("client")
    echo = spawn_python(ns, ZMQ_ECHO, server.endpoint(7100), host=server, ports=[7100])
    assert "listening" == read_line(echo, timeout=20.0)
    prober = spawn_python(
        ns, ZMQ_PROBER, client.connect_endpoint(server, 7100), str(PROBE_TIMEOUT), host=client
    )
    assert "ok" == ask_until_ok(prober, "first", timeout=30.0)
    ns.partition([[server], [client]])
    assert "timeout" == ask(prober, "during the cut")
    ns.heal()
    assert "ok" == ask_until_ok(prober, "after healing", timeout=30.0)


def ask_until_ok(prober: subprocess.Popen[Any], line: str, timeout: float) -> str:
    """Ask until the answer is ok or ``timeout`` seconds passed; return the last answer."""
    deadline = time.monotonic() + timeout
    answer = ask(prober, line)
    for _ in range(200):
        if answer == "ok" or time.monotonic() > deadline:
            break
        answer = ask(prober, line)
    return answer


def test_partition_arguments_are_checked(ns: Namespace) -> None:
    """Hosts in two groups, unknown ports, foreign hosts and self-cuts are refused."""
    a, b = ns.host("a"), ns.host("b")
    with pytest.raises(ValueError, match="two groups"):
        ns.partition([[a, b], [b]])
    with pytest.raises(KeyError, match="declared port 9999"):
        ns.partition([[a], [9999]])
    with pytest.raises(ValueError, match="does not belong"):
        ns.partition([[a], [Host("x", "127.0.0.99")]])
    with pytest.raises(ValueError, match="from itself"):
        ns.cut(a, a)
    assert ("127.0.0.2", "tcp://127.0.0.2:0;127.0.0.3:5") == (
        a.address,
        a.connect_endpoint(b, 5),
    )


def test_close_stops_processes_and_deletes_the_namespace_when_a_test_fails() -> None:
    """Leaving the block by an exception stops the processes started there, a grandchild
    left inside the namespace, and deletes the namespace."""
    idle = "import signal; signal.pause()"
    parent = (
        "import subprocess, sys\n"
        f"child = subprocess.Popen([sys.executable, '-c', {idle!r}])\n"
        "print(child.pid, flush=True)\n"
        "child.wait()\n"
    )
    procs: list[subprocess.Popen[Any]] = []
    grandchild = 0
    with pytest.raises(RuntimeError, match="the test failed"), namespace_or_skip("rc-test") as ns:
        procs.append(spawn_python(ns, idle))
        procs.append(spawn_python(ns, parent))
        grandchild = int(read_line(procs[-1], timeout=20.0))
        raise RuntimeError("the test failed")
    assert not ns.exists()
    assert [p.returncode is not None for p in procs] == [True, True]
    deadline = time.monotonic() + 10.0
    while is_running(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)  # poll: the orphan is reaped by init
    assert not is_running(grandchild)


def is_running(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_a_namespace_left_by_a_killed_run_is_removed(ns: Namespace) -> None:
    """A namespace whose creator is gone and which holds no process is deleted; the live
    one of this test is kept."""
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    stale = f"rc-test-{gone.stdout.strip()}-abcdef"
    subprocess.run(["ip", "netns", "add", stale], check=True, timeout=30)
    try:
        assert [stale] == remove_stale("rc-test")
        assert ns.exists()
    finally:
        subprocess.run(
            ["ip", "netns", "delete", stale], check=False, capture_output=True, timeout=30
        )
