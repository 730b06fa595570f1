"""What a server accepts in a client's push: only the pushing device's own new dots.

Theory of operation
-------------------
A causal state is a dot store (dot -> payload) plus a causal context (the dots seen). A
client creates dots only as itself, so a push from replica ``R`` is a delta whose store
holds dots of ``R`` alone and whose context holds new dots of ``R`` plus dots of others
that ``R`` saw before it edited (a remove or an overwrite observes them). The server checks
a pushed delta against its own state of the list *before* joining it:

Rule 1 (own dots only). Every dot in the delta's store belongs to ``R``. A dot of another
replica is a forgery: ``forbidden``.

Rule 2 (a dot names one payload). A dot of ``R`` that the server holds must carry the
payload the server holds: a retry is the same delta again, while another payload under a
seen dot is a forgery (the join would silently keep the server's, and the pusher would
show nothing unsynced for ever): ``forbidden``. A dot the server has seen but no longer
holds was removed since, and stays removed (the join drops it): harmless.

Rule 3 (claims about others). No dot of another replica in the delta's context may lie
beyond what the server's context has seen: such a claim would remove that replica's
future dots before they exist (a context claiming a device's counter up to 2**63 - 1 ends
that device's edits of the list). But an honest client may have learned dots from
another server that this one has not yet seen (propagation lags): the refusal is
``behind``, which clients retry (through another broker and server), and anti-entropy
brings this server up to date within a round. A claim more than
:attr:`PushLimits.max_new_dots` past what the server has seen of that replica is no lag
(no device makes a million edits that no server has seen): ``forbidden``.

Rule 4 (bounded jumps). The highest dot of ``R`` in the delta may exceed the highest the
server has seen of ``R`` by at most :attr:`PushLimits.max_new_dots` (2**20 by default):
far above any offline session (each edit takes one to three dots), far below exhaustion
(2**43 such pushes would be needed to reach 2**63 - 1): ``forbidden``.

Rule 5 (quotas and names). A delta holds at most ``max_delta_entries`` dots and encodes to at most
``max_delta_bytes``; a state holds at most ``max_state_entries`` dots and
``max_state_cloud`` context dots beyond its version vector; every map at most
``max_map_keys`` keys; every causal counter (an item's quantity) stays within
``±max_counter``: ``quota``. Rules that only add cannot lock a list: a push that adds no
dot (a removal) is never refused for a state, map or counter quota. A new map key or a
written value that is a text holding a control character is refused (``invalid``): names
are printed on other users' terminals. An item already on the list may be edited
whatever its name, so an item a hostile replica wrote can still be changed or removed.

Cost (Rule 6). Every check walks the delta and looks up single dots and keys in the
server's state, so it costs what the delta holds, not what the state holds. The state is
read in place through the dot kernel and never changed.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator, Mapping
from typing import Any, Final

import attrs

from crdts import Causal, CCounter, DotContext
from crdts._ormap import ORMap, _Embedding
from reference_cluster.shopping_list import name_problem

__all__ = [
    "BEHIND",
    "DEFAULT_LIMITS",
    "FORBIDDEN",
    "INVALID",
    "QUOTA",
    "PushLimits",
    "Refusal",
    "check_push",
    "has_control_character",
    "kernel_of",
]

FORBIDDEN: Final = "forbidden"
BEHIND: Final = "behind"
QUOTA: Final = "quota"
INVALID: Final = "invalid"

_EMPTY = DotContext()
_MISSING: Any = object()


@attrs.frozen
class PushLimits:
    """The bounds a server applies to one client push (Rules 4 and 5).

    Attributes:
        max_new_dots: how far the pusher's own counter may move past what the server saw.
        max_delta_entries: dots in one pushed delta's store.
        max_delta_bytes: the pushed delta's canonical encoding, in bytes.
        max_state_entries: dots a list's state may hold.
        max_state_cloud: context dots beyond the version vector a list's state may hold.
        max_map_keys: keys in any one map (a shopping list's items).
        max_counter: the magnitude of any causal counter's value (an item's quantity
            changes).
    """

    max_new_dots: int = 2**20
    max_delta_entries: int = 20_000
    max_delta_bytes: int = 4 * 1024 * 1024
    max_state_entries: int = 100_000
    max_state_cloud: int = 100_000
    max_map_keys: int = 10_000
    max_counter: int = 10**9


DEFAULT_LIMITS: Final = PushLimits()


@attrs.frozen
class Refusal:
    """Why a push is refused: an error code of the wire protocol and a clear detail."""

    code: str
    detail: str


def kernel_of(state: object) -> Causal | None:
    """The dot kernel of a causal state, read in place: the state itself, or what its
    ``dot_kernel()`` returns (a document that wraps a kernel); None for other types."""
    if isinstance(state, Causal):
        return state
    method = getattr(state, "dot_kernel", None)
    kernel = method() if callable(method) else None
    return kernel if isinstance(kernel, Causal) else None


def has_control_character(text: str) -> bool:
    """Whether ``text`` may not be written as a name: what the shopping list's own rule
    refuses (:func:`reference_cluster.shopping_list.name_problem`: controls such as escape
    and newline, disguising format characters such as bidirectional overrides), and line
    or paragraph separators (which an honest edit never writes: it collapses whitespace)."""
    return name_problem(text) is not None or any(
        unicodedata.category(ch) in ("Zl", "Zp") for ch in text
    )


def _top(ctx: DotContext, replica: str) -> int:
    """The highest counter of ``replica`` that ``ctx`` has seen (0 if none)."""
    top = ctx._vv.get(replica, 0)
    cloud = ctx._cloud.get(replica)
    return max(top, *cloud) if cloud else top


def _dot(d: tuple[str, int]) -> str:
    r, c = d
    return f"({r!r:.40}, {c})"


def check_push(
    state: object | None,
    delta: object,
    replica: str,
    limits: PushLimits = DEFAULT_LIMITS,
) -> Refusal | None:
    """Check a client's pushed ``delta`` against the server's ``state`` of the list.

    Args:
        state: the server's state of the list, or None if it holds none yet.
        delta: the decoded delta, of the same type.
        replica: the pushing device's replica id (``SyncRequest.replica``, which the
            session check ties to the device).
        limits: the bounds.

    Returns:
        None to accept, or a :class:`Refusal` (see the module notes). A type that is not
        causal has no dots to check, and is accepted.
    """
    dk = kernel_of(delta)
    if dk is None:
        return None
    sk = kernel_of(state) if state is not None else None
    s_entries: Mapping[tuple[str, int], Any] = {} if sk is None else sk._entries
    s_ctx = _EMPTY if sk is None else sk._ctx
    d_entries = dk._entries
    d_ctx = dk._ctx
    if len(d_entries) > limits.max_delta_entries:
        return Refusal(
            QUOTA,
            f"a push may carry at most {limits.max_delta_entries} dots, got {len(d_entries)}",
        )
    refusal = _check_dots(s_entries, s_ctx, d_entries, replica)
    if refusal is None:
        refusal = _check_context(s_ctx, d_ctx, replica, limits)
    if refusal is None and sk is not None:
        refusal = _check_sizes(sk, s_ctx, d_entries, d_ctx, limits)
    if refusal is None:
        refusal = _check_content(sk, dk, limits)
    if refusal is None:
        size = len(dk.to_json())
        if size > limits.max_delta_bytes:
            refusal = Refusal(
                QUOTA, f"a push may encode to at most {limits.max_delta_bytes} bytes, got {size}"
            )
    return refusal


def _check_dots(
    s_entries: Mapping[tuple[str, int], Any],
    s_ctx: DotContext,
    d_entries: Mapping[tuple[str, int], Any],
    replica: str,
) -> Refusal | None:
    """Rules 1 and 2, over the delta's store."""
    for d, payload in d_entries.items():
        if d[0] != replica:
            return Refusal(
                FORBIDDEN,
                f"a push from replica {replica!r:.40} may only hold its own dots, "
                f"got dot {_dot(d)}",
            )
        if s_ctx.contains(d):
            held = s_entries.get(d, _MISSING)
            if held is not _MISSING and held != payload:
                return Refusal(
                    FORBIDDEN,
                    f"dot {_dot(d)} is already held with another payload; a dot names one "
                    "edit for ever",
                )
    return None


