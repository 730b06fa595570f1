"""Deliberately broken cores, for proving that the checkers catch real bugs.

They live with the simulator, never in the production modules: each is a subclass that
overrides one step of a correct core. ``python -m reference_cluster.sim --mutant NAME``
and the tests select them.
"""

from __future__ import annotations

from typing import Any

from crdts import DotContext
from reference_cluster.cores.client import ClientCore
from reference_cluster.cores.server import ServerCore
from reference_cluster.protocol.effects import DropList, Effect, Persist, SaveEdit, Send
from reference_cluster.protocol.messages import (
    Deliver,
    ErrorReply,
    Forward,
    Hint,
    Replicate,
    Stored,
    SyncReply,
    SyncRequest,
)
from reference_cluster.protocol.replication import S, missing_for

__all__ = [
    "MUTANTS",
    "AckBeforePersistServer",
    "ForgetfulClient",
    "HastyHandoffServer",
    "HintBeforePersistServer",
    "HintHoardingServer",
    "ListHoardingServer",
    "NoAntiEntropyServer",
    "NoAuthorshipServer",
    "QuorumOfOneServer",
    "UnrecordedRepairServer",
]


class AckBeforePersistServer(ServerCore[S]):
    """Acknowledges a client's delta as soon as it is applied in memory, before the
    write is durable: a crash in between loses an acknowledged edit."""

    def _on_push(
        self, broker: str, fwd: Forward, delta: S, ctx: DotContext | None, now: float
    ) -> list[Effect]:
        req = fwd.request
        out: list[Effect] = []
        write = self._apply(req.list_id, delta)
        if write is not None:
            out.append(write)
            out.extend(self._propagate(req.list_id, delta))
        state = self.view(req.list_id)
        assert state is not None
        reply = SyncReply(req.request_id, req.list_id, missing_for(state, ctx).to_dict())
        out.append(Send(broker, Deliver(fwd.client, reply)))
        return out


class NoAntiEntropyServer(ServerCore[S]):
    """Never starts an anti-entropy round: what a lost propagation missed stays missed."""

    def _anti_entropy_round(self, now: float) -> list[Effect]:
        return []


class NoAuthorshipServer(ServerCore[S]):
    """Applies every admitted push as it is: no authorship check, no quotas (the server
    before :mod:`reference_cluster.cores.authorship`)."""

    def _check_push(self, req: SyncRequest, delta: S) -> ErrorReply | None:
        return None


class UnrecordedRepairServer(ServerCore[S]):
    """Leaves the deltas that anti-entropy brings out of a list's changes since a
    version (Rule 10 of the server core): a client that syncs since a version of before
    the repair is never sent what the repair brought."""

    def _apply(self, list_id: str, delta: S, *, small: bool = True) -> Persist | None:
        if small:
            return super()._apply(list_id, delta)
        changes = self._changes.pop(list_id, None)
        write = super()._apply(list_id, delta)
        if changes is not None:
            self._changes[list_id] = changes
        return write


class HoardingServer(ServerCore[S]):
    """Takes every list as its own (Rule 6 of the server core): it propagates to every
    peer, and keeps what it is sent of lists placed on other servers."""

    def _holds(self, list_id: str) -> bool:
        return True

    def _holders(self, list_id: str) -> tuple[str, ...]:
        return self.membership.preference(list_id)


class QuorumOfOneServer(ServerCore[S]):
    """Acknowledges a push once its own write is durable, whatever the write quorum
    (Rule 11 of the server core): the other holders are sent the delta and not waited
    for."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.write_quorum = 1


class HintBeforePersistServer(ServerCore[S]):
    """Confirms a hint as soon as it is taken, before the hint is durable (Rule 12 of
    the server core): a crash in between loses a copy that counted toward W."""

    def _on_replicate(self, peer: str, msg: Replicate | Hint) -> list[Effect]:
        out = super()._on_replicate(peer, msg)
        if isinstance(msg, Hint) and not self._holds(msg.list_id):
            writes = [e for e in out if isinstance(e, Persist)]
            if writes and self._peer_acks.pop(writes[0].token, None) is not None:
                out.append(Send(peer, Stored(self.server_id, msg.list_id, msg.ask)))
        return out


class HintHoardingServer(ServerCore[S]):
    """Keeps the hints it takes and never hands them to their holders (Rule 12 of the
    server core)."""

    def _hand_hints(self) -> list[Effect]:
        return []


class ListHoardingServer(ServerCore[S]):
    """Keeps the lists it no longer holds after a membership change and never hands
    them over (Rule 13 of the server core)."""

    def _hand_lists(self) -> list[Effect]:
        return []


class HastyHandoffServer(ServerCore[S]):
    """Forgets a list it no longer holds as soon as the membership changes, without
    waiting for its new holders to confirm it (Rule 13 of the server core)."""

    def _hand_lists(self) -> list[Effect]:
        out = super()._hand_lists()
        for list_id, digest in list(self._away.items()):
            if not self._pins.get(list_id):
                del self._away[list_id]
                out.append(DropList(list_id, digest))
        return out


class ForgetfulClient(ClientCore[S]):
    """Does not make its edits durable: a restart forgets them and reuses their dots."""

    def edit(self, list_id: str, mutate: Any, now: float) -> tuple[S, list[Effect]]:
        delta, effects = super().edit(list_id, mutate, now)
        return delta, [e for e in effects if not isinstance(e, SaveEdit)]


MUTANTS: dict[str, tuple[str, type[Any]]] = {
    "ack-before-persist": ("server", AckBeforePersistServer),
    "no-anti-entropy": ("server", NoAntiEntropyServer),
    "no-authorship": ("server", NoAuthorshipServer),
    "unrecorded-repair": ("server", UnrecordedRepairServer),
    "forgetful-client": ("client", ForgetfulClient),
    "hoarding-server": ("server", HoardingServer),
    "quorum-of-one": ("server", QuorumOfOneServer),
    "hint-before-persist": ("server", HintBeforePersistServer),
    "hint-hoarding": ("server", HintHoardingServer),
    "list-hoarding": ("server", ListHoardingServer),
    "hasty-handoff": ("server", HastyHandoffServer),
}
"""Mutant name -> (the role it replaces, its class)."""
