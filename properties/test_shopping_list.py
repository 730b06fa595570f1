"""The shopping list: its documented semantics, its errors, the lattice laws, and replicas
editing and syncing concurrently against a model that knows nothing of dots."""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

import attrs
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from crdts import DecodeError, InvalidArgument
from crdts.testing import check_laws, histories
from reference_cluster.errors import InvalidEdit, ListDeleted, UnknownItem
from reference_cluster.shopping_list import (
    MAX_NAME_LENGTH,
    ItemView,
    ShoppingList,
    name_problem,
    new_list_id,
    normalize_name,
)

ITEMS = ("milk", "eggs")
NAMES = ("Groceries", "Weekend", "Party")
SPELLINGS = ("milk", "eggs", "Milk", " EGGS", "oat milk")
"""Item names as the generated edits type them: two items in several spellings, one more."""


def synced(*lists: ShoppingList) -> ShoppingList:
    """The join of ``lists`` (what every replica reaches after exchanging everything)."""
    out = ShoppingList()
    for s in lists:
        out.join(s)
    return out


def pair_with(item: str, quantity: int) -> tuple[ShoppingList, ShoppingList]:
    """Two replicas that both see ``item`` at ``quantity``."""
    a, b = ShoppingList(), ShoppingList()
    b.join(a.add_item("alice", item, quantity))
    return a, b


# -- the documented semantics (README table) ---------------------------------------------------


def test_increment_concurrent_with_remove_keeps_only_the_increment() -> None:
    """At 3, remove || +1 gives the item back with quantity 1, in every delivery order."""
    a, b = pair_with("milk", 3)
    d_remove = a.remove_item("alice", "milk")
    d_inc = b.change_quantity("bob", "milk", 1)
    results = [a | b, b | a, a | d_inc, b | d_remove]
    assert [{"milk": ItemView(1, False)}] * 4 == [s.items for s in results]


def test_remove_then_add_again_starts_from_the_new_add() -> None:
    """A removed item added again has the new quantity, not the old tally plus it."""
    a, b = pair_with("milk", 3)
    b.change_quantity("bob", "milk", 4)
    a.join(b)
    a.remove_item("alice", "milk")
    a.add_item("alice", "milk", 2)
    assert {"milk": ItemView(2, False)} == synced(a, b).items


def test_concurrent_bought_and_not_bought_gives_bought() -> None:
    """Enable wins: "bought" beats a concurrent "not bought", in both orders."""
    a, b = pair_with("milk", 1)
    a.join(b.mark_bought("bob", "milk"))
    b.join(a)
    a.mark_bought("alice", "milk", bought=False)
    b2 = ShoppingList()
    b2.join(b)
    b2.mark_bought("bob", "milk", bought=True)
    assert (True, True) == ((a | b2).items["milk"].bought, (b2 | a).items["milk"].bought)
    c, d = pair_with("tea", 1)
    c.mark_bought("alice", "tea")
    d.mark_bought("bob", "tea", bought=False)
    assert True is synced(c, d).items["tea"].bought


def test_concurrent_renames_are_kept_and_the_first_alphabetically_is_shown() -> None:
    """Both names are kept; every replica shows the alphabetically first one."""
    a, b = ShoppingList(), ShoppingList()
    b.join(a.rename("alice", "Groceries"))
    a.rename("alice", "Weekend")
    b.rename("bob", "Party")
    assert ("Party", ("Party", "Weekend")) == ((a | b).name, (b | a).names)
    merged = a | b
    merged.rename("alice", "Weekend")
    assert ("Weekend", ("Weekend",)) == (merged.name, merged.names)


def test_concurrent_sets_to_the_same_quantity_give_that_quantity() -> None:
    """Two concurrent "set to 3" give 3: sets replace, and the larger of concurrent sets wins."""
    a, b = pair_with("eggs", 1)
    a.set_quantity("alice", "eggs", 3)
    b.set_quantity("bob", "eggs", 3)
    assert 3 == synced(a, b).items["eggs"].quantity


def test_concurrent_sets_keep_the_larger_and_add_concurrent_changes() -> None:
    """set 3 || set 5 gives 5; set 3 || +1 gives 4 (the set did not see the +1)."""
    a, b = pair_with("eggs", 1)
    a.set_quantity("alice", "eggs", 3)
    b.set_quantity("bob", "eggs", 5)
    assert 5 == synced(a, b).items["eggs"].quantity
    c, d = pair_with("tea", 1)
    c.set_quantity("alice", "tea", 3)
    d.change_quantity("bob", "tea", 1)
    assert 4 == synced(c, d).items["tea"].quantity


def test_concurrent_increments_add_up() -> None:
    """+2 on one replica and +3 on another add to the quantity both saw."""
    a, b = pair_with("milk", 1)
    a.change_quantity("alice", "milk", 2)
    b.change_quantity("bob", "milk", 3)
    assert 6 == synced(a, b).items["milk"].quantity


def test_concurrent_adds_of_a_new_item_keep_the_larger_quantity() -> None:
    """Adding the same new item on two replicas is one need, not two: the larger quantity."""
    a, b = ShoppingList(), ShoppingList()
    a.add_item("alice", "milk", 2)
    b.add_item("bob", "milk", 1)
    assert {"milk": ItemView(2, False)} == synced(a, b).items


def test_adding_an_item_already_there_raises_it_and_unmarks_bought() -> None:
    """add_item on a bought item puts it back on the list with a larger quantity."""
    s = ShoppingList()
    s.add_item("alice", "milk", 2)
    s.mark_bought("alice", "milk")
    s.add_item("alice", "milk", 1)
    assert {"milk": ItemView(3, False)} == s.items


def test_concurrent_decrements_never_show_below_zero_and_the_next_change_starts_at_zero() -> None:
    """Two concurrent -2 on 3 show 0; a +1 after that shows 1."""
    a, b = pair_with("milk", 3)
    a.change_quantity("alice", "milk", -2)
    b.change_quantity("bob", "milk", -2)
    merged = synced(a, b)
    assert 0 == merged.items["milk"].quantity
    merged.change_quantity("alice", "milk", 1)
    assert 1 == merged.items["milk"].quantity


