"""The ``shoplist`` command line: accounts, lists, edits, the local cluster, the demo.

Every command prints for a person, or with ``--json`` one JSON object for a script.
Errors are one line on standard error (``error: ...``) and a non-zero exit status: 1 for a
refused or failed command, 2 for a command line that does not parse.

Edits apply on this device first (its store keeps them across restarts) and then sync
through whichever broker answers; ``--offline`` skips the network, and the edit is sent
by the next command that syncs. A list is named by its id or any unique start of it.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import importlib.metadata
import json
import logging
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from crdts import DotContext
from reference_cluster.cli.output import (
    NAME_WIDTH,
    Out,
    fit,
    item_text,
    plural,
    show_text,
    shown,
    view_text,
)
from reference_cluster.cores.accounts import check_new_password, normalize_user_name
from reference_cluster.cores.client import ClientConfig
from reference_cluster.errors import (
    AccessDenied,
    ClusterError,
    ClusterUnavailable,
    InvalidListId,
    InvalidPassword,
    NotLoggedIn,
    RequestRefused,
    SessionExpired,
    SessionInvalid,
    StoreCorrupt,
    UnknownList,
    UnsyncedEdits,
)
from reference_cluster.processes.client import Client, Mutate
from reference_cluster.processes.config import (
    add_broker_key_flags,
    add_seconds_flag,
    broker_key_argv,
    broker_key_from_args,
    check_endpoint,
    env,
    env_endpoints,
    local_layout,
)
from reference_cluster.shopping_list import MAX_QUANTITY, ShoppingList
from reference_cluster.storage.client_store import ClientStore
from reference_cluster.storage.server_store import check_list_id
from reference_cluster.storage.sqlite import make_private_folder

__all__ = ["main"]

_SESSION_CODES = frozenset({"unauthorized", "unknown_session"})


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# -- the device's client ------------------------------------------------------------------


def _home(args: argparse.Namespace) -> Path:
    home = Path(args.home).expanduser()
    if home.exists() and not home.is_dir():
        raise NotADirectoryError(f"--home {home} is a file; it must be a folder (or not exist)")
    return home


def _current_user(args: argparse.Namespace) -> str:
    if args.user:
        return normalize_user_name(str(args.user))
    pointer = _home(args) / "current-user"
    if pointer.exists():
        name = pointer.read_text("utf-8").strip()
        if name:
            return normalize_user_name(name)
    raise NotLoggedIn(
        "nobody is logged in here: run 'shoplist signup NAME' or 'shoplist login NAME'"
    )


def _store_path(args: argparse.Namespace, user: str) -> Path:
    return _home(args) / f"{user}.sqlite"


def _client(args: argparse.Namespace, user: str | None = None) -> Client:
    name = user or _current_user(args)
    brokers = _brokers(args)  # a bad SHOPLIST_BROKERS stops here, before any file is made
    path = _store_path(args, name)
    make_private_folder(path.parent)  # 0700: the store holds the session token
    store: ClientStore[ShoppingList] = ClientStore(path, ShoppingList)
    config = ClientConfig(request_timeout=min(0.5, args.timeout / 4))
    return Client(store, brokers, broker_key=_broker_key(args), config=config, offline=args.offline)


def _broker_key(args: argparse.Namespace) -> bytes | None:
    """The brokers' public key: --broker-key, SHOPLIST_BROKER_KEY, or the one that
    ``shoplist cluster up`` made in --home; none is needed offline."""
    if args.offline:
        return None
    return broker_key_from_args(args, Path(args.home).expanduser() / "cluster/keys/frontend.key")


def _brokers(args: argparse.Namespace) -> list[str]:
    given: list[str] | None = args.broker
    return given or env_endpoints("SHOPLIST_BROKERS", local_layout().frontends)


def _logged_in(client: Client, args: argparse.Namespace) -> None:
    session = client.session
    if session is None:
        raise NotLoggedIn("not logged in on this device: run 'shoplist login NAME'")
    if not args.offline and session.expires <= time.time():
        raise SessionExpired(
            "the session has expired: run 'shoplist login NAME' (or use --offline)"
        )


def _resolve(client: Client, ref: str, args: argparse.Namespace) -> str:
    """The id of the list ``ref`` names: a local id or a unique start of one. A full id of
    a list not on this device is opened only if the cluster has it (so a mistyped id
    never becomes a list)."""
    ref = ref.strip().lower()
    if not ref:
        raise UnknownList("give a list's id or the start of one (see 'shoplist lists')")
    ids = client.list_ids()
    if ref in ids:
        return ref
    matches = [i for i in ids if i.startswith(ref)]
    if not matches:
        _refuse_damaged(client, ref, ids)
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise UnknownList(f"{ref!r} starts {len(matches)} list ids here; give more of it")
    try:
        list_id = check_list_id(ref)
    except InvalidListId:
        raise UnknownList(
            f"no list {ref!r} on this device (see 'shoplist lists'; "
            "a shared list needs its full id)"
        ) from None
    if client.offline:
        raise UnknownList(
            f"no list {list_id} on this device; opening a shared list needs the cluster "
            "(drop --offline)"
        )
    client.open_list(list_id)
    outcome = client.sync([list_id], timeout=args.timeout)
    _check_session(outcome.failed)
    state = client.state(list_id)
    if state is None or state.context == DotContext():
        client.forget(list_id)
        if outcome.ok:
            raise UnknownList(f"the cluster has no list {list_id}")
        reason = outcome.failed.get(list_id, "timeout")
        if reason == "forbidden":
            raise AccessDenied(
                f"you are not a member of list {list_id}: its owner can add you "
                "(shoplist share ID YOUR-NAME)"
            )
        raise ClusterUnavailable(
            f"cannot open list {list_id}: the cluster did not answer ({reason})"
        )
    client.store.mark_left(list_id, left=False)
    with contextlib.suppress(ClusterUnavailable):
        client.store.mark_mine(set(client.owned_lists(timeout=args.timeout)) & {list_id})
    return list_id


def _refuse_damaged(client: Client, ref: str, ids: Sequence[str]) -> None:
    """Raise StoreCorrupt naming the list ``ref`` names if it is on this device but its
    store rows cannot be read (the client left it out; storage.client_store, Rule 5)."""
    left_out = [i for i in client.store.list_ids() if i not in ids and i.startswith(ref)]
    if len(left_out) == 1:
        reason = client.store.damaged().get(left_out[0], "it cannot be read")
        raise StoreCorrupt(f"list {left_out[0]} is damaged on this device and left out: {reason}")


def _check_session(failed: dict[str, str]) -> None:
    if set(failed.values()) & _SESSION_CODES:
        raise SessionInvalid("the cluster refused your session: run 'shoplist login NAME'")


def _sync_after(client: Client, list_id: str, args: argparse.Namespace, out: Out) -> bool:
    """Sync one list after an edit; True if it reached the cluster."""
    if client.offline:
        out.note("saved on this device (offline); it syncs with the next command that syncs")
        return False
    outcome = client.sync([list_id], timeout=args.timeout)
    _check_session(outcome.failed)
    if outcome.ok:
        return True
    reason = outcome.failed.get(list_id, "timeout")
    if reason == "forbidden":
        out.note(
            "refused by the cluster (forbidden): you are not a member of this list (any "
            "more), or only its owner may do this; kept on this device only"
        )
        return False
    out.note(f"not synced ({shown(reason)}): saved on this device, it syncs later")
    return False


def _list_view(list_id: str, state: ShoppingList) -> dict[str, Any]:
    view = {"list_id": list_id, **state.value, "names": list(state.names)}
    if state.deleted:
        view["items"] = {}  # edits that raced the deletion are kept, never shown
    return view


# -- commands -----------------------------------------------------------------------------


def _password(args: argparse.Namespace, *, new: bool, prompt: str = "password: ") -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif not sys.stdin.isatty():
        raise NotLoggedIn("no terminal to ask for the password: use --password-stdin")
    else:
        password = getpass.getpass(prompt)
    if new:
        check_new_password(password)  # the server's own rule, checked before sending
    elif not password:
        raise InvalidPassword("the password is empty")
    return password


def cmd_account(args: argparse.Namespace, out: Out) -> int:
    name = normalize_user_name(str(args.name))
    signup = args.command == "signup"
    password = _password(args, new=signup)
    path = _store_path(args, name)
    fresh = not path.exists()
    client = _client(args, user=name)
    try:
        fn = client.sign_up if signup else client.log_in
        session = fn(name, password, timeout=args.timeout)
        created = client.signed_up
    except BaseException:
        client.close()
        if fresh:  # a failed first login leaves no store behind
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        raise
    client.close()
    (_home(args) / "current-user").write_text(session.user_name + "\n", "utf-8")
    if not signup:
        verb = "logged in"
    elif created:
        verb = "signed up and logged in"
    else:
        verb = "the account already existed and the password matched: logged in"
    out.emit(
        {
            "user": session.user_name,
            "user_id": session.user_id,
            "expires": session.expires,
            "created": signup and created,
        },
        f"{verb} as {shown(session.user_name)}",
    )
    return 0


def cmd_logout(args: argparse.Namespace, out: Out) -> int:
    """End the session on the servers, then forget it here (also when the servers cannot
    be told: the line says which happened)."""
    client = _client(args)
    why = ""
    try:
        if client.session is None:
            why = "there was no session on this device"
        elif client.offline:
            client.store.clear_session()
            why = "offline"
        else:
            try:
                client.log_out(timeout=args.timeout)
            except (ClusterUnavailable, SessionInvalid, RequestRefused) as exc:
                why = str(exc)  # log_out forgot the session here all the same
    finally:
        client.close()
    (_home(args) / "current-user").unlink(missing_ok=True)
    if not why:
        text = "logged out: the session is ended on the servers and forgotten on this device"
    else:
        text = (
            f"logged out on this device only ({why}); the servers were not told, so the "
            "session stays valid there until it expires"
        )
    out.emit({"logged_out": True, "revoked": not why}, text)
    return 0


def cmd_passwd(args: argparse.Namespace, out: Out) -> int:
    """Change the password; every other session of the user ends."""
    if args.offline:
        raise ClusterUnavailable("passwd needs the cluster (drop --offline)")
    client = _client(args)
    try:
        _logged_in(client, args)
        old = _password(args, new=False, prompt="current password: ")
        new = _password(args, new=True, prompt="new password: ")
        if not args.password_stdin and getpass.getpass("new password again: ") != new:
            raise InvalidPassword("the two new passwords differ; nothing changed")
        ended = client.change_password(old, new, timeout=args.timeout)
    finally:
        client.close()
    out.emit(
        {"password_changed": True, "sessions_ended": ended},
        f"password changed; {plural(ended, 'other session')} ended (this device stays logged in)",
    )
    return 0


def cmd_delete_account(args: argparse.Namespace, out: Out) -> int:
    """Delete the account: the lists it owns are deleted for everyone, then the account;
    its sessions end everywhere and its name stays taken."""
    if args.offline:
        raise ClusterUnavailable("delete-account needs the cluster (drop --offline)")
    client = _client(args)
    try:
        _logged_in(client, args)
        session = client.session
        assert session is not None
        password = _password(args, new=False)
        # A login checks the password before anything is deleted.
        client.log_in(session.user_name, password, timeout=args.timeout)
        owned = client.owned_lists(timeout=args.timeout)
        for list_id in owned:
            if list_id not in client.list_ids():
                client.open_list(list_id)
            outcome = client.sync([list_id], timeout=args.timeout)
            _check_session(outcome.failed)
            client.edit(list_id, lambda s, r: s.delete(r))
            outcome = client.sync([list_id], timeout=args.timeout)
            _check_session(outcome.failed)
            if not outcome.ok:
                raise ClusterUnavailable(
                    f"list {list_id} was not deleted ({outcome.failed[list_id]}); "
                    "the account is kept: try again"
                )
            client.store.mark_left(list_id)
            client.forget(list_id)
        client.delete_account(password, timeout=args.timeout)
    finally:
        client.close()
    (_home(args) / "current-user").unlink(missing_ok=True)
    out.emit(
        {"account_deleted": True, "user": session.user_name, "lists_deleted": len(owned)},
        f"deleted the account {session.user_name} and {plural(len(owned), 'list')} it owned; "
        "the name stays taken",
    )
    return 0


def cmd_lists(args: argparse.Namespace, out: Out) -> int:
    client = _client(args)
    try:
        _logged_in(client, args)
        synced = False
        if not client.offline:
            try:
                theirs = client.cluster_lists(timeout=args.timeout)
            except ClusterUnavailable as exc:
                out.note(f"{shown(str(exc))}: showing this device's lists")
                client.offline = True
            else:
                client.store.mark_mine(theirs.owned)
                skip = set(client.list_ids()) | client.store.left()
                for list_id in sorted(set(theirs.owned + theirs.shared) - skip):
                    client.open_list(list_id)
        if not client.offline:
            outcome = client.sync(timeout=args.timeout)
            _check_session(outcome.failed)
            synced = outcome.ok
        mine = client.store.mine()
        damaged = client.store.damaged()
        rows = []
        for list_id in client.list_ids():
            state = client.state(list_id)
            assert state is not None
            rows.append(
                {
                    **_list_view(list_id, state),
                    "mine": list_id in mine,
                    "owner": "me" if list_id in mine else "shared",
                    "unsynced": client.queued(list_id),
                }
            )
    finally:
        client.close()
    lines = [f"{'ID':<8}  {fit('NAME', NAME_WIDTH)}  {'ITEMS':>5}  {'UNSYNCED':>8}  OWNER"]
    for r in rows:
        name = shown(r["name"]) or "(no name)"
        if r["deleted"]:
            name += " (deleted)"
        lines.append(
            f"{r['list_id'][:8]}  {fit(name, NAME_WIDTH)}  {len(r['items']):>5}  "
            f"{r['unsynced']:>8}  {r['owner']}"
        )
    if not rows:
        lines.append("(no lists yet: shoplist create NAME)")
    if not synced and not client.offline:
        lines.append("(some lists did not sync; showing this device's copy)")
    for list_id, reason in sorted(damaged.items()):
        out.note(f"list {list_id} is damaged on this device and left out: {shown(reason)}")
    out.emit({"lists": rows, "synced": synced, "damaged": damaged}, "\n".join(lines))
    return 0


def cmd_create(args: argparse.Namespace, out: Out) -> int:
    client = _client(args)
    try:
        _logged_in(client, args)
        list_id = client.create(args.name)
        client.store.mark_mine([list_id])
        synced = _sync_after(client, list_id, args, out)
        state = client.state(list_id)
        assert state is not None
    finally:
        client.close()
    out.emit(
        {"list_id": list_id, "name": state.name, "synced": synced},
        f"created {state.name!r}: {list_id}",
    )
    return 0


def cmd_show(args: argparse.Namespace, out: Out) -> int:
    client = _client(args)
    try:
        _logged_in(client, args)
        list_id = _resolve(client, args.list, args)
        synced = False
        if not client.offline:
            outcome = client.sync([list_id], timeout=args.timeout)
            _check_session(outcome.failed)
            synced = outcome.ok
            if not synced:
                out.note("not synced: showing this device's copy")
        state = client.state(list_id)
        assert state is not None
        queued = client.queued(list_id)
    finally:
        client.close()
    view = {
        **_list_view(list_id, state),
        "digest": state.digest(),
        "unsynced": queued,
        "synced": synced,
    }
    out.emit(view, show_text(list_id, state, queued))
    return 0


Report = Callable[[ShoppingList, ShoppingList], str]
"""What an edit did, as text: given the state right after the edit on this device and
the state after the sync (with what others did meanwhile)."""


def _edit(args: argparse.Namespace, out: Out, mutate: Mutate, report: Report) -> int:
    client = _client(args)
    try:
        _logged_in(client, args)
        list_id = _resolve(client, args.list, args)
        client.edit(list_id, mutate)
        mine = client.state(list_id)
        synced = _sync_after(client, list_id, args, out)
        state = client.state(list_id)
        assert mine is not None and state is not None
    finally:
        client.close()
    text = report(mine, state)
    if state.deleted:
        text += "\nthe list's owner deleted it meanwhile: the edit is kept but not shown"
    out.emit({**_list_view(list_id, state), "synced": synced}, text)
    return 0


def _item_report(name: str) -> Report:
    """``milk: 8``; and when others' changes arrived with the sync, what this edit alone
    made of it."""

    def report(mine: ShoppingList, state: ShoppingList) -> str:
        item = state.find_item(name) or mine.find_item(name) or name
        before, after = mine.items.get(item), state.items.get(item)
        text = item_text(item, after)
        if before != after:
            text += f" (your edit made it {view_text(before)}; "
            text += "concurrent edits from others made this)"
        return text

    return report


def cmd_add(args: argparse.Namespace, out: Out) -> int:
    item, qty = args.item, args.qty
    return _edit(args, out, lambda s, r: s.add_item(r, item, qty), _item_report(item))


def _parse_qty(text: str) -> tuple[str, int]:
    op, digits = text[:1], text[1:]
    if op not in "+-=" or not op or not digits.isdigit() or len(digits) > 7:
        raise argparse.ArgumentTypeError(
            f"expected +N, -N or =N (N up to {MAX_QUANTITY}), got {text!r}"
        )
    return op, int(digits)


def cmd_qty(args: argparse.Namespace, out: Out) -> int:
    item = args.item
    op, n = args.change
    mutate: Mutate
    if op == "=":
        mutate = lambda s, r: s.set_quantity(r, item, n)  # noqa: E731 - one line per case
    else:
        by = n if op == "+" else -n
        mutate = lambda s, r: s.change_quantity(r, item, by)  # noqa: E731
    return _edit(args, out, mutate, _item_report(item))


def cmd_mark(args: argparse.Namespace, out: Out) -> int:
    item, bought = args.item, args.command == "buy"
    return _edit(args, out, lambda s, r: s.mark_bought(r, item, bought), _item_report(item))


def cmd_remove(args: argparse.Namespace, out: Out) -> int:
    item = args.item

    def report(mine: ShoppingList, state: ShoppingList) -> str:
        kept = state.find_item(item)
        if kept is None:
            return f"removed {shown(item)}"
        return (
            f"removed {shown(item)}, but changes others made meanwhile keep it on the list: "
            f"{item_text(kept, state.items[kept])}"
        )

    return _edit(args, out, lambda s, r: s.remove_item(r, item), report)


def cmd_rename_item(args: argparse.Namespace, out: Out) -> int:
    item, new = args.item, args.new_name

    def report(mine: ShoppingList, state: ShoppingList) -> str:
        key = state.find_item(new) or new
        return f"renamed {shown(item)} to {item_text(key, state.items.get(key))}"

    return _edit(args, out, lambda s, r: s.rename_item(r, item, new), report)


def cmd_rename(args: argparse.Namespace, out: Out) -> int:
    def report(mine: ShoppingList, state: ShoppingList) -> str:
        text = f"renamed to {mine.name!r}"
        others = [n for n in state.names if n != mine.name]
        if others:
            shown = ", ".join(repr(n) for n in others)
            text += f" (a concurrent rename also named it {shown}; it shows {state.name!r})"
        return text

    name = args.name
    return _edit(args, out, lambda s, r: s.rename(r, name), report)


def cmd_delete(args: argparse.Namespace, out: Out) -> int:
    if args.offline:
        raise ClusterUnavailable(
            "delete needs the cluster: the servers check that you own the list"
        )
    client = _client(args)
    try:
        _logged_in(client, args)
        list_id = _resolve(client, args.list, args)
        outcome = client.sync([list_id], timeout=args.timeout)  # the cluster learns the owner
        _check_session(outcome.failed)
        if not outcome.ok:
            raise ClusterUnavailable("the list did not sync; try again when the cluster answers")
        if list_id not in client.owned_lists(timeout=args.timeout):
            raise AccessDenied("only the list's owner can delete it ('shoplist forget' leaves it)")
        client.edit(list_id, lambda s, r: s.delete(r))
        outcome = client.sync([list_id], timeout=args.timeout)
        _check_session(outcome.failed)
        if not outcome.ok:
            raise ClusterUnavailable(
                "the deletion is saved here but did not reach the cluster "
                f"({outcome.failed[list_id]}); run 'shoplist sync' later"
            )
        client.store.mark_left(list_id)
        client.forget(list_id)
    finally:
        client.close()
    out.emit({"list_id": list_id, "deleted": True}, f"deleted {list_id}")
    return 0


def cmd_forget(args: argparse.Namespace, out: Out) -> int:
    client = _client(args)
    try:
        list_id = _resolve(client, args.list, args)
        queued = client.queued(list_id)
        if queued and not args.force:
            raise UnsyncedEdits(
                f"{list_id} has {plural(queued, 'edit')} not yet synced: run 'shoplist sync' "
                "first, or forget it with --force (they are sent if you open it again)"
            )
        client.store.mark_left(list_id)
        client.forget(list_id)
    finally:
        client.close()
    out.emit(
        {"list_id": list_id, "forgotten": True},
        f"forgot {list_id} on this device (others keep it; 'shoplist show {list_id}' "
        "opens it again)",
    )
    return 0


def cmd_share(args: argparse.Namespace, out: Out) -> int:
    """Print a list's id and who may use it; with user names, the owner adds them."""
    return _members_command(args, out, add=args.users, remove=[])


