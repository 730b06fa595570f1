"""The wire codec: every kind round-trips, and anything else is refused with a clear error."""

from __future__ import annotations

import json
import uuid
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdts import AWORSet, DotContext
from reference_cluster.errors import MalformedMessage
from reference_cluster.protocol.messages import (
    KINDS,
    MAX_MESSAGE_BYTES,
    WIRE_VERSION,
    AccountDone,
    AeContexts,
    AeDeltas,
    AeLeaves,
    AeTree,
    Announce,
    BrokerStatus,
    ChangePassword,
    DeleteAccount,
    Deliver,
    DirectoryDigest,
    DirectoryPush,
    ErrorReply,
    Forward,
    Goodbye,
    Heartbeat,
    Hint,
    ListsReply,
    ListsRequest,
    LogIn,
    LogOut,
    Members,
    MembershipUpdate,
    MembersReply,
    Message,
    Propagate,
    Relay,
    Replicate,
    ServerStatus,
    SignUp,
    Status,
    Stored,
    SyncReply,
    SyncRequest,
    Welcome,
    decode,
    encode,
)

ids = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF), min_size=1, max_size=20).filter(
    str.isprintable
)
list_ids = st.uuids(version=4).map(str)
nats = st.integers(0, 2**53)
digests = st.binary(min_size=32, max_size=32).map(bytes.hex)
node_digests = st.binary(min_size=16, max_size=16).map(bytes.hex)
prefixes = st.text("0123456789abcdef", max_size=16)


@st.composite
def states(draw: st.DrawFn) -> dict[str, Any]:
    s = AWORSet()
    for e in draw(st.lists(st.sampled_from("abcd"), max_size=4)):
        s.add(draw(st.sampled_from(["r1", "r2"])), e)
    return s.to_dict()


contexts = states().map(lambda d: AWORSet.from_dict(d).context.to_dict())

sync_requests = st.builds(
    SyncRequest,
    ids,
    list_ids,
    ids,
    nats,
    st.none() | contexts,
    st.none() | states(),
    st.none() | ids,
)
error_replies = st.builds(
    ErrorReply,
    st.none() | ids,
    st.sampled_from(
        sorted({"malformed", "unavailable", "bad_state", "persist_failed", "unauthorized"})
    ),
    st.text(max_size=50),
)
sync_replies = st.builds(
    SyncReply, ids, list_ids, st.none() | states(), st.none() | ids, st.none() | nats
)

MESSAGES: dict[type[Message], st.SearchStrategy[Message]] = {
    SyncRequest: sync_requests,
    SyncReply: sync_replies,
    ErrorReply: error_replies,
    Forward: st.builds(Forward, ids, sync_requests),
    Deliver: st.builds(Deliver, ids, sync_replies | error_replies),
    Announce: st.builds(Announce, ids, nats),
    Heartbeat: st.builds(Heartbeat, ids),
    Goodbye: st.builds(Goodbye, ids),
    Propagate: st.builds(Propagate, ids, list_ids, states()),
    Replicate: st.builds(Replicate, ids, list_ids, states(), nats),
    Hint: st.builds(Hint, ids, list_ids, ids, states(), nats),
    Stored: st.builds(Stored, ids, list_ids, nats),
    MembershipUpdate: st.builds(
        MembershipUpdate,
        ids,
        nats,
        st.dictionaries(ids, st.just("") | st.just("tcp://10.0.0.1:7101"), min_size=1, max_size=4),
    ),
    AeTree: st.builds(AeTree, ids, nats, st.dictionaries(prefixes, node_digests, max_size=3)),
    AeLeaves: st.builds(
        AeLeaves,
        ids,
        nats,
        st.lists(prefixes, max_size=3).map(tuple),
        st.dictionaries(list_ids, digests, max_size=3),
    ),
    AeContexts: st.builds(AeContexts, ids, nats, st.dictionaries(list_ids, contexts, max_size=3)),
    AeDeltas: st.builds(
        AeDeltas,
        ids,
        nats,
        st.dictionaries(list_ids, states(), max_size=3),
        st.dictionaries(list_ids, contexts, max_size=2),
    ),
}


