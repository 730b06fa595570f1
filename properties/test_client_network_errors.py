"""The client when the network is wrong: a broker endpoint that is not one, brokers that
refuse connections, a broker that comes up late, and a broker that is up but silent.

Every broker here is either nothing at all (a port nobody listens on) or a ROUTER socket
the test owns on 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from reference_cluster.cores.client import ClientConfig
from reference_cluster.errors import ClusterUnavailable
from reference_cluster.processes.client import Client
from reference_cluster.processes.cluster import probe
from reference_cluster.protocol.messages import BrokerStatus, Status, decode, encode
from reference_cluster.shopping_list import ShoppingList
from reference_cluster.storage.client_store import ClientStore

FAST = ClientConfig(request_timeout=0.3, backoff_base=0.05, backoff_cap=0.2)


def dead_endpoint() -> str:
    """A loopback endpoint nobody listens on (a port just bound and released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"tcp://127.0.0.1:{port}"


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[Any]:
    """Makes clients on fresh stores and closes them after the test."""
    made: list[Client] = []

    def make(*brokers: str) -> Client:
        store: ClientStore[ShoppingList] = ClientStore(
            tmp_path / f"c{len(made)}.sqlite", ShoppingList
        )
        client = Client(store, brokers, broker_key=None, config=FAST)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


class FakeBroker:
    """A ROUTER on a loopback port that answers every status request (after ``start``),
    from a thread that stops when the test closes it."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _serve(self) -> None:
        ctx: zmq.Context[Any] = zmq.Context()
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.bind(self.endpoint)
            deadline = time.monotonic() + 30.0
            while not self._stop.is_set() and time.monotonic() < deadline:
                if not sock.poll(50):
                    continue
                peer, data = sock.recv_multipart()
                msg = decode(data)
                if isinstance(msg, Status):
                    reply = BrokerStatus(msg.request_id, "fake", ())
                    sock.send_multipart([peer, encode(reply)])
        finally:
            sock.close()
            ctx.term()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10.0)


def ask_status(client: Client, timeout: float) -> Any:
    return client.request(lambda _attempt: Status("x1"), timeout=timeout)


# -- endpoints that are not endpoints -----------------------------------------------------

_BAD_ENDPOINT_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from reference_cluster.processes.client import Client
    from reference_cluster.protocol.messages import Status
    from reference_cluster.shopping_list import ShoppingList
    from reference_cluster.storage.client_store import ClientStore

    client = Client(ClientStore(sys.argv[1], ShoppingList), [sys.argv[2]], broker_key=None)
    try:
        try:
            client.request(lambda _a: Status("x1"), timeout=2.0)
            answer = {"raised": None}
        finally:
            client.close()  # as the command line does: while the error is in flight
    except Exception as exc:
        answer = {"raised": type(exc).__name__, "value_error": isinstance(exc, ValueError),
                  "message": str(exc)}
    print(json.dumps(answer))
    """
)


@pytest.mark.parametrize(
    ("endpoint", "hint"),
    [
        ("127.0.0.1:7100", "(did you mean tcp://127.0.0.1:7100?)"),
        ("localhost:7100", "(did you mean tcp://localhost:7100?)"),
        ("nonsense", "got 'nonsense'"),
        ("tcp://127.0.0.1:99999", "a port from 1 to 65535"),
    ],
)
def test_a_bad_broker_endpoint_fails_at_once_and_close_returns(
    tmp_path: Path, endpoint: str, hint: str
) -> None:
    """A broker endpoint that is not one raises a ValueError naming it, and closing the
    client afterwards returns (no socket is left open to block the context)."""
    done = subprocess.run(
        [sys.executable, "-c", _BAD_ENDPOINT_SCRIPT, str(tmp_path / "c.sqlite"), endpoint],
        capture_output=True,
        text=True,
        timeout=15.0,  # a hang fails the test; subprocess kills the child
        check=False,
        stdin=subprocess.DEVNULL,
    )
    answer = json.loads(done.stdout)
    assert (0, True, True, True) == (
        done.returncode,
        answer["value_error"],
        answer["message"].startswith("bad broker endpoint: expected "),
        hint in answer["message"] and repr(endpoint) in answer["message"],
    ), answer


