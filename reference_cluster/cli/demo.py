"""``shoplist demo``: a real cluster on this machine, partitioned and healed.

It starts 2 brokers and 3 servers (each its own process, stores in a temporary
directory) and 3 client agents (alice, bob, carol: processes with their own device
stores). Every link between two processes goes through a
:class:`~reference_cluster.processes.linkproxy.LinkProxy`, so the demo can cut links without
privileges. The story:

1. alice creates a list and shares its id; bob and carol open it;
2. the three edit it at the same time;
3. the cluster splits: {b0, s1, alice} | {b1, s2, s3, bob}, and carol goes offline;
   each side edits (conflicting on purpose) and carol edits offline;
4. every link heals; the demo waits until all six replicas (3 servers, 3 clients) hold
   the same list, and prints them side by side with their digests and the timings.

It exits 0 only if every replica converged to the expected list. Every process it
started is stopped by pid, also on Ctrl-C or an error.
"""

from __future__ import annotations

import json
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from reference_cluster.errors import ClusterError
from reference_cluster.processes.cluster import (
    AgentError,
    ClientAgent,
    LocalCluster,
    Timing,
    free_base_port,
)
from reference_cluster.processes.config import LocalLayout
from reference_cluster.shopping_list import ShoppingList

__all__ = ["EXPECTED", "run_demo"]

TIMING = Timing(heartbeat=0.25, anti_entropy=0.5, liveness=1.0, zmq_heartbeat=0.5)
SYNC_INTERVAL = 0.5
CONVERGE_WITHIN = 30.0
PASSWORD = "demo-password-1"

EXPECTED: Mapping[str, Any] = {
    "name": "Party",
    "items": {
        "apples": {"quantity": 6, "bought": False},
        "bread": {"quantity": 1, "bought": False},
        "chips": {"quantity": 3, "bought": False},
        "eggs": {"quantity": 10, "bought": True},
        "milk": {"quantity": 4, "bought": False},
    },
    "deleted": False,
}
"""The list every replica must hold at the end (see the story in the module notes)."""

WHY = (
    "bread 1: alice's remove did not see bob's +1, so the +1 survives",
    "milk 4: alice's set to 4 saw the earlier +1 and +2",
    "eggs 10, bought: carol's -2 (offline) and bob's mark both count",
    "name 'Party': concurrent renames are both kept; the first alphabetically shows",
)


class DemoFailed(RuntimeError):
    """The demo could not finish (a process failed, or no convergence in time)."""