def _member_set(users: list[str]) -> dict[str, Any]:
    """An encoded AWORSet of user ids, as a directory push carries a list's members."""
    members = AWORSet()
    for user in users:
        members.add("s1", user)
    return members.to_dict()


# Accounts, status and the servers' directory (reference_cluster.cores.directory).
numbers = st.integers(0, 2**40) | st.floats(0, 2e9, allow_nan=False)
secrets_ = st.text(min_size=1, max_size=30)
signups = st.builds(SignUp, ids, ids, secrets_, nats)
logins = st.builds(LogIn, ids, ids, secrets_, nats)
lists_requests = st.builds(ListsRequest, ids, secrets_, nats)
welcomes = st.builds(Welcome, ids, ids, ids, secrets_, numbers)
lists_replies = st.builds(ListsReply, ids, ids, st.lists(list_ids, max_size=3).map(tuple))
accounts = st.fixed_dictionaries(
    {"user_id": ids, "name": ids, "password_hash": secrets_, "created": numbers}
)
sessions = st.fixed_dictionaries({"token_hash": digests, "user_id": ids, "expires": numbers})
MESSAGES.update(
    {
        SignUp: signups,
        LogIn: logins,
        ListsRequest: lists_requests,
        Welcome: welcomes,
        ListsReply: lists_replies,
        Relay: st.builds(Relay, ids, signups | logins | lists_requests),
        Status: st.builds(Status, ids, st.booleans()),
        BrokerStatus: st.builds(BrokerStatus, ids, ids, st.lists(ids, max_size=3).map(tuple)),
        ServerStatus: st.builds(
            ServerStatus,
            ids,
            ids,
            nats,
            st.dictionaries(list_ids, digests, max_size=3),
            st.dictionaries(list_ids, states(), max_size=2),
        ),
        DirectoryPush: st.builds(
            DirectoryPush,
            ids,
            st.lists(accounts, max_size=2).map(tuple),
            st.lists(sessions, max_size=2).map(tuple),
            st.dictionaries(list_ids, ids, max_size=2),
            st.booleans(),
        ),
        DirectoryDigest: st.builds(DirectoryDigest, ids, digests),
    }
)
# Accounts: logout, password change, account deletion (reference_cluster.cores.directory).
account_dones = st.builds(
    AccountDone, ids, st.sampled_from(["logged_out", "password_changed", "account_deleted"]), nats
)
account_requests = (
    st.builds(SignUp, ids, ids, secrets_, nats, st.none() | ids)
    | st.builds(LogIn, ids, ids, secrets_, nats, st.none() | ids)
    | st.builds(LogOut, ids, secrets_, nats)
    | st.builds(ChangePassword, ids, secrets_, secrets_, secrets_, nats)
    | st.builds(DeleteAccount, ids, secrets_, secrets_, nats)
)
MESSAGES.update(
    {
        LogOut: st.builds(LogOut, ids, secrets_, nats),
        ChangePassword: st.builds(ChangePassword, ids, secrets_, secrets_, secrets_, nats),
        DeleteAccount: st.builds(DeleteAccount, ids, secrets_, secrets_, nats),
        AccountDone: account_dones,
        Relay: st.builds(Relay, ids, account_requests, st.none() | ids),
        DirectoryPush: st.builds(
            DirectoryPush,
            ids,
            st.lists(accounts | accounts.map(lambda a: {**a, "version": 3}), max_size=2).map(tuple),
            st.lists(
                sessions | sessions.map(lambda r: {**r, "replica": "dev1", "version": 1}),
                max_size=2,
            ).map(tuple),
            st.dictionaries(list_ids, ids, max_size=2),
            st.booleans(),
            st.lists(
                st.fixed_dictionaries({"token_hash": digests, "expires": numbers}), max_size=2
            ).map(tuple),
            st.lists(
                st.fixed_dictionaries(
                    {"user_id": ids, "name": ids, "created": numbers, "deleted": numbers}
                ),
                max_size=2,
            ).map(tuple),
        ),
    }
)
# Access lists (reference_cluster.cores.membership).
user_names = st.lists(ids, max_size=3).map(tuple)
members_requests = st.builds(Members, ids, secrets_, list_ids, user_names, user_names, nats)
members_replies = st.builds(MembersReply, ids, list_ids, st.none() | ids, user_names)
member_sets = st.builds(_member_set, st.lists(ids, max_size=3))
MESSAGES.update(
    {
        Members: members_requests,
        MembersReply: members_replies,
        ListsReply: st.builds(
            ListsReply,
            ids,
            ids,
            st.lists(list_ids, max_size=3).map(tuple),
            st.lists(list_ids, max_size=3).map(tuple),
        ),
        Relay: st.builds(Relay, ids, account_requests | members_requests, st.none() | ids),
        DirectoryPush: st.builds(
            DirectoryPush,
            ids,
            st.just(()),
            st.just(()),
            st.dictionaries(list_ids, ids, max_size=2),
            st.booleans(),
            st.just(()),
            st.just(()),
            st.dictionaries(list_ids, member_sets, max_size=2),
        )
        | MESSAGES[DirectoryPush],
    }
)
MESSAGES[Deliver] = st.builds(
    Deliver,
    ids,
    sync_replies | error_replies | welcomes | lists_replies | account_dones | members_replies,
)
messages = st.one_of(*MESSAGES.values())

