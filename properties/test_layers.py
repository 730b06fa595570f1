"""The import rule of docs/architecture.md, checked on the source: every module imports only
from its own layer and the layers below it, and the layers without I/O import no I/O."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The layers of reference_cluster, bottom first: a module may import from its own layer
# and from any layer before it in this list, never from one after it.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("errors", ("reference_cluster", "reference_cluster.errors")),
    ("protocol", ("reference_cluster.protocol",)),
    ("document", ("reference_cluster.shopping_list",)),
    ("cores", ("reference_cluster.cores",)),
    ("storage", ("reference_cluster.storage",)),
    ("sim", ("reference_cluster.sim",)),
    ("processes", ("reference_cluster.processes",)),
    ("cli", ("reference_cluster.cli",)),
)

# Modules the pure layers may not import: sockets, clocks, threads, processes, databases.
IO_MODULES = frozenset(
    {"zmq", "sqlite3", "socket", "selectors", "subprocess", "threading", "time", "asyncio"}
)
PURE_LAYERS = frozenset({"errors", "protocol", "document", "cores", "sim"})
# Storage talks to SQLite, never to the network.
NETWORK_MODULES = frozenset({"zmq", "socket", "selectors"})


def module_name(path: Path, root: Path) -> str:
    """``reference_cluster/cores/server.py`` -> ``reference_cluster.cores.server``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str | None:
    """The layer a ``reference_cluster`` module belongs to (``None``: none of them)."""
    best: tuple[int, str] | None = None
    for name, prefixes in LAYERS:
        for prefix in prefixes:
            # the package itself is a leaf of the bottom layer, not the root of every layer
            subtree = prefix != "reference_cluster" and module.startswith(prefix + ".")
            matches = module == prefix or subtree
            if matches and (best is None or len(prefix) > best[0]):
                best = (len(prefix), name)
    return None if best is None else best[1]


def imports_of(module: str, source: str, modules: frozenset[str]) -> Iterator[str]:
    """Every module ``source`` imports, at the top or inside a function; ``from X import Y``
    counts as importing ``X.Y`` where that is a module of ``modules``."""
    package = module if _is_package(module, modules) else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                yield sub if sub in modules else target


def _entry_point(module: str, imported: str) -> bool:
    """A ``__main__`` (``python -m reference_cluster.sim``) may read the clock to report how
    long a sweep took; the simulation itself runs on virtual time."""
    return module.endswith(".__main__") and imported == "time"


def _is_package(module: str, modules: frozenset[str]) -> bool:
    return any(other.startswith(module + ".") for other in modules)


def violations(sources: Mapping[str, str]) -> list[str]:
    """What breaks the rule in ``sources`` (module name -> source), one line each."""
    order = {name: rank for rank, (name, _) in enumerate(LAYERS)}
    modules = frozenset(sources)
    found = []
    for module, source in sorted(sources.items()):
        if module.split(".")[0] == "crdts":
            found += _crdts_violations(module, source, modules)
            continue
        layer = layer_of(module)
        if layer is None:
            found.append(f"{module}: in no layer (add it to a layer folder)")
            continue
        for imported in imports_of(module, source, modules):
            top = imported.split(".")[0]
            if top == "reference_cluster":
                other = layer_of(imported)
                if other is not None and order[other] > order[layer]:
                    found.append(f"{module} ({layer}) imports {imported} ({other}), a layer above")
            elif layer in PURE_LAYERS and top in IO_MODULES and not _entry_point(module, top):
                found.append(f"{module} ({layer}) imports {imported}: I/O in a pure layer")
            elif layer == "storage" and top in NETWORK_MODULES:
                found.append(f"{module} (storage) imports {imported}: storage does no networking")
    return found


def _crdts_violations(module: str, source: str, modules: frozenset[str]) -> list[str]:
    """crdts is pure and light: the standard library and attrs (hypothesis in testing)."""
    found = []
    allowed = {"crdts", "attrs", *sys.stdlib_module_names}
    if module == "crdts.testing":
        allowed.add("hypothesis")
    for imported in imports_of(module, source, modules):
        top = imported.split(".")[0]
        if top not in allowed:
            found.append(f"{module} imports {imported}: crdts needs only attrs")
        elif top in IO_MODULES:
            found.append(f"{module} imports {imported}: crdts does no I/O")
    return found


def tree_sources() -> dict[str, str]:
    """Every module of crdts and reference_cluster, by name."""
    return {
        module_name(path, ROOT): path.read_text(encoding="utf-8")
        for package in ("crdts", "reference_cluster")
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def test_the_tree_keeps_the_import_rule() -> None:
    """No module of crdts or reference_cluster imports upwards or does I/O in a pure layer."""
    assert [] == violations(tree_sources())


def test_every_layer_folder_is_a_package() -> None:
    """Each layer folder has an __init__.py, so that an install ships it."""
    folders = [f for f in (ROOT / "reference_cluster").iterdir() if f.is_dir()]
    missing = [
        str(folder.relative_to(ROOT))
        for folder in folders
        if folder.name != "__pycache__" and not (folder / "__init__.py").exists()
    ]
    assert [] == missing


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        (
            "reference_cluster.cores.server",
            "from reference_cluster.storage.server_store import ServerStore\n",
            "reference_cluster.cores.server (cores) imports "
            "reference_cluster.storage.server_store (storage), a layer above",
        ),
        (
            "reference_cluster.protocol.messages",
            "def f():\n    from reference_cluster.cli import shoplist\n",
            "reference_cluster.protocol.messages (protocol) imports "
            "reference_cluster.cli.shoplist (cli), a layer above",
        ),
        (
            "reference_cluster.cores.client",
            "import time\n",
            "reference_cluster.cores.client (cores) imports time: I/O in a pure layer",
        ),
        (
            "reference_cluster.storage.sqlite",
            "import zmq\n",
            "reference_cluster.storage.sqlite (storage) imports zmq: storage does no networking",
        ),
        (
            "reference_cluster.sim.runner",
            "from ..processes import cluster\n",
            "reference_cluster.sim.runner (sim) imports "
            "reference_cluster.processes.cluster (processes), a layer above",
        ),
        (
            "reference_cluster.helpers",
            "",
            "reference_cluster.helpers: in no layer (add it to a layer folder)",
        ),
        ("crdts._kernel", "import numpy\n", "crdts._kernel imports numpy: crdts needs only attrs"),
        (
            "crdts._kernel",
            "from reference_cluster import errors\n",
            "crdts._kernel imports reference_cluster.errors: crdts needs only attrs",
        ),
    ],
)
def test_a_broken_rule_is_reported(module: str, source: str, expected: str) -> None:
    """The checker names an upward import, I/O in a pure layer and a module in no layer."""
    sources = {
        **tree_sources(),
        module: source,
        "reference_cluster.helpers": "",
        "reference_cluster.cli.shoplist": "",
        "reference_cluster.processes.cluster": "",
    }
    assert expected in violations(sources)


def test_downward_and_sideways_imports_are_allowed() -> None:
    """A module may import its own layer and every layer below it."""
    sources = {
        **tree_sources(),
        "reference_cluster.processes.server": (
            "from reference_cluster.processes.config import env\n"
            "from reference_cluster.storage.server_store import ServerStore\n"
            "from reference_cluster.cores.server import ServerCore\n"
            "from reference_cluster.shopping_list import ShoppingList\n"
            "from reference_cluster.protocol import messages\n"
            "from reference_cluster.errors import ClusterError\n"
            "import zmq, sqlite3, time\n"
        ),
    }
    assert [] == [v for v in violations(sources) if v.startswith("reference_cluster.processes")]
