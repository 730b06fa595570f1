"""What the simulated users do, and what their edits must add up to.

A :class:`Workload` is a list of timed edits by clients on shared lists. A
:class:`DocumentModel` knows one document type: it draws random edits, turns an edit
into the mutator call the client core runs, and checks a final state against every edit
made (no phantom items, counters within bounds). :class:`ShoppingListModel` drives the
application's lists; :class:`SetModel` drives a plain :class:`crdts.AWORSet`, a smaller
document for tests of the machinery.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import attrs

from crdts import AWORSet
from reference_cluster.sim.faults import Topology

__all__ = [
    "ClientOp",
    "DocumentModel",
    "EditRecord",
    "Op",
    "SetModel",
    "ShoppingListModel",
    "Workload",
    "random_workload",
]

T = TypeVar("T")


@attrs.frozen
class Op:
    """One mutator call: ``getattr(state, name)(replica, *args)``."""

    name: str
    args: tuple[Any, ...] = ()

    def __str__(self) -> str:
        return f"{self.name}{self.args!r}"


@attrs.frozen
class ClientOp:
    """Client ``client`` does ``op`` on list number ``list_index`` at time ``at``."""

    at: float
    client: str
    list_index: int
    op: Op


@attrs.frozen
class Workload:
    """The shared lists and every edit, by time."""

    list_ids: tuple[str, ...]
    ops: tuple[ClientOp, ...]


@attrs.define
class EditRecord:
    """An edit that happened, for the checkers.

    Attributes:
        number: the edit's position among all edits made in the run.
        client: who made it; ``incarnation``: which run of that client.
        list_id, seq: the list and the edit's sequence number in the client's queue.
        op: what it did; ``delta``: the delta it produced (a snapshot).
        dots: the dots it issued (new dots of the client's replica).
        acked: whether a server acknowledged it (made it durable).
    """

    number: int
    client: str
    incarnation: int
    list_id: str
    seq: int
    op: Op
    delta: Any
    dots: tuple[tuple[str, int], ...]
    acked: bool = False


class DocumentModel(Protocol[T]):
    """A document type as the simulator drives it."""

    name: str
    doc_type: type[T]

    def initial_ops(self, clients: Sequence[str]) -> list[tuple[str, int, Op]]:
        """Edits made at the very start: ``(client, list index, op)``."""
        ...

    def random_op(self, rng: random.Random, list_index: int) -> Op:
        """A random edit of list number ``list_index``."""
        ...

    def check(self, state: T, edits: Sequence[EditRecord]) -> list[tuple[str, str]]:
        """What is wrong with a final ``state`` given every edit made on its list:
        ``(kind, description)`` pairs, kind ``"phantom"`` or ``"counter"``; empty if
        nothing is."""
        ...


def mutator(op: Op) -> Callable[[Any, str], Any]:
    """The ``mutate(state, replica)`` function that performs ``op``."""

    def mutate(state: Any, replica: str) -> Any:
        return getattr(state, op.name)(replica, *op.args)

    return mutate


class SetModel:
    """A plain add-wins set: adds and removes of a few elements."""

    name = "aworset"
    doc_type: type[AWORSet] = AWORSet
    ELEMENTS = ("milk", "eggs", "bread", "tea", "rice")

    def initial_ops(self, clients: Sequence[str]) -> list[tuple[str, int, Op]]:
        return []

    def random_op(self, rng: random.Random, list_index: int) -> Op:
        element = rng.choice(self.ELEMENTS)
        return Op("add" if rng.random() < 0.65 else "remove", (element,))

    def check(self, state: Any, edits: Sequence[EditRecord]) -> list[tuple[str, str]]:
        added = {e.op.args[0] for e in edits if e.op.name == "add"}
        extra = sorted(state.value - added, key=repr)
        return [("phantom", f"phantom element {x!r}") for x in extra]


class ShoppingListModel:
    """The application's shopping lists.

    On list 0, the items named ``count-*`` are counters: the first client adds each
    once at the start, and from then on they only ever get ``change_quantity`` by a
    positive amount (no set, remove, decrement or delete), so a counter's final quantity
    must be exactly the sum of the edits that reached the state, each counted once
    (every acknowledged one among them). Other items get every kind of edit, and list 1
    may be deleted. Edits that the list refuses (an item not on the list as that
    client sees it, a deleted list) change nothing and are not recorded.
    """

    name = "shopping_list"
    ITEMS = ("milk", "eggs", "bread", "tea")
    COUNTERS = ("count-apples", "count-pears")

    def __init__(self) -> None:
        from reference_cluster.shopping_list import ShoppingList

        self.doc_type = ShoppingList

    def initial_ops(self, clients: Sequence[str]) -> list[tuple[str, int, Op]]:
        return [(clients[0], 0, Op("add_item", (c, 1))) for c in self.COUNTERS]

    def random_op(self, rng: random.Random, list_index: int) -> Op:
        r = rng.random()
        if list_index == 0 and r < 0.3:
            return Op("change_quantity", (rng.choice(self.COUNTERS), rng.choice((1, 1, 2))))
        item = rng.choice(self.ITEMS)
        if r < 0.55:
            return Op("add_item", (item, rng.randint(1, 3)))
        if r < 0.65:
            return Op("change_quantity", (item, rng.choice((1, -1))))
        if r < 0.72:
            return Op("set_quantity", (item, rng.randint(0, 5)))
        if r < 0.82:
            return Op("mark_bought", (item, rng.random() < 0.7))
        if r < 0.92:
            return Op("remove_item", (item,))
        if list_index == 1 and r < 0.935:
            return Op("delete")
        return Op("rename", (rng.choice(("groceries", "weekend", "party")),))

    def check(self, state: Any, edits: Sequence[EditRecord]) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        items = state.items
        created = {e.op.args[0] for e in edits if e.op.name == "add_item"}
        for item in items:
            if item not in created:
                problems.append(("phantom", f"phantom item {item!r}"))
        for counter in self.COUNTERS:
            changes = [
                e
                for e in edits
                if e.op.name in ("add_item", "change_quantity") and e.op.args[0] == counter
            ]
            if not changes:
                continue
            expected = sum(e.op.args[1] for e in changes if e.delta <= state)
            view = items.get(counter)
            actual = 0 if view is None else view.quantity
            if actual != expected:
                problems.append(
                    (
                        "counter",
                        f"counter {counter!r} is {actual}, but the changes that reached "
                        f"the state add up to {expected}",
                    )
                )
        return problems


def new_list_id(rng: random.Random) -> str:
    """A list id (a random UUID) drawn from ``rng``."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def random_workload(
    rng: random.Random,
    model: DocumentModel[Any],
    topology: Topology,
    *,
    lists: int,
    edits_per_client: int,
    until: float,
) -> Workload:
    """Every client edits every shared list at random times in ``[0, until)``."""
    list_ids = tuple(new_list_id(rng) for _ in range(lists))
    ops = [ClientOp(0.0, c, i, op) for c, i, op in model.initial_ops(topology.clients)]
    for client in topology.clients:
        count = rng.randint(edits_per_client // 2, edits_per_client * 3 // 2)
        for _ in range(count):
            at = rng.uniform(0.0, until)
            index = rng.randrange(lists)
            ops.append(ClientOp(at, client, index, model.random_op(rng, index)))
    ops.sort(key=lambda o: o.at)
    return Workload(list_ids, tuple(ops))
