"""A deterministic simulator that runs the cluster's real cores through fault schedules.

Seeded and reproducible: a virtual clock, a network that drops, delays, duplicates,
reorders and truncates messages and partitions the nodes, crashes and restarts that keep
only what the stores made durable, and checkers run after the last heal. Run
``python -m reference_cluster.sim --seeds 1000`` for a sweep, ``--seed N --trace`` to
replay one run.
"""

from reference_cluster.sim.checkers import RunResult
from reference_cluster.sim.faults import (
    Crash,
    Fault,
    FaultSchedule,
    HealPartition,
    Isolate,
    Partition,
    Rejoin,
    Restart,
    SetLinkFaults,
    Topology,
    random_schedule,
)
from reference_cluster.sim.network import LinkFaults, Network
from reference_cluster.sim.runner import SimConfig, Simulation, SimulationError, run
from reference_cluster.sim.workload import (
    ClientOp,
    DocumentModel,
    EditRecord,
    Op,
    SetModel,
    ShoppingListModel,
    Workload,
    random_workload,
)

__all__ = [
    "ClientOp",
    "Crash",
    "DocumentModel",
    "EditRecord",
    "Fault",
    "FaultSchedule",
    "HealPartition",
    "Isolate",
    "LinkFaults",
    "Network",
    "Op",
    "Partition",
    "Rejoin",
    "Restart",
    "RunResult",
    "SetLinkFaults",
    "SetModel",
    "ShoppingListModel",
    "SimConfig",
    "Simulation",
    "SimulationError",
    "Topology",
    "Workload",
    "random_schedule",
    "random_workload",
    "run",
]
