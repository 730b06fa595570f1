"""Attacks on the cluster's links, each against real processes on loopback: an outsider
posing as a server at a broker's back end, reading or changing a server through its peer
end point, and a fake broker on a client's broker port. With CURVE on every link and an
allow-list of member keys (ZAP), none of them gets a message through; the members and a
client that pins the brokers' key go on working.

An attacker knows every public key (they are public) and may bring a CURVE key pair of
its own; it does not know a member's secret key.
"""

from __future__ import annotations

import argparse
import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from reference_cluster.cores.client import ClientConfig
from reference_cluster.errors import ClusterUnavailable, KeysMissing
from reference_cluster.processes import agent
from reference_cluster.processes.client import Client
from reference_cluster.processes.cluster import LocalCluster, free_base_port
from reference_cluster.processes.config import broker_key_argv, broker_key_from_args
from reference_cluster.processes.security import KeyPair, ensure_keys, load_public, parse_public
from reference_cluster.protocol.messages import (
    Announce,
    DirectoryDigest,
    Heartbeat,
    Message,
    Status,
    decode,
    encode,
)
from reference_cluster.shopping_list import ShoppingList
from reference_cluster.storage.client_store import ClientStore

PASSWORD = "correct horse battery"
HANDSHAKE = 5.0  # seconds an attacker's handshake may take to succeed or fail
_DONE = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_DISCONNECTED
)


def attack(
    endpoint: str,
    messages: list[Message],
    *,
    curve_to: bytes | None,
) -> tuple[bool, list[Message]]:
    """Connect to ``endpoint`` as an outsider (in clear, or with a CURVE pair of its own
    that trusts the server key ``curve_to``), send ``messages``, and return whether the
    handshake succeeded and every reply that came within a second of the last send."""
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if curve_to is not None:
            own = KeyPair.new()
            sock.setsockopt(zmq.CURVE_SERVERKEY, curve_to)
            sock.setsockopt(zmq.CURVE_PUBLICKEY, own.public)
            sock.setsockopt(zmq.CURVE_SECRETKEY, own.secret)
        monitor = sock.get_monitor_socket(_DONE)
        sock.connect(endpoint)
        succeeded = False
        if monitor.poll(int(HANDSHAKE * 1000)):
            succeeded = recv_monitor_message(monitor)["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED
        for message in messages:
            sock.send(encode(message), zmq.NOBLOCK)
        replies = []
        while sock.poll(1000):
            replies.append(decode(sock.recv()))
        return succeeded, replies
    except zmq.Again:  # nothing may be queued: no connection ever completed
        return False, []
    finally:
        ctx.destroy(linger=0)


def member_key(cluster: LocalCluster, name: str) -> bytes:
    assert cluster.keys is not None
    return load_public(cluster.keys / "members" / f"{name}.key")


@pytest.mark.parametrize("curve", [False, True], ids=["in clear", "own curve key"])
def test_an_outsider_cannot_register_as_a_server(cluster: LocalCluster, curve: bool) -> None:
    """An outsider that announces itself on a broker's back end (and heartbeats) never
    completes a handshake, so the broker's live servers stay the real ones."""
    endpoint = cluster.layout.backend(0)
    fake = [Announce("s9", 0), Heartbeat("s9")]
    ok, replies = attack(endpoint, fake, curve_to=member_key(cluster, "b0") if curve else None)
    status = cluster.broker_status("b0")
    assert (False, []) == (ok, replies)
    assert status is not None and ("s1", "s2", "s3") == status.servers


@pytest.mark.parametrize("curve", [False, True], ids=["in clear", "own curve key"])
def test_an_outsider_cannot_read_a_server_through_its_peer_end_point(
    cluster: LocalCluster, curve: bool
) -> None:
    """A status request for every state, and a directory digest that differs (which a
    member answers with every account and session), get no answer from a server."""
    endpoint = cluster.layout.peer(1)
    asks = [Status("dump", states=True), DirectoryDigest("s2", "0" * 64)]
    ok, replies = attack(endpoint, asks, curve_to=member_key(cluster, "s1") if curve else None)
    assert (False, []) == (ok, replies)
    assert cluster.server_status("s1") is not None  # a member (the admin key) is answered


def test_a_member_key_is_answered_on_the_peer_end_point(cluster: LocalCluster) -> None:
    """The same status request with the operator's member key is answered: the refusal
    above is about who asks, not about the request."""
    status = cluster.server_status("s1", states=True)
    assert status is not None and "s1" == status.server


def test_a_fake_broker_on_a_clients_port_hears_nothing(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """A process bound where a client looks for a broker (a dead broker's port) never
    receives a frame, so never the password of the login the client tries, and the
    client's login fails cleanly."""
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        fake = ctx.socket(zmq.ROUTER)
        fake.setsockopt(zmq.LINGER, 0)
        own = KeyPair.new()  # the fake's own pair: it cannot have the brokers' secret key
        fake.setsockopt(zmq.CURVE_SERVER, 1)
        fake.setsockopt(zmq.CURVE_SECRETKEY, own.secret)
        port = fake.bind_to_random_port("tcp://127.0.0.1")
        clear = ctx.socket(zmq.ROUTER)  # and one in clear
        clear.setsockopt(zmq.LINGER, 0)
        clear_port = clear.bind_to_random_port("tcp://127.0.0.1")
        store: ClientStore[ShoppingList] = ClientStore(tmp_path / "c.sqlite", ShoppingList)
        client = Client(
            store,
            [f"tcp://127.0.0.1:{port}", f"tcp://127.0.0.1:{clear_port}"],
            broker_key=cluster.broker_key,
            config=ClientConfig(request_timeout=0.5, max_attempts=2),
        )
        try:
            with pytest.raises(ClusterUnavailable):
                client.log_in(f"victim-{uuid.uuid4().hex[:6]}", PASSWORD, timeout=3.0)
        finally:
            client.close()
        heard = [fake.poll(0), clear.poll(0)]
    finally:
        ctx.destroy(linger=0)
    assert [0, 0] == heard


def test_a_client_that_pins_the_key_works(cluster: LocalCluster, tmp_path: Path) -> None:
    """A client with the brokers' public key signs up, creates a list and syncs it."""
    store: ClientStore[ShoppingList] = ClientStore(tmp_path / "c.sqlite", ShoppingList)
    client = Client(store, cluster.layout.frontends, broker_key=cluster.broker_key)
    try:
        client.sign_up(f"pinned-{uuid.uuid4().hex[:6]}", PASSWORD)
        list_id = client.create("Keys")
        client.edit(list_id, lambda s, r: s.add_item(r, "lock"))
        outcome = client.sync([list_id])
    finally:
        client.close()
    assert (True, {}) == (outcome.ok, outcome.failed)


def _run(module: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", f"reference_cluster.processes.{module}", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if not k.startswith("SHOPLIST_")} | env,
        check=False,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("module", ["broker", "server"])
def test_a_process_without_keys_refuses_to_start(module: str, tmp_path: Path) -> None:
    """A broker or server given no key folder exits 1 with one line that names the missing
    file and the command that makes the keys; it never serves in clear by default."""
    flags = ["--keys", str(tmp_path / "keys")]
    flags += ["--data-dir", str(tmp_path)] if module == "server" else []
    run = _run(module, *flags, env={"SHOPLIST_BASE_PORT": str(free_base_port())})
    lines = run.stderr.strip().splitlines()
    assert (1, 1) == (run.returncode, len(lines)), run.stderr
    assert "shoplist cluster keys" in lines[0] and str(tmp_path / "keys") in lines[0]


def test_insecure_mode_is_loud(tmp_path: Path) -> None:
    """A broker started with --insecure says so in its log before it serves."""
    base = free_base_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "reference_cluster.processes.broker", "--insecure"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if not k.startswith("SHOPLIST_")}
        | {"SHOPLIST_BASE_PORT": str(base)},
    )
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert ready.startswith(b"READY ") and b'"secure": false' in ready
    assert b"INSECURE MODE" in err


def test_keys_are_made_once_and_kept_private(tmp_path: Path) -> None:
    """``ensure_keys`` makes a pair per member and the front end, secret files 0600 in a
    0700 folder; a second call keeps every key and makes nothing."""
    keys = tmp_path / "keys"
    made = ensure_keys(keys, ["b0", "s1"])
    first = {p.name: p.read_bytes() for p in keys.rglob("*") if p.is_file()}
    again = ensure_keys(keys, ["b0", "s1"])
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (keys / "private").iterdir()}
    assert (["frontend", "b0", "s1"], []) == (made, again)
    assert first == {p.name: p.read_bytes() for p in keys.rglob("*") if p.is_file()}
    assert {0o600} == set(modes.values()) and 0o700 == stat.S_IMODE(
        (keys / "private").stat().st_mode
    )


