"""Dependency floors leave out releases known to be bad, and the tested set (constraints.txt) sits inside them."""

import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
# Withdrawn after the March 2026 supply-chain compromise (1.82.7, 1.82.8); proxy releases below
# 1.83.7 are named in CVE-2026-42208.
BAD_LITELLM = ["1.70.0", "1.82.7", "1.82.8", "1.83.6"]


def requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {(r := Requirement(line)).name: r for line in project["dependencies"]}


def pins() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    return dict(line.split("==", 1) for line in lines if "==" in line and not line.startswith("#"))


def test_litellm_floor_excludes_the_withdrawn_and_vulnerable_releases():
    allowed = requirements()["litellm"].specifier
    assert [version for version in BAD_LITELLM if allowed.contains(version)] == []


def test_every_pinned_dependency_satisfies_its_range():
    pinned = {name.lower(): version for name, version in pins().items()}
    outside = {name: (str(req.specifier), pinned[name]) for name, req in requirements().items()
               if name in pinned and not req.specifier.contains(pinned[name])}
    assert outside == {}
