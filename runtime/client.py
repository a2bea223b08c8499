"""A remote engine: the `Engine` protocol over an OpenAI-compatible completions server.

Our own `coder-lsp serve`, vLLM or llama.cpp's server. Prompts are built and counted locally with
the model's own tokenizer (read from its GGUF or its converted directory, no weights loaded), then
sent as token ids; a server that takes only text (llama-cpp-python) gets the decoded prompt,
whose special tokens it parses back (the first refusal of ids switches this engine to text).

Generation streams (server-sent events). Stop strings and the pipeline's stop rule (a Python
function) are applied here, on the streamed text; when one fires, or the caller cancels, the
stream is closed, which is how the server learns to stop (ours cancels within one decode step).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from runtime import models
from runtime.engine import TokenizingEngine
from runtime.generate import (
    CancellationToken,
    GenerationConfig,
    GenerationResult,
    StopChecker,
)
from runtime.tokenizer import QwenTokenizer

logger = logging.getLogger(__name__)

_FINISHED = object()


class RemoteError(Exception):
    """The server refused the request or could not be reached."""


@dataclass(frozen=True)
class RemoteOptions:
    """Where the server is and how to talk to it."""

    url: str  # base URL, e.g. http://gpu-host:8080 (with or without /v1)
    token: str | None = None
    model: str | None = None  # the name sent in requests (default: the server's first model)
    connect_timeout_s: float = 5.0
    verify_tls: bool | str = True  # or a CA bundle path
    prompt_as_text: bool | None = None  # None: ids first, text if the server refuses ids


def load_tokenizer(name: str) -> QwenTokenizer:
    """The tokenizer of model `name` without its weights: a converted directory's
    tokenizer.json if one is cached, else the GGUF's metadata (embedded models are assembled
    from their packages), else a Hugging Face directory's tokenizer.json."""
    path = Path(name).expanduser()
    if path.is_file():
        return QwenTokenizer.from_gguf(path)
    if path.is_dir():
        return QwenTokenizer.from_hf_dir(path)
    for status in models.list_models():
        if status.name == name and status.prepared:
            return QwenTokenizer.load(status.prepared[0].directory)
    return QwenTokenizer.from_gguf(models.assemble(name, progress=False))