def test_deletion_cannot_be_undone_by_a_stale_replica() -> None:
    """A stale offline copy pushed after the delete does not bring the list back."""
    a, stale = pair_with("milk", 2)
    stale.rename("bob", "Old")
    a.delete("alice")
    pushed = a | stale
    assert (True, True) == (pushed.deleted, (stale | a).deleted)
    assert {"milk"} == set(stale.items)  # the stale copy itself is unchanged until it syncs
    assert "Old" == pushed.name  # what the delete did not see stays, read-only
    with pytest.raises(ListDeleted):
        pushed.add_item("bob", "bread")


def test_delete_clears_the_items_it_saw_and_keeps_the_name() -> None:
    """After a delete the state holds only the name's dot and the tombstone's dot."""
    s = ShoppingList()
    s.rename("alice", "Groceries")
    for item in ITEMS:
        s.add_item("alice", item, 2)
        s.mark_bought("alice", item)
    s.delete("alice")
    expected = {"name": "Groceries", "items": {}, "deleted": True}
    assert (expected, 2) == (s.value, s.stats().entries)


def test_a_deleted_list_keeps_its_name_everywhere_and_cannot_be_renamed() -> None:
    """The delete's delta leaves the name as it was on every replica; rename is refused."""
    a, b = ShoppingList(), ShoppingList()
    b.join(a.rename("alice", "Groceries"))
    b.join(a.delete("alice"))
    assert [("Groceries", ("Groceries",), True)] * 2 == [
        (s.name, s.names, s.deleted) for s in (a, b)
    ]
    with pytest.raises(ListDeleted):
        b.rename("bob", "Party")


def test_value_is_a_plain_dict() -> None:
    """value shows name, items (quantity and bought) and deleted as plain data."""
    s = ShoppingList()
    s.rename("alice", "Groceries")
    s.add_item("alice", "milk", 2)
    s.mark_bought("alice", "milk")
    expected = {
        "name": "Groceries",
        "items": {"milk": {"quantity": 2, "bought": True}},
        "deleted": False,
    }
    assert expected == s.value
    assert expected == json.loads(json.dumps(s.value))


def test_bottom_list_reads_empty() -> None:
    """ShoppingList() has no name, no items and is not deleted."""
    s = ShoppingList()
    assert ("", (), {}, False) == (s.name, s.names, s.items, s.deleted)


def test_new_list_ids_are_distinct_uuids() -> None:
    """new_list_id gives a canonical UUID string, a new one each time."""
    ids = {new_list_id() for _ in range(50)}
    assert 50 == len(ids)
    assert all(len(i) == 36 and i.count("-") == 4 for i in ids)


def test_sealing_bounds_metadata_by_sync_rounds() -> None:
    """100 taps on +1 over 4 sync rounds leave at most 4 counter dots for the item."""
    s = ShoppingList()
    s.seal()
    s.add_item("alice", "milk", 1)
    for _ in range(4):
        for _ in range(25):
            s.change_quantity("alice", "milk", 1)
        s.seal()
    assert 101 == s.items["milk"].quantity
    assert s.stats().entries <= 1 + 4


def test_a_change_after_shipping_is_not_folded_into_what_a_remove_saw() -> None:
    """The 4-instead-of-1 trap: after alice ships milk at 3, bob removes it and alice adds
    1; the list shows 1, not 4."""
    alice, bob = ShoppingList(), ShoppingList()
    alice.seal()
    alice.add_item("alice", "milk", 1)
    alice.change_quantity("alice", "milk", 2)
    bob.join(alice)
    alice.seal()  # alice shipped her state
    d_remove = bob.remove_item("bob", "milk")
    d_inc = alice.change_quantity("alice", "milk", 1)
    assert [1, 1] == [
        (alice | d_remove).items["milk"].quantity,
        (bob | d_inc).items["milk"].quantity,
    ]


def test_one_edit_ships_a_small_delta_whatever_the_list_size() -> None:
    """The delta of one edit is the same size for a 10-item and a 2,000-item list."""
    sizes = []
    for n in (10, 2000):
        s = ShoppingList()
        for i in range(n):
            s.add_item("alice", f"item{i:05d}", 1)
        sizes.append(len(s.change_quantity("bob", "item00003", 1).to_json()))
    assert sizes[0] == sizes[1]


# -- names (Rule 7) ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("milk", "milk"),
        ("  milk \t", "milk"),
        ("oat \t\n  milk", "oat milk"),
        ("caf\u0065\u0301", "caf\u00e9"),  # decomposed é becomes precomposed
        ("\u00a0Milk\u3000", "Milk"),  # no-break and ideographic spaces are whitespace
        ("MILK", "MILK"),  # case is kept
        (" " * 50 + "x" * MAX_NAME_LENGTH + " " * 50, "x" * MAX_NAME_LENGTH),
    ],
)
def test_normalize_name_gives_nfc_stripped_with_inner_whitespace_collapsed(
    typed: str, expected: str
) -> None:
    """normalize_name: NFC, no leading or trailing whitespace, one space between words."""
    assert expected == normalize_name(typed)


@pytest.mark.parametrize(
    ("typed", "match"),
    [
        ("", "must not be blank"),
        (" \t\r\n\u2003 ", "must not be blank"),
        ("x" * (MAX_NAME_LENGTH + 1), f"at most {MAX_NAME_LENGTH}"),
        (None, "must be a non-empty str"),
        (b"milk", "must be a non-empty str"),
    ],
)
def test_normalize_name_refuses_blank_too_long_and_non_str(typed: Any, match: str) -> None:
    """A name that is not a str, is blank, or is too long once normalised is an InvalidEdit."""
    with pytest.raises(InvalidEdit, match=match):
        normalize_name(typed)


