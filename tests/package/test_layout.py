"""The package layout is its architecture: stages import only the stages below them, and no
two files import each other, however indirectly.

Reading the imports of every module (top-level and inside functions, since lazy imports are
still dependencies) keeps the documented layering true as code is added.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Lowest first. A module may import its own folder and any folder of a lower rank.
LAYERS = ["data", "lm", "corpus", "signatures", "programs", "teaching", "evaluation", "training", "cli"]
RANK = {name: rank for rank, name in enumerate(LAYERS)}
# programs/ and signatures/ sit at the repository's top level and install as instret.programs/.signatures
FOLDERS = {("" if name in ("programs", "signatures") else "instret/") + name: name for name in LAYERS}
MAX_LINES = 420


def _modules():
    for folder, layer in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):  # subfolders too: lm/local/, lm/servers/
            yield path, layer


def _dotted(path: Path, root: Path = ROOT) -> str:
    """instret/lm/local/engine.py → instret.lm.local.engine; programs/answering.py → instret.programs.answering."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[0] != "instret":
        parts.insert(0, "instret")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "instret" or len(parts) < 2:
        return None  # `instret` itself (lazy public names) and `instret._env` sit outside the layers
    return parts[1] if parts[1] in RANK else None


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            yield node.lineno, node.module, names
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, [alias.name]


def test_every_layer_folder_exists():
    assert all((ROOT / folder).is_dir() for folder in FOLDERS)


def test_no_module_imports_a_higher_stage():
    upward = []
    for path, layer in _modules():
        for line, module, names in _imports(path):
            # `from instret import cli` names a layer through its attribute, so check every name
            for target in {_layer_of(name) for name in names} - {None}:
                if target != layer and RANK[target] >= RANK[layer]:
                    upward.append(f"{path.relative_to(ROOT)}:{line} ({layer}) imports {module} ({target})")
    assert upward == []


def test_layer_check_catches_an_upward_import(tmp_path):
    module = tmp_path / "bad.py"
    module.write_text("def f():\n    from instret.evaluation.run import evaluate\n")
    assert [_layer_of(name) for _, _, names in _imports(module) for name in names] == ["evaluation", "evaluation"]


def test_top_level_has_no_stray_modules():
    loose = {path.name for path in (ROOT / "instret").glob("*.py")}
    assert loose == {"__init__.py", "_env.py"}


def test_no_module_is_much_over_400_lines():
    long = {str(path.relative_to(ROOT)): n for path, _ in _modules()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_public_names_point_at_modules_in_the_layers():
    import instret

    for name, module in instret._PUBLIC.items():
        assert _layer_of(module) or module.startswith(("instret.programs", "instret.signatures")), (name, module)
        assert getattr(instret, name) is not None


def import_graph(paths, root: Path = ROOT) -> dict[str, set[str]]:
    """Module → the modules of the package it imports. `from a import b` means a.b when b is a module.

    The package root (`instret`: lazy public names) and folders' `__init__` files without imports
    are left out: importing a submodule runs them, but they import nothing back.
    """
    names = {_dotted(path, root): path for path in paths}
    graph = {}
    for name, path in names.items():
        targets = set()
        for _, module, imported in _imports(path):
            for candidate in imported[1:] or imported:
                target = candidate if candidate in names else module
                if target in names and target not in ("instret", name):
                    targets.add(target)
        graph[name] = targets
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each group of modules that import one another (a strongly connected component of 2 or more)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):  # Tarjan's algorithm; the graph is a few hundred edges, recursion is fine
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circle_between_files():
    assert circles(import_graph([path for path, _ in _modules()])) == []


def test_circle_check_catches_a_lazy_circle(tmp_path):
    # the shape lm/ once had: context → ollama_models → local_lm → context, all through lazy imports
    package = tmp_path / "instret" / "lm"
    package.mkdir(parents=True)
    (package / "context.py").write_text("def f():\n    from instret.lm.ollama_models import show\n")
    (package / "ollama_models.py").write_text("def g():\n    from instret.lm import local_lm\n")
    (package / "local_lm.py").write_text("from instret.lm.context import f\n")
    (package / "spec.py").write_text("X = 1\n")
    graph = import_graph(sorted(package.glob("*.py")), root=tmp_path)
    assert graph["instret.lm.ollama_models"] == {"instret.lm.local_lm"}
    assert circles(graph) == [["instret.lm.context", "instret.lm.local_lm", "instret.lm.ollama_models"]]


# Test folders beside the package's stages: the package as a whole, the notebooks, the docs site.
TEST_FOLDERS = set(LAYERS) | {"package", "notebooks", "docs"}


def test_every_test_file_sits_in_a_stage_folder():
    tests = ROOT / "tests"
    misplaced = [path.relative_to(tests).as_posix() for path in sorted(tests.rglob("test_*.py"))
                 if path.relative_to(tests).parts[0] not in TEST_FOLDERS]
    assert not misplaced
    assert not list(tests.glob("test_*.py"))
