"""Read a GGUF file's header: is it a GGUF at all, what model, how long a context, and is it whole?

llama.cpp reports a broken weights file deep in its own log and then fails to start; reading the
header first lets instret say which file is wrong and what to do about it. Only the header and
the tensor table are read (a few MB), never the weights.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

MAGIC = b"GGUF"
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
# ggml type id -> (elements per block, bytes per block), for the types small GGUF models use.
_BLOCKS = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 36),
           10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
           16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110),
           22: (256, 82), 23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8),
           29: (256, 56), 30: (1, 2), 34: (256, 54), 35: (256, 66), 39: (32, 17)}


class GGUFError(ValueError):
    """The file is not a readable, complete GGUF."""


@dataclass(frozen=True)
class GGUFInfo:
    path: Path
    version: int
    metadata: dict = field(repr=False)
    n_tensors: int
    data_end: int | None  # where the last tensor ends; None when a tensor type is unknown here
    file_size: int

    @property
    def architecture(self) -> str | None:
        return self.metadata.get("general.architecture")

    @property
    def name(self) -> str | None:
        return self.metadata.get("general.name")

    @property
    def context_length(self) -> int | None:
        """The window the model was trained with (`<arch>.context_length`)."""
        return self.metadata.get(f"{self.architecture}.context_length") if self.architecture else None

    @property
    def is_lora(self) -> bool:
        return self.metadata.get("general.type") == "adapter"

    @property
    def truncated(self) -> bool:
        return self.data_end is not None and self.file_size < self.data_end


def read_gguf(path: str | Path) -> GGUFInfo:
    """The header of a GGUF file; `GGUFError` naming the file when it is not one or is cut short."""
    path = Path(path).expanduser()
    size = path.stat().st_size
    try:
        with path.open("rb") as handle:
            reader = _Reader(handle)
            if reader.take(4) != MAGIC:
                raise GGUFError(f"{path} is not a GGUF file (its first bytes are not 'GGUF'); "
                                "instret's local engine reads GGUF weights only")
            version, n_tensors, n_keys = reader.unpack("<I"), reader.unpack("<Q"), reader.unpack("<Q")
            metadata = {}
            for _ in range(n_keys):
                key = reader.string()
                metadata[key] = reader.value(reader.unpack("<I"))
            data_end = _data_end(reader, n_tensors, metadata.get("general.alignment", 32))
    except (struct.error, EOFError, UnicodeDecodeError, MemoryError, OverflowError) as error:
        raise GGUFError(f"{path} is damaged or cut short inside its header ({size:,} bytes; {error}); "
                        "download it again") from None
    return GGUFInfo(path, version, metadata, n_tensors, data_end, size)


def check_gguf(path: str | Path, *, adapter: bool = False) -> GGUFInfo:
    """`read_gguf`, plus a clear error for a missing, truncated or wrong-kind file."""
    path = Path(path).expanduser()
    what = "LoRA adapter" if adapter else "weights file"
    if not path.is_file():
        raise GGUFError(f"{what} {path} does not exist" + ("" if path.suffix == ".gguf" else " (expected a .gguf file)"))
    info = read_gguf(path)
    if info.truncated:
        raise GGUFError(f"{path} is cut short: {info.file_size:,} bytes, but its tensors end at byte "
                        f"{info.data_end:,}; the download was interrupted, fetch it again")
    if adapter and not info.is_lora:
        raise GGUFError(f"{path} is a model, not a LoRA adapter (general.type is {info.metadata.get('general.type')!r})")
    if not adapter and info.is_lora:
        raise GGUFError(f"{path} is a LoRA adapter; name a base model first: local/<base>+{path}")
    return info


def _data_end(reader: "_Reader", n_tensors: int, alignment: int) -> int | None:
    end, known = 0, True
    for _ in range(n_tensors):
        reader.string()
        dims = [reader.unpack("<Q") for _ in range(reader.unpack("<I"))]
        kind, offset = reader.unpack("<I"), reader.unpack("<Q")
        if kind not in _BLOCKS:
            known = False
            continue
        elements = 1
        for dim in dims:
            elements *= dim
        per_block, block_bytes = _BLOCKS[kind]
        end = max(end, offset + elements // per_block * block_bytes)
    start = -(-reader.position // alignment) * alignment  # tensor data begins at the next aligned offset
    return start + end if known else None


class _Reader:
    def __init__(self, handle):
        self.handle, self.position = handle, 0

    def take(self, n: int) -> bytes:
        data = self.handle.read(n)
        if len(data) < n:
            raise EOFError(f"file ends at byte {self.position + len(data):,}")
        self.position += n
        return data

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        length = self.unpack("<Q")
        if length > 1 << 24:
            raise EOFError(f"a string of {length:,} bytes at byte {self.position:,}")
        return self.take(length).decode("utf-8", errors="replace")

    def value(self, kind: int):
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item_kind, count = self.unpack("<I"), self.unpack("<Q")
            if item_kind in _SCALARS:  # skip numeric arrays (token scores) in one read
                self.take(count * struct.calcsize(_SCALARS[item_kind]))
                return f"<array of {count}>"
            values = [self.value(item_kind) for _ in range(count)]
            return values if count <= 16 else f"<array of {count}>"
        raise EOFError(f"unknown value type {kind} at byte {self.position:,}")
