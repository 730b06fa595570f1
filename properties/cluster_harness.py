"""Real broker, server and client processes for end-to-end fault tests: started, killed,
restarted, partitioned and checked with the simulator's checkers.

Theory of operation
-------------------
Rule 1 (one host per process). :class:`RealCluster` runs brokers ``b0, b1, ...`` and servers
``s1, s2, ...`` as child processes, and client agents
(``python -m reference_cluster.processes.agent``, driven by JSON lines through
:class:`Agent`) on demand. Given a
:class:`~netns.Namespace`, every process runs inside it as its own host: it binds its
host's loopback address and dials from it (``tcp://SRC:0;DST:PORT``), so
:meth:`RealCluster.partition` cuts exactly the links between hosts with iptables. Without a
namespace everything runs on ``127.0.0.1`` and nothing can be cut (SIGKILL tests).

Rule 2 (the driver is never cut). Status requests go from ``127.0.0.1``, which belongs to
no host: a :class:`Prober` process inside the namespace (this module run as a script), or
an in-process socket without one. So the test sees every server's state at any time.

Rule 3 (everything stops, by pid). :meth:`RealCluster.close` stops every process it ever
started (SIGTERM, then SIGKILL), also those killed and restarted; use it as a context
manager so that this happens when a test fails. Children run with ``--watch-parent``.
Every wait polls with a deadline.

Rule 4 (edits are recorded as the simulator records them). :class:`Workload` turns the
simulator's random shopping-list operations into agent commands, keeps each accepted
edit's delta as an :class:`~reference_cluster.sim.EditRecord`, and marks it acknowledged
once its client's ``acked_through`` reaches its sequence number. :func:`check_cluster`
runs :func:`reference_cluster.sim.checkers.check_final` on the final states.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import attrs
import zmq
from netns import Namespace

from reference_cluster.errors import MalformedMessage
from reference_cluster.processes.cluster import (
    AgentError,
    JsonLines,
    Timing,
    free_base_port,
    probe,
    stop_process,
)
from reference_cluster.processes.config import (
    LocalLayout,
    broker_argv,
    broker_key_argv,
    common_argv,
    read_ready,
    server_argv,
)
from reference_cluster.processes.security import ADMIN, Operator, ensure_keys
from reference_cluster.protocol.messages import (
    BrokerStatus,
    MembershipUpdate,
    Message,
    ServerStatus,
    Status,
    decode,
    encode,
)
from reference_cluster.protocol.placement import Membership
from reference_cluster.shopping_list import ShoppingList
from reference_cluster.sim.checkers import FinalCheck, check_final
from reference_cluster.sim.workload import EditRecord, Op, ShoppingListModel

__all__ = [
    "PASSWORD",
    "Agent",
    "AgentGone",
    "Prober",
    "RealCluster",
    "Workload",
    "check_cluster",
    "poll",
    "server_digests",
    "signed_up",
    "user_name",
    "wait_quiescent",
]

NS_BASE_PORT = 7000  # a fresh namespace has every port free
START_TIMEOUT = 30.0
PASSWORD = "real-cluster-password"
_STOP_TIMEOUT = 5.0


AgentGone = AgentError
"""A child driven by JSON lines did not answer in time, or exited."""


def signed_up(make: Callable[[str], Any], name: str) -> Any:
    """A client from ``make(name)`` signed up as a fresh user whose name starts with
    ``name`` (the user name is ``client.session.user_name``)."""
    client = make(name)
    client.sign_up(f"{name}-{random.randbytes(3).hex()}", PASSWORD)
    return client


def user_name(client: Any) -> str:
    """The user name a client is logged in as."""
    session = client.session
    assert session is not None
    return str(session.user_name)


def poll(check: Callable[[], Any], what: str, *, timeout: float, every: float = 0.05) -> Any:
    """Call ``check`` until it returns something truthy (returned); at most ``timeout``
    seconds.

    Raises:
        TimeoutError: not in time (the message names ``what``).
    """
    deadline = time.monotonic() + timeout
    for _ in range(1_000_000):
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            break
        time.sleep(every)
    raise TimeoutError(f"not within {timeout:g}s: {what}")


def stop_pid(proc: subprocess.Popen[Any], timeout: float = _STOP_TIMEOUT) -> int:
    """Stop a child by its pid (SIGTERM, then SIGKILL) and reap it; return its status."""
    return stop_process(proc, timeout)


# -- JSON-line children ---------------------------------------------------------------------


class _Lines(JsonLines):
    """Commands out as JSON lines, answers back matched by ``id``."""

    def wait(self, command_id: int, timeout: float = 30.0) -> dict[str, Any]:
        """The answer to command ``command_id``, whatever it says.

        Raises:
            AgentGone: no answer within ``timeout``, or the child exited.
        """
        return self.answer(command_id, timeout)

    def call(self, op: str, *, timeout: float = 30.0, **fields: Any) -> dict[str, Any]:
        """Send a command and wait for its answer, which must be ``ok``.

        Raises:
            AgentGone: no answer. RuntimeError: the command was refused.
        """
        answer = self.wait(self.begin(op, **fields), timeout)
        if not answer.get("ok"):
            raise RuntimeError(f"{self.name}: {op} refused: {answer.get('error')}")
        return answer


class Agent(_Lines):
    """A client agent process (see :mod:`reference_cluster.processes.agent`)."""


class Prober(_Lines):
    """A process inside the namespace that sends status requests for the test (from
    ``127.0.0.1``, never cut) and prints the replies: this module run as a script."""

    def ask(
        self, endpoint: str, message: Message, timeout: float, *, name: str, broker: bool
    ) -> Message | None:
        """Send ``message`` to ``endpoint`` (process ``name``, a broker or a server, dialled
        with the operator's keys); the first reply, or None."""
        answer = self.call(
            "probe",
            endpoint=endpoint,
            message=encode(message).decode(),
            seconds=timeout,
            name=name,
            broker=broker,
        )
        reply = answer.get("reply")
        if not isinstance(reply, str):
            return None
        try:
            return decode(reply.encode())
        except MalformedMessage:
            return None


def _prober_main() -> int:
    """The prober's loop: one probe per input line, one answer line each."""
    ctx: zmq.Context[Any] = zmq.Context()
    print("READY {}", flush=True)
    try:
        for line in sys.stdin:
            cmd = json.loads(line)
            operator = Operator.from_keys(Path(sys.argv[2]))  # keys of servers added since
            reply = probe(
                str(cmd["endpoint"]),
                decode(str(cmd["message"]).encode()),
                timeout=float(cmd["seconds"]),
                ctx=ctx,
                secure=operator.dialer(str(cmd["name"]), broker=bool(cmd["broker"])),
            )
            text = None if reply is None else encode(reply).decode()
            print(json.dumps({"id": cmd["id"], "ok": True, "reply": text}), flush=True)
    finally:
        ctx.term()
    return 0


# -- the cluster ----------------------------------------------------------------------------


@attrs.define
class _Child:
    name: str
    argv: list[str]
    ports: list[int]
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0


class RealCluster:
    """Brokers and servers as processes (in ``ns`` if given, one host each), client agents
    on demand.

    Args:
        workdir: stores and logs (``logs/NAME.log``).
        ns: the namespace to run in; None: plain loopback, no partitions.
        brokers, servers: how many.
        replicas: how many servers hold each list (given to every server, and to every
            broker with every server as a member); None: the processes' defaults, and
            brokers without members.
        timing: the processes' timing flags.
        sync_interval, request_timeout: the client agents' timing.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        ns: Namespace | None = None,
        brokers: int = 2,
        servers: int = 3,
        replicas: int | None = None,
        timing: Timing | None = None,
        sync_interval: float = 0.5,
        request_timeout: float = 0.5,
        log_level: str = "INFO",
    ) -> None:
        self.workdir = workdir
        self.ns = ns
        self.timing = timing or Timing()
        self.replicas = replicas
        self.sync_interval = sync_interval
        self.request_timeout = request_timeout
        self.log_level = log_level
        base = NS_BASE_PORT if ns is not None else free_base_port(brokers=brokers, servers=servers)
        self.layout = LocalLayout("127.0.0.1", base, brokers, servers)
        self.brokers = [f"b{i}" for i in range(brokers)]
        self.servers = self.layout.server_ids
        """Every server started (members, and servers that left)."""
        self.members = list(self.servers)
        self.epoch = 0
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.keys = workdir / "keys"
        ensure_keys(self.keys, [*self.brokers, *self.servers, ADMIN])
        self.operator = Operator.from_keys(self.keys)
        self.children: dict[str, _Child] = {}
        self.agents: dict[str, Agent] = {}
        self._started: list[subprocess.Popen[bytes]] = []
        self._files: list[IO[bytes]] = []
        self._prober: Prober | None = None
        self._ctx: zmq.Context[Any] = zmq.Context()
        self._closed = False

    # -- addresses ------------------------------------------------------------------------

    def address(self, name: str) -> str:
        """The loopback address of the host ``name`` plays."""
        return "127.0.0.1" if self.ns is None else self.ns.host(name).address

    def _port(self, endpoint: str) -> int:
        return int(endpoint.rsplit(":", 1)[1])

    def frontend_port(self, broker: str) -> int:
        """The port of a broker's front end."""
        return self._port(self.layout.frontend(self.brokers.index(broker)))

    def backend_port(self, broker: str) -> int:
        """The port of a broker's back end."""
        return self._port(self.layout.backend(self.brokers.index(broker)))

    def peer_port(self, server: str) -> int:
        """The port of a server's peer end point."""
        return self._port(self.layout.peer(self.servers.index(server) + 1))

    def bind(self, name: str, port: int) -> str:
        """The end point ``name`` binds for ``port``."""
        return f"tcp://{self.address(name)}:{port}"

    def dial(self, src: str, dst: str, port: int) -> str:
        """The end point ``src`` connects to, to reach ``dst:port`` from its own host."""
        if self.ns is None:
            return f"tcp://127.0.0.1:{port}"
        return f"tcp://{self.address(src)}:0;{self.address(dst)}:{port}"

    def probe_endpoint(self, name: str) -> str:
        """Where the test asks ``name`` (a broker's front end or a server's peer end point)
        for its status."""
        port = self.frontend_port(name) if name in self.brokers else self.peer_port(name)
        return f"tcp://{self.address(name)}:{port}"

    # -- processes ------------------------------------------------------------------------

    def _broker_argv(self, name: str) -> list[str]:
        return broker_argv(
            name,
            frontend=self.bind(name, self.frontend_port(name)),
            backend=self.bind(name, self.backend_port(name)),
            timing=self.timing,
            log_level=self.log_level,
            keys=self.keys,
            members=() if self.replicas is None else self.servers,
            replicas=self.replicas,
        )

    def _server_argv(self, name: str) -> list[str]:
        return server_argv(
            name,
            store=self.store_path(name),
            bind=self.bind(name, self.peer_port(name)),
            brokers={b: self.dial(name, b, self.backend_port(b)) for b in self.brokers},
            peers={
                other: self.dial(name, other, self.peer_port(other))
                for other in self.members
                if other != name
            },
            timing=self.timing,
            log_level=self.log_level,
            keys=self.keys,
            replicas=self.replicas,
        )

    # -- membership changes ---------------------------------------------------------------

    @property
    def membership(self) -> Membership:
        """The members at :attr:`epoch`."""
        return Membership(self.members, self.epoch)

    def holders(self, list_id: str) -> tuple[str, ...]:
        """The servers that hold ``list_id`` by the current membership."""
        copies = len(self.members) if self.replicas is None else self.replicas
        return self.membership.holders(list_id, copies)

    def add_server(self, timeout: float = START_TIMEOUT) -> str:
        """Start the next server on its own host and make it a member (next epoch): the
        running servers are told first, so they trust its key before it dials them."""
        name = f"s{len(self.servers) + 1}"
        self.layout = attrs.evolve(self.layout, servers=len(self.servers) + 1)
        ensure_keys(self.keys, [name])
        running = list(self.members)
        self.servers = [*self.servers, name]
        self.members = [*self.members, name]
        self.epoch += 1
        self.announce(running, timeout)
        child = self.children[name] = _Child(name, self._server_argv(name), [self.peer_port(name)])
        self._spawn(child)
        self._ready(child, time.monotonic() + timeout)
        self.announce([name], timeout)
        return name

    def remove_server(self, name: str, timeout: float = START_TIMEOUT) -> None:
        """Take ``name`` out of the members (next epoch); it keeps running and hands its
        lists over."""
        self.members = [m for m in self.members if m != name]
        self.epoch += 1
        self.announce([*self.members, name], timeout)

    def announce(self, names: Sequence[str], timeout: float) -> None:
        """Tell each of ``names`` the membership, as an operator does (with the end points
        each dials the others at), until it answers that it follows it."""
        for name in names:
            addresses = {m: self.dial(name, m, self.peer_port(m)) for m in self.members}
            update = MembershipUpdate("operator", self.epoch, addresses)

            def taken(name: str = name, update: MembershipUpdate = update) -> bool:
                reply = self.ask(name, update, timeout=1.0)
                return isinstance(reply, ServerStatus) and reply.epoch >= self.epoch

            poll(taken, f"{name} follows membership epoch {self.epoch}", timeout=timeout)

    def handed_over(self, name: str, timeout: float) -> None:
        """Poll until ``name`` has no list or hint left to hand over."""

        def done() -> bool:
            status = self.server_status(name, timeout=1.0)
            return status is not None and status.handing == 0 and status.epoch >= self.epoch

        poll(done, f"{name} handed everything over", timeout=timeout, every=0.1)

    def store_path(self, server: str) -> Path:
        """A server's SQLite store."""
        return self.workdir / f"{server}.sqlite"

    def _popen(
        self, name: str, argv: list[str], ports: Sequence[int], *, stdin: bool = False
    ) -> subprocess.Popen[bytes]:
        if self._closed:
            raise RuntimeError("the cluster is closed")
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - the child's, closed in close()
        self._files.append(log)
        options: dict[str, Any] = {
            "stdin": subprocess.PIPE if stdin else subprocess.DEVNULL,
            "stdout": subprocess.PIPE,
            "stderr": log,
        }
        proc: subprocess.Popen[bytes]
        if self.ns is not None:
            proc = self.ns.spawn(argv, host=self.ns.host(name), ports=ports, **options)
        else:
            proc = subprocess.Popen(argv, start_new_session=True, **options)
        self._started.append(proc)
        return proc

    def _spawn(self, child: _Child) -> None:
        child.proc = self._popen(child.name, child.argv, child.ports)
        child.starts += 1

    def _ready(self, child: _Child, deadline: float) -> dict[str, Any]:
        assert child.proc is not None
        try:
            return read_ready(child.proc, max(0.1, deadline - time.monotonic()))
        except (TimeoutError, RuntimeError) as exc:
            raise type(exc)(f"{child.name}: {exc}{self.log_tail(child.name)}") from None

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start every broker and server, and wait until every broker holds every server
        live (the prober too, in a namespace)."""
        for b in self.brokers:
            ports = [self.frontend_port(b), self.backend_port(b)]
            self.children[b] = _Child(b, self._broker_argv(b), ports)
        for s in self.servers:
            self.children[s] = _Child(s, self._server_argv(s), [self.peer_port(s)])
        for child in self.children.values():
            self._spawn(child)
        if self.ns is not None:
            me = str(Path(__file__).resolve())
            argv = [sys.executable, me, "probe", str(self.keys)]
            proc = self._popen("prober", argv, (), stdin=True)
            self._prober = Prober("prober", proc)
            read_ready(proc, timeout)
        deadline = time.monotonic() + timeout
        for child in self.children.values():
            self._ready(child, deadline)
        self.wait_for_servers(self.servers, timeout=max(1.0, deadline - time.monotonic()))

    def kill(self, name: str) -> None:
        """SIGKILL one broker or server by pid, and reap it."""
        proc = self.children[name].proc
        assert proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=_STOP_TIMEOUT)
        if proc.stdout is not None:
            proc.stdout.close()

    def restart(self, name: str, timeout: float = START_TIMEOUT) -> dict[str, Any]:
        """Start a killed child again; return its ready line."""
        child = self.children[name]
        if child.proc is not None and child.proc.poll() is None:
            raise RuntimeError(f"{name} is still running")
        self._spawn(child)
        return self._ready(child, time.monotonic() + timeout)

    def pid(self, name: str) -> int:
        """The pid of a broker or server."""
        proc = self.children[name].proc
        assert proc is not None
        return proc.pid

    def agent(self, name: str, *, timeout: float = START_TIMEOUT) -> Agent:
        """Start a client agent on its own host, dialling every broker from it."""
        argv = [
            sys.executable,
            "-m",
            "reference_cluster.processes.agent",
            "--store",
            str(self.workdir / f"{name}.sqlite"),
            "--name",
            name,
            "--sync-interval",
            str(self.sync_interval),
            "--request-timeout",
            str(self.request_timeout),
            *common_argv(self.timing, self.log_level),
        ]
        for b in self.brokers:
            argv += ["--broker", self.dial(name, b, self.frontend_port(b))]
        assert self.operator.client.frontend_public is not None
        argv += broker_key_argv(self.operator.client.frontend_public)
        proc = self._popen(name, argv, (), stdin=True)
        agent = Agent(name, proc)
        self.agents[name] = agent
        try:
            read_ready(proc, timeout)
        except (TimeoutError, RuntimeError) as exc:
            raise type(exc)(f"{name}: {exc}{self.log_tail(name)}") from None
        return agent

    @property
    def started(self) -> tuple[subprocess.Popen[bytes], ...]:
        """Every process started here, in order (restarts included)."""
        return tuple(self._started)

    def log_tail(self, name: str, lines: int = 8) -> str:
        """The last lines of a process's log, indented, for failure messages."""
        path = self.logs / f"{name}.log"
        if not path.exists():
            return ""
        tail = path.read_text("utf-8", "replace").splitlines()[-lines:]
        return "".join(f"\n    {line}" for line in tail)

    # -- partitions -----------------------------------------------------------------------

    def partition(self, groups: Sequence[Iterable[str]]) -> None:
        """Cut every link between processes in different groups (names of brokers,
        servers and agents), healing all others."""
        if self.ns is None:
            raise RuntimeError("partitions need a namespace")
        self.ns.partition([[self.ns.host(n) for n in group] for group in groups])

    def heal(self) -> None:
        """Heal every link."""
        if self.ns is not None:
            self.ns.heal()

    # -- status ---------------------------------------------------------------------------

    def ask(self, name: str, message: Message, timeout: float = 1.0) -> Message | None:
        """Send ``message`` to ``name``'s status end point; the reply or None."""
        endpoint = self.probe_endpoint(name)
        broker = name in self.brokers
        if self._prober is not None:
            return self._prober.ask(endpoint, message, timeout, name=name, broker=broker)
        secure = self.operator.dialer(name, broker=broker)
        return probe(endpoint, message, timeout=timeout, ctx=self._ctx, secure=secure)

    def server_status(
        self, name: str, *, states: bool = False, timeout: float = 1.0
    ) -> ServerStatus | None:
        """What server ``name`` answers to a status request (None: no answer)."""
        reply = self.ask(name, Status("probe", states), timeout)
        return reply if isinstance(reply, ServerStatus) else None

    def broker_status(self, name: str, timeout: float = 1.0) -> BrokerStatus | None:
        """What broker ``name`` answers to a status request (None: no answer)."""
        reply = self.ask(name, Status("probe"), timeout)
        return reply if isinstance(reply, BrokerStatus) else None

    def wait_for_servers(
        self, expected: Iterable[str], *, brokers: Iterable[str] | None = None, timeout: float
    ) -> None:
        """Poll until each broker (default: all) holds exactly ``expected`` live."""
        want = tuple(sorted(expected))
        names = list(self.brokers if brokers is None else brokers)
        seen: dict[str, Any] = {}

        def settled() -> bool:
            for b in names:
                status = self.broker_status(b, timeout=0.5)
                seen[b] = None if status is None else status.servers
            return all(seen[b] == want for b in names)

        try:
            poll(settled, f"brokers hold {list(want)} live", timeout=timeout, every=0.1)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; they said {seen}") from None

    def server_states(self, lists: Sequence[str]) -> dict[str, dict[str, ShoppingList]]:
        """Every member's state of each of ``lists`` it holds (a member must answer).

        Raises:
            TimeoutError: a server does not answer.
        """
        out: dict[str, dict[str, ShoppingList]] = {}
        for s in self.members:
            status = self.server_status(s, states=True, timeout=3.0)
            if status is None:
                raise TimeoutError(f"server {s} does not answer{self.log_tail(s)}")
            out[s] = {
                k: ShoppingList.from_dict(status.states[k]) for k in lists if k in status.states
            }
        return out

    # -- teardown -------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every process ever started here, by pid (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            for proc in reversed(self._started):
                stop_pid(proc)
        finally:
            for log in self._files:
                log.close()
            self._ctx.term()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# -- the workload ---------------------------------------------------------------------------


def _command(op: Op) -> dict[str, Any]:
    """The agent's edit command for a simulator operation."""
    name, args = op.name, op.args
    if name == "add_item":
        return {"action": "add", "item": args[0], "qty": args[1]}
    if name == "change_quantity":
        return {"action": "change", "item": args[0], "by": args[1]}
    if name == "set_quantity":
        return {"action": "set", "item": args[0], "qty": args[1]}
    if name == "mark_bought":
        return {"action": "buy" if args[1] else "unbuy", "item": args[0]}
    if name == "remove_item":
        return {"action": "remove", "item": args[0]}
    if name == "rename":
        return {"action": "rename", "name": args[0]}
    raise ValueError(f"no agent command for {op}")


class Workload:
    """Shared lists edited by several agents, every accepted edit recorded (Rule 4).

    Args:
        cluster: the running cluster.
        agents: the client agents' names (started here; the first owns the lists).
        lists: how many shared lists.
        rng: the source of the edits.
    """

    def __init__(
        self, cluster: RealCluster, agents: Sequence[str], *, lists: int, rng: random.Random
    ) -> None:
        self.cluster = cluster
        self.rng = rng
        self.model = ShoppingListModel()
        self.names = list(agents)
        self.agents = {n: cluster.agent(n) for n in self.names}
        self.list_ids: list[str] = []
        self.edits: list[EditRecord] = []
        self.refused = 0
        self._lists = lists
        self._pending: list[tuple[str, int, int, Op]] = []

    def setup(self, timeout: float = 30.0) -> None:
        """Sign every agent up, create the lists at the first, share them with the others,
        make the first edits (the counters) and wait until every agent synced."""
        ids = {
            n: a.begin("signup", name=f"{n}-user", password=PASSWORD)
            for n, a in self.agents.items()
        }
        for n, cid in ids.items():
            answer = self.agents[n].wait(cid, timeout)
            if not answer.get("ok"):
                raise RuntimeError(f"{n}: sign-up refused: {answer.get('error')}")
        owner = self.agents[self.names[0]]
        for i in range(self._lists):
            self.list_ids.append(owner.call("create", name=f"list {i}")["list_id"])
        for client, index, op in self.model.initial_ops(self.names):
            self.begin_edit(client, index, op)
        self.finish_edits()
        self.sync_all(timeout)
        others = [f"{n}-user" for n in self.names[1:]]
        for list_id in self.list_ids:
            owner.call("share", list=list_id, users=others)
        for n in self.names[1:]:
            for list_id in self.list_ids:
                self.agents[n].call("open", list=list_id)
        self.sync_all(timeout)

    def sync_all(self, timeout: float) -> None:
        """Ask every agent to sync every list now; each must succeed."""
        ids = {n: a.begin("sync", timeout=timeout) for n, a in self.agents.items()}
        for n, cid in ids.items():
            answer = self.agents[n].wait(cid, timeout + 10.0)
            if not (answer.get("ok") and answer.get("synced")):
                raise RuntimeError(f"{n}: sync failed: {answer}{self.cluster.log_tail(n)}")

    # -- edits ----------------------------------------------------------------------------

    def random_op(self, index: int) -> Op:
        """A random edit of list ``index`` (the simulator's mix, without deleting the
        list: only its owner may, and a refused delete would stay queued)."""
        for _ in range(100):
            op = self.model.random_op(self.rng, index)
            if op.name != "delete":
                return op
        raise AssertionError("no edit drawn in 100 tries")

    def begin_edit(self, client: str, index: int, op: Op) -> None:
        """Send an edit to an agent (it applies at once; the sync follows)."""
        cid = self.agents[client].begin(
            "edit", list=self.list_ids[index], delta=True, **_command(op)
        )
        self._pending.append((client, cid, index, op))

    def burst(self, per_client: int) -> None:
        """Every agent makes ``per_client`` random edits at once."""
        for _ in range(per_client):
            for client in self.names:
                index = self.rng.randrange(len(self.list_ids))
                self.begin_edit(client, index, self.random_op(index))
        self.finish_edits()

    def finish_edits(self, timeout: float = 30.0) -> None:
        """Collect the answers to the edits sent; record the accepted ones."""
        pending, self._pending = self._pending, []
        for client, cid, index, op in pending:
            answer = self.agents[client].wait(cid, timeout)
            if not answer.get("ok"):
                self.refused += 1  # an item this device does not see, as in the simulator
                continue
            self.edits.append(
                EditRecord(
                    number=len(self.edits),
                    client=client,
                    incarnation=0,
                    list_id=self.list_ids[index],
                    seq=int(answer["seq"]),
                    op=op,
                    delta=ShoppingList.from_dict(answer["delta"]),
                    dots=(),
                )
            )

    # -- acknowledgements and states ------------------------------------------------------

    def client_states(self, *, states: bool = False, timeout: float = 30.0) -> dict[str, Any]:
        """Every agent's ``state`` answer (lists with digests, queues, acked_through), and
        the acknowledgements it shows recorded in :attr:`edits`."""
        ids = {n: a.begin("state", states=states) for n, a in self.agents.items()}
        answers = {n: self.agents[n].wait(cid, timeout) for n, cid in ids.items()}
        for e in self.edits:
            entry = answers[e.client].get("lists", {}).get(e.list_id)
            if entry is not None and e.seq <= int(entry["acked_through"]):
                e.acked = True
        return answers

    @property
    def acked(self) -> int:
        """Edits acknowledged so far (as last seen by :meth:`client_states`)."""
        return sum(e.acked for e in self.edits)


def server_digests(cluster: RealCluster, lists: Sequence[str]) -> tuple[str, ...] | None:
    """Every member's digest of every list, member by member ("-" for a list it does not
    hold; None if one is silent)."""
    out: list[str] = []
    for s in cluster.members:
        status = cluster.server_status(s, timeout=1.0)
        if status is None:
            return None
        out.extend(status.digests.get(k, "-") for k in lists)
    return tuple(out)


def wait_quiescent(
    workload: Workload, *, timeout: float
) -> tuple[float, list[tuple[float, tuple[str, ...]]]]:
    """Poll until every server holds the same digest of every list and every agent has
    nothing queued and the same digests; return the seconds it took and the servers'
    digests sampled on the way (``(time, digests)``, for
    :func:`~reference_cluster.sim.checkers.rounds_to_converge`).

    Raises:
        TimeoutError: not within ``timeout`` (the message has the last digests and logs).
    """
    cluster, lists = workload.cluster, workload.list_ids
    samples: list[tuple[float, tuple[str, ...]]] = []
    start = time.monotonic()

    def quiescent() -> bool:
        digests = server_digests(cluster, lists)
        if digests is None:
            return False
        samples.append((time.monotonic(), digests))
        n = len(lists)
        agreed: dict[str, str] = {}
        for i, k in enumerate(lists):
            held = cluster.holders(k)
            found = {digests[j * n + i] for j, s in enumerate(cluster.members) if s in held}
            if len(found) != 1 or "-" in found:
                return False
            agreed[k] = found.pop()
        answers = workload.client_states()
        return all(
            answer["lists"][k]["queued"] == 0 and answer["lists"][k]["digest"] == agreed[k]
            for answer in answers.values()
            for k in lists
        )

    try:
        poll(quiescent, "servers and clients agree", timeout=timeout)
    except TimeoutError as exc:
        names = [*cluster.servers, *workload.names]
        logs = "".join(f"\n  {n}:{cluster.log_tail(n, 4)}" for n in names)
        raise TimeoutError(f"{exc}; last digests {samples[-1:]}{logs}") from None
    return time.monotonic() - start, samples


def check_cluster(
    workload: Workload,
    servers: Mapping[str, Mapping[str, ShoppingList]],
    clients: Mapping[str, Mapping[str, ShoppingList]],
) -> FinalCheck:
    """The simulator's final checks on real states: each list's holders byte-equal, every
    client equal to them, no acknowledged edit missing, counters exact, no phantoms."""
    cluster = workload.cluster
    holders = {k: cluster.holders(k) for k in workload.list_ids}
    return check_final(
        workload.model, workload.list_ids, servers, clients, workload.edits, holders=holders
    )


def decoded_client_states(answers: Mapping[str, Any]) -> dict[str, dict[str, ShoppingList]]:
    """Client states from ``state`` answers made with ``states=True``."""
    return {
        n: {k: ShoppingList.from_dict(v["state"]) for k, v in a["lists"].items()}
        for n, a in answers.items()
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["probe"]:
        sys.exit(_prober_main())
    sys.exit(f"usage: {sys.argv[0]} probe")
