"""The real cluster's figures beside their limits, each measured in one run.

The measurements (``TARGETS.md``, cluster table):

1. **Round trip.** Edits pushed through a broker to a server and acknowledged after the
   server's durable commit, by REQ sockets driven exactly as :func:`raw_hop.drive_req`
   drives the raw hop (one thread, one request in flight per client), beside that raw hop
   (REQ -> ROUTER/ROUTER -> DEALER echo with one durable SQLite commit) measured in the
   same run. Each request is a real :class:`~reference_cluster.protocol.messages.SyncRequest`: a
   fresh one-change delta, the client's causal context and a session token; the reply
   must be the :class:`~reference_cluster.protocol.messages.SyncReply` for it. With 1 client for
   latency and 8 for throughput; the 8 clients edit 8 lists that all live on one server,
   so one server process does the work, as one worker does in the raw hop. The cluster
   is 3 servers each holding every list (3 replicas), at write quorum W = 2 (the
   default: the reply waits for one peer's durable write as well) and again at W = 1
   (the reply waits for the answering server's own write only); every reply is checked
   to say it was held by at least W servers (exactly 1 at W = 1). A last row times the
   whole client (:class:`~reference_cluster.processes.client.Client`: the edit written
   durably on the device, the round trip, the acknowledgement written durably).
2. **W = 1 against W = 2** (``--only quorum``): the raw hop and fresh 3-server clusters
   at W = 1 and at W = 2, 1 and 8 clients as above, in ``--rounds`` rounds whose order
   turns round by round; the medians over the rounds.
3. **Heal to convergence.** Servers split ``{s1} | {s2, s3}`` while clients edit on both
   sides, then healed; the time until every server holds the same digests, in seconds and
   in anti-entropy rounds, at the stated interval. In a network namespace with iptables
   (real packet loss) when this runs as root, else through link proxies.
4. **Bytes on the wire per edit**, for a list of 10 and of 10,000 items: every link goes
   through a counting link proxy, so the figure is every byte the processes sent (ZeroMQ
   framing included) while a client made edits one at a time, minus the background
   (heartbeats) counted over a quiet window. The first and the last edit of the run are
   also counted alone (heartbeats included), and the time until each edit was
   acknowledged is shown beside them.

Run ``.venv/bin/python bench/cluster.py`` (about six minutes); ``--quick`` for a smaller run.
Every process is stopped by pid when a measurement ends.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import random
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import zmq
from raw_hop import HopStats, drive_req, ratio, raw_hop, summarize

from reference_cluster.processes.client import Client
from reference_cluster.processes.cluster import LocalCluster, Timing, free_base_port
from reference_cluster.processes.config import LocalLayout
from reference_cluster.processes.security import client_keys
from reference_cluster.protocol.messages import SyncReply, SyncRequest, decode, encode
from reference_cluster.protocol.placement import preference
from reference_cluster.shopping_list import ShoppingList, new_list_id
from reference_cluster.storage.client_store import ClientStore

__all__ = [
    "LatencyReport",
    "QuorumReport",
    "drive_frames",
    "drive_steps",
    "edit_frames",
    "measure_quorum",
    "measure_round_trips",
]

PASSWORD = "bench-password-1"
BENCH_TIMING = Timing(heartbeat=1.0, anti_entropy=2.0, liveness=3.0, zmq_heartbeat=1.0)
"""The processes' defaults."""
CONVERGENCE_SETTINGS = (
    (BENCH_TIMING, 6.0),
    (Timing(heartbeat=0.25, anti_entropy=0.5, liveness=1.0, zmq_heartbeat=0.5), 3.0),
)
"""(timing, seconds the partition holds): the defaults, and the test suite's timing."""


# -- requests -------------------------------------------------------------------------------


ITEMS = tuple(f"item {k}" for k in range(10))


def edit(state: ShoppingList, replica: str, i: int) -> ShoppingList:
    """Edit number ``i`` of a device: the first ten add the ten items, later ones set one
    item's quantity in turn (the list keeps its size, as a real one does)."""
    item = ITEMS[i % len(ITEMS)]
    if i < len(ITEMS):
        return state.add_item(replica, item)
    return state.set_quantity(replica, item, i % 7 + 1)


