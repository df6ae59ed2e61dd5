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


# -- the vector-store protocol is all the rest of the code knows of a store ---------------------------
STORE_PROTOCOL = "rag.vectorstore"
STORE_USERS = ("rag.retrieval", "rag.index_handle")  # search and serve through the protocol only
STORE_WRITERS = ("rag.indexer", "rag.ingest_ray")  # build through it (and take the folder's build lock)
FOLDER_MODULES = {"rag.faiss_folder", "rag.faiss_index"}  # the FAISS store's own files


def _store_registry() -> dict[str, str]:
    """STORES from rag/vectorstore.py (name -> "module:class"), read from the source."""
    tree = ast.parse((ROOT / "rag" / "vectorstore.py").read_text(encoding="utf-8"))
    for node in tree.body:
        targets = [node.target] if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [])
        if any(isinstance(t, ast.Name) and t.id == "STORES" for t in targets):
            return ast.literal_eval(node.value)
    raise AssertionError("rag/vectorstore.py has no STORES registry")


def _store_name_comparisons(tree: ast.AST, names: set[str]) -> list[str]:
    """`x == "faiss"`, `settings.store != ...`, `... in ("faiss", "postgres")`: a store named as a string."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        named = any(isinstance(o, ast.Constant) and o.value in names for o in operands) or any(
            isinstance(c, ast.Constant) and c.value in names
            for o in operands if isinstance(o, (ast.Tuple, ast.List, ast.Set)) for c in o.elts
        )
        setting = any(isinstance(o, ast.Attribute) and o.attr == "store" and "settings" in ast.unparse(o.value)
                      for o in operands)
        if named or setting:
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def _store_knowledge(tree: ast.AST, concrete: set[str], classes: set[str]) -> list[str]:
    """Imports of a concrete store's modules (anywhere, deferred ones too), `hasattr`, and
    `isinstance` against a store class."""
    found = []
    for node in ast.walk(tree):
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        named = [m for m in modules if any(m == c or m.startswith(c + ".") for c in concrete)]
        if named:
            found.append(f"line {node.lineno}: imports {named[0]}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id == "hasattr":
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
            elif node.func.id == "isinstance" and len(node.args) == 2:
                kinds = {n.id if isinstance(n, ast.Name) else n.attr
                         for n in ast.walk(node.args[1]) if isinstance(n, (ast.Name, ast.Attribute))}
                if kinds & classes or any(k.endswith("Store") for k in kinds):
                    found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_only_the_store_registry_knows_the_stores_by_name_and_kind() -> None:
    registry = _store_registry()
    names = set(registry)
    concrete = {target.partition(":")[0] for target in registry.values()} | FOLDER_MODULES
    classes = {target.partition(":")[2] for target in registry.values()} | {"LoadedIndex"}
    modules = _modules()
    compared = {name: hits for name, path in modules.items()
                if name.startswith("rag") and name != STORE_PROTOCOL
                and (hits := _store_name_comparisons(ast.parse(path.read_text(encoding="utf-8")), names))}
    assert not compared, f"a store compared by its name outside {STORE_PROTOCOL}'s STORES: {compared}"
    for name in STORE_USERS:
        knows = _store_knowledge(ast.parse(modules[name].read_text(encoding="utf-8")), concrete, classes)
        assert not knows, f"{name} must use only the store protocol: {knows}"
    for name in STORE_WRITERS:
        asks = _store_knowledge(ast.parse(modules[name].read_text(encoding="utf-8")), set(), classes)
        assert not asks, f"{name} must call the store's methods, each of which has a default: {asks}"


def test_the_store_checks_find_what_they_look_for() -> None:
    compared = ast.parse('if settings.store == "faiss": pass\nok = kind != "postgres"\nx = store in ("faiss",)\n'
                         'fine = mode == "dense"')
    assert len(_store_name_comparisons(compared, {"faiss", "postgres"})) == 3
    knows = ast.parse("from rag import faiss_folder\nimport rag.postgres.store\n"
                      "def f(s):\n    from rag.faiss_store import FaissStore\n"
                      "    return hasattr(s, 'close') or isinstance(s, LoadedIndex) or isinstance(s, str)")
    found = _store_knowledge(knows, {"rag.faiss_folder", "rag.faiss_store", "rag.postgres"}, {"LoadedIndex"})
    assert len(found) == 5, found


# -- the pipeline is a chain of stages; backends are known by their abilities, not their names -------
GENERATOR_REGISTRY = "rag.generation"
# What rag/pipeline.py may import: the stages a question passes through (the index the retrieve
# stage reads included) and the records passed between them (settings and errors among them).
PIPELINE_STAGES = {"rag.conversation", "rag.retrieval", "rag.index_handle", "rag.selection", "rag.planning",
                   "rag.answerability", "rag.backends", "rag.generation", "rag.assembly", "rag.verification"}
PIPELINE_RECORDS = {"rag.types", "rag.streaming", "rag.config", "rag.errors", "rag.generation.base"}


def _registered_generators() -> set[str]:
    """The names rag/generation/__init__.py registers (`register("name", ...)`), from the source."""
    tree = ast.parse((ROOT / "rag" / "generation" / "__init__.py").read_text(encoding="utf-8"))
    return {node.args[0].value for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "register"
            and node.args and isinstance(node.args[0], ast.Constant)}


def _probes(tree: ast.AST) -> list[str]:
    """`hasattr(...)` and `getattr(...)` calls: abilities found by probing an object."""
    return [f"line {node.lineno}: {ast.unparse(node)}" for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("hasattr", "getattr")]


def test_only_the_generator_registry_knows_the_backends_by_name() -> None:
    names = _registered_generators()
    assert {"llamacpp", "openai", "extractive"} <= names
    compared = {name: hits for name, path in _modules().items()
                if name != GENERATOR_REGISTRY
                and (hits := _store_name_comparisons(ast.parse(path.read_text(encoding="utf-8")), names))}
    assert not compared, f"a backend compared by its name outside {GENERATOR_REGISTRY}: {compared}"


def test_the_pipeline_probes_nothing_and_imports_only_stages_and_records() -> None:
    name, path = "rag.pipeline", _modules()["rag.pipeline"]
    assert not _probes(ast.parse(path.read_text(encoding="utf-8"))), "abilities: rag.generation.abilities"
    imported = {m for m in _imports(name, path, set(_modules())) if m.count(".") <= 2}
    modules = {m for m in imported if m in _modules()}
    assert modules <= PIPELINE_STAGES | PIPELINE_RECORDS, modules - PIPELINE_STAGES - PIPELINE_RECORDS


def test_the_pipeline_checks_find_what_they_look_for() -> None:
    assert len(_store_name_comparisons(ast.parse('a = name == "llamacpp"\nb = g in ("openai",)'), {"llamacpp", "openai"})) == 2
    assert len(_probes(ast.parse("hasattr(gen, 'judge') or getattr(gen, 'label', None)"))) == 2
