"""The deterministic simulator: the real cores, a virtual clock and a seeded network.

One run (:func:`run`) builds servers, brokers and clients from the production cores,
feeds them a workload of edits and a fault schedule, and then checks the outcome
(:mod:`reference_cluster.sim.checkers`). Everything random is drawn from generators
seeded from the run's seed, every collection is walked in a fixed order, and time is a
number the event loop advances, so a seed replays exactly: same seed, same trace bytes.

Timeline of a run: every node starts at time 0; edits and faults happen before
``heal_at``; at ``heal_at`` every partition, isolation and link fault ends and every
crashed node restarts (the last heal); ``settle`` seconds later every client syncs every
list twice (the second pass pulls what the first pushed everywhere), and the run ends
when they are done. Messages go through the real wire codec, so the byte counts are
what the real system would send.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import math
import random
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import attrs

from reference_cluster.cores.authorship import PushLimits, kernel_of
from reference_cluster.cores.broker import BrokerConfig, BrokerCore
from reference_cluster.cores.client import ClientConfig, ClientCore
from reference_cluster.cores.quorum import write_quorum
from reference_cluster.cores.server import ServerConfig, ServerCore
from reference_cluster.protocol.effects import (
    Acked,
    DropHint,
    DropList,
    Effect,
    Persist,
    SaveEdit,
    SaveMembership,
    SaveMerge,
    Send,
    SyncFailed,
)
from reference_cluster.protocol.messages import (
    Deliver,
    ErrorReply,
    Hint,
    MembershipUpdate,
    Replicate,
    Stored,
    SyncReply,
    SyncRequest,
    decode,
    encode,
)
from reference_cluster.protocol.placement import Membership
from reference_cluster.protocol.replication import context_of
from reference_cluster.sim.byzantine import ByzantineCore
from reference_cluster.sim.checkers import RunResult, check_final, rounds_to_converge
from reference_cluster.sim.durable import FakeClientStore, FakeServerStore
from reference_cluster.sim.faults import (
    ChangeMembership,
    Crash,
    Fault,
    FaultSchedule,
    HealPartition,
    Isolate,
    Partition,
    Rejoin,
    Restart,
    SetLinkFaults,
    Topology,
    membership_changes,
    random_schedule,
)
from reference_cluster.sim.network import Network
from reference_cluster.sim.workload import (
    ClientOp,
    DocumentModel,
    EditRecord,
    ShoppingListModel,
    Workload,
    mutator,
    random_workload,
)

__all__ = ["SimConfig", "Simulation", "SimulationError", "run"]

_CLIENT_KINDS = frozenset({"sync", "sync_ok", "error", "forward", "deliver"})

ServerFactory = Callable[..., ServerCore[Any]]
ClientFactory = Callable[..., ClientCore[Any]]


class SimulationError(RuntimeError):
    """The simulator itself went wrong (an event budget exhausted, a core raised)."""


def _time(_inst: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{attribute.name!r} must be a finite time >= 0: {value!r}")


def _step(_inst: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{attribute.name!r} must be a finite step > 0: {value!r}")


def _interval(_inst: object, attribute: attrs.Attribute[Any], value: tuple[float, float]) -> None:
    lo, hi = value
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo <= hi):
        raise ValueError(f"{attribute.name!r} must be (low, high) with 0 <= low <= high: {value!r}")


_at_least_one = attrs.validators.ge(1)


@attrs.frozen
class SimConfig:
    """The shape and timing of a simulated run (times in virtual seconds).

    Raises:
        ValueError: a count below 1 (0 edits are allowed), a negative or infinite time,
        a sampling step that is not above 0 (the schedule is filled step by step), or a
        delay range that is not ``0 <= low <= high``.
    """

    servers: int = attrs.field(default=5, validator=_at_least_one)
    replicas: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(_at_least_one)
    )
    """How many servers hold each list; ``None``: every server holds every list."""
    write_quorum: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(_at_least_one)
    )
    """W: how many servers hold a push durably before it is acknowledged; ``None``: the
    servers' default (2, or 1 with one copy of each list)."""
    spares: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    """Servers outside the first membership (``s6`` ... after ``servers``); with spares
    the schedule adds one or two membership changes (a spare joins, a member leaves, or
    both) before the heal."""
    brokers: int = attrs.field(default=2, validator=_at_least_one)
    clients: int = attrs.field(default=3, validator=_at_least_one)
    lists: int = attrs.field(default=2, validator=_at_least_one)
    edits_per_client: int = attrs.field(default=12, validator=attrs.validators.ge(0))
    heal_at: float = attrs.field(default=20.0, validator=_time)
    settle: float = attrs.field(default=6.0, validator=_time)
    final_sync_limit: float = attrs.field(default=20.0, validator=_time)
    base_delay: tuple[float, float] = attrs.field(default=(0.001, 0.010), validator=_interval)
    store_latency: tuple[float, float] = attrs.field(default=(0.0005, 0.005), validator=_interval)
    growth_check_every: float = attrs.field(default=1.0, validator=_step)
    converge_sample_every: float = attrs.field(default=0.25, validator=_step)
    timeline_every: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(_step)
    )
    """Sample every server's digests and the message count at this interval from time 0
    (:attr:`Simulation.timeline`, for plots); ``None`` leaves sampling to the checkers."""
    max_events: int = attrs.field(default=1_000_000, validator=_at_least_one)
    byzantine: bool = True
    """Add a Byzantine collaborator (:mod:`reference_cluster.sim.byzantine`, the shopping
    list model only) that forges pushes until ``heal_at``; the checkers then require that
    no forged dot or claim reached any server."""
    push_limits: PushLimits = attrs.field(factory=lambda: PushLimits(max_map_keys=16))
    """The servers' push bounds: the defaults but 16 items a list, so that an oversized
    push stays small (an honest run uses 6 item names)."""
    server: ServerConfig = attrs.field(factory=lambda: ServerConfig(cache_lists=1))
    """Server timing and memory: a cache of one decoded list, so that every run evicts
    and reloads lists (an honest run uses 3 lists), also while other lists have writes in
    flight."""
    client: ClientConfig = attrs.field(factory=ClientConfig)
    broker: BrokerConfig = attrs.field(factory=BrokerConfig)

    @property
    def topology(self) -> Topology:
        """The node names of this configuration."""
        return Topology.of(self.servers + self.spares, self.brokers, self.clients)

    @property
    def copies(self) -> int:
        """How many servers hold each list (at most every server)."""
        return min(self.servers, self.replicas or self.servers)

    @property
    def quorum(self) -> int:
        """W as the servers take it.

        Raises:
            ValueError: a write quorum above the copies of a list.
        """
        return write_quorum(self.write_quorum, self.copies)


