"""ONNX Runtime sessions: execution provider choice, threads, and the device KV buffers live on."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

logger = logging.getLogger(__name__)

PROVIDER_CHOICES = ("auto", "tensorrt", "cuda", "cpu")
_PROVIDER_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


class ProviderError(Exception):
    """The requested execution provider is not available in this onnxruntime build."""


@dataclass(frozen=True)
class SessionOptions:
    """How to run a model: `provider` is auto|tensorrt|cuda|cpu; threads 0 = one per core."""

    provider: str = "auto"
    threads: int = 0
    # Worker threads spin between the operators of a run, and by default for a while after it.
    # Right for one model; with a draft model the two sessions alternate every few ms and each
    # one's spinning threads steal the cores from the other (1.5B passes 1.6x slower between
    # 0.5B draft steps). False stops the spinning when a run ends (session.force_spinning_stop)
    # but keeps it within runs: turning spinning off altogether cost 10-17 % a step.
    spin_after_run: bool = True
    parallel_prepack: bool = True


def choose_providers(requested: str, available: list[str]) -> list[str]:
    """Providers in priority order; `auto` takes TensorRT, then CUDA, then the CPU."""
    if requested not in PROVIDER_CHOICES:
        raise ProviderError(f"provider {requested!r} is not one of {', '.join(PROVIDER_CHOICES)}")
    if requested == "auto":
        wanted = [_PROVIDER_NAMES[name] for name in ("tensorrt", "cuda")]
        chosen = [name for name in wanted if name in available]
    else:
        name = _PROVIDER_NAMES[requested]
        if name not in available:
            raise ProviderError(
                f"provider {requested!r} is not in this onnxruntime build "
                f"(available: {', '.join(available)}); on a GPU host install coder-lsp[gpu]"
            )
        chosen = [name] if requested != "cpu" else []
    # The CPU provider always comes last: it runs whatever the GPU providers do not take.
    return [*chosen, "CPUExecutionProvider"]


def device_of(providers: list[str]) -> str:
    """Where KV buffers should live for this provider list ('cuda' or 'cpu')."""
    return (
        "cuda" if providers[0] in ("TensorrtExecutionProvider", "CUDAExecutionProvider") else "cpu"
    )


def create_session(model_path: Path, options: SessionOptions) -> ort.InferenceSession:
    """Open `model_path` with the chosen providers; logs which provider won."""
    providers = choose_providers(options.provider, ort.get_available_providers())
    session_options = ort.SessionOptions()
    session_options.intra_op_num_threads = options.threads or (os.cpu_count() or 1)
    session_options.inter_op_num_threads = 1
    session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not options.spin_after_run:
        session_options.add_session_config_entry("session.force_spinning_stop", "1")
    # Opening a model repacks every weight into the layout its kernels read, on one thread by
    # default: 1.5-2.5 s of the 1.5B's w8a8 load here; on all threads 1.4-1.6 s, same numbers.
    # (Saving the packed weights to disk loaded faster still but decoded 20 % slower: the
    # weights are then file-backed pages.)
    if options.parallel_prepack:
        session_options.add_session_config_entry("session.prepack.enable_parallel", "1")
    session = ort.InferenceSession(str(model_path), session_options, providers=providers)
    logger.info(
        "loaded %s with providers %s (%d threads)",
        model_path.parent.name,
        session.get_providers(),
        session_options.intra_op_num_threads,
    )
    return session
