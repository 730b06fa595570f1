"""Every notebook in ``notebooks/`` runs top to bottom and shows a plot or a table."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebooks extra is not installed")
nbclient = pytest.importorskip("nbclient", reason="the notebooks extra is not installed")

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
RICH_OUTPUTS = {"image/png", "text/html"}


def test_there_are_the_four_notebooks() -> None:
    """The notebooks directory holds the tour, the list, the partitions and the benchmarks."""
    expected = ["01-tour", "02-shopping-list", "03-partitions", "04-performance"]
    assert expected == [p.stem for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path: Path) -> None:
    """Notebooks are committed without outputs, so diffs stay readable."""
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [] == [c for c in code if c.get("outputs") or c.get("execution_count")]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_and_shows_a_plot_or_table(path: Path) -> None:
    """Executing the notebook raises nothing and displays at least one figure or table."""
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    client.execute()
    kinds = {
        kind
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        for kind in out.get("data", {})
    }
    assert kinds & RICH_OUTPUTS
