"""`coder-lsp serve`: one model shared by a team over an OpenAI-compatible HTTP API.

Routes: POST /v1/completions (prompt as text or token ids, `stream: true` as server-sent
events), POST /v1/chat/completions (ChatML), GET /v1/models, GET /health, GET /metrics
(Prometheus). Once the configuration holds a token, every route but /health needs
`Authorization: Bearer <token>`. Errors are JSON: {"error": {"message", "type", "code"}}.

Order of checks: 401 (token), 429 (the user's request rate), 413 (body size), 422 (body shape,
prompt longer than the window, max_tokens over the limit), 429 (the user's requests in flight,
queue full). No prompt or completion text is ever logged; a request logs its user, token counts
and timings.

Extensions to the OpenAI request body: `document` (a newer request of the same user and document
cancels the older one) and `repository` (selects the user's KV slot). The response carries
`coder_lsp`: {finish_reason, cached_tokens, prefill_ms, decode_ms} beside `usage`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import re
import secrets
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from runtime.chatml import chat_segments
from runtime.generate import GenerationConfig, GenerationResult
from runtime.scheduler import Job, Rejected, Scheduler
from runtime.server_config import Authenticator, Limits, ServerConfig
from runtime.tokenizer import QwenTokenizer

logger = logging.getLogger(__name__)

LOCAL_USER = "local"  # who is asking when the configuration holds no token
_SPECIAL = re.compile(r"<\|[A-Za-z0-9_]{1,32}\|>")
QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


class ApiError(Exception):
    """An HTTP error with an OpenAI-style JSON body."""

    def __init__(self, status: int, message: str, kind: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        """The JSON response for this error."""
        body = {"error": {"message": self.message, "type": self.kind, "code": self.status}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


# ------------------------------------------------------------------------------ request bodies


class _Body(BaseModel):
    """Sampling fields common to both endpoints; unknown OpenAI fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    max_tokens: int = Field(16, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    stream: bool = False
    seed: int | None = None
    n: Literal[1] = 1
    document: str | None = Field(None, max_length=512)
    repository: str | None = Field(None, max_length=512)

    def generation_config(self) -> GenerationConfig:
        """The engine's settings for this request."""
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return GenerationConfig(
            max_new_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop_strings=tuple(stops[:4]),
            seed=self.seed,
        )


class CompletionBody(_Body):
    """POST /v1/completions."""

    prompt: str | list[int] | list[str] | list[list[int]]
    suffix: str | None = None
    echo: Literal[False] = False
    logprobs: None = None


class ChatMessage(BaseModel):
    """One ChatML turn."""

    role: Literal["system", "user", "assistant"]
    content: str


class ChatBody(_Body):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


# ------------------------------------------------------------------------------ prompts


def encode_text_prompt(tokenizer: QwenTokenizer, text: str) -> list[int]:
    """Ids of a text prompt in which `<|...|>` special tokens are recognised (as llama.cpp's and
    vLLM's servers do), so FIM prompts sent as text work; other text is plain."""
    segments: list[tuple[str, bool]] = []
    position = 0
    for match in _SPECIAL.finditer(text):
        try:
            tokenizer.token_id(match.group())
        except KeyError:
            continue
        segments += [(text[position : match.start()], False), (match.group(), True)]
        position = match.end()
    segments.append((text[position:], False))
    return tokenizer.encode_segments([(t, s) for t, s in segments if s or t])


def completion_prompt(tokenizer: QwenTokenizer, body: CompletionBody) -> list[int]:
    """Token ids of a completion request: ids as given, text with specials, or FIM with a suffix."""
    prompt: Any = body.prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str | list):
        if len(prompt) != 1:
            raise ApiError(422, "only one prompt per request is supported", "invalid_request_error")
        prompt = prompt[0]
    if body.suffix is not None:
        if not isinstance(prompt, str):
            raise ApiError(422, "suffix needs a text prompt", "invalid_request_error")
        return tokenizer.encode_segments(
            [
                ("<|fim_prefix|>", True),
                (prompt, False),
                ("<|fim_suffix|>", True),
                (body.suffix, False),
                ("<|fim_middle|>", True),
            ]
        )
    if isinstance(prompt, str):
        return encode_text_prompt(tokenizer, prompt)
    vocab = tokenizer.vocab_size
    if not all(isinstance(i, int) and 0 <= i < vocab for i in prompt):
        raise ApiError(
            422, f"token ids must be integers in 0..{vocab - 1}", "invalid_request_error"
        )
    return list(prompt)


