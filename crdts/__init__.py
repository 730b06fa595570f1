"""State-based CRDTs on dotted causal contexts, with delta mutators.

Every type is a join-semilattice with the same contract: ``T()`` is bottom, mutators take
the acting replica first and return a delta, ``join``/``|``/``<=``/``==``/``copy()``, and a
canonical encoding (``to_dict``/``from_dict``/``digest``).
"""

from crdts._aworset import AWORSet
from crdts._base import Crdt, Stats
from crdts._counters import GCounter, PNCounter
from crdts._dots import Dot, DotContext
from crdts._kernel import Causal
from crdts.errors import CrdtError, DecodeError, InvalidArgument, InvalidElement

__all__ = [
    "AWORSet",
    "Causal",
    "Crdt",
    "CrdtError",
    "DecodeError",
    "Dot",
    "DotContext",
    "GCounter",
    "InvalidArgument",
    "InvalidElement",
    "PNCounter",
    "Stats",
]

__version__ = "0.1.0"
