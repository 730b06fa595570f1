"""What the cluster's processes share: defaults, environment variables, logging, signals,
ZeroMQ socket options and the line a process prints when it is ready.

Every flag of every process has an environment variable (``SHOPLIST_...``) that sets its
default, and every default works on one machine: the brokers and servers listen on
loopback ports counted from :data:`DEFAULT_BASE_PORT` (see :func:`local_layout`).
Endpoints are ZeroMQ endpoint strings, used unchanged, so the same processes run on
several hosts (``tcp://10.0.0.5:7100``) or connect from a chosen source address
(``tcp://127.0.0.2:0;127.0.0.3:7100``).

A process prints one line ``READY {json}`` on its standard output once it serves, and
nothing else there (logs go to standard error); :func:`read_ready` waits for it.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import logging
import math
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import attrs
import zmq

from reference_cluster.errors import InvalidEndpoint, KeysMissing
from reference_cluster.processes.security import Security, load_public, parse_public
from reference_cluster.protocol.messages import MAX_MESSAGE_BYTES

__all__ = [
    "CLIENT_HWM",
    "CLIENT_MAX_MESSAGE_BYTES",
    "DEFAULT_BASE_PORT",
    "DEFAULT_HOST",
    "MAX_SERVERS",
    "MEMBER_HWM",
    "LocalLayout",
    "StopSignal",
    "Timing",
    "add_broker_key_flags",
    "add_common_flags",
    "add_count_flag",
    "add_seconds_flag",
    "add_security_flags",
    "bind_endpoint",
    "bound_client_port",
    "bound_member_port",
    "broker_argv",
    "broker_key_argv",
    "broker_key_from_args",
    "check_endpoint",
    "common_argv",
    "env",
    "env_endpoints",
    "env_float",
    "env_list",
    "exit_text",
    "local_layout",
    "parse_base_port",
    "parse_count",
    "parse_positive",
    "parse_seconds",
    "print_ready",
    "read_ready",
    "require_endpoint",
    "security_argv",
    "security_from_args",
    "server_argv",
    "setup_logging",
    "tune_socket",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_BASE_PORT = 7100
MAX_SERVERS = 16
"""The most servers a :class:`LocalLayout` run by ``shoplist cluster up`` may have: their
peer ports, ``PORT+101`` to ``PORT+116``, stay clear of the brokers' (``PORT`` to
``PORT+11``), and 16 processes are about what one machine serves usefully."""
READY_PREFIX = "READY "
_EXIT_WAIT = 5.0
"""How long :func:`read_ready` waits for a process whose output ended to exit."""

log = logging.getLogger(__name__)


def env(name: str, default: str) -> str:
    """The environment variable ``name``, or ``default`` if unset or empty."""
    return os.environ.get(name) or default


def env_float(name: str, default: float) -> float:
    """A number from the environment; a value that is not a number is an error."""
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"error: {name}={raw!r} is not a number") from None


def parse_seconds(text: str, *, zero_ok: bool = False) -> float:
    """A duration in seconds: a finite number above 0 (or 0 itself where ``zero_ok``).

    Raises:
        argparse.ArgumentTypeError: anything else (the message says what arrived).
    """
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        bound = "0 or more" if zero_ok else "above 0"
        raise argparse.ArgumentTypeError(f"expected a number of seconds {bound}, got {text!r}")
    return value


def add_seconds_flag(
    parser: argparse.ArgumentParser,
    flag: str,
    var: str,
    default: float,
    help: str,
    *,
    zero_ok: bool = False,
    suppress: bool = False,
) -> None:
    """Add ``flag``, a duration in seconds whose default comes from the environment
    variable ``var`` (else ``default``); both are checked by :func:`parse_seconds`.

    ``suppress`` leaves the flag out of the parsed namespace unless given (for flags
    that a sub-command repeats from its parent). A bad value in ``var`` exits with a
    message naming the variable.
    """

    def kind(text: str) -> float:
        return parse_seconds(text, zero_ok=zero_ok)

    kind.__name__ = "seconds"
    raw = os.environ.get(var)
    value = default
    if raw:
        try:
            value = kind(raw)
        except argparse.ArgumentTypeError as exc:
            raise SystemExit(f"error: {var}: {exc}") from None
    parser.add_argument(
        flag,
        type=kind,
        default=argparse.SUPPRESS if suppress else value,
        metavar="SECONDS",
        help=f"{help} ({var}; default {value:g})",
    )


def parse_count(text: str, *, minimum: int = 0, maximum: int | None = None) -> int:
    """A whole number of at least ``minimum`` (and at most ``maximum``, if given; an
    argparse ``type``).

    Raises:
        argparse.ArgumentTypeError: anything else; the message says what was expected
            (and what arrived, cut to 40 characters).
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {_cut(text)!r}") from None
    if maximum is not None and not minimum <= value <= maximum:
        raise argparse.ArgumentTypeError(
            f"expected a number from {minimum} to {maximum}, got {_cut(str(value))}"
        )
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected a number >= {minimum}, got {_cut(str(value))}")
    return value


