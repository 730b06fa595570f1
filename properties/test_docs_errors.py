"""docs/errors.md lists every wire error code and every error class, so a user reading it
meets no code or exception it does not explain."""

from __future__ import annotations

import inspect
from pathlib import Path

from reference_cluster import errors
from reference_cluster.protocol.messages import ERROR_CODES

DOC = (Path(__file__).resolve().parent.parent / "docs" / "errors.md").read_text("utf-8")


def test_every_wire_error_code_is_documented() -> None:
    """Each code in ERROR_CODES has its row in the wire codes table."""
    missing = sorted(code for code in ERROR_CODES if f"| `{code}` |" not in DOC)
    assert [] == missing


def test_every_error_class_is_documented() -> None:
    """Each exception class of reference_cluster.errors has its row."""
    classes = [
        name
        for name, obj in vars(errors).items()
        if inspect.isclass(obj) and issubclass(obj, Exception) and obj.__module__ == errors.__name__
    ]
    assert [] == sorted(name for name in classes if f"| `{name}` |" not in DOC)