class _Demo:
    def __init__(self, data_dir: Path, *, as_json: bool, keep: bool) -> None:
        self.data_dir = data_dir
        self.as_json = as_json
        self.keep = keep
        self.t0 = time.monotonic()
        self.cluster = LocalCluster(
            data_dir,
            layout=LocalLayout("127.0.0.1", free_base_port()),
            timing=TIMING,
            proxies=True,
            quiet=True,
        )
        self.agents: dict[str, ClientAgent] = {}
        self.list_id = ""
        self.latencies: dict[str, list[float]] = {"healthy": [], "partitioned": []}
        self.phase = "healthy"
        self.timings: dict[str, float] = {}

    # -- output ---------------------------------------------------------------------------

    def say(self, text: str) -> None:
        if not self.as_json:
            print(f"[{time.monotonic() - self.t0:5.1f}s] {text}", flush=True)

    def detail(self, text: str) -> None:
        if not self.as_json:
            print(f"        {text}", flush=True)

    # -- steps ----------------------------------------------------------------------------

    def start(self) -> None:
        self.cluster.start()
        self.timings["cluster_start_s"] = time.monotonic() - self.t0
        self.say(
            "cluster up: brokers b0 b1, servers s1 s2 s3 (own processes; every link "
            "encrypted (CURVE) and through a proxy the demo can cut)"
        )
        fate = (
            "kept at exit"
            if self.keep
            else "deleted at exit unless the demo fails; --keep keeps it"
        )
        self.detail(f"data and logs: {self.data_dir} ({fate})")
        for name in ("alice", "bob", "carol"):
            self.agents[name] = ClientAgent(
                name,
                self.data_dir / f"{name}.sqlite",
                self.cluster.client_brokers(name),
                broker_key=self.cluster.broker_key,
                log=self.data_dir / "logs" / f"{name}.log",
                sync_interval=SYNC_INTERVAL,
                zmq_heartbeat=TIMING.zmq_heartbeat,
            )
        self.all("signup", lambda n: {"name": n, "password": PASSWORD})
        self.say("alice, bob and carol started (client processes) and signed up")

    def all(self, op: str, fields: Any, names: Iterable[str] | None = None) -> dict[str, Any]:
        """Send ``op`` to several agents at once and wait for every answer."""
        chosen = list(names or self.agents)
        ids = {n: self.agents[n].begin(op, **fields(n)) for n in chosen}
        return {n: self.agents[n].wait(i) for n, i in ids.items()}

    def edit(self, who: str, action: str, *, wait: bool = True, **fields: Any) -> int:
        """Start an edit at ``who``; return the command id (see :meth:`finish`)."""
        return self.agents[who].begin(
            "edit", list=self.list_id, action=action, wait=wait, timeout=10.0, **fields
        )

    def finish(self, started: Mapping[tuple[str, int], Any]) -> None:
        for (who, command_id), _ in started.items():
            answer = self.agents[who].wait(command_id)
            if "ms" in answer and answer.get("acked"):
                self.latencies[self.phase].append(float(answer["ms"]))

    def share(self) -> None:
        alice = self.agents["alice"]
        self.list_id = alice.call("create", name="Weekend")["list_id"]
        started = {
            ("alice", self.edit("alice", "add", item=item, qty=qty)): None
            for item, qty in (("milk", 2), ("eggs", 12), ("bread", 1))
        }
        self.finish(started)
        self.agents["alice"].call("share", list=self.list_id, users=["bob", "carol"])
        self.all("open", lambda _n: {"list": self.list_id}, ["bob", "carol"])
        self.all("sync", lambda _n: {"timeout": 10.0}, ["bob", "carol"])
        self.say(f"alice created 'Weekend' [{self.list_id[:8]}]: milk 2, eggs 12, bread 1")
        self.detail("she shared it with bob and carol (its members now); they opened it")

    def concurrent(self) -> None:
        started = {
            ("alice", self.edit("alice", "change", item="milk", by=1)): None,
            ("bob", self.edit("bob", "change", item="milk", by=2)): None,
            ("carol", self.edit("carol", "add", item="apples", qty=6)): None,
        }
        self.finish(started)
        self.say("all at once: alice milk +1, bob milk +2, carol adds 6 apples")
        t = time.monotonic()
        deadline = t + CONVERGE_WITHIN
        while len({r["digest"] for r in self.replicas()}) != 1:
            if time.monotonic() > deadline:
                raise DemoFailed("the replicas did not agree before the partition")
            self.all("sync", lambda _n: {"timeout": 5.0})
        self.detail(f"all 6 replicas agree {time.monotonic() - t:.2f}s later (milk 5, apples 6)")

    def partition(self) -> None:
        c = self.cluster
        t = time.monotonic()
        c.partition([{"b0", "s1", "alice"}, {"b1", "s2", "s3", "bob"}])
        c.isolate("carol")
        c.wait_for_servers(["s1"], brokers=["b0"], timeout=15.0)
        c.wait_for_servers(["s2", "s3"], brokers=["b1"], timeout=15.0)
        self.timings["partition_noticed_s"] = time.monotonic() - t
        self.phase = "partitioned"
        self.say(
            "partition: {b0, s1, alice} | {b1, s2, s3, bob}, carol offline "
            f"(brokers noticed in {self.timings['partition_noticed_s']:.1f}s)"
        )
        started = {
            ("alice", self.edit("alice", "remove", item="bread")): None,
            ("alice", self.edit("alice", "set", item="milk", qty=4)): None,
            ("alice", self.edit("alice", "rename", name="Weekend BBQ")): None,
            ("bob", self.edit("bob", "change", item="bread", by=1)): None,
            ("bob", self.edit("bob", "buy", item="eggs")): None,
            ("bob", self.edit("bob", "rename", name="Party")): None,
            ("carol", self.edit("carol", "add", item="chips", qty=3, wait=False)): None,
            ("carol", self.edit("carol", "change", item="eggs", by=-2, wait=False)): None,
        }
        self.finish(started)
        self.say("side A: alice removes bread, sets milk to 4, renames the list 'Weekend BBQ'")
        self.detail("side B: bob adds 1 bread, marks eggs bought, renames it 'Party'")
        self.detail("offline: carol adds 3 chips and takes 2 eggs off")
        replicas = self.replicas()
        digests = {r["digest"] for r in replicas}
        if len(digests) > 1:
            self.say(f"the replicas now disagree: {len(digests)} different states")
        else:
            self.say("the replicas still hold one state")
        self.table(replicas)

    def heal(self) -> None:
        self.cluster.heal()
        healed = time.monotonic()
        self.say("heal: every link is back")
        deadline = healed + CONVERGE_WITHIN
        replicas = self.replicas()
        while not _converged(replicas):
            if time.monotonic() > deadline:
                self.table(replicas)
                raise DemoFailed(f"no convergence within {CONVERGE_WITHIN:g}s of the heal")
            time.sleep(0.05)
            replicas = self.replicas()
        self.timings["converged_after_heal_s"] = time.monotonic() - healed
        self.say(
            f"converged {self.timings['converged_after_heal_s']:.2f}s after the heal: "
            f"all {len(replicas)} replicas hold the same list"
        )
        self.table(replicas)
        for line in WHY:
            self.detail(line)
        self.final = replicas

    # -- replicas -------------------------------------------------------------------------

    def replicas(self) -> list[dict[str, Any]]:
        out = []
        for name in self.cluster.servers:
            status = self.cluster.server_status(name, states=True, timeout=2.0)
            if status is None:
                raise DemoFailed(f"server {name} does not answer")
            encoded = status.states.get(self.list_id)
            value = None
            if encoded is not None:
                value = ShoppingList.from_dict(encoded).value
            out.append(
                {
                    "replica": name,
                    "role": "server",
                    "digest": status.digests.get(self.list_id, "-"),
                    "value": value,
                }
            )
        states = self.all("state", lambda _n: {})
        for name, answer in states.items():
            entry = answer["lists"].get(self.list_id, {})
            out.append(
                {
                    "replica": name,
                    "role": "client",
                    "digest": entry.get("digest", "-"),
                    "value": entry.get("value"),
                }
            )
        return out

    def table(self, replicas: list[dict[str, Any]]) -> None:
        if self.as_json:
            return
        items = sorted({i for r in replicas if r["value"] for i in r["value"]["items"]})
        head = f"{'replica':<8} {'role':<7} {'name':<12}" + "".join(f" {i:>7}" for i in items)
        print("        " + head + "  digest")
        for r in replicas:
            value = r["value"] or {"name": "-", "items": {}}
            cells = ""
            for item in items:
                v = value["items"].get(item)
                cell = "-" if v is None else f"{v['quantity']}{'*' if v['bought'] else ''}"
                cells += f" {cell:>7}"
            name = f"{value['name']:<12.12}"
            print(f"        {r['replica']:<8} {r['role']:<7} {name}{cells}  {r['digest'][:16]}")
        print("        (* = bought)", flush=True)

    # -- teardown -------------------------------------------------------------------------

    def close(self) -> None:
        for agent in self.agents.values():
            agent.stop()
        self.cluster.close()


