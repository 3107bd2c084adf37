"""The package layout is its architecture: stages import only the stages below them.

Reading the imports of every module (top-level and inside functions, since lazy imports are
still dependencies) keeps the README's layering true as code is added.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Lowest first. A module may import its own folder and any folder of a lower rank.
LAYERS = ["data", "lm", "corpus", "signatures", "programs", "teaching", "evaluation", "training", "cli"]
RANK = {name: rank for rank, name in enumerate(LAYERS)}
# programs/ and signatures/ sit at the repository's top level and install as instret.programs/.signatures
FOLDERS = {("" if name in ("programs", "signatures") else "instret/") + name: name for name in LAYERS}
MAX_LINES = 420


def _modules():
    for folder, layer in FOLDERS.items():
        for path in sorted((ROOT / folder).glob("*.py")):
            yield path, layer


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
