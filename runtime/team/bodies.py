"""Request bodies of the team server and the token ids of their prompts.

Beside OpenAI's fields a body may carry `document` (a newer request of the same user and
document cancels the older one) and `repository` (selects the user's KV slot). Unknown OpenAI
fields are ignored; a body that does not validate is a 422 naming the first problem.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runtime.chatml import chat_segments
from runtime.generate import GenerationConfig
from runtime.team.errors import ApiError
from runtime.tokenizer import QwenTokenizer

_SPECIAL = re.compile(r"<\|[A-Za-z0-9_]{1,32}\|>")
QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


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


def parse_body(raw: bytes, model: type[CompletionBody] | type[ChatBody]) -> Any:
    """Validate JSON against `model`; 422 with the first problem otherwise."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise ApiError(422, f"{where}: {first.get('msg')}", "invalid_request_error") from None


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
