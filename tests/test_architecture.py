"""The shape of the code a newcomer relies on: no import circles, small files, short functions.

Read from the source with `ast`, so it costs nothing and imports nothing. The same check by hand:
`python -m pytest tests/test_architecture.py -q`.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("rag", "ui")
MAX_FILE_LINES = 400
LONG_FUNCTION = 60
MAX_FUNCTION = 90
MAX_LONG_FUNCTIONS = 2


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports at module level (imports inside functions are deferred
    on purpose and cannot form a circle at import time; TYPE_CHECKING blocks never run)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, (ast.If, ast.Try)):
                visit(node.body + node.orelse + getattr(node, "finalbody", []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                found.add(base)
                found.update(f"{base}.{a.name}" for a in node.names)

    visit(tree.body)
    return {m for m in found if m in known and m != name}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := walk(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := walk(node)):
            return found
    return None


def test_no_import_circle() -> None:
    modules = _modules()
    graph = {name: _imports(name, path, set(modules)) for name, path in modules.items()}
    # A package's __init__ importing its own submodules is how packages work, not a circle.
    for name in graph:
        graph[name] = {m for m in graph[name] if not name.startswith(m + ".")}
    assert _cycle(graph) is None, f"import circle: {' -> '.join(_cycle(graph) or [])}"


def test_the_circle_check_finds_a_circle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_product_file_is_over_the_limit() -> None:
    long = {str(p.relative_to(ROOT)): n for p in _modules().values()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_FILE_LINES}
    assert not long, f"files over {MAX_FILE_LINES} lines: {long}"


def test_functions_stay_short_and_the_long_ones_say_why() -> None:
    long: dict[str, int] = {}
    for path in _modules().values():
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > LONG_FUNCTION:
                    where = f"{path.relative_to(ROOT)}::{node.name}"
                    long[where] = size
                    body = lines[node.lineno - 1 : node.end_lineno]
                    assert any(line.strip().startswith("#") for line in body), f"{where} is long: say why"
    assert all(size <= MAX_FUNCTION for size in long.values()), long
    assert len(long) <= MAX_LONG_FUNCTIONS, long


def _private_library_imports(source: str, submodules: set[str]) -> list[str]:
    """The imports in `source` that reach past the `rag` package into its modules (anywhere in
    the file: inside functions and TYPE_CHECKING blocks too)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("rag.")]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            if (node.module or "").startswith("rag."):
                found.append(node.module)
            elif node.module == "rag":
                found += [f"rag.{a.name}" for a in node.names if a.name in submodules]
    return found


def test_the_ui_uses_only_the_librarys_public_api() -> None:
    submodules = {name.split(".")[1] for name in _modules() if name.startswith("rag.")}
    reached = {str(path.relative_to(ROOT)): found for name, path in _modules().items() if name.startswith("ui")
               if (found := _private_library_imports(path.read_text(encoding="utf-8"), submodules))}
    assert not reached, f"import from `rag` (add the name to rag/__init__.py's exports), not its modules: {reached}"


def test_the_public_api_check_finds_a_module_import() -> None:
    modules = {"pipeline", "generation"}
    assert _private_library_imports("from rag.pipeline import Rag", modules) == ["rag.pipeline"]
    assert _private_library_imports("def f():\n    import rag.generation.base", modules) == ["rag.generation.base"]
    assert _private_library_imports("from rag import generation, Rag", modules) == ["rag.generation"]
    assert _private_library_imports("from rag import Rag, ask\nimport rag", modules) == []
