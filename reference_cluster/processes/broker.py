"""The broker process: a ZeroMQ shell around :class:`~reference_cluster.cores.broker.BrokerCore`.

Two ROUTER sockets: the front end, where clients' DEALER (or REQ) sockets connect, and the
back end, where every server's DEALER connects. The loop polls both with the core's next
deadline, hands each frame to the core and sends what it returns; the core decides
everything (liveness, routing, status). The shell only turns socket identities into peer
names: ``f:<hex>`` for a client's DEALER, ``q:<hex>`` for a REQ socket (its replies carry
the empty delimiter back) and ``b:<hex>`` for a server.

Each side takes only its own kinds of message: clients may not announce themselves as
servers or deliver replies, servers may not send requests. The shell decodes a frame
once, checks its kind against the side it came from, and hands it to the core; anything
else is answered ``unexpected_kind``.

Both sockets are ROUTER_MANDATORY, so a message to a vanished peer raises instead of
vanishing; for a server that is reported to the core, which purges it at once. Nothing a
peer sends can stop the loop: a frame that does not decode gets an error reply.

Run ``python -m reference_cluster.processes.broker --help`` for the flags.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import zmq

from reference_cluster.cores.broker import BrokerConfig, BrokerCore
from reference_cluster.cores.limits import Rate
from reference_cluster.errors import ClusterError, KeysMissing, MalformedMessage
from reference_cluster.processes.config import (
    StopSignal,
    add_common_flags,
    add_seconds_flag,
    add_security_flags,
    bind_endpoint,
    bound_client_port,
    bound_member_port,
    env,
    env_list,
    local_layout,
    parse_positive,
    print_ready,
    security_from_args,
    setup_logging,
    tune_socket,
)
from reference_cluster.processes.security import Security
from reference_cluster.protocol.effects import Effect, Send
from reference_cluster.protocol.messages import ErrorReply, decode, encode
from reference_cluster.protocol.placement import DEFAULT_REPLICAS, Membership

__all__ = ["Broker", "main"]

log = logging.getLogger(__name__)

_FRONT_KINDS = frozenset({"sync", "signup", "login", "lists", "status", "error"}) | {
    "members",  # access lists
    "logout",  # accounts: end a session, change a password, delete an account
    "passwd",
    "delete_account",
}
_BACK_KINDS = frozenset({"announce", "heartbeat", "goodbye", "deliver", "status", "error"})
_DRAIN = 500  # frames read from one socket before looking at the other and the timers
_MAX_WAIT = 1.0  # the loop looks at the stop signal at least this often


class Broker:
    """A broker bound to two end points; :meth:`run` serves until stopped.

    Args:
        broker_id: the broker's name (logs and status).
        frontend: the end point to bind for clients (``tcp://127.0.0.1:7100``; port
            ``*`` or ``0`` picks a free one, see :attr:`frontend`).
        backend: the end point to bind for servers.
        security: the broker's keys: its front end serves clients with the front-end
            pair, its back end admits only members (see
            :mod:`reference_cluster.processes.security`).
        config: liveness timing.
        heartbeat: ZeroMQ connection heartbeat in seconds (0 for none).
        membership: the member servers, to route a list's requests to its holders
            (:class:`~reference_cluster.cores.broker.BrokerCore`); None routes them to
            any live server, and a server that does not hold the list says so.
        replicas: how many members hold each list.
    """

    def __init__(
        self,
        broker_id: str,
        frontend: str,
        backend: str,
        *,
        security: Security,
        config: BrokerConfig | None = None,
        heartbeat: float = 1.0,
        membership: Membership | None = None,
        replicas: int = DEFAULT_REPLICAS,
    ) -> None:
        self.core = BrokerCore(broker_id, config=config, membership=membership, replicas=replicas)
        self.security = security
        self._ctx: zmq.Context[Any] = zmq.Context()
        self._front = self._ctx.socket(zmq.ROUTER)
        self._back = self._ctx.socket(zmq.ROUTER)
        try:
            security.start(self._ctx)
            security.serve_clients(self._front)
            security.serve_members(self._back)
            for sock in (self._front, self._back):
                tune_socket(sock, heartbeat=heartbeat, linger=0.2)
                sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
            # A restarted server takes its routing id back at once; without this, ZeroMQ
            # ignores its new connection for as long as the old one seems alive.
            self._back.setsockopt(zmq.ROUTER_HANDOVER, 1)
            bound_client_port(self._front)  # frame size and queue bounds per client
            bound_member_port(self._back)
            self._front.bind(frontend)
            self._back.bind(backend)
        except BaseException:
            self.close()
            raise
        self.frontend: str = self._front.getsockopt_string(zmq.LAST_ENDPOINT)
        self.backend: str = self._back.getsockopt_string(zmq.LAST_ENDPOINT)

    # -- the loop -------------------------------------------------------------------------

    def run(self, stop: StopSignal) -> None:
        """Serve until ``stop`` says so."""
        poller = zmq.Poller()
        poller.register(self._front, zmq.POLLIN)
        poller.register(self._back, zmq.POLLIN)
        poller.register(stop.fd, zmq.POLLIN)
        self._carry_out(self.core.start(time.monotonic()))
        while not stop.check():
            deadline = self.core.next_deadline()
            wait = _MAX_WAIT if deadline is None else deadline - time.monotonic()
            events = dict(poller.poll(max(0, int(min(wait, _MAX_WAIT) * 1000) + 1)))
            if stop.fd in events:
                stop.drain()
            if self._front in events:
                self._drain(self._front, front=True)
            if self._back in events:
                self._drain(self._back, front=False)
            now = time.monotonic()
            deadline = self.core.next_deadline()
            if deadline is not None and deadline <= now:
                self._carry_out(self.core.on_timer(now))
        log.info("broker %s: stopping (%s)", self.core.broker_id, stop.reason or "asked")

    def _drain(self, sock: zmq.Socket[Any], *, front: bool) -> None:
        for _ in range(_DRAIN):
            try:
                parts = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            try:
                # The client's IP, for the per-source limits (cores.broker Rule 4b).
                source = str(parts[-1].get("Peer-Address")) if front else None
                self._on_frames([p.bytes for p in parts], front=front, source=source)
            except Exception:  # a bug must not stop the broker; the frame is dropped
                log.exception("broker %s: failed to handle a frame", self.core.broker_id)

    def _on_frames(self, frames: list[bytes], *, front: bool, source: str | None = None) -> None:
        ident, data = frames[0], frames[-1]
        if front and len(frames) == 3 and frames[1] == b"":
            peer = "q:" + ident.hex()  # a REQ socket: its envelope has an empty delimiter
        elif len(frames) == 2:
            peer = ("f:" if front else "b:") + ident.hex()
        else:
            peer = ("f:" if front else "b:") + ident.hex()
            detail = f"expected one frame after the routing id, got {len(frames) - 1}"
            log.warning("broker %s: %s from %s", self.core.broker_id, detail, peer)
            self._send(Send(peer, ErrorReply(None, "malformed", detail)))
            return
        try:
            msg = decode(data)
        except MalformedMessage as exc:
            log.warning("broker %s: malformed message from %s: %s", self.core.broker_id, peer, exc)
            self._send(Send(peer, ErrorReply.about(None, exc.code, exc)))
            return
        if msg.kind not in (_FRONT_KINDS if front else _BACK_KINDS):
            side = "clients" if front else "servers"
            log.warning(
                "broker %s: %s sent %s from the %s side", self.core.broker_id, peer, msg.kind, side
            )
            detail = f"{side} may not send {msg.kind} to a broker"
            self._send(
                Send(peer, ErrorReply(getattr(msg, "request_id", None), "unexpected_kind", detail))
            )
            return
        following = self.core.membership
        self._carry_out(self.core.receive_message(peer, msg, time.monotonic(), source))
        if self.core.membership is not following:  # a newer membership (Rule 7 of the core)
            try:
                self.security.reload_members()
            except (KeysMissing, ValueError) as exc:
                log.error(
                    "broker %s: reloading the members' keys failed: %s", self.core.broker_id, exc
                )

    # -- effects --------------------------------------------------------------------------

    def _carry_out(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Send):
                self._send(effect)

    def _send(self, effect: Send) -> None:
        kind, _, hexid = effect.to.partition(":")
        try:
            ident = bytes.fromhex(hexid)
        except ValueError:
            log.error("broker %s: no socket for peer %r", self.core.broker_id, effect.to)
            return
        data = encode(effect.message)
        sock = self._back if kind == "b" else self._front
        frames = [ident, b"", data] if kind == "q" else [ident, data]
        try:
            sock.send_multipart(frames, zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            if exc.errno == errno.EHOSTUNREACH:
                log.info("broker %s: peer %s is gone", self.core.broker_id, effect.to)
                if kind == "b":
                    self._carry_out(self.core.peer_unreachable(effect.to, time.monotonic()))
            elif exc.errno == errno.EAGAIN:
                log.warning(
                    "broker %s: peer %s is not reading; dropped", self.core.broker_id, effect.to
                )
            else:
                raise

    def close(self) -> None:
        """Close the sockets (pending replies get the linger time) and the context."""
        for sock in (self._front, self._back):
            sock.close()
        self.security.stop()
        self._ctx.term()


def _parser() -> argparse.ArgumentParser:
    layout = local_layout()
    parser = argparse.ArgumentParser(
        prog="python -m reference_cluster.processes.broker",
        description="A shopping-list broker: routes clients' requests to live servers.",
    )
    parser.add_argument(
        "--id", default=env("SHOPLIST_BROKER_ID", "b0"), help="broker name (SHOPLIST_BROKER_ID)"
    )
    parser.add_argument(
        "--frontend",
        type=bind_endpoint,
        default=env("SHOPLIST_FRONTEND", layout.frontend(0)),
        metavar="ENDPOINT",
        help="bind for clients (SHOPLIST_FRONTEND; default %(default)s)",
    )
    parser.add_argument(
        "--backend",
        type=bind_endpoint,
        default=env("SHOPLIST_BACKEND", layout.backend(0)),
        metavar="ENDPOINT",
        help="bind for servers (SHOPLIST_BACKEND; default %(default)s)",
    )
    add_seconds_flag(
        parser,
        "--liveness",
        "SHOPLIST_LIVENESS",
        BrokerConfig().liveness,
        "purge a server silent this long",
    )
    parser.add_argument(
        "--member",
        action="append",
        metavar="ID",
        help="a member server's id, repeatable (SHOPLIST_MEMBERS, comma-separated): "
        "requests for a list then go to its holders only; default: to any live server",
    )
    parser.add_argument(
        "--replicas",
        type=parse_positive,
        default=env("SHOPLIST_REPLICAS", str(DEFAULT_REPLICAS)),
        metavar="N",
        help=f"how many members hold each list (SHOPLIST_REPLICAS; default {DEFAULT_REPLICAS})",
    )
    add_common_flags(parser)
    for flag, var, default, text in (
        ("--logins-per-minute", "SHOPLIST_LOGINS_PER_MINUTE", 30, "password attempts"),
        ("--signups-per-hour", "SHOPLIST_SIGNUPS_PER_HOUR", 10, "sign-ups"),
    ):
        parser.add_argument(
            flag,
            type=parse_positive,
            default=env(var, str(default)),  # argparse applies ``type``
            metavar="N",
            help=f"{text} one client address may make ({var}; default {default})",
        )
    add_security_flags(parser, default_keys=env("SHOPLIST_KEYS", "shoplist-data/keys"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a broker until SIGTERM or SIGINT; print ``READY {...}`` once it serves."""
    args = _parser().parse_args(argv)
    setup_logging(args.log_level, args.id)
    stop = StopSignal(watch_parent=args.watch_parent)
    members = args.member or env_list("SHOPLIST_MEMBERS", [])
    try:
        broker = Broker(
            args.id,
            args.frontend,
            args.backend,
            security=security_from_args(args, args.id, frontend=True),
            config=BrokerConfig(
                liveness=args.liveness,
                logins=Rate(args.logins_per_minute, 60.0),
                signups=Rate(args.signups_per_hour, 3600.0),
            ),
            heartbeat=args.zmq_heartbeat,
            membership=Membership(members) if members else None,
            replicas=args.replicas,
        )
    except (zmq.ZMQError, ValueError, ClusterError) as exc:
        print(f"error: broker {args.id}: {exc}", file=sys.stderr)
        return 1
    try:
        print_ready(
            role="broker",
            id=args.id,
            pid=os.getpid(),
            frontend=broker.frontend,
            backend=broker.backend,
            secure=broker.security.secure,
        )
        log.info("broker %s: front end %s, back end %s", args.id, broker.frontend, broker.backend)
        broker.run(stop)
    finally:
        with contextlib.suppress(Exception):
            broker.close()
        stop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
