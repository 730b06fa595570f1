"""``shoplist cluster up``, ``shoplist cluster status`` and ``shoplist demo``."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import zmq

from reference_cluster.errors import ClusterUnavailable
from reference_cluster.processes.cluster import LocalCluster, Timing, probe
from reference_cluster.processes.config import (
    DEFAULT_BASE_PORT,
    LocalLayout,
    StopSignal,
    add_seconds_flag,
    env,
    env_float,
    env_list,
)
from reference_cluster.protocol.messages import BrokerStatus, ServerStatus, Status

__all__ = ["add_commands"]

Command = Callable[[argparse.Namespace, Any], int]


def add_commands(sub: Any, common: Sequence[argparse.ArgumentParser]) -> None:
    """Add ``cluster`` (with ``up`` and ``status``) and ``demo`` to the ``shoplist`` parser."""
    cluster = sub.add_parser("cluster", help="run or inspect a cluster", parents=common)
    verbs = cluster.add_subparsers(dest="verb", required=True, metavar="VERB")
    up = verbs.add_parser(
        "up",
        help="run 2 brokers and 3 servers on this machine in the foreground (Ctrl-C stops them)",
        parents=common,
    )
    up.set_defaults(func=cmd_up)
    _layout_flags(up)
    up.add_argument(
        "--data-dir",
        default=env("SHOPLIST_DATA_DIR", "shoplist-data"),
        metavar="DIR",
        help="the servers' stores (SHOPLIST_DATA_DIR; default %(default)s)",
    )
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
    status = verbs.add_parser("status", help="which brokers and servers answer", parents=common)
    status.set_defaults(func=cmd_status)
    _layout_flags(status)

    demo = sub.add_parser(
        "demo",
        help="a local cluster and clients: edit, partition, heal, converge",
        parents=common,
    )
    demo.set_defaults(func=cmd_demo)
    demo.add_argument("--keep", action="store_true", help="keep the data directory")


def _layout_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--host",
        default=env("SHOPLIST_HOST", "127.0.0.1"),
        help="the address to listen on (SHOPLIST_HOST; default %(default)s)",
    )
    p.add_argument(
        "--base-port",
        type=int,
        default=int(env_float("SHOPLIST_BASE_PORT", DEFAULT_BASE_PORT)),
        metavar="PORT",
        help="brokers at PORT, PORT+10 (+1 for servers), servers at PORT+101.. "
        "(SHOPLIST_BASE_PORT; default %(default)s)",
    )


def cmd_up(args: argparse.Namespace, out: Any) -> int:
    """Run the cluster until SIGINT or SIGTERM."""
    layout = LocalLayout(args.host, args.base_port)
    data_dir = Path(args.data_dir)
    timing = Timing(anti_entropy=args.anti_entropy)
    cluster = LocalCluster(
        data_dir, layout=layout, timing=timing, quiet=args.quiet, log_level=args.log_level
    )
    stop = StopSignal()
    try:
        cluster.start()
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
            },
            "\n".join(
                [
                    f"cluster up, data in {data_dir} (Ctrl-C stops it):",
                    *rows,
                    f"ready: both brokers hold {' '.join(cluster.servers)} live; "
                    f"clients use --broker {layout.frontend(0)} (the default)",
                ]
            ),
        )
        reported: set[str] = set()
        while not stop.check():
            _wait_fd(stop.fd, 1.0)
            stop.drain()
            for name in cluster.children:
                if name not in reported and not cluster.alive(name):
                    reported.add(name)
                    out.note(f"{name} exited; the others keep serving")
        out.note(f"stopping ({stop.reason})")
    finally:
        cluster.close()
        stop.close()
    out.note("stopped every process")
    return 0


def _wait_fd(fd: int, timeout: float) -> None:
    poller = zmq.Poller()
    poller.register(fd, zmq.POLLIN)
    poller.poll(int(timeout * 1000))


def cmd_status(args: argparse.Namespace, out: Any) -> int:
    """Ask every broker (and the local layout's servers) who is alive."""
    layout = LocalLayout(args.host, args.base_port)
    brokers = args.broker or env_list("SHOPLIST_BROKERS", layout.frontends)
    ctx: zmq.Context[Any] = zmq.Context()
    data: dict[str, Any] = {"brokers": {}, "servers": {}}
    lines = []
    try:
        for endpoint in brokers:
            reply = probe(endpoint, Status("status"), timeout=min(1.0, args.timeout), ctx=ctx)
            if isinstance(reply, BrokerStatus):
                data["brokers"][endpoint] = {"id": reply.broker, "servers": list(reply.servers)}
                live = " ".join(reply.servers) or "none"
                lines.append(f"broker {reply.broker:<4} {endpoint:<24} up    live servers: {live}")
            else:
                data["brokers"][endpoint] = None
                lines.append(f"broker {'?':<4} {endpoint:<24} no answer")
        for j, name in enumerate(layout.server_ids):
            endpoint = layout.peer(j + 1)
            reply = probe(endpoint, Status("status"), timeout=min(1.0, args.timeout), ctx=ctx)
            if isinstance(reply, ServerStatus):
                data["servers"][name] = {
                    "incarnation": reply.incarnation,
                    "lists": len(reply.digests),
                }
                lines.append(
                    f"server {reply.server:<4} {endpoint:<24} up    {len(reply.digests)} lists, "
                    f"restarted {reply.incarnation} times"
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