LIST = str(uuid.UUID(int=7, version=4))
REQUEST = SyncRequest("r.1", LIST, "c1", 0, DotContext().to_dict(), None)


def test_the_table_covers_every_message_class() -> None:
    """KINDS maps each kind to the class whose tag it is, and every class has a strategy."""
    assert {cls.kind: cls for cls in MESSAGES} == dict(KINDS)


@given(messages)
def test_every_message_round_trips(msg: Message) -> None:
    """decode(encode(m)) == m for every kind."""
    assert msg == decode(encode(msg))


@given(messages)
def test_encoding_is_canonical_json_with_version_and_kind(msg: Message) -> None:
    """The bytes are sorted-key, space-free JSON carrying ``v`` and ``kind``."""
    data = encode(msg)
    parsed = json.loads(data)
    assert (WIRE_VERSION, msg.kind) == (parsed["v"], parsed["kind"])
    assert json.dumps(parsed, sort_keys=True, separators=(",", ":")).encode() == data


@given(messages, st.data())
def test_every_proper_prefix_of_a_message_is_refused(msg: Message, data: st.DataObject) -> None:
    """A truncated frame never decodes; it raises MalformedMessage (a ValueError)."""
    raw = encode(msg)
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(MalformedMessage) as info:
        decode(raw[:cut])
    assert "malformed" == info.value.code


@given(messages, st.data())
def test_a_corrupted_frame_raises_nothing_but_malformed_message(
    msg: Message, data: st.DataObject
) -> None:
    """Flipping bytes either yields a valid message or MalformedMessage, never another error."""
    raw = bytearray(encode(msg))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    try:
        decoded = decode(bytes(raw))
    except MalformedMessage:
        return
    assert isinstance(decoded, Message)


def _wire(msg: Message, **changes: Any) -> bytes:
    d = json.loads(encode(msg))
    for k, v in changes.items():
        if v is ...:
            del d[k]
        else:
            d[k] = v
    return json.dumps(d).encode()


