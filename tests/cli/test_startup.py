"""A new user's first seconds (issue 7): `instret --version`, and a note on screen while UMAP's numba
code compiles on a first run instead of a minute of silence."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import instret

INSTRET = Path(sys.executable).with_name("instret")
NOTE = "compiling UMAP's numba code"


def test_version_as_installed_script_matches_the_package():
    result = subprocess.run([str(INSTRET), "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"instret {instret.__version__}"
    assert instret.__version__ == version("instret")  # the code and the installed metadata agree


def test_version_and_help_load_no_heavy_library():
    probe = ("import sys\nfrom instret.cli.main import main\nfor args in (['--version'], ['--help']):\n"
             "    try:\n        main(args)\n    except SystemExit:\n        pass\n"
             "print(sorted(m for m in ('dspy', 'litellm', 'chromadb', 'torch', 'umap', 'numba', 'matplotlib') "
             "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def _import_stub_umap(tmp_path: Path) -> subprocess.CompletedProcess:
    """`import_umap()` in a fresh process whose `umap` is a stub package and whose cache is `tmp_path/cache`:
    what a first run does, without spending a minute compiling the real one."""
    stubs = tmp_path / "stubs"
    (stubs / "umap").mkdir(parents=True, exist_ok=True)
    (stubs / "umap" / "__init__.py").write_text("STUB = True\n")
    (stubs / "pynndescent.py").write_text("")
    env = {key: value for key, value in os.environ.items() if key != "NUMBA_CACHE_DIR"}
    env.update(XDG_CACHE_HOME=str(tmp_path / "cache"), PYTHONPATH=str(stubs))
    return subprocess.run([sys.executable, "-c", "from instret.corpus._numba import import_umap\n"
                           "print(import_umap().STUB)"], env=env, capture_output=True, text=True, timeout=120)


def test_first_run_says_umap_is_compiling_and_later_runs_do_not(tmp_path):
    first = _import_stub_umap(tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "True"
    cache = tmp_path / "cache" / "instret" / "numba"
    assert f"instret: {NOTE} on this machine's first run" in first.stderr and str(cache) in first.stderr
    assert len(first.stderr.strip().splitlines()) == 1

    # numba files a package's compiled code under "<dir name>_<sha1 of the dir>"; put some there.
    package = str((tmp_path / "stubs" / "umap").resolve())
    compiled = cache / f"umap_{hashlib.sha1(package.encode()).hexdigest()}"
    compiled.mkdir(parents=True)
    (compiled / "umap_.optimize_layout-1.py311.nbi").write_bytes(b"index")
    later = _import_stub_umap(tmp_path)
    assert later.returncode == 0, later.stderr
    assert NOTE not in later.stderr