def _converged(replicas: list[dict[str, Any]]) -> bool:
    digests = {r["digest"] for r in replicas}
    return len(digests) == 1 and all(r["value"] == EXPECTED for r in replicas)


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_demo(*, keep: bool = False, as_json: bool = False) -> int:
    """Run the demo; return 0 if every replica converged to :data:`EXPECTED`."""
    data_dir = Path(tempfile.mkdtemp(prefix="shoplist-demo-"))
    demo: _Demo | None = None
    previous = signal.signal(signal.SIGTERM, _interrupt)  # clean up on SIGTERM too
    status = 1
    error = ""
    try:
        demo = _Demo(data_dir, as_json=as_json, keep=keep)
        if not as_json:
            print(
                "shoplist demo: a replicated shopping list, partitioned and healed "
                "(2 brokers, 3 servers, 3 clients)",
                flush=True,
            )
        demo.start()
        demo.share()
        demo.concurrent()
        demo.partition()
        demo.heal()
        status = 0
    except KeyboardInterrupt:
        error = "interrupted"
        status = 130
    except (DemoFailed, AgentError, ClusterError, TimeoutError, RuntimeError, OSError) as exc:
        error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    finally:
        if demo is not None:
            demo.close()
        signal.signal(signal.SIGTERM, previous)
    total = time.monotonic() - demo.t0 if demo is not None else 0.0
    if demo is not None and not as_json and status == 0:
        healthy, split = demo.latencies["healthy"], demo.latencies["partitioned"]
        print(
            f"timings: cluster up in {demo.timings['cluster_start_s']:.1f}s; an edit is "
            f"durable on a server {statistics.median(healthy):.1f} ms after it is made "
            f"(median of {len(healthy)}); during the partition {statistics.median(split):.1f} ms "
            f"(max {max(split):.0f} ms: a client whose broker was cut off times out and "
            "fails over to the other one)"
        )
        print(
            f"         converged {demo.timings['converged_after_heal_s']:.2f}s after the heal "
            f"(anti-entropy every {TIMING.anti_entropy:g}s); total {total:.1f}s"
        )
        print("every process the demo started is stopped")
    if as_json:
        report: dict[str, Any] = {"converged": status == 0, "error": error or None}
        if demo is not None:
            report["timings"] = {**demo.timings, "total_s": total}
            report["edit_ms"] = demo.latencies
            report["replicas"] = getattr(demo, "final", None)
            report["list_id"] = demo.list_id
        print(json.dumps(report, sort_keys=True))
    if error:
        print(f"shoplist demo: error: {error}", file=sys.stderr)
        if keep or status != 130:
            print(f"shoplist demo: logs kept in {data_dir / 'logs'}", file=sys.stderr)
            keep = True
    if not keep:
        shutil.rmtree(data_dir, ignore_errors=True)
    elif not error:
        print(f"data kept in {data_dir}")
    return status