def chat_prompt(tokenizer: QwenTokenizer, messages: list[ChatMessage]) -> list[int]:
    """ChatML ids (Qwen's template, its default system turn included); message text is plain."""
    turns = list(messages)
    if turns[0].role != "system":
        turns.insert(0, ChatMessage(role="system", content=QWEN_SYSTEM))
    segments = chat_segments([(turn.role, turn.content) for turn in turns])
    return tokenizer.encode_segments(segments)


# ------------------------------------------------------------------------------ limits, metrics


class RateLimiter:
    """Requests per user in a sliding minute."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._seen: dict[str, deque[float]] = {}

    def check(self, user: str) -> None:
        """Count one request of `user`; raises ApiError(429) past the limit."""
        now = time.monotonic()
        seen = self._seen.setdefault(user, deque())
        while seen and seen[0] <= now - 60:
            seen.popleft()
        if len(seen) >= self.per_minute:
            retry = max(1, int(seen[0] + 60 - now) + 1)
            raise ApiError(
                429,
                f"rate limit of {self.per_minute} requests per minute reached",
                "rate_limit_error",
                {"Retry-After": str(retry)},
            )
        seen.append(now)


class _SchedulerCollector:
    """Scheduler state read at scrape time."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    def collect(self) -> Any:
        """Gauges and counters of the queue, the batch and the KV slots."""
        scheduler = self.scheduler
        yield GaugeMetricFamily("coderlsp_queue_depth", "Jobs waiting", scheduler.queue_depth)
        yield GaugeMetricFamily("coderlsp_active_generations", "Jobs running", scheduler.active)
        yield GaugeMetricFamily(
            "coderlsp_kv_slots", "KV slots in the pool", len(scheduler.pool.slots)
        )
        stats = {**scheduler.stats, **scheduler.pool.stats}
        for name, value in sorted(stats.items()):
            yield CounterMetricFamily(f"coderlsp_scheduler_{name}", f"Scheduler: {name}", value)


class Metrics:
    """Prometheus metrics of one server (its own registry)."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Histogram(
            "coderlsp_request_duration_seconds",
            "Request latency",
            ["route", "status"],
            registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32),
        )
        self.ttft = Histogram(
            "coderlsp_time_to_first_token_seconds",
            "From queueing to the first generated token",
            registry=r,
            buckets=(0.02, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8),
        )
        self.queue_wait = Histogram(
            "coderlsp_queue_wait_seconds", "Time queued before starting", registry=r
        )
        self.decode_rate = Histogram(
            "coderlsp_decode_tokens_per_second",
            "Decode speed per request",
            registry=r,
            buckets=(5, 10, 20, 40, 80, 160, 320),
        )
        self.prompt_tokens = Counter("coderlsp_prompt_tokens", "Prompt tokens", registry=r)
        self.cached_tokens = Counter(
            "coderlsp_cached_prompt_tokens", "Prompt tokens found in the KV cache", registry=r
        )
        self.generated_tokens = Counter("coderlsp_generated_tokens", "Generated tokens", registry=r)
        self.generations = Counter(
            "coderlsp_generations", "Finished generations by reason", ["reason"], registry=r
        )
        self.cancellations = Counter(
            "coderlsp_cancellations", "Cancelled generations by cause", ["cause"], registry=r
        )
        self.rejections = Counter(
            "coderlsp_rejected_requests", "Refused requests by status", ["status"], registry=r
        )
        self.draft_proposed = Counter(
            "coderlsp_draft_proposed_tokens", "Speculative draft tokens proposed", registry=r
        )
        self.draft_accepted = Counter(
            "coderlsp_draft_accepted_tokens", "Speculative draft tokens accepted", registry=r
        )
        r.register(_SchedulerCollector(scheduler))

    def observe(self, job: Job, result: GenerationResult) -> None:
        """Account for one finished job."""
        self.generations.labels(result.finish_reason).inc()
        if job.cancel_cause is not None:
            self.cancellations.labels(job.cancel_cause).inc()
        self.prompt_tokens.inc(result.prompt_tokens)
        self.cached_tokens.inc(result.cached_tokens)
        self.generated_tokens.inc(result.generated_tokens)
        if job.started_at is not None:
            self.queue_wait.observe(job.started_at - job.enqueued_at)
        if job.first_token_at is not None:
            self.ttft.observe(job.first_token_at - job.enqueued_at)
        if result.decode_ms > 0 and result.generated_tokens > 1:
            self.decode_rate.observe((result.generated_tokens - 1) / (result.decode_ms / 1e3))
        self.draft_proposed.inc(result.extra.get("draft_proposed", 0))
        self.draft_accepted.inc(result.extra.get("draft_accepted", 0))


# ------------------------------------------------------------------------------ the app


@dataclass
class ServerState:
    """Everything a handler needs."""

    scheduler: Scheduler
    tokenizer: QwenTokenizer
    model_name: str
    config: ServerConfig
    metrics: Metrics
    auth: Authenticator
    limiter: RateLimiter
    created: int

    @property
    def limits(self) -> Limits:
        """The configured limits."""
        return self.config.limits

    @property
    def window(self) -> int:
        """Context window: prompt plus generated tokens."""
        return self.scheduler.options.context_window


def _finish_reason(result: GenerationResult) -> str:
    """OpenAI's finish_reason: "length" when cut by a token limit, else "stop"."""
    return "length" if result.finish_reason in ("length", "context") else "stop"


