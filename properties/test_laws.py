"""The lattice laws for every library type, through the public law checker."""

from __future__ import annotations

from crdts import AWORSet, GCounter, PNCounter
from crdts.testing import check_laws

TestGCounterLaws = check_laws(GCounter)
TestPNCounterLaws = check_laws(PNCounter)
TestAWORSetLaws = check_laws(AWORSet)
TestAWORSetLawsManyReplicas = check_laws(AWORSet, replicas=5, max_ops=40)
