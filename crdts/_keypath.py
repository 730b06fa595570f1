"""Typed paths into maps and records: ``m.at(key)``, ``rec.at(field, T)``.

A :class:`KeyPath` names one embedded value by the keys (and fields) that lead to it from
a root map or record, and knows the value's type, so that a type checker can check an
edit: :meth:`KeyPath.update` takes the value type's mutator as a function
(``CCounter.increment``), whose name, owner and arguments mypy sees. At run time the edit
goes through the root's own machinery (:mod:`crdts._ormap`, Rule 3), so it changes the
same state and returns the same delta as ``apply`` with strings, and no caller ever holds
a live embedded object.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, cast, overload

from crdts._codec import describe
from crdts._dots import check_replica
from crdts._kernel import Causal
from crdts._ormap import ORMap, Record, _Embedding, mutators_of, type_below
from crdts.errors import InvalidArgument

__all__ = ["KeyPath"]

W = TypeVar("W", bound=Causal)
R = TypeVar("R", bound=_Embedding)
V_co = TypeVar("V_co", bound=Causal, covariant=True)
R_co = TypeVar("R_co", bound=_Embedding, covariant=True)
P = ParamSpec("P")


class KeyPath(Generic[V_co, R_co]):
    """A typed path from a map or record (the root) to one embedded value.

    ``m.at(key)`` starts one; ``.at(key)`` goes into a nested map and
    ``.at(field, FieldType)`` into a record's field. :meth:`update` calls the value's own
    mutator, passed as the class's function (``CCounter.increment``), so a type checker
    checks the mutator's name, the value's type and the arguments; the delta comes back
    at the level of the root::

        d = counts.at("milk").update("alice", CCounter.increment, 2)
        d = nested.at("shop").at("milk").update("alice", CCounter.increment, 2)
        d = items.at("milk").at("count", CCounter).update("alice", CCounter.increment, 2)

    It reads like ``apply`` with strings (same state, same delta), which stays for generic
    code. A path holds no copy: it reads the root as it is when asked.
    """

    __slots__ = ("_path", "_root", "_type")

    def __init__(self, root: R_co, path: tuple[Any, ...], value_type: type[V_co]) -> None:
        self._root = root
        self._path = path
        self._type = value_type

    @overload
    def at(self: KeyPath[ORMap[W], R], key: Hashable) -> KeyPath[W, R]: ...

    @overload
    def at(self: KeyPath[Record, R], key: str, kind: type[W]) -> KeyPath[W, R]: ...

    def at(self, key: Any, kind: Any = None) -> KeyPath[Any, Any]:
        """The path one level down: a key of a nested map, or a field of a record (with
        the field's type, which must be the one the record declares).

        Raises:
            InvalidArgument: the value here embeds nothing, a field it does not have, or
            ``kind`` is not the field's type. InvalidElement: a map key the encoding
            cannot carry.
        """
        t = self._type
        if not issubclass(t, _Embedding):
            raise InvalidArgument(f"{t.__name__} embeds nothing; cannot look up {describe(key)}")
        return KeyPath(self._root, (*self._path, key), type_below(t, key, kind))

    def update(
        self,
        replica: str,
        op: Callable[Concatenate[V_co, str, P], object],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R_co:
        """Call ``op`` (a mutator of the value's type, such as ``CCounter.increment``) with
        ``replica`` and the arguments on the value at this path, creating it from bottom if
        absent; return the root's delta (as ``apply`` would).

        Raises:
            InvalidArgument: bad replica id, ``op`` is not a mutator of the value's type,
            or the mutator refused its arguments. Nothing changed in any case.
        """
        check_replica(replica)
        t = self._type
        name = getattr(op, "__name__", None)
        allowed = mutators_of(t)
        if type(name) is not str or name not in allowed or getattr(t, name, None) is not op:
            expected = ", ".join(f"{t.__name__}.{n}" for n in sorted(allowed))
            raise InvalidArgument(
                f"{describe(op)} is not a mutator of {t.__name__}; expected one of {expected}"
            )
        root = cast(_Embedding, self._root)
        return cast(R_co, root._edit(replica, self._path, op, args, kwargs))

    @property
    def value(self) -> Any:
        """The value at this path (the bottom value if nothing is there)."""
        return cast(_Embedding, self._root).value_at(*self._path)

    def holds(self) -> bool:
        """Whether the value at this path holds any dot (a map key is present)."""
        return cast(_Embedding, self._root).holds(*self._path)

    def state(self) -> V_co:
        """An independent copy of the state at this path (bottom if absent)."""
        return cast(V_co, cast(_Embedding, self._root).state_at(*self._path))

    def __repr__(self) -> str:
        keys = ", ".join(describe(k) for k in self._path)
        return f"KeyPath({type(self._root).__name__}, [{keys}] -> {self._type.__name__})"
