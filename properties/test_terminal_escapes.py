"""Names from another replica never reach a terminal raw: a list whose state holds a name
with ESC[2J (clear the screen), a newline and U+202E (right-to-left override), put there by
a raw delta that no mutator checked, is shown by ``shoplist`` with those characters
escaped; ``--json`` keeps them exact."""

from __future__ import annotations

import json
import unicodedata
import uuid
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reference_cluster.cli.output import shown
from reference_cluster.cli.shoplist import main as shoplist
from reference_cluster.shopping_list import ShoppingList, name_problem
from reference_cluster.storage.client_store import ClientSession, ClientStore

LIST_ID = str(uuid.UUID(int=0x5E))
EVIL_LIST = "\x1b[2JWeek\nend\u202e"
EVIL_ITEM = "\x1b[2Jmi\nlk\u202e"
EVIL_RENAME = "\x1b]0;owned\x07Party"


def hostile_state() -> ShoppingList:
    """A list named EVIL_LIST (and, concurrently, EVIL_RENAME) holding EVIL_ITEM: made
    with the mutators from harmless names, then rewritten in its encoding, as a replica
    that skips the mutators could push it."""
    one, two = ShoppingList(), ShoppingList()
    one.rename("r1", "Weekend")
    one.add_item("r1", "milk", 2)
    two.rename("r2", "Party")
    one.join(two)
    text = json.dumps(one.to_dict())
    for harmless, evil in (("Weekend", EVIL_LIST), ("milk", EVIL_ITEM), ("Party", EVIL_RENAME)):
        text = text.replace(f'"{harmless}"', json.dumps(evil))
    return ShoppingList.from_dict(json.loads(text))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A device home for alice, logged in, holding the hostile list (joined as a delta)."""
    home = tmp_path / "home"
    home.mkdir()
    with ClientStore(home / "alice.sqlite", ShoppingList) as store:
        store.set_session(ClientSession("alice", "u-1", "token", 4e9))
        store.add_list(LIST_ID)
        store.merge(LIST_ID, hostile_state())
    return home


def raw_controls(text: str) -> list[str]:
    """The characters of ``text`` that would drive or disguise a terminal, newlines that
    separate the output's own lines apart."""
    return [
        f"U+{ord(c):04X}"
        for c in text
        if c != "\n" and (unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp"))
    ]


def run(home: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``shoplist`` offline as alice; return its status, stdout and stderr."""
    status = shoplist(["--home", str(home), "--user", "alice", "--offline", *argv])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize(
    "argv",
    [
        ("show", LIST_ID),
        ("lists",),
        ("buy", LIST_ID, EVIL_ITEM),
        ("qty", LIST_ID, EVIL_ITEM, "+1"),
        ("rename-item", LIST_ID, EVIL_ITEM, "oat milk"),
        ("remove", LIST_ID, EVIL_ITEM),
    ],
    ids=["show", "lists", "buy", "qty", "rename-item", "remove"],
)
def test_no_raw_control_character_reaches_the_terminal(
    home: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]
) -> None:
    """Every command that prints the hostile names prints them escaped: no control or
    format character on stdout or stderr, and no extra line from the embedded newline."""
    status, out, err = run(home, capsys, *argv)
    assert (0, [], []) == (status, raw_controls(out), raw_controls(err))
    assert "\\x1b[2J" in out


def test_show_prints_every_name_escaped_on_its_own_lines(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``show`` has its usual four lines; the names read as Python escapes."""
    _, out, _ = run(home, capsys, "show", LIST_ID)
    lines = out.rstrip("\n").split("\n")
    assert 4 == len(lines)
    assert lines[0].startswith("\\x1b[2JWeek\\x0aend\\u202e  (also named: \\x1b]0;owned\\x07Party)")
    assert lines[2].startswith("  \\x1b[2Jmi\\x0alk\\u202e")


def test_json_output_keeps_the_names_exact(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--json`` carries the names exactly (JSON escapes them itself), so a script sees
    what the replica wrote."""
    _, out, _ = run(home, capsys, "--json", "show", LIST_ID)
    view = json.loads(out)
    assert [] == raw_controls(out)
    assert (sorted([EVIL_LIST, EVIL_RENAME]), [EVIL_ITEM]) == (
        sorted(view["names"]),
        list(view["items"]),
    )


# -- shown --------------------------------------------------------------------------------


@given(st.text(max_size=40))
def test_shown_leaves_no_hidden_character_and_keeps_acceptable_names(text: str) -> None:
    """shown() output holds no control, format (other than the joiners names allow), line
    separator or non-ASCII space character; a string the name rule accepts and without
    such whitespace is unchanged."""
    out = shown(text)
    hidden = [
        c
        for c in out
        if name_problem(c) is not None
        or unicodedata.category(c) in ("Zl", "Zp")
        or (unicodedata.category(c) == "Zs" and c != " ")
    ]
    assert [] == hidden
    plain = all(unicodedata.category(c) not in ("Zl", "Zp", "Zs") or c == " " for c in text)
    if name_problem(text) is None and plain:
        assert text == out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("milk", "milk"),
        ("\x1b[2J", "\\x1b[2J"),
        ("a\nb", "a\\x0ab"),
        ("\u202eevil", "\\u202eevil"),
        ("\u2028", "\\u2028"),
        ("\U000e0001", "\\U000e0001"),
        ("\ud800", "\\ud800"),
        ("caf\u00e9 \U0001f468\u200d\U0001f469", "caf\u00e9 \U0001f468\u200d\U0001f469"),
    ],
)
def test_shown_escapes_as_python_writes_escapes(text: str, expected: str) -> None:
    """Escapes read as in Python source: \\xNN, \\uNNNN, \\UNNNNNNNN."""
    assert expected == shown(text)
