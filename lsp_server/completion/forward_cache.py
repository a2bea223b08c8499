"""Typing-aware reuse of the last suggestion per document (the "forward cache" Tabby and
llama.vim keep).

When the user types exactly the characters the last suggestion predicted, the rest of that
suggestion is the answer: no model call, no debounce. When they have typed (or accepted) all
of it, the next request continues the same generation: its prompt is the last prompt plus the
accepted tokens, so the engine's prefix cache already holds everything but one position, where
a fresh prompt would re-read the suffix after the edit.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from context.prompt import Prompt


@dataclass(frozen=True)
class Prediction:
    """A shown suggestion and what produced it."""

    before: str  # the buffer before the cursor when it was asked for
    after: str  # the buffer after the cursor (what the suggestion does not touch)
    text: str  # the suggestion shown
    replace_chars: int
    prompt: Prompt  # the prompt it came from (its text and context files)
    prompt_ids: tuple[int, ...]
    generated_ids: tuple[int, ...]
    accepted_ids: int | None  # generated tokens that spell `text` exactly, if any do
    # Written by the small model (a cold request): the target's answer replaces it when ready.
    small_model: bool = False

    def typed(self, before: str, after: str) -> str | None:
        """What the user typed since, when the buffer is this one plus typing at the cursor
        that the suggestion predicted (possibly all of it); else None."""
        if after != self.after or not before.startswith(self.before):
            return None
        typed = before[len(self.before) :]
        return typed if self.text.startswith(typed) else None


@dataclass(frozen=True)
class ForwardHit:
    """An answer from the cache: the rest of the suggestion, or a prompt to continue from."""

    text: str  # the rest to show ("" when the whole suggestion was typed)
    replace_chars: int
    prompt: Prompt
    continuation: tuple[int, ...] | None  # prompt + accepted tokens, for a continued generation
    small_model: bool = False  # the suggestion is the small model's


class ForwardCache:
    """The last prediction per document (bounded, least recently used out), thread-safe."""

    def __init__(self, documents: int = 64) -> None:
        self.documents = documents
        self._predictions: OrderedDict[str, Prediction] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0  # answers with the rest of a suggestion

    def remember(self, key: str, prediction: Prediction) -> None:
        """Keep `prediction` as the last one for document `key` (an empty one forgets)."""
        with self._lock:
            self._put(key, prediction)

    def current(self, key: str) -> Prediction | None:
        """The last prediction for document `key`, if any."""
        with self._lock:
            return self._predictions.get(key)

    def replace(self, key: str, seen: Prediction | None, prediction: Prediction) -> bool:
        """`remember` `prediction` only if the last one for `key` is still `seen` (a newer
        suggestion came meanwhile otherwise, and stays); whether it did."""
        with self._lock:
            if self._predictions.get(key) is not seen:
                return False
            self._put(key, prediction)
        return True

    def _put(self, key: str, prediction: Prediction) -> None:
        """`remember` under the lock."""
        self._predictions.pop(key, None)
        if prediction.text:
            self._predictions[key] = prediction
            while len(self._predictions) > self.documents:
                self._predictions.popitem(last=False)

    def lookup(self, key: str, text: str, offset: int) -> ForwardHit | None:
        """What the last prediction for `key` says about `text` with the cursor at `offset`."""
        with self._lock:
            prediction = self._predictions.get(key)
        if prediction is None:
            return None
        typed = prediction.typed(text[:offset], text[offset:])
        if typed is None or not typed:
            return None
        rest = prediction.text[len(typed) :]
        if rest.strip():
            with self._lock:
                self.hits += 1
            return ForwardHit(
                rest, prediction.replace_chars, prediction.prompt, None, prediction.small_model
            )
        if rest or prediction.accepted_ids is None or prediction.small_model:
            # Only whitespace left, text no token prefix spells, or the small model's prompt
            # (short, in-file) that the target would continue from: ask afresh.
            return None
        accepted = prediction.generated_ids[: prediction.accepted_ids]
        continuation = prediction.prompt_ids + accepted
        return ForwardHit("", 0, prediction.prompt, continuation, prediction.small_model)


def accepted_token_count(
    decode: Callable[[Sequence[int]], str], generated: Sequence[int], shown: str
) -> int | None:
    """How many of the `generated` tokens spell `shown` exactly when decoded; None when no
    prefix does. Decodes prefixes only until they are longer than `shown`."""
    for count in range(1, len(generated) + 1):
        text = decode(generated[:count])
        if text == shown:
            return count
        if len(text) > len(shown):
            break
    return None
