"""User accounts: sign-up rules, password hashing, login and session tokens.

No I/O happens here: the account records live in a store that follows
:class:`AccountStore` (the server's
:class:`~reference_cluster.storage.server_store.ServerStore` does), the time comes in as
``now`` (seconds since the epoch, so expiry survives restarts) and randomness comes from
an injectable ``random_bytes`` (``secrets.token_bytes`` by default).

Rules this module keeps:

* Passwords are never stored, logged, or put in an error message or ``repr``. A password is
  normalised (NFKC), then hashed with scrypt and a fresh 16-byte salt per hash; the stored
  form describes itself, ``scrypt$n$r$p$salt$hash`` (salt and hash in unpadded base64url),
  so the cost can be raised later without breaking old hashes. Hashes are compared with
  :func:`hmac.compare_digest`. New hashes use :data:`DEFAULT_SCRYPT`, the current OWASP
  guidance (N=2**17, r=8, p=1: 128 MiB and about half a second per hash).
* Hashing is slow on purpose, so a server never hashes on its event loop: the directory
  describes the work as a :class:`HashJob` (verify a password against a stored hash, or
  hash a new one), the server's shell runs it in a bounded worker pool, and hands the
  :class:`HashResult` back. :meth:`HashJob.run` is the only place that calls scrypt for a
  request.
* Unknown user and wrong password fail the same way (:class:`LoginFailed`) and take about
  the same time: an unknown name is checked against a dummy hash.
* A session token is 32 random bytes (base64url). The server keeps only its SHA-256, so a
  copy of the server's database does not hold live tokens; the client keeps the token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import unicodedata
import uuid
from collections.abc import Callable
from typing import Protocol

import attrs

from reference_cluster.errors import (
    InvalidPassword,
    InvalidUserName,
    LoginFailed,
    SessionExpired,
    SessionInvalid,
    StoreCorrupt,
)

__all__ = [
    "DEFAULT_SCRYPT",
    "DEFAULT_SESSION_TTL",
    "MAX_PASSWORD_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "Account",
    "AccountStore",
    "Accounts",
    "DeletedAccount",
    "HashJob",
    "HashResult",
    "LoginResult",
    "ScryptParams",
    "Session",
    "check_new_password",
    "hash_password",
    "hash_token",
    "new_token",
    "normalize_user_name",
    "unmatchable_hash",
    "verify_password",
]

MIN_PASSWORD_LENGTH = 8
"""Fewest characters in a new password (after NFKC normalisation)."""
MAX_PASSWORD_LENGTH = 1024
"""Most characters in a password; bounds the work one login request can cause."""
DEFAULT_SESSION_TTL = 30 * 24 * 3600.0
"""How long a session token stays valid, in seconds."""

_USER_NAME = re.compile(r"[a-z][a-z0-9_.-]{2,31}")
_SALT_BYTES = 16
_HASH_BYTES = 32
_TOKEN_BYTES = 32
_HASH_FIELDS = 6


def _power_of_two(_inst: object, attr: attrs.Attribute[int], value: int) -> None:
    if type(value) is not int or value < 2 or value > 2**20 or value & (value - 1):
        raise ValueError(f"scrypt {attr.name} must be a power of two in 2..2**20, got {value!r}")


def _small_positive(limit: int) -> Callable[[object, attrs.Attribute[int], int], None]:
    def check(_inst: object, attr: attrs.Attribute[int], value: int) -> None:
        if type(value) is not int or not 1 <= value <= limit:
            raise ValueError(f"scrypt {attr.name} must be an integer in 1..{limit}, got {value!r}")

    return check


@attrs.frozen
class ScryptParams:
    """The scrypt cost: ``n`` (CPU/memory, a power of two), ``r`` (block size) and ``p``
    (parallelism). The defaults are the OWASP guidance: 128 MiB and about half a second
    per hash on one core."""

    n: int = attrs.field(default=2**17, validator=_power_of_two)
    r: int = attrs.field(default=8, validator=_small_positive(32))
    p: int = attrs.field(default=1, validator=_small_positive(16))

    @property
    def maxmem(self) -> int:
        """The memory bound to give :func:`hashlib.scrypt` for these parameters."""
        return 128 * self.r * (self.n + 2) + 128 * self.r * self.p + (1 << 20)


DEFAULT_SCRYPT = ScryptParams()


@attrs.frozen
class Account:
    """One user: a random id, a unique normalised name, the password hash, when the
    account was created (seconds since the epoch), and ``version``, how many times its
    password was changed (the newest change wins between servers)."""

    user_id: str
    name: str
    password_hash: str = attrs.field(repr=False)
    created: float
    version: int = 0


@attrs.frozen
class DeletedAccount:
    """What is left of a deleted account: enough to refuse its sessions and stale copies
    for ever, and to keep its name reserved."""

    user_id: str
    name: str
    created: float
    deleted: float


@attrs.frozen
class Session:
    """A login: the SHA-256 (hex) of its token, whose it is, when it stops working, the
    device (replica id) it is bound to (None: opened by a client that named none), and
    the account version it belongs to (a password change ends older sessions)."""

    token_hash: str = attrs.field(repr=False)
    user_id: str
    expires: float
    replica: str | None = None
    version: int = 0

    def expired(self, now: float) -> bool:
        """Whether the session is over at time ``now``."""
        return now >= self.expires


@attrs.frozen
class LoginResult:
    """What a successful login hands to the client: the token in clear (the client keeps
    it and sends it with each request), the user and the expiry time."""

    token: str = attrs.field(repr=False)
    user_id: str
    name: str
    expires: float


class AccountStore(Protocol):
    """Where accounts and sessions are kept (the server store implements this)."""

    def add_account(self, account: Account) -> None:
        """Record a new account; raise :class:`UserExists` if the name is taken."""

    def account_by_name(self, name: str) -> Account | None:
        """The account with this normalised name, if any."""

    def add_session(self, session: Session) -> None:
        """Record a session."""

    def session(self, token_hash: str) -> Session | None:
        """The session with this token hash, if any."""

    def delete_session(self, token_hash: str) -> None:
        """Forget a session (no error if unknown)."""


# -- rules --------------------------------------------------------------------------------


def normalize_user_name(name: object) -> str:
    """The canonical form of a user name: lower case.

    A name is 3 to 32 characters: ASCII letters, digits, ``_``, ``.`` and ``-``, starting
    with a letter. Names differing only in case are the same name.

    Raises:
        InvalidUserName: the name breaks a rule; the message says which.
    """
    if not isinstance(name, str):
        raise InvalidUserName(f"a user name must be a string, got {type(name).__name__}")
    lowered = name.lower()
    if not 3 <= len(name) <= 32:
        raise InvalidUserName(f"a user name has 3 to 32 characters, got {len(name)}")
    if not lowered.isascii() or not _USER_NAME.fullmatch(lowered):
        raise InvalidUserName(
            f"a user name starts with a letter and has only letters, digits, '_', '.' "
            f"and '-', got {name!r}"
        )
    return lowered


def _normalize_password(password: object) -> str:
    if not isinstance(password, str):
        raise InvalidPassword(f"a password must be a string, got {type(password).__name__}")
    if len(password) > 4 * MAX_PASSWORD_LENGTH:
        raise InvalidPassword(f"a password has at most {MAX_PASSWORD_LENGTH} characters")
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (JSON "\ud800") has no UTF-8 form, so scrypt cannot hash it.
        raise InvalidPassword("a password is Unicode text, got a lone surrogate") from None
    return unicodedata.normalize("NFKC", password)


def check_new_password(password: object) -> str:
    """The normalised (NFKC) form of a new password, checked against the length rules.

    Raises:
        InvalidPassword: not a string, not encodable as UTF-8 (a lone surrogate), or shorter
        than :data:`MIN_PASSWORD_LENGTH` or longer than :data:`MAX_PASSWORD_LENGTH`
        characters. The message never shows the password.
    """
    normal = _normalize_password(password)
    if len(normal) < MIN_PASSWORD_LENGTH:
        raise InvalidPassword(
            f"a password has at least {MIN_PASSWORD_LENGTH} characters, got {len(normal)}"
        )
    if len(normal) > MAX_PASSWORD_LENGTH:
        raise InvalidPassword(
            f"a password has at most {MAX_PASSWORD_LENGTH} characters, got {len(normal)}"
        )
    return normal


# -- hashing ------------------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    if not text or not text.isascii():
        raise StoreCorrupt(f"password hash: {what} is not base64url text")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise StoreCorrupt(f"password hash: {what} is not base64url text") from None
    if _b64(raw) != text:
        raise StoreCorrupt(f"password hash: {what} is not canonical base64url")
    return raw


def _scrypt(password: str, salt: bytes, params: ScryptParams, length: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=params.n,
        r=params.r,
        p=params.p,
        maxmem=params.maxmem,
        dklen=length,
    )


def hash_password(
    password: str,
    *,
    salt: bytes | None = None,
    params: ScryptParams = DEFAULT_SCRYPT,
    random_bytes: Callable[[int], bytes] = secrets.token_bytes,
) -> str:
    """Hash a password with scrypt and a per-hash random salt.

    Args:
        password: the password, checked with :func:`check_new_password`.
        salt: the salt (tests pass one); by default 16 bytes from ``random_bytes``.
        params: the scrypt cost.

    Returns:
        The self-describing string ``scrypt$n$r$p$salt$hash``.

    Raises:
        InvalidPassword: the password breaks the rules.
    """
    normal = check_new_password(password)
    if salt is None:
        salt = random_bytes(_SALT_BYTES)
    if not isinstance(salt, bytes) or len(salt) < 8:
        raise ValueError("a salt is at least 8 bytes")
    digest = _scrypt(normal, salt, params, _HASH_BYTES)
    return f"scrypt${params.n}${params.r}${params.p}${_b64(salt)}${_b64(digest)}"


def _parse_hash(encoded: object) -> tuple[ScryptParams, bytes, bytes]:
    if not isinstance(encoded, str) or not encoded.isascii():
        raise StoreCorrupt("password hash: expected ASCII text")
    fields = encoded.split("$")
    if len(fields) != _HASH_FIELDS or fields[0] != "scrypt":
        raise StoreCorrupt("password hash: expected 'scrypt$n$r$p$salt$hash'")
    numbers: list[int] = []
    for what, text in zip(("n", "r", "p"), fields[1:4], strict=True):
        if not text.isdigit() or len(text) > 8:
            raise StoreCorrupt(f"password hash: scrypt {what} is not a small decimal integer")
        numbers.append(int(text))
    try:
        params = ScryptParams(*numbers)
    except ValueError as exc:
        raise StoreCorrupt(f"password hash: {exc}") from None
    salt = _unb64(fields[4], "salt")
    digest = _unb64(fields[5], "hash")
    if len(salt) < 8 or not 16 <= len(digest) <= 64:
        raise StoreCorrupt("password hash: salt or hash has an impossible length")
    return params, salt, digest


def verify_password(password: object, encoded: str) -> bool:
    """Whether ``password`` matches a hash made by :func:`hash_password`.

    A password of the wrong type, an absurd length or with a lone surrogate is simply not
    a match.

    Raises:
        StoreCorrupt: ``encoded`` is not a hash this module wrote.
    """
    params, salt, digest = _parse_hash(encoded)
    try:
        normal = _normalize_password(password)
    except InvalidPassword:
        return False
    if len(normal) > MAX_PASSWORD_LENGTH:
        return False
    return hmac.compare_digest(_scrypt(normal, salt, params, len(digest)), digest)


def unmatchable_hash(
    params: ScryptParams = DEFAULT_SCRYPT,
    random_bytes: Callable[[int], bytes] = secrets.token_bytes,
) -> str:
    """A well-formed hash that no password matches (a random digest), without running
    scrypt: checking a password against it costs what checking a real one costs, so an
    unknown user name takes as long as a wrong password."""
    return (
        f"scrypt${params.n}${params.r}${params.p}$"
        f"{_b64(random_bytes(_SALT_BYTES))}${_b64(random_bytes(_HASH_BYTES))}"
    )


@attrs.frozen
class HashResult:
    """What a :class:`HashJob` found: ``verified`` (the password matched), ``encoded``
    (the new hash, for a job that made one), or ``error`` (the stored hash is damaged)."""

    verified: bool = False
    encoded: str | None = attrs.field(default=None, repr=False)
    error: str | None = None


@attrs.frozen
class HashJob:
    """One slow password computation, described so that a shell can run it off its event
    loop: verify ``password`` against ``encoded``, or (``encoded`` None) hash it with
    ``params`` and ``salt``. Immutable, so a worker thread may run it safely."""

    password: str = attrs.field(repr=False)
    encoded: str | None = attrs.field(repr=False)
    params: ScryptParams = DEFAULT_SCRYPT
    salt: bytes = attrs.field(default=b"", repr=False)

    @classmethod
    def verify(cls, password: str, encoded: str) -> HashJob:
        """A job that checks ``password`` against a stored hash."""
        return cls(password, encoded)

    @classmethod
    def new_hash(cls, password: str, params: ScryptParams, salt: bytes) -> HashJob:
        """A job that hashes a new password (already checked by
        :func:`check_new_password`)."""
        return cls(password, None, params, salt)

    def run(self) -> HashResult:
        """Do the work (slow: this is what runs in a worker). Never raises."""
        if self.encoded is None:
            try:
                return HashResult(
                    encoded=hash_password(self.password, salt=self.salt, params=self.params)
                )
            except (InvalidPassword, ValueError) as exc:
                return HashResult(error=str(exc))
        try:
            return HashResult(verified=verify_password(self.password, self.encoded))
        except StoreCorrupt as exc:
            return HashResult(error=str(exc))


def new_token(random_bytes: Callable[[int], bytes] = secrets.token_bytes) -> str:
    """A fresh session token: 32 random bytes in unpadded base64url (43 characters)."""
    return _b64(random_bytes(_TOKEN_BYTES))


def hash_token(token: object) -> str:
    """The SHA-256 (hex) under which the server keeps a token.

    Raises:
        SessionInvalid: the token is not a string of plausible length and alphabet.
    """
    if not isinstance(token, str) or not 16 <= len(token) <= 128 or not token.isascii():
        raise SessionInvalid("the session token is malformed; log in again")
    return hashlib.sha256(token.encode("ascii")).hexdigest()


# -- the service --------------------------------------------------------------------------


class Accounts:
    """Sign-up, login, token checks and logout over an :class:`AccountStore`.

    Args:
        store: where accounts and sessions live.
        ttl: how long a session lasts, in seconds.
        params: the scrypt cost for new hashes (old hashes keep their own).
        random_bytes: the source of salts, tokens and user ids (tests inject one).
    """

    def __init__(
        self,
        store: AccountStore,
        *,
        ttl: float = DEFAULT_SESSION_TTL,
        params: ScryptParams = DEFAULT_SCRYPT,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        if not ttl > 0:
            raise ValueError(f"a session lasts a positive time, got {ttl!r}")
        self._store = store
        self._ttl = float(ttl)
        self._params = params
        self._random = random_bytes
        self._dummy: str | None = None

    def sign_up(self, name: object, password: object, now: float) -> Account:
        """Create an account.

        Raises:
            InvalidUserName, InvalidPassword: a rule is broken. UserExists: the name is
            taken.
        """
        normal_name = normalize_user_name(name)
        normal_password = check_new_password(password)
        account = Account(
            user_id=str(uuid.UUID(bytes=self._random(16), version=4)),
            name=normal_name,
            password_hash=hash_password(
                normal_password, params=self._params, random_bytes=self._random
            ),
            created=float(now),
        )
        self._store.add_account(account)
        return account

    def log_in(self, name: object, password: object, now: float) -> LoginResult:
        """Check a name and password and open a session.

        Raises:
            LoginFailed: unknown name or wrong password (not told apart).
        """
        try:
            normal_name = normalize_user_name(name)
        except InvalidUserName:
            normal_name = None
        account = None if normal_name is None else self._store.account_by_name(normal_name)
        if account is None:
            verify_password(password, self._dummy_hash())
            raise LoginFailed("unknown user name or wrong password")
        if not verify_password(password, account.password_hash):
            raise LoginFailed("unknown user name or wrong password")
        token = new_token(self._random)
        expires = float(now) + self._ttl
        self._store.add_session(Session(hash_token(token), account.user_id, expires))
        return LoginResult(token=token, user_id=account.user_id, name=account.name, expires=expires)

    def authenticate(self, token: object, now: float) -> str:
        """The user id a session token belongs to.

        Raises:
            SessionInvalid: unknown or malformed token. SessionExpired: the session is over
            (it is forgotten).
        """
        token_hash = hash_token(token)
        session = self._store.session(token_hash)
        if session is None:
            raise SessionInvalid("unknown session token; log in again")
        if session.expired(now):
            self._store.delete_session(token_hash)
            raise SessionExpired("the session has expired; log in again")
        return session.user_id

    def log_out(self, token: object) -> None:
        """Forget a session (no error if it is unknown)."""
        self._store.delete_session(hash_token(token))

    def _dummy_hash(self) -> str:
        if self._dummy is None:
            self._dummy = unmatchable_hash(self._params, self._random)
        return self._dummy
