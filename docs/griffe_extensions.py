"""Griffe extensions for the API reference (mkdocs.yml names both).

PackageDirs finds the subpackages that pyproject.toml maps from other folders: `programs/` and `signatures/` sit at the repository's top level but install as `instret.programs`
and `instret.signatures` (`[tool.setuptools.package-dir]`). Griffe reads source files and only
looks for subpackages inside `instret/`, so without this the API reference could not document
them. The mapping is read from pyproject.toml, so a new mapped folder needs no change here.

DoctestBlocks shows the docstrings' `>>>` examples as code: they stand outside any "Examples:"
section, so Markdown would read them as prose (and `[x for x in y]` as a link).
"""

from __future__ import annotations

from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10: pytest's own dependency
    import tomli as tomllib

import griffe

ROOT = Path(__file__).resolve().parent.parent


def package_dirs(root: Path = ROOT) -> dict[str, Path]:
    """Dotted package name -> its folder, for every package-dir entry with a dotted name."""
    with open(root / "pyproject.toml", "rb") as file:
        mapping = tomllib.load(file).get("tool", {}).get("setuptools", {}).get("package-dir", {})
    return {name: root / folder for name, folder in mapping.items() if "." in name}


class PackageDirs(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs) -> None:
        for dotted, folder in sorted(package_dirs().items()):
            parent_path, _, name = dotted.rpartition(".")
            if parent_path.split(".")[0] != pkg.name or not (folder / "__init__.py").exists():
                continue
            parent = pkg.modules_collection[parent_path]
            # Griffe has no public call that loads a folder as a named submodule; this is the
            # one its own loader uses for submodules (pinned in constraints.txt).
            module = loader._load_module(name, folder / "__init__.py", parent=parent)
            parent.set_member(name, module)
            loader.expand_exports(module)
            loader.expand_wildcards(module, external=False)


class DoctestBlocks(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)


def fence_doctests(text: str) -> str:
    """Wrap each run of lines from a `>>>` line to the next blank line in a pycon code fence."""
    out, inside, indent = [], False, ""
    for line in text.splitlines():
        if not inside and line.lstrip().startswith(">>>"):
            inside, indent = True, line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}```pycon")
        elif inside and not line.strip():
            inside = False
            out.append(f"{indent}```")
        out.append(line)
    if inside:
        out.append(f"{indent}```")
    return "\n".join(out)
