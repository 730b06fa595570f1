"""Accounts: naming and password rules, scrypt hashes, login, session tokens and expiry."""

from __future__ import annotations

import base64
import hashlib
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdts import AWORSet
from reference_cluster.cores.accounts import (
    Account,
    Accounts,
    ScryptParams,
    Session,
    check_new_password,
    hash_password,
    hash_token,
    new_token,
    normalize_user_name,
    verify_password,
)
from reference_cluster.errors import (
    InvalidPassword,
    InvalidUserName,
    LoginFailed,
    SessionExpired,
    SessionInvalid,
    StoreCorrupt,
    UserExists,
)
from reference_cluster.storage.server_store import ServerStore

CHEAP = ScryptParams(n=2**8, r=8, p=1)
PASSWORD = "correct horse battery"


class DictAccounts:
    """An in-memory AccountStore."""

    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}
        self.sessions: dict[str, Session] = {}

    def add_account(self, account: Account) -> None:
        if account.name in self.accounts:
            raise UserExists(account.name)
        self.accounts[account.name] = account

    def account_by_name(self, name: str) -> Account | None:
        return self.accounts.get(name)

    def add_session(self, session: Session) -> None:
        self.sessions[session.token_hash] = session

    def session(self, token_hash: str) -> Session | None:
        return self.sessions.get(token_hash)

    def delete_session(self, token_hash: str) -> None:
        self.sessions.pop(token_hash, None)


def seeded(seed: int) -> Callable[[int], bytes]:
    """A reproducible stand-in for secrets.token_bytes."""
    rng = random.Random(seed)
    return rng.randbytes


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# -- rules --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"), [("alice", "alice"), ("Bob_2", "bob_2"), ("c.d-e", "c.d-e")]
)
def test_valid_user_names_are_lower_cased(name: str, expected: str) -> None:
    """A valid name is accepted in its lower-case form."""
    assert expected == normalize_user_name(name)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("al", "3 to 32 characters"),
        ("a" * 33, "3 to 32 characters"),
        ("1abc", "starts with a letter"),
        ("ali ce", "starts with a letter"),
        ("alicé", "starts with a letter"),
        ("ＡＢＣ", "starts with a letter"),
        (None, "must be a string"),
    ],
)
def test_invalid_user_names_say_why(name: object, message: str) -> None:
    """A name breaking a rule raises InvalidUserName naming the rule."""
    with pytest.raises(InvalidUserName, match=message):
        normalize_user_name(name)


@pytest.mark.parametrize(
    ("password", "message"),
    [("short12", "at least 8"), ("x" * 1025, "at most 1024"), (b"bytes-password", "a string")],
)
def test_passwords_breaking_length_rules_are_refused_without_echo(
    password: object, message: str
) -> None:
    """A bad new password raises InvalidPassword whose message does not contain it."""
    with pytest.raises(InvalidPassword, match=message) as info:
        check_new_password(password)
    assert str(password) not in str(info.value)


# -- hashing ------------------------------------------------------------------------------


def test_hash_is_self_describing_scrypt_of_the_salted_password() -> None:
    """The stored form is scrypt$n$r$p$salt$hash, and the hash is scrypt of the password."""
    encoded = hash_password(PASSWORD, params=CHEAP, random_bytes=seeded(1))
    tag, n, r, p, salt, digest = encoded.split("$")
    expected = hashlib.scrypt(
        PASSWORD.encode(), salt=unb64(salt), n=2**8, r=8, p=1, maxmem=2**25, dklen=32
    )
    assert ("scrypt", "256", "8", "1", 16, expected) == (
        tag,
        n,
        r,
        p,
        len(unb64(salt)),
        unb64(digest),
    )
    assert PASSWORD not in encoded


def test_each_hash_has_its_own_salt() -> None:
    """Hashing one password twice gives different strings that both verify."""
    a, b = hash_password(PASSWORD, params=CHEAP), hash_password(PASSWORD, params=CHEAP)
    assert a != b
    assert (True, True) == (verify_password(PASSWORD, a), verify_password(PASSWORD, b))


@pytest.mark.parametrize(
    "attempt", ["correct horse batterY", "", "correct horse battery ", None, "x" * 5000]
)
def test_wrong_passwords_do_not_verify(attempt: object) -> None:
    """Anything but the password itself fails verification (without raising)."""
    encoded = hash_password(PASSWORD, params=CHEAP)
    assert verify_password(attempt, encoded) is False


def test_passwords_are_compared_after_nfkc_normalisation() -> None:
    """The composed and decomposed spellings of one password are the same password."""
    encoded = hash_password("caf\u00e9-latte", params=CHEAP)
    assert verify_password("cafe\u0301-latte", encoded) is True