@pytest.mark.parametrize(
    ("data", "code", "says"),
    [
        (b"", "malformed", "not UTF-8 JSON"),
        (b"\xff\xfe", "malformed", "not UTF-8 JSON"),
        (b"[1, 2]", "malformed", "expected a JSON object"),
        (b'{"v": 1, "kind": "sync", "attempt": NaN}', "malformed", "not UTF-8 JSON"),
        (_wire(REQUEST, v=1), "unsupported_version", "unsupported wire version 1"),
        (_wire(REQUEST, v=...), "unsupported_version", "unsupported wire version None"),
        (_wire(REQUEST, kind="launch"), "unknown_kind", "unknown message kind 'launch'"),
        (_wire(REQUEST, extra=1), "malformed", "unexpected keys ['extra']"),
        (_wire(REQUEST, replica=...), "malformed", "missing key 'replica'"),
        (
            _wire(REQUEST, list_id="groceries"),
            "malformed",
            "SyncRequest.list_id: expected a list id",
        ),
        (_wire(REQUEST, attempt=-1), "malformed", "SyncRequest.attempt: expected an int >= 0"),
        (_wire(REQUEST, attempt=True), "malformed", "SyncRequest.attempt"),
        (_wire(REQUEST, delta=[1]), "malformed", "SyncRequest.delta: expected an encoded state"),
        (_wire(REQUEST, context={"x": 1}), "malformed", "SyncRequest.context"),
        (_wire(REQUEST, token=""), "malformed", "SyncRequest.token"),
        (_wire(REQUEST, request_id="a\nb"), "malformed", "SyncRequest.request_id"),
        (
            _wire(Forward("c1", REQUEST), request={"kind": "heartbeat", "server": "s"}),
            "malformed",
            "Forward.request: expected a sync message",
        ),
        (
            _wire(AeLeaves("s1", 1, ("",), {LIST: "0" * 64}), digests={LIST: "xyz"}),
            "malformed",
            "AeLeaves.digests",
        ),
        (_wire(AeLeaves("s1", 1, (), {}), prefixes=["AB"]), "malformed", "AeLeaves.prefixes[0]"),
        (
            _wire(AeLeaves("s1", 1, (), {}), prefixes=["0"] * 4097),
            "malformed",
            "AeLeaves.prefixes: expected an array of at most 4096",
        ),
        (_wire(AeTree("s1", 1, {}), nodes={"": "0" * 31}), "malformed", "AeTree.nodes[]"),
        (_wire(AeTree("s1", 1, {}), nodes={"0" * 17: "0" * 32}), "malformed", "AeTree.nodes key"),
        (
            _wire(AeTree("s1", 1, {}), nodes={f"{i:x}": "0" * 32 for i in range(4097)}),
            "malformed",
            "AeTree.nodes: expected an object of at most 4096",
        ),
        (_wire(ErrorReply(None, "malformed"), code="oops"), "malformed", "ErrorReply.code"),
    ],
)
def test_bad_frames_are_refused_with_a_code_and_the_path(data: bytes, code: str, says: str) -> None:
    """Each kind of bad frame raises MalformedMessage naming what was wrong, with a code."""
    with pytest.raises(MalformedMessage) as info:
        decode(data)
    assert (code, True) == (info.value.code, says in str(info.value))


def test_oversized_frames_are_refused_before_parsing() -> None:
    """A frame over MAX_MESSAGE_BYTES is refused by its length alone."""
    with pytest.raises(MalformedMessage, match="more than"):
        decode(b" " * (MAX_MESSAGE_BYTES + 1))


def test_decode_takes_bytes_only() -> None:
    """A str is not a frame."""
    with pytest.raises(MalformedMessage, match="expected bytes"):
        decode(encode(REQUEST).decode())  # type: ignore[arg-type]


def test_construction_validates_fields() -> None:
    """A message with a bad field cannot be built (the error is a ValueError)."""
    with pytest.raises(ValueError, match=r"SyncRequest\.list_id"):
        SyncRequest("r.1", "not-a-uuid", "c1", 0, None, None)
    with pytest.raises(ValueError, match=r"Propagate\.delta"):
        Propagate("s1", LIST, {"no": "type"})


def test_messages_are_frozen() -> None:
    """A message cannot be changed after construction."""
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        REQUEST.attempt = 3  # type: ignore[misc]


def test_retryable_errors_are_the_transient_ones() -> None:
    """Only errors that a later attempt can fix are retryable."""
    retryable = {
        code: ErrorReply("r", code).retryable
        for code in ("unavailable", "persist_failed", "not_holder", "bad_state", "malformed")
    }
    expected = {
        "unavailable": True,
        "persist_failed": True,
        "not_holder": True,
        "bad_state": False,
        "malformed": False,
    }
    assert expected == retryable