def edit_frames(
    token: str,
    list_id: str,
    replica: str,
    count: int,
    mutate: Callable[[ShoppingList, str, int], ShoppingList] | None = None,
) -> list[bytes]:
    """``count`` encoded sync requests of one device editing one list (edit ``i`` is
    ``mutate(state, replica, i)``, by default :func:`edit`); each carries that one change
    as its delta and the device's context after it, as
    :class:`~reference_cluster.cores.client.ClientCore` sends them."""
    change = mutate or edit
    state = ShoppingList()
    nonce = secrets.token_hex(8)
    frames = []
    for i in range(count):
        delta = change(state, replica, i)
        state.seal()
        request = SyncRequest(
            request_id=f"{nonce}.{i}",
            list_id=list_id,
            replica=replica,
            attempt=0,
            context=state.context.to_dict(),
            delta=delta.to_dict(),
            token=token,
        )
        frames.append(encode(request))
    return frames


def drive_frames(
    endpoint: str,
    frames: Sequence[Sequence[bytes]],
    *,
    warmup: int,
    broker_key: bytes | None,
    timeout: float = 120.0,
) -> tuple[HopStats, list[tuple[bytes, bytes]]]:
    """Send each client's frames in order through its own REQ socket, one in flight per
    client, all polled by one thread (as :func:`raw_hop.drive_req` does), through CURVE
    with ``broker_key`` pinned as a real client dials (None: an insecure cluster); the
    first ``warmup`` round trips of each client are not measured.

    Returns:
        The figures of the measured round trips, and every ``(request, reply)`` pair for
        checking afterwards (checking is kept out of the timed loop).

    Raises:
        TimeoutError: the run took longer than ``timeout``.
    """
    warm = [list(f[:warmup]) for f in frames]
    rest = [list(f[warmup:]) for f in frames]
    (_, warm_pairs), (stats, pairs) = drive_steps(
        endpoint, [warm, rest], broker_key=broker_key, timeout=timeout
    )
    return stats, warm_pairs + pairs


def drive_steps(
    endpoint: str,
    steps: Sequence[Sequence[Sequence[bytes]]],
    *,
    broker_key: bytes | None,
    warmup: Sequence[bytes] = (),
    timeout: float = 300.0,
    since: bool = False,
) -> list[tuple[HopStats, list[tuple[bytes, bytes]]]]:
    """Drive each step's frames as :func:`drive_frames` does, on the same sockets from
    step to step (one socket per client of the first step); ``warmup``: one untimed
    request per socket first (connections made, handshakes done). ``since``: each
    request carries the version of the reply before it on its socket, as the client core
    sends it (where the code has ``SyncRequest.since``); the pairs hold what was sent.

    Returns:
        Per step: the figures and every ``(request, reply)`` pair.

    Raises:
        TimeoutError: a step took longer than ``timeout``.
    """
    security = client_keys(broker_key)
    ctx: zmq.Context[Any] = zmq.Context.instance()
    socks: list[zmq.Socket[Any]] = []
    out = []
    versions: dict[int, str] | None = (
        {} if since and "since" in attrs.fields_dict(SyncRequest) else None
    )
    try:
        for _ in steps[0]:
            sock = ctx.socket(zmq.REQ)
            sock.setsockopt(zmq.LINGER, 0)
            security.dial_broker(sock)
            sock.connect(endpoint)
            socks.append(sock)
        if warmup:
            _run(socks, [[frame] for frame in warmup], [], timeout, versions)
        for frames in steps:
            pairs: list[tuple[bytes, bytes]] = []
            latencies, elapsed = _run(socks, [list(f) for f in frames], pairs, timeout, versions)
            out.append((summarize(latencies, len(frames), elapsed), pairs))
    finally:
        for sock in socks:
            sock.close()
    return out


def _with_since(frame: bytes, version: str | None) -> bytes:
    """``frame`` (a sync request) carrying ``version`` as its ``since``."""
    request = decode(frame)
    assert isinstance(request, SyncRequest)
    return encode(attrs.evolve(request, since=version))