def _cut(text: str, limit: int = 40) -> str:
    """``text``, or its start and ``...`` if longer than ``limit`` characters."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def add_count_flag(
    parser: argparse.ArgumentParser,
    flag: str,
    var: str,
    default: int,
    help: str,
    *,
    minimum: int = 1,
    maximum: int | None = None,
) -> None:
    """Add ``flag``, a whole number whose default comes from the environment variable
    ``var`` (else ``default``); both are checked by :func:`parse_count`.

    A bad value in ``var`` exits with a message naming the variable, as
    :func:`add_seconds_flag` does.
    """

    def kind(text: str) -> int:
        return parse_count(text, minimum=minimum, maximum=maximum)

    kind.__name__ = "count"
    raw = os.environ.get(var)
    value = default
    if raw:
        try:
            value = kind(raw)
        except argparse.ArgumentTypeError as exc:
            raise SystemExit(f"error: {var}: {exc}") from None
    parser.add_argument(
        flag, type=kind, default=value, metavar="N", help=f"{help} ({var}; default {value})"
    )


def parse_positive(text: str) -> int:
    """A whole number of at least 1 (an argparse ``type``; see :func:`parse_count`)."""
    return parse_count(text, minimum=1)


def env_list(name: str, default: Sequence[str]) -> list[str]:
    """A comma-separated list from the environment (ZeroMQ endpoints hold no commas)."""
    raw = os.environ.get(name)
    if not raw:
        return list(default)
    return [part.strip() for part in raw.split(",") if part.strip()]


_EXAMPLE = "tcp://127.0.0.1:7100"
_HOST_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9_])?")
_DOTTED = re.compile(r"[0-9.]+")
_HOST_PORT = re.compile(r"(?:\[[^\]\s]+\]|[^\s/:;\[\]]+):[0-9]+")


def _endpoint_error(text: str, expected: str, hint: str = "") -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(f"expected {expected}, got {text!r}{hint}")


def _check_host(host: str, text: str, *, wildcard: bool) -> None:
    if host == "*":
        if not wildcard:
            raise _endpoint_error(
                text,
                "a host to connect to",
                " ('*' means every interface, which only a process that binds can use; "
                f"try {text.replace('*', '127.0.0.1', 1)})",
            )
        return
    try:
        if host.startswith("[") and host.endswith("]"):
            ipaddress.IPv6Address(host[1:-1])
            return
        if _DOTTED.fullmatch(host):
            ipaddress.IPv4Address(host)
            return
    except ValueError:
        pass
    else:
        if _HOST_NAME.fullmatch(host):
            return
    raise _endpoint_error(text, "a host name or address in a ZeroMQ endpoint")


def _check_port(port: str, text: str, *, wildcard: bool) -> None:
    if wildcard and port in ("*", "0"):
        return
    if not (port.isascii() and port.isdigit() and len(port) <= 5 and 1 <= int(port) <= 65535):
        hint = " ('*' picks a free port, which only a process that binds can do)"
        raise _endpoint_error(
            text, "a port from 1 to 65535 in a ZeroMQ endpoint", hint if port == "*" else ""
        )


def check_endpoint(text: str, *, bind: bool = False) -> str:
    """A ZeroMQ endpoint, checked before ZeroMQ sees it (ZeroMQ refuses some mistakes
    with a bare "Invalid argument" and quietly misreads others, such as port 99999).

    Accepted: ``tcp://HOST:PORT`` (PORT from 1 to 65535; HOST a name, an IPv4 address or
    a bracketed IPv6 address), ``tcp://SRC:PORT;HOST:PORT`` (connect from a source
    address; its port may be 0 or ``*``, any), ``ipc://PATH`` and ``inproc://NAME``.
    With ``bind`` (an endpoint a process binds), HOST may be ``*`` (every interface) or
    an interface name, and PORT ``*`` or 0 (a free port); a source address may not be
    given.

    Usable as an argparse ``type``.

    Returns:
        ``text`` without surrounding spaces.

    Raises:
        argparse.ArgumentTypeError: one line saying what was expected and what arrived
            (for a missing ``tcp://``, the endpoint it probably meant).
    """
    text = text.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        hint = f" (did you mean tcp://{text}?)" if _HOST_PORT.fullmatch(text) else ""
        raise _endpoint_error(text, f"a ZeroMQ endpoint such as {_EXAMPLE}", hint)
    if scheme == "tcp":
        source, semi, target = rest.rpartition(";")
        if semi:
            if bind:
                hint = " (a source address, SRC;HOST:PORT, is for connecting)"
                raise _endpoint_error(text, "an endpoint to bind", hint)
            src_host, _, src_port = source.rpartition(":")
            _check_host(src_host, text, wildcard=True)
            _check_port(src_port, text, wildcard=True)
        host, colon, port = target.rpartition(":")
        _check_port(port if colon else "", text, wildcard=bind)
        _check_host(host, text, wildcard=bind)
    elif scheme == "ipc":
        if not rest:
            raise _endpoint_error(text, "ipc://PATH")
        if rest == "*" and not bind:
            raise _endpoint_error(text, "ipc://PATH", " ('*' is for binding)")
    elif scheme == "inproc":
        if not rest:
            raise _endpoint_error(text, "inproc://NAME")
    else:
        raise _endpoint_error(
            text, "a ZeroMQ endpoint (tcp://HOST:PORT, ipc://PATH or inproc://NAME)"
        )
    return text


def bind_endpoint(text: str) -> str:
    """:func:`check_endpoint` for an endpoint a process binds (an argparse ``type``)."""
    return check_endpoint(text, bind=True)


def require_endpoint(text: str, what: str = "endpoint", *, bind: bool = False) -> str:
    """``text`` if it is a ZeroMQ endpoint (see :func:`check_endpoint`), for code that
    gets endpoints from elsewhere than a command line.

    Raises:
        InvalidEndpoint: one line starting with ``what`` (``SHOPLIST_BROKERS: expected a
            ZeroMQ endpoint such as tcp://127.0.0.1:7100, got '127.0.0.1:7100' ...``).
    """
    try:
        return check_endpoint(text, bind=bind)
    except argparse.ArgumentTypeError as exc:
        raise InvalidEndpoint(f"{what}: {exc}") from None


def env_endpoints(var: str, default: Sequence[str], *, bind: bool = False) -> list[str]:
    """The comma-separated endpoints in the environment variable ``var`` (else
    ``default``), each checked by :func:`require_endpoint`.

    Raises:
        InvalidEndpoint: one line naming the variable; the commands print it as their
            one-line error, as they do for a bad duration variable
            (:func:`add_seconds_flag`). Raised when the variable is read, which is after
            the command line parsed.
    """
    parts = env_list(var, default)
    if not parts:
        raw = os.environ.get(var, "")
        raise InvalidEndpoint(f"{var}: expected ZeroMQ endpoints separated by commas, got {raw!r}")
    return [require_endpoint(part, var, bind=bind) for part in parts]


def _layout_span(brokers: int, servers: int) -> int:
    """How far above the base port a layout's highest port is."""
    return max(10 * (brokers - 1) + 1, 100 + servers)


def parse_base_port(text: str, *, brokers: int = 2, servers: int = 3) -> int:
    """A base port for :class:`LocalLayout`: a whole number that keeps every port of the
    layout (``PORT`` to ``PORT+103`` for 2 brokers and 3 servers) in 1 to 65535.

    Raises:
        argparse.ArgumentTypeError: anything else (the message gives the range).
    """
    span = _layout_span(brokers, servers)
    top = 65535 - span
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= top:
        raise argparse.ArgumentTypeError(
            f"expected a base port from 1 to {top} (the cluster uses PORT to PORT+{span}; "
            f"ports end at 65535), got {text!r}"
        )
    return value


@attrs.frozen
class LocalLayout:
    """The endpoints of a cluster on one host: brokers ``b0``, ``b1``, ... and servers
    ``s1``, ``s2``, ...; port ``base + 10 * i`` is broker ``i``'s front end (clients) and
    the next port its back end (servers); port ``base + 100 + j`` is server ``sj``'s peer
    end point (replication and status)."""

    host: str
    base: int = attrs.field()
    brokers: int = 2
    servers: int = 3

    @base.validator
    def _check_base(self, _attribute: object, base: int) -> None:
        top = base + _layout_span(self.brokers, self.servers)
        if base < 1 or top > 65535:
            raise ValueError(
                f"base port {base} puts the cluster's ports outside 1 to 65535 "
                f"(it uses {base} to {top})"
            )

    def frontend(self, i: int) -> str:
        """Broker ``i``'s front end."""
        return f"tcp://{self.host}:{self.base + 10 * i}"

    def backend(self, i: int) -> str:
        """Broker ``i``'s back end."""
        return f"tcp://{self.host}:{self.base + 10 * i + 1}"

    def peer(self, j: int) -> str:
        """Server ``sj``'s peer end point (``j`` from 1)."""
        return f"tcp://{self.host}:{self.base + 100 + j}"

    @property
    def frontends(self) -> list[str]:
        """Every broker's front end."""
        return [self.frontend(i) for i in range(self.brokers)]

    @property
    def backends(self) -> list[str]:
        """Every broker's back end."""
        return [self.backend(i) for i in range(self.brokers)]

    @property
    def server_ids(self) -> list[str]:
        """``s1`` ... ``sN``."""
        return [f"s{j}" for j in range(1, self.servers + 1)]

    @property
    def ports(self) -> list[int]:
        """Every port the layout uses, in increasing order."""
        brokers = [self.base + 10 * i + k for i in range(self.brokers) for k in (0, 1)]
        return sorted([*brokers, *(self.base + 100 + j for j in range(1, self.servers + 1))])


def local_layout() -> LocalLayout:
    """The default layout, from ``SHOPLIST_HOST`` and ``SHOPLIST_BASE_PORT``; a bad base
    port exits with one line naming the variable (see :func:`parse_base_port`)."""
    raw = os.environ.get("SHOPLIST_BASE_PORT")
    base = DEFAULT_BASE_PORT
    if raw:
        try:
            base = parse_base_port(raw)
        except argparse.ArgumentTypeError as exc:
            raise SystemExit(f"error: SHOPLIST_BASE_PORT: {exc}") from None
    return LocalLayout(env("SHOPLIST_HOST", DEFAULT_HOST), base)


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """``--log-level``, ``--zmq-heartbeat`` and ``--watch-parent``."""
    parser.add_argument(
        "--log-level",
        default=env("SHOPLIST_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
        help="logging threshold (SHOPLIST_LOG_LEVEL; default %(default)s)",
    )
    add_seconds_flag(
        parser,
        "--zmq-heartbeat",
        "SHOPLIST_ZMQ_HEARTBEAT",
        1.0,
        "connection check (TCP keepalive), 0 for none; a link whose data goes unacknowledged "
        "3 times as long is dropped and redialled, so silent partitions are noticed",
        zero_ok=True,
    )
    parser.add_argument(
        "--watch-parent",
        action="store_true",
        help="exit when the process that started this one exits",
    )


def add_security_flags(parser: argparse.ArgumentParser, *, default_keys: str | None) -> None:
    """``--keys DIR`` and ``--insecure`` (see :mod:`reference_cluster.processes.security`)."""
    where = f"default {default_keys}" if default_keys else "default DATA_DIR/keys"
    parser.add_argument(
        "--keys",
        default=os.environ.get("SHOPLIST_KEYS") or default_keys,
        metavar="DIR",
        help=f"the key folder made by `shoplist cluster keys` (SHOPLIST_KEYS; {where})",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        default=env("SHOPLIST_INSECURE", "") not in ("", "0"),
        help="no encryption and no authentication of members: experiments only "
        "(SHOPLIST_INSECURE=1)",
    )


def security_from_args(
    args: argparse.Namespace, name: str, *, keys: Path | None = None, frontend: bool = False
) -> Security:
    """The security of member ``name`` that ``--keys`` / ``--insecure`` describe
    (``keys`` when the flag was not given).

    Raises:
        KeysMissing, ValueError: a key file is missing or malformed.
    """
    if args.insecure:
        return Security.insecure()
    folder = Path(args.keys) if args.keys else keys
    if folder is None:
        raise ValueError("no key folder: pass --keys DIR, or --insecure for an experiment")
    return Security.member(folder, name, frontend=frontend)


def add_broker_key_flags(
    parser: argparse.ArgumentParser, *, default: Any = None, insecure_default: Any = None
) -> None:
    """A client's ``--broker-key KEY|FILE`` and ``--insecure`` (argparse defaults may be
    given, for sub-command parsers that must not override the main parser's)."""
    parser.add_argument(
        "--broker-key",
        default=default,
        metavar="KEY|FILE",
        help="the brokers' public key, or the file that holds it (the cluster's "
        "keys/frontend.key) (SHOPLIST_BROKER_KEY)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        default=insecure_default,
        help="talk to brokers without encryption: experiments only (SHOPLIST_INSECURE=1)",
    )


def broker_key_from_args(args: argparse.Namespace, default_file: Path | None) -> bytes | None:
    """The brokers' public key that ``--broker-key`` or ``SHOPLIST_BROKER_KEY`` give, else
    the one in ``default_file`` if it exists; None if ``--insecure``/``SHOPLIST_INSECURE``.

    Raises:
        KeysMissing: no key anywhere (the message says where to find one).
        ValueError: a malformed key.
    """
    if args.insecure or env("SHOPLIST_INSECURE", "") not in ("", "0"):
        return None
    given: str | None = args.broker_key or os.environ.get("SHOPLIST_BROKER_KEY") or None
    if given is not None:
        text = given.strip()
        path = Path(text).expanduser()
        if len(text) == 40 and not path.is_file():  # Z85 text (it may hold a '/')
            return parse_public(text, "--broker-key")
        return load_public(path)
    if default_file is not None and default_file.exists():
        return load_public(default_file)
    where = f" (none at {default_file})" if default_file is not None else ""
    raise KeysMissing(
        f"no broker key{where}: pass --broker-key FILE (the cluster's keys/frontend.key) "
        "or set SHOPLIST_BROKER_KEY, or --insecure for a cluster without keys"
    )


def broker_key_argv(broker_key: bytes | str | None) -> list[str]:
    """The flag that gives a client the brokers' key (None: ``--insecure``). Written as
    ``--broker-key=KEY``: a Z85 key may start with ``-``, which argparse would otherwise
    take for a flag."""
    if broker_key is None:
        return ["--insecure"]
    text = broker_key.decode() if isinstance(broker_key, bytes) else broker_key
    return [f"--broker-key={text}"]


def security_argv(keys: Path | None) -> list[str]:
    """The flags that give a child process the key folder ``keys`` (None: insecure)."""
    return ["--insecure"] if keys is None else ["--keys", str(keys)]


def setup_logging(level: str, name: str) -> None:
    """Log to standard error, each line tagged with the process name."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s",
    )


CLIENT_MAX_MESSAGE_BYTES = 8 * 1024 * 1024
"""The largest frame a broker's front end (the client port) takes: twice the largest push
a server accepts (``PushLimits.max_delta_bytes``, 4 MiB; a 10,000-item list edited by one
device encodes to about 0.8 MiB, by three devices to 3 to 5 MiB), so an oversized push
still arrives and gets a clear ``quota`` refusal. A client that sends a larger frame is
disconnected at its header, before anything is stored."""
CLIENT_HWM = 8
"""Messages queued per client connection, each way, on a broker's front end. A client
has one request in flight (and its retries), so 8 is never reached by an honest one;
queued input per connection stays under ``(CLIENT_HWM + 1) * CLIENT_MAX_MESSAGE_BYTES``
(72 MiB), where ZeroMQ's default of 1,000 frames of up to 64 MiB allowed 64 GB."""
MEMBER_HWM = 100
"""Messages queued per member connection, each way, on a broker's back end and a
server's peer end point (ZeroMQ's default is 1,000). Members are authenticated, and their
frames may be as large as a message (:data:`MAX_MESSAGE_BYTES`)."""


def tune_socket(sock: zmq.Socket[Any], *, heartbeat: float, linger: float = 0.5) -> None:
    """The options every socket of the cluster gets: a bounded linger, fast redial, no
    frame larger than a message may be (a peer that sends one is disconnected before it
    fills memory), and dead-link detection by the kernel (``heartbeat`` seconds; 0 for
    none).

    No ZeroMQ (ZMTP) heartbeats: with them, libzmq 4.3.5 aborts the whole process
    (``Assertion failed: !_io_error (src/stream_engine_base.cpp:310)``) when a peer that
    filled its receive queue hangs up and a heartbeat timer then fires on the dead
    connection; connection churn on any port did that within seconds. Instead a link
    whose sent data stays unacknowledged for ``3 * heartbeat`` seconds is dropped
    (``TCP_MAXRT``: the kernel's ``TCP_USER_TIMEOUT``), an idle one is probed with TCP
    keepalives every ``heartbeat`` seconds (at least 1 s) and dropped after as long, and
    either is redialled: a silent partition is noticed about as fast as before, without
    any timer inside libzmq's connection engine.
    """
    sock.setsockopt(zmq.LINGER, int(linger * 1000))
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
    sock.setsockopt(zmq.RECONNECT_IVL, 100)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
    if heartbeat > 0:
        ms = max(1, int(heartbeat * 1000))
        probe_every = max(1, math.ceil(heartbeat))  # the kernel counts whole seconds
        sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
        sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, probe_every)
        sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, probe_every)
        sock.setsockopt(zmq.TCP_KEEPALIVE_CNT, 3)
        sock.setsockopt(zmq.TCP_MAXRT, 3 * ms)
        # A connection attempt into a partition (SYNs dropped) is given up after one
        # heartbeat and redialled at least once per heartbeat; otherwise the kernel's SYN
        # back-off (1, 2, 4, 8 s ...) keeps a healed link silent for seconds.
        sock.setsockopt(zmq.CONNECT_TIMEOUT, ms)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, min(1000, ms))


