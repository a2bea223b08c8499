"""The transformer hyper-parameters that the converter and the engine share."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np

# `fp16-int4`: int4 weights with fp16 activations throughout (embeddings, norms, attention, KV
# cache), for GPU hosts, whose CUDA GroupQueryAttention takes fp16 only; the others keep fp32
# activations (the CPU's fast kernels take fp32).
Precision = Literal["int4", "int8", "w8a8", "fp32", "fp16-int4"]
PRECISIONS: tuple[Precision, ...] = get_args(Precision)
_FP16 = "fp16-"
# Bump when the ONNX graph the converter writes changes: cached conversions are keyed by it.
GRAPH_FORMAT = 2
# The kernel probe the converter writes beside every model (`convert.write_numerics_probe`,
# read by `runtime.numerics`), shaped like a Qwen2.5 attention projection: K a multiple of
# every block size we write.
NUMERICS_PROBE = "numerics_probe.onnx"
PROBE_K, PROBE_N = 1536, 512


def weight_precision(precision: str) -> str:
    """How a precision stores its matrices: int4, int8, w8a8 or fp32 (`fp16-int4` -> int4)."""
    return precision.removeprefix(_FP16)


def activation_dtype(precision: str) -> str:
    """The dtype a precision's graph computes in and keeps its KV cache in (numpy's name)."""
    return "float16" if precision.startswith(_FP16) else "float32"


@dataclass(frozen=True)
class ModelConfig:
    """Shape of a Qwen2-architecture decoder, read from GGUF metadata or an HF config.json."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    rope_theta: float
    rms_norm_eps: float
    max_position_embeddings: int
    tie_word_embeddings: bool = False
    # The converted graph's activation and KV dtype (`activation_dtype`); absent from the
    # config.json of a graph converted before fp16 graphs existed, all of which are fp32.
    activation_dtype: str = "float32"

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.hidden_size // self.num_heads

    @property
    def kv_dtype(self) -> np.dtype:
        """dtype of the KV cache buffers the graph reads and writes."""
        return np.dtype(self.activation_dtype)

    def kv_bytes_per_token(self) -> int:
        """Bytes that one token occupies in the KV cache across all layers (keys and values)."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * self.kv_dtype.itemsize

    def save(self, path: Path) -> None:
        """Write the config as JSON."""
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> ModelConfig:
        """Read a config written by `save`."""
        return cls(**json.loads(path.read_text()))