def _run(
    socks: list[zmq.Socket[Any]],
    queues: list[list[bytes]],
    pairs: list[tuple[bytes, bytes]],
    timeout: float,
    versions: dict[int, str] | None = None,
) -> tuple[list[float], float]:
    """Send each socket's queue in order, one in flight per socket. ``versions``: socket
    index -> the version of its last reply, put into its next request and updated."""

    def send(sock: zmq.Socket[Any], i: int) -> None:
        frame = queues[i][nxt[i]]
        if versions is not None and i in versions:
            frame = queues[i][nxt[i]] = _with_since(frame, versions[i])
        sent_at[sock] = time.perf_counter()
        sock.send(frame)

    poller = zmq.Poller()
    for sock in socks:
        poller.register(sock, zmq.POLLIN)
    index = {sock: i for i, sock in enumerate(socks)}
    nxt = [0] * len(socks)
    sent_at: dict[zmq.Socket[Any], float] = {}
    latencies: list[float] = []
    total = sum(len(q) for q in queues)
    start = time.perf_counter()
    deadline = start + timeout
    for i, (sock, queue) in enumerate(zip(socks, queues, strict=True)):
        if queue:
            send(sock, i)
    while len(latencies) < total:
        left = deadline - time.perf_counter()
        if left <= 0:
            raise TimeoutError(f"{len(latencies)} of {total} round trips in {timeout}s")
        for sock, _ in poller.poll(int(left * 1000) + 1):
            reply = sock.recv()
            latencies.append(time.perf_counter() - sent_at.pop(sock))
            i = index[sock]
            pairs.append((queues[i][nxt[i]], reply))
            if versions is not None:
                answer = decode(reply)
                if isinstance(answer, SyncReply) and answer.version is not None:
                    versions[i] = answer.version
            nxt[i] += 1
            if nxt[i] < len(queues[i]):
                send(sock, i)
    return latencies, time.perf_counter() - start


def check_pairs(pairs: Sequence[tuple[bytes, bytes]], *, copies: int | None = None) -> None:
    """Every reply acknowledges its request; with ``copies`` (the write quorum W), each
    says at least W servers held the edit when it was acknowledged (``SyncReply.copies``;
    at W = 2 of 3 holders it is 3 when both peers confirmed before the reply), and at
    W = 1 exactly one.

    Raises:
        AssertionError: a reply is an error, answers another request, or claims
            other copies.
    """
    for request, reply in pairs:
        req, rep = decode(request), decode(reply)
        assert isinstance(req, SyncRequest)
        if not (isinstance(rep, SyncReply) and rep.request_id == req.request_id):
            raise AssertionError(f"request {req.request_id} got {rep!r}")
        if copies is not None and not (rep.copies is not None and rep.copies >= copies):
            raise AssertionError(f"request {req.request_id}: {rep.copies} copies, want {copies}")
        if copies == 1 and rep.copies != 1:
            raise AssertionError(f"request {req.request_id}: {rep.copies} copies at W = 1")


# -- the cluster ----------------------------------------------------------------------------


@contextlib.contextmanager
def local_cluster(
    data_dir: Path, *, servers: int = 3, timing: Timing = BENCH_TIMING, **kwargs: Any
) -> Iterator[LocalCluster]:
    """A started :class:`LocalCluster` (2 brokers) on loopback, stopped by pid."""
    layout = LocalLayout("127.0.0.1", free_base_port(servers=servers), servers=servers)
    with LocalCluster(data_dir, layout=layout, timing=timing, log_level="WARNING", **kwargs) as c:
        c.start()
        yield c


def signed_up_client(
    data_dir: Path,
    name: str,
    brokers: Sequence[str],
    *,
    broker_key: bytes | None,
    connect: bool = True,
) -> Client:
    """An in-process client with a fresh account (closed by the caller)."""
    store: ClientStore[ShoppingList] = ClientStore(data_dir / f"{name}.sqlite", ShoppingList)
    client = Client(store, brokers, broker_key=broker_key)
    if connect:
        client.sign_up(f"{name}-{secrets.token_hex(3)}", PASSWORD)
    return client


def lists_on(server: str, servers: Sequence[str], count: int) -> list[str]:
    """``count`` new list ids whose preferred holder is ``server``."""
    out: list[str] = []
    for _ in range(100 * count):
        list_id = new_list_id()
        if preference(list_id, servers)[0] == server:
            out.append(list_id)
            if len(out) == count:
                return out
    raise RuntimeError(f"no {count} lists found for {server}")


