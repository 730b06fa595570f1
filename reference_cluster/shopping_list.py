"""The shopping list: one causal CRDT holding a name, items and a deletion tombstone.

Theory of operation
-------------------
A list is one :class:`crdts.Record` on the dot kernel, so every part shares one causal
context and one delta carries any edit::

    ShoppingList = Record(name:    MVRegister[str],
                          items:   ORMap[str -> Item],
                          deleted: EWFlag, only ever enabled)
    Item         = Record(set:     MVRegister[int]   the last quantity set,
                          add:     CCounter          changes since that set,
                          bought:  EWFlag)

Rule 1 (quantity). ``quantity = max(values of set, default 0) + add``. Setting a quantity
writes ``set`` and resets ``add`` as observed; a change adds to ``add``. So two concurrent
"set to 3" give 3 (both writes are kept, the larger is taken: 3), and "set to 3"
concurrent with "+1" gives 4 (the set did not see the +1). The quantity shown is never
below 0: if concurrent decrements take the tally below zero it shows 0, and the next
change on that item starts again from 0 (it acts as a set).

Rule 2 (presence). An item is on the list while any of its parts holds a dot. Removing it
resets all of its parts as observed: a concurrent change that the remove did not see
survives alone (3, remove || +1 gives 1), and adding it again starts from the new add.

Rule 3 (bought). ``bought`` is enable-wins: concurrent "bought" and "not bought" give
bought. Adding an item already on the list raises its quantity and marks it not bought.
Un-buying never takes an item off the list: when the bought mark is the only part that
holds a dot (after remove || bought the item shows 0, bought), "not bought" also sets the
quantity to what it shows, so the item stays, not bought; otherwise it writes no quantity.

Rule 4 (name). Concurrent renames are all kept; :attr:`ShoppingList.name` shows the
alphabetically first (by code point) and :attr:`ShoppingList.names` shows them all. A
later rename, which has seen them, replaces them.

Rule 5 (deletion). ``delete`` enables the tombstone and resets every item as observed;
the name stays, so a deleted list is still shown by its name. Nothing ever disables the
tombstone, and a stale copy that never saw it cannot remove it (its context lacks the
tombstone's dot), so a deleted list stays deleted. Edits of a deleted list (renaming it
too) raise :class:`~reference_cluster.errors.ListDeleted`; edits made concurrently
elsewhere are kept in the state, read-only.

Rule 6 (shipping). Quantity changes fold into one dot per item between two ``seal()``
calls (see :mod:`crdts._ccounter`): a client that calls :meth:`ShoppingList.seal` each
time it ships, and ships what it made since the last seal as one delta, keeps one dot per
changed item per sync round. A client that never seals is still exact; it keeps one dot
per change until a set, remove or delete clears them.

Rule 7 (names). Every mutator normalises the list and item names it is given
(:func:`normalize_name`: Unicode NFC, outer whitespace stripped, inner runs of whitespace
collapsed to one space, then 1 to MAX_NAME_LENGTH characters). A name an edit writes (a
new item, a rename) must not hold a control character or an invisible format character
that can disguise text (:func:`name_problem`): escapes that would drive another user's
terminal, bidirectional overrides and isolates that reorder what is shown, zero-width
spaces; the zero-width joiner and non-joiner (emoji sequences, Indic and Persian
scripts) and emoji tag characters stay allowed. Names that only look an item up accept
anything, so an item a hostile replica wrote can still be edited or removed. An edit that
names an item resolves it case-insensitively (by the casefold of the normalised name) to
an item on the list: the exact spelling first, else the first match in sorted order
(:meth:`ShoppingList.find_item`). So with milk on the list, adding "Milk" raises milk's
quantity; a brand-new item keeps the spelling it was given. ``rename_item`` is a remove
and an add in one delta: the new name gets the quantity and bought mark shown, and a
concurrent edit of the old name survives under the old name (Rule 2). Names are keys, so
two replicas adding "Milk" and "milk" concurrently make two items; a later edit merges
them by removing one. Decoding does not normalise: states from older replicas may hold
names in any form, and edits still resolve to them.
"""

from __future__ import annotations

import unicodedata
import uuid
from collections.abc import Mapping
from typing import Any, ClassVar, Self

import attrs

