"""The README's library example runs as shown."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    """Every ```python block of the README."""
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_library_example_runs() -> None:
    """The ten-line library example executes and its assertions hold."""
    examples = [b for b in python_blocks() if "from crdts import AWORSet" in b]
    assert 1 == len(examples)
    namespace: dict[str, object] = {}
    exec(compile(examples[0], str(README), "exec"), namespace)  # our own README, not input
    assert {"alice", "bob"} <= set(namespace)