def cmd_unshare(args: argparse.Namespace, out: Out) -> int:
    """The owner removes members (they keep what is on their devices, but can no longer
    sync it)."""
    return _members_command(args, out, add=[], remove=args.users)


def cmd_leave(args: argparse.Namespace, out: Out) -> int:
    """Stop being a member of a list someone shared, and forget it on this device."""
    if args.offline:
        raise ClusterUnavailable("leave needs the cluster (drop --offline)")
    client = _client(args)
    try:
        _logged_in(client, args)
        session = client.session
        assert session is not None
        list_id = _resolve(client, args.list, args)
        reply = client.members(list_id, remove=[session.user_name], timeout=args.timeout)
        client.store.mark_left(list_id)
        client.forget(list_id)
    finally:
        client.close()
    out.emit(
        {"list_id": list_id, "left": True, "owner": reply.owner},
        f"left list {list_id} (owner {shown(reply.owner or '?')}); forgotten on this device",
    )
    return 0


def _members_command(
    args: argparse.Namespace, out: Out, *, add: Sequence[str], remove: Sequence[str]
) -> int:
    if args.offline:
        raise ClusterUnavailable("sharing needs the cluster (drop --offline)")
    client = _client(args)
    try:
        _logged_in(client, args)
        list_id = _resolve(client, args.list, args)
        if list_id not in client.store.mine() or add or remove:
            client.sync([list_id], timeout=args.timeout)  # the cluster learns its owner
        reply = client.members(list_id, add=add, remove=remove, timeout=args.timeout)
    finally:
        client.close()
    members = list(reply.members)
    done = []
    if add:
        done.append(f"shared with {', '.join(shown(n) for n in add)}")
    if remove:
        done.append(f"no longer shared with {', '.join(shown(n) for n in remove)}")
    who = ", ".join(shown(n) for n in members) or "nobody else"
    text = [
        *done,
        list_id,
        f"owner {shown(reply.owner or '?')}; members: {who}",
    ]
    if members and add:
        text.append("(they see it in 'shoplist lists', or open it with: shoplist show ID)")
    out.emit({"list_id": list_id, "owner": reply.owner, "members": members}, "\n".join(text))
    return 0


