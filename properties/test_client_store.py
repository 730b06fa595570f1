"""The device store's reading of what a client core starts from."""

from __future__ import annotations

import uuid
from pathlib import Path

from crdts import AWORSet
from reference_cluster.storage.client_store import ClientStore

LIST_A = str(uuid.UUID(int=0xA1))


def test_saved_keeps_the_dots_of_a_list_whose_items_were_all_removed(tmp_path: Path) -> None:
    """A list emptied by removing its every item starts the client core with its causal
    context (an empty state is falsy, but it is not bottom), so no dot is issued twice."""
    with ClientStore(tmp_path / "c.db", AWORSet) as store:
        added, _ = store.edit(LIST_A, lambda s, r: s.add(r, "milk"))
        store.edit(LIST_A, lambda s, r: s.remove(r, "milk"))
    with ClientStore(tmp_path / "c.db", AWORSet) as store:
        saved = store.saved()[LIST_A].state
    (dot,) = added.dots_of("milk")
    assert (frozenset(), True) == (saved.value, saved.context.contains(dot))
