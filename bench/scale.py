"""Costs against the number of stored lists and the size of a list (issue 13), before and
after hash-tree anti-entropy, states on demand and O(delta) writes, in one run.

Five measurements, each made once with the code of this tree ("after") and once with the
code of an earlier commit ("before", extracted with ``git archive`` into a temporary
folder and put first on ``PYTHONPATH``), by the same worker code (:func:`worker`), which
finds out which protocol it runs against (:class:`Code`):

1. **Idle round.** Two server cores hold the same ``n`` stored lists (5 items each). One
   anti-entropy round is started at one and its messages carried to the other until
   quiet: bytes and messages per peer, CPU of each side (``time.process_time``; the
   sender's round and encoding, the receiver's decoding and handling), median of
   several rounds after a warm-up round.
2. **Repair.** ``k`` lists change on one side only (a propagation from a third server
   that never reached the second); one round started at the changed side, every message
   and write carried until quiet: bytes, messages, CPU of each side, wall time. Both
   sides must then hold equal digests for the changed lists, and a last round must be
   idle (one message).
3. **Start-up.** The real server process (``python -m reference_cluster.processes.server``)
   on a copy of a store holding ``n`` lists: seconds from spawn to its ``READY`` line,
   and its resident memory then (``VmRSS``) and at its peak (``VmHWM``).
4. **One edit** of a list of 10, 1,000 and 10,000 items, in process as the server shell
   handles it: a ``Forward`` decoded and applied by a ``ServerCore``, its ``Persist``
   committed with ``ServerStore.apply_many``, then ``persisted`` and the reply encoded.
   Server CPU, bytes the process wrote (``/proc/self/io`` ``wchar`` around the commit)
   and wall time from the frame to the encoded reply. The device joins each reply and,
   where the code offers it, sends its version back with the next edit (as the client
   core does), so the reply is what changed since.
5. **8-client throughput on growing lists.** A real local cluster (2 brokers, 3 servers);
   8 clients each add items one at a time to a list of their own until it holds
   ``--grow`` items; acknowledgements per second over the first and the last step of
   edits. Each request carries the version of the reply before it, where the code has
   one (as the client core sends it).

Stores of ``n`` lists are built once per code version and kept under ``--workdir``
(default ``~/.cache/dotted-crdts/bench-scale``): 10,000 lists per transaction with
``ServerStore.apply_many``; the time it took is shown. Each measurement works on a copy.

Run ``.venv/bin/python bench/scale.py --quick`` (1,000 and 10,000 lists, lists grown to
300 items: a few minutes), ``.venv/bin/python bench/scale.py`` for 1,000, 10,000 and
100,000 lists, ``--million`` to add 1,000,000 (after only: the before code's digests
message would exceed the wire limit). Every process is stopped by pid when its
measurement ends.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import inspect
import json
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

__all__ = [
    "Code",
    "ExchangeStats",
    "Overlay",
    "build_store",
    "carry",
    "list_id_of",
    "main",
    "measure_edits",
    "measure_lists",
    "sample_list",
    "worker",
]

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BEFORE_REV = "969c093"
NOW = 1000.0
"""The cores' clock in the in-process measurements (nothing here waits on it)."""
BUILD_BATCH = 10_000
REPAIR_KS = (1, 10, 100)
EDIT_SIZES = (10, 1_000, 10_000)
MAX_CARRIED = 10_000
"""Most messages one carried exchange may take before it is called runaway."""


# -- which code is this? -------------------------------------------------------------------


@attrs.frozen
class Code:
    """What the imported ``reference_cluster`` offers (the before and after code differ).

    Attributes:
        root: the folder the package was imported from.
        digests_protocol: anti-entropy sends every digest (``AeDigests``); else a tree.
        core_takes_store: ``ServerCore(..., store=...)`` exists (states on demand).
        replies_since: requests carry the version of the client's last reply
            (``SyncRequest.since``), so a reply can be the changes since.
        fingerprint: a hash of the storage and document code (names cached stores).
    """

    root: str
    digests_protocol: bool
    core_takes_store: bool
    replies_since: bool
    fingerprint: str

    @classmethod
    def detect(cls) -> Code:
        """Inspect the imported package."""
        import reference_cluster
        from reference_cluster.cores.server import ServerCore
        from reference_cluster.protocol import messages

        root = Path(reference_cluster.__file__).resolve().parent
        h = hashlib.sha256()
        files = [*sorted((root / "storage").glob("*.py")), root / "shopping_list.py"]
        for f in files:
            h.update(f.read_bytes())
        return cls(
            root=str(root.parent),
            digests_protocol=hasattr(messages, "AeDigests"),
            core_takes_store="store" in inspect.signature(ServerCore.__init__).parameters,
            replies_since="since" in attrs.fields_dict(messages.SyncRequest),
            fingerprint=h.hexdigest()[:12],
        )


# -- stored lists ---------------------------------------------------------------------------


