"""The README's library example is real code that runs as shown."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "properties" / "readme_example.py"
TYPED_EXAMPLE = ROOT / "properties" / "readme_typed_example.py"


def test_readme_shows_the_checked_example() -> None:
    """README.md's library example is, line for line, properties/readme_example.py."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "AWORSet()" in b]
    code = EXAMPLE.read_text(encoding="utf-8").split('"""\n\n', 1)[1]
    assert [code] == blocks


def test_readme_example_runs_and_converges() -> None:
    """Importing the example runs it; its replicas converge with the concurrent add kept."""
    example = importlib.import_module("readme_example")
    assert example.alice == example.bob
    assert "milk" in example.alice


def test_readme_shows_the_checked_typed_example() -> None:
    """README.md's example for typed code is, line for line,
    properties/readme_typed_example.py (test_ergonomics runs mypy on that file)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "@register" in b]
    code = TYPED_EXAMPLE.read_text(encoding="utf-8").split('"""\n\n', 1)[1]
    assert [code] == blocks


def test_readme_typed_example_runs() -> None:
    """Importing the typed example runs it: the typed edit, the untyped one and decode."""
    example = importlib.import_module("readme_typed_example")
    assert {"count": 2, "bought": True} == example.cart["milk"]


def test_readme_has_no_link_that_dies_on_the_package_index() -> None:
    """README.md is also the package's page on the index, where a link relative to the
    source tree leads nowhere: every link is absolute (or an anchor)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)]+)\)", readme)
    assert [] == [t for t in targets if not re.match(r"(https?://|#)", t)]
