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
import getpass
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
from reference_cluster.cores.client import ClientConfig
from reference_cluster.errors import (
    AccessDenied,
    ClusterError,
    ClusterUnavailable,
    InvalidListId,
    NotLoggedIn,
    SessionExpired,
    SessionInvalid,
    UnknownList,
)
from reference_cluster.processes.client import Client, Mutate
from reference_cluster.processes.config import add_seconds_flag, env, env_list, local_layout
from reference_cluster.shopping_list import MAX_QUANTITY, ShoppingList
from reference_cluster.storage.client_store import ClientStore
from reference_cluster.storage.server_store import check_list_id

__all__ = ["main"]

_SESSION_CODES = frozenset({"unauthorized", "unknown_session"})


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# -- output -------------------------------------------------------------------------------


class _Out:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def emit(self, data: dict[str, Any], text: str) -> None:
        print(json.dumps(data, sort_keys=True) if self.as_json else text)

    def note(self, text: str) -> None:
        if not self.as_json:
            print(text, file=sys.stderr)


def _list_view(list_id: str, state: ShoppingList) -> dict[str, Any]:
    return {"list_id": list_id, **state.value, "names": list(state.names)}


def _show_text(list_id: str, state: ShoppingList, queued: int) -> str:
    title = state.name or "(no name)"
    if len(state.names) > 1:
        title += f"  (also named: {', '.join(n for n in state.names if n != state.name)})"
    lines = [f"{title}  [{list_id}]"]
    if state.deleted:
        lines.append("  this list was deleted by its owner")
    items = state.items
    if items:
        width = max(4, *(len(i) for i in items))
        lines.append(f"  {'ITEM':<{width}}  {'QTY':>5}  BOUGHT")
        for item, view in items.items():
            row = f"  {item:<{width}}  {view.quantity:>5}  {'yes' if view.bought else ''}"
            lines.append(row.rstrip())
    elif not state.deleted:
        lines.append("  (empty)")
    to_buy = sum(1 for v in items.values() if not v.bought and v.quantity > 0)
    tail = f"  {len(items)} items, {to_buy} to buy"
    if queued:
        tail += f", {queued} edits not yet synced"
    lines.append(tail)
    return "\n".join(lines)


# -- the device's client ------------------------------------------------------------------


def _home(args: argparse.Namespace) -> Path:
    return Path(args.home).expanduser()


def _current_user(args: argparse.Namespace) -> str:
    if args.user:
        return str(args.user).lower()
    pointer = _home(args) / "current-user"
    if pointer.exists():
        name = pointer.read_text("utf-8").strip()
        if name:
            return name
    raise NotLoggedIn(
        "nobody is logged in here: run 'shoplist signup NAME' or 'shoplist login NAME'"
    )


def _client(args: argparse.Namespace, user: str | None = None) -> Client:
    name = user or _current_user(args)
    home = _home(args)
    home.mkdir(parents=True, exist_ok=True)
    store: ClientStore[ShoppingList] = ClientStore(home / f"{name}.sqlite", ShoppingList)
    config = ClientConfig(request_timeout=min(0.5, args.timeout / 4))
    return Client(
        store,
        args.broker or env_list("SHOPLIST_BROKERS", local_layout().frontends),
        config=config,
        offline=args.offline,
    )


def _logged_in(client: Client, args: argparse.Namespace) -> None:
    session = client.session
    if session is None:
        raise NotLoggedIn("not logged in on this device: run 'shoplist login NAME'")
    if not args.offline and session.expires <= time.time():
        raise SessionExpired(
            "the session has expired: run 'shoplist login NAME' (or use --offline)"
        )


def _resolve(client: Client, ref: str, args: argparse.Namespace) -> str:
    """The id of the list ``ref`` names: a local id or a unique start of one; a full id
    of a list not on this device is opened (and pulled, when online)."""
    ids = client.list_ids()
    if ref in ids:
        return ref
    matches = [i for i in ids if i.startswith(ref.lower())]
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
    client.open_list(list_id)
    if not client.offline:
        outcome = client.sync([list_id], timeout=args.timeout)
        _check_session(outcome.failed)
        state = client.state(list_id)
        if outcome.ok and state is not None and state.context == DotContext():
            client.forget(list_id)
            raise UnknownList(f"the cluster has no list {list_id}")
    return list_id


def _check_session(failed: dict[str, str]) -> None:
    if set(failed.values()) & _SESSION_CODES:
        raise SessionInvalid("the cluster refused your session: run 'shoplist login NAME'")


def _sync_after(client: Client, list_id: str, args: argparse.Namespace, out: _Out) -> bool:
    """Sync one list after an edit; True if it reached the cluster."""
    if client.offline:
        out.note("saved on this device (offline); it syncs with the next command that syncs")
        return False
    outcome = client.sync([list_id], timeout=args.timeout)
    _check_session(outcome.failed)
    if outcome.ok:
        return True
    reason = outcome.failed.get(list_id, "timeout")
    out.note(f"not synced ({reason}): saved on this device, it syncs later")
    return False


