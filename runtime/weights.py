"""Read Qwen2 weights tensor by tensor from a GGUF file or a Hugging Face directory.

Both sources expose the same canonical names and layouts (Hugging Face's: linear weights are
[out_features, in_features]), one float32 array at a time, so the converter never holds more than
one dequantized tensor in memory.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

import numpy as np

from runtime.config import ModelConfig


class WeightError(Exception):
    """A weight file is missing, unreadable, or not a Qwen2 model."""


class WeightSource(Protocol):
    """A model's weights under canonical names (see `canonical_names`)."""

    config: ModelConfig

    def get(self, name: str) -> np.ndarray:
        """The float32 tensor with this canonical name."""
        ...

    def has(self, name: str) -> bool:
        """Whether the source holds a tensor with this canonical name."""
        ...

    def close(self) -> None:
        """Release file handles and maps."""
        ...

    def __enter__(self) -> WeightSource: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


LAYER_TENSORS = (
    "input_layernorm.weight",
    "self_attn.q_proj.weight",
    "self_attn.q_proj.bias",
    "self_attn.k_proj.weight",
    "self_attn.k_proj.bias",
    "self_attn.v_proj.weight",
    "self_attn.v_proj.bias",
    "self_attn.o_proj.weight",
    "post_attention_layernorm.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
)

# Canonical (Hugging Face Qwen2) name -> GGUF name, for one layer.
GGUF_LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
GGUF_GLOBAL_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


def layer_name(layer: int, tensor: str) -> str:
    """Canonical name of a per-layer tensor, e.g. `model.layers.3.mlp.up_proj.weight`."""
    return f"model.layers.{layer}.{tensor}"


def canonical_names(config: ModelConfig) -> Iterator[str]:
    """Every tensor a Qwen2 model needs, in the order the converter reads them."""
    yield "model.embed_tokens.weight"
    for layer in range(config.num_layers):
        for tensor in LAYER_TENSORS:
            yield layer_name(layer, tensor)
    yield "model.norm.weight"
    yield "lm_head.weight"  # the embedding again when the model ties them


def _gguf_name(name: str) -> str:
    if name in GGUF_GLOBAL_NAMES:
        return GGUF_GLOBAL_NAMES[name]
    _, _, layer, rest = name.split(".", 3)
    return f"blk.{layer}.{GGUF_LAYER_NAMES[rest]}"


DEQUANTIZE_ROWS = 8192