@pytest.mark.parametrize(
    "encoded",
    [
        "",
        "bcrypt$1$2$3$AAAAAAAAAAA$" + "A" * 43,
        "scrypt$256$8$1$AAAAAAAAAAA",
        "scrypt$255$8$1$AAAAAAAAAAA$" + "A" * 43,
        "scrypt$2097152$8$1$AAAAAAAAAAA$" + "A" * 43,
        "scrypt$256$99$1$AAAAAAAAAAA$" + "A" * 43,
        "scrypt$256$8$x$AAAAAAAAAAA$" + "A" * 43,
        "scrypt$256$8$1$!!!$" + "A" * 43,
        "scrypt$256$8$1$AAAAAAAAAAA$AAAA",
        "scrypt$256$8$1$AAAAAAAAAAB$" + "A" * 43,
        "scrypt$256$8$1$AAAAAAAAAAA$" + "A" * 43 + "é",
    ],
)
def test_malformed_stored_hashes_are_a_store_error(encoded: str) -> None:
    """A stored hash this module did not write raises StoreCorrupt, not a crash."""
    with pytest.raises(StoreCorrupt, match="password hash"):
        verify_password(PASSWORD, encoded)


@given(st.text(max_size=80))
def test_any_stored_hash_text_verifies_or_raises_store_corrupt(encoded: str) -> None:
    """Whatever text sits in the hash column, verification returns a bool or raises
    StoreCorrupt."""
    try:
        result = verify_password(PASSWORD, encoded)
    except StoreCorrupt as exc:
        assert "password hash" in str(exc)
    else:
        assert result is False


def test_tokens_are_random_and_hashed_for_storage() -> None:
    """Tokens are 43 base64url characters from the entropy source; the server key is
    their SHA-256."""
    token = new_token(seeded(7))
    assert (token, 43) == (new_token(seeded(7)), len(token))
    assert new_token() != new_token()
    assert hashlib.sha256(token.encode()).hexdigest() == hash_token(token)
    with pytest.raises(SessionInvalid, match="malformed"):
        hash_token("short")


# -- the service --------------------------------------------------------------------------


def test_sign_up_then_log_in_then_authenticate() -> None:
    """A new account logs in; its token names the user until it expires."""
    store = DictAccounts()
    accounts = Accounts(store, ttl=100.0, params=CHEAP, random_bytes=seeded(3))
    account = accounts.sign_up("Alice", PASSWORD, now=1000.0)
    login = accounts.log_in("ALICE", PASSWORD, now=1010.0)
    assert (account.name, account.created, login.user_id, login.expires) == (
        "alice",
        1000.0,
        account.user_id,
        1110.0,
    )
    assert account.user_id == accounts.authenticate(login.token, now=1109.9)
    assert login.token not in str(store.sessions) and PASSWORD not in repr(store.accounts)
    with pytest.raises(SessionExpired, match="expired"):
        accounts.authenticate(login.token, now=1110.0)
    with pytest.raises(SessionInvalid, match="unknown"):
        accounts.authenticate(login.token, now=1000.0)


def test_login_failures_do_not_tell_unknown_user_from_wrong_password() -> None:
    """Unknown names, invalid names and wrong passwords fail with the same message."""
    accounts = Accounts(DictAccounts(), params=CHEAP)
    accounts.sign_up("alice", PASSWORD, now=0.0)
    messages = set()
    for name, password in [("alice", "wrong password"), ("bob", PASSWORD), ("?", PASSWORD)]:
        with pytest.raises(LoginFailed) as info:
            accounts.log_in(name, password, now=1.0)
        messages.add(str(info.value))
    assert 1 == len(messages)


def test_a_password_with_a_lone_surrogate_is_invalid_and_never_logs_in() -> None:
    """A password that has no UTF-8 form (JSON "\\ud800") is refused at sign-up without
    echo, and a login with one fails like a wrong password, for known and unknown names."""
    accounts = Accounts(DictAccounts(), params=CHEAP)
    accounts.sign_up("alice", PASSWORD, now=0.0)
    bad = "password\ud800"
    with pytest.raises(InvalidPassword, match="lone surrogate") as refused:
        accounts.sign_up("bob", bad, now=0.0)
    failures = []
    for name in ("alice", "nobody"):
        with pytest.raises(LoginFailed) as info:
            accounts.log_in(name, bad, now=1.0)
        failures.append(str(info.value))
    assert (False, ["unknown user name or wrong password"] * 2, False) == (
        bad in str(refused.value),
        failures,
        verify_password(bad, hash_password(PASSWORD, params=CHEAP)),
    )


def test_duplicate_names_and_logout() -> None:
    """A taken name (in any case) is refused; a logged-out token no longer works."""
    accounts = Accounts(DictAccounts(), params=CHEAP)
    accounts.sign_up("alice", PASSWORD, now=0.0)
    with pytest.raises(UserExists):
        accounts.sign_up("ALICE", "another password", now=0.0)
    token = accounts.log_in("alice", PASSWORD, now=0.0).token
    accounts.log_out(token)
    with pytest.raises(SessionInvalid):
        accounts.authenticate(token, now=0.0)


def test_accounts_on_the_server_store_keep_no_secret_in_clear(tmp_path: Path) -> None:
    """With the SQLite store, logins survive reopening and neither the password nor the
    token appears anywhere in the database files."""
    with ServerStore(tmp_path / "s.db", AWORSet) as store:
        accounts = Accounts(store, params=CHEAP)
        account = accounts.sign_up("alice", PASSWORD, now=0.0)
        token = accounts.log_in("alice", PASSWORD, now=0.0).token
    with ServerStore(tmp_path / "s.db", AWORSet) as store:
        assert account.user_id == Accounts(store, params=CHEAP).authenticate(token, now=1.0)
    on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert (False, False) == (PASSWORD.encode() in on_disk, token.encode() in on_disk)
