"""The lattice laws for the composition types, through the public law checker.

The ``Folding`` variants are sealed at creation, so their counters fold consecutive
changes; their histories ship deltas at arbitrary points (also ones that a later change
folded), which must never break a law, only exactness (see test_composition_counter.py).
"""

from __future__ import annotations

from typing import Any, ClassVar

from hypothesis import strategies as st

from crdts import (
    AWORSet,
    CCounter,
    DWFlag,
    EWFlag,
    LWWRegister,
    MVRegister,
    ORMap,
    Record,
)
from crdts.testing import check_laws, operations_for, record_operations


class Task(Record):
    """A record with one field of each kind, for the law suite."""

    type_name = "Task"
    fields: ClassVar[dict[str, type[Any]]] = {
        "done": EWFlag,
        "title": MVRegister,
        "votes": CCounter,
        "tags": AWORSet,
        "notes": ORMap.of(MVRegister),
    }


class FoldingCCounter(CCounter):
    """A CCounter sealed at creation, with ``ship`` (seal, bottom delta) as an operation."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__()
        self.seal()

    def ship(self, replica: str) -> FoldingCCounter:
        """Seal this replica's open dots; the delta is bottom."""
        self.seal()
        return FoldingCCounter()


_COUNTS = ORMap.of(CCounter)


class FoldingCounts(_COUNTS):  # type: ignore[misc,valid-type]  # a class made by ORMap.of
    """An ``ORMap.of(CCounter)`` sealed at creation, with ``ship`` as an operation."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__()
        self.seal()

    def ship(self, replica: str) -> FoldingCounts:
        """Seal this replica's open dots; the delta is bottom."""
        self.seal()
        return FoldingCounts()


_SHIP = {"ship": st.just(())}

TestEWFlagLaws = check_laws(EWFlag)
TestDWFlagLaws = check_laws(DWFlag)
TestMVRegisterLaws = check_laws(MVRegister)
TestLWWRegisterLaws = check_laws(LWWRegister)
TestCCounterLaws = check_laws(CCounter)
TestFoldingCCounterLaws = check_laws(FoldingCCounter, {**operations_for(CCounter), **_SHIP})
TestORMapCCounterLaws = check_laws(ORMap.of(CCounter))
TestFoldingORMapLaws = check_laws(FoldingCounts, {**operations_for(_COUNTS), **_SHIP})
TestORMapEWFlagLaws = check_laws(ORMap.of(EWFlag))
TestORMapMVRegisterLaws = check_laws(ORMap.of(MVRegister))
TestORMapAWORSetLaws = check_laws(ORMap.of(AWORSet))
TestNestedORMapLaws = check_laws(ORMap.of(ORMap.of(CCounter)), max_ops=35)
TestRecordLaws = check_laws(Task, record_operations(Task), max_ops=35)
