"""Write a Qwen2 decoder as one ONNX graph for ONNX Runtime, streaming weights tensor by tensor.

The graph is built by hand instead of traced from torch: that keeps the conversion's memory to
one dequantized tensor at a time (the notes measured 15-21 GB peaks for export + quantize of the
1.5B) and lets us pick the fused ONNX Runtime kernels decode needs:

- `GroupQueryAttention` with rotary embedding and a KV buffer that past and present share, so a
  step appends in place instead of concatenating the cache;
- `MatMulNBits` (4- or 8-bit block-quantized weights, int8 compute via VNNI at accuracy level 4),
  with q/k/v and gate/up fused into one matrix each, so activations are quantized once per block;
- or, at precision `w8a8`, `MatMulInteger` on int8 weights (one scale per output channel) and
  activations quantized to 8 bits per row: ONNX Runtime's u8s8 GEMM, which runs on AMX where the
  CPU has it (6-7x MatMulNBits' int4 throughput for prompts there, `bench/kernels.py`);
- `SkipSimplifiedLayerNormalization`, fusing the residual add into the RMS norm;
- logits only for the last `logits_to_keep` positions: prefill pays for one row of the vocab
  projection, speculative verification asks for k+1.

At precision `fp16-int4` (GPU hosts) the same graph computes in fp16: int4 `MatMulNBits` with
fp16 scales, fp16 embeddings, norms, biases, rotary tables, attention and KV buffers; only the
vocabulary projection of the kept rows runs on fp32 activations, so logits stay fp32 for
sampling (fp16 logits around 16 are 1/64 apart: greedy argmax would see false ties).

Inputs: input_ids [B, S] int64, seqlens_k [B] int32 (valid length - 1), total_sequence_length []
int32, logits_to_keep [1] int64, past_key_i / past_value_i [B, kv_heads, capacity, head_dim]
(float32, or float16 at fp16 precisions: `ModelConfig.activation_dtype`).
Outputs: logits [B, keep, vocab] float32, present_key_i / present_value_i (bound to the past
buffers).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from runtime.config import (
    NUMERICS_PROBE,
    PRECISIONS,
    PROBE_K,
    PROBE_N,
    ModelConfig,
    activation_dtype,
    weight_precision,
)
from runtime.weights import WeightSource, canonical_names, layer_name

BLOCK_SIZE = 32
# accuracy_level 4: MatMulNBits quantizes activations to int8 per block and runs integer GEMM.
ACCURACY_LEVEL = 4
MAX_CONTEXT = 32768
QUANTIZE_ROWS = 16384
OPSET = 21
DATA_ALIGNMENT = 4096
# Shape-like constants must be inline: shape inference cannot read external data.
INLINE_BYTES = 1024

ProgressCallback = Callable[[int, int, str], None]


class ExternalDataWriter:
    """Appends initializers to `model.onnx.data` as they are produced; the graph keeps only refs."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("wb")
        self._location = path.name
        self.initializers: list[TensorProto] = []

    def add(self, name: str, array: np.ndarray) -> str:
        """Register `array` as `name`: small ones inline, others page-aligned in the data file."""
        array = np.ascontiguousarray(array)
        if array.nbytes <= INLINE_BYTES:
            self.initializers.append(numpy_helper.from_array(array, name))
            return name
        offset = self._file.tell()
        padding = -offset % DATA_ALIGNMENT
        self._file.write(b"\0" * padding)
        offset += padding
        self._file.write(array.tobytes())
        tensor = TensorProto()
        tensor.name = name
        tensor.data_type = helper.np_dtype_to_tensor_dtype(array.dtype)
        tensor.dims.extend(array.shape)
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (
            ("location", self._location),
            ("offset", str(offset)),
            ("length", str(array.nbytes)),
        ):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        self.initializers.append(tensor)
        return name

    def close(self) -> None:
        """Flush and close the data file."""
        self._file.close()


