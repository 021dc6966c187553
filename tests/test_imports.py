"""No import cycles: the module-level import graph of forgeline is acyclic, and every module
imports in fresh interpreters in several orders."""

import ast
import random
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _name(path: Path) -> str:
    return ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")


FILES = {_name(p): p for p in (SRC / "forgeline").rglob("*.py")}
MODULES = sorted(FILES)


def _module_level_imports(name: str) -> set[str]:
    """forgeline modules that ``name`` imports at module level (function bodies and
    ``if TYPE_CHECKING:`` blocks excluded)."""
    tree = ast.parse(FILES[name].read_text())
    package = name if FILES[name].name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
                continue
            if isinstance(node, ast.If | ast.Try | ast.With):
                for block in ("body", "orelse", "finalbody", "handlers"):
                    for child in getattr(node, block, []):
                        visit(child.body if isinstance(child, ast.ExceptHandler) else [child])
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, *([base] if base else [])])
                for alias in node.names:  # `from pkg import submodule` needs the submodule
                    found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in FILES else base)

    visit(tree.body)
    targets = set()
    for target in found:
        while target and target not in FILES:
            target = target.rpartition(".")[0]
        if target and target != name:
            targets.add(target)
    return targets - {name}


def test_the_module_import_graph_has_no_cycle():
    graph = {name: _module_level_imports(name) for name in MODULES}
    state: dict[str, str] = {}
    cycles = []

    def walk(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                walk(dep, [*stack, dep])
        state[node] = "done"

    for name in MODULES:
        if name not in state:
            walk(name, [name])
    assert cycles == []


def test_every_module_imports_in_shuffled_and_reversed_orders():
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    orders = [MODULES[::-1]]
    for seed in range(2):
        order = MODULES[:]
        random.Random(seed).shuffle(order)
        orders.append(order)
    running = [subprocess.Popen([sys.executable, "-c", code, *order], text=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
               for order in orders]  # side by side: most of each is waiting on the disk
    for proc in running:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