def bound_client_port(sock: zmq.Socket[Any]) -> None:
    """Bound what a broker's front end holds for each client (call after
    :func:`tune_socket`, before binding): frames of at most
    :data:`CLIENT_MAX_MESSAGE_BYTES`, and :data:`CLIENT_HWM` messages queued each way."""
    sock.setsockopt(zmq.MAXMSGSIZE, CLIENT_MAX_MESSAGE_BYTES)
    sock.setsockopt(zmq.RCVHWM, CLIENT_HWM)
    sock.setsockopt(zmq.SNDHWM, CLIENT_HWM)


def bound_member_port(sock: zmq.Socket[Any]) -> None:
    """Bound what a member end point (a broker's back end, a server's peer end point)
    queues for each connection: :data:`MEMBER_HWM` messages each way (call before
    binding)."""
    sock.setsockopt(zmq.RCVHWM, MEMBER_HWM)
    sock.setsockopt(zmq.SNDHWM, MEMBER_HWM)


class StopSignal:
    """SIGTERM and SIGINT set :attr:`stopping` and wake a poller that watches :attr:`fd`
    (the signal module's wake-up descriptor); :meth:`close` restores the old handlers.

    Args:
        watch_parent: also stop when the parent process is gone.
    """

    def __init__(self, *, watch_parent: bool = False) -> None:
        self.stopping = False
        self.reason = ""
        self._parent = os.getppid() if watch_parent else None
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)
        self.fd = self._r.fileno()
        self._old_fd = signal.set_wakeup_fd(self._w.fileno(), warn_on_full_buffer=False)
        self._old = {
            sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGINT)
        }

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping = True
        self.reason = signal.Signals(signum).name

    def drain(self) -> None:
        """Empty the wake-up descriptor (call when the poller reports it readable)."""
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while self._r.recv(512):
                pass

    def check(self) -> bool:
        """Whether to stop now (a signal arrived, or the watched parent is gone)."""
        if not self.stopping and self._parent is not None and os.getppid() != self._parent:
            self.stopping = True
            self.reason = "parent exited"
        return self.stopping

    def close(self) -> None:
        """Restore the previous handlers and wake-up descriptor."""
        for sig, old in self._old.items():
            signal.signal(sig, old)
        signal.set_wakeup_fd(self._old_fd)
        self._r.close()
        self._w.close()