def quantize_blockwise(
    weight: np.ndarray, bits: int, block_size: int = BLOCK_SIZE
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Asymmetric min/max quantization of a [N, K] weight along K, in MatMulNBits' layout.

    Returns packed [N, blocks, block_size * bits / 8] uint8, scales [N * blocks] float32 and
    zero points [N * ceil(blocks * bits / 8)] uint8 (4-bit values two to a byte, low nibble first).
    Zero points are integers: float ones would push ONNX Runtime off its int8 (VNNI) kernels.
    """
    n, k = weight.shape
    if n > QUANTIZE_ROWS:
        # Row chunks bound the temporaries for vocabulary-sized matrices; rows are independent.
        parts = [
            quantize_blockwise(weight[i : i + QUANTIZE_ROWS], bits, block_size)
            for i in range(0, n, QUANTIZE_ROWS)
        ]
        packed, scales, zero_points = zip(*parts, strict=True)
        return np.concatenate(packed), np.concatenate(scales), np.concatenate(zero_points)
    blocks = -(-k // block_size)
    padded = np.zeros((n, blocks * block_size), dtype=np.float32)
    padded[:, :k] = weight
    grouped = padded.reshape(n, blocks, block_size)  # [N, blocks, block]
    levels = (1 << bits) - 1
    # Keep 0 representable: padding and exact zeros stay exact.
    low = np.minimum(grouped.min(axis=2), 0.0)
    high = np.maximum(grouped.max(axis=2), 0.0)
    scales = (high - low) / levels
    scales[scales == 0] = 1.0
    zero_points = np.clip(np.rint(-low / scales), 0, levels)
    quantized = np.rint(grouped / scales[:, :, None] + zero_points[:, :, None])
    quantized = np.clip(quantized, 0, levels).astype(np.uint8)
    zero_points = zero_points.astype(np.uint8)
    if bits == 4:
        quantized = quantized[:, :, 0::2] | (quantized[:, :, 1::2] << 4)
        if blocks % 2:
            zero_points = np.pad(zero_points, ((0, 0), (0, 1)))
        zero_points = zero_points[:, 0::2] | (zero_points[:, 1::2] << 4)
    return quantized, scales.reshape(-1).astype(np.float32), zero_points.reshape(-1)


def quantize_per_channel(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 quantization of a [N, K] weight, one scale per output row.

    Returns the transposed int8 matrix [K, N] (MatMulInteger's B) and scales [N] float32.
    """
    scales = np.abs(weight).max(axis=1) / 127.0  # [N]
    scales[scales == 0] = 1.0
    quantized = np.empty(weight.shape, dtype=np.int8)
    # Row chunks bound the float temporaries for vocabulary-sized matrices.
    for start in range(0, weight.shape[0], QUANTIZE_ROWS):
        rows = slice(start, start + QUANTIZE_ROWS)
        quantized[rows] = np.clip(np.rint(weight[rows] / scales[rows, None]), -127, 127)
    return np.ascontiguousarray(quantized.T), scales.astype(np.float32)


class GraphBuilder:
    """Collects nodes and initializers with unique names; `linear` writes a matrix product in
    the build's weight precision (int4 / int8 with `block_size`-wide blocks, w8a8 or fp32) on
    activations of its dtype (`dtype`: float32, or float16 at `fp16-*` precisions)."""

    def __init__(
        self, data: ExternalDataWriter, precision: str, block_size: int = BLOCK_SIZE
    ) -> None:
        self.data = data
        self.precision = weight_precision(precision)
        self.dtype = np.dtype(activation_dtype(precision))
        self.tensor_type = helper.np_dtype_to_tensor_dtype(self.dtype)
        self.block_size = block_size
        self.nodes: list[onnx.NodeProto] = []
        if self.precision == "w8a8":
            # Shared by every w8a8 linear: the row-max axis, 1/127, the smallest row scale
            # (an all-zero row must not divide by zero), and u8 zero point 128 (symmetric int8
            # shifted into uint8: ONNX Runtime's fast integer GEMM is u8 x s8).
            for constant, value in (
                ("w8a8.last_axis", np.array([-1], np.int64)),
                ("w8a8.inverse_127", np.array(1.0 / 127.0, np.float32)),
                ("w8a8.tiny", np.array(1e-30, np.float32)),
                ("w8a8.one", np.array(1.0, np.float32)),
                ("w8a8.zero_point", np.array(128, np.uint8)),
            ):
                data.add(constant, value)

    def node(
        self,
        op: str,
        inputs: Sequence[str],
        name: str,
        outputs: int | Sequence[str] = 1,
        domain: str = "",
        **attributes: Any,
    ) -> list[str]:
        """Add one node; returns its output names (`name`, `name.1`, ... unless given)."""
        if isinstance(outputs, int):
            outputs = [name if i == 0 else f"{name}.{i}" for i in range(outputs)]
        self.nodes.append(
            helper.make_node(
                op, list(inputs), list(outputs), name=name, domain=domain, **attributes
            )
        )
        return list(outputs)

    def constant(self, name: str, array: np.ndarray) -> str:
        """A float initializer (norm weights, biases, rotary tables) in the activation dtype."""
        return self.data.add(name, array.astype(self.dtype))

    def cast(self, x: str, source: np.dtype, target: np.dtype, name: str) -> str:
        """x converted from `source` to `target` dtype: a Cast node, or x itself if they match."""
        if source == target:
            return x
        return self.node("Cast", [x], name, to=helper.np_dtype_to_tensor_dtype(target))[0]

    def linear(
        self,
        x: str,
        weight: np.ndarray,
        bias: np.ndarray | None,
        name: str,
        dtype: np.dtype | None = None,
    ) -> str:
        """x @ weight.T (+ bias) for a [N, K] weight, quantized per the build's precision;
        x is of the build's activation dtype unless `dtype` says otherwise."""
        dtype = self.dtype if dtype is None else dtype
        n, k = weight.shape
        if self.precision == "fp32":
            matrix = self.data.add(f"{name}.weight", weight.T.astype(dtype))
            out = self.node("MatMul", [x, matrix], name)[0]
        elif self.precision == "w8a8":
            out = self._integer_linear(x, weight, name)
        else:
            bits = 4 if self.precision == "int4" else 8
            packed, scales, zero_points = quantize_blockwise(weight, bits, self.block_size)
            inputs = [
                x,
                self.data.add(f"{name}.qweight", packed),
                self.data.add(f"{name}.scales", scales.astype(dtype)),
                self.data.add(f"{name}.zero_points", zero_points),
            ]
            out = self.node(
                "MatMulNBits",
                inputs,
                name,
                domain="com.microsoft",
                K=k,
                N=n,
                bits=bits,
                block_size=self.block_size,
                accuracy_level=ACCURACY_LEVEL,
            )[0]
        if bias is None:
            return out
        bias_name = self.data.add(f"{name}.bias", bias.astype(dtype))
        return self.node("Add", [out, bias_name], f"{name}/bias")[0]

    def _integer_linear(self, x: str, weight: np.ndarray, name: str) -> str:
        """x [B, S, K] @ weight.T in integers: each row of x quantized to int8 by its own
        absolute maximum, weights per output channel, int32 sums scaled back to float."""
        quantized_weight, weight_scales = quantize_per_channel(weight)  # [K, N], [N]
        magnitude = self.node("Abs", [x], f"{name}/abs")[0]
        (peak,) = self.node(
            "ReduceMax", [magnitude, "w8a8.last_axis"], f"{name}/peak", keepdims=1
        )  # [B, S, 1]
        step = self.node("Mul", [peak, "w8a8.inverse_127"], f"{name}/step")[0]
        row_scale = self.node("Max", [step, "w8a8.tiny"], f"{name}/row_scale")[0]
        scaled = self.node("Div", [x, row_scale], f"{name}/scaled")[0]  # within [-127, 127]
        rows = self.node(
            "QuantizeLinear", [scaled, "w8a8.one", "w8a8.zero_point"], f"{name}/quantize"
        )[0]  # [B, S, K] uint8
        sums = self.node(
            "MatMulInteger",
            [rows, self.data.add(f"{name}.qweight", quantized_weight), "w8a8.zero_point"],
            f"{name}/matmul",
        )[0]  # [B, S, N] int32, exact
        real = self.node("Cast", [sums], f"{name}/cast", to=TensorProto.FLOAT)[0]
        by_row = self.node("Mul", [real, row_scale], f"{name}/row_scaled")[0]
        return self.node("Mul", [by_row, self.data.add(f"{name}.scales", weight_scales)], name)[0]


def rotary_caches(config: ModelConfig, length: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin tables [length, head_dim / 2] for rotate-half (NeoX) rotary embedding."""
    half = config.head_dim // 2
    inverse_frequency = 1.0 / (config.rope_theta ** (np.arange(half, dtype=np.float64) / half))
    angles = np.outer(np.arange(length, dtype=np.float64), inverse_frequency)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def _io(name: str, dtype: int, shape: Sequence[str | int]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, list(shape))


def kv_input_names(layer: int) -> tuple[str, str]:
    """Graph input names of one layer's past keys and values."""
    return f"past_key.{layer}", f"past_value.{layer}"


def kv_output_names(layer: int) -> tuple[str, str]:
    """Graph output names of one layer's present keys and values."""
    return f"present_key.{layer}", f"present_value.{layer}"


def convert_to_onnx(
    source: WeightSource,
    out_dir: Path,
    precision: str,
    on_progress: ProgressCallback | None = None,
) -> None:
    """Write out_dir/model.onnx, model.onnx.data and config.json for `source` at `precision`."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {PRECISIONS}")
    config = source.config
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(canonical_names(config))
    done = 0

    def read(name: str) -> np.ndarray:
        nonlocal done
        tied_head = name == "lm_head.weight" and config.tie_word_embeddings
        array = source.get("model.embed_tokens.weight" if tied_head else name)
        done += 1
        if on_progress is not None:
            on_progress(done, len(names), name)
        return array

    data = ExternalDataWriter(out_dir / "model.onnx.data")
    graph = GraphBuilder(data, precision)
    try:
        hidden = _build_decoder(graph, config, read)
        _build_head(graph, config, read, hidden)
    finally:
        data.close()

    batch, seq, capacity = "batch", "sequence", "capacity"
    kv_shape: list[str | int] = [batch, config.num_kv_heads, capacity, config.head_dim]
    inputs = [
        _io("input_ids", TensorProto.INT64, [batch, seq]),
        _io("seqlens_k", TensorProto.INT32, [batch]),
        _io("total_sequence_length", TensorProto.INT32, []),
        _io("logits_to_keep", TensorProto.INT64, [1]),
    ]
    outputs = [_io("logits", TensorProto.FLOAT, [batch, "kept", config.vocab_size])]
    kv_type = graph.tensor_type
    for layer in range(config.num_layers):
        inputs += [_io(name, kv_type, kv_shape) for name in kv_input_names(layer)]
        outputs += [_io(name, kv_type, kv_shape) for name in kv_output_names(layer)]
    _save(graph, data, inputs, outputs, out_dir / "model.onnx")
    replace(config, activation_dtype=graph.dtype.name).save(out_dir / "config.json")
    write_numerics_probe(out_dir, precision)


def _save(
    graph: GraphBuilder,
    data: ExternalDataWriter,
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    path: Path,
) -> None:
    model = helper.make_model(
        helper.make_graph(graph.nodes, path.stem, inputs, outputs, data.initializers),
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)],
        producer_name="coder-lsp",
    )
    model.ir_version = 10
    onnx.save_model(model, str(path))


def write_numerics_probe(out_dir: Path, precision: str) -> None:
    """Write out_dir/numerics_probe.onnx: one product of random weights at `precision`,
    x [rows, K] -> y [rows, N] in its activation dtype, which `runtime.numerics` runs on the
    loading machine to learn whether its kernels score a lone row as among others."""
    weight = np.random.default_rng(7).standard_normal((PROBE_N, PROBE_K)).astype(np.float32)
    data = ExternalDataWriter(out_dir / f"{NUMERICS_PROBE}.data")
    graph = GraphBuilder(data, precision)
    try:
        product = graph.linear("x", weight * 0.02, None, "probe")
        graph.node("Identity", [product], "y", outputs=["y"])
    finally:
        data.close()
    inputs = [_io("x", graph.tensor_type, ["rows", PROBE_K])]
    _save(
        graph,
        data,
        inputs,
        [_io("y", graph.tensor_type, ["rows", PROBE_N])],
        out_dir / NUMERICS_PROBE,
    )


def _skip_norm(
    graph: GraphBuilder, x: str, residual: str, weight: str, name: str, eps: float
) -> tuple[str, str]:
    """RMS norm of x + residual, fused; returns (normed, the new residual stream x + residual)."""
    normed, _, _, summed = graph.node(
        "SkipSimplifiedLayerNormalization",
        [x, residual, weight],
        name,
        outputs=[name, "", "", f"{name}/residual"],
        domain="com.microsoft",
        epsilon=eps,
    )
    return normed, summed


def _scratch_lengths(graph: GraphBuilder) -> list[str]:
    """seqlens_k and total_sequence_length counting the scratch row after the new tokens.

    Attention runs one row more than a single sequence's pass has tokens (a copy of the last
    one, whose keys and values land in the cache's scratch slot and are overwritten by the next
    pass): GroupQueryAttention rounds a one-row pass differently from a multi-row one, and with
    at least two rows every pass, one decode step or a k-token verification, computes each
    token's attention identically. The matrix products stay at S rows. A batch of several
    sequences (the team server's decode step, one token each) gets no scratch row: the kernel
    takes several rows with a past only for a batch of one.
    """
    for constant, value in (
        ("scratch.zero", np.array(0, np.int64)),
        ("scratch.single", np.array(1, np.int64)),
        ("scratch.first", np.array([0], np.int64)),
        ("scratch.second", np.array([1], np.int64)),
        ("scratch.third", np.array([2], np.int64)),
        ("scratch.last", np.array([-1], np.int64)),
        ("scratch.end", np.array([np.iinfo(np.int64).max])),
        ("scratch.axis", np.array([1], np.int64)),
    ):
        graph.data.add(constant, value)
    shape = graph.node("Shape", ["input_ids"], "scratch/shape")[0]  # [2]: B, S
    batch = graph.node("Gather", [shape, "scratch.zero"], "scratch/batch")[0]  # []
    single = graph.node("Equal", [batch, "scratch.single"], "scratch/single")[0]  # [] bool
    rows = graph.node("Cast", [single], "scratch/rows", to=TensorProto.INT64)[0]  # [] 0 or 1
    graph.node("Reshape", [rows, "scratch.second"], "scratch.rows")  # [1]
    graph.node("Slice", [shape, "scratch.second", "scratch.third"], "scratch.new_rows")  # [1]: S
    added = graph.node("Cast", [single], "scratch/added", to=TensorProto.INT32)[0]
    return [
        graph.node("Add", ["seqlens_k", added], "scratch/seqlens_k")[0],
        graph.node("Add", ["total_sequence_length", added], "scratch/total")[0],
    ]


def _with_scratch_row(graph: GraphBuilder, rows: str, name: str) -> str:
    """rows [B, S, W] followed by a copy of its last row when B is 1: [B, S + (B == 1), W]."""
    last = graph.node(
        "Slice", [rows, "scratch.last", "scratch.end", "scratch.axis"], f"{name}/last"
    )[0]  # [B, 1, W]
    scratch = graph.node(
        "Slice", [last, "scratch.first", "scratch.rows", "scratch.axis"], f"{name}/scratch"
    )[0]  # [B, 0 or 1, W]
    return graph.node("Concat", [rows, scratch], f"{name}/with_scratch", axis=1)[0]


def _build_decoder(
    graph: GraphBuilder, config: ModelConfig, read: Callable[[str], np.ndarray]
) -> tuple[str, str]:
    """Embedding and decoder layers; returns (last layer output, residual stream) names."""
    embedding = read("model.embed_tokens.weight")
    # fp16 halves the table; Gather touches only S rows of it per step.
    table = graph.data.add("embed_tokens.weight", embedding.astype(np.float16))
    del embedding
    gathered = graph.node("Gather", [table, "input_ids"], "embed")[0]  # [B, S, hidden] fp16
    residual = graph.cast(gathered, np.dtype(np.float16), graph.dtype, "embed/cast")

    cos, sin = rotary_caches(config, min(config.max_position_embeddings, MAX_CONTEXT))
    cos_name = graph.constant("rotary.cos", cos)
    sin_name = graph.constant("rotary.sin", sin)
    q_width = config.num_heads * config.head_dim
    kv_width = config.num_kv_heads * config.head_dim
    eps = config.rms_norm_eps
    layer_output: str | None = None
    lengths = _scratch_lengths(graph)

    for layer in range(config.num_layers):
        prefix = f"layers.{layer}"

        def weight(tensor: str, layer: int = layer) -> np.ndarray:
            return read(layer_name(layer, tensor))

        norm_weight = graph.constant(
            f"{prefix}.input_norm.weight", weight("input_layernorm.weight")
        )
        if layer_output is None:
            normed = graph.node(
                "SimplifiedLayerNormalization",
                [residual, norm_weight],
                f"{prefix}/input_norm",
                epsilon=eps,
                axis=-1,
                stash_type=1,
            )[0]
        else:
            normed, residual = _skip_norm(
                graph, layer_output, residual, norm_weight, f"{prefix}/input_norm", eps
            )

        qkv_weight = np.concatenate(
            [weight(f"self_attn.{p}_proj.weight") for p in "qkv"], axis=0
        )  # [q + 2 kv, hidden]
        qkv_bias = np.concatenate([weight(f"self_attn.{p}_proj.bias") for p in "qkv"])
        qkv = graph.linear(normed, qkv_weight, qkv_bias, f"{prefix}/qkv")
        del qkv_weight
        qkv_rows = _with_scratch_row(graph, qkv, f"{prefix}/qkv")  # [B, S (+1), q + 2 kv]
        split = graph.data.add(f"{prefix}.qkv_split_sizes", np.array([q_width, kv_width, kv_width]))
        query, key, value = graph.node(
            "Split", [qkv_rows, split], f"{prefix}/qkv_split", 3, axis=-1
        )
        past_key, past_value = kv_input_names(layer)
        attention_rows = graph.node(
            "GroupQueryAttention",
            [query, key, value, past_key, past_value, *lengths, cos_name, sin_name],
            f"{prefix}/attention",
            outputs=[f"{prefix}/attention", *kv_output_names(layer)],
            domain="com.microsoft",
            num_heads=config.num_heads,
            kv_num_heads=config.num_kv_heads,
            do_rotary=1,
            rotary_interleaved=0,
        )[0]  # [B, S + 1, q_width]
        attention = graph.node(
            "Slice",
            [attention_rows, "scratch.first", "scratch.new_rows", "scratch.axis"],
            f"{prefix}/attention_rows",
        )[0]  # [B, S, q_width]
        attention_out = graph.linear(
            attention, weight("self_attn.o_proj.weight"), None, f"{prefix}/o_proj"
        )

        post_norm = graph.constant(
            f"{prefix}.post_norm.weight", weight("post_attention_layernorm.weight")
        )
        normed, residual = _skip_norm(
            graph, attention_out, residual, post_norm, f"{prefix}/post_norm", eps
        )
        gate_up_weight = np.concatenate(
            [weight("mlp.gate_proj.weight"), weight("mlp.up_proj.weight")], axis=0
        )  # [2 * intermediate, hidden]
        gate_up = graph.linear(normed, gate_up_weight, None, f"{prefix}/gate_up")
        del gate_up_weight
        gate, up = graph.node(
            "Split", [gate_up], f"{prefix}/gate_up_split", 2, axis=-1, num_outputs=2
        )
        sigmoid = graph.node("Sigmoid", [gate], f"{prefix}/sigmoid")[0]
        silu = graph.node("Mul", [gate, sigmoid], f"{prefix}/silu")[0]
        activated = graph.node("Mul", [silu, up], f"{prefix}/act")[0]
        layer_output = graph.linear(
            activated, weight("mlp.down_proj.weight"), None, f"{prefix}/down_proj"
        )
    assert layer_output is not None, "a model has at least one layer"
    return layer_output, residual


def _build_head(
    graph: GraphBuilder,
    config: ModelConfig,
    read: Callable[[str], np.ndarray],
    hidden: tuple[str, str],
) -> None:
    """Final norm, keep the last `logits_to_keep` positions, project to the vocabulary (fp32)."""
    layer_output, residual = hidden
    norm_weight = graph.constant("final_norm.weight", read("model.norm.weight"))
    normed = graph.node(
        "SkipSimplifiedLayerNormalization",
        [layer_output, residual, norm_weight],
        "final_norm",
        outputs=["final_norm"],
        domain="com.microsoft",
        epsilon=config.rms_norm_eps,
    )[0]
    start = graph.node("Neg", ["logits_to_keep"], "keep_start")[0]
    end = graph.data.add("keep_end", np.array([np.iinfo(np.int64).max]))
    axis = graph.data.add("keep_axis", np.array([1]))
    kept = graph.node("Slice", [normed, start, end, axis], "keep_last")[0]  # [B, keep, hidden]
    # Logits are fp32 at every precision: sampling compares them (fp16 would tie near-equals).
    single = np.dtype(np.float32)
    kept = graph.cast(kept, graph.dtype, single, "keep_last/cast")
    logits = graph.linear(kept, read("lm_head.weight"), None, "lm_head", dtype=single)
    graph.node("Identity", [logits], "logits", outputs=["logits"])