from crdts import Causal, CCounter, Crdt, DotContext, EWFlag, MVRegister, ORMap, Record, Stats
from crdts._codec import describe
from crdts._dots import check_replica
from crdts.errors import DecodeError
from reference_cluster.errors import InvalidEdit, ListDeleted, UnknownItem

__all__ = [
    "MAX_NAME_LENGTH",
    "MAX_QUANTITY",
    "ItemView",
    "ShoppingList",
    "name_problem",
    "new_list_id",
    "normalize_name",
]

MAX_QUANTITY = 1_000_000
"""The largest quantity, and the largest change, a single edit may carry."""
MAX_NAME_LENGTH = 200
"""The longest list or item name, in characters (once normalised)."""


def new_list_id() -> str:
    """A fresh list id: a random UUID in its canonical text form."""
    return str(uuid.uuid4())


def normalize_name(text: str) -> str:
    """The canonical form of a list or item name (Rule 7).

    Unicode NFC, leading and trailing whitespace stripped, each inner run of whitespace
    (as :meth:`str.split` sees it) collapsed to one space. Case is kept.

    Args:
        text: a name as typed.

    Returns:
        The normalised name: 1 to MAX_NAME_LENGTH characters.

    Raises:
        InvalidEdit: ``text`` is not a str, is blank (empty or only whitespace), is
            longer than MAX_NAME_LENGTH characters once normalised, or holds a character
            :func:`name_problem` refuses.
    """
    return _new_name(text, "a name")


# Format characters (category Cf) that are kept: they join, or select emoji, and
# disguise nothing on their own.
_ALLOWED_FORMAT = frozenset({"\u200c", "\u200d"}) | frozenset(map(chr, range(0xE0020, 0xE0080)))


def name_problem(name: str) -> str | None:
    """Why ``name`` may not be written as a list or item name, or None if it may.

    Refused: control characters (Unicode category Cc: C0, DEL, C1, such as ESC, which
    starts terminal escape sequences), surrogates (Cs), and format characters (Cf)
    except the zero-width joiner and non-joiner (U+200C, U+200D) and emoji tag
    characters (U+E0020 to U+E007F). So bidirectional overrides, embeddings, marks and
    isolates (U+202A to U+202E, U+2066 to U+2069, U+200E, U+200F, U+061C), zero-width
    spaces (U+200B, U+2060, U+FEFF), the soft hyphen and the like are refused.
    Whitespace (tab, newline, U+2028 ...) never gets here: normalising collapses it.
    """
    for i, ch in enumerate(name):
        category = unicodedata.category(ch)
        if category in ("Cc", "Cs") or (category == "Cf" and ch not in _ALLOWED_FORMAT):
            kind = "an invisible format" if category == "Cf" else "a control"
            return f"U+{ord(ch):04X} ({kind} character) at position {i}"
    return None