# -- commands -----------------------------------------------------------------------------


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        return line.rstrip("\n")
    if not sys.stdin.isatty():
        raise ClusterUnavailable("no terminal to ask for the password: use --password-stdin")
    return getpass.getpass("password: ")


def cmd_account(args: argparse.Namespace, out: _Out) -> int:
    name = str(args.name).lower()
    client = _client(args, user=name)
    try:
        password = _password(args)
        fn = client.sign_up if args.command == "signup" else client.log_in
        session = fn(name, password, timeout=args.timeout)
    finally:
        client.close()
    (_home(args) / "current-user").write_text(session.user_name + "\n", "utf-8")
    verb = "signed up and logged in" if args.command == "signup" else "logged in"
    out.emit(
        {"user": session.user_name, "user_id": session.user_id, "expires": session.expires},
        f"{verb} as {session.user_name}",
    )
    return 0


def cmd_logout(args: argparse.Namespace, out: _Out) -> int:
    client = _client(args)
    try:
        client.store.clear_session()
    finally:
        client.close()
    (_home(args) / "current-user").unlink(missing_ok=True)
    out.emit({"logged_out": True}, "logged out on this device (its lists stay here)")
    return 0


def cmd_lists(args: argparse.Namespace, out: _Out) -> int:
    client = _client(args)
    try:
        _logged_in(client, args)
        owned: set[str] = set()
        synced = False
        if not client.offline:
            try:
                owned = set(client.owned_lists(timeout=args.timeout))
            except ClusterUnavailable as exc:
                out.note(f"{exc}: showing this device's lists")
                client.offline = True
        if not client.offline:
            for list_id in sorted(owned - set(client.list_ids())):
                client.open_list(list_id)
            outcome = client.sync(timeout=args.timeout)
            _check_session(outcome.failed)
            synced = outcome.ok
        rows = []
        for list_id in client.list_ids():
            state = client.state(list_id)
            assert state is not None
            rows.append(
                {
                    **_list_view(list_id, state),
                    "mine": list_id in owned,
                    "unsynced": client.queued(list_id),
                }
            )
            if state.deleted and synced:
                client.forget(list_id)  # shown once, then gone from this device
    finally:
        client.close()
    lines = [f"{'ID':<8}  {'NAME':<24}  {'ITEMS':>5}  {'UNSYNCED':>8}  OWNER"]
    for r in rows:
        name = r["name"] or "(no name)"
        if r["deleted"]:
            name += " (deleted)"
        owner = "me" if r["mine"] else ("" if client.offline else "shared")
        lines.append(
            f"{r['list_id'][:8]}  {name:<24.24}  {len(r['items']):>5}  {r['unsynced']:>8}  {owner}"
        )
    if not rows:
        lines.append("(no lists yet: shoplist create NAME)")
    if not synced and not client.offline:
        lines.append("(some lists did not sync; showing this device's copy)")
    out.emit({"lists": rows, "synced": synced}, "\n".join(lines))
    return 0


def cmd_create(args: argparse.Namespace, out: _Out) -> int:
    client = _client(args)
    try:
        _logged_in(client, args)
        list_id = client.create(args.name)
        synced = _sync_after(client, list_id, args, out)
    finally:
        client.close()
    out.emit(
        {"list_id": list_id, "name": args.name, "synced": synced},
        f"created {args.name!r}: {list_id}",
    )
    return 0


def cmd_show(args: argparse.Namespace, out: _Out) -> int:
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
    out.emit(view, _show_text(list_id, state, queued))
    return 0


def _edit(args: argparse.Namespace, out: _Out, mutate: Mutate, done: str) -> int:
    client = _client(args)
    try:
        _logged_in(client, args)
        list_id = _resolve(client, args.list, args)
        client.edit(list_id, mutate)
        synced = _sync_after(client, list_id, args, out)
        state = client.state(list_id)
        assert state is not None
    finally:
        client.close()
    out.emit({**_list_view(list_id, state), "synced": synced}, done)
    return 0


def cmd_add(args: argparse.Namespace, out: _Out) -> int:
    item, qty = args.item, args.qty
    return _edit(args, out, lambda s, r: s.add_item(r, item, qty), f"added {qty} {item}")


def _parse_qty(text: str) -> tuple[str, int]:
    op, digits = text[:1], text[1:]
    if op not in "+-=" or not op or not digits.isdigit() or len(digits) > 7:
        raise argparse.ArgumentTypeError(
            f"expected +N, -N or =N (N up to {MAX_QUANTITY}), got {text!r}"
        )
    return op, int(digits)


def cmd_qty(args: argparse.Namespace, out: _Out) -> int:
    item = args.item
    op, n = args.change
    mutate: Mutate
    if op == "=":
        mutate = lambda s, r: s.set_quantity(r, item, n)  # noqa: E731 - one line per case
    else:
        by = n if op == "+" else -n
        mutate = lambda s, r: s.change_quantity(r, item, by)  # noqa: E731
    return _edit(args, out, mutate, f"{item}: {op}{n}")


