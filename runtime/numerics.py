"""Whether a token's numbers depend on how many other tokens share its forward pass.

Greedy speculative decoding is only token-identical to plain decoding if a decode step (one
row) scores a token bit for bit as a verify pass (k + 1 rows) does, and prefix reuse only
matches a fresh run if chunking does not matter. The converter's graph takes care of attention
(it always runs at least two rows, `runtime.convert`); whether the matrix products agree is a
property of the ONNX Runtime build and the CPU: on the Intel machine of 2026-12-04 MatMulNBits
(int4, blocks of 32) and the w8a8 integer GEMM do, int4 with blocks of 64 or more does not
(a one-row kernel that sums in another order). So ask the kernels once per process, with a
product shaped like the models' own, and pad one-row passes to two rows only where they differ.
"""

from __future__ import annotations

import functools
import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from runtime.convert import OPSET, ExternalDataWriter, GraphBuilder

logger = logging.getLogger(__name__)

# Shaped like a Qwen2.5 attention projection: K a multiple of every block size we write.
PROBE_K, PROBE_N, PROBE_ROWS = 1536, 512, 3


def _probe_model(precision: str, directory: Path) -> Path:
    """One `GraphBuilder.linear` of random weights at `precision`: x [M, K] -> y [M, N]."""
    weight = np.random.default_rng(7).standard_normal((PROBE_N, PROBE_K)).astype(np.float32)
    data = ExternalDataWriter(directory / "probe.onnx.data")
    graph = GraphBuilder(data, precision)
    try:
        product = graph.linear("x", weight * 0.02, None, "probe")
        graph.node("Identity", [product], "y", outputs=["y"])
    finally:
        data.close()
    model = helper.make_model(
        helper.make_graph(
            graph.nodes,
            "probe",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", PROBE_K])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", PROBE_N])],
            data.initializers,
        ),
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)],
    )
    path = directory / "probe.onnx"
    onnx.save_model(model, str(path))
    return path


@functools.cache
def rows_are_independent(precision: str, providers: tuple[str, ...], threads: int) -> bool:
    """True when `precision`'s matrix products give a row the same numbers alone as in a pass
    of several rows, on these providers and thread count (cached for the process)."""
    with tempfile.TemporaryDirectory(prefix="coder-lsp-probe-") as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(
            str(_probe_model(precision, Path(tmp))), options, providers=list(providers)
        )
        rows = np.random.default_rng(8).standard_normal((PROBE_ROWS, PROBE_K)).astype(np.float32)
        together = session.run(None, {"x": rows})[0]  # [rows, N]
        alone = np.concatenate(
            [session.run(None, {"x": rows[i : i + 1]})[0] for i in range(len(rows))]
        )
    independent = bool(np.array_equal(together, alone))
    logger.info(
        "%s products on %s: one row %s a row among several",
        precision,
        providers[0],
        "scores exactly as" if independent else "rounds differently from",
    )
    return independent


def exact_min_rows(session: ort.InferenceSession, precision: str) -> int:
    """Rows a pass of `session` needs so that every pass scores a token alike: 1 where the
    kernels are row-independent, else 2 (one-row passes padded, `ModelRunner.min_rows`)."""
    threads = session.get_session_options().intra_op_num_threads
    return 1 if rows_are_independent(precision, tuple(session.get_providers()), threads) else 2