def list_id_of(j: int) -> str:
    """The id of stored list number ``j`` (the same in every run and both codes)."""
    return str(uuid.UUID(int=(0x5CA1E << 96) | j, version=4))


def sample_list(j: int) -> Any:
    """Stored list number ``j``: five items added by one of 64 devices."""
    from reference_cluster.shopping_list import ShoppingList

    state = ShoppingList()
    replica = f"dev-{j % 64}"
    for name in ("milk", "bread", "eggs", "apples", f"thing {j}"):
        state.add_item(replica, name)
    return state


def build_store(path: Path, count: int, *, progress: Callable[[str], None]) -> float:
    """Write ``count`` sample lists into a new store at ``path`` (``BUILD_BATCH`` lists
    per transaction, one ``apply_many`` each); return the seconds it took."""
    from reference_cluster.shopping_list import ShoppingList
    from reference_cluster.storage.server_store import ServerStore

    start = time.perf_counter()
    for first in range(0, count, BUILD_BATCH):
        # A fresh store per batch: the store's own cache of decoded states stays small.
        store: Any = ServerStore(path, ShoppingList)
        try:
            last = min(count, first + BUILD_BATCH)
            written = store.apply_many((list_id_of(j), sample_list(j)) for j in range(first, last))
            if len(written) != last - first:
                raise RuntimeError(f"apply_many took {len(written)} of {last - first} lists")
        finally:
            store.close()
        if first and first % 100_000 == 0:
            progress(f"  built {first:,} of {count:,} lists")
    return time.perf_counter() - start


def cached_store(
    workdir: Path, code: Code, count: int, *, progress: Callable[[str], None]
) -> tuple[Path, float | None]:
    """A store of ``count`` sample lists for this code, built if missing.

    Returns:
        Its path (never written by a measurement: copy it first) and the seconds the
        build took, or None if it was already there.
    """
    path = workdir / f"lists-{code.fingerprint}-{count}.sqlite"
    if path.exists():
        return path, None
    workdir.mkdir(parents=True, exist_ok=True)
    part = path.with_suffix(".part")
    for suffix in ("", "-wal", "-shm"):
        Path(str(part) + suffix).unlink(missing_ok=True)
    progress(f"  building a store of {count:,} lists ...")
    seconds = build_store(part, count, progress=progress)
    for suffix in ("-wal", "-shm"):
        if Path(str(part) + suffix).exists():
            raise RuntimeError(f"{part}{suffix} left behind: the store was not closed")
    part.rename(path)
    progress(f"  built in {seconds:.1f} s")
    return path, seconds


# -- in-process cores -----------------------------------------------------------------------


class Overlay:
    """A list source for a server core (``digests``/``load``) that reads a shared store
    and keeps what the core persists in memory, so two cores can share one stored set of
    lists and still differ."""

    def __init__(self, base: Any, doc_type: type[Any]) -> None:
        self.base = base
        self.doc_type = doc_type
        self.states: dict[str, Any] = {}

    def digests(self) -> Mapping[str, str]:
        """The base's digests with this overlay's lists in place."""
        out = dict(self.base.digests())
        out.update((k, s.digest()) for k, s in self.states.items())
        return out

    def load(self, list_id: str) -> Any:
        """A fresh copy of the list's state, or None."""
        state = self.states.get(list_id)
        return state.copy() if state is not None else self.base.load(list_id)

    def persist(self, list_id: str, delta: Any) -> None:
        """Join a ``Persist`` effect's delta into the list."""
        state = self.load(list_id)
        if state is None:
            state = self.doc_type()
        state.join(delta)
        self.states[list_id] = state


@attrs.define
class ExchangeStats:
    """What one anti-entropy exchange cost.

    Attributes:
        messages: messages sent between the two cores, both ways.
        bytes: their encoded bytes.
        first_bytes: the bytes of the messages the initiator sent first (per peer).
        cpu: seconds of CPU per side (``"a"``, ``"b"``).
        wall: seconds from the round's start until quiet.
        kinds: messages by kind.
    """

    messages: int = 0
    bytes: int = 0
    first_bytes: int = 0
    cpu: dict[str, float] = attrs.field(factory=lambda: {"a": 0.0, "b": 0.0})
    wall: float = 0.0
    kinds: Counter[str] = attrs.field(factory=Counter)


