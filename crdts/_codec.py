"""Canonical encoding shared by every type.

Every state encodes to a JSON-safe dict ``{"type": name, "v": FORMAT_VERSION, ...}``.
The encoding is canonical: equal states give equal dicts, and :func:`canonical_json`
gives equal bytes, so :func:`digest` of two replicas tells whether they converged.

Elements (of sets, keys of maps, register values) are hashable values the encoding can
carry: ``str``, ``int``, ``bool``, ``bytes``, ``None`` and tuples of these. They encode as
JSON strings, numbers, ``null``, ``{"b64": ...}`` and lists. As in a Python set, ``True``
and ``1`` are the same element, so a ``bool`` encodes as its ``int``. Integers (elements,
counters, tallies) fit in a signed 64-bit word, so any JSON reader can parse the encoding.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import json
import reprlib
from collections.abc import Collection, Hashable, Mapping
from typing import Any

from crdts.errors import DecodeError, InvalidArgument, InvalidElement

__all__ = [
    "FORMAT_VERSION",
    "Element",
    "canonical_json",
    "check_element",
    "decode_element",
    "describe",
    "describe_keys",
    "digest",
    "element_sort_key",
    "encode_element",
]

FORMAT_VERSION = 1
MAX_DEPTH = 32
"""How deeply tuples may nest inside an element."""
MAX_INT = 2**63 - 1
MIN_INT = -(2**63)
"""The range of integers the encoding carries (a signed 64-bit word)."""

Element = Hashable
_SCALARS = frozenset({str, int, bool, bytes, type(None)})


class _ShortRepr(reprlib.Repr):
    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:
            return f"<int of {x.bit_length()} bits>"
        return repr(x)


_SHORT = _ShortRepr()
_SHORT.maxlevel = 3
_SHORT.maxstring = 60
_SHORT.maxother = 60


def describe(value: object) -> str:
    """A short ``repr`` of ``value`` for error messages, bounded in length and nesting (safe
    on hostile input: deep nesting, huge integers, long strings)."""
    return _SHORT.repr(value)


SHOWN_KEYS = 5
"""How many unexpected keys an error message names (the rest are counted)."""


def describe_keys(keys: Collection[object]) -> str:
    """A short, sorted list of ``keys`` for error messages: at most :data:`SHOWN_KEYS` of
    them, each through :func:`describe`, then how many there are.

    Safe on hostile keys: nothing is passed to ``str()`` or ``repr()`` unbounded, so a
    tuple nested thousands deep or an int of more than 4,300 digits is described, not
    raised on. String keys are sorted; other keys follow, in the order they come.
    """
    texts = sorted(k for k in keys if type(k) is str)[:SHOWN_KEYS]
    shown = [describe(k) for k in texts]
    if len(shown) < SHOWN_KEYS:
        others = (k for k in keys if type(k) is not str)
        shown += [describe(k) for k in itertools.islice(others, SHOWN_KEYS - len(shown))]
    if len(keys) <= SHOWN_KEYS:
        return f"[{', '.join(shown)}]"
    return f"[{', '.join(shown)}, ...] ({len(keys)} keys)"


def check_element(value: object, what: str = "element") -> None:
    """Raise unless ``value`` is a value the encoding can carry.

    Raises:
        InvalidElement: a type the encoding cannot carry, or tuples nested too deeply.
        InvalidArgument: an integer outside the signed 64-bit range.
    """
    t = type(value)
    if t in _SCALARS:
        if t is int and isinstance(value, int) and not MIN_INT <= value <= MAX_INT:
            raise InvalidArgument(f"{what} {describe(value)} is outside the signed 64-bit range")
        return
    _check_slow(value, what, 0)


def _check_slow(value: object, what: str, depth: int) -> None:
    if type(value) in _SCALARS:
        check_element(value, what)
        return
    if type(value) is tuple:
        if depth >= MAX_DEPTH:
            raise InvalidElement(f"{what} nests tuples deeper than {MAX_DEPTH}")
        for item in value:
            _check_slow(item, what, depth + 1)
        return
    raise InvalidElement(
        f"{what} must be str, int, bool, bytes, None or a tuple of these, "
        f"got {type(value).__name__}"
    )


def encode_element(value: Any) -> Any:
    """The JSON-safe form of an element (assumed valid)."""
    t = type(value)
    if t is str or t is int or value is None:
        return value
    if t is bool:
        return int(value)
    if t is bytes:
        return {"b64": base64.b64encode(value).decode("ascii")}
    return [encode_element(item) for item in value]


def decode_element(data: object, path: str, depth: int = 0) -> Any:
    """Decode :func:`encode_element` output.

    Raises:
        DecodeError: ``data`` is not an encoded element; the message names ``path``.
    """
    t = type(data)
    if t is str or data is None:
        return data
    if t is int and isinstance(data, int):
        if not MIN_INT <= data <= MAX_INT:
            raise DecodeError(
                f"{path}: integer {describe(data)} is outside the signed 64-bit range"
            )
        return data
    if t is list:
        if depth >= MAX_DEPTH:
            raise DecodeError(f"{path}: element nests deeper than {MAX_DEPTH}")
        assert isinstance(data, list)
        return tuple(decode_element(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(data))
    if isinstance(data, Mapping) and set(data) == {"b64"}:
        text = data["b64"]
        if type(text) is not str:
            raise DecodeError(f"{path}.b64: expected a base64 string, got {describe(text)}")
        try:
            raw = base64.b64decode(text.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError) as exc:
            raise DecodeError(f"{path}.b64: not valid base64 ({exc})") from None
        if base64.b64encode(raw).decode("ascii") != text:
            raise DecodeError(f"{path}.b64: base64 is not in canonical form")
        return raw
    raise DecodeError(
        f"{path}: expected an element (string, integer, null, list or {{'b64': ...}}), "
        f"got {describe(data)}"
    )


def canonical_json(data: Any) -> bytes:
    """The canonical bytes of a JSON-safe value: sorted keys, no spaces, ASCII only."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("ascii")


def element_sort_key(encoded: Any) -> str:
    """A total order on encoded elements, used to list them canonically."""
    return json.dumps(encoded, sort_keys=True, separators=(",", ":"))


def digest(data: Any) -> str:
    """SHA-256 (hex) of :func:`canonical_json` of ``data``."""
    return hashlib.sha256(canonical_json(data)).hexdigest()


def check_header(data: object, type_name: str, keys: frozenset[str]) -> Mapping[str, Any]:
    """Check the ``type``/``v`` header and the key set of an encoded state.

    Returns:
        ``data`` as a mapping.

    Raises:
        DecodeError: wrong shape, wrong type tag, unknown version or unexpected keys.
    """
    if not isinstance(data, Mapping):
        raise DecodeError(f"{type_name}: expected an object, got {type(data).__name__}")
    tag = data.get("type")
    if tag != type_name:
        raise DecodeError(f"{type_name}: wrong type tag {describe(tag)}, expected {type_name!r}")
    version = data.get("v")
    if type(version) is not int or version != FORMAT_VERSION:
        raise DecodeError(
            f"{type_name}: unsupported format version {describe(version)}, "
            f"expected {FORMAT_VERSION}"
        )
    allowed = keys | {"type", "v"}
    extra = set(data) - allowed
    missing = allowed - set(data)
    if extra:
        raise DecodeError(f"{type_name}: unexpected keys {describe_keys(extra)}")
    if missing:
        raise DecodeError(f"{type_name}: missing keys {sorted(missing)}")
    return data