def cmd_mark(args: argparse.Namespace, out: _Out) -> int:
    item, bought = args.item, args.command == "buy"
    word = "bought" if bought else "not bought"
    return _edit(args, out, lambda s, r: s.mark_bought(r, item, bought), f"{item}: {word}")


def cmd_remove(args: argparse.Namespace, out: _Out) -> int:
    item = args.item
    return _edit(args, out, lambda s, r: s.remove_item(r, item), f"removed {item}")


def cmd_rename(args: argparse.Namespace, out: _Out) -> int:
    name = args.name
    return _edit(args, out, lambda s, r: s.rename(r, name), f"renamed to {name!r}")


def cmd_delete(args: argparse.Namespace, out: _Out) -> int:
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
            raise AccessDenied("only the list's owner can delete it")
        client.edit(list_id, lambda s, r: s.delete(r))
        outcome = client.sync([list_id], timeout=args.timeout)
        _check_session(outcome.failed)
        if not outcome.ok:
            raise ClusterUnavailable(
                "the deletion is saved here but did not reach the cluster "
                f"({outcome.failed[list_id]}); run 'shoplist sync' later"
            )
        client.forget(list_id)
    finally:
        client.close()
    out.emit({"list_id": list_id, "deleted": True}, f"deleted {list_id}")
    return 0


def cmd_share(args: argparse.Namespace, out: _Out) -> int:
    client = _client(args)
    try:
        list_id = _resolve(client, args.list, args)
        state = client.state(list_id)
        assert state is not None
    finally:
        client.close()
    out.emit(
        {"list_id": list_id, "name": state.name},
        f"{list_id}\n(others open it with: shoplist show {list_id})",
    )
    return 0


def cmd_sync(args: argparse.Namespace, out: _Out) -> int:
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
            f"{len(outcome.failed)} of {count} lists did not sync "
            f"({', '.join(sorted(set(outcome.failed.values())))})"
        )
    out.emit({"synced": count}, f"synced {count} lists")
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
    flags += ["--json"] * bool(args.json) + ["--offline"] * bool(args.offline)
    return flags


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


def cmd_shell(args: argparse.Namespace, out: _Out) -> int:
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
        default=d(None),
        metavar="ENDPOINT",
        help="a broker's front end, repeatable (SHOPLIST_BROKERS, comma-separated)",
    )
    add_seconds_flag(
        p,
        "--timeout",
        "SHOPLIST_TIMEOUT",
        5.0,
        "give up on the network after this long",
        suppress=sub,
    )
    return p


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
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    common = [_common(True)]

    def command(
        name: str, fn: Callable[[argparse.Namespace, _Out], int], text: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text, parents=common)
        p.set_defaults(func=fn)
        return p

    for name, text in (("signup", "create an account and log in"), ("login", "log in")):
        p = command(name, cmd_account, text)
        p.add_argument("name", help="user name")
        p.add_argument(
            "--password-stdin", action="store_true", help="read the password from standard input"
        )
    command("logout", cmd_logout, "forget the session on this device")
    command("lists", cmd_lists, "the lists on this device (and those you own)")
    command("create", cmd_create, "create a list").add_argument("name")
    command("show", cmd_show, "show a list (a full id opens a shared list)").add_argument(
        "list", help="the list's id, or a unique start of it"
    )
    p = command("add", cmd_add, "put an item on a list (or raise its quantity)")
    p.add_argument("list", help="the list's id, or a unique start of it")
    p.add_argument("item")
    p.add_argument("qty", nargs="?", type=int, default=1, help="how many (default 1)")
    p = command("qty", cmd_qty, "change an item's quantity: +N, -N or =N")
    p.add_argument("list", help="the list's id, or a unique start of it")
    p.add_argument("item")
    p.add_argument("change", type=_parse_qty, metavar="+N|-N|=N")
    for name, text in (("buy", "mark an item bought"), ("unbuy", "mark an item not bought")):
        p = command(name, cmd_mark, text)
        p.add_argument("list", help="the list's id, or a unique start of it")
        p.add_argument("item")
    p = command("remove", cmd_remove, "take an item off a list")
    p.add_argument("list", help="the list's id, or a unique start of it")
    p.add_argument("item")
    p = command("rename", cmd_rename, "rename a list")
    p.add_argument("list", help="the list's id, or a unique start of it")
    p.add_argument("name")
    command("delete", cmd_delete, "delete a list for everyone (owner only)").add_argument(
        "list", help="the list's id, or a unique start of it"
    )
    command("share", cmd_share, "print a list's id for others to open").add_argument(
        "list", help="the list's id, or a unique start of it"
    )
    command("sync", cmd_sync, "push and pull every list")
    command("shell", cmd_shell, "run commands one a line, with these flags (quit to end)")
    cli_cluster.add_commands(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``shoplist``."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    # The library's warnings (a retried request, a refused sync) are for the processes'
    # logs; a command says what matters in its own one line.
    logging.basicConfig(
        level=getattr(logging, env("SHOPLIST_LOG_LEVEL", "ERROR").upper(), logging.ERROR),
        format="shoplist %(levelname)s %(name)s: %(message)s",
    )
    out = _Out(args.json)
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
        print(f"shoplist: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