def _usage(result: GenerationResult) -> dict[str, Any]:
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.generated_tokens,
        "total_tokens": result.prompt_tokens + result.generated_tokens,
    }


def _extension(result: GenerationResult) -> dict[str, Any]:
    return {
        "finish_reason": result.finish_reason,
        "cached_tokens": result.cached_tokens,
        "prefill_ms": round(result.prefill_ms, 1),
        "decode_ms": round(result.decode_ms, 1),
    }


class _Shape:
    """How one endpoint spells its response objects."""

    def __init__(self, chat: bool, model: str, created: int) -> None:
        self.chat = chat
        self.id = ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12)
        self.model = model
        self.created = created

    def _envelope(self, choice: dict[str, Any], chunk: bool) -> dict[str, Any]:
        kind = "chat.completion" if self.chat else "text_completion"
        if chunk and self.chat:
            kind += ".chunk"
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        }

    def piece(self, text: str) -> dict[str, Any]:
        """A streamed chunk of text."""
        choice: dict[str, Any] = {"index": 0, "finish_reason": None}
        if self.chat:
            choice["delta"] = {"content": text}
        else:
            choice.update(text=text, logprobs=None)
        return self._envelope(choice, chunk=True)

    def last(self, result: GenerationResult) -> dict[str, Any]:
        """The final streamed chunk: finish reason and usage."""
        choice: dict[str, Any] = {"index": 0, "finish_reason": _finish_reason(result)}
        if self.chat:
            choice["delta"] = {}
        else:
            choice.update(text="", logprobs=None)
        body = self._envelope(choice, chunk=True)
        body.update(usage=_usage(result), coder_lsp=_extension(result))
        return body

    def whole(self, result: GenerationResult) -> dict[str, Any]:
        """The non-streamed response."""
        choice: dict[str, Any] = {"index": 0, "finish_reason": _finish_reason(result)}
        if self.chat:
            choice["message"] = {"role": "assistant", "content": result.text}
        else:
            choice.update(text=result.text, logprobs=None)
        body = self._envelope(choice, chunk=False)
        body.update(usage=_usage(result), coder_lsp=_extension(result))
        return body


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.server
    return state


def authenticate(request: Request) -> str:
    """The user behind the request's bearer token (LOCAL_USER when no token is configured)."""
    state = _state(request)
    if not state.config.auth_required:
        return LOCAL_USER
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    user = state.auth.user_for(token.strip()) if scheme.lower() == "bearer" else None
    if user is None:
        raise ApiError(
            401,
            "a valid bearer token is required",
            "authentication_error",
            {"WWW-Authenticate": "Bearer"},
        )
    return user


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) anything over `limit` bytes, declared or streamed."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body over {limit} bytes", "invalid_request_error")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"request body over {limit} bytes", "invalid_request_error")
    return bytes(body)