def _check_context(
    s_ctx: DotContext, d_ctx: DotContext, replica: str, limits: PushLimits
) -> Refusal | None:
    """Rules 3 and 4, over the delta's context."""
    s_vv = s_ctx._vv
    for r in d_ctx._vv.keys() | d_ctx._cloud.keys():
        if r == replica:
            seen = _top(s_ctx, r)
            top = _top(d_ctx, r)
            if top - seen > limits.max_new_dots:
                return Refusal(
                    FORBIDDEN,
                    f"replica {r!r:.40} jumps from counter {seen} to {top}; a push may add "
                    f"at most {limits.max_new_dots} dots of its own",
                )
            continue
        n = d_ctx._vv.get(r, 0)
        # A compact context has seen (r, 1..n) exactly when its vector reaches n.
        if n > s_vv.get(r, 0):
            return _unseen(r, n, s_ctx, limits)
        for c in d_ctx._cloud.get(r, ()):
            if not s_ctx.contains((r, c)):
                return _unseen(r, c, s_ctx, limits)
    return None


def _unseen(r: str, c: int, s_ctx: DotContext, limits: PushLimits) -> Refusal:
    """The refusal of a claim of another replica's dot ``(r, c)`` that this server has not
    seen: ``behind`` while it could be lag, ``forbidden`` past what no lag explains."""
    seen = _top(s_ctx, r)
    if c - seen > limits.max_new_dots:
        return Refusal(
            FORBIDDEN,
            f"the push claims dot {_dot((r, c))} of another replica, {c - seen} past the "
            f"last this server has seen; a device may only claim dots it has received",
        )
    return Refusal(
        BEHIND,
        f"the push claims dot {_dot((r, c))} of another replica, which this server has not "
        f"seen (it has seen up to {seen}); retry later or through another server",
    )


