"""The public testing tools: the law checker catches lawless types, the strategies follow
Hypothesis' API style, and ``crdts.testing`` explains a missing hypothesis.

``MaxRegister`` is a small lawful CRDT written the way a user would write one; each
``Broken*`` subclass breaks exactly one law, and the test of that law must fail on it
with a shrunk counterexample.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from typing import Any, Self

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdts import AWORSet, Crdt, GCounter, InvalidArgument, PNCounter, Stats
from crdts.errors import DecodeError
from crdts.testing import (
    History,
    aworsets,
    check_laws,
    gcounters,
    histories,
    operations_for,
    pncounters,
    replica_name,
)


class MaxRegister(Crdt):
    """A register holding the largest value ever set (a lawful, minimal CRDT)."""

    __slots__ = ("_v",)
    type_name = "MaxRegister"

    def __init__(self) -> None:
        self._v = 0

    @classmethod
    def _of(cls, value: int) -> Self:
        state = cls()
        state._v = value
        return state

    def set(self, replica: str, value: int) -> Self:
        """Raise the register to ``value``; return the delta."""
        self._v = max(self._v, value)
        return self._of(value)

    def join(self, other: Self) -> None:
        self._v = max(self._v, other._v)

    def __le__(self, other: Self) -> bool:
        return self._v <= other._v

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._v == other._v

    def copy(self) -> Self:
        return self._of(self._v)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type_name, "v": 1, "value": self._v}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        value = data.get("value")
        if type(value) is not int or value < 0:
            raise DecodeError(f"{cls.type_name}.value: expected an int >= 0, got {value!r}")
        return cls._of(value)

    @property
    def value(self) -> int:
        return self._v

    def stats(self) -> Stats:
        return Stats(replicas=0, entries=1, cloud=0, encoded_bytes=len(self.to_json()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._v})"


SET_OPS = {"set": st.tuples(st.integers(1, 9))}

TestMaxRegisterLaws = check_laws(MaxRegister, SET_OPS)


class BrokenLeftJoin(MaxRegister):
    """Join keeps the left operand: not commutative."""

    def join(self, other: Self) -> None:
        pass


class BrokenSumJoin(MaxRegister):
    """Join adds: commutative and associative, but not idempotent."""

    def join(self, other: Self) -> None:
        self._v += other._v


class BrokenAverageJoin(MaxRegister):
    """Join averages: commutative and idempotent, but not associative."""

    def join(self, other: Self) -> None:
        self._v = (self._v + other._v) // 2


class BrokenStrictOrder(MaxRegister):
    """``<=`` is strict: it disagrees with join on equal states."""

    def __le__(self, other: Self) -> bool:
        return self._v < other._v


class BrokenBottom(MaxRegister):
    """A min register whose mutator reads zero as "unset" but whose join does not: zero,
    the value of ``T()``, is the lattice's top, not its bottom."""

    def set(self, replica: str, value: int) -> Self:
        self._v = min(self._v, value) if self._v else value
        return self._of(value)

    def join(self, other: Self) -> None:
        self._v = min(self._v, other._v)

    def __le__(self, other: Self) -> bool:
        return other._v <= self._v


class BrokenEmptyDelta(MaxRegister):
    """The mutator returns the bottom state instead of its delta."""

    def set(self, replica: str, value: int) -> Self:
        super().set(replica, value)
        return type(self)()


class BrokenSharedDelta(MaxRegister):
    """The mutator returns the state itself, which later mutations change."""

    def set(self, replica: str, value: int) -> Self:
        super().set(replica, value)
        return self


class BrokenLightDelta(MaxRegister):
    """Deltas carry a mark that sends them down their own path in join, which overwrites
    instead of taking the maximum; the same delta decoded joins correctly."""

    __slots__ = ("_light",)

    def __init__(self) -> None:
        super().__init__()
        self._light = False

    def set(self, replica: str, value: int) -> Self:
        super().set(replica, value)
        delta = self._of(value)
        delta._light = True
        return delta

    def join(self, other: Self) -> None:
        if other._light:
            self._v = other._v
        else:
            super().join(other)


