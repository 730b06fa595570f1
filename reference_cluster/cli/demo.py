"""``shoplist demo``: a real cluster on this machine, with holders stopped, partitioned and
healed.

It starts 2 brokers and 5 servers (each its own process, stores in a temporary
directory; each list on 3 of the 5 servers, an edit acknowledged once 2 hold it) and 3
client agents (alice, bob, carol: processes with their own device stores). Every link
between two processes goes through a
:class:`~reference_cluster.processes.linkproxy.LinkProxy`, so the demo can cut links without
privileges. The story:

1. alice creates a list and shares its id; bob and carol open it. The demo shows the
   list's 3 holders (H1 H2 H3, most preferred first) and the 2 servers after them (A1 A2,
   the servers asked to keep hints);
2. H3 is killed (SIGKILL): alice and bob edit at once, and both edits are acknowledged,
   H1 and H2 making the 2 copies (no hint is needed);
3. H2 is killed too: carol's edit is still acknowledged, A1 keeping it as a hint for a
   stopped holder (A1 reports ``handing`` 1); H2 and H3 restart, A1 hands the hint back
   (``handing`` 0) and both hold every edit;
4. the cluster splits: {b0, H1, A1, alice} | {b1, H2, H3, A2, bob}, and carol goes
   offline; each side edits (conflicting on purpose), side A's edits acknowledged through
   a hint at A1, and carol edits offline;
5. every link heals; the demo waits until the six replicas (3 holders, 3 clients) hold
   the same list and no server has a hint left, and prints them side by side with their
   digests and the timings.

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
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from reference_cluster.cores.quorum import write_quorum
from reference_cluster.errors import ClusterError
from reference_cluster.processes.cluster import (
    AgentError,
    ClientAgent,
    LocalCluster,
    Timing,
    free_base_port,
)
from reference_cluster.processes.config import LocalLayout
from reference_cluster.protocol.messages import ServerStatus
from reference_cluster.protocol.placement import preference
from reference_cluster.shopping_list import ShoppingList

__all__ = ["EXPECTED", "run_demo"]

TIMING = Timing(heartbeat=0.25, anti_entropy=0.5, liveness=1.0, zmq_heartbeat=0.5)
SERVERS = 5
REPLICAS = 3
WRITE_QUORUM = write_quorum(None, REPLICAS)  # the servers' default: 2
SYNC_INTERVAL = 0.5
CONVERGE_WITHIN = 30.0
HINT_WITHIN = 10.0
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
            layout=LocalLayout("127.0.0.1", free_base_port(servers=SERVERS), servers=SERVERS),
            timing=TIMING,
            replicas=REPLICAS,
            proxies=True,
            quiet=True,
        )
        self.agents: dict[str, ClientAgent] = {}
        self.list_id = ""
        self.holders: tuple[str, ...] = ()
        """The list's holders, most preferred first."""
        self.after: tuple[str, ...] = ()
        """The other servers in the list's preference order: the hint takers, in turn."""
        self.latencies: dict[str, list[float]] = {
            "healthy": [],
            "one_holder_down": [],
            "two_holders_down": [],
            "partitioned": [],
        }
        self.acked: dict[str, dict[str, int]] = {phase: {} for phase in self.latencies}
        """Per phase, how many edits each client saw acknowledged."""
        self.waited: dict[str, int] = dict.fromkeys(self.latencies, 0)
        """Per phase, how many edits waited for their acknowledgement."""
        self.phase = "healthy"
        self.timings: dict[str, float] = {}
        self.pids: dict[str, list[int]] = {}
        """Every process started, by name (a restarted server has two pids)."""
        self.stopped: list[str] = []
        self.hint: dict[str, Any] = {}
        self.split: dict[str, Any] = {}
        self.handing: dict[str, int] = {}
        self.final: list[dict[str, Any]] | None = None
        self.copies_elsewhere: list[str] = []
        """Servers other than the holders that hold the list after the heal (none)."""

    # -- output ---------------------------------------------------------------------------

    def say(self, text: str) -> None:
        if not self.as_json:
            print(f"[{time.monotonic() - self.t0:5.1f}s] {text}", flush=True)

    def detail(self, text: str) -> None:
        if not self.as_json:
            print(f"        {text}", flush=True)

    def _note_pid(self, name: str, pid: int) -> None:
        self.pids.setdefault(name, []).append(pid)

    # -- steps ----------------------------------------------------------------------------

    def start(self) -> None:
        c = self.cluster
        c.start()
        for name in c.children:
            self._note_pid(name, c.pid(name))
        self.timings["cluster_start_s"] = time.monotonic() - self.t0
        self.say(
            f"cluster up: brokers {' '.join(c.brokers)}, servers {' '.join(c.servers)} "
            "(own processes; every link encrypted (CURVE) and through a proxy the demo can cut)"
        )
        self.detail(
            f"each list lives on {REPLICAS} of the {SERVERS} servers; an edit is acknowledged "
            f"once {WRITE_QUORUM} servers hold it durably (W={WRITE_QUORUM})"
        )
        fate = (
            "kept at exit"
            if self.keep
            else "deleted at exit unless the demo fails; --keep keeps it"
        )
        self.detail(f"data and logs: {self.data_dir} ({fate})")
        for name in ("alice", "bob", "carol"):
            agent = self.agents[name] = ClientAgent(
                name,
                self.data_dir / f"{name}.sqlite",
                c.client_brokers(name),
                broker_key=c.broker_key,
                log=self.data_dir / "logs" / f"{name}.log",
                sync_interval=SYNC_INTERVAL,
                zmq_heartbeat=TIMING.zmq_heartbeat,
            )
            self._note_pid(name, agent.proc.pid)
        self.all("signup", lambda n: {"name": n, "password": PASSWORD})
        self.say("alice, bob and carol started (client processes) and signed up")

    def all(
        self,
        op: str,
        fields: Callable[[str], Mapping[str, Any]],
        names: Iterable[str] | None = None,
    ) -> dict[str, Any]:
        """Send ``op`` to several agents at once and wait for every answer."""
        chosen = list(names or self.agents)
        ids = {n: self.agents[n].begin(op, **fields(n)) for n in chosen}
        return {n: self.agents[n].wait(i) for n, i in ids.items()}

    def edit(self, who: str, action: str, *, wait: bool = True, **fields: Any) -> int:
        """Start an edit at ``who``; return the command id (see :meth:`finish`)."""
        return self.agents[who].begin(
            "edit", list=self.list_id, action=action, wait=wait, timeout=10.0, **fields
        )

    def finish(self, started: Iterable[tuple[str, int]]) -> None:
        """Wait for the edits started; note the acknowledged ones and their times."""
        acked = self.acked[self.phase]
        for who, command_id in started:
            answer = self.agents[who].wait(command_id)
            if "acked" not in answer:
                continue  # an edit that did not wait (offline)
            acked.setdefault(who, 0)
            self.waited[self.phase] += 1
            if answer.get("acked"):
                acked[who] += 1
                self.latencies[self.phase].append(float(answer["ms"]))

    def share(self) -> None:
        alice = self.agents["alice"]
        self.list_id = alice.call("create", name="Weekend")["list_id"]
        self.finish(
            ("alice", self.edit("alice", "add", item=item, qty=qty))
            for item, qty in (("milk", 2), ("eggs", 12), ("bread", 1))
        )
        alice.call("share", list=self.list_id, users=["bob", "carol"])
        self.all("open", lambda _n: {"list": self.list_id}, ["bob", "carol"])
        self.all("sync", lambda _n: {"timeout": 10.0}, ["bob", "carol"])
        self.say(f"alice created 'Weekend' [{self.list_id[:8]}]: milk 2, eggs 12, bread 1")
        self.detail("she shared it with bob and carol (its members now); they opened it")
        order = preference(self.list_id, self.cluster.members)
        self.holders, self.after = order[:REPLICAS], order[REPLICAS:]
        self.detail(
            f"its holders: {' '.join(self.holders)} (most preferred first); after them "
            f"{' then '.join(self.after)}, asked in turn to keep a hint for a holder that "
            "does not answer"
        )

    def one_down(self) -> None:
        """Kill the list's last holder; two edits at once are still acknowledged."""
        first, second, third = self.holders
        self.cluster.kill(third)
        self.stopped.append(third)
        self.phase = "one_holder_down"
        self.say(f"{third}, a holder of the list, is killed (SIGKILL)")
        self.finish(
            [
                ("alice", self.edit("alice", "change", item="milk", by=1)),
                ("bob", self.edit("bob", "change", item="milk", by=2)),
            ]
        )
        spare = self.after[0]
        self.say(
            f"alice milk +1 and bob milk +2 at once: {self._acked_text()}; {first} and "
            f"{second} are the {WRITE_QUORUM} copies"
        )
        handing = self._handing(spare)
        self.hint["handing_one_down"] = handing
        if handing == 0:
            self.detail(
                f"no hint needed: {spare} has nothing to hand over (a hint is taken only "
                "for copies W still lacks)"
            )
        else:
            self.detail(
                f"{spare} has {handing} to hand over: {second} was slow to confirm, so a "
                "hint was taken as well"
            )

    def two_down(self) -> None:
        """Kill a second holder; an edit is acknowledged through a hint."""
        first, second, _ = self.holders
        self.cluster.kill(second)
        self.stopped.append(second)
        self.phase = "two_holders_down"
        self.say(f"{second} is killed too: {first} is the only holder up")
        self.finish([("carol", self.edit("carol", "add", item="apples", qty=6))])
        taker, handing = self._wait_for_hint(set(self.after))
        self.hint.update(taker=taker, handing=handing, acked=self._all_acked())
        ms = self.latencies[self.phase][0] if self.latencies[self.phase] else float("nan")
        self.say(f"carol adds 6 apples: {self._acked_text()} in {ms:.0f} ms")
        self.detail(
            f"{taker}, {'the first' if taker == self.after[0] else 'a'} server after the "
            f"holders, keeps it as a hint for a stopped holder ({taker} handing {handing}): "
            f"{first} and {taker} are the {WRITE_QUORUM} copies"
        )

    def restart_holders(self) -> None:
        """Restart the two holders; wait for the hint to be handed back and for every
        replica to agree."""
        c = self.cluster
        first, second, third = self.holders
        t = time.monotonic()
        for name in (second, third):
            c.restart(name)
            self._note_pid(name, c.pid(name))
        self.say(f"{second} and {third} restart")
        deadline = t + CONVERGE_WITHIN
        while True:
            left = {s: self._handing(s) for s in self.after}
            digests = {self._status(h).digests.get(self.list_id, "-") for h in self.holders}
            if not any(left.values()) and len(digests) == 1:
                break
            if time.monotonic() > deadline:
                raise DemoFailed(
                    f"hints not handed back within {CONVERGE_WITHIN:g}s of the restarts "
                    f"(left: {left}; holders' digests {sorted(digests)})"
                )
            time.sleep(0.05)
        self.timings["handed_back_s"] = time.monotonic() - t
        self.hint["handed_back"] = True
        taker = self.hint["taker"]
        self.detail(
            f"{taker} handed the hint back ({taker} handing 0) "
            f"{self.timings['handed_back_s']:.2f}s after the restarts; {second} and {third} "
            f"hold every edit (the same digest as {first})"
        )
        c.wait_for_servers(c.members, timeout=15.0)
        self.phase = "healthy"
        t = time.monotonic()
        deadline = t + CONVERGE_WITHIN
        while len({r["digest"] for r in self.replicas()}) != 1:
            if time.monotonic() > deadline:
                raise DemoFailed("the replicas did not agree before the partition")
            self.all("sync", lambda _n: {"timeout": 5.0})
        self.detail(
            f"all 6 replicas (3 holders, 3 clients) agree {time.monotonic() - t:.2f}s later "
            "(milk 5, apples 6)"
        )

    def partition(self) -> None:
        c = self.cluster
        first, second, third = self.holders
        spare, other = self.after
        side_a = ["b0", first, spare, "alice"]
        side_b = ["b1", second, third, other, "bob"]
        t = time.monotonic()
        c.partition([set(side_a), set(side_b)])
        c.isolate("carol")
        c.wait_for_servers([first, spare], brokers=["b0"], timeout=15.0)
        c.wait_for_servers([second, third, other], brokers=["b1"], timeout=15.0)
        self.timings["partition_noticed_s"] = time.monotonic() - t
        self.phase = "partitioned"
        self.split = {"groups": [side_a, side_b], "offline": ["carol"]}
        self.say(
            f"partition: {{{', '.join(side_a)}}} | {{{', '.join(side_b)}}}, carol offline "
            f"(brokers noticed in {self.timings['partition_noticed_s']:.1f}s)"
        )
        self.finish(
            [
                ("alice", self.edit("alice", "remove", item="bread")),
                ("alice", self.edit("alice", "set", item="milk", qty=4)),
                ("alice", self.edit("alice", "rename", name="Weekend BBQ")),
                ("bob", self.edit("bob", "change", item="bread", by=1)),
                ("bob", self.edit("bob", "buy", item="eggs")),
                ("bob", self.edit("bob", "rename", name="Party")),
                ("carol", self.edit("carol", "add", item="chips", qty=3, wait=False)),
                ("carol", self.edit("carol", "change", item="eggs", by=-2, wait=False)),
            ]
        )
        acked = self.acked[self.phase]
        self.say(
            "side A: alice removes bread, sets milk to 4, renames the list 'Weekend BBQ' "
            f"({acked.get('alice', 0)} of 3 acknowledged)"
        )
        self.detail(
            f"side B: bob adds 1 bread, marks eggs bought, renames it 'Party' "
            f"({acked.get('bob', 0)} of 3 acknowledged)"
        )
        self.detail("offline: carol adds 3 chips and takes 2 eggs off (kept on her device)")
        if acked.get("alice"):
            taker, handing = self._wait_for_hint({spare})
            self.split["hint_taker"] = taker
            self.detail(
                f"side A has one holder ({first}) and {spare}, which keeps alice's edits as a "
                f"hint for the holders across the cut ({spare} handing {handing}): "
                f"W={WRITE_QUORUM} is met"
            )
        self.detail(
            "with only one server on a side W=2 could not be met there: its edits would wait "
            "on the devices and sync after the heal, as carol's do"
        )
        self.split["acked"] = dict(acked)
        self.split["handing"] = self.handing_all()
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
        handing = self.handing_all()
        while not (_converged(replicas) and not any(handing.values())):
            if time.monotonic() > deadline:
                self.table(replicas)
                raise DemoFailed(
                    f"no convergence within {CONVERGE_WITHIN:g}s of the heal "
                    f"(left to hand over: {handing})"
                )
            time.sleep(0.05)
            replicas = self.replicas()
            handing = self.handing_all()
        self.handing = handing
        self.timings["converged_after_heal_s"] = time.monotonic() - healed
        self.say(
            f"converged {self.timings['converged_after_heal_s']:.2f}s after the heal: "
            f"all {len(replicas)} replicas hold the same list, and no server has a hint left"
        )
        self.table(replicas)
        kept = [s for s in self.after if self.list_id in self._status(s).digests]
        self.copies_elsewhere = kept
        if kept:
            self.detail(f"{' and '.join(kept)} still keep a copy of the list, not being holders")
        else:
            self.detail(f"{' and '.join(self.after)}, not holders, keep no copy of the list")
        for line in WHY:
            self.detail(line)
        self.final = replicas

    # -- servers and replicas -------------------------------------------------------------

    def _status(self, name: str, *, states: bool = False) -> ServerStatus:
        status = self.cluster.server_status(name, states=states, timeout=2.0)
        if status is None:
            raise DemoFailed(f"server {name} does not answer")
        return status

    def _handing(self, name: str) -> int:
        """What server ``name`` still has to hand over (lists and hints)."""
        return self._status(name).handing

    def handing_all(self) -> dict[str, int]:
        """:meth:`_handing` of every running server."""
        return {s: self._handing(s) for s in self.cluster.servers if self.cluster.alive(s)}

    def _wait_for_hint(self, candidates: set[str]) -> tuple[str, int]:
        """Poll ``candidates`` until one reports something to hand over; return it and
        its count (the first found, in the list's preference order)."""
        deadline = time.monotonic() + HINT_WITHIN
        while time.monotonic() < deadline:
            for name in self.after:
                if name in candidates and self.cluster.alive(name):
                    handing = self._handing(name)
                    if handing > 0:
                        return name, handing
            time.sleep(0.05)
        raise DemoFailed(f"none of {sorted(candidates)} took a hint within {HINT_WITHIN:g}s")

    def _acked_text(self) -> str:
        return "acknowledged" if self._all_acked() else "NOT all acknowledged"

    def _all_acked(self) -> bool:
        """Whether every edit of this phase that waited was acknowledged."""
        return 0 < sum(self.acked[self.phase].values()) == self.waited[self.phase]

    def replicas(self) -> list[dict[str, Any]]:
        """The list at each holder and each client."""
        out = []
        for name in self.holders:
            status = self._status(name, states=True)
            encoded = status.states.get(self.list_id)
            value = None
            if encoded is not None:
                value = ShoppingList.from_dict(encoded).value
            out.append(
                {
                    "replica": name,
                    "role": "holder",
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


def _report(demo: _Demo, total: float) -> None:
    """The closing lines of a successful run (text)."""
    lat = demo.latencies
    healthy, split = lat["healthy"], lat["partitioned"]
    one, two = lat["one_holder_down"], lat["two_holders_down"]
    print(
        f"timings: cluster up in {demo.timings['cluster_start_s']:.1f}s; an edit is acknowledged "
        f"({WRITE_QUORUM} copies durable) {statistics.median(healthy):.1f} ms after it is made "
        f"(median of {len(healthy)}, every holder up); one holder down "
        f"{statistics.median(one):.1f} ms; two down {statistics.median(two):.1f} ms (the "
        "silent holders get 0.1 s before a hint is asked for)"
    )
    if split:
        print(
            f"         during the partition {statistics.median(split):.1f} ms (median of "
            f"{len(split)}; max {max(split):.0f} ms: a client whose broker was cut off times "
            "out and fails over to the other one)"
        )
    print(
        f"         hint handed back {demo.timings['handed_back_s']:.2f}s after the restarts; "
        f"converged {demo.timings['converged_after_heal_s']:.2f}s after the heal "
        f"(anti-entropy every {TIMING.anti_entropy:g}s); total {total:.1f}s"
    )
    count = sum(len(p) for p in demo.pids.values())
    print(f"every process the demo started is stopped ({count} processes, by pid)")


def _json_report(demo: _Demo, total: float) -> dict[str, Any]:
    """What ``--json`` adds about a run that got as far as it did."""
    c = demo.cluster
    return {
        "timings": {**demo.timings, "total_s": total},
        "edit_ms": demo.latencies,
        "acked": demo.acked,
        "replicas": demo.final,
        "list_id": demo.list_id,
        "placement": {
            "servers": list(c.servers),
            "replicas": REPLICAS,
            "write_quorum": WRITE_QUORUM,
            "holders": list(demo.holders),
            "after": list(demo.after),
        },
        "stopped": demo.stopped,
        "hint": demo.hint,
        "partition": demo.split,
        "handing": demo.handing,
        "copies_at_non_holders": demo.copies_elsewhere,
        "pids": demo.pids,
        "running": sorted(n for n, ch in c.children.items() if ch.proc and ch.proc.poll() is None)
        + sorted(n for n, a in demo.agents.items() if a.proc.poll() is None),
    }


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
                "shoplist demo: a replicated shopping list, with holders stopped, partitioned "
                f"and healed (2 brokers, {SERVERS} servers, 3 clients)",
                flush=True,
            )
        demo.start()
        demo.share()
        demo.one_down()
        demo.two_down()
        demo.restart_holders()
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
        _report(demo, total)
    if as_json:
        report: dict[str, Any] = {"converged": status == 0, "error": error or None}
        if demo is not None:
            report.update(_json_report(demo, total))
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
