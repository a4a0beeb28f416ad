"""The engine's house rules, read from its source with :mod:`ast` (nothing is imported):

- no module imports a private ``_name`` of another engine module (``from x import _y``,
  or ``x._y`` on an imported engine module);
- there are no import cycles among engine modules (every import counts, also those inside
  functions: a cycle is a cycle of who needs whom, whenever the import runs).

A failure names the module and line, or the modules of the cycle."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, Optional

ROOT = Path(__file__).resolve().parents[2]
ENGINE = ROOT / "engine"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ENGINE.rglob("*.py"))}


def _resolve(module: str, is_package: bool, level: int, name: Optional[str]) -> str:
    """The absolute module a ``from ... import`` names (``level`` leading dots)."""
    if level == 0:
        return name or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _engine_module(name: str, modules: dict[str, Path]) -> Optional[str]:
    """``name`` or its closest enclosing engine module (``engine.x.y`` -> ``engine.x``), else None."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str, path: Path, modules: dict[str, Path]) -> Iterator[tuple[int, str, Optional[str]]]:
    """(line, imported engine module, imported name or None) for each import in ``module``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _engine_module(alias.name, modules)
                if target:
                    yield node.lineno, target, None
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node.level, node.module)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in modules:  # `from engine.raster import pair`: the submodule itself
                    yield node.lineno, sub, None
                elif _engine_module(base, modules):
                    yield node.lineno, _engine_module(base, modules), alias.name


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _bound_modules(module: str, path: Path, tree: ast.AST, modules: dict[str, Path]) -> dict[str, str]:
    """Local names bound to another engine module (``from . import pair``, ``import engine.x as y``)."""
    bound: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = _resolve(module, path.name == "__init__.py", node.level, node.module)
            for alias in node.names:
                if f"{base}.{alias.name}" in modules:
                    bound[alias.asname or alias.name] = f"{base}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname and alias.name in modules:
                    bound[alias.asname] = alias.name
    bound = {k: v for k, v in bound.items() if v != module}
    return bound


def _dotted(node: ast.AST) -> Optional[str]:
    """``a.b.c`` of an attribute chain of names, else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return f"{head}.{node.attr}" if head else None
    return None


def test_no_module_imports_another_modules_private_names():
    modules = _modules()
    found = []
    for module, path in modules.items():
        for line, target, name in _imports(module, path, modules):
            if target != module and name is not None and _private(name):
                found.append(f"{path.relative_to(ROOT)}:{line}: from {target} import {name}")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        bound = _bound_modules(module, path, tree, modules)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and _private(node.attr)):
                continue
            owner = _dotted(node.value)
            if owner is None:
                continue
            head, _, rest = owner.partition(".")
            full = bound.get(head, head) + (f".{rest}" if rest else "")
            if full in modules and full != module:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {full}.{node.attr}")
    assert not found, "private names of other modules used:\n" + "\n".join(found)


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for _line, target, _name in _imports(module, path, modules):
            if target != module and not module.startswith(target + "."):  # a package's own __init__ is no edge back
                graph[module].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_among_engine_modules():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_checks_see_a_cycle_and_a_private_import(tmp_path):
    """The scanner itself: a planted cycle is found (guards against a check that passes on nothing)."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _resolve("engine.sheets.run", False, 2, "detect") == "engine.detect"
    assert _resolve("engine.sheets", True, 1, "job") == "engine.sheets.job"
    modules = _modules()
    assert "engine.detect" in modules and "engine.raster.tiles" in modules