def _check_sizes(
    sk: Causal,
    s_ctx: DotContext,
    d_entries: Mapping[tuple[str, int], Any],
    d_ctx: DotContext,
    limits: PushLimits,
) -> Refusal | None:
    """Rule 5 for the whole state: only a push that adds dots can break it."""
    new = sum(1 for d in d_entries if not s_ctx.contains(d))
    if new and len(sk._entries) + new > limits.max_state_entries:
        return Refusal(
            QUOTA,
            f"the list may hold at most {limits.max_state_entries} dots; it holds "
            f"{len(sk._entries)} and the push adds {new}",
        )
    if d_ctx._cloud and s_ctx.cloud_size() + d_ctx.cloud_size() > limits.max_state_cloud:
        return Refusal(
            QUOTA,
            f"the list's context may hold at most {limits.max_state_cloud} dots beyond its "
            f"version vector; it holds {s_ctx.cloud_size()} and the push adds up to "
            f"{d_ctx.cloud_size()}",
        )
    return None


# -- content: keys, texts, maps and counters (Rule 5) ----------------------------------------


def _paths(kernel: Causal) -> Iterator[tuple[tuple[Any, ...], type[Causal], tuple[str, int], Any]]:
    """Every entry of ``kernel`` as ``(path of keys, leaf type, dot, leaf payload)``: the
    tags of nested maps and records unwrapped (see :mod:`crdts._ormap`)."""
    top = type(kernel)
    for d, tagged in kernel._entries.items():
        t: type[Causal] = top
        path: list[Any] = []
        payload = tagged
        while issubclass(t, _Embedding):
            key, payload = payload
            path.append(key)
            t = t._stored_type(key)
        yield tuple(path), t, d, payload


def _live(kernel: Causal | None, path: tuple[Any, ...]) -> Causal | None:
    """The live embedded state at ``path`` in ``kernel`` (None if absent)."""
    state: Causal | None = kernel
    for key in path:
        if not isinstance(state, _Embedding):
            return None
        state = state._index.get(key)
    return state


def _texts(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, tuple):
        for v in value:
            yield from _texts(v)


def _check_content(sk: Causal | None, dk: Causal, limits: PushLimits) -> Refusal | None:
    """Rule 5 for what the delta writes: texts, map sizes and counter values."""
    top = type(dk)
    new_keys: dict[tuple[Any, ...], set[Any]] = {}
    counters: dict[tuple[Any, ...], dict[tuple[str, int], int]] = {}
    for path, leaf, d, payload in _paths(dk):
        texts = list(_texts(payload))
        t: type[Causal] = top
        for i, key in enumerate(path):
            if issubclass(t, ORMap):
                new_keys.setdefault(path[:i], set()).add(key)
                live = _live(sk, path[:i])
                if not (isinstance(live, _Embedding) and key in live._index):
                    # A key already on the list may be edited whatever its name.
                    texts.extend(_texts(key))
            assert issubclass(t, _Embedding)
            t = t._stored_type(key)
        for text in texts:
            if has_control_character(text):
                return Refusal(INVALID, f"names may not hold control characters, got {text[:60]!r}")
        if issubclass(leaf, CCounter):
            counters.setdefault(path, {})[d] = payload
    for prefix, keys in new_keys.items():
        live = _live(sk, prefix)
        held = live._index if isinstance(live, _Embedding) else {}
        added = sum(1 for k in keys if k not in held)
        if added and len(held) + added > limits.max_map_keys:
            return Refusal(
                QUOTA,
                f"a list may hold at most {limits.max_map_keys} items; it holds {len(held)} "
                f"and the push adds {added}",
            )
    for path, amounts in counters.items():
        live = _live(sk, path)
        before = 0 if live is None else sum(live._entries.values())
        value = _joined_value(live, sk, dk, amounts)
        if abs(value) > limits.max_counter and abs(value) > abs(before):
            return Refusal(
                QUOTA,
                f"a quantity may change by at most {limits.max_counter} in all, got {value} "
                f"for {'/'.join(map(str, path))[:80]!r}",
            )
    return None


def _joined_value(
    live: Causal | None, sk: Causal | None, dk: Causal, amounts: Mapping[tuple[str, int], int]
) -> int:
    """A counter's value after the join: what the server holds and the delta's context
    does not remove, plus the delta's amounts that the server has not seen."""
    s_ctx = _EMPTY if sk is None else sk._ctx
    d_ctx = dk._ctx
    d_entries = dk._entries
    value = 0
    held = {} if live is None else live._entries
    for d, amount in held.items():
        if d in amounts or not d_ctx.contains(d) or d in d_entries:
            value += amount
    for d, amount in amounts.items():
        if d not in held and not s_ctx.contains(d):
            value += amount
    return value