def carry(
    cores: Mapping[str, Any],
    sources: Mapping[str, Overlay | None],
    names: Mapping[str, str],
    start: str,
) -> ExchangeStats:
    """Start an anti-entropy round at core ``start`` and carry every message and write
    between the cores until quiet, timing each side.

    Args:
        cores: ``{"a": core, "b": core}``.
        sources: where each side's ``Persist`` effects go (None: the core keeps its
            lists in memory).
        names: each side's server id.
        start: the side whose round starts.

    Raises:
        RuntimeError: more than ``MAX_CARRIED`` messages (a runaway exchange).
    """
    from reference_cluster.protocol.effects import Persist, Send
    from reference_cluster.protocol.messages import encode

    side_of = {v: k for k, v in names.items()}
    stats = ExchangeStats()
    queue: deque[tuple[str, str, bytes]] = deque()

    def take(side: str, effects: list[Any]) -> None:
        for effect in effects:
            if isinstance(effect, Persist):
                source = sources[side]
                if source is not None:
                    source.persist(effect.list_id, effect.delta)
                take(side, cores[side].persisted(effect.token, NOW))
            elif isinstance(effect, Send) and effect.to in side_of:
                data = encode(effect.message)
                queue.append((names[side], effect.to, data))
                stats.messages += 1
                stats.bytes += len(data)
                stats.kinds[effect.message.kind] += 1

    wall = time.perf_counter()
    cpu = time.process_time()
    take(start, cores[start]._anti_entropy_round(NOW))
    stats.cpu[start] += time.process_time() - cpu
    stats.first_bytes = stats.bytes
    for _ in range(MAX_CARRIED):
        if not queue:
            break
        src, dst, data = queue.popleft()
        side = side_of[dst]
        cpu = time.process_time()
        take(side, cores[side].receive(src, data, NOW))
        stats.cpu[side] += time.process_time() - cpu
    else:
        raise RuntimeError(f"the exchange did not end within {MAX_CARRIED} messages")
    stats.wall = time.perf_counter() - wall
    return stats


def _pair(code: Code, store_path: Path) -> tuple[dict[str, Any], dict[str, Overlay | None], Any]:
    """Two server cores ("s1" and "s2", peers of each other) holding the stored lists, as
    the real server builds them: from the store's digests (after) or from every state
    loaded (before). Returns the cores, their overlays and the store (to close)."""
    from reference_cluster.cores.server import ServerCore
    from reference_cluster.shopping_list import ShoppingList
    from reference_cluster.storage.server_store import ServerStore

    store: Any = ServerStore(store_path, ShoppingList)
    cores: dict[str, Any] = {}
    sources: dict[str, Overlay | None] = {}
    if code.core_takes_store:
        for side, name, peer in (("a", "s1", "s2"), ("b", "s2", "s1")):
            source = Overlay(store, ShoppingList)
            sources[side] = source
            cores[side] = ServerCore(
                name,
                ShoppingList,
                peers=[peer],
                brokers=[],
                store=source,
                rng=random.Random(1),
            )
    else:
        lists = store.load_all()
        for side, name, peer in (("a", "s1", "s2"), ("b", "s2", "s1")):
            sources[side] = None
            cores[side] = ServerCore(
                name, ShoppingList, peers=[peer], brokers=[], lists=lists, rng=random.Random(1)
            )
        del lists
        store.close()  # the before code's cores never read the store again
        store = None
    return cores, sources, store


def _change(core: Any, source: Overlay | None, list_id: str, tag: str) -> None:
    """Change one list at ``core`` as a propagation from a third server would (a new
    item by a device no list has seen), and persist it."""
    from reference_cluster.protocol.effects import Persist
    from reference_cluster.protocol.messages import Propagate

    state = core.state(list_id)
    delta = state.add_item("bench-writer", f"extra {tag}")
    effects = core.receive_message("s3", Propagate("s3", list_id, delta.to_dict()), NOW)
    persists = [e for e in effects if isinstance(e, Persist)]
    if len(persists) != 1:
        raise RuntimeError(f"a propagated change gave {effects!r}, expected one write")
    if source is not None:
        source.persist(list_id, persists[0].delta)
    core.persisted(persists[0].token, NOW)


def measure_lists(
    code: Code, store_path: Path, count: int, *, idle_rounds: int, repeats: int
) -> dict[str, Any]:
    """The idle round and the repairs between two cores holding ``count`` stored lists."""
    names = {"a": "s1", "b": "s2"}
    cpu, wall = time.process_time(), time.perf_counter()
    cores, sources, store = _pair(code, store_path)
    out: dict[str, Any] = {
        "build_cores_cpu": time.process_time() - cpu,
        "build_cores_wall": time.perf_counter() - wall,
    }
    try:
        carry(cores, sources, names, "a")  # warm-up: digests computed, caches filled
        idle = [carry(cores, sources, names, "a") for _ in range(idle_rounds)]
        for s in idle:
            if s.messages != 1:
                raise RuntimeError(f"an idle round took {s.messages} messages: {s.kinds}")
        out["idle"] = {
            "bytes": statistics.median(s.first_bytes for s in idle),
            "messages": statistics.median(s.messages for s in idle),
            "cpu_sender": statistics.median(s.cpu["a"] for s in idle),
            "cpu_receiver": statistics.median(s.cpu["b"] for s in idle),
            "rounds": idle_rounds,
        }
        rng = random.Random(13)
        repairs: dict[str, Any] = {}
        for k in REPAIR_KS:
            if k > count:
                continue
            runs = []
            for rep in range(repeats):
                changed = [list_id_of(j) for j in rng.sample(range(count), k)]
                for list_id in changed:
                    _change(cores["a"], sources["a"], list_id, f"{k}-{rep}")
                stats = carry(cores, sources, names, "a")
                a_digests = [cores["a"].digest(x) for x in changed]
                b_digests = [cores["b"].digest(x) for x in changed]
                if a_digests != b_digests:
                    raise RuntimeError(f"k={k}: the changed lists differ after one round")
                runs.append(stats)
            repairs[str(k)] = {
                "bytes": statistics.median(s.bytes for s in runs),
                "messages": statistics.median(s.messages for s in runs),
                "cpu_a": statistics.median(s.cpu["a"] for s in runs),
                "cpu_b": statistics.median(s.cpu["b"] for s in runs),
                "wall": statistics.median(s.wall for s in runs),
                "kinds": dict(runs[0].kinds),
                "repeats": repeats,
            }
        last = carry(cores, sources, names, "a")
        if last.messages != 1:
            raise RuntimeError(f"the round after the repairs was not idle: {dict(last.kinds)}")
        out["repair"] = repairs
    finally:
        if store is not None:
            store.close()
    return out


