"""``shoplist cluster up``, ``cluster status``, ``cluster keys`` and ``shoplist demo``."""

from __future__ import annotations

import argparse
import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import zmq

from reference_cluster.cli.membership import (
    MEMBERSHIP_FILE,
    Follower,
    cmd_add_server,
    cmd_remove_server,
    read_membership,
    read_record,
    record_membership,
)
from reference_cluster.cli.membership import ordered as _ordered
from reference_cluster.cores.quorum import write_quorum as check_quorum
from reference_cluster.errors import ClusterError, ClusterUnavailable
from reference_cluster.processes.cluster import LocalCluster, Timing, probe
from reference_cluster.processes.config import (
    DEFAULT_BASE_PORT,
    DEFAULT_HOST,
    MAX_SERVERS,
    LocalLayout,
    StopSignal,
    add_count_flag,
    add_seconds_flag,
    broker_key_from_args,
    check_endpoint,
    env,
    env_endpoints,
    local_layout,
    parse_base_port,
    parse_count,
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
from reference_cluster.protocol.placement import DEFAULT_REPLICAS, Membership

__all__ = [
    "MEMBERSHIP_FILE",
    "add_commands",
    "membership_json",
    "membership_text",
    "read_membership",
    "record_membership",
    "status_report",
]

DEFAULT_SERVERS = 3
"""How many servers ``cluster up`` runs unless told (``--servers``, ``SHOPLIST_SERVERS``)."""
_SERVERS_HELP = f"how many servers, s1 to sN (1 to {MAX_SERVERS}; their peer ports are PORT+101.."
_REPLICAS_HELP = (
    "how many of the servers hold each list; N may exceed the number of servers, and at "
    "least that many means every server holds every list"
)

Command = Callable[[argparse.Namespace, Any], int]

DEMO_DESCRIPTION = (
    "Run a replicated shopping list on this machine and watch it survive stopped servers "
    "and a partition: 2 brokers, 5 servers (each list on 3 of them, an edit acknowledged "
    "once 2 hold it) and 3 clients (alice, bob, carol), each its own process, start in a "
    "temporary folder; two of the list's holders are killed while the clients edit, a "
    "server after them keeps an edit as a hint and hands it back once the holders "
    "restart; the network splits and carol goes offline, each side edits, the links heal, "
    "and every replica converges to the same list. Exits 0 if all six (3 holders, 3 "
    "clients) agree on the expected list. Every process it starts is stopped at the end, "
    "also on Ctrl-C."
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
    text = (
        "run 2 brokers and 3 servers (--servers) on this machine in the foreground, each "
        "list on 3 of the servers (--replicas); Ctrl-C stops them"
    )
    up = verbs.add_parser("up", help=text, description=text, parents=common)
    up.set_defaults(func=cmd_up, usage_error=up.error)
    _layout_flags(up, host_help="the address to listen on")
    _data_dir_flag(up, "the servers' stores, the keys and the membership")
    add_count_flag(
        up,
        "--servers",
        "SHOPLIST_SERVERS",
        DEFAULT_SERVERS,
        _SERVERS_HELP + "PORT+100+N)",
        maximum=MAX_SERVERS,
    )
    add_count_flag(up, "--replicas", "SHOPLIST_REPLICAS", DEFAULT_REPLICAS, _REPLICAS_HELP)
    up.add_argument(
        "--write-quorum",
        type=_replicas,
        default=None,
        metavar="W",
        help="how many servers hold an edit durably before it is acknowledged, at most "
        "the replicas (SHOPLIST_WRITE_QUORUM; default 2, or 1 with one replica)",
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
    text = (
        "add the next server to the running cluster up's membership: it starts the server, "
        "and the servers hand it the lists it now holds"
    )
    add = verbs.add_parser("add-server", help=text, description=text, parents=common)
    add.set_defaults(func=_in_data_dir(cmd_add_server))
    _data_dir_flag(add, "the running cluster's data folder (its membership record)")
    text = (
        "take a server out of the running cluster up's membership: it hands its lists to "
        "their holders and is then stopped"
    )
    remove = verbs.add_parser("remove-server", help=text, description=text, parents=common)
    remove.set_defaults(func=_in_data_dir(cmd_remove_server))
    remove.add_argument("server", help="the server's id, as cluster status shows it (s2)")
    _data_dir_flag(remove, "the running cluster's data folder (its membership record)")
    text = "which brokers and servers answer"
    status = verbs.add_parser("status", help=text, description=text, parents=common)
    status.set_defaults(func=cmd_status, usage_error=status.error)
    _layout_flags(status, host_help="the host the cluster runs on")
    _data_dir_flag(
        status,
        "where the cluster's keys are, as DATA_DIR/keys (servers answer "
        "only members: the admin key), and the membership cluster up recorded",
    )
    recorded = f"default: what cluster up recorded in DATA_DIR/{MEMBERSHIP_FILE}, else"
    status.add_argument(
        "--servers",
        type=_servers,
        metavar="N",
        help=f"{_SERVERS_HELP}.) ({recorded} SHOPLIST_SERVERS, else {DEFAULT_SERVERS})",
    )
    status.add_argument(
        "--replicas",
        type=_replicas,
        metavar="N",
        help=f"{_REPLICAS_HELP} ({recorded} SHOPLIST_REPLICAS, else {DEFAULT_REPLICAS})",
    )
    text = (
        "make the CURVE keys of 2 brokers and 3 servers (--servers; kept if they exist): "
        "DATA_DIR/keys; clients need DATA_DIR/keys/frontend.key"
    )
    keys = verbs.add_parser("keys", help=text, description=text, parents=common)
    keys.set_defaults(func=cmd_keys)
    _data_dir_flag(keys, "the cluster's data folder")
    add_count_flag(
        keys,
        "--servers",
        "SHOPLIST_SERVERS",
        DEFAULT_SERVERS,
        f"how many servers to make keys for, s1 to sN (1 to {MAX_SERVERS})",
        maximum=MAX_SERVERS,
    )

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
        help="print one JSON report (timings, placement, hints, replicas, pids), not the story",
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


def _in_data_dir(verb: Callable[[argparse.Namespace, Any, Path], int]) -> Command:
    """``verb`` given the data folder the flags name."""

    def run(args: argparse.Namespace, out: Any) -> int:
        return verb(args, out, _data_dir(args))

    return run


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


def _servers(text: str) -> int:
    """A number of servers, 1 to :data:`MAX_SERVERS` (an argparse ``type``)."""
    return parse_count(text, minimum=1, maximum=MAX_SERVERS)


def _replicas(text: str) -> int:
    """A replica count, at least 1 (an argparse ``type``)."""
    return parse_count(text, minimum=1)


def _env_count(var: str, default: int, *, maximum: int | None = None) -> int:
    """A count from the environment variable ``var`` (else ``default``).

    Raises:
        ValueError: a bad value (one line naming the variable).
    """
    raw = os.environ.get(var)
    if not raw:
        return default
    try:
        return parse_count(raw, minimum=1, maximum=maximum)
    except argparse.ArgumentTypeError as exc:
        raise ValueError(f"{var}: {exc}") from None


def _checked_layout(args: argparse.Namespace, servers: int) -> LocalLayout:
    """The layout of ``servers`` servers at --host and --base-port; a base port that puts
    a server's port above 65535 is a usage error (status 2), as a bad flag is."""
    try:
        return LocalLayout(args.host, args.base_port, servers=servers)
    except ValueError:
        try:
            parse_base_port(str(args.base_port), servers=servers)
        except argparse.ArgumentTypeError as exc:
            args.usage_error(f"argument --base-port: with {servers} servers, {exc}")
        raise


def membership_text(membership: Membership, replicas: int) -> str:
    """One line: the members, the epoch and how many of them hold each list."""
    names = _ordered(membership.servers)
    count = f"{len(names)} server{'s' if len(names) != 1 else ''}"
    if membership.everywhere(replicas):
        each = f"every server holds every list (--replicas {replicas}, {count})"
    else:
        each = f"each list on {replicas} of the {count}"
    return f"membership epoch {membership.epoch}: {' '.join(names)}; {each}"


def membership_json(membership: Membership, replicas: int, recorded: Path | None) -> dict[str, Any]:
    """The membership as ``cluster up`` and ``cluster status`` report it in JSON."""
    return {
        "servers": _ordered(membership.servers),
        "replicas": replicas,
        "epoch": membership.epoch,
        "recorded": None if recorded is None else str(recorded),
    }


def _up_report(
    cluster: LocalCluster, args: argparse.Namespace, recorded: Path
) -> tuple[dict[str, Any], str]:
    """What ``cluster up`` prints once every broker holds every server live."""
    layout, data_dir = cluster.layout, cluster.data_dir
    width = max(len(name) for name in cluster.children)
    rows = []
    for i, name in enumerate(cluster.brokers):
        rows.append(
            f"  {name:<{width}}  pid {cluster.pid(name):<7}  clients {layout.frontend(i)}"
            f"  servers {layout.backend(i)}"
        )
    for j, name in enumerate(cluster.servers):
        rows.append(
            f"  {name:<{width}}  pid {cluster.pid(name):<7}  peers   {layout.peer(j + 1)}"
            f"  store {data_dir / (name + '.sqlite')}"
        )
    copies = min(cluster.replicas, len(cluster.servers))
    quorum = check_quorum(cluster.write_quorum, copies)
    data = {
        "brokers": layout.frontends,
        "servers": {s: layout.peer(j + 1) for j, s in enumerate(cluster.servers)},
        "pids": {n: cluster.pid(n) for n in cluster.children},
        "data_dir": str(data_dir),
        "broker_key": None if cluster.broker_key is None else cluster.broker_key.decode(),
        "membership": membership_json(cluster.membership, cluster.replicas, recorded),
        "write_quorum": quorum,
    }
    text = "\n".join(
        [
            f"cluster up, data in {data_dir} (Ctrl-C stops it):",
            *rows,
            f"ready: both brokers hold {' '.join(cluster.servers)} live",
            membership_text(cluster.membership, cluster.replicas),
            f"an edit is acknowledged once {quorum} server{'s hold' if quorum > 1 else ' holds'} "
            "it durably (--write-quorum)",
            _security_line(cluster),
            _reach(layout, args, data_dir),
        ]
    )
    return data, text


def cmd_up(args: argparse.Namespace, out: Any) -> int:
    """Run the cluster until SIGINT or SIGTERM."""
    layout = _checked_layout(args, args.servers)
    data_dir = _data_dir(args)
    timing = Timing(anti_entropy=args.anti_entropy)
    quorum = args.write_quorum
    if quorum is None:
        quorum = _env_count("SHOPLIST_WRITE_QUORUM", 0) or None
    try:
        cluster = LocalCluster(
            data_dir,
            layout=layout,
            timing=timing,
            replicas=args.replicas,
            write_quorum=quorum,
            quiet=args.quiet,
            log_level=args.log_level,
            insecure=args.insecure,
        )
    except ValueError as exc:
        args.usage_error(f"argument --write-quorum: {exc}")
        raise
    stop = StopSignal()
    try:
        try:
            cluster.start()
        except RuntimeError as exc:  # a process exited: one line, as every command error
            raise ClusterError(str(exc).splitlines()[0]) from None
        recorded = record_membership(data_dir, cluster.servers, cluster.replicas)
        out.emit(*_up_report(cluster, args, recorded))
        follower = Follower(cluster, data_dir)
        while not stop.check():
            _wait_fd(stop.fd, _SUPERVISE_EVERY)
            stop.drain()
            for line in cluster.supervise():  # a child that died is restarted, with back-off
                out.note(line)
            for line in follower.check():  # cluster add-server / remove-server
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
    servers = [f"s{j}" for j in range(1, args.servers + 1)]
    names = [*(f"b{i}" for i in range(layout.brokers)), *servers, ADMIN]
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


def _status_membership(
    args: argparse.Namespace, data_dir: Path
) -> tuple[Membership, int, Path | None]:
    """The membership ``cluster status`` reports, its replica count, and the record it
    came from: each of --servers and --replicas if given, else what ``cluster up``
    recorded in the data folder, else SHOPLIST_SERVERS / SHOPLIST_REPLICAS, else 3."""
    path = data_dir / MEMBERSHIP_FILE
    found = None
    if args.servers is None or args.replicas is None:
        found = read_membership(path)
    if args.servers is not None:
        servers: int = args.servers
    elif found is not None:
        servers = len(found[0].servers)
    else:
        servers = _env_count("SHOPLIST_SERVERS", DEFAULT_SERVERS, maximum=MAX_SERVERS)
    if args.replicas is not None:
        replicas: int = args.replicas
    elif found is not None:
        replicas = found[1]
    else:
        replicas = _env_count("SHOPLIST_REPLICAS", DEFAULT_REPLICAS)
    if found is not None and args.servers is None:
        members = found[0]
    else:
        members = Membership([f"s{j}" for j in range(1, servers + 1)])
    return members, replicas, None if found is None else path


def status_report(
    membership: Membership,
    replicas: int,
    recorded: Path | None,
    brokers: Sequence[tuple[str, BrokerStatus | None]],
    servers: Sequence[tuple[str, str, ServerStatus | None]],
) -> tuple[dict[str, Any], str]:
    """What ``cluster status`` prints: the membership, then each broker (at its end
    point) and each member server (id, end point) with its answer, None for none."""
    data: dict[str, Any] = {
        "membership": membership_json(membership, replicas, recorded),
        "brokers": {},
        "servers": {},
    }
    lines = [membership_text(membership, replicas)]
    for endpoint, reply in brokers:
        if reply is None:
            data["brokers"][endpoint] = None
            lines.append(f"broker {'?':<4} {endpoint:<24} no answer")
            continue
        data["brokers"][endpoint] = {"id": reply.broker, "servers": list(reply.servers)}
        live = " ".join(reply.servers) or "none"
        strangers = [s for s in reply.servers if s not in membership.servers]
        extra = f"; not members: {' '.join(strangers)}" if strangers else ""
        lines.append(f"broker {reply.broker:<4} {endpoint:<24} up    live servers: {live}{extra}")
    for name, endpoint, status in servers:
        if status is None:
            data["servers"][name] = None
            lines.append(f"server {name:<4} {endpoint:<24} no answer")
            continue
        data["servers"][name] = {
            "incarnation": status.incarnation,
            "lists": len(status.digests),
            "epoch": status.epoch,
            "handing": status.handing,
        }
        role = "" if name in membership.servers else "left, "
        handing = f", {status.handing} to hand over" if status.handing else ""
        lines.append(
            f"server {status.server:<4} {endpoint:<24} up    {role}"
            f"{_lists(len(status.digests))}, epoch {status.epoch}{handing}, "
            f"{_restarts(status.incarnation)}"
        )
    return data, "\n".join(lines)


def cmd_status(args: argparse.Namespace, out: Any) -> int:
    """Ask every broker (and the membership's servers) who is alive."""
    data_dir = _data_dir(args)
    membership, replicas, recorded = _status_membership(args, data_dir)
    record = read_record(recorded) if recorded is not None and args.servers is None else None
    probed = _ordered(membership.servers | set(() if record is None else record.left))
    layout = _checked_layout(args, max(int(s[1:]) for s in probed))
    brokers = args.broker or env_endpoints("SHOPLIST_BROKERS", layout.frontends)
    wait = min(1.0, args.timeout)
    keys = data_dir / "keys"
    client = client_keys(broker_key_from_args(args, keys / f"{FRONTEND}.key"))
    admin = Operator.from_keys(None).admin
    if client.secure and (keys / "private" / f"{ADMIN}.key_secret").exists():
        admin = Operator.from_keys(keys).admin
    ctx: zmq.Context[Any] = zmq.Context()
    answers: list[tuple[str, BrokerStatus | None]] = []
    states: list[tuple[str, str, ServerStatus | None]] = []
    try:
        for endpoint in brokers:
            reply = probe(
                endpoint, Status("status"), timeout=wait, ctx=ctx, secure=client.dial_broker
            )
            answers.append((endpoint, reply if isinstance(reply, BrokerStatus) else None))
        for name in probed:
            endpoint = layout.peer(int(name[1:]))
            reply = probe(
                endpoint,
                Status("status"),
                timeout=wait,
                ctx=ctx,
                secure=functools.partial(admin.dial_member, name=name),
            )
            states.append((name, endpoint, reply if isinstance(reply, ServerStatus) else None))
    finally:
        ctx.term()
    if not any(reply for _, reply in answers):
        raise ClusterUnavailable(f"no broker answered at {', '.join(brokers)}")
    out.emit(*status_report(membership, replicas, recorded, answers, states))
    return 0


def cmd_demo(args: argparse.Namespace, out: Any) -> int:
    """Run the demo (see :mod:`reference_cluster.cli.demo`)."""
    from reference_cluster.cli.demo import run_demo

    return run_demo(keep=args.keep, as_json=args.json)