def _tidy(text: str) -> str:
    """NFC with whitespace stripped and collapsed; may be blank or too long."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def _fold(text: str) -> str:
    """What names are compared by: the casefold of the tidied name (NFC again, since
    casefolding can undo it)."""
    return unicodedata.normalize("NFC", _tidy(text).casefold())


def _normalize(value: object, what: str) -> str:
    if type(value) is not str:
        raise InvalidEdit(
            f"{what} must be a non-empty str of at most {MAX_NAME_LENGTH} characters, "
            f"got {describe(value)}"
        )
    name = _tidy(value)
    if not name:
        raise InvalidEdit(f"{what} must not be blank, got {describe(value)}")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidEdit(
            f"{what} must be at most {MAX_NAME_LENGTH} characters once normalised, got "
            f"{len(name)}: {describe(name)}"
        )
    return name


def _new_name(value: object, what: str) -> str:
    """A normalised name that an edit is about to write (Rule 7)."""
    name = _normalize(value, what)
    problem = name_problem(name)
    if problem is not None:
        raise InvalidEdit(
            f"{what} must not hold control characters or invisible format characters; "
            f"{name!r:.80} holds {problem}"
        )
    return name


@attrs.frozen
class ItemView:
    """What a user sees of one item."""

    quantity: int
    bought: bool


class _Item(Record):
    type_name = "ShoppingItem"
    fields: ClassVar[Mapping[str, type[Any]]] = {
        "set": MVRegister,
        "add": CCounter,
        "bought": EWFlag,
    }


_Items = ORMap.of(_Item)


class _ListState(Record):
    type_name = "ShoppingList"
    fields: ClassVar[Mapping[str, type[Any]]] = {
        "name": MVRegister,
        "items": _Items,
        "deleted": EWFlag,
    }

    def _check_decoded(self, path: str) -> None:
        for name in self.value_at("name"):
            _check_decoded_text(name, f"{path}: list name")
        for item, parts in self.value_at("items").items():
            _check_decoded_text(item, f"{path}: item name")
            for q in parts["set"]:
                if type(q) is not int or not 0 <= q <= MAX_QUANTITY:
                    raise DecodeError(
                        f"{path}: quantity of {item!r:.80} must be an int from 0 to "
                        f"{MAX_QUANTITY}, got {describe(q)}"
                    )


def _check_decoded_text(value: object, what: str) -> None:
    """Lenient on purpose (Rule 7): older replicas wrote names without normalising."""
    if type(value) is not str or not value or len(value) > MAX_NAME_LENGTH:
        raise DecodeError(
            f"{what} must be a non-empty str of at most {MAX_NAME_LENGTH} characters, "
            f"got {describe(value)}"
        )


def _check_int(value: object, what: str, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise InvalidEdit(f"{what} must be an int from {low} to {high}, got {describe(value)}")
    return value


def _quantity(parts: Mapping[str, Any]) -> int:
    """The raw quantity of an item's parts (Rule 1); may be below 0."""
    sets: frozenset[int] = parts["set"]
    added: int = parts["add"]
    return (max(sets) if sets else 0) + added


