"""Decoding by type tag: :func:`decode` picks the type from the ``type`` tag, and
:func:`register` adds a type of your own.

Every type the library ships is known. A map's tag names its value type
(``ORMap[CCounter]``, ``ORMap[ORMap[AWORSet]]``), so maps of known types need nothing.
A :class:`~crdts.Record`'s tag is its ``type_name`` alone; its fields are not in it, so a
record (and a map of records) decodes only once the record class is registered.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, TypeVar

from crdts._aworset import AWORSet
from crdts._base import Crdt
from crdts._ccounter import CCounter
from crdts._codec import describe
from crdts._counters import GCounter, PNCounter
from crdts._flags import DWFlag, EWFlag
from crdts._ormap import ORMap, Record
from crdts._registers import LWWRegister, MVRegister
from crdts.errors import DecodeError, InvalidArgument

__all__ = ["decode", "decode_as", "register", "type_for_tag"]

MAX_TAG_LENGTH = 512
"""The longest type tag :func:`decode` reads."""
MAX_MAP_NESTING = 32
"""How many maps deep a tag may nest (``ORMap[ORMap[...]]``)."""

_MAP_OPEN = "ORMap["
_BASES = frozenset({"ORMap", "Record"})

C = TypeVar("C", bound=type[Crdt])

_TYPES: dict[str, type[Crdt]] = {
    t.type_name: t
    for t in (
        AWORSet,
        CCounter,
        DWFlag,
        EWFlag,
        GCounter,
        LWWRegister,
        MVRegister,
        PNCounter,
    )
}
_BUILTIN = frozenset(_TYPES)


def register(cls: C) -> C:
    """Make :func:`decode` (and ``ORMap[...]`` tags) know ``cls`` by its ``type_name``.

    Registering the same class again does nothing; returns ``cls``, so it also works as a
    class decorator. A :class:`~crdts.Record` must be registered to be decoded by tag,
    alone or inside a map.

    Raises:
        InvalidArgument: ``cls`` is not a concrete CRDT class with a ``type_name`` of its
        own, its tag is a map's (``ORMap[...]``: register the value type instead), or
        another class has that tag.
    """
    if not isinstance(cls, type) or not issubclass(cls, Crdt) or inspect.isabstract(cls):
        raise InvalidArgument(f"register takes a concrete CRDT class, got {describe(cls)}")
    tag = cls.__dict__.get("type_name")
    if type(tag) is not str or not tag or len(tag) > MAX_TAG_LENGTH:
        raise InvalidArgument(
            f"{cls.__name__} needs a type_name of its own (a non-empty str of at most "
            f"{MAX_TAG_LENGTH} characters), got {describe(tag)}"
        )
    if tag in _BASES:
        raise InvalidArgument(
            f"{cls.__name__} is a base class: register a subclass with a type_name of its own"
        )
    if tag.startswith(_MAP_OPEN):
        raise InvalidArgument(
            f"{tag!r:.80} is a map's tag, read from the tag itself: register the value type"
        )
    if issubclass(cls, Record) and not cls.fields:
        raise InvalidArgument(f"{cls.__name__} has no fields")
    known = _TYPES.get(tag)
    if known is not None and known is not cls:
        raise InvalidArgument(
            f"the tag {tag!r:.80} is taken by {known.__module__}.{known.__qualname__}"
        )
    _TYPES[tag] = cls
    return cls


def type_for_tag(tag: object) -> type[Crdt]:
    """The type whose encodings carry ``tag``.

    Raises:
        DecodeError: not a string, too long or nested too deeply, a map of a type that
        cannot be a map value, or a tag no known type carries.
    """
    if type(tag) is not str:
        raise DecodeError(f"expected a type tag (a string), got {describe(tag)}")
    assert isinstance(tag, str)
    if len(tag) > MAX_TAG_LENGTH:
        raise DecodeError(f"type tag of {len(tag)} characters, the limit is {MAX_TAG_LENGTH}")
    inner, depth = tag, 0
    while inner.startswith(_MAP_OPEN) and inner.endswith("]"):
        inner, depth = inner[len(_MAP_OPEN) : -1], depth + 1
        if depth > MAX_MAP_NESTING:
            raise DecodeError(f"type tag nests maps deeper than {MAX_MAP_NESTING}")
    found = _TYPES.get(inner)
    if found is None:
        where = "" if inner == tag else f" in {describe(tag)}"
        raise DecodeError(
            f"unknown type tag {describe(inner)}{where}: the library's types are "
            f"{sorted(_BUILTIN)}, "
            "and a type of your own (a Record, whose fields are not in its tag) needs "
            "crdts.register(cls) before it decodes"
        )
    t: type[Crdt] = found
    for _ in range(depth):
        try:
            t = ORMap.of(t)  # type: ignore[type-var]  # checked: InvalidArgument below
        except InvalidArgument as exc:
            raise DecodeError(f"type tag {describe(tag)}: {exc}") from None
    return t


def decode(data: object) -> Crdt:
    """Decode any encoded state, picking its type from its ``type`` tag.

    Works for every type the library ships, maps of them nested to any depth, and types
    registered with :func:`register` (a :class:`~crdts.Record` must be).

    Raises:
        DecodeError: (a ``ValueError``) not an object, an unknown tag, or the state under
        a known tag is malformed; the message says how.
    """
    if not isinstance(data, Mapping):
        raise DecodeError(
            f"expected an encoded state (an object with a 'type' tag), got {type(data).__name__}"
        )
    return type_for_tag(data.get("type")).from_dict(data)


def decode_as(base: type[Crdt], data: object) -> Any:
    """:func:`decode`, refusing a type that is not a ``base`` (``ORMap.from_dict`` and
    ``Record.from_dict`` on the base classes)."""
    if not isinstance(data, Mapping):
        raise DecodeError(f"{base.__name__}: expected an object, got {type(data).__name__}")
    t = type_for_tag(data.get("type"))
    if not issubclass(t, base):
        raise DecodeError(
            f"{base.__name__}.from_dict cannot decode tag {describe(t.type_name)} "
            f"(a {t.__name__}); crdts.decode(data) decodes any type"
        )
    return t.from_dict(data)
