"""What bounds the runtime here: the machine's int8 and memory peaks against the ONNX Runtime
kernels that run every weight of our models (int4 `MatMulNBits`, w8a8 `MatMulInteger`).

    python -m bench.kernels [--rows 1,2,4,8,64,256] [--variants int4-32,int4-128,w8a8]
        [--threads 2] [--json F]

- **Machine**: two probes in C, compiled here with gcc (skipped without it): AVX-512 VNNI
  `vpdpbusd` throughput (64 int8 multiply-adds per instruction, ten independent chains per
  thread) and read bandwidth (each thread sums its share of a 1 GiB buffer, 10 passes).
- **Kernels**: a chain of 8 products shaped like the 1.5B's MLP up-projection (K = 1536,
  N = 8960), random weights, written by the converter's own `GraphBuilder.linear`: int4
  `MatMulNBits` (accuracy level 4) at each block size asked for, and w8a8 (`MatMulInteger` with
  activations quantized per row), timed at M rows: effective weight GB/s (what decoding needs)
  and GMAC/s (what prefill needs).

Markdown to stdout, progress to stderr. Run on an idle machine: the probes share the cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from runtime.convert import OPSET, ExternalDataWriter, GraphBuilder

logger = logging.getLogger("bench.kernels")

# The 1.5B's MLP up-projection; a chain of 8 (70 MB of int4 weights) outgrows the caches.
KERNEL_K, KERNEL_N, CHAIN = 1536, 8960, 8


@dataclass(frozen=True)
class Variant:
    """A weight format of the kernel chain: a converter precision and its block size."""

    precision: str
    block: int = 32

    @classmethod
    def parse(cls, text: str) -> Variant:
        """`w8a8`, or `int4-32` / `int4-128` (precision-block)."""
        precision, _, block = text.partition("-")
        return cls(precision, int(block) if block else 32)

    @property
    def label(self) -> str:
        """What the report calls it."""
        if self.precision == "w8a8":
            return "w8a8 (MatMulInteger u8 x s8, per-row activations)"
        return f"{self.precision} MatMulNBits, block {self.block}"

    def bytes_per_weight(self) -> float:
        """Bytes read per weight: packed values plus per-block fp32 scale and zero point, or
        int8 values plus one fp32 scale per output channel (negligible)."""
        if self.precision == "w8a8":
            return 1.0
        bits = 4 if self.precision == "int4" else 8
        return bits / 8 + (4 + bits / 8) / self.block


VNNI_PROBE = r"""
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#define STEPS 200000000L
#define D(r) "vpdpbusd %%zmm1, %%zmm0, %%zmm" #r "\n\t"
static void* run(void* unused) {
  for (long i = 0; i < STEPS; i++)  /* ten independent accumulators: throughput, not latency */
    __asm__ volatile(D(2) D(3) D(4) D(5) D(6) D(7) D(8) D(9) D(10) D(11)
      ::: "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11");
  return unused;
}
int main(int argc, char** argv) {
  int n = atoi(argv[1]); pthread_t t[64]; struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (int i = 0; i < n; i++) pthread_create(&t[i], NULL, run, NULL);
  for (int i = 0; i < n; i++) pthread_join(t[i], NULL);
  clock_gettime(CLOCK_MONOTONIC, &b);
  double s = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) * 1e-9;
  printf("%f\n", n * STEPS * 10 * 64.0 / s / 1e9);
  return 0;
}
"""

BANDWIDTH_PROBE = r"""
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#define BYTES (1L << 30)
static char* buffer; static int threads;
static void* run(void* arg) {
  long share = BYTES / threads; const char* base = buffer + (long)arg * share;
  __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
  for (int pass = 0; pass < 10; pass++)
    for (long i = 0; i < share; i += 256) {
      s0 = _mm512_add_epi64(s0, _mm512_load_si512(base + i));
      s1 = _mm512_add_epi64(s1, _mm512_load_si512(base + i + 64));
      s2 = _mm512_add_epi64(s2, _mm512_load_si512(base + i + 128));
      s3 = _mm512_add_epi64(s3, _mm512_load_si512(base + i + 192));
    }
  long sum = _mm512_reduce_add_epi64(_mm512_add_epi64(_mm512_add_epi64(s0, s1),
                                                      _mm512_add_epi64(s2, s3)));
  return (void*)sum;
}
int main(int argc, char** argv) {
  threads = atoi(argv[1]); pthread_t t[64]; struct timespec a, b;
  buffer = aligned_alloc(64, BYTES); memset(buffer, 1, BYTES);
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (long i = 0; i < threads; i++) pthread_create(&t[i], NULL, run, (void*)i);
  for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
  clock_gettime(CLOCK_MONOTONIC, &b);
  double s = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) * 1e-9;
  printf("%f\n", 10.0 * BYTES / s / 1e9);
  return 0;
}
"""


def run_probe(source: str, flags: list[str], threads: int, repeats: int) -> float | None:
    """Compile a C probe and run it `repeats` times with `threads`; the best figure it printed
    (None without gcc or when it cannot build or run here)."""
    compiler = shutil.which("gcc")
    if compiler is None:
        return None
    with tempfile.TemporaryDirectory() as scratch:
        program = Path(scratch) / "probe"
        source_file = Path(scratch) / "probe.c"
        source_file.write_text(source)
        build = [compiler, "-O2", *flags, "-pthread", str(source_file), "-o", str(program)]
        if subprocess.run(build, capture_output=True).returncode != 0:
            return None
        figures = []
        for _ in range(repeats):
            done = subprocess.run([str(program), str(threads)], capture_output=True, text=True)
            if done.returncode != 0:
                return None
            figures.append(float(done.stdout))
        return max(figures)


def kernel_session(variant: Variant, threads: int, scratch: Path) -> ort.InferenceSession:
    """A chain of CHAIN [M, K] x [K, N] products written by the converter's own `linear` at the
    variant's precision (each output sliced back to K), in a model under `scratch`."""
    rng = np.random.default_rng(0)
    data = ExternalDataWriter(scratch / "model.onnx.data")
    graph = GraphBuilder(data, variant.precision, variant.block)
    current = "x"
    for index in range(CHAIN):
        weight = rng.standard_normal((KERNEL_N, KERNEL_K)).astype(np.float32) * 0.02
        product = graph.linear(current, weight, None, f"chain{index}")
        bounds = [
            data.add(f"chain{index}.{role}", np.array([value], np.int64))
            for role, value in (("start", 0), ("end", KERNEL_K), ("axis", 1))
        ]
        current = graph.node("Slice", [product, *bounds], f"chain{index}/slice")[0]
    data.close()
    model = helper.make_model(
        helper.make_graph(
            graph.nodes,
            "kernels",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, KERNEL_K])],
            [helper.make_tensor_value_info(current, TensorProto.FLOAT, [None, KERNEL_K])],
            data.initializers,
        ),
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)],
        ir_version=10,
    )
    path = scratch / "model.onnx"
    onnx.save_model(model, str(path))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def time_kernel(session: ort.InferenceSession, rows: int, variant: Variant) -> dict[str, float]:
    """Median ms of one chain run at `rows` rows, with weight GB/s and GMAC/s."""
    inputs = {"x": np.random.default_rng(1).standard_normal((rows, KERNEL_K)).astype(np.float32)}
    for _ in range(3):
        session.run(None, inputs)
    samples = []
    for _ in range(max(5, 400 // rows)):
        started = time.perf_counter()
        session.run(None, inputs)
        samples.append(time.perf_counter() - started)
    seconds = float(np.median(samples))
    weights = CHAIN * KERNEL_N * KERNEL_K
    weight_bytes = weights * variant.bytes_per_weight()
    return {
        "ms": seconds * 1000,
        "weight_gb_s": weight_bytes / seconds / 1e9,
        "gmac_s": weights * rows / seconds / 1e9,
    }


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="1,2,4,8,64,256", help="comma list of M")
    parser.add_argument(
        "--variants", default="int4-32,int4-128,w8a8", help="comma list: int4-BLOCK, w8a8"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    rows = [int(value) for value in args.rows.split(",")]
    variants = [Variant.parse(value) for value in args.variants.split(",")]

    logger.info("machine probes")
    vnni = run_probe(VNNI_PROBE, ["-mavx512f", "-mavx512vnni"], args.threads, 3)
    bandwidth = run_probe(BANDWIDTH_PROBE, ["-mavx512f"], args.threads, 5)
    results: dict[str, Any] = {"vnni_gmac_s": vnni, "read_gb_s": bandwidth, "kernel": []}
    for variant in variants:
        with tempfile.TemporaryDirectory() as scratch:
            session = kernel_session(variant, args.threads, Path(scratch))
            for count in rows:
                measured = time_kernel(session, count, variant)
                logger.info("%s, M=%d: %.2f ms", variant.label, count, measured["ms"])
                results["kernel"].append({"variant": variant.label, "rows": count, **measured})

    print(f"Machine, {args.threads} threads (best of the probe's runs):\n")
    print("| probe | figure |\n|---|--:|")
    print(f"| int8 multiply-adds, AVX-512 VNNI | {_figure(vnni, 'GMAC/s')} |")
    print(f"| memory read | {_figure(bandwidth, 'GB/s')} |")
    print(
        f"\n{CHAIN} x [M, {KERNEL_K}] x [{KERNEL_K}, {KERNEL_N}] as the converter writes it, "
        f"{args.threads} threads, median:\n"
    )
    print("| weights | M rows | ms | weight GB/s | GMAC/s | share of the VNNI peak |")
    print("|---|--:|--:|--:|--:|--:|")
    for row in results["kernel"]:
        share = "-" if not vnni else f"{100 * row['gmac_s'] / vnni:.0f} %"
        print(
            f"| {row['variant']} | {row['rows']} | {row['ms']:.2f} | {row['weight_gb_s']:.1f} "
            f"| {row['gmac_s']:.0f} | {share} |"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


def _figure(value: float | None, unit: str) -> str:
    return "not measured (no gcc, or no AVX-512 here)" if value is None else f"{value:.0f} {unit}"


if __name__ == "__main__":
    sys.exit(main())