def cmd_sync(args: argparse.Namespace, out: Out) -> int:
    if args.offline:
        raise ClusterUnavailable("sync needs the cluster (drop --offline)")
    client = _client(args)
    try:
        _logged_in(client, args)
        outcome = client.sync(timeout=args.timeout)
        _check_session(outcome.failed)
        count = len(client.list_ids())
    finally:
        client.close()
    if not outcome.ok:
        raise ClusterUnavailable(
            f"{len(outcome.failed)} of {plural(count, 'list')} did not sync "
            f"({', '.join(sorted(set(outcome.failed.values())))})"
        )
    out.emit({"synced": count}, f"synced {plural(count, 'list')}")
    return 0


# -- the shell ----------------------------------------------------------------------------

_SHELL_PROMPT = "shoplist> "
_SHELL_MAX_LINES = 1_000_000
# Commands that take over the terminal or start processes stay outside the shell.
_NOT_IN_SHELL = frozenset({"cluster", "demo", "shell"})


def _flags_of(args: argparse.Namespace) -> list[str]:
    """The flags every command takes, as given to the shell, for each command it runs."""
    flags = ["--home", str(args.home), "--timeout", repr(args.timeout)]
    if args.user:
        flags += ["--user", str(args.user)]
    for endpoint in args.broker or ():
        flags += ["--broker", endpoint]
    if args.broker_key:
        flags += broker_key_argv(str(args.broker_key))
    flags += ["--json"] * bool(args.json) + ["--offline"] * bool(args.offline)
    return flags + ["--insecure"] * bool(args.insecure)


