"""What ``shoplist`` prints for a person: columns that line up in a terminal, plurals, the
text of a list and of an edit's result.

Widths are counted in terminal cells, not characters: an East Asian wide or full-width
character (CJK, most emoji) takes two cells, a combining mark none. A name longer than
its column is cut and ends in ``…``, so one long item never widens the whole table.

Names and other text from the network or another replica are shown through
:func:`shown`: a control character (ESC starts the sequences that clear a screen, move
the cursor or retitle a window), an invisible format character (a bidirectional override
reorders what follows) or a line separator is printed as an escape (``\x1b``, ``\u202e``),
never raw. The edits refuse such names (``shopping_list.name_problem``), but a replica
that bypasses them can push any state. JSON output (``--json``) is exact: ``json.dumps``
escapes every such character itself.
"""

from __future__ import annotations

import json
import sys
import unicodedata
from typing import Any

from reference_cluster.shopping_list import ItemView, ShoppingList, name_problem

__all__ = [
    "ITEM_WIDTH",
    "NAME_WIDTH",
    "Out",
    "cells",
    "fit",
    "item_text",
    "plural",
    "show_text",
    "shown",
    "view_text",
]

ITEM_WIDTH = 32
"""The widest the item column of ``show`` grows, in cells."""
NAME_WIDTH = 24
"""The width of the name column of ``lists``, in cells."""


class Out:
    """Prints a command's answer: text for a person, or with ``as_json`` one JSON object."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def emit(self, data: dict[str, Any], text: str) -> None:
        """Print the answer (``data`` as JSON, or ``text``)."""
        print(json.dumps(data, sort_keys=True) if self.as_json else text)

    def note(self, text: str) -> None:
        """A remark for a person, on standard error (nothing in JSON mode)."""
        if not self.as_json:
            print(text, file=sys.stderr)


def _hidden(ch: str) -> bool:
    """Whether ``ch`` must not reach a terminal raw: what names refuse, and the line and
    paragraph separators and spaces other than the ASCII one."""
    category = unicodedata.category(ch)
    if category in ("Zl", "Zp") or (category == "Zs" and ch != " "):
        return True
    return name_problem(ch) is not None


def _escape(ch: str) -> str:
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def shown(text: str) -> str:
    """``text`` safe to print on a terminal: each control character, invisible format
    character (bidirectional overrides and isolates, zero-width spaces ...), line or
    paragraph separator and non-ASCII space becomes an escape as Python writes it
    (``\\x1b``, ``\\x0a`` for a newline, ``\\u202e``); everything else is unchanged, so
    a name the edits accept is shown exactly."""
    if text.isprintable():
        return text
    return "".join(_escape(ch) if _hidden(ch) else ch for ch in text)


def _char_cells(ch: str) -> int:
    if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def cells(text: str) -> int:
    """How many terminal cells ``text`` takes."""
    return sum(_char_cells(ch) for ch in text)


def fit(text: str, width: int, *, right: bool = False) -> str:
    """``text`` in exactly ``width`` cells: cut with ``…`` if longer, padded if shorter
    (on the left when ``right``)."""
    if cells(text) > width:
        out, used = [], 0
        for ch in text:
            need = _char_cells(ch)
            if used + need > width - 1:
                break
            out.append(ch)
            used += need
        text = "".join(out) + "…"
    pad = " " * max(0, width - cells(text))
    return pad + text if right else text + pad


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 list``, ``2 lists`` (``many`` for an irregular plural)."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def view_text(view: ItemView | None) -> str:
    """An item's state in words: ``3``, ``3, bought``, ``not on the list``."""
    if view is None:
        return "not on the list"
    return f"{view.quantity}{', bought' if view.bought else ''}"


def item_text(item: str, view: ItemView | None) -> str:
    """One item as a sentence: ``milk: 3``, ``milk: 3, bought``, ``milk: not on the list``
    (the name through :func:`shown`)."""
    return f"{shown(item)}: {view_text(view)}"


def show_text(list_id: str, state: ShoppingList, queued: int) -> str:
    """The text of ``shoplist show``: the name, the items in columns, a summary line (every
    name through :func:`shown`)."""
    title = shown(state.name) or "(no name)"
    if len(state.names) > 1:
        others = ", ".join(shown(n) for n in state.names if n != state.name)
        title += f"  (also named: {others})"
    lines = [f"{title}  [{shown(list_id)}]"]
    items = {} if state.deleted else state.items
    if state.deleted:
        lines.append("  this list was deleted by its owner ('shoplist forget' removes it here)")
    elif items:
        width = min(ITEM_WIDTH, max(4, *(cells(shown(i)) for i in items)))
        lines.append(f"  {fit('ITEM', width)}  {'QTY':>7}  BOUGHT")
        for item, view in items.items():
            name = fit(shown(item), width)
            row = f"  {name}  {view.quantity:>7}  {'yes' if view.bought else ''}"
            lines.append(row.rstrip())
    else:
        lines.append("  (empty)")
    if not state.deleted:
        to_buy = sum(1 for v in items.values() if not v.bought and v.quantity > 0)
        tail = f"  {plural(len(items), 'item')}, {to_buy} to buy"
    else:
        tail = ""
    if queued:
        tail += f"{',' if tail else ' '} {plural(queued, 'edit')} not yet synced"
    if tail:
        lines.append(tail)
    return "\n".join(lines)