@given(st.text(max_size=30))
def test_normalize_name_is_idempotent_and_canonical(text: str) -> None:
    """A normalised name is NFC, has no outer or doubled whitespace, and normalises to itself."""
    try:
        name = normalize_name(text)
    except InvalidEdit:
        tidy = " ".join(unicodedata.normalize("NFC", text).split())
        assert "" == tidy or name_problem(tidy) is not None
        return
    assert (name, name, name, False) == (
        normalize_name(name),
        unicodedata.normalize("NFC", name),
        " ".join(name.split()),
        "  " in name,
    )


@pytest.mark.parametrize(
    "hidden",
    [
        "\x1b[2J",  # ESC: clears another user's screen
        "\x00",
        "\x07",
        "\x7f",
        "\x9b",  # C1 control sequence introducer
        "\u202e",  # right-to-left override
        "\u2066",  # left-to-right isolate
        "\u200f",  # right-to-left mark
        "\u200b",  # zero-width space
        "\ufeff",
        "\u00ad",  # soft hyphen
        "\ud800",  # a lone surrogate
    ],
)
def test_names_an_edit_writes_refuse_control_and_invisible_format_characters(
    hidden: str,
) -> None:
    """add_item, rename_item's new name, rename and normalize_name refuse a name holding a
    control or invisible format character, with an InvalidEdit (a ValueError) naming it,
    and change nothing."""
    s = ShoppingList()
    s.add_item("r", "milk", 1)
    before = s.copy()
    name = f"milk{hidden}x"
    code = f"U+{ord(hidden[0]):04X}"
    for edit in (
        lambda: s.add_item("r", name, 1),
        lambda: s.rename_item("r", "milk", name),
        lambda: s.rename("r", name),
        lambda: normalize_name(name),
    ):
        with pytest.raises(ValueError, match=re.escape(f"holds {code} (")) as info:
            edit()
        assert isinstance(info.value, InvalidEdit)
    assert before == s


def test_names_keep_joiners_and_emoji_and_whitespace_controls_collapse() -> None:
    """Zero-width joiner and non-joiner, emoji tag sequences and private-use characters are
    allowed; tab, newline and line separators collapse to one space as before."""
    allowed = [
        "\U0001f468\u200d\U0001f469\u200d\U0001f467",  # family emoji (ZWJ sequence)
        "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",  # Persian, with ZWNJ
        "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",
        "\ue000 private",
    ]
    assert allowed == [normalize_name(n) for n in allowed]
    assert "oat milk" == normalize_name("oat\t\n\u2028\x1fmilk")


def test_items_a_hostile_replica_wrote_can_still_be_edited_and_removed() -> None:
    """A name with ESC that arrived in a raw delta (no mutator ran) is found by the
    lookups, so it can be marked and removed."""
    s, theirs = ShoppingList(), ShoppingList()
    d = theirs.add_item("r", "milk", 1)
    raw = json.loads(json.dumps(d.to_dict()).replace("milk", "\\u001b[2Jmilk"))
    s.join(ShoppingList.from_dict(raw))
    s.mark_bought("me", "\x1b[2Jmilk")
    assert {"\x1b[2Jmilk": ItemView(1, True)} == s.items
    s.remove_item("me", "\x1b[2Jmilk")
    assert {} == s.items


def test_spellings_of_one_name_are_one_item() -> None:
    """milk, " milk ", Milk and MILK all name the item milk: its quantity rises."""
    s = ShoppingList()
    for typed in ("milk", " milk ", "Milk", "MILK", "mIlk\t"):
        s.add_item("alice", typed, 1)
    assert {"milk": ItemView(5, False)} == s.items


def test_precomposed_and_decomposed_names_are_one_item() -> None:
    """café typed precomposed and decomposed is one row, stored precomposed (NFC)."""
    s = ShoppingList()
    s.add_item("alice", "caf\u00e9", 1)
    s.add_item("alice", "cafe\u0301", 2)
    s.add_item("alice", "CAFE\u0301", 3)
    assert {"caf\u00e9": ItemView(6, False)} == s.items


def test_a_new_item_keeps_the_spelling_given_once_normalised() -> None:
    """A brand-new item is stored as typed, normalised: case kept, whitespace tidied."""
    s = ShoppingList()
    s.add_item("alice", "  Oat \t  Milk ", 2)
    s.rename("alice", "  Weekend \n shop ")
    assert ({"Oat Milk": ItemView(2, False)}, "Weekend shop") == (s.items, s.name)


def test_every_edit_resolves_an_item_name_case_insensitively() -> None:
    """set, change, mark and remove reach the item milk whatever the case or spacing."""
    s = ShoppingList()
    s.add_item("alice", "milk", 2)
    s.set_quantity("alice", " MILK", 4)
    s.change_quantity("alice", "Milk ", 1)
    s.mark_bought("alice", "mIlK")
    assert {"milk": ItemView(5, True)} == s.items
    s.add_item("alice", "MILK", 1)  # raises milk and marks it not bought
    assert {"milk": ItemView(6, False)} == s.items
    s.remove_item("alice", "  MILK  ")
    assert {} == s.items


def test_find_item_and_in_resolve_exact_spelling_first_then_first_sorted() -> None:
    """With Milk and milk both on the list, an exact spelling picks its item; any other
    spelling picks the first in sorted order (Milk); an unknown or blank name is None."""
    a, b = ShoppingList(), ShoppingList()
    a.add_item("alice", "Milk", 1)
    b.add_item("bob", "milk", 2)
    s = synced(a, b)
    assert {"Milk": ItemView(1, False), "milk": ItemView(2, False)} == s.items
    found = [s.find_item(n) for n in ("milk", "Milk", " MILK ", "mILK", "tea", "  ", "")]
    assert ["milk", "Milk", "Milk", "Milk", None, None, None] == found
    assert (True, True, False, False) == ("MILK" in s, " milk" in s, "tea" in s, 5 in s)
    s.mark_bought("alice", "MILK")
    assert {"Milk": ItemView(1, True), "milk": ItemView(2, False)} == s.items