# -- start-up of the real server --------------------------------------------------------------


def _status_kb(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop one process we started, by its pid."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(15)


def start_server(store: Path, log: Path, *, timeout: float) -> dict[str, float]:
    """Start the real server process on ``store``, wait for its READY line, read its
    memory and stop it.

    Returns:
        ``seconds`` to READY, ``rss_mb`` then, ``peak_mb`` (VmHWM) and ``lists``.

    Raises:
        RuntimeError: it ended or printed no READY line within ``timeout``.
    """
    argv = [
        sys.executable,
        "-m",
        "reference_cluster.processes.server",
        "--id",
        "s1",
        "--store",
        str(store),
        "--bind",
        "tcp://127.0.0.1:*",
        "--broker",
        "tcp://127.0.0.1:9",
        "--no-peers",
        "--insecure",
        "--log-level",
        "WARNING",
    ]
    with open(log, "ab") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, process_group=0
        )
        try:
            info = _read_ready(proc, timeout)
            seconds = time.perf_counter() - start
            mem = _status_kb(proc.pid)
        finally:
            _stop(proc)
    return {
        "seconds": seconds,
        "rss_mb": mem["VmRSS"] / 1024,
        "peak_mb": mem["VmHWM"] / 1024,
        "lists": float(info.get("lists", -1)),
    }