class BrokenLossyEncoding(MaxRegister):
    """The encoding drops the lowest bit."""

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type_name, "v": 1, "value": self._v & ~1}


class BrokenDigest(MaxRegister):
    """The encoding carries how many joins a state has seen: equal states, different bytes."""

    __slots__ = ("_joins",)

    def __init__(self) -> None:
        super().__init__()
        self._joins = 0

    def join(self, other: Self) -> None:
        super().join(other)
        self._joins += 1

    def copy(self) -> Self:
        state = super().copy()
        state._joins = self._joins
        return state

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "joins": self._joins}


class BrokenCopy(MaxRegister):
    """``copy()`` returns the state itself."""

    def copy(self) -> Self:
        return self


FAILING_EXAMPLE = re.compile(r"Falsifying example|Failing test case")


def run_law(cls: type[Crdt], law: str) -> list[AssertionError]:
    """Run one generated law test on ``cls``; return the assertion failures it raised.

    Hypothesis raises one AssertionError, or an ExceptionGroup of them when it found
    several distinct failures; anything else (or no failure) fails the calling test.
    """
    laws = check_laws(cls, SET_OPS)
    with pytest.raises((AssertionError, ExceptionGroup)) as info:
        getattr(laws(), law)()
    error = info.value
    if isinstance(error, ExceptionGroup):
        matched, rest = error.split(AssertionError)
        assert rest is None
        assert matched is not None
        return [e for e in matched.exceptions if isinstance(e, AssertionError)]
    assert isinstance(error, AssertionError)
    return [error]


def notes_of(error: BaseException) -> str:
    """The notes Hypothesis attached to a failure, as one string."""
    return "\n".join(getattr(error, "__notes__", []))


@pytest.mark.parametrize(
    ("cls", "law"),
    [
        (BrokenLeftJoin, "test_join_commutative"),
        (BrokenSumJoin, "test_join_idempotent"),
        (BrokenAverageJoin, "test_join_associative"),
        (BrokenStrictOrder, "test_order_agrees_with_join"),
        (BrokenStrictOrder, "test_order_is_partial_order"),
        (BrokenBottom, "test_bottom_is_identity"),
        (BrokenEmptyDelta, "test_mutators_inflate_with_their_delta"),
        (BrokenSharedDelta, "test_deltas_are_values"),
        (BrokenSumJoin, "test_deltas_in_any_order_with_duplicates"),
        (BrokenLightDelta, "test_deltas_join_as_their_encoding"),
        (BrokenLossyEncoding, "test_encoding_round_trips"),
        (BrokenDigest, "test_encoding_is_faithful"),
        (BrokenCopy, "test_copy_is_independent"),
    ],
)
def test_checker_catches_each_broken_law(cls: type[Crdt], law: str) -> None:
    """Each law test fails on a type that breaks that law, and reports a counterexample."""
    errors = run_law(cls, law)
    assert errors
    for error in errors:
        assert FAILING_EXAMPLE.search(notes_of(error)) is not None


def test_counterexample_for_left_join_is_shrunk_to_one_operation() -> None:
    """A join that keeps its left operand is refuted by one `set` and two distinct replicas."""
    [error] = run_law(BrokenLeftJoin, "test_join_commutative")
    notes = notes_of(error)
    example = FAILING_EXAMPLE.split(notes, maxsplit=1)[1]
    assert example.count("Op(") == 1
    assert "Sync(" not in example
    assert "args=(1,)" in example
    indices = dict(re.findall(r"\b([ij])=(\d+)", example))
    assert set(indices) == {"i", "j"}
    assert indices["i"] != indices["j"]


