"""``shoplist cluster up``, ``cluster status``, ``cluster keys`` and ``shoplist demo``."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import zmq

from reference_cluster.errors import ClusterError, ClusterUnavailable
from reference_cluster.processes.cluster import LocalCluster, Timing, probe
from reference_cluster.processes.config import (
    DEFAULT_BASE_PORT,
    DEFAULT_HOST,
    LocalLayout,
    StopSignal,
    add_seconds_flag,
    broker_key_from_args,
    check_endpoint,
    env,
    env_endpoints,
    local_layout,
    parse_base_port,
)
from reference_cluster.processes.security import (
    ADMIN,
    FRONTEND,
    INSECURE_WARNING,
    Operator,
    client_keys,
    ensure_keys,
    load_public,
)
from reference_cluster.protocol.messages import BrokerStatus, ServerStatus, Status

__all__ = ["add_commands"]

Command = Callable[[argparse.Namespace, Any], int]

DEMO_DESCRIPTION = (
    "Run a replicated shopping list on this machine and watch it survive a partition: "
    "2 brokers, 3 servers and 3 clients (alice, bob, carol), each its own process, start "
    "in a temporary folder; they edit one list at once, the network splits and carol "
    "goes offline, each side edits, the links heal, and every replica converges to the "
    "same list. Exits 0 if all six agree on the expected list. Every process it starts "
    "is stopped at the end, also on Ctrl-C."
)


def add_commands(sub: Any, common: Sequence[argparse.ArgumentParser]) -> None:
    """Add ``cluster`` (with ``up`` and ``status``) and ``demo`` to the ``shoplist`` parser.

    ``common`` holds the flags every client command takes; ``cluster`` keeps them, the
    demo takes only its own (``--json`` and ``--keep``).
    """
    cluster = sub.add_parser(
        "cluster",
        help="run or inspect a cluster",
        description="Run a cluster of brokers and servers on this machine, or ask one "
        "which of its processes answer.",
        parents=common,
    )
    verbs = cluster.add_subparsers(dest="verb", required=True, metavar="VERB")
    text = "run 2 brokers and 3 servers on this machine in the foreground (Ctrl-C stops them)"
    up = verbs.add_parser("up", help=text, description=text, parents=common)
    up.set_defaults(func=cmd_up)
    _layout_flags(up, host_help="the address to listen on")
    _data_dir_flag(up, "the servers' stores and the keys")
    add_seconds_flag(
        up, "--anti-entropy", "SHOPLIST_ANTI_ENTROPY", 2.0, "servers' anti-entropy interval"
    )
    up.add_argument(
        "--quiet", action="store_true", help="write the processes' logs to DATA_DIR/logs"
    )
    up.add_argument(
        "--log-level",
        default=env("SHOPLIST_LOG_LEVEL", "INFO"),
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="the processes' log level (SHOPLIST_LOG_LEVEL)",
    )
    text = "which brokers and servers answer"
    status = verbs.add_parser("status", help=text, description=text, parents=common)
    status.set_defaults(func=cmd_status)
    _layout_flags(status, host_help="the host the cluster runs on")
    _data_dir_flag(
        status,
        "where the cluster's keys are, as DATA_DIR/keys (servers answer "
        "only members: the admin key)",
    )
    text = (
        "make the CURVE keys of 2 brokers and 3 servers (kept if they exist): DATA_DIR/keys; "
        "clients need DATA_DIR/keys/frontend.key"
    )
    keys = verbs.add_parser("keys", help=text, description=text, parents=common)
    keys.set_defaults(func=cmd_keys)
    _data_dir_flag(keys, "the cluster's data folder")

    demo = sub.add_parser(
        "demo",
        help="a local cluster and clients: edit, partition, heal, converge",
        description=DEMO_DESCRIPTION,
    )
    demo.set_defaults(func=cmd_demo)
    demo.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,  # the top-level --json gives the default
        help="print one JSON report (timings, replicas) instead of the story",
    )
    demo.add_argument(
        "--keep",
        action="store_true",
        help="keep the data and logs folder (deleted at exit otherwise, unless the demo fails)",
    )


def _data_dir_flag(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--data-dir",
        default=env("SHOPLIST_DATA_DIR", "") or None,
        metavar="DIR",
        help=f"{what} (SHOPLIST_DATA_DIR; default: the folder 'cluster' in "
        f"--home, {Path(env('SHOPLIST_HOME', '~/.shoplist')) / 'cluster'})",
    )


def _host(text: str) -> str:
    """A host name or address to put in ``tcp://HOST:PORT`` (an argparse ``type``)."""
    try:
        check_endpoint(f"tcp://{text}:1")
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected a host name or address such as {DEFAULT_HOST}, got {text!r}"
        ) from None
    return text


