"""The import graph points one way: each module imports only from its own layer or the layers below it
(docs/ARCHITECTURE.md's table, top to bottom). A new module must be given a layer here."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "resnets"

LAYERS: list[tuple[str, set[str]]] = [  # top to bottom; a name is a top-level module or folder of the package
    ("command line", {"cli", "__main__"}),
    ("jobs", {"predict", "features", "evaluate", "report", "explain", "explain_images", "serve", "ray", "train"}),
    ("model + input", {"pipeline"}),
    ("fast inference", {"inference"}),
    ("models with weights", {"factory", "keras_api"}),
    ("weights", {"weights"}),
    ("architectures", {"registry", "networks", "blocks", "layers"}),
    ("data", {"data"}),
    ("basics", {"preprocess", "classes", "device", "atomic", "locks", "cache", "summary", "choices", "quiet",
                "progress", "errors", "colour", "cpu", "calibration"}),
]
RANK = {name: i for i, (_, names) in enumerate(LAYERS) for name in names}


def _unit(module: str) -> str:
    """The layer unit of a dotted module path inside the package (``weights.loading`` -> ``weights``)."""
    return module.split(".")[0]


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module relative to the package) for every import of the package in ``path``."""
    parts = path.relative_to(SRC).with_suffix("").parts
    package = list(parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1] if node.level > 1 else package
                target = [*base, *(node.module.split(".") if node.module else [])]
                if not target:  # "from . import x, y" at the top: x and y are modules of the package
                    found += [(node.lineno, alias.name) for alias in node.names]
                else:
                    found.append((node.lineno, ".".join(target)))
            elif node.module and node.module.split(".")[0] == "resnets":
                found.append((node.lineno, node.module.partition(".")[2] or node.names[0].name))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name.partition(".")[2]) for a in node.names if a.name.startswith("resnets.")]
    return found


def test_every_module_has_a_layer():
    units = {_unit(".".join(p.relative_to(SRC).with_suffix("").parts)) for p in SRC.rglob("*.py")} - {"__init__"}
    assert not units - set(RANK), f"give these modules a layer in tests/test_layers.py: {sorted(units - set(RANK))}"


def test_no_import_points_up():
    upward = []
    for path in sorted(SRC.rglob("*.py")):
        unit = _unit(".".join(path.relative_to(SRC).with_suffix("").parts))
        if unit == "__init__":
            continue  # the package's lazy exports name every layer
        for line, target in _imports(path):
            if target and _unit(target) in RANK and RANK[_unit(target)] < RANK[unit]:
                upward.append(f"{path.relative_to(SRC)}:{line} ({LAYERS[RANK[unit]][0]}) imports {target} "
                              f"({LAYERS[RANK[_unit(target)]][0]})")
    assert not upward, "imports pointing up:\n" + "\n".join(upward)
