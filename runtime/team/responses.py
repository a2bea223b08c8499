"""How the team server spells a result: OpenAI's completion and chat objects, whole or as
server-sent events, with `usage` and our `coder_lsp` extension
({finish_reason, cached_tokens, prefill_ms, decode_ms}) beside it."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

from runtime.generate import GenerationResult
from runtime.team.scheduler import Job


def _finish_reason(result: GenerationResult) -> str:
    """OpenAI's finish_reason: "length" when cut by a token limit, else "stop"."""
    return "length" if result.finish_reason in ("length", "context") else "stop"


def _usage(result: GenerationResult) -> dict[str, Any]:
    """OpenAI's token counts."""
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.generated_tokens,
        "total_tokens": result.prompt_tokens + result.generated_tokens,
    }


def _extension(result: GenerationResult) -> dict[str, Any]:
    """The `coder_lsp` object: our finish reason, cache hits and timings."""
    return {
        "finish_reason": result.finish_reason,
        "cached_tokens": result.cached_tokens,
        "prefill_ms": round(result.prefill_ms, 1),
        "decode_ms": round(result.decode_ms, 1),
    }


class ResponseShape:
    """How one endpoint spells its response objects."""

    def __init__(self, chat: bool, model: str, created: int) -> None:
        self.chat = chat
        self.id = ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12)
        self.model = model
        self.created = created

    def _envelope(self, choice: dict[str, Any], chunk: bool) -> dict[str, Any]:
        """The object around one choice: id, kind, creation time and model."""
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


async def event_stream(
    job: Job,
    waiter: asyncio.Future[GenerationResult],
    pieces: asyncio.Queue[str | None],
    shape: ResponseShape,
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
