"""What ``shoplist`` prints: columns in terminal cells, cut names, plurals."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from reference_cluster.cli.output import ITEM_WIDTH, cells, fit, plural, show_text
from reference_cluster.shopping_list import ShoppingList

LIST_ID = "3f2a0000-0000-4000-8000-000000000000"


def test_wide_and_combining_characters_take_their_cells() -> None:
    assert (4, 2, 1, 2) == (cells("milk"), cells("牛乳") // 2, cells("e\u0301"), cells("🥛"))


@given(st.text(max_size=80), st.integers(1, 40), st.booleans())
def test_fit_always_fills_exactly_the_width(text: str, width: int, right: bool) -> None:
    shown = fit(text, width, right=right)
    assert cells(shown) == width or (cells(shown) == width - 1 and shown.endswith("…"))
    if cells(text) <= width:
        pad = " " * (width - cells(text))
        assert (pad + text if right else text + pad) == shown


def test_one_long_item_does_not_widen_the_table_and_wide_names_align() -> None:
    state = ShoppingList()
    for item, qty in (("x" * 200, 1), ("牛乳", 2), ("milk", 3)):
        state.add_item("r", item, qty)
    state.mark_bought("r", "milk")
    rows = show_text(LIST_ID, state, 0).splitlines()[2:-1]
    ends = []
    for row in rows:
        match = re.search(r"(\d+)(  yes)?$", row)
        assert match is not None, row
        ends.append(cells(row[: match.end(1)]))
    assert [2 + ITEM_WIDTH + 2 + 7] * 3 == ends, rows
    assert 1 == sum("x" * (ITEM_WIDTH - 1) + "…  " in row for row in rows), rows


def test_plurals() -> None:
    assert ["0 lists", "1 list", "2 lists", "1 entry", "3 entries"] == [
        plural(0, "list"),
        plural(1, "list"),
        plural(2, "list"),
        plural(1, "entry", "entries"),
        plural(3, "entry", "entries"),
    ]