def test_check_laws_returns_a_pytest_class_with_every_law() -> None:
    """check_laws names its class after the type and has one test per documented law
    (the module-level TestMaxRegisterLaws runs them on the lawful register)."""
    laws = check_laws(MaxRegister, SET_OPS)
    assert laws.__name__ == "TestMaxRegisterLaws"
    names = {n for n in dir(laws) if n.startswith("test_")}
    assert names == {
        "test_bottom_is_identity",
        "test_copy_is_independent",
        "test_deltas_are_values",
        "test_deltas_in_any_order_with_duplicates",
        "test_deltas_join_as_their_encoding",
        "test_encoding_is_faithful",
        "test_encoding_round_trips",
        "test_join_associative",
        "test_join_commutative",
        "test_join_idempotent",
        "test_mutators_inflate_with_their_delta",
        "test_order_agrees_with_join",
        "test_order_is_partial_order",
    }


@pytest.mark.parametrize(
    "strategy",
    [
        gcounters(replicas=0),
        gcounters(replicas=17),
        gcounters(replicas=True),
        pncounters(max_ops=-1),
        pncounters(max_ops=2.5),  # type: ignore[arg-type]
        aworsets([1, 2]),  # type: ignore[arg-type]
        aworsets(st.integers(), replicas=0),
        histories(GCounter, {}),
        histories(GCounter, {"increment": (1,)}),  # type: ignore[dict-item]
        histories(GCounter, {"not a name": st.just((1,))}),
        histories(GCounter, ["increment"]),  # type: ignore[arg-type]
        histories(42, operations_for(GCounter)),  # type: ignore[arg-type]
    ],
    ids=repr,
)
def test_bad_strategy_arguments_raise_at_first_draw(strategy: st.SearchStrategy[Any]) -> None:
    """Building a strategy with a bad argument succeeds; validating or drawing raises."""
    with pytest.raises(InvalidArgument):
        strategy.validate()


@pytest.mark.parametrize(
    "call",
    [
        lambda: check_laws(GCounter, replicas=0),
        lambda: check_laws(GCounter, max_ops=-1),
        lambda: check_laws(GCounter, {}),
        lambda: check_laws(MaxRegister),
        lambda: check_laws(GCounter(), SET_OPS),  # type: ignore[arg-type]
    ],
)
def test_check_laws_rejects_bad_arguments_when_called(call: Any) -> None:
    """check_laws is not a strategy: it raises InvalidArgument at once."""
    with pytest.raises(InvalidArgument):
        call()


@given(gcounters(replicas=2, max_ops=10))
def test_gcounters_come_from_histories_on_the_given_replicas(c: GCounter) -> None:
    """A drawn GCounter only has tallies of the generated replicas, within the op budget."""
    assert set(c.counts) <= {replica_name(0), replica_name(1)}
    assert c.value <= 10 * 5


@given(pncounters(replicas=1, max_ops=6))
def test_pncounters_come_from_histories(c: PNCounter) -> None:
    """A drawn PNCounter's value is bounded by its history's length and amounts."""
    assert set(c.increments) | set(c.decrements) <= {replica_name(0)}
    assert -30 <= c.value <= 30


@given(aworsets(st.sampled_from(["x", "y"]), replicas=3, max_ops=12))
def test_aworsets_draw_elements_from_the_element_strategy(s: AWORSet) -> None:
    """A drawn AWORSet only holds elements of the element strategy, each with a dot."""
    assert s.value <= {"x", "y"}
    for element in s:
        assert s.dots_of(element)


@given(histories(AWORSet, operations_for(AWORSet), replicas=2, max_ops=15))
def test_history_records_one_delta_per_mutation(h: History[AWORSet]) -> None:
    """A history records one delta and one (before, delta, after) triple per mutation."""
    assert len(h.deltas) == len(h.mutations)
    assert len(h.replicas) == 2
    for before, delta, after in h.mutations:
        assert before | delta == after


def test_missing_hypothesis_gives_a_clear_import_error() -> None:
    """Without hypothesis, `import crdts` works and `import crdts.testing` says what to install."""
    script = textwrap.dedent(
        """
        import sys
        sys.modules["hypothesis"] = None
        import crdts
        assert crdts.GCounter().value == 0
        try:
            import crdts.testing
        except ImportError as exc:
            print("ImportError:", exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert "ImportError: crdts.testing needs hypothesis" in done.stdout
    assert "dotted-crdts[test]" in done.stdout
