"""The package's layers are its packages, and they import only downwards.

A module's layer is the first component of its path: ``standby.core``,
``standby.protocols``, ``standby.aio``, ``standby.node``, ``standby.adapters``,
``standby.testing``, ``standby.cli``. The few public modules directly in
``standby/`` (``errors``, ``effects``, ``wire``) are faces of the core;
``metrics`` is a top layer beside testing and cli (it reads the node's status);
``__main__`` is the command line, and the package root re-exports the core
and the protocols (it may load upper layers lazily, through its
``__getattr__``, never at import time).

core <- protocols and aio <- node and adapters <- testing, cli and metrics (``aio``
holds the waits both the node and the adapters use; it may do I/O, the
protocols may not): a module may import
from its own layer and the layers below it. The node and the adapters sit
side by side and never import each other, so an adapter can be written (and
tested) without the node, and the node runs any adapter. The core does no
I/O: it imports neither anyio nor a socket or process library. Imports only a
type checker sees (``if TYPE_CHECKING:``) do not count. A module is one
concern, however long that takes: there is no line budget.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "standby"

RANK = {
    "core": 0,
    "protocols": 1,
    "aio": 1,
    "node": 2,
    "adapters": 2,
    "testing": 3,
    "cli": 3,
    "metrics": 3,
}
NO_IO = ("anyio", "asyncio", "trio", "socket", "subprocess", "sniffio", "os", "tempfile", "pathlib")


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        yield ".".join(parts), path


def layer(module: str) -> str:
    """The layer of ``module``: its package under ``standby``, or what a top module faces."""
    parts = module.split(".")
    if len(parts) == 1:
        return "protocols"  # the package root re-exports the core and the protocols
    if parts[1] in RANK:
        return parts[1]
    return "cli" if parts[1] == "__main__" else "core"


def imports(module: str, path: Path, *, top_level: bool) -> Iterator[tuple[int, str]]:
    """``(line, imported module)`` of every import that runs (not TYPE_CHECKING-only)."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def walk(nodes: list[ast.stmt], depth: int) -> Iterator[tuple[int, str]]:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                yield from walk(node.orelse, depth)
                continue
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield node.lineno, alias.name
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    target = ".".join([*base, node.module] if node.module else base)
                else:
                    target = node.module or ""
                yield node.lineno, target
                if node.module is None or target in ("standby", "standby.adapters"):
                    for alias in node.names:
                        yield node.lineno, f"{target}.{alias.name}"
            if top_level and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for field in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(node, field, None)
                if isinstance(inner, list) and inner and isinstance(inner[0], ast.AST):
                    yield from walk(inner, depth + 1)  # type: ignore[arg-type]

    yield from walk(tree.body, 0)


def known(target: str) -> str | None:
    """The standby module ``target`` names (a module, or a name in a package)."""
    if target != "standby" and not target.startswith("standby."):
        return None
    names = {name for name, _ in modules()}
    while target not in names:
        target = target.rpartition(".")[0]
    return target


ALL = list(modules())


@pytest.mark.parametrize(("module", "path"), ALL, ids=[m for m, _ in ALL])
def test_imports_point_downwards(module: str, path: Path) -> None:
    mine = layer(module)
    lazy_ok = module == "standby"  # the package root may load upper layers lazily
    wrong = []
    for line, target in imports(module, path, top_level=lazy_ok):
        found = known(target)
        if found is None or found == "standby":
            continue
        theirs = layer(found)
        if RANK[theirs] > RANK[mine] or {mine, theirs} == {"node", "adapters"}:
            wrong.append(f"line {line}: {mine} module imports {found} ({theirs})")
    assert not wrong, f"{module}: " + "; ".join(wrong)


@pytest.mark.parametrize(
    ("module", "path"),
    [(m, p) for m, p in ALL if layer(m) in ("core", "protocols")],
    ids=[m for m, _ in ALL if layer(m) in ("core", "protocols")],
)
def test_the_core_and_the_protocols_do_no_io(module: str, path: Path) -> None:
    lazy_ok = module == "standby"
    loaded = [
        f"line {line}: {target}"
        for line, target in imports(module, path, top_level=lazy_ok)
        if target.split(".")[0] in NO_IO
    ]
    assert not loaded, f"{module} imports I/O: {loaded}"


def test_every_module_lives_in_a_layer_package_or_is_a_public_face() -> None:
    top = sorted(m for m, _ in ALL if m.count(".") == 1)
    faces = {"standby.__main__", "standby.effects", "standby.errors", "standby.metrics"}
    faces |= {"standby.wire"}
    packages = {f"standby.{name}" for name in RANK} - {"standby.metrics"}
    assert set(top) <= faces | packages, set(top) - faces - packages
    assert len([m for m in top if m not in packages]) <= 12


def node_import_graph() -> dict[str, set[str]]:
    """Which ``standby.node._*`` module imports which, counting every import
    (a ``TYPE_CHECKING`` one too: it must not hold a circle together either)."""
    node_modules = {m: p for m, p in ALL if m.startswith("standby.node._")}
    graph: dict[str, set[str]] = {}
    for module, path in node_modules.items():
        found: set[str] = set()
        for statement in ast.walk(ast.parse(path.read_text())):
            if isinstance(statement, ast.ImportFrom):
                base = "standby.node" if statement.level == 1 else ""
                target = f"{base}.{statement.module}" if base else (statement.module or "")
                names = [target, *(f"{target}.{a.name}" for a in statement.names)]
            elif isinstance(statement, ast.Import):
                names = [a.name for a in statement.names]
            else:
                continue
            found.update(name for name in names if name in node_modules)
        graph[module] = found - {module}
    return graph


def test_the_node_parts_import_no_circle() -> None:
    """The node's modules form no import circle, and only ``_node`` knows the node.

    Each part is built from the few objects it uses (issue 21): none imports
    ``standby.node._node``, not even for a type checker.
    """
    graph = node_import_graph()
    assert "standby.node._standby" in graph
    assert "standby.node._node" in graph
    knows_node = sorted(m for m, targets in graph.items() if "standby.node._node" in targets)
    assert not knows_node, f"parts that import the node: {knows_node}"
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        if module in path:
            circle = " -> ".join([*path[path.index(module) :], module])
            raise AssertionError(f"import circle: {circle}")
        if module in done:
            return
        for target in sorted(graph[module]):
            visit(target, (*path, module))
        done.add(module)

    for module in sorted(graph):
        visit(module, ())
