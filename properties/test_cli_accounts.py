"""``shoplist passwd``, ``logout`` and ``delete-account`` as a person runs them: one line
each, saying what happened on the servers and on the device."""

from __future__ import annotations

import uuid
from pathlib import Path

from cli_harness import Brokers, run_cli

PASSWORD = "correct horse battery"


def test_passwd_logout_and_delete_account_say_what_they_did(
    brokers: Brokers, tmp_path: Path
) -> None:
    """A password change, a logout the servers heard of, an offline one they did not,
    and an account deletion each print one clear line; afterwards the old password, and
    then the deleted account, no longer log in, and its name stays taken."""
    home, name = tmp_path / "home", f"erin-{uuid.uuid4().hex[:6]}"

    def cli(*args: str, stdin: str | None = None) -> tuple[int, str]:
        done = run_cli(*args, *brokers.flags, home=home, stdin=stdin)
        return done.returncode, (done.stdout + done.stderr).strip()

    assert 0 == cli("signup", name, "--password-stdin", stdin=PASSWORD + "\n")[0]
    assert 0 == cli("create", "Groceries")[0]
    changed = cli("passwd", "--password-stdin", stdin=f"{PASSWORD}\na new password\n")
    logout = cli("logout")
    old = cli("login", name, "--password-stdin", stdin=PASSWORD + "\n")
    assert 0 == cli("login", name, "--password-stdin", stdin="a new password\n")[0]
    offline = cli("logout", "--offline")
    assert 0 == cli("login", name, "--password-stdin", stdin="a new password\n")[0]
    deleted = cli("delete-account", "--password-stdin", stdin="a new password\n")
    again = cli("login", name, "--password-stdin", stdin="a new password\n")
    taken = cli("signup", name, "--password-stdin", stdin="a new password\n")
    assert (0, "password changed; 0 other sessions ended (this device stays logged in)") == changed
    assert (
        0,
        "logged out: the session is ended on the servers and forgotten on this device",
    ) == logout
    assert (1, True) == (old[0], "wrong password" in old[1])
    assert (0, True) == (
        offline[0],
        offline[1].startswith("logged out on this device only (offline)"),
    )
    assert (0, f"deleted the account {name} and 1 list it owned; the name stays taken") == deleted
    assert (1, 1, True) == (again[0], taken[0], "deleted account" in taken[1])
