"""The checks run after the last heal and quiescence, and the per-run result.

In the spirit of Jepsen's Maelstrom checkers, each run reports:

* divergent lists: holders whose final states differ for a list (byte-equal digests are
  required), or a client that synced after the heal and differs from them;
* lost acknowledged edits: an acknowledged delta that is not ``<=`` a holder's final
  state;
* misplaced lists: a server that keeps a list it does not hold, in memory or in its
  store, or still keeps a hint (checked by the runner);
* hasty handoffs: a server that forgot a list it no longer holds while one of the list's
  holders did not hold it durably (checked by the runner at that moment);
* acknowledgements ahead of durability: a server that acknowledged a push while the
  pushed delta was not yet ``<=`` its durable store (checked by the runner at the moment
  of the acknowledgement, so no crash in a narrow window is needed to see it);
* counter violations and phantom items, by the document model
  (:meth:`~reference_cluster.sim.workload.DocumentModel.check`);
* shrinkage: a replica whose state did not grow (in memory within one run of a node,
  on disk across crashes and restarts);
* reused dots: a dot issued by two edits;
* forgeries: an entry in a server's state that no honest edit made with that payload, or
  a context that claims a dot nobody issued (the Byzantine client's pushes);
* rounds to converge: anti-entropy intervals from the last heal until the servers held
  their final states for good.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from reference_cluster.sim.workload import DocumentModel, EditRecord

__all__ = ["RunResult", "check_final", "rounds_to_converge"]


@attrs.frozen
class RunResult:
    """What one simulated run found.

    Attributes:
        seed: the run's seed.
        divergent: lists on which the replicas that should agree do not.
        lost_acked: acknowledged edits missing from a server's final state.
        acked_not_durable: acknowledgements sent while the pushed delta was not yet
            durable on the acknowledging server.
        short_replies: replies that, once joined, left a client without part of what
            the replying server held when it replied.
        counter_violations: counters outside their bounds (per list and server).
        phantoms: items present that no edit created (per list and replica).
        shrunk: times a replica's state was seen to lose something.
        reused_dots: dots issued more than once.
        unsynced_clients: clients whose final sync did not complete.
        rounds: anti-entropy rounds from the last heal to convergence (None: never).
        edits, acked: client edits made, and acknowledged.
        messages, wire_bytes: every message sent (and its bytes), all kinds.
        client_messages, client_bytes: the part on the client path (requests, forwards,
            replies).
        events: simulator events processed; ``end``: the virtual time at the end.
        trace_hash: SHA-256 of the trace.
        problems: descriptions of what went wrong (empty for a clean run).
        stats: how many faults were injected and how the cluster coped (crashes by
            role, writes lost, messages dropped, cut, truncated, retries, errors...).
    """

    seed: int
    divergent: int
    lost_acked: int
    acked_not_durable: int
    short_replies: int
    counter_violations: int
    phantoms: int
    shrunk: int
    reused_dots: int
    unsynced_clients: int
    rounds: int | None
    edits: int
    acked: int
    messages: int
    wire_bytes: int
    client_messages: int
    client_bytes: int
    events: int
    end: float
    trace_hash: str
    problems: tuple[str, ...]
    stats: tuple[tuple[str, int], ...] = ()
    forged: int = 0
    """Forged dots or context claims found in a server's final state (a Byzantine
    client's push that got through)."""
    misplaced: int = 0
    """Lists (or hints) kept at the end by a server that does not hold them."""
    lost_handoffs: int = 0
    """Lists a server forgot after a membership change before every holder of the list
    held them durably (checked at the moment it forgot them)."""

    def ok(self, max_rounds: int = 2) -> bool:
        """No checker failed and the servers converged within ``max_rounds`` rounds."""
        return not self.problems and self.rounds is not None and self.rounds <= max_rounds


@attrs.define
class FinalCheck:
    """The outcome of :func:`check_final` (counts and descriptions)."""

    divergent: int = 0
    lost_acked: int = 0
    counter_violations: int = 0
    phantoms: int = 0
    problems: list[str] = attrs.field(factory=list)


def check_final(
    model: DocumentModel[Any],
    list_ids: Sequence[str],
    servers: Mapping[str, Mapping[str, Any]],
    clients: Mapping[str, Mapping[str, Any]],
    edits: Sequence[EditRecord],
    *,
    holders: Mapping[str, Sequence[str]] | None = None,
) -> FinalCheck:
    """Check the final states of every holder and of every client that synced.

    Args:
        model: the document model (for counters and phantoms).
        list_ids: the lists of the run.
        servers: server -> list id -> final state.
        clients: client -> list id -> final state, for clients that synced after the heal.
        edits: every edit made in the run.
        holders: list id -> the servers that hold it (default: every server).
    """
    out = FinalCheck()
    by_list: dict[str, list[EditRecord]] = {k: [] for k in list_ids}
    for e in edits:
        by_list.setdefault(e.list_id, []).append(e)
    for list_id in list_ids:
        short = list_id[:8]
        bottom = model.doc_type()
        placed = servers.keys() if holders is None else holders[list_id]
        states = {s: servers[s].get(list_id, bottom) for s in placed}
        digests = {s: st.digest() for s, st in states.items()}
        diverged = len(set(digests.values())) > 1
        if diverged:
            out.problems.append(f"list {short}: servers differ: {_groups(digests)}")
        reference = next(iter(digests.values()), None)
        for client, lists in clients.items():
            if list_id in lists and lists[list_id].digest() != reference:
                diverged = True
                out.problems.append(f"list {short}: client {client} differs from the servers")
        out.divergent += diverged
        lost: set[int] = set()
        for server, state in states.items():
            for e in by_list[list_id]:
                if e.acked and not e.delta <= state:
                    lost.add(e.number)
                    out.problems.append(
                        f"list {short}: acked edit #{e.number} ({e.client} {e.op}) "
                        f"missing at {server}"
                    )
            for kind, detail in model.check(state, by_list[list_id]):
                out.problems.append(f"list {short} at {server}: {detail}")
                if kind == "counter":
                    out.counter_violations += 1
                else:
                    out.phantoms += 1
        for client, lists in clients.items():
            if list_id in lists:
                for kind, detail in model.check(lists[list_id], by_list[list_id]):
                    out.problems.append(f"list {short} at {client}: {detail}")
                    if kind == "counter":
                        out.counter_violations += 1
                    else:
                        out.phantoms += 1
        out.lost_acked += len(lost)
    return out


def _groups(digests: Mapping[str, str]) -> str:
    groups: dict[str, list[str]] = {}
    for server, d in digests.items():
        groups.setdefault(d, []).append(server)
    return " | ".join(",".join(g) for g in sorted(groups.values()))


def rounds_to_converge(
    samples: Sequence[tuple[float, tuple[str, ...]]],
    final: tuple[str, ...],
    heal_at: float,
    interval: float,
) -> int | None:
    """Anti-entropy rounds from ``heal_at`` until the sampled server digests stayed equal
    to ``final`` (None if the last sample differs).

    Args:
        samples: ``(time, digests of every server and list)``, taken after the heal.
        final: the digests at the end of the run; all servers must agree on each list.
        heal_at: the time of the last heal.
        interval: the anti-entropy interval.
    """
    converged_at: float | None = None
    for t, digests in samples:
        if digests == final:
            if converged_at is None:
                converged_at = t
        else:
            converged_at = None
    if converged_at is None:
        return None
    return max(0, math.ceil((converged_at - heal_at) / interval - 1e-9))
