"""No import cycles inside annbin, counting function-local imports (STYLE.md).

Every ``import annbin.x`` / ``from annbin.x import y`` anywhere in a module (top level or inside a
function) is an edge; ``from annbin.pkg import name`` imports ``annbin.pkg`` (its ``__init__``), or the submodule
``annbin.pkg.name`` when there is one; importing ``annbin.a.b`` also runs
``annbin.a``'s ``__init__``. ``importlib.import_module("annbin.x")`` by a name string is not an
edge: that is how the registry loads variants without importing them (they import the registry).
"""

from __future__ import annotations

import ast
from pathlib import Path

import annbin

ROOT = Path(annbin.__file__).parent


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[ast.Import | ast.ImportFrom]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module name -> the annbin modules it imports anywhere in its body."""
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    packages = {module_name(p, root) for p in root.rglob("__init__.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        package = name if name in packages else name.rpartition(".")[0]
        for node in _imports(path):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                # "from pkg import sub" imports the submodule; "from pkg import name", pkg itself
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            for target in targets:
                while target and target not in files:  # "annbin.x.name" where name is not a module
                    target = target.rpartition(".")[0]
                if not target.startswith("annbin"):
                    continue
                if target != name:
                    graph[name].add(target)
                # importing a.b.c runs the __init__ of a and a.b first (for a module inside a.b
                # they have run before it: not an edge of its own)
                parts = target.split(".")
                for i in range(1, len(parts)):
                    dep = ".".join(parts[:i])
                    if dep in files and dep != name and not name.startswith(dep + "."):
                        graph[name].add(dep)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path ``[a, b, ..., a]``, or None (iterative DFS, three colours)."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(graph, WHITE)
    for start in sorted(graph):
        if colour[start] != WHITE:
            continue
        stack = [(start, iter(sorted(graph[start])))]
        colour[start] = GREY
        while stack:
            node, children = stack[-1]
            for child in children:
                if colour.get(child, BLACK) == GREY:
                    path = [n for n, _ in stack]
                    return path[path.index(child):] + [child]
                if colour.get(child) == WHITE:
                    colour[child] = GREY
                    stack.append((child, iter(sorted(graph[child]))))
                    break
            else:
                colour[node] = BLACK
                stack.pop()
    return None


def test_find_cycle_on_toy_graphs():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": {"b"}}) == ["b", "c", "b"]
    assert find_cycle({"a": {"a"}}) == ["a", "a"]


def test_graph_sees_function_local_and_package_imports(tmp_path):
    pkg = tmp_path / "annbin"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from annbin.sub.b import thing\n")
    (pkg / "a.py").write_text("def f():\n    from annbin.sub import b\n")
    (pkg / "sub" / "b.py").write_text("import importlib\nimportlib.import_module('annbin.a')\nthing = 1\n")
    graph = import_graph(pkg)
    assert graph["annbin.a"] == {"annbin.sub", "annbin.sub.b"}  # function-local import counts
    assert graph["annbin.sub"] == {"annbin.sub.b"}
    assert graph["annbin.sub.b"] == set()  # importlib by name is not an edge
    assert find_cycle(graph) is None
    (pkg / "sub" / "b.py").write_text("def g():\n    import annbin.a\n")
    assert find_cycle(import_graph(pkg)) is not None


def test_no_import_cycle_in_annbin():
    graph = import_graph()
    assert graph.get("annbin.index.registry")
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_registry_imports_no_variant_by_name():
    from annbin.index import registry

    lazy = {*registry.BUILTIN_MODULES, *registry.PREFIX_MODULES.values(), *registry.WRAPPER_MODULES.values()}
    assert lazy <= set(import_graph())  # the names it loads are real modules
    assert not import_graph()["annbin.index.registry"] & lazy


def test_no_private_names_imported_across_modules():
    """STYLE.md: siblings do not import each other's private names (a shared helper moves down)."""
    files = {module_name(p) for p in ROOT.rglob("*.py")}
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        for node in _imports(path):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("annbin"):
                found += [f"{module_name(path)}: {node.module}.{a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__") and f"{node.module}.{a.name}" not in files]
    assert not found, found


LIBRARY_PARTS = ("annbin.index", "annbin.embed", "annbin.distributed")


def test_the_library_never_imports_the_harness():
    """Data flows down: no module outside annbin/bench/ imports anything inside it."""
    graph = import_graph()
    library = {name for name in graph if not name.startswith("annbin.bench")}
    assert {"annbin", "annbin._load", *LIBRARY_PARTS} <= library
    found = [f"{name} -> {dep}" for name in sorted(library) for dep in sorted(graph[name]) if dep.startswith("annbin.bench")]
    assert not found, found
    # the registry loads the built-in variants by module name: none of those names is in the harness
    from annbin.index import registry

    assert not [m for m in registry.BUILTIN_MODULES if m.startswith("annbin.bench")]


def test_import_annbin_loads_neither_the_harness_nor_hnswlib():
    import subprocess
    import sys

    code = ("import sys, annbin; print(sorted(m for m in sys.modules if m.startswith('annbin.bench') "
            "or m in ('hnswlib', 'annbin.embed.tune', 'click', 'tqdm')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    code = "import sys, annbin; annbin.tune; print('annbin.embed.tune' in sys.modules)"  # loaded on first use
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "True"


def test_no_module_over_400_lines():
    """A module that grows past ~400 lines is two modules (STYLE.md)."""
    long = {module_name(p): n for p in ROOT.rglob("*.py") if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400}
    assert not long, long
