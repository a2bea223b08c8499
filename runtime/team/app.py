"""The team server's routes, as an ASGI application around a running scheduler.

Routes: POST /v1/completions (prompt as text or token ids, `stream: true` as server-sent
events), POST /v1/chat/completions (ChatML), GET /v1/models, GET /health, GET /metrics
(Prometheus). Once the configuration holds a token, every route but /health needs
`Authorization: Bearer <token>`. Errors are JSON: {"error": {"message", "type", "code"}}.

Order of checks: 401 (token), 429 (the user's request rate), 413 (body size), 422 (body shape,
prompt longer than the window, max_tokens over the limit), 429 (the user's requests in flight,
queue full). No prompt or completion text is ever logged; a request logs its user, token counts
and timings. The body extensions are in bodies.py, the response extension in responses.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from runtime.generate import GenerationResult
from runtime.team.bodies import ChatBody, CompletionBody, chat_prompt, completion_prompt, parse_body
from runtime.team.config import Authenticator, Limits, ServerConfig
from runtime.team.errors import ApiError
from runtime.team.limits import RateLimiter
from runtime.team.metrics import Metrics
from runtime.team.responses import ResponseShape, event_stream
from runtime.team.scheduler import Job, Rejected, Scheduler
from runtime.tokenizer import QwenTokenizer

logger = logging.getLogger(__name__)

LOCAL_USER = "local"  # who is asking when the configuration holds no token


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


def _state(request: Request) -> ServerState:
    """The server state of the app serving `request`."""
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
    """(user, body) of a generation request that passed the token, rate and body checks."""
    state = _state(request)
    user = authenticate(request)
    state.limiter.check(user)
    body = parse_body(await read_body(request, state.limits.max_body_bytes), model)
    if body.max_tokens > state.limits.max_tokens:
        raise ApiError(
            422, f"max_tokens over the limit of {state.limits.max_tokens}", "invalid_request_error"
        )
    return user, body


def _check_prompt(state: ServerState, ids: list[int]) -> None:
    """422 for an empty prompt or one that leaves no room in the context window."""
    if not ids:
        raise ApiError(422, "empty prompt", "invalid_request_error")
    if len(ids) >= state.window:
        raise ApiError(
            422,
            f"prompt of {len(ids)} tokens exceeds the context window of {state.window - 1}",
            "invalid_request_error",
        )


def _text_sink(pieces: asyncio.Queue[str | None]) -> Callable[[str], None]:
    """A callback for the scheduler thread that queues text on the running event loop."""
    loop = asyncio.get_running_loop()

    def on_text(text: str) -> None:
        # RuntimeError: the event loop is gone (shutdown), nobody is listening.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(pieces.put_nowait, text)

    return on_text


def _accounting(
    state: ServerState, job: Job, route: str, started: float
) -> Callable[[GenerationResult], None]:
    """The callback that counts a finished job in the metrics and logs it (no text)."""

    def done(result: GenerationResult) -> None:
        state.metrics.observe(job, result)
        state.metrics.requests.labels(route, "200").observe(time.monotonic() - started)
        logger.info(
            "%s user=%s prompt=%d cached=%d generated=%d %s prefill=%.0fms decode=%.0fms",
            route,
            job.user,
            result.prompt_tokens,
            result.cached_tokens,
            result.generated_tokens,
            result.finish_reason if job.cancel_cause is None else job.cancel_cause,
            result.prefill_ms,
            result.decode_ms,
        )

    return done


async def _client_waited(request: Request, job: Job, waiter: asyncio.Future[Any]) -> bool:
    """Wait for `job`; if the client goes away first, cancel it, wait, and return False."""
    while True:
        finished, _ = await asyncio.wait({waiter}, timeout=0.05)
        if finished:
            return True
        if await request.is_disconnected():
            job.cancel_for("disconnected")
            await waiter
            return False


async def _generate(
    request: Request, user: str, body: CompletionBody | ChatBody, ids: list[int], chat: bool
) -> Response:
    """Queue the job and answer with its result, whole or streamed."""
    state = _state(request)
    _check_prompt(state, ids)
    pieces: asyncio.Queue[str | None] = asyncio.Queue()
    job = Job(
        user,
        ids,
        body.generation_config(),
        document=body.document,
        repository=body.repository or "",
        on_text=_text_sink(pieces) if body.stream else None,
    )
    started = time.monotonic()
    try:
        future = state.scheduler.submit(job)
    except Rejected as error:
        raise ApiError(429, str(error), "rate_limit_error", {"Retry-After": "1"}) from None
    waiter = asyncio.wrap_future(future)
    shape = ResponseShape(chat, state.model_name, int(time.time()))
    done = _accounting(state, job, "chat" if chat else "completions", started)
    if body.stream:
        waiter.add_done_callback(lambda _: pieces.put_nowait(None))
        return StreamingResponse(
            event_stream(job, waiter, pieces, shape, done), media_type="text/event-stream"
        )
    connected = await _client_waited(request, job, waiter)
    result = waiter.result()
    done(result)
    return JSONResponse(shape.whole(result)) if connected else Response(status_code=499)


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
    """Count and log a refused request (no body), and answer with the error's JSON."""
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
