"""A tiny GGUF model (and LoRA adapter) written byte by byte for the local-engine tests.

A 1-layer llama with 32-wide random f32 weights and a byte-fallback SentencePiece vocabulary
(<unk>, <s>, </s> and the 256 byte tokens): about 100 KB, loads in llama.cpp in milliseconds,
and answers with nonsense, which is all an engine test needs. Only numpy and struct: no torch,
no gguf package.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

EMBED, FF, HEADS, CONTEXT = 32, 64, 2, 512
VOCAB = ["<unk>", "<s>", "</s>"] + [f"<0x{byte:02X}>" for byte in range(256)]
CHATML = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
_U32, _I32, _F32, _BOOL, _STRING, _ARRAY, _U64 = 4, 5, 6, 7, 8, 9, 10
ALIGN = 32


def write_tiny_model(path: Path, seed: int = 0, context: int = CONTEXT) -> Path:
    rng = np.random.default_rng(seed)

    def w(*shape):  # numpy (rows, cols); GGUF lists dimensions innermost first
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)

    tensors = {"token_embd.weight": w(len(VOCAB), EMBED), "output_norm.weight": np.ones(EMBED, np.float32),
               "output.weight": w(len(VOCAB), EMBED)}
    for name, shape in (("attn_q", (EMBED, EMBED)), ("attn_k", (EMBED, EMBED)), ("attn_v", (EMBED, EMBED)),
                        ("attn_output", (EMBED, EMBED)), ("ffn_gate", (FF, EMBED)), ("ffn_up", (FF, EMBED)),
                        ("ffn_down", (EMBED, FF))):
        tensors[f"blk.0.{name}.weight"] = w(*shape)
    tensors["blk.0.attn_norm.weight"] = np.ones(EMBED, np.float32)
    tensors["blk.0.ffn_norm.weight"] = np.ones(EMBED, np.float32)
    metadata = [
        ("general.architecture", _STRING, "llama"), ("general.type", _STRING, "model"),
        ("general.name", _STRING, "tiny test llama"), ("general.file_type", _U32, 0),
        ("llama.context_length", _U32, context), ("llama.embedding_length", _U32, EMBED),
        ("llama.block_count", _U32, 1), ("llama.feed_forward_length", _U32, FF),
        ("llama.attention.head_count", _U32, HEADS), ("llama.attention.head_count_kv", _U32, HEADS),
        ("llama.attention.layer_norm_rms_epsilon", _F32, 1e-5), ("llama.rope.dimension_count", _U32, EMBED // HEADS),
        ("tokenizer.ggml.model", _STRING, "llama"),
        ("tokenizer.ggml.tokens", _ARRAY, (_STRING, VOCAB)),
        ("tokenizer.ggml.scores", _ARRAY, (_F32, [0.0] * len(VOCAB))),
        ("tokenizer.ggml.token_type", _ARRAY, (_I32, [2, 3, 3] + [6] * 256)),
        ("tokenizer.ggml.unknown_token_id", _U32, 0), ("tokenizer.ggml.bos_token_id", _U32, 1),
        ("tokenizer.ggml.eos_token_id", _U32, 2), ("tokenizer.ggml.add_bos_token", _BOOL, True),
        ("tokenizer.chat_template", _STRING, CHATML),
    ]
    return _write(path, metadata, tensors)


def write_tiny_adapter(path: Path, rank: int = 4, seed: int = 1) -> Path:
    """A LoRA adapter for the tiny model's attention query matrix."""
    rng = np.random.default_rng(seed)
    tensors = {"blk.0.attn_q.weight.lora_a": (rng.standard_normal((rank, EMBED)) * 0.1).astype(np.float32),
               "blk.0.attn_q.weight.lora_b": (rng.standard_normal((EMBED, rank)) * 0.1).astype(np.float32)}
    metadata = [("general.architecture", _STRING, "llama"), ("general.type", _STRING, "adapter"),
                ("adapter.type", _STRING, "lora"), ("adapter.lora.alpha", _F32, float(rank))]
    return _write(path, metadata, tensors)


def _write(path: Path, metadata: list, tensors: dict) -> Path:
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(metadata)))
    for key, kind, value in metadata:
        out += _string(key) + struct.pack("<I", kind) + _value(kind, value)
    offset, blobs = 0, []
    for name, array in tensors.items():
        out += _string(name) + struct.pack("<I", array.ndim) + b"".join(struct.pack("<Q", d) for d in reversed(array.shape))
        out += struct.pack("<IQ", 0, offset)  # type 0: f32
        blob = array.tobytes()
        blobs.append(blob + b"\0" * (-len(blob) % ALIGN))
        offset += len(blobs[-1])
    out += b"\0" * (-len(out) % ALIGN)
    path.write_bytes(bytes(out) + b"".join(blobs))
    return path


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def _value(kind: int, value) -> bytes:
    if kind == _STRING:
        return _string(value)
    if kind == _ARRAY:
        item_kind, items = value
        return struct.pack("<IQ", item_kind, len(items)) + b"".join(_value(item_kind, item) for item in items)
    return struct.pack({_U32: "<I", _I32: "<i", _F32: "<f", _BOOL: "<?", _U64: "<Q"}[kind], value)