def print_ready(**info: Any) -> None:
    """Print the ready line on standard output."""
    print(READY_PREFIX + json.dumps(info, sort_keys=True), flush=True)


def exit_text(returncode: int) -> str:
    """How a process ended: ``exited with status 1``, ``was killed by SIGKILL``."""
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-returncode).name}"
        return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


def read_ready(proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    """Wait (at most ``timeout`` seconds) for ``proc`` to print its ready line.

    Raises:
        TimeoutError: no ready line in time (``pid N was not ready within 30s``).
        RuntimeError: the process ended first (``pid N exited with status 1 before it
            was ready``); said as soon as its output ends, never after the timeout.
    """
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    ended = False
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            if b"\n" in buf:
                line, _, buf = buf.partition(b"\n")
                text = line.decode("utf-8", "replace").strip()
                if text.startswith(READY_PREFIX):
                    info: dict[str, Any] = json.loads(text[len(READY_PREFIX) :])
                    return info
                continue
            if sel.select(timeout=min(left, 0.5)):
                chunk = os.read(fd, 4096)
                if not chunk:
                    ended = True
                    break
                buf += chunk
            elif proc.poll() is not None:
                break
    if ended:
        # Its output ends as it exits, a moment before it can be reaped: wait for that.
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, min(_EXIT_WAIT, deadline - time.monotonic())))
    if proc.poll() is not None:
        raise RuntimeError(f"pid {proc.pid} {exit_text(proc.returncode)} before it was ready")
    if ended:
        raise RuntimeError(f"pid {proc.pid} closed its output before it was ready")
    raise TimeoutError(f"pid {proc.pid} was not ready within {timeout:g}s")


