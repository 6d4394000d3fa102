"""The package's layers import only downwards, and no module grows past its budget.

core ← protocols ← node and adapters ← testing (and the demo): a module may
import from its own layer and the layers below it. The node and the
adapters sit side by side and never import each other, so an adapter can
be written (and tested) without the node, and the node runs any adapter.
The core does no I/O: it imports neither anyio nor a socket or process
library. Imports only a type checker sees (``if TYPE_CHECKING:``) do not
count; ``standby/__init__.py`` may load upper layers lazily (its
``__getattr__``), never at import time.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "standby"

RANK = {"core": 0, "protocols": 1, "node": 2, "adapters": 2, "testing": 3}
#: Modules outside the core that are not named by their package or prefix.
NAMED = {
    "_protocols": "protocols",
    "protocols": "protocols",
    "node": "node",
    "_store": "adapters",  # JsonFileStore: the shipped SlotStore
    "_durable": "adapters",  # its fsynced file writes
    "_store_quarantine": "adapters",  # its refusal to start after losing data (FM 23)
    "_store_cli": "testing",  # python -m standby store accept-loss
    "_demo": "testing",
    "__main__": "testing",
}
NO_IO = ("anyio", "asyncio", "trio", "socket", "subprocess", "sniffio", "os", "tempfile", "pathlib")
#: The largest a module may grow (lines); split it by concern past that.
MAX_LINES = 600


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        yield ".".join(parts), path


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ("testing", "adapters"):
        return parts[1]
    if len(parts) == 1:
        return "protocols"  # the package root re-exports the core and the protocols
    name = parts[1]
    if name in NAMED:
        return NAMED[name]
    if name.startswith("_node"):
        return "node"
    return "core"


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


def test_every_module_stays_within_its_budget() -> None:
    sizes = {module: len(path.read_text().splitlines()) for module, path in ALL}
    over = {module: lines for module, lines in sizes.items() if lines > MAX_LINES}
    assert not over, f"modules over {MAX_LINES} lines (split them by concern): {over}"