@pytest.mark.parametrize("text", ["", "short", "x" * 39 + '"', "tcp://127.0.0.1:7100"])
def test_a_malformed_public_key_is_refused_clearly(text: str) -> None:
    """Anything but 40 Z85 characters of a 32-byte key raises ValueError saying what a
    key looks like."""
    with pytest.raises(ValueError, match="40 Z85 characters"):
        parse_public(text, "--broker-key")


def test_the_broker_key_comes_from_a_flag_a_file_or_the_home_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client's key: the flag's Z85 text, or the file it names, or the default file;
    nothing at all is KeysMissing naming where to look; --insecure is None."""
    for var in ("SHOPLIST_BROKER_KEY", "SHOPLIST_INSECURE"):
        monkeypatch.delenv(var, raising=False)
    keys = tmp_path / "keys"
    ensure_keys(keys, [])
    public = load_public(keys / "frontend.key")

    def key(*, home: bool = False, **given: Any) -> bytes | None:
        args = argparse.Namespace(**{"broker_key": None, "insecure": False, **given})
        return broker_key_from_args(args, keys / "frontend.key" if home else None)

    found = [
        key(broker_key=public.decode()),
        key(broker_key=str(keys / "frontend.key")),
        key(home=True),
        key(insecure=True),
    ]
    assert [public, public, public, None] == found
    with pytest.raises(KeysMissing, match="--broker-key"):
        key()


@pytest.mark.parametrize("first", ["-", "a"])
def test_a_key_that_starts_with_a_dash_reaches_the_agent(
    first: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flag the launcher gives a client agent parses back to the key, also when the
    key's first Z85 character is ``-`` (which argparse takes for a flag when the key is a
    separate argument)."""
    monkeypatch.delenv("SHOPLIST_INSECURE", raising=False)
    key = (first + "a" * 39).encode()
    args = agent._parser().parse_args(["--store", "x", *broker_key_argv(key)])
    assert key == broker_key_from_args(args, None)
