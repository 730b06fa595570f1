"""The reported directory attack: a DirectoryPush of a user's account with an earlier
``created`` time and another password hash replaced the password cluster-wide. The merge
now never lets an older record change a live account's password: for one user id only a
higher password version (a password change) does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reference_cluster.cores.accounts import ScryptParams, hash_password
from reference_cluster.cores.directory import Directory
from reference_cluster.protocol.messages import DirectoryPush, LogIn, SignUp, Welcome
from reference_cluster.shopping_list import ShoppingList
from reference_cluster.storage.server_store import ServerStore

CHEAP = ScryptParams(n=2**8, r=8, p=1)
PASSWORD = "correct horse battery"
NOW = 1_000_000.0

try:
    from reference_cluster.cores.directory import run_inline
except ImportError:  # before hashing moved off the loop, handle() answered at once

    def run_inline(outcome: Any, now: float) -> Any:
        return outcome


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ServerStore[ShoppingList]]:
    """One server store, closed after the test."""
    with ServerStore(tmp_path / "s1.sqlite", ShoppingList) as opened:
        yield opened


def ask(d: Directory, request: Any) -> Any:
    return run_inline(d.handle(request, NOW), NOW)


def test_an_older_record_of_an_account_does_not_replace_its_password(
    store: ServerStore[ShoppingList],
) -> None:
    """A push of alice's own user id and name, created earlier, with the attacker's hash:
    the attacker's password does not log in, alice's still does."""
    d = Directory("s1", store, peers=["s2"], params=CHEAP)
    alice = ask(d, SignUp("a", "alice", PASSWORD))
    assert isinstance(alice, Welcome)
    forged = {
        "user_id": alice.user_id,
        "name": "alice",
        "password_hash": hash_password("the attacker's password", params=CHEAP),
        "created": NOW - 1000,
    }
    d.receive("s2", DirectoryPush("s2", (forged,), (), {}), NOW)
    as_attacker = ask(d, LogIn("b", "alice", "the attacker's password"))
    as_alice = ask(d, LogIn("c", "alice", PASSWORD))
    assert ("login_failed", alice.user_id) == (
        getattr(as_attacker, "code", type(as_attacker).__name__),
        getattr(as_alice, "user_id", None),
    )