class _ClosesOnExit:
    """`with source:` closes the source on the way out."""

    def close(self) -> None:
        """Release file handles and maps."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class GGUFWeights(_ClosesOnExit):
    """Weights of a GGUF file, dequantized to float32 one tensor at a time."""

    def __init__(self, path: Path) -> None:
        import gguf  # imported here: only conversion needs it

        try:
            self._reader = gguf.GGUFReader(str(path))
        except (OSError, ValueError, struct.error) as error:
            raise WeightError(f"{path}: not a readable GGUF file ({error})") from error
        self._dequantize = gguf.quants.dequantize
        self._tensors = {tensor.name: tensor for tensor in self._reader.tensors}
        self.config = self._read_config(path)

    def _field(self, key: str) -> object:
        field = self._reader.fields.get(key)
        if field is None:
            raise WeightError(f"GGUF metadata lacks {key!r}")
        return field.contents()

    def _read_config(self, path: Path) -> ModelConfig:
        architecture = self._field("general.architecture")
        if architecture != "qwen2":
            raise WeightError(f"{path}: architecture {architecture!r} is not qwen2")
        vocab_size = int(self._tensors["token_embd.weight"].shape[1])

        def number(key: str) -> float:
            return float(self._field(f"qwen2.{key}"))  # type: ignore[arg-type]

        return ModelConfig(
            vocab_size=vocab_size,
            hidden_size=int(number("embedding_length")),
            intermediate_size=int(number("feed_forward_length")),
            num_layers=int(number("block_count")),
            num_heads=int(number("attention.head_count")),
            num_kv_heads=int(number("attention.head_count_kv")),
            rope_theta=number("rope.freq_base"),
            rms_norm_eps=number("attention.layer_norm_rms_epsilon"),
            max_position_embeddings=int(number("context_length")),
            tie_word_embeddings="output.weight" not in self._tensors,
        )

    def has(self, name: str) -> bool:
        """Whether the GGUF holds this canonical tensor."""
        return _gguf_name(name) in self._tensors

    def get(self, name: str) -> np.ndarray:
        """Dequantize one tensor; linear weights come out as [out_features, in_features]."""
        tensor = self._tensors.get(_gguf_name(name))
        if tensor is None:
            raise WeightError(f"GGUF lacks tensor {_gguf_name(name)!r} ({name})")
        # GGUF lists dimensions fastest-first; numpy wants them slowest-first.
        shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
        rows = tensor.data.reshape(shape[0], -1)  # [rows, bytes or values per row]
        out = np.empty((shape[0], int(np.prod(shape[1:], dtype=np.int64))), dtype=np.float32)
        # Row chunks: dequantizing a whole vocab matrix at once costs several GB of temporaries.
        for start in range(0, shape[0], DEQUANTIZE_ROWS):
            chunk = rows[start : start + DEQUANTIZE_ROWS]
            out[start : start + len(chunk)] = self._dequantize(chunk, tensor.tensor_type).reshape(
                len(chunk), -1
            )
        return out.reshape(shape)

    def close(self) -> None:
        """Drop the memory map."""
        self._tensors.clear()
        del self._reader


def _rope_theta(hf: dict[str, object]) -> float:
    """transformers 5 nests rope_theta under rope_parameters; 4.x kept it at the top."""
    parameters = hf.get("rope_parameters")
    if isinstance(parameters, dict) and "rope_theta" in parameters:
        return float(parameters["rope_theta"])
    return float(hf.get("rope_theta", 10000.0))  # type: ignore[arg-type]


_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}


class SafetensorsWeights(_ClosesOnExit):
    """Weights of a Hugging Face directory (config.json + *.safetensors), memory-mapped.

    The safetensors header is parsed here rather than through the `safetensors` package because
    numpy has no bfloat16, the dtype Qwen checkpoints ship in.
    """

    def __init__(self, directory: Path) -> None:
        config_path = directory / "config.json"
        files = sorted(directory.glob("*.safetensors"))
        if not config_path.is_file() or not files:
            raise WeightError(f"{directory}: expected config.json and *.safetensors files")
        self.config = self._read_config(json.loads(config_path.read_text()), directory)
        self._index: dict[str, tuple[np.memmap, str, list[int], int, int]] = {}
        for file in files:
            self._index_file(file)

    @staticmethod
    def _read_config(hf: dict[str, object], directory: Path) -> ModelConfig:
        if hf.get("model_type") not in ("qwen2",):
            raise WeightError(f"{directory}: model_type {hf.get('model_type')!r} is not qwen2")

        def number(key: str) -> float:
            return float(hf[key])  # type: ignore[arg-type]

        return ModelConfig(
            vocab_size=int(number("vocab_size")),
            hidden_size=int(number("hidden_size")),
            intermediate_size=int(number("intermediate_size")),
            num_layers=int(number("num_hidden_layers")),
            num_heads=int(number("num_attention_heads")),
            num_kv_heads=int(number("num_key_value_heads")),
            rope_theta=_rope_theta(hf),
            rms_norm_eps=number("rms_norm_eps"),
            max_position_embeddings=int(number("max_position_embeddings")),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        )

    def _index_file(self, file: Path) -> None:
        data = np.memmap(file, dtype=np.uint8, mode="r")
        (header_len,) = struct.unpack("<Q", bytes(data[:8]))
        header = json.loads(bytes(data[8 : 8 + header_len]))
        base = 8 + header_len
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            start, end = entry["data_offsets"]
            self._index[name] = (data, entry["dtype"], entry["shape"], base + start, base + end)

    def has(self, name: str) -> bool:
        """Whether the checkpoint holds this canonical tensor."""
        return name in self._index

    def get(self, name: str) -> np.ndarray:
        """One tensor as float32 (bfloat16 widened by shifting into the high half)."""
        if name not in self._index:
            raise WeightError(f"checkpoint lacks tensor {name!r}")
        data, dtype, shape, start, end = self._index[name]
        if dtype not in _SAFETENSORS_DTYPES:
            raise WeightError(f"tensor {name!r} has unsupported dtype {dtype}")
        raw = np.frombuffer(data[start:end], dtype=_SAFETENSORS_DTYPES[dtype]).reshape(shape)
        if dtype == "BF16":
            return (raw.astype(np.uint32) << 16).view(np.float32)
        return raw.astype(np.float32)

    def close(self) -> None:
        """Drop the memory maps."""
        self._index.clear()


def open_weight_source(path: Path) -> WeightSource:
    """Open a `.gguf` file or a Hugging Face model directory."""
    if path.is_dir():
        return SafetensorsWeights(path)
    if path.is_file():
        return GGUFWeights(path)
    raise WeightError(f"{path}: no such GGUF file or model directory")
