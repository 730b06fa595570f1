"""The demo's link proxy relays bytes, cuts links and heals them."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from cluster_harness import poll

from reference_cluster.processes.linkproxy import LinkProxy


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A loopback echo server on a free port, stopped after the test."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    def echo(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                while data := conn.recv(4096):
                    conn.sendall(data)
            except OSError:
                return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    server.close()
    thread.join(timeout=5)


def round_trip(port: int, payload: bytes) -> bytes | None:
    """Send ``payload`` through ``port``; the echo, or None if the link is down."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.settimeout(1)
            s.sendall(payload)
            got = b""
            while len(got) < len(payload):
                chunk = s.recv(4096)
                if not chunk:
                    return None
                got += chunk
            return got
    except OSError:
        return None


def test_relays_bytes_both_ways(echo_port: int) -> None:
    """Bytes sent to the proxy come back from the echo server behind it."""
    proxy = LinkProxy(echo_port)
    try:
        assert b"hello" * 1000 == round_trip(proxy.port, b"hello" * 1000)
    finally:
        proxy.close()


def test_cut_drops_traffic_and_heal_restores_it(echo_port: int) -> None:
    """A cut link carries nothing; after heal it carries traffic again."""
    proxy = LinkProxy(echo_port)
    try:
        proxy.cut()
        assert proxy.is_cut
        assert round_trip(proxy.port, b"x") is None
        proxy.heal()
        poll(lambda: round_trip(proxy.port, b"y") == b"y", "the healed link", timeout=5)
    finally:
        proxy.close()


def test_cut_drops_an_open_connection(echo_port: int) -> None:
    """A connection open across a cut is closed by the proxy."""
    proxy = LinkProxy(echo_port)
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=1) as s:
            s.sendall(b"a")
            assert b"a" == s.recv(1)
            proxy.cut()
            s.settimeout(2)

            def closed() -> bool:
                try:
                    s.sendall(b"b")
                    return s.recv(1) == b""  # end of stream: closed
                except TimeoutError:  # silent, not closed: a proxy that drops bytes
                    return False
                except OSError:  # reset or broken pipe: closed
                    return True

            poll(closed, "the proxy closing the connection", timeout=5)
    finally:
        proxy.close()
