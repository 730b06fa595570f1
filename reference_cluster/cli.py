"""The ``shoplist`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from crdts import AWORSet, PNCounter


def library_demo() -> int:
    """Two replicas diverge while disconnected, then converge by exchanging deltas."""
    alice, bob = AWORSet(), AWORSet()
    to_bob = [alice.add("alice", "milk"), alice.add("alice", "eggs")]
    for d in to_bob:
        bob.join(d)
    print(f"synced:     alice={sorted(alice.value)}  bob={sorted(bob.value)}")

    # Offline: alice removes milk while bob concurrently re-adds it and adds bread.
    a_deltas = [alice.remove("alice", "milk")]
    b_deltas = [bob.add("bob", "milk"), bob.add("bob", "bread")]
    print(f"diverged:   alice={sorted(alice.value)}  bob={sorted(bob.value)}")

    for d in b_deltas:
        alice.join(d)
    for d in a_deltas:
        bob.join(d)
    print(f"converged:  alice={sorted(alice.value)}  bob={sorted(bob.value)}")
    print(f"same state: {alice == bob}  digest={alice.digest()[:16]}")

    qty_a, qty_b = PNCounter(), PNCounter()
    da, db = qty_a.increment("alice", 2), qty_b.increment("bob", 3)
    qty_a.join(db)
    qty_b.join(da)
    print(f"counter:    alice={qty_a.value}  bob={qty_b.value} (no concurrent increment lost)")
    return 0 if alice == bob and qty_a == qty_b else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``shoplist``."""
    parser = argparse.ArgumentParser(prog="shoplist", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="show replicas diverging and converging")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return library_demo()
    parser.error(f"unknown command {args.command}")  # pragma: no cover
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