@attrs.define
class _Node:
    name: str
    role: str
    core: Any = None
    incarnation: int = 0
    timer_at: float | None = None
    timer_token: int = 0
    crash_on_write: bool = False


BYZANTINE = "z1"
"""The Byzantine collaborator's node name and replica id."""

# Event kinds, in the order they run when due at the same instant.
_FAULT, _DELIVER, _PERSISTED, _TIMER, _EDIT, _SAMPLE, _FINAL = range(7)


class Simulation:
    """One seeded run. Build it, call :meth:`run` once.

    Args:
        seed: every random choice derives from it.
        config: the cluster's shape and timing.
        model: the document type and its checks (default: the shopping list).
        schedule: the faults (default: drawn from the seed).
        workload: the edits (default: drawn from the seed).
        server_factory, client_factory: build the cores (tests pass broken subclasses).
        trace: keep the trace lines (:attr:`trace_lines`); the hash is always kept.
    """

    def __init__(
        self,
        seed: int,
        *,
        config: SimConfig | None = None,
        model: DocumentModel[Any] | None = None,
        schedule: FaultSchedule | None = None,
        workload: Workload | None = None,
        server_factory: ServerFactory = ServerCore,
        client_factory: ClientFactory = ClientCore,
        trace: bool = False,
    ) -> None:
        self.seed = seed
        self.config = cfg = config or SimConfig()
        self.model: DocumentModel[Any] = model or ShoppingListModel()
        self.topology = topo = cfg.topology
        master = random.Random(seed)
        seeds = [master.getrandbits(64) for _ in range(5)]
        self._dormant = set(topo.servers[cfg.servers :])
        """Spares not started yet: each starts when a membership first names it."""
        self._membership = self.first_membership
        self.schedule = schedule or self._random_schedule(seeds[0])
        self.schedule.check(topo)
        self.workload = workload or random_workload(
            random.Random(seeds[1]),
            self.model,
            topo,
            lists=cfg.lists,
            edits_per_client=cfg.edits_per_client,
            until=cfg.heal_at,
        )
        self.byzantine = cfg.byzantine and self.model.name == "shopping_list"
        names = (*topo.nodes, BYZANTINE) if self.byzantine else topo.nodes
        self.net = Network(names, random.Random(seeds[2]), cfg.base_delay)
        self._node_rng = random.Random(seeds[3])
        self._store_rng = random.Random(seeds[4])
        self._server_factory = server_factory
        self._client_factory = client_factory
        doc = self.model.doc_type
        self.nodes: dict[str, _Node] = {}
        for role, names in (
            ("server", topo.servers),
            ("broker", topo.brokers),
            ("client", topo.clients),
        ):
            self.nodes.update((name, _Node(name, role)) for name in names)
        if self.byzantine:
            self.nodes[BYZANTINE] = _Node(BYZANTINE, "byzantine")
        self.server_stores = {s: FakeServerStore(doc) for s in topo.servers}
        self.client_stores = {c: FakeClientStore(doc) for c in topo.clients}
        self.now = 0.0
        self._heap: list[tuple[float, int, int, Any]] = []
        self._seq = 0
        self._trace_hash = hashlib.sha256()
        self.trace_lines: list[str] | None = [] if trace else None
        self.edits: list[EditRecord] = []
        self._queued: dict[tuple[str, str, int], EditRecord] = {}
        self._issued: dict[tuple[str, str, int], int] = {}
        self._init_checks()
        self.problems: list[str] = []
        self._snapshots: dict[tuple[str, str, str], Any] = {}
        self._samples: list[tuple[float, tuple[str, ...]]] = []
        self.timeline: list[tuple[float, tuple[str, ...], int]] = []
        """With ``config.timeline_every``: (time, server digests, messages sent so far)."""
        self._final_pass = self.events = 0
        self._synced_final: set[str] = set()
        self.messages = self.wire_bytes = self.client_messages = self.client_bytes = 0
        self.stats: Counter[str] = Counter()

    def _init_checks(self) -> None:
        """What the checks during the run count and remember."""
        self.reused_dots = self.shrunk = self.acked_not_durable = self.short_replies = 0
        self.lost_handoffs = self.forged = 0
        self._forgotten: dict[tuple[str, str], Any] = {}
        """(server, list) -> the state it forgot after a handoff that passed the check."""
        # encoded reply -> (the server, the list's state there when it replied)
        self._replied: dict[bytes, tuple[str, Any]] = {}
        self._pushes: dict[str, tuple[str, Any]] = {}
        """request id -> (list id, encoded delta) of every push a client sent; every
        attempt of a request carries the same delta."""
        self._asks: dict[tuple[str, int], tuple[str, Any]] = {}
        """(server, ask) -> (list id, encoded delta) of every write a server asked
        others to confirm (a :class:`Replicate` or a :class:`Hint`)."""

    # -- plumbing -------------------------------------------------------------------------

    def _push(self, at: float, kind: int, data: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, kind, self._seq, data))

    def _trace(self, text: str) -> None:
        line = f"{self.now:.6f} {text}"
        self._trace_hash.update(line.encode())
        self._trace_hash.update(b"\n")
        if self.trace_lines is not None:
            self.trace_lines.append(line)

    def _rearm(self, node: _Node) -> None:
        if node.core is None:
            return
        deadline = node.core.next_deadline()
        if deadline is None or deadline == node.timer_at:
            return
        node.timer_at = deadline
        node.timer_token += 1
        self._push(max(deadline, self.now), _TIMER, (node.name, node.incarnation, node.timer_token))

    def _effects(self, node: _Node, effects: list[Effect]) -> None:
        wrote = False
        for effect in effects:
            if isinstance(effect, Send):
                self._check_ack(node, effect)
                self._send(node.name, effect)
            elif isinstance(effect, Persist):
                wrote = True
                self.server_stores[node.name].begin(effect)
                latency = self._store_rng.uniform(*self.config.store_latency)
                self._push(
                    self.now + latency, _PERSISTED, (node.name, node.incarnation, effect.token)
                )
            elif isinstance(effect, SaveMembership):
                self.server_stores[node.name].membership = (effect.epoch, dict(effect.servers))
                self._trace(f"membership {node.name} epoch {effect.epoch}")
            elif isinstance(effect, DropList):
                self._check_handoff(node, effect)
                dropped = self.server_stores[node.name].drop_list(effect)
                self.stats["lists handed over" if dropped else "lists kept (changed)"] += 1
                self._trace(f"drop-list {node.name} {effect.list_id[:8]}")
            elif isinstance(effect, DropHint):
                dropped = self.server_stores[node.name].drop_hint(effect)
                self.stats["hints handed back" if dropped else "hints kept (grown)"] += 1
                self._trace(f"drop-hint {node.name} {effect.list_id[:8]} {effect.holder}")
            elif isinstance(effect, SaveEdit):
                self.client_stores[node.name].save_edit(effect)
            elif isinstance(effect, SaveMerge):
                self.client_stores[node.name].save_merge(effect)
            elif isinstance(effect, Acked):
                self.client_stores[node.name].ack(effect)
                self._on_acked(node.name, effect)
            elif isinstance(effect, SyncFailed):
                self.stats["syncs given up"] += 1
                self._trace(f"gave-up {node.name} {effect.list_id[:8]} {effect.reason}")
        if wrote and node.crash_on_write:
            self.stats["crashes in the middle of a write"] += 1
            self._trace(f"crash-mid-write {node.name}")
            self._crash(node)
        self._rearm(node)

    def _check_ack(self, node: _Node, effect: Send) -> None:
        """At the moment a server acknowledges a push, the pushed delta must be durable
        in that server's store and in those of W servers in all (holders, or servers
        that keep it as a hint): a write still in flight does not count, since a crash
        now would lose it. (The final check only sees losses that a crash in that window
        actually caused; this one sees every acknowledgement that ran ahead of its
        writes.)"""
        msg = effect.message
        if node.role == "client" and isinstance(msg, SyncRequest) and msg.delta is not None:
            self._pushes.setdefault(msg.request_id, (msg.list_id, msg.delta))
            return
        if node.role != "server":
            return
        if isinstance(msg, Replicate | Hint):
            self._asks[(node.name, msg.ask)] = (msg.list_id, msg.delta)
        elif isinstance(msg, Stored):
            self._check_confirmation(node.name, effect.to, msg)
        if not isinstance(msg, Deliver):
            return
        reply = msg.reply
        if not isinstance(reply, SyncReply):
            return
        if reply.delta is not None:
            state = node.core.view(reply.list_id)
            if state is not None:
                self._replied.setdefault(encode(reply), (node.name, state.copy()))
        if reply.request_id not in self._pushes:
            return
        list_id, encoded = self._pushes[reply.request_id]
        store = self.server_stores[node.name]
        durable = store.lists.get(list_id)
        delta = store.doc_type.from_dict(encoded)
        if durable is None or not delta <= durable:
            self.acked_not_durable += 1
            self.problems.append(
                f"{node.name} acknowledged {reply.request_id} on list {list_id[:8]} "
                "before the push was durable"
            )
            return
        copies = sum(st.holds(list_id, delta) for st in self.server_stores.values())
        if copies < self.config.quorum:
            self.acked_not_durable += 1
            self.problems.append(
                f"{node.name} acknowledged {reply.request_id} on list {list_id[:8]} "
                f"when the push was durable on {copies} servers, fewer than W = "
                f"{self.config.quorum}"
            )
        elif reply.copies is not None and reply.copies > copies:
            self.problems.append(
                f"{node.name}'s reply {reply.request_id} claims {reply.copies} copies; "
                f"{copies} are durable"
            )

    def _check_handoff(self, node: _Node, effect: DropList) -> None:
        """A server forgets a list it no longer holds only once every holder of the
        list (by its membership) holds what it forgets durably (Rule 13 of the server
        core), or has itself handed at least that on and forgotten it (a later
        membership took the list from it, and its own forgetting passed this check)."""
        state = self.server_stores[node.name].lists.get(effect.list_id)
        if state is None or state.digest() != effect.digest:
            return
        held = node.core.membership.holders(effect.list_id, self.config.copies)
        short = [
            h
            for h in held
            if h != node.name
            and not self.server_stores[h].holds(effect.list_id, state)
            and not state <= self._forgotten.get((h, effect.list_id), self.model.doc_type())
        ]
        if not short:
            self._forgotten[(node.name, effect.list_id)] = state.copy()
        else:
            self.lost_handoffs += 1
            self.problems.append(
                f"{node.name} forgot list {effect.list_id[:8]} before {', '.join(short)} "
                "held it durably"
            )

    def _check_confirmation(self, name: str, to: str, msg: Stored) -> None:
        """A server confirms a write to another only once it is durable in its store,
        as the list or as a hint (Rules 11 and 12 of the server core)."""
        asked = self._asks.get((to, msg.ask))
        if asked is None:
            return
        list_id, encoded = asked
        store = self.server_stores[name]
        if not store.holds(list_id, store.doc_type.from_dict(encoded)):
            self.acked_not_durable += 1
            self.problems.append(
                f"{name} confirmed {to}'s write {msg.ask} on list {list_id[:8]} "
                "before it was durable"
            )

    def _send(self, src: str, effect: Send) -> None:
        data = encode(effect.message)
        kind = effect.message.kind
        self.messages += 1
        self.wire_bytes += len(data)
        if kind in _CLIENT_KINDS:
            self.client_messages += 1
            self.client_bytes += len(data)
        msg = effect.message
        if isinstance(msg, SyncRequest) and msg.attempt:
            self.stats["request retries"] += 1
        elif isinstance(msg, ErrorReply):
            self.stats[f"error replies: {msg.code}"] += 1
        head = f"send {src}>{effect.to} {kind} {len(data)}B #{zlib.crc32(data):08x}"
        if effect.to not in self.nodes or not self.net.connected(src, effect.to):
            self.stats["messages cut by partitions"] += 1
            self._trace(head + " cut")
            return
        copies = self.net.transmit(data, self.now)
        if not copies:
            self.stats["messages dropped"] += 1
            self._trace(head + " dropped")
            return
        self.stats["messages duplicated"] += len(copies) - 1
        self.stats["messages truncated"] += sum(c.truncated for c in copies)
        self._trace(
            head
            + "".join(" trunc" if c.truncated else "" for c in copies)
            + (" dup" if len(copies) > 1 else "")
        )
        for c in copies:
            self._push(c.arrives, _DELIVER, (src, effect.to, c.data, kind))

    def _call(self, node: _Node, fn: Callable[..., list[Effect]], *args: Any) -> None:
        """Call a core method with ``args`` and the current time; carry out its effects."""
        try:
            effects = fn(*args, self.now)
        except Exception as exc:
            raise SimulationError(
                f"seed {self.seed}: {node.name} raised from {fn.__name__} at "
                f"t={self.now:.6f}: {exc!r}"
            ) from exc
        self._effects(node, effects)

    # -- node life ------------------------------------------------------------------------

    def _start(self, node: _Node) -> None:
        cfg = self.config
        rng = random.Random(self._node_rng.getrandbits(64))
        doc = self.model.doc_type
        topo = self.topology
        if node.role == "server":
            node.core = self._server_factory(
                node.name,
                doc,
                peers=topo.servers,
                brokers=topo.brokers,
                store=self.server_stores[node.name],
                incarnation=node.incarnation,
                config=cfg.server,
                rng=rng,
                push_limits=cfg.push_limits,
                replicas=cfg.copies,
                membership=self.server_stores[node.name].saved_membership(self.first_membership),
                write_quorum=cfg.quorum,
            )
        elif node.role == "byzantine":
            node.core = ByzantineCore(
                node.name,
                doc,
                brokers=topo.brokers,
                list_ids=self.workload.list_ids,
                victims=topo.clients,
                servers=len(topo.servers),
                rng=rng,
                held_everywhere=self._held_everywhere,
                max_items=cfg.push_limits.max_map_keys,
                until=cfg.heal_at,
            )
        elif node.role == "broker":
            node.core = BrokerCore(
                node.name, config=cfg.broker, membership=self.first_membership, replicas=cfg.copies
            )
        else:
            node.core = self._client_factory(
                node.name,
                doc,
                brokers=topo.brokers,
                saved=self.client_stores[node.name].load(),
                config=cfg.client,
                rng=rng,
            )
            self._check_restart(node)
        node.timer_at = None
        self._trace(f"start {node.name} #{node.incarnation}")
        core = node.core
        self._call(node, core.start)
        if node.role == "client":
            for list_id in self.workload.list_ids:
                self._call(node, core.open_list, list_id)

    def _random_schedule(self, seed: int) -> FaultSchedule:
        """The faults drawn from ``seed``; with spares, membership changes drawn apart
        (so that the other faults are those of the same seed without spares)."""
        cfg, topo = self.config, self.topology
        drawn = random_schedule(random.Random(seed), topo, cfg.heal_at)
        if not cfg.spares:
            return drawn
        changes = membership_changes(
            random.Random(seed ^ 0x5EED),
            topo.servers[: cfg.servers],
            topo.servers[cfg.servers :],
            cfg.heal_at,
        )
        return FaultSchedule((*drawn.faults, *changes), drawn.heal_at)

    @functools.cached_property
    def first_membership(self) -> Membership:
        """The members at the start: the first ``config.servers`` servers (epoch 0)."""
        return Membership(self.topology.servers[: self.config.servers])

    @property
    def membership(self) -> Membership:
        """The members the operator set last (the first membership until a change)."""
        return self._membership

    def holders(self, list_id: str) -> tuple[str, ...]:
        """The servers that hold ``list_id`` by the operator's last membership."""
        return self.membership.holders(list_id, self.config.copies)

    def _change_membership(self, fault: ChangeMembership) -> None:
        """The operator's tool tells every live server of the old and the new membership;
        a spare named for the first time starts with the new one."""
        old = self._membership
        new = self._membership = Membership(fault.servers, old.epoch + 1)
        update = MembershipUpdate("operator", new.epoch, {s: "" for s in sorted(new.servers)})
        for name in sorted(old.servers | new.servers):
            node = self.nodes[name]
            if name in self._dormant:
                self._dormant.discard(name)
                self.server_stores[name].membership = (new.epoch, dict(update.servers))
                self._start(node)
            elif node.core is not None:
                self._call(node, node.core.adopt, update)

    def _held_everywhere(self, list_id: str, dot: tuple[str, int]) -> bool:
        """Whether every holder's durable store has seen ``dot`` (the Byzantine's oracle)."""
        for server in self.holders(list_id):
            kernel = kernel_of(self.server_stores[server].lists.get(list_id))
            if kernel is None or not kernel._ctx.contains(dot):
                return False
        return True

    def _crash(self, node: _Node) -> None:
        if node.core is None:
            return
        lost = 0
        if node.role == "server":
            lost = self.server_stores[node.name].crash()
            self._count_server(node.core)
        elif node.role == "client":
            for list_id in node.core.list_ids():
                self._snapshots[("crash", node.name, list_id)] = node.core.state(list_id)
        node.core = None
        node.incarnation += 1
        node.timer_at = None
        node.crash_on_write = False
        self.stats[f"crashes: {node.role}"] += 1
        self.stats["writes lost in crashes"] += lost
        self._trace(f"crash {node.name} lost-writes={lost}")

    def _count_server(self, core: Any) -> None:
        """Add what a server core counted in its run (at a crash, or at the end)."""
        self.stats["replies since a version"] += core.replies_since
        self.stats["hints taken"] += core.hints_taken
        self.stats["lists handed over and forgotten"] += core.lists_handed

    def _check_restart(self, node: _Node) -> None:
        """A restarted client must hold everything it held when it crashed."""
        for list_id in node.core.list_ids():
            before = self._snapshots.pop(("crash", node.name, list_id), None)
            if before is not None and not before <= node.core.state(list_id):
                self.shrunk += 1
                self.problems.append(f"{node.name} lost part of list {list_id[:8]} in a restart")

    # -- events ---------------------------------------------------------------------------

    def _on_fault(self, fault: Fault) -> None:
        self.stats[f"faults: {type(fault).__name__}"] += 1
        self._trace(f"fault {fault!r}")
        if isinstance(fault, Partition):
            self.net.partition(fault.groups)
        elif isinstance(fault, HealPartition):
            self.net.heal_partition()
        elif isinstance(fault, Isolate):
            self.net.isolate(fault.node)
        elif isinstance(fault, Rejoin):
            self.net.rejoin(fault.node)
        elif isinstance(fault, SetLinkFaults):
            self.net.faults = fault.faults
        elif isinstance(fault, Crash):
            node = self.nodes[fault.node]
            if fault.mid_write and node.role == "server":
                node.crash_on_write = node.core is not None
            else:
                self._crash(node)
        elif isinstance(fault, Restart):
            node = self.nodes[fault.node]
            node.crash_on_write = False
            if node.core is None and node.name not in self._dormant:
                self._start(node)
        elif isinstance(fault, ChangeMembership):
            self._change_membership(fault)

    def _on_heal(self) -> None:
        self._trace("heal")
        self.net.heal()
        for node in self.nodes.values():
            node.crash_on_write = False
            if node.core is None and node.name not in self._dormant:
                self._start(node)

    def _on_deliver(self, src: str, dst: str, data: bytes, kind: str) -> None:
        node = self.nodes[dst]
        if node.core is None or not self.net.connected(src, dst):
            self.stats["messages lost in flight"] += 1
            self._trace(f"lost {src}>{dst} {kind}")
            return
        self._trace(f"recv {src}>{dst} {kind}")
        self._call(node, node.core.receive, src, data)
        if node.role == "client" and data in self._replied:
            self._check_reply(node, data)

    def _check_reply(self, node: _Node, data: bytes) -> None:
        """Once a client has taken a reply, it holds everything the replying server held
        when it replied: whether the reply was what the request's context lacked or what
        changed since the request's version (Rule 10 of the server core)."""
        server, held = self._replied[data]
        reply = decode(data)
        assert isinstance(reply, SyncReply)
        mine = node.core.state(reply.list_id)
        if mine is None or held <= mine:
            return
        self.short_replies += 1
        self.problems.append(
            f"{node.name} took {server}'s reply {reply.request_id} on list "
            f"{reply.list_id[:8]} and still lacks part of what {server} held"
        )

    def _on_persisted(self, name: str, incarnation: int, token: int) -> None:
        node = self.nodes[name]
        if node.core is None or node.incarnation != incarnation:
            return
        if self.server_stores[name].complete(token):
            self._trace(f"durable {name} #{token}")
            self._call(node, node.core.persisted, token)

    def _on_timer(self, name: str, incarnation: int, token: int) -> None:
        node = self.nodes[name]
        if node.core is None or node.incarnation != incarnation or node.timer_token != token:
            return
        node.timer_at = None
        self._call(node, node.core.on_timer)

    def _on_edit(self, op: ClientOp) -> None:
        node = self.nodes[op.client]
        list_id = self.workload.list_ids[op.list_index]
        if node.core is None:
            self.stats["edits skipped (client down)"] += 1
            self._trace(f"edit-skipped {op.client} (down)")
            return
        core = node.core
        before = core.state(list_id)
        ctx = None if before is None else context_of(before)
        try:
            first = 1 if ctx is None else ctx.next_dot(op.client).counter
        except ValueError as exc:
            # Someone's context claimed this client's every dot (a forgery got through).
            self.problems.append(f"{op.client} can no longer edit list {list_id[:8]}: {exc}")
            self._trace(f"edit-impossible {op.client} {op.op}")
            return
        seq = core.next_seq(list_id)
        try:
            delta, effects = core.edit(list_id, mutator(op.op), self.now)
        except (ValueError, TypeError) as exc:
            self.stats["edits refused by the list"] += 1
            self._trace(f"edit-refused {op.client} {op.op} {exc}")
            return
        delta_ctx = context_of(delta)
        dots = tuple(
            (d.replica, d.counter)
            for d in (delta_ctx.dots() if delta_ctx is not None else ())
            if d.replica == op.client and d.counter >= first
        )
        record = EditRecord(
            len(self.edits), op.client, node.incarnation, list_id, seq, op.op, delta.copy(), dots
        )
        self.edits.append(record)
        self._queued[(op.client, list_id, seq)] = record
        for replica, counter in dots:
            key = (list_id, replica, counter)
            if key in self._issued:
                self.reused_dots += 1
                self.problems.append(
                    f"list {list_id[:8]}: dot {(replica, counter)} issued by edit "
                    f"#{record.number} and #{self._issued[key]}"
                )
            self._issued[key] = record.number
        self._trace(f"edit {op.client} {list_id[:8]} {op.op} seq={seq} dots={list(dots)}")
        self._effects(node, effects)

    def _on_acked(self, client: str, effect: Acked) -> None:
        self._trace(f"acked {client} {effect.list_id[:8]} <={effect.through_seq}")
        for key in [k for k in self._queued if k[0] == client and k[1] == effect.list_id]:
            if key[2] <= effect.through_seq:
                self._queued.pop(key).acked = True

    def _on_sample(self, kind: str) -> None:
        if kind == "growth":
            self._check_growth()
        elif kind == "timeline":
            self.timeline.append((self.now, self._server_digests(), self.messages))
        else:
            self._samples.append((self.now, self._server_digests()))

    def _check_growth(self) -> None:
        for node in self.nodes.values():
            if node.role in ("broker", "byzantine") or node.core is None:
                continue
            for list_id in self.workload.list_ids:
                if node.role == "client":
                    self._grew(("client", node.name, list_id), node.core.state(list_id))
                    continue
                mem = (f"mem#{node.incarnation}", node.name, list_id)
                disk = ("disk", node.name, list_id)
                if not node.core.holds(list_id):
                    # Not held (any more): a list handed over is forgotten, and one
                    # held again later starts from what its holders send.
                    self._snapshots.pop(mem, None)
                    self._snapshots.pop(disk, None)
                    continue
                self._grew(mem, node.core.state(list_id))
                stored = self.server_stores[node.name].lists.get(list_id)
                self._grew(disk, None if stored is None else stored.copy())

    def _grew(self, key: tuple[str, str, str], state: Any) -> None:
        """Check that ``state`` includes the previous snapshot under ``key``; keep it."""
        if state is None:
            return
        before = self._snapshots.get(key)
        if before is not None and not before <= state:
            self.shrunk += 1
            self.problems.append(f"{key[1]} ({key[0]}) lost part of list {key[2][:8]}")
        self._snapshots[key] = state

    def _server_digests(self) -> tuple[str, ...]:
        out = []
        for name in self._live_servers():
            core = self.nodes[name].core
            for list_id in self.workload.list_ids:
                d = None if core is None else core.digest(list_id)
                out.append(d or "-")
        return tuple(out)

    def _on_final(self) -> None:
        self._final_pass += 1
        self._trace(f"final-sync pass {self._final_pass}")
        for name in self.topology.clients:
            node = self.nodes[name]
            self._call(node, node.core.sync_all)

    def _clients_idle(self) -> bool:
        return all(not self.nodes[c].core.busy for c in self.topology.clients)

    # -- the run --------------------------------------------------------------------------

    def run(self) -> RunResult:
        """Run to the end and check the outcome."""
        cfg = self.config
        for node in self.nodes.values():
            if node.name not in self._dormant:
                self._start(node)
        for fault in self.schedule.ordered():
            self._push(fault.at, _FAULT, fault)
        self._push(self.schedule.heal_at, _FAULT, None)
        for op in self.workload.ops:
            if op.at < self.schedule.heal_at:
                self._push(op.at, _EDIT, op)
        end = cfg.heal_at + cfg.settle
        for t in self._every(cfg.growth_check_every, cfg.growth_check_every, end, inclusive=False):
            self._push(t, _SAMPLE, "growth")
        limit = end + cfg.final_sync_limit
        for t in self._every(cfg.heal_at, cfg.converge_sample_every, limit):
            self._push(t, _SAMPLE, "digests")
        if cfg.timeline_every:
            for t in self._every(0.0, cfg.timeline_every, limit):
                self._push(t, _SAMPLE, "timeline")
        self._push(cfg.heal_at + cfg.settle, _FINAL, None)
        self._loop(limit)
        return self._result()

    def _every(
        self, start: float, step: float, stop: float, *, inclusive: bool = True
    ) -> Iterator[float]:
        """``start``, ``start + step``, ... up to ``stop``, summed step by step.

        Raises:
            SimulationError: more than ``max_events`` times (a step too small to matter).
        """
        t = start
        for _ in range(self.config.max_events):
            if t > stop or (t == stop and not inclusive):
                return
            yield t
            t += step
        raise SimulationError(
            f"seed {self.seed}: sampling every {step:g}s up to {stop:g}s takes more than "
            f"{self.config.max_events} events"
        )

    def _loop(self, limit: float) -> None:
        heap = self._heap
        while heap:
            at, kind, _, data = heapq.heappop(heap)
            if at > limit:
                break
            self.now = at
            self.events += 1
            if self.events > self.config.max_events:
                raise SimulationError(
                    f"seed {self.seed}: more than {self.config.max_events} events"
                )
            if kind == _DELIVER:
                self._on_deliver(*data)
            elif kind == _TIMER:
                self._on_timer(*data)
            elif kind == _PERSISTED:
                self._on_persisted(*data)
            elif kind == _FAULT:
                if data is None:
                    self._on_heal()
                else:
                    self._on_fault(data)
            elif kind == _EDIT:
                self._on_edit(data)
            elif kind == _SAMPLE:
                self._on_sample(data)
            elif kind == _FINAL:
                self._on_final()
            if self._final_pass and self._clients_idle():
                if self._final_pass == 2:
                    self._synced_final = set(self.topology.clients)
                    break
                self._on_final()

    def _result(self) -> RunResult:
        servers = {
            s: {
                k: st
                for k in self.workload.list_ids
                if (st := self.nodes[s].core.state(k)) is not None
            }
            for s in self._live_servers()
        }
        clients = {
            c: {
                k: st
                for k in self.workload.list_ids
                if (st := self.nodes[c].core.state(k)) is not None
            }
            for c in sorted(self._synced_final)
        }
        placed = {k: self.holders(k) for k in self.workload.list_ids}
        final = check_final(
            self.model, self.workload.list_ids, servers, clients, self.edits, holders=placed
        )
        misplaced = self._check_placement(servers, placed)
        self._check_stores(servers)
        self._check_forgeries(servers)
        self._samples.append((self.now, self._server_digests()))
        digests = self._server_digests()
        rounds = None
        if not final.divergent:
            rounds = rounds_to_converge(
                self._samples,
                digests,
                self.config.heal_at,
                self.config.server.anti_entropy_interval,
            )
        problems = [*self.problems, *final.problems]
        unsynced = len(self.topology.clients) - len(self._synced_final)
        if unsynced:
            problems.append(f"{unsynced} clients did not finish their final sync")
        return RunResult(
            seed=self.seed,
            divergent=final.divergent,
            lost_acked=final.lost_acked,
            acked_not_durable=self.acked_not_durable,
            short_replies=self.short_replies,
            counter_violations=final.counter_violations,
            phantoms=final.phantoms,
            shrunk=self.shrunk,
            reused_dots=self.reused_dots,
            unsynced_clients=unsynced,
            rounds=rounds,
            edits=len(self.edits),
            acked=sum(e.acked for e in self.edits),
            messages=self.messages,
            wire_bytes=self.wire_bytes,
            client_messages=self.client_messages,
            client_bytes=self.client_bytes,
            events=self.events,
            end=self.now,
            trace_hash=self._trace_hash.hexdigest(),
            stats=tuple(sorted(self.stats.items())),
            problems=tuple(problems),
            forged=self.forged,
            misplaced=misplaced,
            lost_handoffs=self.lost_handoffs,
        )

    def _live_servers(self) -> list[str]:
        """The servers started in this run (spares that never joined are not)."""
        return [s for s in self.topology.servers if s not in self._dormant]

    def _check_placement(
        self, servers: dict[str, dict[str, Any]], placed: dict[str, tuple[str, ...]]
    ) -> int:
        """No server keeps a list it does not hold, in memory or in its store, nor a
        hint; every server and broker follows the last membership; count the copies each
        member holds (``placement:`` stats, for the share of N/M)."""
        misplaced = 0
        self.stats["placement: lists"] += len(placed)
        final = self.membership
        for name in [*self._live_servers(), *self.topology.brokers]:
            follows = self.nodes[name].core.membership
            if follows != final:
                self.problems.append(
                    f"{name} follows membership epoch "
                    f"{'none' if follows is None else follows.epoch}, not {final.epoch}"
                )
        for name in self._live_servers():
            if name in final.servers:
                held = sum(name in h for h in placed.values())
                self.stats[f"placement: lists held by {name}"] += held
            store = self.server_stores[name]
            stored = set(servers[name]) | set(store.lists)
            for list_id in sorted(stored):
                if name not in placed.get(list_id, (name,)):
                    misplaced += 1
                    self.problems.append(f"{name} keeps list {list_id[:8]}, which it does not hold")
            for list_id, holder in sorted(store.hint_states):
                misplaced += 1
                self.problems.append(
                    f"{name} still keeps a hint of list {list_id[:8]} for {holder} after the heal"
                )
            core = self.nodes[name].core
            self.stats["hints left in memory"] += core.hints
        return misplaced

    def _check_stores(self, servers: dict[str, dict[str, Any]]) -> None:
        """With no write in flight, what a server holds is what its store holds (Rule 2 of
        the server core, with eviction and reloads in play)."""
        self.stats["server loads from store"] = sum(st.loads for st in self.server_stores.values())
        for name in self._live_servers():
            self._count_server(self.nodes[name].core)
        for name, lists in servers.items():
            store = self.server_stores[name]
            if store.pending:
                continue
            for list_id, state in lists.items():
                if store.lists.get(list_id) != state:
                    self.problems.append(
                        f"{name} holds list {list_id[:8]} in memory other than in its store"
                    )

    def _check_forgeries(self, servers: dict[str, dict[str, Any]]) -> None:
        """Every entry a server holds was made by an honest edit (or the Byzantine's own
        honest rename) with that very payload, and no server's context claims a dot that
        nobody issued."""
        node = self.nodes.get(BYZANTINE)
        byz: ByzantineCore | None = None if node is None else node.core
        if byz is not None:
            for kind, _, _ in byz.forged:
                self.stats[f"byzantine forgeries: {kind}"] += 1
            for code, n in sorted(byz.refusals.items()):
                self.stats[f"byzantine refusals: {code}"] += n
        records = {k: self.edits[n] for k, n in self._issued.items()}
        honest = {} if byz is None else byz.honest
        tops: dict[tuple[str, str], int] = {}
        for list_id, r, c in records:
            tops[(list_id, r)] = max(tops.get((list_id, r), 0), c)
        for list_id, (r, c) in honest:
            tops[(list_id, r)] = max(tops.get((list_id, r), 0), c)
        for server, lists in servers.items():
            for list_id, state in lists.items():
                kernel = kernel_of(state)
                if kernel is None:
                    continue
                for dot, payload in kernel._entries.items():
                    record = records.get((list_id, *dot))
                    if record is not None:
                        made = kernel_of(record.delta)
                        expected = None if made is None else made._entries.get(dot)
                    else:
                        expected = honest.get((list_id, dot))
                    if expected is None or expected != payload:
                        self._forgery(
                            f"{server} holds dot {dot} of list {list_id[:8]} "
                            "that no honest edit made with that payload"
                        )
                ctx = kernel._ctx
                for r in ctx.replicas:
                    cloud = ctx._cloud.get(r)
                    top = max(ctx._vv.get(r, 0), *cloud) if cloud else ctx._vv.get(r, 0)
                    if top > tops.get((list_id, r), 0):
                        self._forgery(
                            f"{server}'s context of list {list_id[:8]} claims dot "
                            f"({r!r}, {top}), which was never issued"
                        )

    def _forgery(self, text: str) -> None:
        self.forged += 1
        self.problems.append(text)


def run(seed: int, **kwargs: Any) -> RunResult:
    """Run one seed (keyword arguments as for :class:`Simulation`)."""
    return Simulation(seed, **kwargs).run()