def test_concurrent_adds_in_two_cases_make_two_items_that_a_remove_merges() -> None:
    """Milk || milk gives two rows (the keys differ); removing one leaves the other."""
    a, b = ShoppingList(), ShoppingList()
    a.add_item("alice", "Milk", 1)
    b.add_item("bob", "milk", 2)
    s = synced(a, b)
    assert ["Milk", "milk"] == list(s.items)
    s.remove_item("alice", "Milk")
    s.add_item("alice", "MILK", 1)
    assert {"milk": ItemView(3, False)} == s.items


def test_find_item_follows_every_kind_of_change_of_the_list() -> None:
    """find_item is right after adds, removes, renames, joins, a delete and decoding."""
    s = ShoppingList()
    assert None is s.find_item("milk")
    s.add_item("alice", "Milk", 1)
    assert "Milk" == s.find_item("milk")
    s.rename_item("alice", "milk", "Oat milk")
    assert (None, "Oat milk") == (s.find_item("milk"), s.find_item("OAT MILK"))
    other = ShoppingList()
    other.add_item("bob", "milk", 1)
    s.join(other)
    assert ("milk", "Oat milk") == (s.find_item("MILK"), s.find_item("oat milk"))
    s.remove_item("alice", "MILK")
    assert None is s.find_item("milk")
    copied = ShoppingList.from_dict(s.to_dict())
    assert "Oat milk" == copied.find_item("oat  milk") == s.copy().find_item("oat  milk")
    s.delete("alice")
    assert None is s.find_item("oat milk")


def test_decoding_accepts_names_that_are_not_normalised_and_edits_reach_them() -> None:
    """A state from an older replica with the item "Milk " decodes as is; "milk" edits it."""
    data = {
        "type": "ShoppingList",
        "v": 1,
        "ctx": {"vv": {"old": 2}, "cloud": []},
        "entries": [
            ["old", 1, ["name", " groceries"]],
            ["old", 2, ["items", ["Milk ", ["set", 3]]]],
        ],
    }
    s = ShoppingList.from_dict(data)
    assert (" groceries", {"Milk ": ItemView(3, False)}) == (s.name, s.items)
    s.change_quantity("alice", "milk", 1)
    assert ({"Milk ": ItemView(4, False)}, "Milk ") == (s.items, s.find_item("MILK"))


# -- un-buying ---------------------------------------------------------------------------------


def test_unbuying_an_item_held_only_by_its_bought_mark_keeps_it_at_quantity_0() -> None:
    """remove || mark bought leaves milk at 0, bought; marking it not bought shows milk, 0,
    not bought, on every replica that gets the delta."""
    a, b = pair_with("milk", 3)
    a.remove_item("alice", "milk")
    b.mark_bought("bob", "milk")
    merged = synced(a, b)
    assert {"milk": ItemView(0, True)} == merged.items
    d_unbuy = merged.mark_bought("alice", "milk", bought=False)
    assert [{"milk": ItemView(0, False)}] * 3 == [
        merged.items,
        (a | b | d_unbuy).items,
        (b | d_unbuy | a).items,
    ]


def test_unbuying_an_item_with_a_quantity_writes_no_quantity() -> None:
    """When the quantity holds its own dot, un-buying only clears the mark, so a
    concurrent remove still takes the item off."""
    a, b = pair_with("milk", 3)
    b.join(a.mark_bought("alice", "milk"))
    d_unbuy = a.mark_bought("alice", "milk", bought=False)
    d_remove = b.remove_item("bob", "milk")
    assert (0, {}, {}) == (d_unbuy.stats().entries, (a | d_remove).items, (b | d_unbuy).items)


# -- renaming an item --------------------------------------------------------------------------


def test_rename_item_keeps_quantity_and_bought_in_one_delta() -> None:
    """milk (3, bought) renamed to oat milk is oat milk (3, bought), on both replicas."""
    a, b = pair_with("milk", 2)
    b.join(a.change_quantity("alice", "milk", 1))
    b.join(a.mark_bought("alice", "milk"))
    d_rename = a.rename_item("alice", "MILK", "  oat   milk ")
    b.join(d_rename)
    assert [{"oat milk": ItemView(3, True)}] * 2 == [a.items, b.items]


def test_rename_item_to_another_case_changes_the_spelling_only() -> None:
    """milk renamed to Milk is Milk with the same quantity; renaming to the very same
    name changes nothing (the delta is bottom)."""
    s = ShoppingList()
    s.add_item("alice", "milk", 4)
    s.add_item("alice", "eggs", 1)
    s.rename_item("alice", "milk", "Milk")
    assert {"Milk": ItemView(4, False), "eggs": ItemView(1, False)} == s.items
    before = s.copy()
    assert (ShoppingList(), before) == (s.rename_item("alice", "MILK", " Milk"), s)


def test_rename_item_refuses_a_name_that_another_item_has_in_any_case() -> None:
    """Renaming milk to Eggs, with eggs on the list, is refused and changes nothing."""
    s = ShoppingList()
    s.add_item("alice", "milk", 4)
    s.add_item("alice", "eggs", 1)
    before = s.copy()
    for new in ("eggs", "Eggs", " EGGS "):
        with pytest.raises(InvalidEdit, match="'eggs' is already on the list"):
            s.rename_item("alice", "milk", new)
    assert before == s


def test_an_edit_concurrent_with_rename_item_survives_under_the_old_name() -> None:
    """At 3, rename milk to oat milk || +1 on milk gives oat milk 3 and milk 1 (Rule 2)."""
    a, b = pair_with("milk", 3)
    d_rename = a.rename_item("alice", "milk", "oat milk")
    d_inc = b.change_quantity("bob", "milk", 1)
    expected = {"milk": ItemView(1, False), "oat milk": ItemView(3, False)}
    assert [expected] * 3 == [(a | b).items, (b | d_rename).items, (a | d_inc).items]


