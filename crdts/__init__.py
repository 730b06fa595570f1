"""State-based CRDTs on dotted causal contexts, with delta mutators.

Every type is a join-semilattice with the same contract: ``T()`` is bottom, mutators take
the acting replica first and return a delta, ``join``/``|``/``<=``/``==``/``copy()``, and a
canonical encoding (``to_dict``/``from_dict``/``digest``). :func:`decode` picks the type
of an encoding from its tag; :func:`register` adds a type of your own.
"""

from crdts._aworset import AWORSet
from crdts._base import Crdt, Stats
from crdts._ccounter import CCounter
from crdts._context_view import ContextView
from crdts._counters import GCounter, PNCounter
from crdts._dots import Dot, DotContext
from crdts._flags import DWFlag, EWFlag
from crdts._kernel import Causal
from crdts._keypath import KeyPath
from crdts._ormap import ORMap, Record
from crdts._registers import LWWRegister, MVRegister
from crdts._registry import decode, register
from crdts.errors import (
    CrdtError,
    DecodeError,
    InvalidArgument,
    InvalidElement,
    ReadOnlyError,
    StaleDelta,
)

__all__ = [
    "AWORSet",
    "CCounter",
    "Causal",
    "ContextView",
    "Crdt",
    "CrdtError",
    "DWFlag",
    "DecodeError",
    "Dot",
    "DotContext",
    "EWFlag",
    "GCounter",
    "InvalidArgument",
    "InvalidElement",
    "KeyPath",
    "LWWRegister",
    "MVRegister",
    "ORMap",
    "PNCounter",
    "ReadOnlyError",
    "Record",
    "StaleDelta",
    "Stats",
    "decode",
    "register",
]

__version__ = "0.1.0"
