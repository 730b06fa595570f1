"""The client shell keeps its core to what the store holds: an edit that fails to save is
neither kept nor sent, and a forgotten list comes back with its dots."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest

from crdts import Dot
from reference_cluster.cores.client import ClientConfig
from reference_cluster.errors import StoreError
from reference_cluster.processes.client import Client
from reference_cluster.protocol.effects import Send
from reference_cluster.protocol.messages import SyncRequest
from reference_cluster.shopping_list import ShoppingList
from reference_cluster.storage.client_store import ClientStore

BROKERS = ("tcp://127.0.0.1:9", "tcp://127.0.0.1:10")  # never connected: sends are captured
FAST = ClientConfig(
    request_timeout=0.01, max_attempts=3, backoff_base=0.01, backoff_cap=0.01, sync_interval=60.0
)


def open_client(path: Path, *, offline: bool = False) -> Client:
    return Client(
        ClientStore(path, ShoppingList),
        BROKERS,
        broker_key=None,
        config=FAST,
        offline=offline,
        rng=random.Random(7),
    )


def capture_sends(client: Client, monkeypatch: pytest.MonkeyPatch) -> list[Send]:
    """Record what the client hands to its sockets instead of sending it."""
    sent: list[Send] = []
    monkeypatch.setattr(client, "_send", sent.append)
    return sent


def fail_next_save(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the store's next save_edit raise StoreError (a full disk), then work again."""
    real = client.store.save_edit
    calls = []

    def save_edit(list_id: str, seq: int, delta: ShoppingList) -> None:
        calls.append(seq)
        if len(calls) == 1:
            raise StoreError(f"{client.store.path}: client store edit failed: disk is full")
        real(list_id, seq, delta)

    monkeypatch.setattr(client.store, "save_edit", save_edit)


def add(item: str) -> Callable[[ShoppingList, str], ShoppingList]:
    return lambda s, r: s.add_item(r, item)


def sent_deltas(sent: list[Send]) -> list[ShoppingList]:
    return [
        ShoppingList.from_dict(s.message.delta)
        for s in sent
        if isinstance(s.message, SyncRequest) and s.message.delta is not None
    ]


def test_an_edit_that_fails_to_save_is_neither_kept_nor_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An edit whose save raises leaves the client as the store is: not in the state or
    the queue, never sent (not even by a retry), and its dot is the next edit's."""
    client = open_client(tmp_path / "c.db")
    sent = capture_sends(client, monkeypatch)
    list_id = client.create("Groceries")
    assert client.run(lambda: not client.core.busy, 5.0)  # the push is given up
    fail_next_save(client, monkeypatch)
    with pytest.raises(StoreError, match="disk is full"):
        client.edit(list_id, add("milk"))
    durable = client.store.load(list_id)
    assert (durable, 1, 2) == (
        client.state(list_id),
        client.queued(list_id),
        client.core.next_seq(list_id),
    )
    client.run(lambda: False, 0.2)  # any timeout or retry of the failed edit's request
    delta = client.edit(list_id, add("eggs"))
    replica = client.replica
    assert [Dot(replica, 2)] == list(delta.context.dots())
    durable = client.store.load(list_id)
    assert durable is not None
    assert [True] * len(sent_deltas(sent)) == [d <= durable for d in sent_deltas(sent)]
    assert ({"eggs"}, 2) == (set(durable.items), client.queued(list_id))
    expected = (durable, 2, 3)
    assert expected == (
        client.state(list_id),
        client.queued(list_id),
        client.core.next_seq(list_id),
    )
    client.close()
    reopened = open_client(tmp_path / "c.db", offline=True)
    assert expected == (
        reopened.state(list_id),
        reopened.queued(list_id),
        reopened.core.next_seq(list_id),
    )
    reopened.close()


def test_background_syncing_goes_on_after_a_failed_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a failed save rebuilds the core, the agent's periodic sync starts again at
    the next step and pushes only what is durable."""
    client = open_client(tmp_path / "c.db")
    sent = capture_sends(client, monkeypatch)
    list_id = client.create("Groceries")
    client.start_background()
    fail_next_save(client, monkeypatch)
    with pytest.raises(StoreError):
        client.edit(list_id, add("milk"))
    del sent[:]
    client.step(0.0)
    durable = client.store.load(list_id)
    assert durable is not None
    assert (True, [list_id]) == (
        client.core.next_deadline() is not None,
        [s.message.list_id for s in sent if isinstance(s.message, SyncRequest)],
    )
    assert [True] == [d <= durable for d in sent_deltas(sent)]
    client.close()


@pytest.mark.parametrize("restart", [False, True])
def test_a_forgotten_list_opened_again_offline_continues_its_dots(
    tmp_path: Path, restart: bool
) -> None:
    """A list forgotten, then opened by its id and edited before any pull (offline),
    takes dot 3 for its next edit, not dot 1 again, and comes back with what it had."""
    client = open_client(tmp_path / "c.db", offline=True)
    list_id = client.create("Groceries")
    client.edit(list_id, add("milk"))
    before = client.state(list_id)
    assert before is not None
    client.forget(list_id)
    if restart:
        client.close()
        client = open_client(tmp_path / "c.db", offline=True)
    assert ((), None) == (client.list_ids(), client.state(list_id))
    client.open_list(list_id)
    delta = client.edit(list_id, add("eggs"))
    assert [Dot(client.replica, 3)] == list(delta.context.dots())
    after = client.state(list_id)
    assert after is not None
    assert ("Groceries", {"milk", "eggs"}, 3, True) == (
        after.name,
        set(after.items),
        client.queued(list_id),
        before <= after,
    )
    client.close()


def test_editing_a_forgotten_list_by_id_brings_it_back(tmp_path: Path) -> None:
    """An edit of a forgotten list's id, without opening it first, continues its dots."""
    client = open_client(tmp_path / "c.db", offline=True)
    list_id = client.create("Groceries")
    client.forget(list_id)
    client.close()
    client = open_client(tmp_path / "c.db", offline=True)
    delta = client.edit(list_id, add("milk"))
    assert ([Dot(client.replica, 2)], (list_id,)) == (
        list(delta.context.dots()),
        client.list_ids(),
    )
    client.close()