def test_concurrent_renames_of_an_item_give_one_item_per_spelling() -> None:
    """Two replicas renaming milk at once to two spellings give two items (names are
    keys); to the same spelling, one item with the quantity milk had."""
    a, b = pair_with("milk", 3)
    a.rename_item("alice", "milk", "oat milk")
    b.rename_item("bob", "Milk", "Oat Milk ")
    assert {"Oat Milk": ItemView(3, False), "oat milk": ItemView(3, False)} == synced(a, b).items
    c, d = pair_with("milk", 3)
    c.rename_item("alice", "milk", "oat milk")
    d.rename_item("bob", "milk", "oat milk")
    assert {"oat milk": ItemView(3, False)} == synced(c, d).items


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "error", "match"),
    [
        (lambda s: s.add_item("a", "", 1), InvalidEdit, "item name must not be blank"),
        (lambda s: s.add_item("a", " \t\n ", 1), InvalidEdit, "item name must not be blank"),
        (lambda s: s.add_item("a", "\u3000", 1), InvalidEdit, "item name must not be blank"),
        (lambda s: s.add_item("a", "x" * 200 + " y", 1), InvalidEdit, "at most 200"),
        (lambda s: s.change_quantity("a", "  ", 1), InvalidEdit, "item name must not be blank"),
        (lambda s: s.mark_bought("a", " "), InvalidEdit, "item name must not be blank"),
        (lambda s: s.remove_item("a", 7), InvalidEdit, "item name"),
        (lambda s: s.add_item("a", 5, 1), InvalidEdit, "item name"),
        (lambda s: s.add_item("a", "x" * 201, 1), InvalidEdit, "at most 200"),
        (lambda s: s.add_item("a", "bread", 0), InvalidEdit, "quantity must be"),
        (lambda s: s.add_item("a", "bread", True), InvalidEdit, "quantity must be"),
        (lambda s: s.change_quantity("a", "milk", 0), InvalidEdit, "must not be 0"),
        (lambda s: s.change_quantity("a", "milk", -3), InvalidEdit, "cannot drop"),
        (lambda s: s.change_quantity("a", "bread", 1), UnknownItem, "not on the list"),
        (lambda s: s.set_quantity("a", "milk", -1), InvalidEdit, "quantity must be"),
        (lambda s: s.set_quantity("a", "bread", 1), UnknownItem, "not on the list"),
        (lambda s: s.mark_bought("a", "milk", 1), InvalidEdit, "True or False"),
        (lambda s: s.mark_bought("a", "bread"), UnknownItem, "not on the list"),
        (lambda s: s.remove_item("a", "bread"), UnknownItem, "not on the list"),
        (lambda s: s.rename("a", ""), InvalidEdit, "list name"),
        (lambda s: s.rename("a", "  \t "), InvalidEdit, "list name must not be blank"),
        (lambda s: s.rename_item("a", "bread", "rye"), UnknownItem, "not on the list"),
        (lambda s: s.rename_item("a", "milk", "EGGS"), InvalidEdit, "already on the list"),
        (lambda s: s.rename_item("a", "milk", " "), InvalidEdit, "item name must not be blank"),
        (lambda s: s.rename_item("a", "milk", 3), InvalidEdit, "item name"),
        (lambda s: s.rename_item("", "milk", "oat milk"), InvalidArgument, "replica id"),
        (lambda s: s.rename("", "x"), InvalidArgument, "replica id"),
    ],
)
def test_bad_edits_raise_clear_errors_and_change_nothing(edit: Any, error: Any, match: str) -> None:
    """Every bad edit raises a ValueError subclass naming the problem; the list is unchanged."""
    s = ShoppingList()
    s.add_item("a", "milk", 2)
    s.add_item("a", "eggs", 6)
    before = s.digest()
    with pytest.raises(error, match=match):
        edit(s)
    assert issubclass(error, ValueError)
    assert before == s.digest()


def test_every_edit_of_a_deleted_list_is_refused() -> None:
    """After delete, each mutator raises ListDeleted (a ValueError) and changes nothing."""
    s = ShoppingList()
    s.add_item("a", "milk", 2)
    s.delete("a")
    edits = [
        lambda: s.add_item("a", "milk"),
        lambda: s.change_quantity("a", "milk", 1),
        lambda: s.set_quantity("a", "milk", 1),
        lambda: s.mark_bought("a", "milk"),
        lambda: s.remove_item("a", "milk"),
        lambda: s.rename("a", "x"),
        lambda: s.rename_item("a", "milk", "oat milk"),
        lambda: s.delete("a"),
    ]
    before = s.copy()
    for edit in edits:
        with pytest.raises(ListDeleted):
            edit()
    assert before == s


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        (["a", 1, ["name", 7]], "list name"),
        (["a", 1, ["items", ["", ["add", 1]]]], "item name"),
        (["a", 1, ["items", ["milk", ["set", -1]]]], "quantity of 'milk'"),
        (["a", 1, ["items", ["milk", ["colour", 1]]]], "no field"),
        (["a", 1, ["deleted", 1]], "expected null"),
    ],
)
def test_decoding_a_malformed_list_says_what_is_wrong(entry: list[Any], match: str) -> None:
    """from_dict refuses garbage with a DecodeError naming the problem."""
    data = {
        "type": "ShoppingList",
        "v": 1,
        "ctx": {"vv": {"a": 1}, "cloud": []},
        "entries": [entry],
    }
    with pytest.raises(DecodeError, match=match):
        ShoppingList.from_dict(data)


# -- the laws ----------------------------------------------------------------------------------