class ShoppingList(Crdt):
    """A shopping list: a name, items with a quantity and a bought mark, and deletion.

    ``ShoppingList()`` is the empty list (bottom). The list's id lives outside the state
    (see :func:`new_list_id`). Every mutator takes the acting replica first and returns
    a delta (a ``ShoppingList``) to ship.

    >>> alice, bob = ShoppingList(), ShoppingList()
    >>> bob.join(alice.add_item("alice", "milk", 3))
    >>> _ = alice.remove_item("alice", "milk")
    >>> _ = bob.change_quantity("bob", "milk", 1)        # concurrent with the remove
    >>> (alice | bob).items["milk"].quantity
    1
    """

    __slots__ = ("_by_fold", "_s")
    type_name = "ShoppingList"

    def __init__(self) -> None:
        self._s = _ListState()
        self._by_fold: dict[str, set[str]] | None = None

    @classmethod
    def _wrap(cls, state: _ListState) -> Self:
        out = cls.__new__(cls)
        out._s = state
        out._by_fold = None
        return out

    # -- names (Rule 7) -------------------------------------------------------------------
    # ``_by_fold`` caches each folded name to the items on the list with that folded name,
    # so that resolving a name does not read every item. It is dropped whenever the state
    # changes other than through one of our mutators (join, delete) and rebuilt on demand;
    # a mutator brings up to date the keys it touched.

    def _folded(self) -> dict[str, set[str]]:
        if self._by_fold is None:
            by_fold: dict[str, set[str]] = {}
            for key in self._s.value_at("items"):
                by_fold.setdefault(_fold(key), set()).add(key)
            self._by_fold = by_fold
        return self._by_fold

    def _touched(self, *keys: str) -> None:
        """Bring the cache up to date for ``keys``, whose presence an edit may have changed."""
        by_fold = self._by_fold
        if by_fold is None:
            return
        for key in keys:
            folded = _fold(key)
            same = by_fold.setdefault(folded, set())
            if self._s.holds("items", key):
                same.add(key)
            else:
                same.discard(key)
                if not same:
                    del by_fold[folded]

    def _resolve(self, name: str) -> str | None:
        """The item a normalised ``name`` refers to: its exact spelling, else the first
        item in sorted order with the same folded name, else None."""
        if self._s.holds("items", name):
            return name
        same = self._folded().get(_fold(name))
        return min(same) if same else None

    def _others_named(self, name: str, key: str) -> list[str]:
        """The items other than ``key`` that ``name`` names case-insensitively, sorted."""
        return sorted(self._folded().get(_fold(name), set()) - {key})

    # -- checks -------------------------------------------------------------------------

    def _check_live(self) -> None:
        if self._s.holds("deleted"):
            raise ListDeleted("the list was deleted; it takes no more edits")

    def _key(self, name: str) -> str:
        """The key of the item that the normalised ``name`` refers to (Rule 7), or raise.

        Raises:
            UnknownItem: no item on the list has that name, in any case.
        """
        key = self._resolve(name)
        if key is None:
            raise UnknownItem(f"{name!r:.80} is not on the list")
        return key

    def _parts(self, key: str) -> dict[str, Any]:
        """The parts of the item ``key``, which is on the list."""
        parts: dict[str, Any] = self._s.value_at("items", key)
        return parts

    def _edit(self, replica: str, item: str, field: str, op: str, *args: Any) -> _ListState:
        return self._s.apply(replica, "items", "apply", item, "apply", field, op, *args)

    def _set(self, replica: str, item: str, quantity: int) -> _ListState:
        delta = self._edit(replica, item, "set", "write", quantity)
        delta.join(self._s.apply(replica, "items", "apply", item, "reset", "add"))
        return delta

    def _change(self, replica: str, item: str, parts: Mapping[str, Any], by: int) -> _ListState:
        raw = _quantity(parts)
        shown = max(raw, 0)
        if shown + by < 0:
            raise InvalidEdit(f"the quantity of {item!r:.80} is {shown}; it cannot drop by {-by}")
        if raw < 0:
            # Concurrent decrements went below zero: start again from what is shown (Rule 1).
            return self._set(replica, item, shown + by)
        if by > 0:
            return self._edit(replica, item, "add", "increment", by)
        return self._edit(replica, item, "add", "decrement", -by)

    # -- mutators -----------------------------------------------------------------------

    def add_item(self, replica: str, item: str, quantity: int = 1) -> Self:
        """Put ``quantity`` of ``item`` on the list; return the delta.

        ``item`` is normalised and names an item already on the list case-insensitively
        (Rule 7). An item not on the list (as this replica sees it) starts at
        ``quantity``, spelt as given; an item already there has its quantity raised by
        ``quantity`` and is marked not bought.

        Raises:
            InvalidArgument: bad replica id. InvalidEdit: a blank or too long item name,
            a quantity outside 1..MAX_QUANTITY. ListDeleted: the list was deleted.
            Nothing changed in any case.
        """
        check_replica(replica)
        name = _new_name(item, "an item name")
        _check_int(quantity, "quantity", 1, MAX_QUANTITY)
        self._check_live()
        key = self._resolve(name)
        if key is None:
            delta = self._edit(replica, name, "set", "write", quantity)
            self._touched(name)
            return self._wrap(delta)
        parts = self._parts(key)
        delta = self._change(replica, key, parts, quantity)
        if parts["bought"]:
            delta.join(self._edit(replica, key, "bought", "disable"))
        return self._wrap(delta)

    def change_quantity(self, replica: str, item: str, delta: int) -> Self:
        """Change the quantity of ``item`` by ``delta`` (non-zero, may be negative); return
        the delta. Concurrent changes add up.

        Raises:
            InvalidArgument: bad replica id. InvalidEdit: a bad item name, ``delta`` is 0
            or too large, or would take the quantity below 0. UnknownItem: the item is not
            on the list. ListDeleted: the list was deleted. Nothing changed in any case.
        """
        check_replica(replica)
        name = _normalize(item, "an item name")
        _check_int(delta, "quantity change", -MAX_QUANTITY, MAX_QUANTITY)
        if delta == 0:
            raise InvalidEdit("quantity change must not be 0")
        self._check_live()
        key = self._key(name)
        return self._wrap(self._change(replica, key, self._parts(key), delta))

    def set_quantity(self, replica: str, item: str, quantity: int) -> Self:
        """Set the quantity of ``item`` to ``quantity`` (0..MAX_QUANTITY); return the delta.

        Concurrent sets keep the largest; changes concurrent with a set add to it.

        Raises:
            InvalidArgument: bad replica id. InvalidEdit: a bad item name or quantity.
            UnknownItem: the item is not on the list. ListDeleted: the list was deleted.
            Nothing changed in any case.
        """
        check_replica(replica)
        name = _normalize(item, "an item name")
        _check_int(quantity, "quantity", 0, MAX_QUANTITY)
        self._check_live()
        return self._wrap(self._set(replica, self._key(name), quantity))

    def mark_bought(self, replica: str, item: str, bought: bool = True) -> Self:
        """Mark ``item`` bought (or, with ``bought=False``, not bought); return the delta.

        Concurrent "bought" and "not bought" give bought. "Not bought" never takes the
        item off the list: if the bought mark is all that holds it (remove || bought), the
        delta also sets the quantity to what it shows (Rule 3).

        Raises:
            InvalidArgument: bad replica id. InvalidEdit: a bad item name, or ``bought``
            is not a bool. UnknownItem: the item is not on the list. ListDeleted: the
            list was deleted. Nothing changed in any case.
        """
        check_replica(replica)
        name = _normalize(item, "an item name")
        if type(bought) is not bool:
            raise InvalidEdit(f"bought must be True or False, got {describe(bought)}")
        self._check_live()
        key = self._key(name)
        if bought:
            return self._wrap(self._edit(replica, key, "bought", "enable"))
        held = self._s.holds("items", key, "set") or self._s.holds("items", key, "add")
        if held:
            return self._wrap(self._edit(replica, key, "bought", "disable"))
        # Only the bought mark holds a dot: keep the item by writing what it shows.
        delta = self._edit(replica, key, "set", "write", max(_quantity(self._parts(key)), 0))
        delta.join(self._edit(replica, key, "bought", "disable"))
        return self._wrap(delta)

    def remove_item(self, replica: str, item: str) -> Self:
        """Take ``item`` off the list as this replica sees it; return the delta.

        Changes made concurrently elsewhere survive, and only they: the item comes back
        holding just what the remove did not see.

        Raises:
            InvalidArgument: bad replica id. InvalidEdit: a bad item name. UnknownItem:
            the item is not on the list. ListDeleted: the list was deleted. Nothing
            changed in any case.
        """
        check_replica(replica)
        name = _normalize(item, "an item name")
        self._check_live()
        key = self._key(name)
        delta = self._s.apply(replica, "items", "remove", key)
        self._touched(key)
        return self._wrap(delta)

    def rename_item(self, replica: str, item: str, new_name: str) -> Self:
        """Rename ``item`` to ``new_name``; return the delta.

        One delta removes ``item`` as this replica sees it (as :meth:`remove_item` does)
        and puts ``new_name`` (normalised, spelt as given) on the list with the quantity
        and bought mark ``item`` shows. An edit of ``item`` made concurrently elsewhere
        survives under the old name (Rule 2). Renaming to another case of the same
        item changes its spelling; renaming to its very spelling changes nothing (the
        delta is bottom).

        Raises:
            InvalidArgument: bad replica id. InvalidEdit: a bad item name or new name, or
            ``new_name`` names another item on the list (in any case). UnknownItem:
            ``item`` is not on the list. ListDeleted: the list was deleted. Nothing
            changed in any case.
        """
        check_replica(replica)
        name = _normalize(item, "an item name")
        new = _new_name(new_name, "the new item name")
        self._check_live()
        key = self._key(name)
        if new == key:
            return self._wrap(_ListState())
        others = self._others_named(new, key)
        if others:
            raise InvalidEdit(
                f"cannot rename {key!r:.80} to {new!r:.80}: {others[0]!r:.80} is already on "
                "the list"
            )
        parts = self._parts(key)
        quantity, bought = max(_quantity(parts), 0), bool(parts["bought"])
        delta = self._s.apply(replica, "items", "remove", key)
        delta.join(self._edit(replica, new, "set", "write", quantity))
        if bought:
            delta.join(self._edit(replica, new, "bought", "enable"))
        self._touched(key, new)
        return self._wrap(delta)

    def rename(self, replica: str, name: str) -> Self:
        """Rename the list to ``name`` (normalised, Rule 7); return the delta. Concurrent
        renames are all kept (see :attr:`names`); :attr:`name` shows the alphabetically
        first.

        Raises:
            InvalidArgument: bad replica id. InvalidEdit: a blank or too long name.
            ListDeleted: the list was deleted. Nothing changed in any case.
        """
        check_replica(replica)
        new = _new_name(name, "a list name")
        self._check_live()
        return self._wrap(self._s.apply(replica, "name", "write", new))

    def delete(self, replica: str) -> Self:
        """Delete the list for good; return the delta. Every replica that receives the
        delta (or any state that includes it) sees the list deleted, forever. The items
        are cleared as observed; the name stays (Rule 5).

        Raises:
            InvalidArgument: bad replica id. ListDeleted: already deleted. Nothing changed.
        """
        check_replica(replica)
        self._check_live()
        delta = self._s.apply(replica, "deleted", "enable")
        delta.join(self._s.reset(replica, "items"))
        self._by_fold = None
        return self._wrap(delta)

    def seal(self) -> None:
        """Declare that everything this replica made so far may have been shipped (Rule 6).

        Call it each time you ship, after shipping the join of the deltas made since the
        previous call (or the whole state)."""
        self._s.seal()

    # -- reading ------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The list's name: the alphabetically first of :attr:`names`, "" if never set."""
        names = self._s.value_at("name")
        return min(names) if names else ""

    @property
    def names(self) -> tuple[str, ...]:
        """Every name currently held, sorted: more than one after concurrent renames."""
        return tuple(sorted(self._s.value_at("name")))

    @property
    def items(self) -> dict[str, ItemView]:
        """A fresh dict of item name to :class:`ItemView`, sorted by item name."""
        parts_by_item: dict[str, dict[str, Any]] = self._s.value_at("items")
        return {
            item: ItemView(max(_quantity(parts), 0), parts["bought"])
            for item, parts in sorted(parts_by_item.items())
        }

    @property
    def deleted(self) -> bool:
        """Whether the list was deleted (by any replica whose delete reached this one)."""
        return self._s.holds("deleted")

    @property
    def value(self) -> dict[str, Any]:
        """A plain dict: ``{"name": str, "items": {item: {"quantity": int, "bought":
        bool}}, "deleted": bool}``."""
        return {
            "name": self.name,
            "items": {
                item: {"quantity": view.quantity, "bought": view.bought}
                for item, view in self.items.items()
            },
            "deleted": self.deleted,
        }

    def find_item(self, name: str) -> str | None:
        """The key (as :attr:`items` shows it) of the item ``name`` refers to, or None.

        ``name`` is normalised and resolved as edits resolve it (Rule 7): the exact
        spelling first, else the first item in sorted order whose name matches ignoring
        case. A name that cannot name an item (not a str, blank, too long) gives None.
        """
        try:
            normal = _normalize(name, "an item name")
        except InvalidEdit:
            return None
        return self._resolve(normal)

    def __contains__(self, item: object) -> bool:
        """Whether ``item`` names an item on the list, as :meth:`find_item` resolves it."""
        return type(item) is str and self.find_item(item) is not None

    # -- the contract -------------------------------------------------------------------

    def join(self, other: Self) -> None:
        self._check_same_type(other)
        self._s.join(other._s)
        self._by_fold = None

    def __le__(self, other: Self) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._s <= other._s

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, ShoppingList)
        return self._s == other._s

    def copy(self) -> Self:
        return self._wrap(self._s.copy())

    def to_dict(self) -> dict[str, Any]:
        return self._s.to_dict()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        return cls._wrap(_ListState.from_dict(data))

    def delta_for(self, peer: DotContext) -> Self:
        """The delta a peer whose causal context is ``peer`` needs (see
        :meth:`crdts.Causal.delta_for`)."""
        return self._wrap(self._s.delta_for(peer))

    @property
    def context(self) -> DotContext:
        """The list's causal context: a read-only view that follows the list (see
        :attr:`crdts.Causal.context`); ``.copy()`` for one to keep or change."""
        return self._s.context

    def stats(self) -> Stats:
        return self._s.stats()

    def dot_kernel(self) -> Causal:
        """The dot kernel that holds the whole list, read in place by the server's
        authorship check (:mod:`reference_cluster.cores.authorship`); never change it."""
        return self._s

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{item!r}: {v.quantity}{' bought' if v.bought else ''}"
            for item, v in self.items.items()
        )
        gone = " deleted" if self.deleted else ""
        return f"ShoppingList({self.name!r}{gone}, {{{shown}}})"