def _read_ready(proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    """The READY line's fields (a server's first line on standard output)."""
    from raw_hop import read_line

    line = read_line(proc, timeout)
    if not line.startswith("READY "):
        raise RuntimeError(f"server pid {proc.pid} printed {line[:80]!r} instead of READY")
    info: dict[str, Any] = json.loads(line[6:])
    return info


def measure_startup(store_path: Path, scratch: Path, *, repeats: int) -> dict[str, Any]:
    """Median start-up of the real server on a fresh copy of the store, ``repeats``
    times (the first run also warms the page cache)."""
    runs = []
    for i in range(repeats):
        copy = scratch / f"startup-{i}.sqlite"
        shutil.copyfile(store_path, copy)
        try:
            runs.append(start_server(copy, scratch / "server.log", timeout=600.0))
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(str(copy) + suffix).unlink(missing_ok=True)
    return {
        "seconds": statistics.median(r["seconds"] for r in runs),
        "rss_mb": statistics.median(r["rss_mb"] for r in runs),
        "peak_mb": statistics.median(r["peak_mb"] for r in runs),
        "lists": runs[0]["lists"],
        "repeats": repeats,
    }


# -- one edit of a big list -------------------------------------------------------------------


def _wchar() -> int:
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("wchar:"):
                return int(line.split()[1])
    raise RuntimeError("no wchar in /proc/self/io")


def _filled(replica: str, items: int) -> Any:
    from reference_cluster.shopping_list import ShoppingList

    state = ShoppingList()
    for k in range(items):
        state.add_item(replica, f"thing {k}")
    state.seal()
    return state


def _one_edit(
    core: Any,
    store: Any,
    client: Any,
    *,
    size: int,
    list_id: str,
    i: int,
    since: dict[str, Any],
    wal: Path,
) -> tuple[dict[str, float], Any]:
    """Edit ``i`` of the device's list, as the server shell handles it: its costs, and the
    reply."""
    from reference_cluster.protocol.effects import Persist, Send
    from reference_cluster.protocol.messages import (
        Deliver,
        Forward,
        SyncReply,
        SyncRequest,
        decode,
        encode,
    )

    delta = client.set_quantity("dev", f"thing {(i * 7) % size}", i % 9 + 1)
    client.seal()
    request = SyncRequest(
        request_id=f"e{i}",
        list_id=list_id,
        replica="dev",
        attempt=0,
        context=client.context.to_dict(),
        delta=delta.to_dict(),
        token=None,
        **since,
    )
    frame = encode(Forward("c1", request))
    wal_before = wal.stat().st_size if wal.exists() else 0
    w0, c0 = time.perf_counter(), time.process_time()
    effects = core.receive("b0", frame, NOW)
    sent = [encode(e.message) for e in effects if isinstance(e, Send)]
    persists = [e for e in effects if isinstance(e, Persist)]
    io0 = _wchar()
    store.apply_many((p.list_id, p.delta) for p in persists)
    io1 = _wchar()
    for p in persists:
        sent.extend(encode(e.message) for e in core.persisted(p.token, NOW) if isinstance(e, Send))
    c1, w1 = time.process_time(), time.perf_counter()
    replies = [m for d in sent if isinstance(m := decode(d), Deliver)]
    if not (
        len(persists) == 1
        and len(replies) == 1
        and isinstance(replies[0].reply, SyncReply)
        and replies[0].reply.request_id == f"e{i}"
    ):
        raise RuntimeError(f"edit {i} of a {size}-item list was not acknowledged")
    costs = {
        "cpu": c1 - c0,
        "wall": w1 - w0,
        "wchar": io1 - io0,
        "wal_growth": (wal.stat().st_size if wal.exists() else 0) - wal_before,
    }
    return costs, replies[0].reply


def measure_edits(
    code: Code, scratch: Path, *, sizes: Sequence[int], edits: int, warmup: int
) -> dict[str, Any]:
    """Per list size: the server's cost of one client edit (see the module notes)."""
    from reference_cluster.cores.server import ServerCore
    from reference_cluster.shopping_list import ShoppingList
    from reference_cluster.storage.server_store import ServerStore

    out: dict[str, Any] = {}
    for size in sizes:
        path = scratch / f"edit-{size}.sqlite"
        store: Any = ServerStore(path, ShoppingList)
        try:
            client = _filled("dev", size)
            list_id = list_id_of(size)
            store.apply_delta(list_id, client.copy(), owner="u-bench")
            common: dict[str, Any] = {
                "peers": ["s2", "s3"],
                "brokers": ["b0"],
                "rng": random.Random(1),
            }
            if "write_quorum" in inspect.signature(ServerCore).parameters:
                # One server's cost: acknowledged on its own durable write (W = 1), as
                # every code before the write quorum did; no peer answers here.
                common["write_quorum"] = 1
            if code.core_takes_store:
                core: Any = ServerCore("s1", ShoppingList, store=store, **common)
            else:
                core = ServerCore("s1", ShoppingList, lists=store.load_all(), **common)
            wal = Path(str(path) + "-wal")
            measured: dict[str, list[float]] = {}
            since: dict[str, Any] = {}
            for i in range(warmup + edits):
                costs, reply = _one_edit(
                    core, store, client, size=size, list_id=list_id, i=i, since=since, wal=wal
                )
                if reply.delta is not None:
                    client.join(ShoppingList.from_dict(reply.delta))
                if code.replies_since:  # as the client core does (its Rule 5)
                    since = {"since": reply.version}
                if i >= warmup:
                    for key, value in costs.items():
                        measured.setdefault(key, []).append(value)
            stored = store.load(list_id)
            if stored is None or stored.digest() != client.digest():
                raise RuntimeError(f"the stored {size}-item list is not the client's")
            if code.replies_since and core.replies_since < edits:
                raise RuntimeError("the replies were not the changes since the last version")
            out[str(size)] = {k: statistics.median(v) for k, v in measured.items()}
            out[str(size)]["edits"] = edits
        finally:
            store.close()
    return out


# -- 8 clients on growing lists ---------------------------------------------------------------


def _add_new_item(state: Any, replica: str, i: int) -> Any:
    """Edit ``i`` of a growing list: one new item."""
    return state.add_item(replica, f"thing {i}")


def _pull(token: str, list_id: str, replica: str) -> bytes:
    from reference_cluster.protocol.messages import SyncRequest, encode

    request = SyncRequest(uuid.uuid4().hex[:12], list_id, replica, 0, None, None, token)
    return encode(request)


def measure_throughput(scratch: Path, *, clients: int, grow: int, step: int) -> dict[str, Any]:
    """8 clients grow their lists to ``grow`` items through a real cluster; the
    acknowledgements per second of every ``step`` edits per client."""
    sys.path.insert(0, str(HERE))
    from cluster import (
        check_pairs,
        drive_steps,
        edit_frames,
        lists_on,
        local_cluster,
        signed_up_client,
    )

    series = []
    with local_cluster(scratch / "cluster") as cluster:
        client = signed_up_client(
            scratch, "scale", cluster.layout.frontends, broker_key=cluster.broker_key
        )
        try:
            token = client.core.token
            assert token is not None
            lists = lists_on("s1", cluster.servers, clients)
            # A session belongs to one device: every list is edited by the client's.
            replica = client.core.replica
            frames = [edit_frames(token, k, replica, grow, _add_new_item) for k in lists]
            steps = [[f[first : first + step] for f in frames] for first in range(0, grow, step)]
            done = drive_steps(
                cluster.layout.frontend(0),
                steps,
                broker_key=cluster.broker_key,
                warmup=[_pull(token, k, replica) for k in lists],
                since=True,
            )
            for i, (stats, pairs) in enumerate(done):
                check_pairs(pairs)
                series.append({"items": (i + 1) * step, "per_second": stats.per_second})
        finally:
            client.close()
    return {
        "start": series[0]["per_second"],
        "end": series[-1]["per_second"],
        "series": series,
        "clients": clients,
        "grow": grow,
        "step": step,
    }


# -- the worker: one measurement with the code on sys.path -------------------------------------


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """Run one task with whatever ``reference_cluster`` imports; return its figures."""
    code = Code.detect()
    expected = Path(args.expect_root).resolve() if args.expect_root else None
    if expected is not None and Path(code.root) != expected:
        raise RuntimeError(f"imported reference_cluster from {code.root}, expected {expected}")
    workdir = Path(args.workdir)
    scratch = Path(tempfile.mkdtemp(prefix="scale-", dir=workdir))

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    out: dict[str, Any] = {"code": attrs.asdict(code), "task": args.task}
    try:
        if args.task == "lists":
            path, built = cached_store(workdir, code, args.size, progress=progress)
            out["size"] = args.size
            out["build_seconds"] = built
            copy = scratch / "lists.sqlite"
            shutil.copyfile(path, copy)
            if args.startup_repeats:
                progress("  start-up ...")
                out["startup"] = measure_startup(path, scratch, repeats=args.startup_repeats)
            progress("  idle and repair rounds ...")
            out.update(
                measure_lists(
                    code, copy, args.size, idle_rounds=args.idle_rounds, repeats=args.repeats
                )
            )
        elif args.task == "edit":
            out["edit"] = measure_edits(code, scratch, sizes=EDIT_SIZES, edits=args.edits, warmup=3)
        elif args.task == "throughput":
            out["throughput"] = measure_throughput(
                scratch, clients=8, grow=args.grow, step=args.step
            )
        else:
            raise ValueError(f"unknown task {args.task!r}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return out


# -- the orchestrator ---------------------------------------------------------------------------


@contextlib.contextmanager
def before_tree(rev: str) -> Iterator[Path]:
    """The ``crdts`` and ``reference_cluster`` packages of commit ``rev`` in a temporary
    folder (read with ``git archive``: the working tree and the index are not touched)."""
    with tempfile.TemporaryDirectory(prefix="scale-before-") as tmp:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", rev, "crdts", "reference_cluster"],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        yield Path(tmp)


def run_worker(
    root: Path, task: str, workdir: Path, extra: Sequence[str], *, timeout: float
) -> dict[str, Any]:
    """Run ``task`` in a fresh interpreter that imports the packages under ``root``;
    its figures, or ``{"error": why}``."""
    with tempfile.TemporaryDirectory(prefix="scale-out-") as tmp:
        out = Path(tmp) / "out.json"
        argv = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--worker",
            task,
            "--workdir",
            str(workdir),
            "--out",
            str(out),
            "--expect-root",
            str(root),
            *extra,
        ]
        env = dict(os.environ, PYTHONPATH=str(root))
        # Not the repository as the working folder: ``python -m`` puts it first on the
        # path, which would shadow the before code in the servers it starts.
        proc = subprocess.Popen(argv, env=env, cwd=tmp, process_group=0)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _stop(proc)
            return {"error": f"{task} took longer than {timeout:.0f} s"}
        finally:
            _stop(proc)
        if code != 0 or not out.exists():
            return {"error": f"{task} failed (exit status {code}); see the messages above"}
        result: dict[str, Any] = json.loads(out.read_text())
        return result


# -- tables -------------------------------------------------------------------------------------


def _ratio(before: float | None, after: float | None) -> str:
    if before is None or after is None or before <= 0:
        return ""
    r = after / before
    if r == 0:
        return "0x"
    if r < 0.01:
        return f"{r:.4f}x (1/{1 / r:,.0f})"
    return f"{r:.3g}x"


def _get(data: Mapping[str, Any], *path: str) -> Any:
    node: Any = data
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def _fmt(value: Any, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "B":
        return f"{value:,.0f} B"
    if unit == "ms":
        return f"{value * 1000:,.2f} ms" if value < 0.1 else f"{value * 1000:,.0f} ms"
    if unit == "s":
        return f"{value:,.2f} s"
    if unit == "MB":
        return f"{value:,.0f} MB"
    if unit == "/s":
        return f"{value:,.0f}/s"
    return f"{value:,.0f}"


def tables(results: Mapping[str, Any], sizes: Sequence[int]) -> list[str]:
    """The before / after / ratio table (markdown lines); ratio is after / before."""
    lines = ["| measurement | before | after | ratio (after / before) |", "|---|---:|---:|---:|"]

    def row(label: str, unit: str, *path: str) -> None:
        b = _get(results, "before", *path)
        a = _get(results, "after", *path)
        err_b = _get(results, "before", path[0], "error")
        err_a = _get(results, "after", path[0], "error")
        tb = "failed" if err_b else _fmt(b, unit)
        ta = "failed" if err_a else _fmt(a, unit)
        lines.append(f"| {label} | {tb} | {ta} | {_ratio(b, a)} |")

    for n in sizes:
        key = f"lists-{n}"
        row(f"idle round, {n:,} lists: bytes per peer", "B", key, "idle", "bytes")
        row(f"idle round, {n:,} lists: messages per peer", "", key, "idle", "messages")
        row(f"idle round, {n:,} lists: sender CPU", "ms", key, "idle", "cpu_sender")
        row(f"idle round, {n:,} lists: receiver CPU", "ms", key, "idle", "cpu_receiver")
    for n in sizes:
        key = f"lists-{n}"
        for k in REPAIR_KS:
            base = (key, "repair", str(k))
            row(f"repair {k} of {n:,} lists: bytes", "B", *base, "bytes")
            row(f"repair {k} of {n:,} lists: messages", "", *base, "messages")
            row(f"repair {k} of {n:,} lists: CPU, changed side", "ms", *base, "cpu_a")
            row(f"repair {k} of {n:,} lists: CPU, other side", "ms", *base, "cpu_b")
            row(f"repair {k} of {n:,} lists: time to repair", "ms", *base, "wall")
    for n in sizes:
        key = f"lists-{n}"
        row(f"start-up, {n:,} lists: time to READY", "s", key, "startup", "seconds")
        row(f"start-up, {n:,} lists: RSS at READY", "MB", key, "startup", "rss_mb")
        row(f"start-up, {n:,} lists: peak RSS", "MB", key, "startup", "peak_mb")
    for n in sizes:
        row(f"building the store of {n:,} lists", "s", f"lists-{n}", "build_seconds")
    for size in EDIT_SIZES:
        base = ("edit", "edit", str(size))
        row(f"one edit, {size:,}-item list: server CPU", "ms", *base, "cpu")
        row(f"one edit, {size:,}-item list: bytes written", "B", *base, "wchar")
        row(f"one edit, {size:,}-item list: round trip in process", "ms", *base, "wall")
    grow = _get(results, "after", "throughput", "throughput", "grow")
    row("8 clients, lists growing: acks/s at the start", "/s", "throughput", "throughput", "start")
    row(
        f"8 clients, lists growing: acks/s at {grow} items", "/s", "throughput", "throughput", "end"
    )
    return lines


def targets(results: Mapping[str, Any], sizes: Sequence[int]) -> list[str]:
    """Issue 13's targets against the figures (markdown lines)."""
    a = results.get("after", {})
    b = results.get("before", {})
    big, small = max(sizes), min(sizes)
    lines = ["| target | measured | |", "|---|---|---|"]

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("met" if ok else "not met")

    def line(text: str, measured: str, ok: bool | None) -> None:
        lines.append(f"| {text} | {measured} | {verdict(ok)} |")

    ib = _get(b, f"lists-{big}", "idle")
    ia = _get(a, f"lists-{big}", "idle")
    i1 = _get(a, f"lists-{small}", "idle")
    if ib and ia:
        rb = ia["bytes"] / ib["bytes"]
        cb = (ia["cpu_sender"] + ia["cpu_receiver"]) / (ib["cpu_sender"] + ib["cpu_receiver"])
        line(
            f"idle round at {big:,} lists <= 1/100 of before (bytes, CPU)",
            f"bytes {rb:.2g}x, CPU {cb:.2g}x",
            rb <= 0.01 and cb <= 0.01,
        )
    if ia and i1:
        rb = ia["bytes"] / i1["bytes"]
        cpu_big = ia["cpu_sender"] + ia["cpu_receiver"]
        cpu_small = i1["cpu_sender"] + i1["cpu_receiver"]
        line(
            f"idle round at {big:,} lists within 2x of {small:,} lists",
            f"bytes {rb:.2f}x, CPU {cpu_big / cpu_small:.2f}x",
            rb <= 2 and cpu_big / cpu_small <= 2,
        )
    per = []
    for n in sizes:
        depth = max(1, math.ceil(math.log(n, 16)))
        for k in REPAIR_KS:
            r = _get(a, f"lists-{n}", "repair", str(k))
            if r:
                per.append((n, k, r["bytes"] / (k * depth)))
    if per:
        lo, hi = min(p[2] for p in per), max(p[2] for p in per)
        line(
            "repairing k lists costs O(k log lists) bytes",
            f"bytes / (k x log16 lists) from {lo:,.0f} to {hi:,.0f} over every k and size",
            hi <= 4 * lo,
        )
    st = _get(a, f"lists-{big}", "startup")
    if st:
        line(
            f"start-up at {big:,} lists < 3 s and RSS < 200 MB",
            f"{st['seconds']:.2f} s, {st['rss_mb']:.0f} MB (peak {st['peak_mb']:.0f} MB)",
            st["seconds"] < 3 and st["rss_mb"] < 200,
        )
    e = _get(a, "edit", "edit")
    if e and "10" in e and "10000" in e:
        x, y = e["10000"], e["10"]
        ratios = {
            "CPU": x["cpu"] / y["cpu"],
            "bytes written": x["wchar"] / max(1, y["wchar"]),
            "round trip": x["wall"] / y["wall"],
        }
        line(
            "one edit of 10,000 items within 2x of 10 items",
            ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()),
            all(v <= 2 for v in ratios.values()),
        )
    t = _get(a, "throughput", "throughput")
    if t:
        line(
            f"8-client throughput at {t['grow']} items within 2x of its start",
            f"{t['start']:,.0f}/s -> {t['end']:,.0f}/s ({t['end'] / t['start']:.2f}x)",
            t["end"] * 2 >= t["start"],
        )
    return lines


# -- command line --------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 and 10,000 lists only")
    parser.add_argument("--million", action="store_true", help="add 1,000,000 lists")
    parser.add_argument("--sizes", help="comma-separated list counts (overrides the above)")
    parser.add_argument(
        "--workdir",
        default=str(Path.home() / ".cache" / "dotted-crdts" / "bench-scale"),
        help="where built stores are kept between runs (default %(default)s)",
    )
    parser.add_argument("--before", default=BEFORE_REV, help="the before commit (%(default)s)")
    parser.add_argument("--no-before", action="store_true", help="measure this tree only")
    parser.add_argument(
        "--only", choices=["lists", "edit", "throughput"], help="one group of measurements"
    )
    parser.add_argument("--json", help="also write every figure to this file")
    parser.add_argument("--grow", type=int, help="items the 8 clients' lists grow to")
    # Worker options (one task, with the code on PYTHONPATH).
    parser.add_argument("--worker", choices=["lists", "edit", "throughput"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--expect-root", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=1000, help=argparse.SUPPRESS)
    parser.add_argument("--idle-rounds", type=int, default=5, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=3, help=argparse.SUPPRESS)
    parser.add_argument("--startup-repeats", type=int, default=3, help=argparse.SUPPRESS)
    parser.add_argument("--edits", type=int, default=20, help=argparse.SUPPRESS)
    parser.add_argument("--step", type=int, default=100, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Measure both codes and print the table (or, as a worker, one task's JSON)."""
    args = _parser().parse_args(argv)
    if args.worker:
        args.task = args.worker
        result = worker(args)
        Path(args.out).write_text(json.dumps(result))
        return 0
    if args.sizes:
        sizes = [int(x) for x in args.sizes.split(",")]
    elif args.quick:
        sizes = [1_000, 10_000]
    else:
        sizes = [1_000, 10_000, 100_000] + ([1_000_000] if args.million else [])
    grow = args.grow or (300 if args.quick else 1000)
    step = max(1, grow // 10)
    edits = 10 if args.quick else 20
    workdir = Path(args.workdir).expanduser().resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results: dict[str, dict[str, Any]] = {"before": {}, "after": {}}
    with contextlib.ExitStack() as stack:
        roots = {"after": REPO}
        if not args.no_before:
            roots["before"] = stack.enter_context(before_tree(args.before))
        for side, root in roots.items():
            print(f"{side}: {root}", file=sys.stderr, flush=True)
        if args.only in (None, "lists"):
            for n in sizes:
                for side, root in roots.items():
                    if side == "before" and n > 200_000:
                        results[side][f"lists-{n}"] = {
                            "error": "not run: the digests message would exceed the 64 MB limit"
                        }
                        continue
                    print(f"{side}: {n:,} lists", file=sys.stderr, flush=True)
                    extra = ["--size", str(n)]
                    if n >= 100_000 and side == "before":
                        extra += ["--idle-rounds", "3", "--repeats", "2"]
                    results[side][f"lists-{n}"] = run_worker(
                        root, "lists", workdir, extra, timeout=7200.0
                    )
        if args.only in (None, "edit"):
            for side, root in roots.items():
                print(f"{side}: one edit of a big list", file=sys.stderr, flush=True)
                results[side]["edit"] = run_worker(
                    root, "edit", workdir, ["--edits", str(edits)], timeout=1800.0
                )
        if args.only in (None, "throughput"):
            for side, root in roots.items():
                print(f"{side}: 8 clients on growing lists", file=sys.stderr, flush=True)
                results[side]["throughput"] = run_worker(
                    root,
                    "throughput",
                    workdir,
                    ["--step", str(step), "--grow", str(grow)],
                    timeout=1800.0,
                )
    elapsed = time.perf_counter() - started
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, sort_keys=True))
    print("\n".join(tables(results, sizes)))
    print()
    print("\n".join(targets(results, sizes)))
    print(f"\n(measured in {elapsed / 60:.1f} minutes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
