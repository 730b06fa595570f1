"""The hints in a server's store (Rule 12 of ``cores.server``: hinted handoff).

One row per (list, holder): the join of the deltas this server keeps for a holder of a
list that did not confirm them, as canonical text with its digest. A hint is written in
the same transaction as the lists of a group commit and deleted only when its holder
confirmed a state with the same digest, so a hint that grew since stays. The table is
added on open to a store made before it (as the members table is), so no schema version
changes. A row that does not decode, or does not match its digest, is logged and left
out (the edit it carried is also on the coordinator, which anti-entropy repairs from).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from reference_cluster.storage.sqlite import S, digest_of, encode, join_all

__all__ = ["HINTS_TABLE", "drop_hint", "load_hints", "store_hints"]

log = logging.getLogger(__name__)

HINTS_TABLE = """
CREATE TABLE IF NOT EXISTS hints (
    list_id TEXT NOT NULL,
    holder  TEXT NOT NULL,
    state   TEXT NOT NULL,
    digest  TEXT NOT NULL,
    PRIMARY KEY (list_id, holder)
)
"""


def load_hints(
    conn: sqlite3.Connection, decode: Callable[[Mapping[str, Any]], S]
) -> dict[tuple[str, str], S]:
    """Every hint; a row that does not decode or match its digest is left out."""
    out: dict[tuple[str, str], S] = {}
    rows = conn.execute("SELECT list_id, holder, state, digest FROM hints ORDER BY 1, 2")
    for list_id, holder, text, digest in rows:
        try:
            if digest_of(str(text)) != digest:
                raise ValueError("the state does not match its digest")
            out[(str(list_id), str(holder))] = decode(json.loads(str(text)))
        except (ValueError, TypeError, RecursionError) as exc:
            log.error("hints: the row of %r for %r is left out: %s", list_id, holder, exc)
    return out


def store_hints(
    conn: sqlite3.Connection,
    items: Iterable[tuple[str, str, S]],
    decode: Callable[[Mapping[str, Any]], S],
) -> None:
    """Join each ``(list id, holder, delta)`` into its hint (inside the caller's
    transaction); a stored hint that does not decode is replaced."""
    grouped: dict[tuple[str, str], list[S]] = {}
    for list_id, holder, delta in items:
        grouped.setdefault((list_id, holder), []).append(delta)
    for (list_id, holder), deltas in grouped.items():
        row = conn.execute(
            "SELECT state FROM hints WHERE list_id = ? AND holder = ?", (list_id, holder)
        ).fetchone()
        if row is not None:
            try:
                deltas.insert(0, decode(json.loads(str(row[0]))))
            except (ValueError, TypeError, RecursionError) as exc:
                log.error("hints: the row of %r for %r is replaced: %s", list_id, holder, exc)
        text = encode(join_all(deltas))
        conn.execute(
            "INSERT INTO hints (list_id, holder, state, digest) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (list_id, holder) DO UPDATE "
            "SET state = excluded.state, digest = excluded.digest",
            (list_id, holder, text, digest_of(text)),
        )


def drop_hint(conn: sqlite3.Connection, list_id: str, holder: str, digest: str) -> bool:
    """Delete the hint if its digest is ``digest``; whether it was deleted."""
    cur = conn.execute(
        "DELETE FROM hints WHERE list_id = ? AND holder = ? AND digest = ?",
        (list_id, holder, digest),
    )
    return cur.rowcount > 0