class RemoteEngine(TokenizingEngine):
    """`Engine` for a remote OpenAI-compatible server; thread-safe, requests run concurrently."""

    def __init__(self, options: RemoteOptions, tokenizer: QwenTokenizer) -> None:
        self.options = options
        self.tokenizer = tokenizer
        base = options.url.rstrip("/")
        self.base = base if base.endswith("/v1") else base + "/v1"
        self.prompt_as_text = options.prompt_as_text
        self._model = options.model
        self._repo_name = tokenizer.token_id("<|repo_name|>")
        self._file_sep = tokenizer.token_id("<|file_sep|>")
        # One event loop thread for all requests: asyncio cancellation closes a stream cleanly.
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        headers = {"Authorization": f"Bearer {options.token}"} if options.token else {}
        timeout = httpx.Timeout(None, connect=options.connect_timeout_s)
        self._client = asyncio.run_coroutine_threadsafe(
            self._make_client(headers, timeout), self._loop
        ).result()

    async def _make_client(self, headers: dict[str, str], timeout: httpx.Timeout) -> Any:
        return httpx.AsyncClient(headers=headers, timeout=timeout, verify=self.options.verify_tls)

    @classmethod
    def connect(cls, options: RemoteOptions, tokenizer_model: str) -> RemoteEngine:
        """An engine for `options`, with the tokenizer of `tokenizer_model`; checks the server
        answers /v1/models with this token (raises RemoteError otherwise)."""
        engine = cls(options, load_tokenizer(tokenizer_model))
        engine.model_name()
        return engine

    def close(self) -> None:
        """Close connections and stop the event loop thread."""
        asyncio.run_coroutine_threadsafe(self._client.aclose(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    # ------------------------------------------------------------------ Engine protocol

    def prefill_ms(self, prompt: Sequence[int], small_model: bool = False) -> float | None:
        """Unknown here: the server's caches are its own (and shared with other users)."""
        return None

    def prefill(self, prompt: Sequence[int], cancel: CancellationToken | None = None) -> int:
        """Nothing: the server's cache is shared with other users, so it is not warmed."""
        return 0

    def complete(
        self,
        prompt: Sequence[int],
        config: GenerationConfig,
        cancel: CancellationToken | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> GenerationResult:
        """Generate remotely; stop rules, the deadline and cancellation close the stream."""
        if not prompt:
            raise ValueError("empty prompt")
        started = time.monotonic()
        deadline = None if config.timeout_s is None else started + config.timeout_s
        pieces: queue.Queue[Any] = queue.Queue()
        body = self._body(list(prompt), config)  # before the loop: it may ask for the model
        future = asyncio.run_coroutine_threadsafe(self._stream(body, pieces), self._loop)
        future.add_done_callback(lambda _: pieces.put(_FINISHED))
        stops = StopChecker(self.tokenizer, config)
        text, emitted, reason = "", 0, None
        first_piece: float | None = None
        while True:
            try:
                item = pieces.get(timeout=0.02)
            except queue.Empty:
                item = None
            if item is _FINISHED:
                break
            if isinstance(item, str):
                first_piece = first_piece or time.monotonic()
                text += item
                cut = stops.cut(text)
                if cut is not None:
                    text, reason = text[:cut], "stop_string"
            if reason is None and cancel is not None and cancel.cancelled:
                reason = "cancelled"
            if reason is None and deadline is not None and time.monotonic() > deadline:
                reason = "deadline"
            if reason is not None:
                future.cancel()  # closes the stream: the server stops generating
                break
            if on_text is not None:
                settled = stops.settled(text)
                if settled > emitted:
                    on_text(text[emitted:settled])
                    emitted = settled
        summary: dict[str, Any] = {}
        if reason is None:
            summary = future.result()  # raises RemoteError on a failed request
            reason = summary.get("finish_reason", "stop")
        if on_text is not None and len(text) > emitted:
            on_text(text[emitted:])
        ids = self.tokenizer.encode(text)
        now = time.monotonic()
        first = first_piece or now
        result = GenerationResult(
            ids,
            text,
            reason,
            summary.get("prompt_tokens", len(prompt)),
            summary.get("cached_tokens", 0),
            prefill_ms=summary.get("prefill_ms", (first - started) * 1e3),
            decode_ms=summary.get("decode_ms", (now - first) * 1e3),
        )
        logger.info(
            "remote: %d prompt tokens, %d generated (%s) in %.0f ms",
            result.prompt_tokens,
            result.generated_tokens,
            reason,
            (now - started) * 1e3,
        )
        return result

    # ------------------------------------------------------------------ HTTP

    def model_name(self) -> str:
        """The model name to send: the configured one, else the server's first."""
        if self._model is None:
            body = asyncio.run_coroutine_threadsafe(self._get("/models"), self._loop).result()
            try:
                self._model = str(body["data"][0]["id"])
            except (KeyError, IndexError, TypeError) as error:
                raise RemoteError(f"{self.base}/models: unexpected answer") from error
        return self._model

    async def _get(self, path: str) -> Any:
        try:
            response = await self._client.get(self.base + path)
        except httpx.HTTPError as error:
            raise RemoteError(f"{self.base}{path}: {error}") from error
        if response.status_code != 200:
            raise RemoteError(f"{self.base}{path}: HTTP {response.status_code} {response.text}")
        return response.json()

    def _body(self, prompt: list[int], config: GenerationConfig) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model_name(),
            "prompt": prompt,
            "max_tokens": config.max_new_tokens,
            "temperature": config.temperature,
            "top_p": config.top_p,
            "stream": True,
            "repository": self._repository_key(prompt),
        }
        if config.stop_strings:
            body["stop"] = list(config.stop_strings[:4])
        if config.seed is not None:
            body["seed"] = config.seed
        return body

    def _repository_key(self, prompt: Sequence[int]) -> str:
        """A hash of the repository name opening a repository prompt ("" for in-file prompts):
        our server keeps a KV slot per (user, repository); other servers ignore the field."""
        if not prompt or prompt[0] != self._repo_name:
            return ""
        head = list(prompt[:64])
        end = head.index(self._file_sep) if self._file_sep in head else len(head)
        return hashlib.sha256(json.dumps(head[:end]).encode()).hexdigest()[:16]

    async def _stream(self, body: dict[str, Any], pieces: queue.Queue[Any]) -> dict[str, Any]:
        """POST a streamed completion; text pieces go to `pieces`; returns the usage summary."""
        ids = body["prompt"]
        as_text = bool(self.prompt_as_text)
        while True:
            if as_text:
                body = {**body, "prompt": self.tokenizer.decode(ids)}
            try:
                async with self._client.stream(
                    "POST", self.base + "/completions", json=body
                ) as response:
                    # Refusals of an id prompt: 400/422, or llama-cpp-python's 500 validation
                    # error. Retried once with text; a second refusal is a real error.
                    refused = response.status_code in (400, 422, 500)
                    if refused and not as_text and self.prompt_as_text is None:
                        await response.aread()
                        logger.info(
                            "server refused token ids (%d): sending text", response.status_code
                        )
                        self.prompt_as_text = as_text = True
                        continue
                    if response.status_code != 200:
                        detail = (await response.aread()).decode(errors="replace")
                        raise RemoteError(f"HTTP {response.status_code}: {detail[:500]}")
                    return await self._read_events(response, pieces)
            except httpx.HTTPError as error:
                raise RemoteError(f"{self.base}/completions: {error}") from error

    @staticmethod
    async def _read_events(response: httpx.Response, pieces: queue.Queue[Any]) -> dict[str, Any]:
        summary: dict[str, Any] = {}
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            for choice in chunk.get("choices") or []:
                if choice.get("text"):
                    pieces.put(choice["text"])
                if choice.get("finish_reason"):
                    summary["finish_reason"] = choice["finish_reason"]
            usage = chunk.get("usage") or {}
            if "prompt_tokens" in usage:
                summary["prompt_tokens"] = usage["prompt_tokens"]
            summary.update(chunk.get("coder_lsp") or {})
        return summary
