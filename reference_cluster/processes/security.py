"""Encrypted, authenticated links: CURVE key pairs, the members' allow-list, ZAP.

Theory of operation
-------------------
Rule 1 (every link is CURVE). A client's link to a broker's front end, a server's link to
a broker's back end and a server's link to another server's peer end point are all
CurveZMQ: encrypted, and the client side proves it talks to the holder of the secret key
it expects. Nothing, not even a login, crosses a link in clear.

Rule 2 (who is who). Members (brokers, servers, and the operator's ``admin`` tool key)
each have a key pair. Brokers share one more pair, ``frontend``, whose public key clients
pin: a process that binds a dead broker's port cannot complete a handshake without the
secret key, so it never sees a password. On the member end points (a broker's back end, a
server's peer end point) a ZAP handler admits only the public keys in the allow-list
(``KEYS/members/*.key``); anyone else's handshake fails and no message of theirs is read.
The client end point (front end) admits any key: clients prove who they are with a login.

Rule 3 (the key folder). ``shoplist cluster keys`` (and ``cluster up``) make the folder::

    KEYS/frontend.key            public: give it to clients (SHOPLIST_BROKER_KEY)
    KEYS/members/NAME.key        public: the allow-list, one per member
    KEYS/private/NAME.key_secret secret: mode 0600 in a 0700 folder

The files use ZeroMQ's certificate format (``zmq.auth`` reads them). A member key is
made once and kept; adding a member is adding its public key to every member's folder and
restarting them.

Rule 4 (insecure mode is explicit). Without keys a process refuses to start unless told
``--insecure`` (``SHOPLIST_INSECURE=1``); it then logs a warning at start that anyone who
reaches a port is a member. Experiments only.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs
import zmq
from zmq.auth.thread import ThreadAuthenticator

from reference_cluster.errors import KeysMissing

__all__ = [
    "ADMIN",
    "FRONTEND",
    "INSECURE_WARNING",
    "KeyPair",
    "KeysMissing",
    "Operator",
    "Security",
    "client_keys",
    "ensure_keys",
    "load_public",
    "member_names",
    "parse_public",
]

log = logging.getLogger(__name__)

ADMIN = "admin"
"""The operator's member key: tools use it to ask servers for their status."""
FRONTEND = "frontend"
"""The key pair every broker's front end shares; clients pin its public key."""
MEMBERS_DOMAIN = "members"
CLIENTS_DOMAIN = "clients"
INSECURE_WARNING = (
    "INSECURE MODE: links are not encrypted and anyone who reaches a port can pose as a "
    "member; use it only for experiments"
)

_Z85_LENGTH = 40
_BANNER = "#   ZeroMQ CURVE certificate of {name}: {what}\n"


@attrs.frozen
class KeyPair:
    """A CURVE key pair in Z85 text (40 characters each)."""

    public: bytes
    secret: bytes = attrs.field(repr=False)

    @classmethod
    def new(cls) -> KeyPair:
        """A fresh random pair."""
        public, secret = zmq.curve_keypair()
        return cls(public, secret)


def parse_public(text: str, what: str = "key") -> bytes:
    """A Z85 public key (40 characters that decode to 32 bytes), as bytes.

    Raises:
        ValueError: anything else; the message says what was expected.
    """
    raw = text.strip().encode("ascii", "replace")
    if len(raw) == _Z85_LENGTH:
        try:
            if len(zmq.utils.z85.decode(raw)) == 32:
                return raw
        except (ValueError, KeyError, TypeError):
            pass
    shown = text if len(text) <= 60 else text[:57] + "..."
    raise ValueError(f"{what}: expected a CURVE public key (40 Z85 characters), got {shown!r}")


def _read_fields(path: Path) -> dict[str, bytes]:
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise KeysMissing(f"no key file {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeysMissing(f"cannot read key file {path}: {exc}") from None
    fields: dict[str, bytes] = {}
    for line in text.splitlines():
        name, sep, value = line.strip().partition("=")
        if sep and name.strip() in ("public-key", "secret-key"):
            fields[name.strip()] = value.strip().strip("\"'").encode("ascii", "replace")
    return fields


def load_public(path: Path) -> bytes:
    """The public key in a certificate file.

    Raises:
        KeysMissing: no such file. ValueError: the file holds no valid public key.
    """
    fields = _read_fields(path)
    return parse_public(fields.get("public-key", b"").decode("ascii", "replace"), str(path))


def _load_pair(path: Path) -> KeyPair:
    fields = _read_fields(path)
    public = parse_public(fields.get("public-key", b"").decode("ascii", "replace"), str(path))
    secret = fields.get("secret-key", b"")
    if len(secret) != _Z85_LENGTH:
        raise ValueError(f"{path}: expected a secret key (40 Z85 characters)")
    return KeyPair(public, secret)


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to a new file that only its owner may read (0600 from the start)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def _certificate(name: str, pair: KeyPair, *, secret: bool) -> str:
    what = "public and secret key: keep private" if secret else "public key"
    lines = [_BANNER.format(name=name, what=what), "metadata\n", "curve\n"]
    lines.append(f'    public-key = "{pair.public.decode()}"\n')
    if secret:
        lines.append(f'    secret-key = "{pair.secret.decode()}"\n')
    return "".join(lines)


def _private_folder(folder: Path) -> None:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)


