"""A per-CPU copy of a prepared model that holds ONNX Runtime's prepacked weights.

Opening a model, ONNX Runtime repacks every constant weight into the layout its CPU kernels
read (for `w8a8` the integer GEMM's tiles): 1.5-2.5 s of the 1.5B's load on the project's
machine, every time. The packed layout depends on the CPU and on the ONNX Runtime build, so the
first load on a machine saves the optimized graph with its packed weights
(`session.save_external_prepacked_constant_initializers`) into `prepacked-<machine key>/` beside
the model, and later loads open that copy without packing anything (1.4 s instead of 2.2-3.0 s
for the 1.5B; the logits are bit for bit the same). The copy costs disk: it holds the original
weights and the packed ones (3.6 GB for the 1.5B at `w8a8`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import platform
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import onnxruntime as ort

logger = logging.getLogger(__name__)

COPY_PREFIX = "prepacked-"
PARTIAL_PREFIX = ".partial-prepacked-"
SIZES_NAME = "prepacked.json"
DATA_SUFFIX = ".data"


def machine_key(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """12 hex digits naming this CPU (model and instruction set) and this ONNX Runtime build."""
    lines: list[str] = []
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            field = line.split(":", 1)[0].strip()
            if field in ("model name", "flags", "Features", "CPU part") and line not in lines:
                lines.append(line)
    except OSError:
        lines.append(platform.processor())
    lines += [platform.machine(), ort.__version__, ort.get_device()]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:12]


def copy_directory(model_path: Path) -> Path:
    """Where the prepacked copy of `model_path` for this machine lives."""
    return model_path.parent / f"{COPY_PREFIX}{machine_key()}"


OptionsFactory = Callable[[], ort.SessionOptions]


def open_prepacked(model_path: Path, make_options: OptionsFactory) -> ort.InferenceSession:
    """A CPU session of `model_path`, from its prepacked copy; the first call writes the copy.

    `make_options` gives fresh session options (threads, spinning) each time one is needed.
    Where the copy cannot be written (a read-only cache, a full disk, another process writing
    it right now) the model opens as usual and nothing is lost but the time.
    """
    directory = copy_directory(model_path)
    copy = directory / model_path.name
    if _complete(directory):
        started = time.monotonic()
        options = make_options()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:
            session = _cpu_session(copy, options)
        except Exception as exc:  # ONNX Runtime raises its own error types for bad files
            logger.warning("prepacked copy %s does not load (%s); writing it again", copy, exc)
        else:
            logger.info("opened prepacked copy %s in %.2f s", copy, time.monotonic() - started)
            return session
    return _write_copy(model_path, directory, make_options)


def _cpu_session(path: Path, options: ort.SessionOptions) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _complete(directory: Path) -> bool:
    """Whether `directory` holds a copy whose files have the sizes recorded after writing it."""
    try:
        sizes = json.loads((directory / SIZES_NAME).read_text())
        return isinstance(sizes, dict) and all(
            (directory / name).stat().st_size == size for name, size in sizes.items()
        )
    except (OSError, ValueError, TypeError, AttributeError):
        return False


def _write_copy(
    model_path: Path, directory: Path, make_options: OptionsFactory
) -> ort.InferenceSession:
    """Open `model_path` while saving its optimized, prepacked graph; publish it atomically."""
    try:
        lock = os.open(model_path.parent / f".{COPY_PREFIX}lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        logger.info("not writing a prepacked copy beside %s: %s", model_path, exc)
        return _cpu_session(model_path, make_options())
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another process is writing it: do not wait for it
            return _cpu_session(model_path, make_options())
        for stale in model_path.parent.glob(f"{PARTIAL_PREFIX}*"):  # left by a crash: we hold
            shutil.rmtree(stale, ignore_errors=True)  # the lock, so nobody is writing them
        partial = model_path.parent / f"{PARTIAL_PREFIX}{directory.name}.{os.getpid()}"
        try:
            partial.mkdir()
            session = _save_session(model_path, partial / model_path.name, make_options())
            sizes = {path.name: path.stat().st_size for path in partial.iterdir()}
            (partial / SIZES_NAME).write_text(json.dumps(sizes, indent=2) + "\n")
            shutil.rmtree(directory, ignore_errors=True)  # an incomplete or damaged earlier copy
            os.replace(partial, directory)
        except Exception as exc:  # OSError, or ONNX Runtime failing to write the copy
            logger.warning("could not write the prepacked copy %s: %s", directory, exc)
            return _cpu_session(model_path, make_options())
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        logger.info("wrote %s", directory)
        return session
    finally:
        os.close(lock)


def _save_session(
    model_path: Path, copy: Path, options: ort.SessionOptions
) -> ort.InferenceSession:
    """A session of `model_path` that writes its optimized graph and packed weights to `copy`."""
    started = time.monotonic()
    logger.info("writing a prepacked copy of %s for this CPU (once per machine)", model_path)
    options.optimized_model_filepath = str(copy)
    for key, value in (
        ("session.save_external_prepacked_constant_initializers", "1"),
        ("session.optimized_model_external_initializers_file_name", copy.name + DATA_SUFFIX),
        ("session.optimized_model_external_initializers_min_size_in_bytes", "1024"),
    ):
        options.add_session_config_entry(key, value)
    session = _cpu_session(model_path, options)
    logger.info("packed and saved in %.1f s", time.monotonic() - started)
    return session
