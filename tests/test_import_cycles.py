"""No import cycles among the project's modules (issue 20): every module-level import,
including those only for type checking, read from the source with `ast`. Imports inside
functions (deliberately lazy: heavy or optional dependencies) do not count."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ucadi", "services", "chaos", "bench")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, modules: set[str], name: str = "") -> set[str]:
    """Project modules that module `name` (by default: the one at `path`) imports at module
    level (`if TYPE_CHECKING:` blocks included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    name = name or _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    statements = list(tree.body)
    while statements:
        node = statements.pop()
        if isinstance(node, (ast.If, ast.Try)):
            statements.extend(node.body + node.orelse + getattr(node, "finalbody", []))
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for imported in names:
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                found.add(imported)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_through_others() -> None:
    files = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")
             if not p.name.endswith("_pb2.py") and not p.name.endswith("_pb2_grpc.py")]
    modules = {_module_name(p) for p in files}
    # A package's __init__ importing its own submodules is how packages re-export: not a cycle
    # unless a submodule imports the package back.
    graph = {}
    for path in files:
        module = _module_name(path)
        graph[module] = {t for t in _imports(path, modules) if not t.startswith(module + ".")}
    assert _cycles(graph) == []


def test_the_check_finds_a_cycle_through_a_type_checking_import(tmp_path: Path) -> None:
    """What the first wave had: scheme imported prepared for type checking only."""
    scheme = tmp_path / "scheme.py"
    scheme.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                      "    from ucadi.lwe.prepared import DecryptionProduct\n")
    assert _imports(scheme, {"ucadi.lwe.prepared", "ucadi.lwe.scheme"},
                    "ucadi.lwe.scheme") == {"ucadi.lwe.prepared"}
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
