"""The members of each list in a server's store (see ``cores.membership``).

One row per list: its members as the canonical text of an ``AWORSet`` of user ids. The
table is added on open to a store made before it (as the account tables are), so no
schema version changes. A row that does not decode is logged and left out: the list then
has no members here until a peer's directory sends them again (its owner keeps access).
"""

from __future__ import annotations

import json
import logging
import sqlite3

from crdts import AWORSet
from reference_cluster.storage.sqlite import encode

__all__ = ["MEMBERS_TABLE", "load_memberships", "store_membership"]

log = logging.getLogger(__name__)

MEMBERS_TABLE = """
CREATE TABLE IF NOT EXISTS list_members (
    list_id TEXT PRIMARY KEY,
    members TEXT NOT NULL
)
"""


def load_memberships(conn: sqlite3.Connection) -> dict[str, AWORSet]:
    """Every list's members; a row that does not decode is logged and left out."""
    out: dict[str, AWORSet] = {}
    for list_id, text in conn.execute("SELECT list_id, members FROM list_members"):
        try:
            out[str(list_id)] = AWORSet.from_dict(json.loads(str(text)))
        except (ValueError, TypeError, RecursionError) as exc:
            log.error("list_members: the row of %r does not decode, left out: %s", list_id, exc)
    return out


def store_membership(conn: sqlite3.Connection, list_id: str, state: AWORSet) -> None:
    """Write one list's members (inside the caller's transaction)."""
    conn.execute(
        "INSERT INTO list_members (list_id, members) VALUES (?, ?) "
        "ON CONFLICT (list_id) DO UPDATE SET members = excluded.members",
        (list_id, encode(state)),
    )
