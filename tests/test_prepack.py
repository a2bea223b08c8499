"""The per-CPU prepacked copy of a model (runtime/prepack.py), on the tiny converted model."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from runtime.config import ModelConfig
from runtime.generate import ModelRunner
from runtime.kv_cache import KVCache
from runtime.prepack import COPY_PREFIX, PARTIAL_PREFIX, copy_directory, machine_key
from runtime.session import SessionOptions, create_session

PROMPT = [11, 220, 5, 900, 31, 7, 7, 1000, 42]


@pytest.fixture
def model_dir(tiny_onnx: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny model's directory (the copy is written beside the model)."""
    return Path(shutil.copytree(tiny_onnx, tmp_path / "model"))


def greedy_logits(model_dir: Path, prepacked: bool) -> np.ndarray:
    """Logits of the prompt and of 4 one-token steps after it: [5, V]."""
    session = create_session(model_dir / "model.onnx", SessionOptions(prepacked=prepacked))
    runner = ModelRunner(session, ModelConfig.load(model_dir / "config.json"))
    cache = KVCache(runner.config, 64)
    rows = [runner.forward(cache, PROMPT)[0]]
    for _ in range(4):
        rows.append(runner.forward(cache, [int(np.argmax(rows[-1]))])[0])
    return np.stack(rows)


def test_the_first_load_writes_the_copy_and_later_loads_open_it_with_the_same_logits(
    model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reference = greedy_logits(model_dir, prepacked=False)
    assert not copy_directory(model_dir / "model.onnx").exists()
    with caplog.at_level(logging.INFO, logger="runtime.prepack"):
        writing = greedy_logits(model_dir, prepacked=True)
        copy = copy_directory(model_dir / "model.onnx")
        assert (copy / "model.onnx").is_file() and (copy / "prepacked.json").is_file()
        assert "writing a prepacked copy" in caplog.text
        caplog.clear()
        opened = greedy_logits(model_dir, prepacked=True)
        assert "opened prepacked copy" in caplog.text
    np.testing.assert_array_equal(writing, reference)
    np.testing.assert_array_equal(opened, reference)
    assert not list(model_dir.glob(f"{PARTIAL_PREFIX}*"))


def test_a_damaged_copy_is_written_again(model_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    reference = greedy_logits(model_dir, prepacked=True)
    copy = copy_directory(model_dir / "model.onnx")
    data = next(path for path in copy.iterdir() if path.name.endswith(".data"))
    data.write_bytes(data.read_bytes()[:100])  # a copy cut short by a full disk, say
    (model_dir / f"{PARTIAL_PREFIX}{copy.name}.123").mkdir()  # left by a crashed writer
    with caplog.at_level(logging.INFO, logger="runtime.prepack"):
        again = greedy_logits(model_dir, prepacked=True)
    assert "writing a prepacked copy" in caplog.text
    np.testing.assert_array_equal(again, reference)
    assert not list(model_dir.glob(f"{PARTIAL_PREFIX}*"))
    assert greedy_logits(model_dir, prepacked=True).shape == reference.shape


def test_where_the_copy_cannot_be_written_the_model_opens_as_usual(
    model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reference = greedy_logits(model_dir, prepacked=False)
    (model_dir / f".{COPY_PREFIX}lock").mkdir()  # the lock file cannot be opened
    with caplog.at_level(logging.INFO, logger="runtime.prepack"):
        logits = greedy_logits(model_dir, prepacked=True)
    assert "not writing a prepacked copy" in caplog.text
    np.testing.assert_array_equal(logits, reference)
    assert not copy_directory(model_dir / "model.onnx").exists()


def test_the_machine_key_names_the_cpu(tmp_path: Path) -> None:
    amx = tmp_path / "amx"
    amx.write_text("model name\t: Xeon\nflags\t\t: avx512f amx_int8\n" * 2)
    avx2 = tmp_path / "avx2"
    avx2.write_text("model name\t: Xeon\nflags\t\t: avx2\n")
    assert machine_key(amx) != machine_key(avx2)
    assert machine_key(amx) == machine_key(amx)
    assert len(machine_key(tmp_path / "missing")) == 12