@pytest.mark.parametrize(
    "data",
    [
        _wire(REQUEST, **{"k" * 5000: 1}),
        _wire(REQUEST, **{f"extra{i:05}" + "x" * 100: i for i in range(2000)}),
        _wire(REQUEST, v="v" * 5000),
        _wire(REQUEST, v=[[["deep"] * 1000] * 10]),
        _wire(REQUEST, kind="k" * 5000),
        _wire(REQUEST, list_id="l" * 5000),
    ],
    ids=["long-key", "many-keys", "long-v", "big-v", "long-kind", "long-field"],
)
def test_decode_errors_fit_an_error_reply(data: bytes) -> None:
    """However long the bad key or value, the error text fits an ErrorReply's detail."""
    with pytest.raises(MalformedMessage) as info:
        decode(data)
    reply = ErrorReply(None, info.value.code, str(info.value))
    assert (True, reply) == (len(str(info.value)) <= 500, decode(encode(reply)))


def test_many_unexpected_keys_are_counted_not_listed() -> None:
    """The error names the first few unexpected keys and how many there are."""
    with pytest.raises(MalformedMessage) as info:
        decode(_wire(REQUEST, **{f"x{i}": i for i in range(7)}))
    expected = "unexpected keys ['x0', 'x1', 'x2', 'x3', 'x4', ...] (7 keys)"
    assert (True, "malformed") == (expected in str(info.value), info.value.code)


def _with_number(literal: str, where: str) -> bytes:
    """A sync frame carrying the bare JSON number ``literal`` as ``attempt``, deep inside
    the delta, or under an unexpected key."""
    delta = {**AWORSet().to_dict(), "entries": [[["milk", {"n": 0}]]]}
    frame = encode(SyncRequest("r.1", LIST, "c1", 0, None, delta))
    marker = {"attempt": b'"attempt":0', "delta": b'"n":0', "extra": b'"kind":'}[where]
    number = literal.encode()
    changed = {
        "attempt": b'"attempt":' + number,
        "delta": b'"n":' + number,
        "extra": b'"extra":[' + number + b'],"kind":',
    }[where]
    assert 1 == frame.count(marker)
    return frame.replace(marker, changed)


@pytest.mark.parametrize("literal", ["1e999", "-1e999", "1.5e400"])
@pytest.mark.parametrize("where", ["attempt", "delta", "extra"])
def test_numbers_too_large_for_a_float_are_refused(literal: str, where: str) -> None:
    """A number that would parse as an infinity is malformed wherever it is, even deep
    inside a delta that only a server decodes."""
    data = _with_number(literal, where)
    with pytest.raises(MalformedMessage) as info:
        decode(data)
    expected = ("malformed", f"message: expected a finite number, got {literal}")
    assert expected == (info.value.code, str(info.value))


def test_finite_floats_still_decode() -> None:
    """A very small float passes the finiteness check unchanged."""
    account = {"user_id": "u", "name": "n", "password_hash": "h", "created": 1.5e-300}
    push = DirectoryPush("s1", (account,), (), {}, True)
    assert push == decode(encode(push))


@pytest.mark.parametrize(
    "owner", ["u" * 65, "u" * 128, "a\nb", ""], ids=["65", "128", "newline", "empty"]
)
def test_directory_push_owners_are_user_ids(owner: str) -> None:
    """An owner in a directory push is refused unless it is a user id the store can keep
    (a printable string of 1 to 64 characters), as are the user ids of accounts and sessions."""
    push = DirectoryPush("s1", (), (), {LIST: "u" * 64})
    account = {"user_id": owner, "name": "n", "password_hash": "h", "created": 1.0}
    session = {"token_hash": "0" * 64, "user_id": owner, "expires": 1.0}
    says = []
    for data in (
        _wire(push, owners={LIST: owner}),
        _wire(push, accounts=[account]),
        _wire(push, sessions=[session]),
    ):
        with pytest.raises(MalformedMessage) as info:
            decode(data)
        says.append("expected a user id (a printable string of 1 to 64" in str(info.value))
    assert (push, [True, True, True]) == (decode(encode(push)), says)