class LenientList(ShoppingList):
    """A ShoppingList whose law-test operations turn a refused edit into the bottom delta,
    so that generated histories can go on after a delete or an unknown item."""

    __slots__ = ()

    def _try(self, edit: Any) -> LenientList:
        try:
            delta: LenientList = edit()
        except (InvalidEdit, ListDeleted):
            return LenientList()
        return delta

    def try_add(self, replica: str, item: str, quantity: int) -> LenientList:
        """add_item, or bottom if refused."""
        return self._try(lambda: self.add_item(replica, item, quantity))

    def try_change(self, replica: str, item: str, delta: int) -> LenientList:
        """change_quantity, or bottom if refused."""
        return self._try(lambda: self.change_quantity(replica, item, delta))

    def try_set(self, replica: str, item: str, quantity: int) -> LenientList:
        """set_quantity, or bottom if refused."""
        return self._try(lambda: self.set_quantity(replica, item, quantity))

    def try_mark(self, replica: str, item: str, bought: bool) -> LenientList:
        """mark_bought, or bottom if refused."""
        return self._try(lambda: self.mark_bought(replica, item, bought))

    def try_remove(self, replica: str, item: str) -> LenientList:
        """remove_item, or bottom if refused."""
        return self._try(lambda: self.remove_item(replica, item))

    def try_rename(self, replica: str, name: str) -> LenientList:
        """rename, or bottom if refused."""
        return self._try(lambda: self.rename(replica, name))

    def try_rename_item(self, replica: str, item: str, new_name: str) -> LenientList:
        """rename_item, or bottom if refused."""
        return self._try(lambda: self.rename_item(replica, item, new_name))

    def try_delete(self, replica: str, roll: int) -> LenientList:
        """delete one time in eight, so that histories mostly stay alive."""
        return self._try(lambda: self.delete(replica)) if roll == 0 else LenientList()

    def ship(self, replica: str) -> LenientList:
        """Seal (so that later changes fold); the delta is bottom."""
        self.seal()
        return LenientList()


_items = st.sampled_from(SPELLINGS)
LIST_OPERATIONS = {
    "try_add": st.tuples(_items, st.integers(1, 3)),
    "try_change": st.tuples(_items, st.sampled_from([-2, -1, 1, 2])),
    "try_set": st.tuples(_items, st.integers(0, 3)),
    "try_mark": st.tuples(_items, st.booleans()),
    "try_remove": st.tuples(_items),
    "try_rename": st.tuples(st.sampled_from(NAMES)),
    "try_rename_item": st.tuples(_items, _items),
    "try_delete": st.tuples(st.integers(0, 7)),
    "ship": st.just(()),
}


def shopping_lists(*, replicas: int = 3, max_ops: int = 30) -> st.SearchStrategy[ShoppingList]:
    """ShoppingList states reached by replaying generated edit-and-sync histories."""
    return st.tuples(
        histories(LenientList, LIST_OPERATIONS, replicas=replicas, max_ops=max_ops),
        st.integers(0, replicas - 1),
    ).map(lambda hi: hi[0].replicas[hi[1]])


TestShoppingListLaws = check_laws(LenientList, LIST_OPERATIONS, max_ops=30)


# -- replicas against a model ------------------------------------------------------------------


@attrs.frozen
class Event:
    """One edit: the atom it creates (kind S set, C change, B bought, N name, T tombstone,
    or None) and the atoms it observed and removed."""

    kind: str | None
    item: str | None
    value: Any
    kills: frozenset[int]


@attrs.frozen
class View:
    """What the model says a replica shows, plus the raw tallies an edit decides on."""

    names: tuple[str, ...]
    items: dict[str, ItemView]
    raw: dict[str, int]
    atoms: dict[str, frozenset[int]]
    deleted: bool
    name_atoms: frozenset[int]


def model_view(events: list[Event], known: set[int]) -> View:
    """The list as the model computes it from the events a replica knows."""
    killed: set[int] = set()
    for i in known:
        killed |= events[i].kills
    alive = [i for i in sorted(known) if events[i].kind is not None and i not in killed]
    sets: dict[str, list[int]] = {}
    adds: dict[str, int] = {}
    bought: dict[str, bool] = {}
    atoms: dict[str, set[int]] = {}
    names: set[str] = set()
    name_atoms: set[int] = set()
    deleted = False
    for i in alive:
        e = events[i]
        if e.kind == "N":
            names.add(e.value)
            name_atoms.add(i)
        elif e.kind == "T":
            deleted = True
        else:
            assert e.item is not None
            atoms.setdefault(e.item, set()).add(i)
            if e.kind == "S":
                sets.setdefault(e.item, []).append(e.value)
            elif e.kind == "C":
                adds[e.item] = adds.get(e.item, 0) + e.value
            else:
                bought[e.item] = True
    raw = {item: max(sets.get(item, [0])) + adds.get(item, 0) for item in atoms}
    return View(
        names=tuple(sorted(names)),
        items={item: ItemView(max(raw[item], 0), bought.get(item, False)) for item in atoms},
        raw=raw,
        atoms={item: frozenset(a) for item, a in atoms.items()},
        deleted=deleted,
        name_atoms=frozenset(name_atoms),
    )


def _of_kind(events: list[Event], atoms: frozenset[int], kinds: str) -> frozenset[int]:
    return frozenset(i for i in atoms if events[i].kind in kinds)


def model_name(typed: str) -> str:
    """The model's normalisation of the ASCII names the machine types."""
    return " ".join(typed.split())


def model_resolve(view: View, typed: str) -> str | None:
    """The item a typed name refers to: the exact spelling, else the first item in sorted
    order that matches ignoring case, else None."""
    name = model_name(typed)
    if name in view.items:
        return name
    same = sorted(item for item in view.items if item.lower() == name.lower())
    return same[0] if same else None


@attrs.define
class Replica:
    """A replica's list, the join of its deltas since its last ship, and what it knows."""

    state: ShoppingList
    pending: ShoppingList = attrs.field(factory=ShoppingList)
    pending_events: set[int] = attrs.field(factory=set)
    known: set[int] = attrs.field(factory=set)


N_REPLICAS = 3
replica_ids = st.integers(0, N_REPLICAS - 1)


