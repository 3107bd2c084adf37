"""Import UMAP so that its numba compilation is paid once per machine, not once per process.

umap-learn marks few of its jitted functions `cache=True`, so every fresh process spends
about ten seconds (a minute on first import) compiling them again. Defaulting `cache=True`
while umap and pynndescent are imported stores the compiled code under NUMBA_CACHE_DIR,
which we point at a per-user cache folder. Closures that numba cannot cache still compile
per process; numba only warns about them. When the cache holds nothing for this umap install,
a one-line note says why the first run is quiet for a while.
"""

from __future__ import annotations

import os
import sys
import threading
import warnings
from pathlib import Path

_lock = threading.Lock()


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "instret" / "numba"


def import_umap():
    """Return the `umap` module, importing it with numba's on-disk cache enabled."""
    with _lock:
        import sys

        if "umap" in sys.modules:
            return sys.modules["umap"]
        os.environ.setdefault("NUMBA_CACHE_DIR", str(cache_dir()))
        import numba

        if umap_cache_is_cold(Path(os.environ["NUMBA_CACHE_DIR"])):
            print(f"instret: compiling UMAP's numba code on this machine's first run (about a minute, once); "
                  f"it is cached in {os.environ['NUMBA_CACHE_DIR']}", file=sys.stderr, flush=True)

        original_njit, original_jit = numba.njit, numba.jit

        def cached(decorator):
            def wrapper(*args, **kwargs):
                kwargs.setdefault("cache", True)
                return decorator(*args, **kwargs)
            return wrapper

        numba.njit, numba.jit = cached(original_njit), cached(original_jit)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import pynndescent  # noqa: F401
                import umap
        finally:
            numba.njit, numba.jit = original_njit, original_jit
        return umap


def umap_cache_is_cold(folder: Path) -> bool:
    """True when numba's cache under `folder` holds no compiled code for the umap installed here."""
    import importlib.util

    from numba.core.caching import _CacheLocator

    spec = importlib.util.find_spec("umap")
    if spec is None or spec.origin is None:
        return False  # no umap: the import reports that itself
    # numba files a module's compiled code under "<package dir name>_<sha1 of its path>".
    return not any((folder / _CacheLocator.get_suitable_cache_subpath(spec.origin)).glob("*.nbi"))
