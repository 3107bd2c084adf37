"""Pages made at build time by mkdocs-gen-files, so nothing here is a copy kept in git.

- `results/`: benchmarks/README.md, benchmarks/results/*.md and every chart under
  benchmarks/results/, copied as they are (mkdocs serves only files inside docs/);
- `tutorials/`: the notebooks, rendered by mkdocs-jupyter without running them;
- `reference/api/`: one page per module, found by walking the package as griffe (the reader
  mkdocstrings uses) sees it, so a module that moves or appears needs no edit here.
"""

from __future__ import annotations

import ast
import logging
import sys
from pathlib import Path

import griffe
import mkdocs_gen_files
from mkdocs.structure.files import InclusionLevel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from griffe_extensions import ROOT, PackageDirs  # noqa: E402

PACKAGE = "instret"
log = logging.getLogger("mkdocs.plugins.gen_pages")  # a warning here fails `mkdocs build --strict`


def copy(source: Path, target: str) -> None:
    with mkdocs_gen_files.open(target, "wb") as file:
        file.write(source.read_bytes())
    if source.suffix in (".md", ".ipynb"):  # only pages have an edit link
        mkdocs_gen_files.set_edit_path(target, source.relative_to(ROOT).as_posix())


def write_nav(folder: str, nav: mkdocs_gen_files.Nav) -> None:
    """The folder's SUMMARY.md, which literate-nav reads as the nav of that section; not a page."""
    name = f"{folder}/SUMMARY.md"
    with mkdocs_gen_files.open(name, "w") as file:
        file.writelines(nav.build_literate_nav())
    # literate-nav still reads an excluded file; mkdocs then does not also build it as a page.
    mkdocs_gen_files.FilesEditor.current().files.get_file_from_path(name).inclusion = InclusionLevel.EXCLUDED


def results() -> None:
    nav = mkdocs_gen_files.Nav()
    copy(ROOT / "benchmarks" / "README.md", "results/benchmarks.md")
    nav["The benchmarks"] = "benchmarks.md"
    folder = ROOT / "benchmarks" / "results"
    for page in sorted(folder.glob("*.md")):
        copy(page, f"results/{page.name}")
        title = page.read_text(encoding="utf-8").splitlines()[0].lstrip("# ").strip() or page.stem
        nav[title] = page.name
    for chart in sorted(folder.rglob("*.png")):
        copy(chart, f"results/{chart.relative_to(folder).as_posix()}")
    write_nav("results", nav)


def tutorials() -> None:
    nav = mkdocs_gen_files.Nav()
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        copy(notebook, f"tutorials/{notebook.name}")
        nav[notebook.stem] = notebook.name
    write_nav("tutorials", nav)


def load_package() -> griffe.Module:
    loader = griffe.GriffeLoader(extensions=griffe.load_extensions(PackageDirs()), search_paths=[str(ROOT)])
    package = loader.load(PACKAGE)
    loader.resolve_aliases()
    return package


def public_modules(module: griffe.Module):
    """The module and its submodules, depth first, leaving out private ones (`_env`, `_numba`)."""
    yield module
    for name, sub in sorted(module.modules.items()):
        if not name.startswith("_"):
            yield from public_modules(sub)


def page_of(module: griffe.Module) -> str:
    parts = module.path.split(".")
    return "/".join(parts) + ("/index.md" if module.is_package else ".md")


def reexports(module: griffe.Module) -> dict[str, str]:
    """Public names a module imports from elsewhere and exports: name -> where it is defined."""
    exported = {name for name in module.exports or ()} if module.exports else set()
    found = {}
    for name, member in module.members.items():
        if member.is_alias and name in exported and not member.is_module:
            try:
                found[name] = member.final_target.path
            except griffe.AliasResolutionError:
                log.warning("%s.%s: cannot find what it is imported from", module.path, name)
    return found


def public_names(package: griffe.Module) -> dict[str, str]:
    """`instret.__init__`'s lazy `_PUBLIC` table: name -> the module it is imported from."""
    return ast.literal_eval(str(package["_PUBLIC"].value))


def api_page(module: griffe.Module, lines: list[str]) -> None:
    again = reexports(module)
    if again:  # document them where they are defined; here, list them with a link there
        own = [name for name, member in module.members.items() if not member.is_alias and not name.startswith("_")]
        lines += [f"::: {module.path}", "    options:", f"      members: {sorted(own) or 'false'}", ""]
        lines += ["Also importable from here:", ""]
        lines += [f"- [`{name}`][{target}] (`{target}`)" for name, target in sorted(again.items())]
    else:
        lines.append(f"::: {module.path}")


def top_page(package: griffe.Module) -> list[str]:
    lines = [f"::: {package.path}", "    options:", "      members: false", "",
             "## Everything importable from `instret`", "",
             "`import instret` loads none of these until first used; each name links to its definition.", "",
             "| name | defined in |", "|---|---|"]
    for name, module_path in sorted(public_names(package).items(), key=lambda item: item[0].lower()):
        try:
            target = package.modules_collection[f"{module_path}.{name}"]
            path = target.final_target.path if target.is_alias else target.path
        except (KeyError, griffe.AliasResolutionError):
            log.warning("instret._PUBLIC names %s in %s, which does not define it", name, module_path)
            continue
        lines.append(f"| [`{name}`][{path}] | `{path.rpartition('.')[0]}` |")
    return lines


def api() -> None:
    package = load_package()
    nav = mkdocs_gen_files.Nav()
    for module in public_modules(package):
        page = page_of(module)
        nav[tuple(module.path.split("."))] = page
        lines = top_page(package) if module is package else []
        if module is not package:
            api_page(module, lines)
        with mkdocs_gen_files.open(f"reference/api/{page}", "w") as file:
            file.write("\n".join(lines) + "\n")
        if module.filepath:
            mkdocs_gen_files.set_edit_path(f"reference/api/{page}", Path(module.filepath).relative_to(ROOT).as_posix())
    write_nav("reference/api", nav)


results()
tutorials()
api()
