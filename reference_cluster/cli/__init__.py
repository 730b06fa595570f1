"""Layer 7, the command line: ``shoplist`` (:mod:`.shoplist`), its ``cluster`` commands
(:mod:`.cluster`) and the demo (:mod:`.demo`). Imports the layers below only.

:func:`main` is the ``shoplist`` entry point: it says in one line which extra to install
when the cluster's dependency (pyzmq) is missing, instead of a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]

_EXTRAS = {"zmq": "cluster"}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``shoplist``; exit status 1 with one line if a dependency is missing."""
    try:
        from reference_cluster.cli.shoplist import main as shoplist
    except ModuleNotFoundError as exc:
        extra = _EXTRAS.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        print(
            f"shoplist: error: the command line needs {exc.name}, which is not installed: "
            f"pip install 'dotted-crdts[{extra}]'",
            file=sys.stderr,
        )
        return 1
    return shoplist(argv)
