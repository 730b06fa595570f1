"""``shoplist cluster add-server`` / ``remove-server``: the membership record an operator
edits and a running ``cluster up`` follows.

``cluster up`` writes ``DATA_DIR/membership.json``: the member servers, the replica count,
the epoch, and the servers that left but may still run (``left``). ``add-server`` and
``remove-server`` rewrite it with the next epoch (whole, then renamed into place, so a
reader never sees half of it). The running ``cluster up`` reads it every fraction of a
second: for a newer epoch it starts the servers that joined and tells every running
server the new membership (Rule 13 of :mod:`reference_cluster.cores.server`); a server
that left keeps running until it has handed every list and hint over, and is then
stopped. ``cluster status`` reads the same record.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from reference_cluster.errors import ClusterError
from reference_cluster.processes.cluster import LocalCluster
from reference_cluster.processes.config import MAX_SERVERS
from reference_cluster.processes.security import ensure_keys
from reference_cluster.protocol.placement import Membership

__all__ = [
    "MEMBERSHIP_FILE",
    "Follower",
    "Record",
    "cmd_add_server",
    "cmd_remove_server",
    "read_membership",
    "read_record",
    "record_membership",
    "write_record",
]

MEMBERSHIP_FILE = "membership.json"
"""What ``cluster up`` records in its data folder: the member servers, the replica count,
the epoch, and the servers that left (see the module notes)."""
_MEMBERSHIP_MAX_BYTES = 64 * 1024


def ordered(servers: Sequence[str] | frozenset[str]) -> list[str]:
    """Server ids in their natural order: s1, s2, ..., s10."""
    return sorted(servers, key=lambda s: (len(s), s))


@attrs.frozen
class Record:
    """A membership record: ``servers`` (the members), ``replicas``, ``epoch`` and
    ``left`` (servers that left and may still be handing their lists over)."""

    servers: tuple[str, ...]
    replicas: int
    epoch: int = 0
    left: tuple[str, ...] = ()

    @property
    def membership(self) -> Membership:
        """The members at the epoch."""
        return Membership(self.servers, self.epoch)


def write_record(data_dir: Path, record: Record) -> Path:
    """Write ``record`` to ``DATA_DIR/membership.json`` (whole, then renamed into place);
    return the file's path."""
    path = data_dir / MEMBERSHIP_FILE
    data = {
        "servers": ordered(record.servers),
        "replicas": record.replicas,
        "epoch": record.epoch,
        "left": ordered(record.left),
    }
    tmp = path.with_name(f".{MEMBERSHIP_FILE}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(data) + "\n")
    os.replace(tmp, path)
    return path


def record_membership(data_dir: Path, servers: Sequence[str], replicas: int) -> Path:
    """Write what ``cluster up`` started (epoch 0); return the file's path."""
    return write_record(data_dir, Record(tuple(ordered(servers)), replicas))


def read_record(path: Path) -> Record | None:
    """The record at ``path``, or None if there is no such file.

    Raises:
        ValueError: the file cannot be read or is not such a record (one line naming it).
    """
    try:
        with path.open("rb") as f:
            raw = f.read(_MEMBERSHIP_MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    why = "larger than 64 KiB" if len(raw) > _MEMBERSHIP_MAX_BYTES else ""
    data: Any = None
    if not why:
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            why = "not JSON"
    if not why:
        why = _problem(data)
    if why:
        raise ValueError(
            f"{path} is not a membership recorded by cluster up ({why}): pass --servers "
            "and --replicas, or delete it"
        )
    return Record(
        tuple(data["servers"]), data["replicas"], data["epoch"], tuple(data.get("left", ()))
    )


def read_membership(path: Path) -> tuple[Membership, int] | None:
    """The membership and replica count recorded at ``path``, or None (no file).

    Raises:
        ValueError: as :func:`read_record`.
    """
    record = read_record(path)
    return None if record is None else (record.membership, record.replicas)


def _server_id(value: object) -> bool:
    return (
        isinstance(value, str)
        and value[:1] == "s"
        and value[1:].isdigit()
        and value[1:2] != "0"
        and 1 <= int(value[1:]) <= MAX_SERVERS
    )


def _problem(data: Any) -> str:
    """What is wrong with a decoded record ("" if nothing)."""
    if not isinstance(data, dict):
        return "not an object"
    servers, left = data.get("servers"), data.get("left", [])
    ids = servers if isinstance(servers, list) else []
    gone = left if isinstance(left, list) else [None]
    every = [*ids, *gone]
    if not ids or not all(_server_id(s) for s in every) or len(set(every)) != len(every):
        return f"servers must be distinct ids s1 to s{MAX_SERVERS}, at least one a member"
    replicas, epoch = data.get("replicas"), data.get("epoch")
    if type(replicas) is not int or replicas < 1:
        return "replicas must be a whole number >= 1"
    if type(epoch) is not int or epoch < 0:
        return "epoch must be a whole number >= 0"
    return ""


# -- the operator's verbs -------------------------------------------------------------------


def _recorded(data_dir: Path) -> Record:
    record = read_record(data_dir / MEMBERSHIP_FILE)
    if record is None:
        raise ClusterError(
            f"no cluster is recorded in {data_dir}: start one with `shoplist cluster up`"
        )
    return record


def cmd_add_server(args: argparse.Namespace, out: Any, data_dir: Path) -> int:
    """Add the next server to the recorded membership (the next epoch)."""
    record = _recorded(data_dir)
    used = [int(s[1:]) for s in (*record.servers, *record.left)]
    free = [j for j in range(1, MAX_SERVERS + 1) if j not in used and j > max(used)]
    if not free:
        raise ClusterError(f"no room for another server: {MAX_SERVERS} at most")
    name = f"s{free[0]}"
    keys = data_dir / "keys"
    if keys.exists():
        ensure_keys(keys, [name])  # the members trust it once they follow the new epoch
    new = attrs.evolve(record, servers=(*record.servers, name), epoch=record.epoch + 1)
    what = "the running `cluster up` starts it, and the servers hand it the lists it now holds"
    return _save(data_dir, new, out, f"{name} joins", what, name=name)


def cmd_remove_server(args: argparse.Namespace, out: Any, data_dir: Path) -> int:
    """Take a server out of the recorded membership (the next epoch)."""
    record = _recorded(data_dir)
    name: str = args.server
    if name not in record.servers:
        raise ClusterError(f"{name} is not a member ({' '.join(ordered(record.servers))})")
    if len(record.servers) == 1:
        raise ClusterError(f"{name} is the last member; stop the cluster instead")
    new = attrs.evolve(
        record,
        servers=tuple(s for s in record.servers if s != name),
        epoch=record.epoch + 1,
        left=(*record.left, name),
    )
    what = "it hands its lists to their holders, and the running `cluster up` then stops it"
    return _save(data_dir, new, out, f"{name} leaves", what, name=name)


def _save(data_dir: Path, new: Record, out: Any, change: str, what: str, *, name: str) -> int:
    """Write the record at its new epoch and say what follows."""
    path = write_record(data_dir, new)
    members = ordered(new.servers)
    out.emit(
        {"server": name, "epoch": new.epoch, "servers": members, "record": str(path)},
        f"{change} at membership epoch {new.epoch} ({' '.join(members)}): {what}",
    )
    return 0


# -- what cluster up does with the record ---------------------------------------------------


class Follower:
    """What a running ``cluster up`` does with the record (see the module notes): call
    :meth:`check` every fraction of a second; it returns lines to show."""

    def __init__(self, cluster: LocalCluster, data_dir: Path) -> None:
        self.cluster = cluster
        self.path = data_dir / MEMBERSHIP_FILE
        self.leaving: set[str] = set()
        self._complained = ""

    def check(self) -> list[str]:
        """Follow a newer record; stop the servers that left once they handed over."""
        lines: list[str] = []
        try:
            record = read_record(self.path)
        except ValueError as exc:
            if str(exc) != self._complained:
                self._complained = str(exc)
                lines.append(f"membership record ignored: {exc}")
            return lines
        cluster = self.cluster
        if record is not None and record.epoch > cluster.epoch:
            lines.extend(self._follow(record))
        for name in sorted(self.leaving):
            status = cluster.server_status(name, timeout=0.2)
            if status is not None and status.handing == 0 and status.epoch >= cluster.epoch:
                cluster.retire(name)
                self.leaving.discard(name)
                lines.append(f"server {name} handed every list over and was stopped")
        return lines

    def _follow(self, record: Record) -> list[str]:
        cluster = self.cluster
        lines: list[str] = []
        joining = [s for s in record.servers if s not in cluster.members]
        leaving = [s for s in cluster.members if s not in record.servers]
        try:
            cluster.change_membership(list(record.servers), epoch=record.epoch)
            lines.extend(
                f"server {name} started and joined (pid {cluster.pid(name)})" for name in joining
            )
            self.leaving.update(leaving)
            lines.extend(f"server {name} left; it hands its lists over" for name in leaving)
        except (RuntimeError, TimeoutError, ValueError) as exc:
            lines.append(f"membership epoch {record.epoch} not taken: {str(exc).splitlines()[0]}")
        lines.append(f"membership epoch {cluster.epoch}: {' '.join(ordered(cluster.members))}")
        return lines
