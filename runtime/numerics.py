"""Whether a token's numbers depend on how many other tokens share its forward pass.

Greedy speculative decoding is only token-identical to plain decoding if a decode step (one
row) scores a token bit for bit as a verify pass (k + 1 rows) does, and prefix reuse only
matches a fresh run if chunking does not matter. The converter's graph takes care of attention
(it always runs at least two rows, `runtime.convert`); whether the matrix products agree is a
property of the ONNX Runtime build and the CPU (measured ones: bench/RESULTS.md; on some CPUs
int4 with blocks of 64 or more sums one row in another order). So the kernels are asked, once
per model and process, through the small product the converter writes beside each model, and
one-row passes are padded to two rows only where a lone row rounds differently.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from runtime.config import NUMERICS_PROBE, PROBE_K

logger = logging.getLogger(__name__)

PROBE_ROWS = 3
_INPUT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


@functools.cache
def rows_are_independent(probe: Path, providers: tuple[str, ...], threads: int) -> bool:
    """True when the product in `probe` gives each row the same numbers alone as in one pass
    of several rows, on these providers and thread count (cached for the process)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(probe), options, providers=list(providers))
    dtype = _INPUT_DTYPES[session.get_inputs()[0].type]  # the probe's precision's activations
    rows = np.random.default_rng(8).standard_normal((PROBE_ROWS, PROBE_K)).astype(dtype)
    together = session.run(None, {"x": rows})[0]  # [rows, N]
    alone = [session.run(None, {"x": rows[i : i + 1]})[0] for i in range(PROBE_ROWS)]
    independent = bool(np.array_equal(together, np.concatenate(alone)))
    logger.info(
        "%s on %s: a lone row %s a row among several",
        probe.parent.name,
        providers[0],
        "scores exactly as" if independent else "rounds differently from",
    )
    return independent


def exact_min_rows(session: ort.InferenceSession, model_dir: Path) -> int:
    """Rows a pass of `session` (the model in `model_dir`) needs so that every pass scores a
    token alike: 1 where its kernels are row-independent, else 2 (`ModelRunner.min_rows`).
    A model converted without the probe is padded: exactness is never assumed."""
    probe = model_dir / NUMERICS_PROBE
    if not probe.is_file():
        logger.warning("%s has no %s: one-row passes padded to two rows", model_dir, probe.name)
        return 2
    threads = session.get_session_options().intra_op_num_threads
    return 1 if rows_are_independent(probe, tuple(session.get_providers()), threads) else 2