class ShoppingListMachine(RuleBasedStateMachine):
    """Three replicas edit one list offline and sync by deltas (late, reordered, twice) and
    by whole states, following the shipping contract; each always shows what the model
    computes from the edits it has heard of."""

    def __init__(self) -> None:
        super().__init__()
        self.replicas = []
        for _ in range(N_REPLICAS):
            rep = Replica(ShoppingList())
            rep.state.seal()
            self.replicas.append(rep)
        self.events: list[Event] = []
        self.network: list[tuple[int, ShoppingList, frozenset[int]]] = []

    def _edit(
        self, r: int, edit: Any, event: Event | list[Event] | None, error: type[Exception] | None
    ) -> None:
        """Run ``edit`` on replica ``r``: refused with ``error``, or recorded as ``event``
        (a list of events made by one delta; an empty list for a bottom delta)."""
        rep = self.replicas[r]
        if error is not None:
            before = rep.state.digest()
            with pytest.raises(error):
                edit(rep.state, f"r{r}")
            assert before == rep.state.digest()
            return
        assert event is not None
        events = event if isinstance(event, list) else [event]
        delta = edit(rep.state, f"r{r}")
        if not events:
            assert ShoppingList() == delta
        for e in events:
            self.events.append(e)
            i = len(self.events) - 1
            rep.known.add(i)
            rep.pending_events.add(i)
        rep.pending.join(delta)

    def _view(self, r: int) -> View:
        return model_view(self.events, self.replicas[r].known)

    def _quantity_event(self, view: View, item: str, by: int) -> tuple[Event | None, Any]:
        """The event of changing ``item`` by ``by`` as the model rules it (Rule 1)."""
        raw = view.raw[item]
        shown = max(raw, 0)
        if shown + by < 0:
            return None, InvalidEdit
        if raw < 0:
            kills = _of_kind(self.events, view.atoms[item], "SC")
            return Event("S", item, shown + by, kills), None
        return Event("C", item, by, frozenset()), None

    @rule(r=replica_ids, typed=st.sampled_from(SPELLINGS), quantity=st.integers(1, 3))
    def add_item(self, r: int, typed: str, quantity: int) -> None:
        """Add an item (new: starts at quantity; present: raised and marked not bought)."""
        view = self._view(r)
        item = model_resolve(view, typed)
        event: Event | None
        error: Any = None
        if view.deleted:
            event, error = None, ListDeleted
        elif item is None:
            event = Event("S", model_name(typed), quantity, frozenset())
        else:
            event, error = self._quantity_event(view, item, quantity)
            assert event is not None
            unbuy = _of_kind(self.events, view.atoms[item], "B")
            event = attrs.evolve(event, kills=event.kills | unbuy)
        self._edit(r, lambda s, rid: s.add_item(rid, typed, quantity), event, error)

    @rule(r=replica_ids, typed=st.sampled_from(SPELLINGS), by=st.sampled_from([-3, -1, 1, 2]))
    def change_quantity(self, r: int, typed: str, by: int) -> None:
        """Change an item's quantity by a non-zero amount."""
        view = self._view(r)
        item = model_resolve(view, typed)
        event: Event | None = None
        error: Any = None
        if view.deleted:
            error = ListDeleted
        elif item is None:
            error = UnknownItem
        else:
            event, error = self._quantity_event(view, item, by)
        self._edit(r, lambda s, rid: s.change_quantity(rid, typed, by), event, error)

    @rule(r=replica_ids, typed=st.sampled_from(SPELLINGS), quantity=st.integers(0, 4))
    def set_quantity(self, r: int, typed: str, quantity: int) -> None:
        """Set an item's quantity."""
        view = self._view(r)
        item = model_resolve(view, typed)
        event: Event | None = None
        error: Any = None
        if view.deleted:
            error = ListDeleted
        elif item is None:
            error = UnknownItem
        else:
            event = Event("S", item, quantity, _of_kind(self.events, view.atoms[item], "SC"))
        self._edit(r, lambda s, rid: s.set_quantity(rid, typed, quantity), event, error)

    @rule(r=replica_ids, typed=st.sampled_from(SPELLINGS), bought=st.booleans())
    def mark_bought(self, r: int, typed: str, bought: bool) -> None:
        """Mark an item bought or not bought; un-buying an item that only its bought mark
        holds also sets its quantity to what it shows, so the item stays."""
        view = self._view(r)
        item = model_resolve(view, typed)
        event: Event | None = None
        error: Any = None
        if view.deleted:
            error = ListDeleted
        elif item is None:
            error = UnknownItem
        else:
            kills = _of_kind(self.events, view.atoms[item], "B")
            if bought:
                event = Event("B", item, None, kills)
            elif kills == view.atoms[item]:
                event = Event("S", item, view.items[item].quantity, kills)
            else:
                event = Event(None, item, None, kills)
        self._edit(r, lambda s, rid: s.mark_bought(rid, typed, bought), event, error)

    @rule(r=replica_ids, typed=st.sampled_from(SPELLINGS))
    def remove_item(self, r: int, typed: str) -> None:
        """Remove an item as this replica sees it."""
        view = self._view(r)
        item = model_resolve(view, typed)
        event: Event | None = None
        error: Any = None
        if view.deleted:
            error = ListDeleted
        elif item is None:
            error = UnknownItem
        else:
            event = Event(None, item, None, view.atoms[item])
        self._edit(r, lambda s, rid: s.remove_item(rid, typed), event, error)

    @rule(r=replica_ids, typed=st.sampled_from(SPELLINGS), new=st.sampled_from(SPELLINGS))
    def rename_item(self, r: int, typed: str, new: str) -> None:
        """Rename an item: remove it as seen and add the new name with its quantity and
        bought mark; refused if another item has the new name in any case."""
        view = self._view(r)
        item = model_resolve(view, typed)
        name = model_name(new)
        events: list[Event] | None = None
        error: Any = None
        if view.deleted:
            error = ListDeleted
        elif item is None:
            error = UnknownItem
        elif name == item:
            events = []
        elif any(k != item and k.lower() == name.lower() for k in view.items):
            error = InvalidEdit
        else:
            shown = view.items[item]
            events = [Event("S", name, shown.quantity, view.atoms[item])]
            if shown.bought:
                events.append(Event("B", name, None, frozenset()))
        self._edit(r, lambda s, rid: s.rename_item(rid, typed, new), events, error)

    @rule(r=replica_ids, name=st.sampled_from(NAMES))
    def rename(self, r: int, name: str) -> None:
        """Rename the list."""
        view = self._view(r)
        if view.deleted:
            self._edit(r, lambda s, rid: s.rename(rid, name), None, ListDeleted)
        else:
            event = Event("N", None, name, view.name_atoms)
            self._edit(r, lambda s, rid: s.rename(rid, name), event, None)

    @rule(r=replica_ids, roll=st.integers(0, 5))
    def delete(self, r: int, roll: int) -> None:
        """Delete the list (one roll in six, so that most runs edit a live list for long);
        the delete clears the items it saw and keeps the name."""
        if roll != 0:
            return
        view = self._view(r)
        if view.deleted:
            self._edit(r, lambda s, rid: s.delete(rid), None, ListDeleted)
            return
        items = frozenset[int]().union(*view.atoms.values())
        self._edit(r, lambda s, rid: s.delete(rid), Event("T", None, None, items), None)

    @rule(src=replica_ids, dst=replica_ids)
    def ship_deltas(self, src: int, dst: int) -> None:
        """A replica ships the join of its deltas since its last ship, then seals."""
        rep = self.replicas[src]
        self.network.append((dst, rep.pending, frozenset(rep.pending_events)))
        rep.pending, rep.pending_events = ShoppingList(), set()
        rep.state.seal()

    @rule(src=replica_ids, dst=replica_ids)
    def ship_state(self, src: int, dst: int) -> None:
        """A replica's whole state reaches another at once; the sender seals."""
        a, b = self.replicas[src], self.replicas[dst]
        b.state.join(a.state)
        b.known |= a.known
        a.state.seal()

    @precondition(lambda self: self.network)
    @rule(pick=st.integers(0, 1000), keep=st.booleans())
    def deliver(self, pick: int, keep: bool) -> None:
        """A message in flight arrives, in any order, possibly again later."""
        k = pick % len(self.network)
        dst, delta, events = self.network[k] if keep else self.network.pop(k)
        self.replicas[dst].state.join(delta)
        self.replicas[dst].known |= events

    @invariant()
    def every_replica_shows_what_the_model_computes(self) -> None:
        """Name, names, items (quantity, bought) and deletion match the model everywhere."""
        for r, rep in enumerate(self.replicas):
            view = self._view(r)
            expected = (view.names[0] if view.names else "", view.names, view.items, view.deleted)
            actual = (rep.state.name, rep.state.names, rep.state.items, rep.state.deleted)
            assert expected == actual

    @invariant()
    def every_replica_resolves_names_as_the_model_does(self) -> None:
        """find_item gives the item each spelling refers to, as the model computes it."""
        for r, rep in enumerate(self.replicas):
            view = self._view(r)
            expected = [model_resolve(view, typed) for typed in SPELLINGS]
            assert expected == [rep.state.find_item(typed) for typed in SPELLINGS]

    def teardown(self) -> None:
        """Once everyone has everything, the replicas are equal, byte for byte."""
        merged = synced(*(rep.state for rep in self.replicas))
        everything = set(range(len(self.events)))
        assert model_view(self.events, everything).items == merged.items
        digests = {(rep.state | merged).digest() for rep in self.replicas}
        assert {merged.digest()} == digests


