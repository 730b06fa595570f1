"""The cluster's membership as a server last recorded it (Rule 13 of ``cores.server``).

One row: the epoch and the members (``{server id: peer end point}`` as canonical JSON).
A restarted server starts from it when it is newer than what its flags say, so a server
that learned of a change before a crash does not forget it. The table is added on open
to a store made before it (as the hints table is), so no schema version changes. A row
that does not read back is logged and ignored: the server then starts from its flags and
learns the membership again from its peers.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Mapping

__all__ = ["CLUSTER_TABLE", "load_cluster", "store_cluster"]

log = logging.getLogger(__name__)

CLUSTER_TABLE = """
CREATE TABLE IF NOT EXISTS cluster_membership (
    one     INTEGER PRIMARY KEY CHECK (one = 1),
    epoch   INTEGER NOT NULL,
    servers TEXT NOT NULL
)
"""


def load_cluster(conn: sqlite3.Connection) -> tuple[int, dict[str, str]] | None:
    """The recorded ``(epoch, {server: end point})``, or None."""
    row = conn.execute("SELECT epoch, servers FROM cluster_membership WHERE one = 1").fetchone()
    if row is None:
        return None
    epoch, text = row
    try:
        servers = json.loads(str(text))
        ok = (
            type(epoch) is int
            and epoch >= 0
            and isinstance(servers, dict)
            and servers
            and all(isinstance(k, str) and k and isinstance(v, str) for k, v in servers.items())
        )
    except ValueError:
        ok = False
    if not ok:
        log.error("cluster_membership: the recorded membership does not read back; ignored")
        return None
    return epoch, servers


def store_cluster(conn: sqlite3.Connection, epoch: int, servers: Mapping[str, str]) -> None:
    """Record the membership (inside the caller's transaction), replacing the last."""
    text = json.dumps(dict(sorted(servers.items())), sort_keys=True, separators=(",", ":"))
    conn.execute(
        "INSERT INTO cluster_membership (one, epoch, servers) VALUES (1, ?, ?) "
        "ON CONFLICT (one) DO UPDATE SET epoch = excluded.epoch, servers = excluded.servers",
        (epoch, text),
    )