def _run_line(line: str, flags: list[str]) -> int | None:
    """Run one line of the shell; None for a blank line or a comment."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError as exc:  # an unclosed quote
        print(f"shoplist: error: {exc}", file=sys.stderr)
        return 2
    if not words:
        return None
    if words[0] in _NOT_IN_SHELL:
        print(f"shoplist: error: '{words[0]}' does not run inside the shell", file=sys.stderr)
        return 2
    if words[0] == "help":
        words = ["--help"]
    try:
        return main([*flags, *words])
    except SystemExit as exc:  # a line that does not parse, or --help
        return exc.code if isinstance(exc.code, int) else 1


def cmd_shell(args: argparse.Namespace, out: Out) -> int:
    """Read commands, one a line, and run each as ``shoplist`` would, with the flags the
    shell was given; ``quit``, ``exit`` or end of input ends it. Returns 0 if every
    command succeeded, else 1."""
    flags = _flags_of(args)
    prompt = _SHELL_PROMPT if sys.stdin.isatty() else ""
    if prompt:
        print("shoplist shell: any shoplist command; help, quit")
    failed = 0
    for _ in range(_SHELL_MAX_LINES):
        try:
            line = input(prompt)
        except EOFError:
            break
        if line.strip() in {"quit", "exit"}:
            break
        status = _run_line(line, flags)
        failed += bool(status)
    return 1 if failed else 0


# -- the parser ---------------------------------------------------------------------------


def _common(sub: bool) -> _Parser:
    """Flags every command takes, before or after its name."""
    p = _Parser(add_help=False)
    d: Callable[[Any], Any] = (lambda _v: argparse.SUPPRESS) if sub else (lambda v: v)
    p.add_argument("--json", action="store_true", default=d(False), help="print JSON for scripts")
    p.add_argument(
        "--offline", action="store_true", default=d(False), help="do not touch the network"
    )
    p.add_argument(
        "--home",
        default=d(env("SHOPLIST_HOME", "~/.shoplist")),
        metavar="DIR",
        help="this device's stores (SHOPLIST_HOME; default ~/.shoplist)",
    )
    p.add_argument(
        "--user",
        default=d(os.environ.get("SHOPLIST_USER")),
        help="act as this user (SHOPLIST_USER; default: the last login)",
    )
    p.add_argument(
        "--broker",
        action="append",
        type=check_endpoint,
        default=d(None),
        metavar="ENDPOINT",
        help="a broker's front end, repeatable (SHOPLIST_BROKERS, comma-separated)",
    )
    add_broker_key_flags(p, default=d(None), insecure_default=d(False))
    add_seconds_flag(
        p,
        "--timeout",
        "SHOPLIST_TIMEOUT",
        5.0,
        "give up on the network after this long",
        suppress=sub,
    )
    return p


def _member_commands(command: Callable[..., argparse.ArgumentParser], list_help: str) -> None:
    """``share``, ``unshare`` and ``leave``: a list's access list."""
    p = command("share", cmd_share, "show a list's id and members; the owner adds USERs")
    p.add_argument("list", help=list_help)
    p.add_argument("users", nargs="*", metavar="USER", help="user names to add (owner only)")
    p = command("unshare", cmd_unshare, "the owner removes members from a list")
    p.add_argument("list", help=list_help)
    p.add_argument("users", nargs="+", metavar="USER", help="user names to remove")
    p = command("leave", cmd_leave, "stop being a member of a list shared with you")
    p.add_argument("list", help=list_help)


