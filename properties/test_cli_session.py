"""A whole session of ``shoplist`` as people meet it: two users on three devices, against
a real cluster, offline and back, each command a fresh process, and every line a person
reads checked word for word.

ann has a phone and a laptop, ben a phone. ann makes a list offline, both edit it (also
at the same time, also offline), ben opens it by its id, ann deletes it, ben forgets it.
The checks cover what the newcomer's report found wrong: the OWNER column in each case,
names that differ only in case or spaces, un-buying after a concurrent remove, a mistyped
id offline and online, a failed login leaving nothing behind, sign-up versus login, edits
that print their result (and why, when others' edits changed it), a deleted list that
keeps its name and shows no items, and ``lists``/``show`` agreeing after a delete.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

from cli_harness import Brokers, run_cli

from reference_cluster.processes.cluster import free_base_port

PASSWORD = "correct horse battery"
OFFLINE_NOTE = "saved on this device (offline); it syncs with the next command that syncs"
HEADER = "ID        NAME                      ITEMS  UNSYNCED  OWNER"


class Device:
    """One device of one person: a folder of its own; each command a fresh process."""

    def __init__(self, home: Path, brokers: Brokers) -> None:
        self.home = home
        self.env = {**brokers.env, "SHOPLIST_TIMEOUT": "10"}

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, home=self.home, stdin=stdin, env=self.env)

    def says(self, *args: str, out: str = "", err: str = "", status: int = 0) -> None:
        """Run a command and check its exit status and every line it prints."""
        run = self.run(*args, stdin=PASSWORD + "\n" if "--password-stdin" in args else None)
        got = (run.returncode, run.stdout.splitlines(), run.stderr.splitlines())
        assert (status, out.splitlines(), err.splitlines()) == got, args


def row(list_id: str, name: str, items: int, unsynced: int, owner: str) -> str:
    return f"{list_id[:8]}  {name:<24}  {items:>5}  {unsynced:>8}  {owner}"


def test_two_users_on_three_devices(brokers: Brokers, tmp_path: Path) -> None:
    phone = Device(tmp_path / "ann-phone", brokers)
    laptop = Device(tmp_path / "ann-laptop", brokers)
    ben = Device(tmp_path / "ben-phone", brokers)

    # Accounts: a failed login leaves no store behind; signing up again is a login.
    phone.says("signup", "ann", "--password-stdin", out="signed up and logged in as ann")
    laptop.says(
        "signup",
        "Ann",
        "--password-stdin",
        out="the account already existed and the password matched: logged in as ann",
    )
    ben.says(
        "login",
        "ben",
        "--password-stdin",
        err="shoplist: error: unknown user name or wrong password",
        status=1,
    )
    assert [] == sorted(p.name for p in ben.home.glob("*.sqlite"))
    ben.says("signup", "ben", "--password-stdin", out="signed up and logged in as ben")

    # ann makes a list offline: it is hers at once, before and after its first sync.
    made = phone.run("--offline", "--json", "create", "  Weekend  ")
    list_id = json.loads(made.stdout)["list_id"]
    short = list_id[:6]
    phone.says("--offline", "lists", out=f"{HEADER}\n{row(list_id, 'Weekend', 0, 1, 'me')}")
    phone.says("add", short, "milk", "2", out="milk: 2")
    phone.says("lists", out=f"{HEADER}\n{row(list_id, 'Weekend', 1, 0, 'me')}")
    phone.says("add", short, " Milk ", out="milk: 3")  # one item, whatever the spelling
    phone.says("add", short, "eggs", "6", out="eggs: 6")

    # Its id alone does not open it for ben: ann shares it with him by name first.
    ben.says(
        "show",
        list_id,
        err=f"shoplist: error: you are not a member of list {list_id}: its owner can add "
        "you (shoplist share ID YOUR-NAME)",
        status=1,
    )
    phone.says(
        "share",
        short,
        "ben",
        out=f"shared with ben\n{list_id}\nowner ann; members: ben\n"
        "(they see it in 'shoplist lists', or open it with: shoplist show ID)",
    )

    # ben opens it by its id (shared with him); ann's laptop gets it because she owns it.
    ben.says(
        "show",
        list_id,
        out=f"Weekend  [{list_id}]\n  ITEM      QTY  BOUGHT\n  eggs        6\n"
        "  milk        3\n  2 items, 2 to buy",
    )
    ben.says("lists", out=f"{HEADER}\n{row(list_id, 'Weekend', 2, 0, 'shared')}")
    laptop.says("lists", out=f"{HEADER}\n{row(list_id, 'Weekend', 2, 0, 'me')}")
    laptop.says("--offline", "lists", out=f"{HEADER}\n{row(list_id, 'Weekend', 2, 0, 'me')}")
    ben.says("--offline", "lists", out=f"{HEADER}\n{row(list_id, 'Weekend', 2, 0, 'shared')}")

    # Concurrent changes add up, and an edit says when others' edits changed its result.
    phone.says("--offline", "qty", short, "MILK", "+1", out="milk: 4", err=OFFLINE_NOTE)
    ben.says("qty", short, "milk", "+2", out="milk: 5")
    laptop.says(
        "qty",
        short,
        "milk",
        "+1",
        out="milk: 6 (your edit made it 4; concurrent edits from others made this)",
    )
    phone.says("sync", out="synced 1 list")
    phone.says("--offline", "lists", out=f"{HEADER}\n{row(list_id, 'Weekend', 2, 0, 'me')}")

    # remove ‖ bought leaves eggs at 0, bought; un-buying keeps it on the list.
    phone.says("--offline", "remove", short, "eggs", out="removed eggs", err=OFFLINE_NOTE)
    ben.says("buy", short, "eggs", out="eggs: 6, bought")
    phone.says("sync", out="synced 1 list")
    phone.says(
        "show",
        short,
        out=f"Weekend  [{list_id}]\n  ITEM      QTY  BOUGHT\n  eggs        0  yes\n"
        "  milk        7\n  2 items, 1 to buy",
    )
    phone.says("unbuy", short, "eggs", out="eggs: 0")

    # Renaming an item; a long name and wide characters keep the columns.
    ben.says("rename-item", short, "milk", "oat milk", out="renamed milk to oat milk: 7")
    ben.says("add", short, "x" * 70, out="x" * 70 + ": 1")
    ben.says("add", short, "牛乳", "2", out="牛乳: 2")
    shown = ben.run("show", short).stdout.splitlines()
    assert [
        "  ITEM                                  QTY  BOUGHT",
        "  eggs                                    0",
        "  oat milk                                7",
        "  " + "x" * 31 + "…        1",
        "  牛乳                                    2",
    ] == shown[1:-1]

    # Mistyped ids never become lists; an empty id names nothing.
    typo = str(uuid.uuid4())
    ben.says(
        "--offline",
        "show",
        typo,
        err=f"shoplist: error: no list {typo} on this device; opening a shared list "
        "needs the cluster (drop --offline)",
        status=1,
    )
    ben.says("show", typo, err=f"shoplist: error: the cluster has no list {typo}", status=1)
    ben.says(
        "show",
        "",
        err="shoplist: error: give a list's id or the start of one (see 'shoplist lists')",
        status=1,
    )
    dead = f"tcp://127.0.0.1:{free_base_port()}"
    ben.says(
        "--broker",
        dead,
        "show",
        typo,
        err=f"shoplist: error: cannot open list {typo}: the cluster did not answer (unreachable)",
        status=1,
    )
    ben.says(
        "--broker",
        dead,
        "lists",
        out=f"{HEADER}\n{row(list_id, 'Weekend', 4, 0, 'shared')}",
        err=f"no broker is reachable at {dead} (connection refused): showing this device's lists",
    )

    # Only the owner deletes; the list keeps its name and shows no items; each device
    # keeps it, marked deleted, until its person forgets it.
    ben.says(
        "delete",
        short,
        err="shoplist: error: only the list's owner can delete it ('shoplist forget' leaves it)",
        status=1,
    )
    laptop.says("delete", short, out=f"deleted {list_id}")
    laptop.says("lists", out=f"{HEADER}\n(no lists yet: shoplist create NAME)")
    phone.says("lists", out=f"{HEADER}\n{row(list_id, 'Weekend (deleted)', 0, 0, 'me')}")
    gone = (
        f"Weekend  [{list_id}]\n"
        "  this list was deleted by its owner ('shoplist forget' removes it here)"
    )
    ben.says("show", short, out=gone)
    ben.says("lists", out=f"{HEADER}\n{row(list_id, 'Weekend (deleted)', 0, 0, 'shared')}")
    ben.says("show", short, out=gone)
    ben.says(
        "forget",
        short,
        out=f"forgot {list_id} on this device (others keep it; "
        f"'shoplist show {list_id}' opens it again)",
    )
    ben.says("lists", out=f"{HEADER}\n(no lists yet: shoplist create NAME)")
    ben.says("show", list_id, out=gone)  # the full id opens it again, still deleted