def ensure_keys(keys: Path, members: Iterable[str]) -> list[str]:
    """Make the key folder (see the module notes) with a pair for each of ``members``
    and for the front end, keeping every pair that exists. Returns the names made.

    Raises:
        OSError: the folder cannot be written.
    """
    made: list[str] = []
    _private_folder(keys / "private")
    (keys / "members").mkdir(parents=True, exist_ok=True)
    for name in (FRONTEND, *members):
        secret = keys / "private" / f"{name}.key_secret"
        public = keys / (f"{name}.key" if name == FRONTEND else f"members/{name}.key")
        if secret.exists():
            pair = _load_pair(secret)
        else:
            pair = KeyPair.new()
            _write_private(secret, _certificate(name, pair, secret=True))
            made.append(name)
        if not public.exists() or load_public(public) != pair.public:
            public.write_text(_certificate(name, pair, secret=False), "utf-8")
    return made


def member_names(keys: Path) -> dict[bytes, str]:
    """``{public key: member name}`` of the allow-list ``KEYS/members/*.key``.

    Raises:
        KeysMissing: no members folder. ValueError: a file holds no valid key.
    """
    folder = keys / "members"
    if not folder.is_dir():
        raise KeysMissing(f"no members folder {folder}: make the keys with `shoplist cluster keys`")
    return {load_public(p): p.stem for p in sorted(folder.glob("*.key"))}


def client_keys(broker_key: bytes | None) -> Security:
    """The security of a client: pin ``broker_key`` (the front ends' public key), or
    insecure if it is None."""
    if broker_key is None:
        return Security(None, None)
    return Security(None, None, frontend_public=broker_key)


