"""A flood of parallel wrong-password logins against a real cluster: password hashing runs
in each server's bounded worker pool, off its event loop, so heartbeats keep flowing, no
broker ever purges a server, and edits keep succeeding while the flood lasts.

The cluster hashes at the current guidance (scrypt N=2**17, 128 MiB) and the brokers'
per-source login limit is lifted, so that the flood reaches the servers' pools.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from reference_cluster.cores.client import ClientConfig
from reference_cluster.processes.client import Client
from reference_cluster.processes.cluster import LocalCluster, Timing, free_base_port
from reference_cluster.processes.config import LocalLayout
from reference_cluster.protocol.messages import LogIn, decode, encode
from reference_cluster.shopping_list import ShoppingList
from reference_cluster.storage.client_store import ClientStore

TIMING = Timing(heartbeat=0.25, anti_entropy=0.5, liveness=1.0, zmq_heartbeat=0.5)
PASSWORD = "correct horse battery"
FLOOD_SECONDS = 4.0
IN_FLIGHT = 40


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalCluster]:
    """Two brokers and three servers hashing at the guidance, stopped by pid after the test."""
    monkeypatch.setenv("SHOPLIST_SCRYPT_N", str(2**17))
    monkeypatch.setenv("SHOPLIST_LOGINS_PER_MINUTE", "1000000")
    layout = LocalLayout("127.0.0.1", free_base_port())
    with LocalCluster(tmp_path / "cluster", layout=layout, timing=TIMING) as running:
        running.start()
        yield running


class Flood:
    """Keeps ``IN_FLIGHT`` wrong-password logins outstanding at the brokers (a new one as
    each answer arrives) for ``FLOOD_SECONDS``, from a thread; counts the answers."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.sent = 0
        self.answers: dict[str, int] = {}
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        ctx: zmq.Context[Any] = zmq.Context()
        try:
            socks = []
            for i, endpoint in enumerate(self.cluster.layout.frontends):
                sock = ctx.socket(zmq.DEALER)
                sock.setsockopt(zmq.LINGER, 0)
                self.cluster.dialer(self.cluster.brokers[i])(sock)
                sock.connect(endpoint)
                socks.append(sock)
            poller = zmq.Poller()
            for sock in socks:
                poller.register(sock, zmq.POLLIN)
            counter = itertools.count()

            def send(sock: zmq.Socket[Any]) -> None:
                n = next(counter)
                name = f"nobody{n % 1000:03d}x{uuid.uuid4().hex[:6]}"
                sock.send(encode(LogIn(f"flood.{n}", name, f"wrong password {n}")))
                self.sent += 1

            for i in range(IN_FLIGHT):
                send(socks[i % len(socks)])
            end = time.monotonic() + FLOOD_SECONDS
            while time.monotonic() < end and self.sent < 1_000_000:
                for sock, _ in poller.poll(100):
                    for _ in range(IN_FLIGHT):
                        try:
                            reply = decode(sock.recv(zmq.NOBLOCK))
                        except zmq.Again:
                            break
                        code = getattr(reply, "code", reply.kind)
                        self.answers[code] = self.answers.get(code, 0) + 1
                        send(sock)
        finally:
            ctx.destroy(linger=0)


def test_a_login_flood_keeps_every_server_live_and_edits_working(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """During a flood of 40 parallel wrong-password logins every broker keeps every server
    in its live list, and a user's edits still sync."""
    store: ClientStore[ShoppingList] = ClientStore(tmp_path / "alice.sqlite", ShoppingList)
    alice = Client(
        store,
        cluster.layout.frontends,
        broker_key=cluster.broker_key,
        config=ClientConfig(request_timeout=2.0),
    )
    try:
        alice.sign_up(f"alice-{uuid.uuid4().hex[:6]}", PASSWORD, timeout=20.0)
        list_id = alice.create("Groceries")
        assert alice.sync([list_id]).ok
        flood = Flood(cluster)
        seen: list[tuple[str, tuple[str, ...] | None]] = []

        def watch() -> None:
            for _ in range(1000):
                if not flood.thread.is_alive():
                    return
                for b in cluster.brokers:
                    status = cluster.broker_status(b, timeout=1.0)
                    seen.append((b, None if status is None else status.servers))
                time.sleep(0.05)

        watcher = threading.Thread(target=watch, daemon=True)
        flood.thread.start()
        watcher.start()
        synced = []
        for _ in range(3):
            alice.edit(list_id, lambda s, r: s.add_item(r, "milk"))
            synced.append(alice.sync([list_id], timeout=FLOOD_SECONDS / 3).ok)
        flood.thread.join(timeout=FLOOD_SECONDS + 10)
        watcher.join(timeout=10)
    finally:
        alice.close()
    purged = [(b, servers) for b, servers in seen if servers != ("s1", "s2", "s3")]
    assert ([], [True, True, True]) == (purged, synced), flood.answers
    assert len(seen) >= 10 and flood.sent > IN_FLIGHT, (len(seen), flood.sent)