def parse_body(raw: bytes, model: type[CompletionBody] | type[ChatBody]) -> Any:
    """Validate JSON against `model`; 422 with the first problem otherwise."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise ApiError(422, f"{where}: {first.get('msg')}", "invalid_request_error") from None


async def completions(request: Request) -> Response:
    """POST /v1/completions."""
    user, body = await _admit(request, CompletionBody)
    ids = completion_prompt(_state(request).tokenizer, body)
    return await _generate(request, user, body, ids, chat=False)


async def chat_completions(request: Request) -> Response:
    """POST /v1/chat/completions."""
    user, body = await _admit(request, ChatBody)
    if body.max_completion_tokens is not None:
        body.max_tokens = body.max_completion_tokens
    ids = chat_prompt(_state(request).tokenizer, body.messages)
    return await _generate(request, user, body, ids, chat=True)


async def _admit(request: Request, model: type[CompletionBody] | type[ChatBody]) -> Any:
    state = _state(request)
    user = authenticate(request)
    state.limiter.check(user)
    body = parse_body(await read_body(request, state.limits.max_body_bytes), model)
    if body.max_tokens > state.limits.max_tokens:
        raise ApiError(
            422, f"max_tokens over the limit of {state.limits.max_tokens}", "invalid_request_error"
        )
    return user, body


async def _generate(
    request: Request, user: str, body: CompletionBody | ChatBody, ids: list[int], chat: bool
) -> Response:
    state = _state(request)
    if not ids:
        raise ApiError(422, "empty prompt", "invalid_request_error")
    if len(ids) >= state.window:
        raise ApiError(
            422,
            f"prompt of {len(ids)} tokens exceeds the context window of {state.window - 1}",
            "invalid_request_error",
        )
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[str | None] = asyncio.Queue()

    def on_text(text: str) -> None:
        # RuntimeError: the event loop is gone (shutdown), nobody is listening.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(pieces.put_nowait, text)

    job = Job(
        user,
        ids,
        body.generation_config(),
        document=body.document,
        repository=body.repository or "",
        on_text=on_text if body.stream else None,
    )
    started = time.monotonic()
    try:
        future = state.scheduler.submit(job)
    except Rejected as error:
        raise ApiError(429, str(error), "rate_limit_error", {"Retry-After": "1"}) from None
    waiter = asyncio.wrap_future(future)
    shape = _Shape(chat, state.model_name, int(time.time()))
    route = "chat" if chat else "completions"

    def done(result: GenerationResult) -> None:
        state.metrics.observe(job, result)
        state.metrics.requests.labels(route, "200").observe(time.monotonic() - started)
        logger.info(
            "%s user=%s prompt=%d cached=%d generated=%d %s prefill=%.0fms decode=%.0fms",
            route,
            user,
            result.prompt_tokens,
            result.cached_tokens,
            result.generated_tokens,
            result.finish_reason if job.cancel_cause is None else job.cancel_cause,
            result.prefill_ms,
            result.decode_ms,
        )

    if body.stream:
        waiter.add_done_callback(lambda _: pieces.put_nowait(None))
        return StreamingResponse(
            _events(job, waiter, pieces, shape, done), media_type="text/event-stream"
        )
    while True:
        finished, _ = await asyncio.wait({waiter}, timeout=0.05)
        if finished:
            break
        if await request.is_disconnected():
            job.cancel_for("disconnected")
            result = await waiter
            done(result)
            return Response(status_code=499)
    result = waiter.result()
    done(result)
    return JSONResponse(shape.whole(result))


async def _events(
    job: Job,
    waiter: asyncio.Future[GenerationResult],
    pieces: asyncio.Queue[str | None],
    shape: _Shape,
    done: Callable[[GenerationResult], None],
) -> AsyncIterator[str]:
    """Server-sent events: one chunk per piece of text, a final chunk, then [DONE]."""
    try:
        while (text := await pieces.get()) is not None:
            yield f"data: {json.dumps(shape.piece(text))}\n\n"
        result = waiter.result()
        done(result)
        yield f"data: {json.dumps(shape.last(result))}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        if not waiter.done():
            # The client went away (Starlette cancelled this generator): stop generating now.
            job.cancel_for("disconnected")
            waiter.add_done_callback(lambda f: None if f.cancelled() else done(f.result()))


async def list_models(request: Request) -> Response:
    """GET /v1/models."""
    state = _state(request)
    state.limiter.check(authenticate(request))
    model = {
        "id": state.model_name,
        "object": "model",
        "created": state.created,
        "owned_by": "coder-lsp",
        "max_model_len": state.window,
    }
    return JSONResponse({"object": "list", "data": [model]})


async def health(request: Request) -> Response:
    """GET /health: no token needed, nothing revealed but liveness."""
    return JSONResponse({"status": "ok"})


async def metrics(request: Request) -> Response:
    """GET /metrics in Prometheus' text format (not rate-limited: scrapers poll it)."""
    authenticate(request)
    registry = _state(request).metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


async def _api_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, ApiError)
    state = _state(request)
    state.metrics.rejections.labels(str(error.status)).inc()
    logger.info("%s %s -> %d", request.method, request.url.path, error.status)
    return error.response()


def create_app(
    scheduler: Scheduler, tokenizer: QwenTokenizer, model_name: str, config: ServerConfig
) -> Starlette:
    """The ASGI application around a running scheduler."""
    app = Starlette(
        routes=[
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        exception_handlers={ApiError: _api_error},
    )
    app.state.server = ServerState(
        scheduler,
        tokenizer,
        model_name,
        config,
        Metrics(scheduler),
        Authenticator(config),
        RateLimiter(config.limits.requests_per_minute),
        int(time.time()),
    )
    return app


# ------------------------------------------------------------------------------ binding


def is_loopback(host: str) -> bool:
    """Whether every address `host` resolves to is a loopback address."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); port 0 picks a free one."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(128)
    sock.set_inheritable(True)
    return sock
