"""The structure stays visible: one-way dependencies between the runtime's packages, no
reaching into another package's private modules, no module over 600 lines, and no world's
knowledge inside the runtime (worlds are packs)."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ("memory", "adapters", "planners", "agent")
# agent/ is split into sub-packages that count as packages of their own here.
AGENT_PARTS = ("env", "runtime", "traces", "service", "errors")
MAX_LINES = 600


def modules() -> Iterator[tuple[str, Path]]:
    for package in RUNTIME:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(("trellis", *parts)).removesuffix(".__init__")
            yield name, path


def unit(module: str) -> str:
    """The package a module belongs to: a runtime package, or an agent sub-package."""
    parts = module.split(".")
    if parts[1] == "agent" and len(parts) > 2 and parts[2] in AGENT_PARTS:
        return f"agent.{parts[2]}"
    return parts[1]


def imports(path: Path) -> Iterator[str]:
    """Modules imported at run time (imports under ``if TYPE_CHECKING:`` are left out)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in ast.walk(node)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


KNOWN = dict(modules())


def test_packages_depend_one_way() -> None:
    graph = nx.DiGraph()
    for name, path in KNOWN.items():
        for target in imports(path):
            if target in KNOWN and unit(target) != unit(name):
                graph.add_edge(unit(name), unit(target))
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, f"packages import each other: {cycles}"


def test_modules_import_no_cycle() -> None:
    graph = nx.DiGraph()
    for name, path in KNOWN.items():
        graph.add_node(name)
        for target in imports(path):
            # "from package import name" depends on the package's __init__, not on name.
            if target in KNOWN and target != name and not name.startswith(f"{target}."):
                graph.add_edge(name, target)
    cycles = [c for c in nx.simple_cycles(graph) if len(c) > 1]
    assert not cycles, f"modules import each other: {cycles[:5]}"


def test_no_package_imports_another_packages_private_modules() -> None:
    reaching = sorted(
        f"{name} -> {target}"
        for name, path in KNOWN.items()
        for target in imports(path)
        if target in KNOWN
        and unit(target) != unit(name)
        and any(part.startswith("_") for part in target.split(".")[1:])
    )
    assert not reaching, "import the public namespace instead:\n" + "\n".join(reaching)


def test_no_module_is_over_the_line_limit() -> None:
    long = {
        name: lines
        for name, path in KNOWN.items()
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"split these modules (limit {MAX_LINES} lines): {long}"


def test_the_runtime_names_no_world() -> None:
    pattern = re.compile(r"twc|textworld", re.IGNORECASE)
    named = [
        f"{path.relative_to(ROOT)}:{number}"
        for package in RUNTIME
        for path in sorted((ROOT / package).rglob("*"))
        if path.is_file() and path.suffix in (".py", ".json", ".md", ".txt", ".mako")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert not named, f"world knowledge belongs in a pack: {named}"