@attrs.define
class Security:
    """What one process needs to secure its sockets.

    Use :meth:`member` for a broker or server, :func:`client_keys` for a client, and
    :meth:`insecure` for experiments. Call :meth:`start` once the ZeroMQ context exists
    (it starts the ZAP handler on member end points) and :meth:`stop` before the context
    is terminated.

    Attributes:
        keys: the key folder (None for a client or insecure).
        own: this process's key pair (None for a client or insecure).
        frontend_public: the front ends' public key (what a client pins).
    """

    keys: Path | None
    own: KeyPair | None
    frontend_public: bytes | None = None
    frontend: KeyPair | None = None
    members: Mapping[bytes, str] = attrs.field(factory=dict)
    _auth: ThreadAuthenticator | None = None

    @classmethod
    def member(cls, keys: Path, name: str, *, frontend: bool = False) -> Security:
        """The security of member ``name`` from the key folder ``keys``; ``frontend``
        also loads the front-end pair (brokers).

        Raises:
            KeysMissing: a key file is missing (the message says how to make it).
            ValueError: a key file is malformed.
        """
        hint = f"; make the keys with `shoplist cluster keys --data {keys.parent}`"
        try:
            own = _load_pair(keys / "private" / f"{name}.key_secret")
            front = _load_pair(keys / "private" / f"{FRONTEND}.key_secret") if frontend else None
            members = member_names(keys)
        except KeysMissing as exc:
            raise KeysMissing(f"{exc}{hint}") from None
        if own.public not in members:
            raise KeysMissing(f"{name}'s public key is not in {keys / 'members'}{hint}")
        return cls(keys, own, front.public if front else None, front, members)

    @classmethod
    def insecure(cls) -> Security:
        """No encryption and no authentication (experiments only; logs a warning)."""
        return cls(None, None)

    @property
    def secure(self) -> bool:
        """Whether links are encrypted."""
        return self.own is not None or self.frontend_public is not None

    def start(self, ctx: zmq.Context[Any]) -> None:
        """Start the ZAP handler of a member (nothing for a client); warn if insecure."""
        if not self.secure:
            log.warning(INSECURE_WARNING)
            return
        if self.own is None or self._auth is not None:
            return
        auth = ThreadAuthenticator(ctx, log=logging.getLogger(f"{__name__}.zap"))
        auth.start()
        allowed = set(self.members)
        auth.configure_curve_callback(MEMBERS_DOMAIN, _Allow(frozenset(allowed)))
        # Not configure_curve(CURVE_ALLOW_ANY): that admits any key in every domain.
        auth.configure_curve_callback(CLIENTS_DOMAIN, _Allow(frozenset(), anyone=True))
        self._auth = auth

    def stop(self) -> None:
        """Stop the ZAP handler (before the context is terminated)."""
        if self._auth is not None:
            self._auth.stop()
            self._auth = None

    def reload_members(self) -> None:
        """Read the allow-list again (a member added to the cluster brings its key):
        new connections are checked against it; connections made stay.

        Raises:
            KeysMissing, ValueError: the folder or a key file is missing or malformed.
        """
        if self.keys is None or self.own is None:
            return
        members = member_names(self.keys)
        object.__setattr__(self, "members", members)
        if self._auth is not None:
            self._auth.configure_curve_callback(MEMBERS_DOMAIN, _Allow(frozenset(members)))

    def serve_members(self, sock: zmq.Socket[Any]) -> None:
        """Make ``sock`` (before bind) a CURVE server that admits only members."""
        if self.own is not None:
            _curve_server(sock, MEMBERS_DOMAIN, self.own)

    def serve_clients(self, sock: zmq.Socket[Any]) -> None:
        """Make ``sock`` (before bind) a CURVE server with the front-end pair."""
        if self.frontend is not None:
            _curve_server(sock, CLIENTS_DOMAIN, self.frontend)

    def dial_member(self, sock: zmq.Socket[Any], name: str) -> None:
        """Make ``sock`` (before connect) a CURVE client of member ``name``.

        Raises:
            KeysMissing: ``name`` has no public key in the allow-list.
        """
        if self.own is None:
            return
        server = next((k for k, n in self.members.items() if n == name), None)
        if server is None:
            raise KeysMissing(f"no public key for member {name!r} in {self._members_folder()}")
        _curve_client(sock, self.own, server)

    def dial_broker(self, sock: zmq.Socket[Any]) -> None:
        """Make ``sock`` (before connect) a CURVE client of the brokers' front ends, with a
        fresh pair of its own (clients prove who they are by logging in)."""
        if self.frontend_public is None:
            return
        _curve_client(sock, KeyPair.new(), self.frontend_public)

    def _members_folder(self) -> Path | None:
        return None if self.keys is None else self.keys / "members"


@attrs.frozen
class Operator:
    """What the operator's tools (status probes, tests) dial with: the front ends' public
    key for brokers and the ``admin`` member key for servers' peer end points."""

    client: Security
    admin: Security

    @classmethod
    def from_keys(cls, keys: Path | None) -> Operator:
        """The operator of the cluster whose key folder is ``keys`` (None: insecure).

        Raises:
            KeysMissing, ValueError: a key file is missing or malformed.
        """
        if keys is None:
            return cls(Security.insecure(), Security.insecure())
        return cls(client_keys(load_public(keys / f"{FRONTEND}.key")), Security.member(keys, ADMIN))

    def dialer(self, name: str, *, broker: bool) -> Callable[[zmq.Socket[Any]], None]:
        """What secures a socket (before it connects) to talk to ``name``: a broker's
        front end as a client does, or a server's peer end point as ``admin``."""
        if broker:
            return self.client.dial_broker
        return functools.partial(self.admin.dial_member, name=name)


def _curve_server(sock: zmq.Socket[Any], domain: str, own: KeyPair) -> None:
    sock.setsockopt(zmq.ZAP_DOMAIN, domain.encode())
    sock.setsockopt(zmq.CURVE_SECRETKEY, own.secret)
    sock.setsockopt(zmq.CURVE_SERVER, 1)


def _curve_client(sock: zmq.Socket[Any], own: KeyPair, server: bytes) -> None:
    sock.setsockopt(zmq.CURVE_SERVERKEY, server)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, own.public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, own.secret)


@attrs.frozen
class _Allow:
    """The ZAP callback of the members' domain: is this Z85 key in the allow-list?"""

    keys: frozenset[bytes]
    anyone: bool = False

    def callback(self, domain: str, key: bytes) -> bool:
        return self.anyone or key in self.keys
