"""ChatML, the turn format of the Qwen Instruct models, as tokenizer segments:

    <|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n{user}<|im_end|>\\n
    <|im_start|>assistant\\n{answer prefix}

Control tokens are special segments; every text piece is plain text, so a message containing
"<|im_end|>" stays text (`QwenTokenizer.encode_segments`). The one builder of these prompts:
the code actions and the team server's /v1/chat/completions both use it.
"""

from __future__ import annotations

from collections.abc import Sequence

Segments = list[tuple[str, bool]]  # (text, is a control token)


def chat_segments(turns: Sequence[tuple[str, str]], answer_prefix: str = "") -> Segments:
    """(role, content) turns, then the start of the assistant's answer."""
    segments: Segments = []
    for role, content in turns:
        segments += [("<|im_start|>", True), (f"{role}\n{content}", False), ("<|im_end|>", True)]
        segments.append(("\n", False))
    return [*segments, ("<|im_start|>", True), (f"assistant\n{answer_prefix}", False)]


def alternating(system: str, messages: Sequence[str]) -> list[tuple[str, str]]:
    """The system turn, then `messages` as user and assistant turns by turns (user first)."""
    roles = ("user", "assistant")
    return [("system", system)] + [(roles[i % 2], text) for i, text in enumerate(messages)]
