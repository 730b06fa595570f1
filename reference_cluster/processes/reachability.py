"""Which brokers a client can reach, read from its sockets' ZeroMQ monitor events.

The rules are in :mod:`reference_cluster.processes.client` (failing fast). The class holds
no socket and takes time as an argument, so it is tested with made-up events.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import zmq

__all__ = ["MONITORED", "Reachability", "close_monitored"]

MONITORED = (
    zmq.EVENT_CONNECT_DELAYED
    | zmq.EVENT_CONNECTED
    | zmq.EVENT_CONNECT_RETRIED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
_HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)


class Reachability:
    """Which brokers can be reached, from their sockets' monitor events (the rules are in
    the module notes). Time comes in as arguments; no I/O.

    Args:
        brokers: the brokers' endpoints.
        grace: how long a wait lasts at least before it gives up on refusing brokers.
        refused_within: a failed connection attempt that took less than this many
            seconds was refused; a longer one timed out.
    """

    def __init__(self, brokers: Sequence[str], *, grace: float, refused_within: float) -> None:
        self.brokers = tuple(brokers)
        self.grace = grace
        self.refused_within = refused_within
        self._up: set[str] = set()
        self._failed: dict[str, float] = {}
        self._why: dict[str, str] = {}
        self._dialing: dict[str, float] = {}
        self._pending: dict[str, str] = {}
        self._since: float | None = None

    def begin(self, now: float) -> None:
        """A wait starts: only failures from now on count."""
        self._since = now

    def end(self) -> None:
        """The wait is over: nothing is unreachable until the next one begins."""
        self._since = None

    def on_event(self, broker: str, event: int, now: float) -> None:
        """Take one monitor event of ``broker``'s socket."""
        if event == zmq.EVENT_CONNECT_DELAYED:
            self._dialing[broker] = now
        elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self._up.add(broker)
            self._failed.pop(broker, None)
            self._pending.pop(broker, None)
        elif event & _HANDSHAKE_FAILED:
            self._pending[broker] = "the handshake failed (is it a broker?)"
            self._fail(broker, now)
        elif event == zmq.EVENT_DISCONNECTED:
            self._pending.setdefault(broker, "the connection was lost")
            self._fail(broker, now)
        elif event == zmq.EVENT_CONNECT_RETRIED:
            why = self._pending.pop(broker, None)
            if why is None:
                started = self._dialing.get(broker)
                if started is None:
                    why = "cannot connect (unknown host?)"
                elif now - started < self.refused_within:
                    why = "connection refused"
                else:
                    why = "connecting timed out"
            self._dialing.pop(broker, None)
            self._why[broker] = why
            self._fail(broker, now)

    def _fail(self, broker: str, now: float) -> None:
        self._up.discard(broker)
        self._failed[broker] = now

    def down(self, broker: str) -> bool:
        """Whether ``broker`` is not up and failed since the wait began."""
        since = self._since
        failed = self._failed.get(broker)
        return (
            since is not None and broker not in self._up and failed is not None and failed >= since
        )

    def unreachable(self, now: float) -> bool:
        """Whether the current wait should give up: every broker down, grace elapsed."""
        since = self._since
        return (
            since is not None
            and now - since >= self.grace
            and all(self.down(b) for b in self.brokers)
        )

    def why(self, broker: str) -> str:
        """What went wrong with ``broker`` last (``connection refused`` ...)."""
        return self._why.get(broker) or self._pending.get(broker) or "not connected"

    def describe(self) -> str:
        """One line: ``no broker is reachable at A, B (connection refused)``."""
        reasons = {b: self.why(b) for b in self.brokers}
        if len(set(reasons.values())) == 1:
            return (
                f"no broker is reachable at {', '.join(self.brokers)} ({reasons[self.brokers[0]]})"
            )
        each = "; ".join(f"{b}: {why}" for b, why in reasons.items())
        return f"no broker is reachable ({each})"


def close_monitored(sock: zmq.Socket[Any], monitor: zmq.Socket[Any] | None) -> None:
    """Close a socket and its monitor at once (a socket left open blocks its context's
    ``term()`` for ever)."""
    if monitor is not None:
        with contextlib.suppress(zmq.ZMQError):
            sock.disable_monitor()
        monitor.close(linger=0)
    sock.close(linger=0)