@attrs.frozen
class Timing:
    """The timing flags given to every process (seconds), and the servers' memory."""

    heartbeat: float = 1.0
    anti_entropy: float = 2.0
    liveness: float = 3.0
    zmq_heartbeat: float = 1.0
    cache_lists: int | None = None
    """The servers' ``--cache-lists`` (None: their default); tests pass 1 so that every
    server evicts and reloads lists."""


def common_argv(timing: Timing, log_level: str) -> list[str]:
    """The flags every child process takes: log level, ZeroMQ heartbeat, ``--watch-parent``."""
    return [
        "--log-level",
        log_level,
        "--zmq-heartbeat",
        str(timing.zmq_heartbeat),
        "--watch-parent",
    ]


def broker_argv(
    name: str,
    *,
    frontend: str,
    backend: str,
    timing: Timing,
    log_level: str,
    keys: Path | None,
    python: str = sys.executable,
    members: Sequence[str] = (),
    replicas: int | None = None,
) -> list[str]:
    """The command line of broker ``name`` bound to ``frontend`` and ``backend``, with the
    key folder ``keys`` (None: insecure), the member servers it routes a list's requests
    among (none: any live server) and how many of them hold each list (None: the
    broker's default)."""
    argv = [
        python,
        "-m",
        "reference_cluster.processes.broker",
        "--id",
        name,
        "--frontend",
        frontend,
        "--backend",
        backend,
        "--liveness",
        str(timing.liveness),
        *common_argv(timing, log_level),
        *security_argv(keys),
    ]
    for member in members:
        argv += ["--member", member]
    return argv if replicas is None else [*argv, "--replicas", str(replicas)]


