"""The documentation site builds under --strict, reaches every page from its navigation, and its
generated references cover the whole CLI and package; the README stays a short front door."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO

DOCS = REPO / "docs"
README = REPO / "README.md"
README_LIMIT = 10 * 1024
sys.path.insert(0, str(DOCS))  # the generator scripts live beside the pages

pytest.importorskip("mkdocs", reason="the docs extra (pip install -e '.[docs]'; '.[dev]' includes it)")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """One strict build for the whole module: any broken link, missing anchor or page out of nav fails it."""
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return out


def _nav_pages(nav) -> list[str]:
    """Every page or generated folder the mkdocs.yml nav names, depth first."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in _nav_pages(value)]
    return [page for item in nav for page in _nav_pages(item)]


def _config() -> dict:
    import yaml

    return yaml.safe_load((REPO / "mkdocs.yml").read_text())


def _built(site: Path, page: str) -> Path:
    """Where mkdocs writes a page (use_directory_urls): quickstart.md -> quickstart/index.html."""
    stem = page[: -len(".md")]
    return site / ("index.html" if stem == "index" else f"{stem.removesuffix('/index')}/index.html")


def test_every_page_in_docs_is_in_the_nav_and_built(site):
    named = _nav_pages(_config()["nav"])
    written = sorted(path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md"))
    assert set(written) <= set(named), "pages under docs/ that the nav does not reach"
    for page in named:
        if page.endswith("/"):  # a generated section: its pages come from SUMMARY.md
            assert list((site / page).rglob("index.html")), page
        else:
            assert _built(site, page).exists(), page


def test_every_nav_page_has_content():
    for page in _nav_pages(_config()["nav"]):
        if page.endswith(".md") and (DOCS / page).exists():
            body = [line for line in (DOCS / page).read_text().splitlines() if line.strip() and not line.startswith("#")]
            assert len(body) >= 5, f"docs/{page} is a stub"


def test_generated_sections_are_built(site):
    for notebook in sorted((REPO / "notebooks").glob("*.ipynb")):
        assert (site / "tutorials" / notebook.stem / "index.html").exists(), notebook.name
    for chart in sorted((REPO / "benchmarks" / "results").rglob("*.png")):
        assert (site / "results" / chart.relative_to(REPO / "benchmarks" / "results")).exists(), chart
    assert (site / "reference" / "api" / "instret" / "index.html").exists()


def test_cli_reference_has_every_subcommand(site):
    from gen_cli import commands

    from instret.cli.main import _parser

    page = (site / "reference" / "cli" / "index.html").read_text()
    paths = [" ".join(("instret",) + path) for path, _ in commands(_parser())]
    assert len(paths) > 10
    for title in paths:
        assert f"<code>{title}</code>" in page, title
    # generated, not copied: a flag the parser has is on the page
    assert "--max-interventions" in page


def test_api_reference_has_a_page_per_public_module(site):
    api = site / "reference" / "api" / "instret"
    for folder in ("instret", "programs", "signatures"):
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
            if any(part.startswith("_") and part != "__init__" for part in parts):
                continue  # private modules (`_env`) are left out on purpose
            if folder != "instret":
                parts.insert(0, folder)
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            page = api.joinpath(*parts, "index.html")
            assert page.exists(), f"no API page for {path.relative_to(REPO)}"


def test_readme_is_short_and_its_commands_match_the_quickstart():
    text = README.read_text()
    assert len(text.encode()) <= README_LIMIT, f"README.md is {len(text.encode())} bytes"
    quickstart = (DOCS / "quickstart.md").read_text()
    commands = re.findall(r"^\.venv/bin/\S.*$|^python3 -m venv .*$", text, flags=re.M)
    assert len(commands) >= 2
    for command in commands[:2]:
        assert command in quickstart, command


def test_readme_links_into_the_site_resolve():
    links = re.findall(r"\]\((docs/[^)#]+)(?:#[^)]*)?\)", README.read_text())
    assert links, "the README links into the site"
    for link in links:
        assert (REPO / link).exists(), link
