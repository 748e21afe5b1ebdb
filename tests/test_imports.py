"""The package's import graph: no module reaches itself through imports, whether they sit at the
top of a file or inside a function (a deferred import hides a circle; it does not remove it), and
no module imports from a floor above its own (:data:`FLOORS`)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "magicflow"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (``from X import name`` counts as X.name when
    that is a module, else X)."""
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], *filter(None, [base])])
                targets = [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            graph[name] |= {t for t in map(known, targets) if t and t != name and t.startswith("magicflow")}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_through_others():
    graph = import_graph()
    assert len(graph) > 50 and "magicflow.flow.model" in graph["magicflow.experiments.train"]
    assert circles(graph) == []


def test_no_private_name_crosses_a_folder():
    """What one folder uses from another is public (no leading underscore)."""
    crossings = []
    for path in PACKAGE.rglob("*.py"):
        folder = _module_name(path).rpartition(".")[0] if path.name != "__init__.py" else _module_name(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("magicflow."):
                source_folder = node.module.rpartition(".")[0]
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                if private and source_folder != folder and node.module != folder:
                    crossings.append(f"{path.relative_to(PACKAGE.parent)}: {node.module}.{', '.join(private)}")
    assert crossings == []


#: the package's floors, lowest first: configuration, I/O and the image view (how an experiment's
#: settings crop or resize a slice); data (datasets, registration, slices); models; experiments (training, inference, baselines, benchmarks); evaluation
#: and reports; the command line. The most specific prefix decides; ``EXACT`` names single modules
#: whose floor differs from their folder's.
FLOORS: dict[str, int] = {
    "magicflow.errors": 0,
    "magicflow.io": 0,
    "magicflow._torchvision": 0,
    "magicflow.config": 0,
    "magicflow.gpu_slots": 0,
    "magicflow.plotting": 0,
    "magicflow.view": 0,
    "magicflow.datasets": 1,
    "magicflow.demo": 1,
    "magicflow.preprocess": 1,
    "magicflow.slices": 1,
    "magicflow.flow": 2,
    "magicflow.experiments": 3,
    "magicflow.baselines": 3,
    "magicflow.evaluate": 4,
    "magicflow.report": 4,
    "magicflow.cli": 5,
    "magicflow.__main__": 5,
}
#: the package itself (its version) and the baselines' registry (names and sizes, no imports),
#: which the configuration is validated against
EXACT: dict[str, int] = {"magicflow": 0, "magicflow.baselines": 0}
#: upward imports not yet removed: none (the translation triptychs moved to its evaluate stage)
OPEN_UPWARD: set[tuple[str, str]] = set()


def floor(module: str) -> int:
    if module in EXACT:
        return EXACT[module]
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in FLOORS:
            return FLOORS[".".join(parts[:end])]
    raise KeyError(f"{module}: no floor in FLOORS; add its folder")


def upward_imports(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {(a, b) for a, targets in graph.items() for b in targets if floor(b) > floor(a)}


def test_no_module_imports_from_a_floor_above_its_own():
    graph = import_graph()
    assert {floor(module) for module in graph} == set(range(6))  # every module has a floor
    assert upward_imports(graph) == OPEN_UPWARD


def test_the_floor_check_finds_a_planted_upward_import():
    graph = {
        "magicflow.config": {"magicflow.flow.model"},
        "magicflow.flow.model": {"magicflow.errors"},
        "magicflow.errors": set(),
    }
    assert upward_imports(graph) == {("magicflow.config", "magicflow.flow.model")}


def test_the_circle_finder_finds_a_planted_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]