def _layout_flags(p: argparse.ArgumentParser, *, host_help: str) -> None:
    layout = local_layout()  # SHOPLIST_HOST and SHOPLIST_BASE_PORT (checked)
    p.add_argument(
        "--host",
        type=_host,
        default=layout.host,
        help=f"{host_help} (SHOPLIST_HOST; default %(default)s)",
    )
    p.add_argument(
        "--base-port",
        type=parse_base_port,
        default=layout.base,
        metavar="PORT",
        help="brokers at PORT, PORT+10 (+1 for servers), servers at PORT+101.. "
        "(SHOPLIST_BASE_PORT; default %(default)s)",
    )


def _data_dir(args: argparse.Namespace) -> Path:
    """--data-dir, else SHOPLIST_DATA_DIR, else ``cluster`` in the device's home."""
    if args.data_dir:
        return Path(args.data_dir).expanduser()
    return Path(args.home).expanduser() / "cluster"


def _reach(layout: LocalLayout, args: argparse.Namespace, data_dir: Path) -> str:
    """How a client on this machine reaches the cluster."""
    default_keys = data_dir == Path(args.home).expanduser() / "cluster"
    if args.insecure:
        key = "; INSECURE: clients need --insecure"
    elif default_keys:
        key = ""
    else:
        key = f"; clients need --broker-key {data_dir / 'keys' / 'frontend.key'}"
    if (layout.host, layout.base) == (DEFAULT_HOST, DEFAULT_BASE_PORT) and not key:
        brokers = " and ".join(layout.frontends)
        return (
            f"clients need no flags: {brokers} are their default brokers, and they find "
            "the brokers' key in --home"
        )
    if (layout.host, layout.base) == (DEFAULT_HOST, DEFAULT_BASE_PORT):
        return f"clients use {' and '.join(layout.frontends)}{key}"
    settings = []
    if layout.host != DEFAULT_HOST:
        settings.append(f"SHOPLIST_HOST={layout.host}")
    if layout.base != DEFAULT_BASE_PORT:
        settings.append(f"SHOPLIST_BASE_PORT={layout.base}")
    flags = " ".join(f"--broker {endpoint}" for endpoint in layout.frontends)
    return f"clients: export {' '.join(settings)}, or {flags}{key}"


def cmd_up(args: argparse.Namespace, out: Any) -> int:
    """Run the cluster until SIGINT or SIGTERM."""
    layout = LocalLayout(args.host, args.base_port)
    data_dir = _data_dir(args)
    timing = Timing(anti_entropy=args.anti_entropy)
    cluster = LocalCluster(
        data_dir,
        layout=layout,
        timing=timing,
        quiet=args.quiet,
        log_level=args.log_level,
        insecure=args.insecure,
    )
    stop = StopSignal()
    try:
        try:
            cluster.start()
        except RuntimeError as exc:  # a process exited: one line, as every command error
            raise ClusterError(str(exc).splitlines()[0]) from None
        rows = []
        for i, name in enumerate(cluster.brokers):
            rows.append(
                f"  {name}  pid {cluster.pid(name):<7}  clients {layout.frontend(i)}"
                f"  servers {layout.backend(i)}"
            )
        for j, name in enumerate(cluster.servers):
            rows.append(
                f"  {name}  pid {cluster.pid(name):<7}  peers   {layout.peer(j + 1)}"
                f"  store {data_dir / (name + '.sqlite')}"
            )
        out.emit(
            {
                "brokers": layout.frontends,
                "servers": {s: layout.peer(j + 1) for j, s in enumerate(cluster.servers)},
                "pids": {n: cluster.pid(n) for n in cluster.children},
                "data_dir": str(data_dir),
                "broker_key": None if cluster.broker_key is None else cluster.broker_key.decode(),
            },
            "\n".join(
                [
                    f"cluster up, data in {data_dir} (Ctrl-C stops it):",
                    *rows,
                    f"ready: both brokers hold {' '.join(cluster.servers)} live",
                    _security_line(cluster),
                    _reach(layout, args, data_dir),
                ]
            ),
        )
        while not stop.check():
            _wait_fd(stop.fd, _SUPERVISE_EVERY)
            stop.drain()
            for line in cluster.supervise():  # a child that died is restarted, with back-off
                out.note(line)
        out.note(f"stopping ({stop.reason})")
    finally:
        cluster.close()
        stop.close()
    out.note("stopped every process")
    return 0