@attrs.frozen
class LatencyReport:
    """Round-trip figures of one run: the raw hop and the cluster (3 servers, every
    server holding every list) at W = 2 (the default) and W = 1, 1 and 8 clients, the
    whole client path, and one server alone."""

    raw_1: HopStats
    raw_8: HopStats
    cluster_1: HopStats
    cluster_8: HopStats
    client_1: HopStats
    single_1: HopStats
    single_8: HopStats
    w1_1: HopStats
    w1_8: HopStats


def client_path(client: Client, list_id: str, count: int, first: int = 0) -> HopStats:
    """Time ``count`` edits (numbers ``first``, ... of :func:`edit`) made and acknowledged
    one at a time by an in-process client."""
    latencies = []
    start = time.perf_counter()
    for i in range(first, first + count):
        t = time.perf_counter()
        client.edit(list_id, lambda s, r: edit(s, r, i))  # noqa: B023 - called at once
        if not client.run(lambda: client.queued(list_id) == 0, 10.0):
            raise TimeoutError("an edit was not acknowledged in 10s")
        latencies.append(time.perf_counter() - t)
    return summarize(latencies, 1, time.perf_counter() - start)


def _cluster_round_trips(
    data_dir: Path,
    *,
    servers: int,
    requests: int,
    warmup: int,
    whole_client: bool,
    write_quorum: int | None = None,
) -> tuple[HopStats, HopStats, HopStats | None]:
    """1-client and 8-client round trips through a cluster of ``servers`` servers, each
    holding every list, at write quorum ``write_quorum`` (None: the servers' default,
    2, or 1 for one server), and the whole client path if asked. Every reply is checked
    to acknowledge its request with the copies W asks for."""
    quorum = write_quorum if write_quorum is not None else min(2, servers)
    with local_cluster(
        data_dir, servers=servers, replicas=servers, write_quorum=write_quorum
    ) as cluster:
        client = signed_up_client(
            data_dir, "bench", cluster.layout.frontends, broker_key=cluster.broker_key
        )
        try:
            token = client.core.token
            assert token is not None
            one, eight = lists_on("s1", cluster.servers, 1), lists_on("s1", cluster.servers, 8)
            frontend = cluster.layout.frontend(0)
            # A session belongs to one device: every list is edited by the client's.
            replica = client.core.replica
            frames = [edit_frames(token, one[0], replica, requests + warmup)]
            stats_1, pairs = drive_frames(
                frontend, frames, warmup=warmup, broker_key=cluster.broker_key
            )
            check_pairs(pairs, copies=quorum)
            per = requests // 8 + warmup // 8
            frames = [edit_frames(token, k, replica, per) for k in eight]
            stats_8, pairs = drive_frames(
                frontend, frames, warmup=warmup // 8, broker_key=cluster.broker_key
            )
            check_pairs(pairs, copies=quorum)
            whole = None
            if whole_client:
                list_id = client.create("bench")
                client_path(client, list_id, warmup // 4)
                whole = client_path(client, list_id, max(50, requests // 4), warmup // 4)
        finally:
            client.close()
    return stats_1, stats_8, whole


def _raw_round_trips(data_dir: Path, *, requests: int, warmup: int) -> tuple[HopStats, HopStats]:
    """The raw hop's 1-client and 8-client round trips."""
    data_dir.mkdir(parents=True)
    with raw_hop(data_dir) as endpoint:
        raw_1 = drive_req(endpoint, clients=1, requests=requests, warmup=warmup)
        raw_8 = drive_req(endpoint, clients=8, requests=requests, warmup=warmup)
    return raw_1, raw_8


def measure_round_trips(data_dir: Path, *, requests: int, warmup: int = 200) -> LatencyReport:
    """Measure the raw hop and the cluster in one run (see the module notes): 3 servers
    at W = 2 (the default) and at W = 1; also a cluster with one server, to show what
    replication to two peers costs."""
    raw_1, raw_8 = _raw_round_trips(data_dir / "raw", requests=requests, warmup=warmup)
    cluster_1, cluster_8, whole = _cluster_round_trips(
        data_dir / "cluster",
        servers=3,
        requests=requests,
        warmup=warmup,
        whole_client=True,
        write_quorum=2,
    )
    assert whole is not None
    w1_1, w1_8, _ = _cluster_round_trips(
        data_dir / "w1",
        servers=3,
        requests=requests,
        warmup=warmup,
        whole_client=False,
        write_quorum=1,
    )
    single_1, single_8, _ = _cluster_round_trips(
        data_dir / "single", servers=1, requests=requests, warmup=warmup, whole_client=False
    )
    return LatencyReport(raw_1, raw_8, cluster_1, cluster_8, whole, single_1, single_8, w1_1, w1_8)


# -- write quorum: W = 1 against W = 2 --------------------------------------------------------


QUORUM_SETUPS = ("raw", "w1", "w2")
"""What a write-quorum round measures: the raw hop, then 3 servers at W = 1 and W = 2."""


@attrs.frozen
class QuorumReport:
    """The raw hop and 3 servers (3 replicas) at W = 1 and W = 2, 1 and 8 clients, in
    one run of ``rounds`` rounds; each round measures every setup in a fresh cluster,
    in an order turned by one setup from the round before (so none is always first).

    Attributes:
        runs: setup (``raw``, ``w1``, ``w2``) -> clients (1, 8) -> one HopStats per
            round.
        orders: the order of the setups in each round.
    """

    runs: dict[str, dict[int, list[HopStats]]]
    orders: list[tuple[str, ...]]

    def median(self, setup: str, clients: int) -> HopStats:
        """The median of each figure over the rounds."""
        runs = self.runs[setup][clients]
        return HopStats(
            clients=clients,
            requests=sum(r.requests for r in runs),
            median_us=statistics.median(r.median_us for r in runs),
            p99_us=statistics.median(r.p99_us for r in runs),
            per_second=statistics.median(r.per_second for r in runs),
        )


def measure_quorum(
    data_dir: Path, *, requests: int, warmup: int = 200, rounds: int = 3
) -> QuorumReport:
    """W = 1 against W = 2 beside the raw hop (see :class:`QuorumReport`): every
    setup's 1-client and 8-client round trips, ``rounds`` times."""
    runs: dict[str, dict[int, list[HopStats]]] = {s: {1: [], 8: []} for s in QUORUM_SETUPS}
    orders = []
    for i in range(rounds):
        order = QUORUM_SETUPS[i % 3 :] + QUORUM_SETUPS[: i % 3]
        orders.append(order)
        for setup in order:
            where = data_dir / f"{setup}-{i}"
            if setup == "raw":
                one, eight = _raw_round_trips(where, requests=requests, warmup=warmup)
            else:
                one, eight, _ = _cluster_round_trips(
                    where,
                    servers=3,
                    requests=requests,
                    warmup=warmup,
                    whole_client=False,
                    write_quorum=int(setup[1:]),
                )
            runs[setup][1].append(one)
            runs[setup][8].append(eight)
    return QuorumReport(runs, orders)


# -- heal to convergence ----------------------------------------------------------------------


@attrs.frozen
class ConvergenceRow:
    """Heal-to-convergence times at one anti-entropy interval (seconds)."""

    interval: float
    zmq_heartbeat: float
    hold: float
    times: tuple[float, ...]

    @property
    def rounds(self) -> tuple[int, ...]:
        """Each time in anti-entropy rounds (rounded up)."""
        return tuple(math.ceil(t / self.interval - 1e-9) for t in self.times)


def measure_convergence(
    data_dir: Path, *, timing: Timing, hold: float, repeats: int
) -> ConvergenceRow | str:
    """Split ``{b0, s1, c1} | {b1, s2, s3, c2}`` for ``hold`` seconds while both clients
    edit, heal, and time until every server holds the same list; ``repeats`` times in
    one cluster. Needs a network namespace: without one, the reason (a string)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "properties"))
    from cluster_harness import RealCluster, Workload, poll, server_digests
    from netns import Namespace, NetnsUnavailable

    try:
        ns = Namespace("rc-bench")
    except NetnsUnavailable as exc:
        return f"not measured: {exc}"
    times = []
    with ns, RealCluster(data_dir, ns=ns, timing=timing) as cluster:
        cluster.start()
        wl = Workload(cluster, ["c1", "c2"], lists=1, rng=random.Random(1))
        wl.setup()
        for _ in range(repeats):
            cluster.partition([["b0", "s1", "c1"], ["b1", "s2", "s3", "c2"]])
            end = time.monotonic() + hold
            for _ in range(10_000):  # both sides edit while the partition holds
                wl.burst(1)
                if time.monotonic() > end:
                    break
                time.sleep(0.1)
            cluster.heal()
            healed = time.monotonic()

            def converged() -> bool:
                digests = server_digests(cluster, wl.list_ids)
                return digests is not None and len(set(digests)) == 1

            poll(converged, "servers converge", timeout=60.0, every=0.01)
            times.append(time.monotonic() - healed)
            wl.sync_all(timeout=10.0)
    return ConvergenceRow(timing.anti_entropy, timing.zmq_heartbeat, hold, tuple(times))


# -- bytes on the wire ------------------------------------------------------------------------


@attrs.frozen
class BytesRow:
    """Bytes on the wire per edit for one list size, by kind of link."""

    items: int
    edits: int
    client_broker: float
    broker_server: float
    server_server: float
    first: int
    last: int
    ack_ms: float

    @property
    def total(self) -> float:
        """All links together."""
        return self.client_broker + self.broker_server + self.server_server


def _link_kind(src: str, dst: str) -> str:
    if src.startswith("s") and dst.startswith("s"):
        return "server_server"
    if src.startswith("s") or dst.startswith("s"):
        return "broker_server"
    return "client_broker"


def _relayed(cluster: LocalCluster) -> dict[str, int]:
    out = dict.fromkeys(("client_broker", "broker_server", "server_server"), 0)
    for (src, dst), proxy in cluster.links.items():
        out[_link_kind(src, dst)] += proxy.relayed
    return out


FILL_EDIT = 500
"""Most items one edit adds while a list is filled: a push of 10,000 items at once is
never acknowledged at W = 2 here (the peer's part, a 478 KB replicate decoded, joined
and committed, takes longer than the servers' 0.4 s write timeout, and every retry
does it again), so a big list is filled in edits of this size, each acknowledged
before the next."""


def _fill(state: ShoppingList, replica: str, items: int, first: int = 0) -> ShoppingList:
    """One edit that adds items ``first`` .. ``items - 1`` (the list's starting
    content)."""
    delta = ShoppingList()
    for k in range(first, items):
        delta.join(state.add_item(replica, ITEMS[k] if k < len(ITEMS) else f"thing {k}"))
    return delta


def measure_wire_bytes(
    data_dir: Path, *, sizes: Sequence[int], edits: int, quiet: float = 3.0
) -> list[BytesRow]:
    """Per list size: fill a list (in edits of at most :data:`FILL_EDIT` items), let
    every server hold it, then make ``edits`` edits one at a time (each acknowledged and
    on every server before the next), counting every byte every link proxy relays;
    subtract the background rate measured over ``quiet`` seconds of no edits.
    Anti-entropy is set far apart so that it does not run during the count (its digests
    are one small message per peer and round, whatever the size)."""
    timing = Timing(heartbeat=1.0, anti_entropy=3600.0, liveness=3.0, zmq_heartbeat=1.0)
    rows = []
    with local_cluster(data_dir, timing=timing, proxies=True) as cluster:
        client = signed_up_client(
            data_dir, "wire", cluster.client_brokers("wire"), broker_key=cluster.broker_key
        )
        try:
            for size in sizes:
                list_id = client.create(f"{size} items")
                for first in range(0, size, FILL_EDIT):
                    last = min(size, first + FILL_EDIT)
                    client.edit(list_id, lambda s, r: _fill(s, r, last, first))  # noqa: B023
                    if not client.run(lambda: client.queued(list_id) == 0, 60.0):  # noqa: B023
                        raise TimeoutError(f"items {first} .. {last - 1} were not acknowledged")
                _settle(cluster, client, list_id)
                before = _relayed(cluster)
                time.sleep(quiet)  # the background: heartbeats only
                after = _relayed(cluster)
                background = {k: (after[k] - before[k]) / quiet for k in after}
                before, start = _relayed(cluster), time.monotonic()
                latencies, single = [], []
                for i in range(len(ITEMS), len(ITEMS) + edits):
                    at = sum(_relayed(cluster).values())
                    t = time.perf_counter()
                    client.edit(list_id, lambda s, r: edit(s, r, i))  # noqa: B023 - at once
                    if not client.run(lambda: client.queued(list_id) == 0, 60.0):  # noqa: B023
                        raise TimeoutError("an edit was not acknowledged")
                    latencies.append(time.perf_counter() - t)
                    _settle(cluster, client, list_id)
                    single.append(sum(_relayed(cluster).values()) - at)
                elapsed = time.monotonic() - start
                after = _relayed(cluster)
                per = {k: (after[k] - before[k] - background[k] * elapsed) / edits for k in after}
                rows.append(
                    BytesRow(
                        size,
                        edits,
                        per["client_broker"],
                        per["broker_server"],
                        per["server_server"],
                        single[0],
                        single[-1],
                        statistics.median(latencies) * 1000,
                    )
                )
        finally:
            client.close()
    return rows


def _settle(cluster: LocalCluster, client: Client, list_id: str, timeout: float = 60.0) -> None:
    """Wait until the client's edits are acknowledged and every server holds its state."""
    if not client.run(lambda: client.queued(list_id) == 0, timeout):
        raise TimeoutError("an edit was not acknowledged")
    state = client.state(list_id)
    assert state is not None
    want = state.digest()
    deadline = time.monotonic() + timeout
    for s in cluster.servers:
        for _ in range(100_000):
            status = cluster.server_status(s, timeout=2.0)
            if status is not None and status.digests.get(list_id) == want:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{s} does not hold the client's state")
            time.sleep(0.002)


# -- output ---------------------------------------------------------------------------------


def _fmt_ratio(value: float) -> str:
    return f"{value:.2f}x"


def latency_table(report: LatencyReport) -> list[str]:
    """The round-trip table, as markdown lines."""
    r1 = ratio(report.cluster_1, report.raw_1)
    r8 = ratio(report.cluster_8, report.raw_8)
    rc = ratio(report.client_1, report.raw_1)
    lines = [
        "| what | clients | median us | p99 us | per s | vs raw hop (same run) |",
        "|---|---:|---:|---:|---:|---|",
    ]

    def row(label: str, s: HopStats, versus: str) -> None:
        lines.append(
            f"| {label} | {s.clients} | {s.median_us:,.0f} | {s.p99_us:,.0f} | "
            f"{s.per_second:,.0f} | {versus} |"
        )

    w1 = ratio(report.w1_1, report.raw_1)
    w8 = ratio(report.w1_8, report.raw_8)
    row("raw hop + durable commit", report.raw_1, "")
    row(
        "edit through broker and server, W = 2",
        report.cluster_1,
        f"median {_fmt_ratio(r1['median'])}, p99 {_fmt_ratio(r1['p99'])}",
    )
    row(
        "edit through broker and server, W = 1",
        report.w1_1,
        f"median {_fmt_ratio(w1['median'])}, p99 {_fmt_ratio(w1['p99'])}",
    )
    row("raw hop + durable commit", report.raw_8, "")
    row(
        "edits through broker and server, W = 2",
        report.cluster_8,
        f"throughput {_fmt_ratio(r8['throughput'])} (median {_fmt_ratio(r8['median'])}, "
        f"p99 {_fmt_ratio(r8['p99'])})",
    )
    row(
        "edits through broker and server, W = 1",
        report.w1_8,
        f"throughput {_fmt_ratio(w8['throughput'])} (median {_fmt_ratio(w8['median'])}, "
        f"p99 {_fmt_ratio(w8['p99'])})",
    )
    row(
        "whole client: local write, round trip, ack write",
        report.client_1,
        f"median {_fmt_ratio(rc['median'])}, p99 {_fmt_ratio(rc['p99'])}",
    )
    s1 = ratio(report.single_1, report.raw_1)
    s8 = ratio(report.single_8, report.raw_8)
    row(
        "one server, no peers (diagnostic)",
        report.single_1,
        f"median {_fmt_ratio(s1['median'])}, p99 {_fmt_ratio(s1['p99'])}",
    )
    row(
        "one server, no peers (diagnostic)",
        report.single_8,
        f"throughput {_fmt_ratio(s8['throughput'])}",
    )
    return lines


def quorum_table(report: QuorumReport) -> list[str]:
    """The W = 1 against W = 2 table (medians over the rounds), as markdown lines."""
    rounds = len(report.orders)
    lines = [
        f"| what | clients | median us | p99 us | per s | per s, each round | "
        f"vs raw hop (medians of {rounds} rounds) |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    labels = {
        "raw": "raw hop + durable commit",
        "w1": "3 servers, W = 1",
        "w2": "3 servers, W = 2 (default)",
    }
    for clients in (1, 8):
        raw = report.median("raw", clients)
        for setup in QUORUM_SETUPS:
            s = report.median(setup, clients)
            each = ", ".join(f"{r.per_second:,.0f}" for r in report.runs[setup][clients])
            versus = ""
            if setup != "raw":
                r = ratio(s, raw)
                versus = (
                    f"median {_fmt_ratio(r['median'])}, p99 {_fmt_ratio(r['p99'])}"
                    if clients == 1
                    else f"throughput {_fmt_ratio(r['throughput'])}"
                )
            lines.append(
                f"| {labels[setup]} | {clients} | {s.median_us:,.0f} | {s.p99_us:,.0f} | "
                f"{s.per_second:,.0f} | {each} | {versus} |"
            )
    w1, w2 = report.median("w1", 1), report.median("w2", 1)
    t1, t2 = report.median("w1", 8), report.median("w2", 8)
    lines.append("")
    lines.append(
        f"W = 2 against W = 1: round trip {w2.median_us / w1.median_us:.2f}x "
        f"({(w2.median_us - w1.median_us) / 1000:+.2f} ms), 8-client throughput "
        f"{t2.per_second / t1.per_second:.2f}x. Orders of the rounds: "
        + "; ".join(" ".join(o) for o in report.orders)
        + "."
    )
    return lines


def convergence_table(rows: Sequence[ConvergenceRow | str]) -> list[str]:
    """The heal-to-convergence table, as markdown lines."""
    lines = [
        "| anti-entropy interval | ZeroMQ heartbeat | partition held | heal to convergence "
        "(each run) | in rounds |",
        "|---:|---:|---:|---|---|",
    ]
    for row in rows:
        if isinstance(row, str):
            lines.append(f"| {row} | | | | |")
            continue
        times = ", ".join(f"{x:.2f} s" for x in row.times)
        rounds = ", ".join(str(r) for r in row.rounds)
        lines.append(
            f"| {row.interval:g} s | {row.zmq_heartbeat:g} s | {row.hold:g} s | {times} | "
            f"{rounds} |"
        )
    return lines


def bytes_table(rows: Sequence[BytesRow]) -> list[str]:
    """The bytes-per-edit table, as markdown lines."""
    lines = [
        "| list | edits | client-broker | broker-server | server-server | total per edit | "
        "vs 10 items | first edit | last edit | edit acknowledged, median |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = rows[0].total if rows else 1.0
    for r in rows:
        lines.append(
            f"| {r.items:,} items | {r.edits} | {r.client_broker:,.0f} B | "
            f"{r.broker_server:,.0f} B | {r.server_server:,.0f} B | {r.total:,.0f} B | "
            f"{r.total / base:.2f}x | {r.first:,} B | {r.last:,} B | {r.ack_ms:.1f} ms |"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Print the tables (``--quick`` for a smaller run)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=["latency", "quorum", "convergence", "bytes"])
    parser.add_argument(
        "--rounds",
        type=int,
        help="rounds of the W = 1 against W = 2 measurement (default 3; 1 with --quick)",
    )
    args = parser.parse_args(argv)
    requests = 1000 if args.quick else args.requests
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        data = Path(tmp)
        if args.only in (None, "latency"):
            report = measure_round_trips(data / "latency", requests=requests)
            print("\n".join(latency_table(report)) + "\n", flush=True)
        if args.only in (None, "quorum"):
            rounds = args.rounds if args.rounds is not None else 1 if args.quick else 3
            if rounds < 1:
                parser.error("--rounds must be at least 1")
            quorum = measure_quorum(data / "quorum", requests=requests, rounds=rounds)
            print("\n".join(quorum_table(quorum)) + "\n", flush=True)
        if args.only in (None, "convergence"):
            repeats = 2 if args.quick else 3
            rows = [
                measure_convergence(
                    data / f"converge-{i}", timing=timing, hold=hold, repeats=repeats
                )
                for i, (timing, hold) in enumerate(CONVERGENCE_SETTINGS)
            ]
            print("\n".join(convergence_table(rows)) + "\n", flush=True)
        if args.only in (None, "bytes"):
            edits = 50 if args.quick else 200
            wire = measure_wire_bytes(data / "bytes", sizes=(10, 10_000), edits=edits)
            print("\n".join(bytes_table(wire)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