def server_argv(
    name: str,
    *,
    store: Path,
    bind: str,
    brokers: Mapping[str, str],
    peers: Mapping[str, str],
    timing: Timing,
    log_level: str,
    keys: Path | None,
    python: str = sys.executable,
    replicas: int | None = None,
    write_quorum: int | None = None,
) -> list[str]:
    """The command line of server ``name``: its store, its peer end point,
    ``{broker id: back end}`` of the brokers it dials, ``{peer id: end point}`` of the
    other servers (with it, the members), the key folder ``keys`` (None: insecure), how
    many of the members hold each list and how many hold an edit before it is
    acknowledged (None: the server's defaults)."""
    argv = [
        python,
        "-m",
        "reference_cluster.processes.server",
        "--id",
        name,
        "--store",
        str(store),
        "--bind",
        bind,
        "--heartbeat",
        str(timing.heartbeat),
        "--anti-entropy",
        str(timing.anti_entropy),
        *common_argv(timing, log_level),
        *security_argv(keys),
    ]
    for broker, endpoint in brokers.items():
        argv += ["--broker", f"{broker}={endpoint}"]
    for peer, endpoint in peers.items():
        argv += ["--peer", f"{peer}={endpoint}"]
    if timing.cache_lists is not None:
        argv += ["--cache-lists", str(timing.cache_lists)]
    if replicas is not None:
        argv += ["--replicas", str(replicas)]
    if write_quorum is not None:
        argv += ["--write-quorum", str(write_quorum)]
    return argv if peers else [*argv, "--no-peers"]