def _build_parser() -> argparse.ArgumentParser:
    from reference_cluster.cli import cluster as cli_cluster

    parser = _Parser(
        prog="shoplist",
        description="A local-first shopping list on a replicated cluster. Edits work "
        "offline and sync through whichever broker answers.",
        epilog="Start with: shoplist demo. Then run 'shoplist cluster up' in one terminal and "
        "in another: shoplist signup NAME; shoplist create NAME; shoplist add ID ITEM.",
        parents=[_common(False)],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    common = [_common(True)]

    def command(
        name: str, fn: Callable[[argparse.Namespace, Out], int], text: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text, parents=common)
        p.set_defaults(func=fn)
        return p

    list_help = "the list's id, or a unique start of it"
    for name, text in (("signup", "create an account and log in"), ("login", "log in")):
        p = command(name, cmd_account, text)
        p.add_argument("name", help="user name: 3 to 32 letters, digits, '_', '.', '-'")
        p.add_argument(
            "--password-stdin", action="store_true", help="read the password from standard input"
        )
    command("logout", cmd_logout, "end the session on the servers and on this device")
    for name, fn, text in (
        ("passwd", cmd_passwd, "change the password (other sessions end)"),
        ("delete-account", cmd_delete_account, "delete the account and the lists it owns"),
    ):
        command(name, fn, text).add_argument(
            "--password-stdin",
            action="store_true",
            help="read the password(s) from standard input, one a line",
        )
    command("lists", cmd_lists, "the lists on this device (and those you own)")
    command("create", cmd_create, "create a list").add_argument("name", help="the list's name")
    command("show", cmd_show, "show a list (a full id opens a shared list)").add_argument(
        "list", help=list_help
    )
    p = command("add", cmd_add, "put an item on a list (or raise its quantity)")
    p.add_argument("list", help=list_help)
    p.add_argument("item", help="the item's name (case and extra spaces do not matter)")
    p.add_argument("qty", nargs="?", type=int, default=1, help="how many (default 1)")
    p = command("qty", cmd_qty, "change an item's quantity: +N, -N or =N")
    p.add_argument("list", help=list_help)
    p.add_argument("item", help="the item's name")
    p.add_argument("change", type=_parse_qty, metavar="+N|-N|=N", help="add, take away or set")
    for name, text in (("buy", "mark an item bought"), ("unbuy", "mark an item not bought")):
        p = command(name, cmd_mark, text)
        p.add_argument("list", help=list_help)
        p.add_argument("item", help="the item's name")
    p = command("remove", cmd_remove, "take an item off a list")
    p.add_argument("list", help=list_help)
    p.add_argument("item", help="the item's name")
    p = command("rename-item", cmd_rename_item, "rename an item (keeps quantity and mark)")
    p.add_argument("list", help=list_help)
    p.add_argument("item", help="the item's name now")
    p.add_argument("new_name", metavar="new-name", help="its new name")
    p = command("rename", cmd_rename, "rename a list")
    p.add_argument("list", help=list_help)
    p.add_argument("name", help="the list's new name")
    command("delete", cmd_delete, "delete a list for everyone (owner only)").add_argument(
        "list", help=list_help
    )
    p = command("forget", cmd_forget, "leave a list on this device (others keep it)")
    p.add_argument("list", help=list_help)
    p.add_argument("--force", action="store_true", help="even if edits are not yet synced")
    _member_commands(command, list_help)
    command("sync", cmd_sync, "push and pull every list")
    command("shell", cmd_shell, "run commands one a line, with these flags (quit to end)")
    cli_cluster.add_commands(sub, common)
    return parser


def _version() -> str:
    try:
        return importlib.metadata.version("dotted-crdts")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``shoplist``."""
    try:
        args = _build_parser().parse_args(argv)
    except SystemExit as exc:
        if isinstance(exc.code, str):  # a bad environment variable (processes.config)
            print(f"shoplist: {exc.code}", file=sys.stderr)
            return 1
        raise
    # The library's warnings (a retried request, a refused sync) are for the processes'
    # logs; a command says what matters in its own one line.
    logging.basicConfig(
        level=getattr(logging, env("SHOPLIST_LOG_LEVEL", "ERROR").upper(), logging.ERROR),
        format="shoplist %(levelname)s %(name)s: %(message)s",
    )
    out = Out(bool(getattr(args, "json", False)))
    try:
        result: int = args.func(args, out)
        return result
    except KeyboardInterrupt:
        print("shoplist: interrupted", file=sys.stderr)
        return 130
    except (ClusterError, ValueError, TypeError, OSError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if args.json:
            print(json.dumps({"error": message, "type": type(exc).__name__}))
        print(f"shoplist: error: {shown(message)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