def test_probe_refuses_a_bad_endpoint_without_leaking_its_socket() -> None:
    """probe() given a bad endpoint raises a ValueError naming it; its context then
    terminates (nothing left open)."""
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        with pytest.raises(ValueError) as info:
            probe("nonsense", Status("p1"), timeout=0.5, ctx=ctx)
    finally:
        ctx.term()
    assert "expected a ZeroMQ endpoint such as tcp://127.0.0.1:7100, got 'nonsense'" in str(
        info.value
    )


# -- failing fast when no broker can be reached -------------------------------------------


@pytest.mark.timeout(60)
def test_a_request_to_refusing_brokers_fails_fast(make_client: Any) -> None:
    """With every broker refusing connections, a request gives up within about a second
    (not its whole timeout), saying that no broker is reachable and why."""
    a, b = dead_endpoint(), dead_endpoint()
    client = make_client(a, b)
    started = time.monotonic()
    with pytest.raises(ClusterUnavailable) as info:
        ask_status(client, timeout=5.0)
    elapsed = time.monotonic() - started
    expected = f"no broker is reachable at {a}, {b} (connection refused)"
    assert (expected, True) == (str(info.value), elapsed < 2.5), elapsed


@pytest.mark.timeout(60)
def test_a_sync_with_refusing_brokers_gives_up_as_unreachable(make_client: Any) -> None:
    """With every broker refusing connections, a sync gives up its lists within about a
    second with the reason ``unreachable``; the edits stay queued."""
    client = make_client(dead_endpoint(), dead_endpoint())
    list_id = client.create("Groceries")
    started = time.monotonic()
    outcome = client.sync(timeout=5.0)
    elapsed = time.monotonic() - started
    assert ({list_id: "unreachable"}, 1, True) == (
        outcome.failed,
        client.queued(list_id),
        elapsed < 2.5,
    ), elapsed


@pytest.mark.timeout(60)
def test_a_broker_that_comes_up_during_the_wait_is_used(make_client: Any) -> None:
    """A broker that refuses at first and listens a moment later answers the request."""
    endpoint = dead_endpoint()
    client = make_client(endpoint)
    broker = FakeBroker(endpoint)
    timer = threading.Timer(0.15, broker.start)
    try:
        timer.start()
        reply = ask_status(client, timeout=5.0)
    finally:
        timer.cancel()
        timer.join(timeout=5.0)
        broker.close()
    assert isinstance(reply, BrokerStatus)


@pytest.fixture
def silent_broker() -> Iterator[str]:
    """A ROUTER on a loopback port that takes connections and never answers."""
    ctx: zmq.Context[Any] = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        port = sock.bind_to_random_port("tcp://127.0.0.1")
        yield f"tcp://127.0.0.1:{port}"
    finally:
        sock.close()
        ctx.term()


@pytest.mark.timeout(60)
def test_a_silent_broker_gets_the_whole_timeout(make_client: Any, silent_broker: str) -> None:
    """A broker that is up but does not answer (beside one that refuses) gets the whole
    timeout, and the message names that one time and the last try."""
    client = make_client(silent_broker, dead_endpoint())
    started = time.monotonic()
    with pytest.raises(ClusterUnavailable) as info:
        ask_status(client, timeout=1.5)
    elapsed = time.monotonic() - started
    message = str(info.value)
    assert (True, True) == (
        message.startswith("the cluster did not answer within 1.5s (last try: tcp://"),
        elapsed >= 1.5,
    ), (message, elapsed)


@pytest.mark.timeout(60)
def test_a_sync_through_a_silent_broker_times_out(make_client: Any, silent_broker: str) -> None:
    """A sync through a broker that is up but silent is given up as ``timeout`` after
    the whole timeout, not as ``unreachable``."""
    client = make_client(silent_broker)
    list_id = client.create("Groceries")
    started = time.monotonic()
    outcome = client.sync(timeout=1.5)
    elapsed = time.monotonic() - started
    assert ({list_id: "timeout"}, True) == (outcome.failed, elapsed >= 1.5)