def _security_line(cluster: LocalCluster) -> str:
    if cluster.keys is None:
        return f"INSECURE: {INSECURE_WARNING}"
    return (
        f"every link encrypted (CURVE); keys in {cluster.keys}, brokers' public key "
        f"{cluster.keys / 'frontend.key'}"
    )


def cmd_keys(args: argparse.Namespace, out: Any) -> int:
    """Make the keys of the local layout's members (keeping those that exist)."""
    keys = _data_dir(args) / "keys"
    layout = local_layout()
    names = [*(f"b{i}" for i in range(layout.brokers)), *layout.server_ids, ADMIN]
    made = ensure_keys(keys, names)
    public = load_public(keys / f"{FRONTEND}.key").decode()
    text = f"made {', '.join(made)}" if made else "every key was there already"
    out.emit(
        {"keys": str(keys), "made": made, "broker_key": public},
        f"{text}: {keys}\nclients pin the brokers' public key {public} "
        f"({keys / (FRONTEND + '.key')}; --broker-key or SHOPLIST_BROKER_KEY)",
    )
    return 0


_SUPERVISE_EVERY = 0.25
"""How often ``cluster up`` looks for children that died (seconds)."""


def _wait_fd(fd: int, timeout: float) -> None:
    poller = zmq.Poller()
    poller.register(fd, zmq.POLLIN)
    poller.poll(int(timeout * 1000))


def _restarts(incarnation: int) -> str:
    """``never restarted``, ``restarted once``, ``restarted 2 times``."""
    if incarnation == 0:
        return "never restarted"
    return "restarted once" if incarnation == 1 else f"restarted {incarnation} times"


def _lists(n: int) -> str:
    return f"{n} list" if n == 1 else f"{n} lists"


def cmd_status(args: argparse.Namespace, out: Any) -> int:
    """Ask every broker (and the local layout's servers) who is alive."""
    layout = LocalLayout(args.host, args.base_port)
    brokers = args.broker or env_endpoints("SHOPLIST_BROKERS", layout.frontends)
    wait = min(1.0, args.timeout)
    keys = _data_dir(args) / "keys"
    client = client_keys(broker_key_from_args(args, keys / f"{FRONTEND}.key"))
    admin = Operator.from_keys(None).admin
    if client.secure and (keys / "private" / f"{ADMIN}.key_secret").exists():
        admin = Operator.from_keys(keys).admin
    ctx: zmq.Context[Any] = zmq.Context()
    data: dict[str, Any] = {"brokers": {}, "servers": {}}
    lines = []
    try:
        for endpoint in brokers:
            reply = probe(
                endpoint, Status("status"), timeout=wait, ctx=ctx, secure=client.dial_broker
            )
            if isinstance(reply, BrokerStatus):
                data["brokers"][endpoint] = {"id": reply.broker, "servers": list(reply.servers)}
                live = " ".join(reply.servers) or "none"
                lines.append(f"broker {reply.broker:<4} {endpoint:<24} up    live servers: {live}")
            else:
                data["brokers"][endpoint] = None
                lines.append(f"broker {'?':<4} {endpoint:<24} no answer")
        for j, name in enumerate(layout.server_ids):
            endpoint = layout.peer(j + 1)
            reply = probe(
                endpoint,
                Status("status"),
                timeout=wait,
                ctx=ctx,
                secure=functools.partial(admin.dial_member, name=name),
            )
            if isinstance(reply, ServerStatus):
                data["servers"][name] = {
                    "incarnation": reply.incarnation,
                    "lists": len(reply.digests),
                }
                lines.append(
                    f"server {reply.server:<4} {endpoint:<24} up    "
                    f"{_lists(len(reply.digests))}, {_restarts(reply.incarnation)}"
                )
            else:
                data["servers"][name] = None
                lines.append(f"server {name:<4} {endpoint:<24} no answer")
    finally:
        ctx.term()
    if not any(data["brokers"].values()):
        raise ClusterUnavailable(f"no broker answered at {', '.join(brokers)}")
    out.emit(data, "\n".join(lines))
    return 0


def cmd_demo(args: argparse.Namespace, out: Any) -> int:
    """Run the demo (see :mod:`reference_cluster.cli.demo`)."""
    from reference_cluster.cli.demo import run_demo

    return run_demo(keep=args.keep, as_json=args.json)
