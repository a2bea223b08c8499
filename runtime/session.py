"""ONNX Runtime sessions: execution provider choice, threads, and the device KV buffers live on."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import onnxruntime as ort

from runtime.config import ModelConfig
from runtime.convert import kv_input_names
from runtime.generate import PREFILL_CHUNK

logger = logging.getLogger(__name__)

Provider = Literal["auto", "tensorrt", "cuda", "cpu"]
PROVIDER_CHOICES: tuple[Provider, ...] = get_args(Provider)
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
    # False: the CPU provider is left out and ONNX Runtime's session.disable_cpu_ep_fallback
    # set, so opening fails, naming the nodes, if any node would need the CPU provider.
    cpu_fallback: bool = True
    # TensorRT builds one engine per shape profile: from one token to `max_batch` sequences of
    # `max_rows` new tokens (a prefill chunk) over a KV buffer of `context_window` + 1 positions.
    context_window: int = 4096
    max_batch: int = 1
    max_rows: int = PREFILL_CHUNK


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
            raise ProviderError(_missing(requested, available))
        chosen = [name] if requested != "cpu" else []
        if requested == "tensorrt" and _PROVIDER_NAMES["cuda"] in available:
            # TensorRT takes standard ONNX operators only: GroupQueryAttention and MatMulNBits
            # (com.microsoft) are left to the CUDA provider rather than to the CPU.
            chosen.append(_PROVIDER_NAMES["cuda"])
    # The CPU provider always comes last: it runs whatever the GPU providers do not take.
    return [*chosen, "CPUExecutionProvider"]


def _missing(requested: str, available: list[str]) -> str:
    return (
        f"provider {requested!r} is not in this onnxruntime build "
        f"(available: {', '.join(available)}); on a GPU host install coder-lsp[gpu]"
    )


def device_of(providers: list[str]) -> str:
    """Where KV buffers should live for this provider list ('cuda' or 'cpu')."""
    return (
        "cuda" if providers[0] in ("TensorrtExecutionProvider", "CUDAExecutionProvider") else "cpu"
    )


def _kv_shapes(config: ModelConfig, batch: int, rows: int, window: int) -> str:
    """A TensorRT shape list: input_ids [batch, rows] and every KV input
    [batch, kv_heads, window + 1, head_dim] (the cache's positions and its scratch row)."""
    kv = f"{batch}x{config.num_kv_heads}x{window + 1}x{config.head_dim}"
    names = [name for layer in range(config.num_layers) for name in kv_input_names(layer)]
    return ",".join([f"input_ids:{batch}x{rows}", *(f"{name}:{kv}" for name in names)])


def tensorrt_options(model_dir: Path, options: SessionOptions) -> dict[str, str]:
    """TensorRT provider options for the model in `model_dir`: fp16 kernels for an fp16 graph,
    engines and timing cached in `model_dir`/tensorrt (built once per shape profile, then
    loaded), and one profile from a one-token step (min, opt: decoding is the hot path) to
    `max_batch` sequences of a `max_rows`-token prefill chunk (max)."""
    config = ModelConfig.load(model_dir / "config.json")
    engines = str(model_dir / "tensorrt")
    window = options.context_window
    return {
        "trt_fp16_enable": str(config.activation_dtype == "float16"),
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": engines,
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": engines,
        "trt_profile_min_shapes": _kv_shapes(config, 1, 1, window),
        "trt_profile_opt_shapes": _kv_shapes(config, 1, 1, window),
        "trt_profile_max_shapes": _kv_shapes(config, options.max_batch, options.max_rows, window),
    }


def create_session(model_path: Path, options: SessionOptions) -> ort.InferenceSession:
    """Open `model_path` with the chosen providers; logs which provider won."""
    providers = choose_providers(options.provider, ort.get_available_providers())
    if not options.cpu_fallback:
        # ONNX Runtime refuses the CPU provider in the list when fallback to it is disabled.
        providers = [name for name in providers if name != _PROVIDER_NAMES["cpu"]]
        if not providers:
            raise ProviderError(
                "no GPU provider in this onnxruntime build "
                f"(available: {', '.join(ort.get_available_providers())}): "
                "without CPU fallback nothing could run"
            )
    provider_options: list[dict[str, Any]] = [
        tensorrt_options(model_path.parent, options) if name == _PROVIDER_NAMES["tensorrt"] else {}
        for name in providers
    ]
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
    if not options.cpu_fallback:
        session_options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    session = ort.InferenceSession(
        str(model_path), session_options, providers=providers, provider_options=provider_options
    )
    logger.info(
        "loaded %s with providers %s (%d threads)",
        model_path.parent.name,
        session.get_providers(),
        session_options.intra_op_num_threads,
    )
    return session