TestShoppingListReplicasAgainstModel = ShoppingListMachine.TestCase


@given(shopping_lists(), shopping_lists())
def test_delta_for_a_peer_brings_it_up_to_date(a: ShoppingList, b: ShoppingList) -> None:
    """Joining a.delta_for(b.context) into b gives the same list as joining all of a."""
    assert b | a == b | a.delta_for(b.context)


@given(shopping_lists())
def test_generated_lists_read_as_plain_json_and_round_trip(s: ShoppingList) -> None:
    """Every reachable list has a JSON-safe value and decodes back to itself."""
    assert s.value == json.loads(json.dumps(s.value))
    assert s == type(s).from_dict(json.loads(s.to_json()))
    assert all(view.quantity >= 0 for view in s.items.values())


def stocked() -> LenientList:
    """A list with milk 2 and eggs 1, added by the replica "seed" (the same on every call)."""
    s = LenientList()
    s.add_item("seed", "milk", 2)
    s.add_item("seed", "eggs", 1)
    return s


_ITEM_EDITS = ("try_add", "try_change", "try_set", "try_mark", "try_remove", "try_rename_item")
item_edits = st.lists(
    st.sampled_from(_ITEM_EDITS).flatmap(lambda op: st.tuples(st.just(op), LIST_OPERATIONS[op])),
    max_size=5,
)


@example(mine=[("try_remove", ("milk",))], theirs=[("try_mark", ("milk", True))])
@given(mine=item_edits, theirs=item_edits)
def test_unbuying_never_takes_an_item_off_the_list(
    mine: list[tuple[str, tuple[Any, ...]]], theirs: list[tuple[str, tuple[Any, ...]]]
) -> None:
    """Whatever two replicas of a stocked list did concurrently, once they are joined,
    marking any item not bought leaves it on the list with the same quantity."""
    a, b = stocked(), stocked()
    for op, args in mine:
        getattr(a, op)("alice", *args)
    for op, args in theirs:
        getattr(b, op)("bob", *args)
    merged = a | b
    for item, view in merged.items.items():
        after = merged.copy()
        after.mark_bought("carol", item, bought=False)
        assert ItemView(view.quantity, False) == after.items.get(item)
