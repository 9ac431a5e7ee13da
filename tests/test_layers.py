"""The layer rule of docs/ARCHITECTURE.md holds: every focuskit import goes to the module's own layer or one above.

The layer order is read from the table in docs/ARCHITECTURE.md, so the document and the check cannot drift apart;
imports are read with `ast` from every module, including imports inside functions (lazy imports are still
dependencies).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "focuskit"


def layer_order() -> dict[str, int]:
    """'models/encoders' -> its row number in the architecture table (0 = the bottom layer, `core`)."""
    order: dict[str, int] = {}
    rows = [line for line in (REPO / "docs" / "ARCHITECTURE.md").read_text().splitlines() if line.startswith("| `")]
    for rank, row in enumerate(rows):
        first_cell = row.split("|")[1]
        for name in re.findall(r"`([a-z_/]+)/`", first_cell):
            order[name] = rank
    for name in list(order):  # a folder of layers (models/) ranks with its lowest layer
        parent = name.rpartition("/")[0]
        if parent:
            order[parent] = min(order.get(parent, order[name]), order[name])
    return order


LAYERS = layer_order()


def layer_of(module: str) -> str | None:
    """The longest table entry that is a prefix of the module's path ('focuskit.models.vlms.x' -> 'models/vlms')."""
    parts = module.split(".")[1:]
    for n in range(len(parts), 0, -1):
        key = "/".join(parts[:n])
        if key in LAYERS:
            return key
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if name.startswith("focuskit.")]


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE)


def test_the_table_lists_the_layers() -> None:
    assert LAYERS["core"] == 0 and "memory" in LAYERS and "cli" in LAYERS and LAYERS["cli"] == LAYERS["server"]


def test_every_package_is_in_the_table() -> None:
    missing = sorted({module_name(p) for p in MODULES if layer_of(module_name(p)) is None})
    assert not missing, f"add these packages to the layer table in docs/ARCHITECTURE.md: {missing}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_only_from_its_layer_or_above(path: Path) -> None:
    mine = layer_of(module_name(path))
    if mine is None:
        pytest.skip("not in a layer (reported by test_every_package_is_in_the_table)")
    bad = []
    for line, name in imports(path):
        theirs = layer_of(name)
        if theirs is not None and LAYERS[theirs] > LAYERS[mine]:
            bad.append(f"line {line}: {name} ({theirs}/ is below {mine}/ in the table)")
    assert not bad, f"{path.relative_to(REPO)} breaks the layer rule: " + "; ".join(bad)
