"""The forward cache: typing what the last suggestion predicted is answered without the model,
and typing all of it continues the same generation from the cached KV."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from context.prompt import Prompt
from lsp_server.completion.forward_cache import ForwardCache, Prediction, accepted_token_count
from lsp_server.completion.pipeline import CompletionPipeline, after_heal
from runtime.engine import EngineOptions, LocalEngine

PROMPT = Prompt([("x", False)], ["m.py"], 1, "x", "")
BEFORE = "def add(a, b):\n    return "
AFTER = "\n"


def prediction(text: str = "a + b", accepted: int | None = 3) -> Prediction:
    return Prediction(BEFORE, AFTER, text, 0, PROMPT, (1, 2, 3), (10, 11, 12), accepted)


def test_typing_the_predicted_characters_answers_the_rest() -> None:
    cache = ForwardCache()
    cache.remember("m.py", prediction())
    buffer = BEFORE + "a +" + AFTER
    hit = cache.lookup("m.py", buffer, len(BEFORE) + 3)
    assert hit is not None and (hit.text, hit.continuation) == (" b", None)
    assert cache.hits == 1


@pytest.mark.parametrize(
    ("typed", "after"),
    [("a -", AFTER), ("", AFTER), ("a +", "\nprint(1)\n")],
    ids=["other_characters", "nothing_typed", "text_after_changed"],
)
def test_anything_else_misses(typed: str, after: str) -> None:
    cache = ForwardCache()
    cache.remember("m.py", prediction())
    assert cache.lookup("m.py", BEFORE + typed + after, len(BEFORE) + len(typed)) is None
    assert cache.lookup("other.py", BEFORE + typed + after, len(BEFORE) + len(typed)) is None


def test_typing_all_of_it_continues_from_prompt_and_accepted_tokens() -> None:
    cache = ForwardCache()
    cache.remember("m.py", prediction(accepted=2))
    hit = cache.lookup("m.py", BEFORE + "a + b" + AFTER, len(BEFORE) + 5)
    assert hit is not None and (hit.text, hit.continuation) == ("", (1, 2, 3, 10, 11))
    # Without a token prefix that spells the suggestion, a fresh prompt is needed.
    cache.remember("m.py", prediction(accepted=None))
    assert cache.lookup("m.py", BEFORE + "a + b" + AFTER, len(BEFORE) + 5) is None
    # Nor is the small model's short prompt one for the target to continue from.
    cache.remember("m.py", replace(prediction(accepted=2), small_model=True))
    assert cache.lookup("m.py", BEFORE + "a + b" + AFTER, len(BEFORE) + 5) is None


def test_a_replacement_waits_for_no_newer_suggestion() -> None:
    cache = ForwardCache()
    small = replace(prediction("a - b"), small_model=True)
    cache.remember("m.py", small)
    hit = cache.lookup("m.py", BEFORE + "a" + AFTER, len(BEFORE) + 1)
    assert hit is not None and hit.small_model
    # The target's answer replaces the small model's it was written for ...
    assert cache.replace("m.py", small, prediction("a + b"))
    assert cache.current("m.py") == prediction("a + b")
    # ... but not a suggestion that came after it.
    assert not cache.replace("m.py", small, prediction("b + a"))
    assert not cache.replace("other.py", small, prediction("b + a"))
    assert cache.current("m.py") == prediction("a + b") and cache.current("other.py") is None


def test_empty_prediction_forgets_and_size_is_bounded() -> None:
    cache = ForwardCache(documents=2)
    for name in ("a.py", "b.py", "c.py"):
        cache.remember(name, prediction())
    assert cache.lookup("a.py", BEFORE + "a" + AFTER, len(BEFORE) + 1) is None  # evicted
    cache.remember("c.py", prediction(text=""))
    assert cache.lookup("c.py", BEFORE + "a" + AFTER, len(BEFORE) + 1) is None


def spell(pieces: list[str]) -> Callable[[Sequence[int]], str]:
    """A decoder for token ids 0..n-1 that stand for `pieces`."""
    return lambda ids: "".join(pieces[token] for token in ids)


def test_accepted_token_count() -> None:
    assert accepted_token_count(spell(["a", " +", " b", "\n"]), [0, 1, 2, 3], "a + b") == 3
    assert accepted_token_count(spell(["a", " +", " bc"]), [0, 1, 2], "a + b") is None


@pytest.mark.slow
def test_pipeline_answers_typing_from_the_cache_and_continues_after_it(tmp_path: Path) -> None:
    engine = LocalEngine.load(EngineOptions(model="qwen2.5-coder-0.5b"), progress=False)
    # No background warm-up here: it would take over the generation's KV beyond the typed text
    # (one sequence per prompt family) and the continuation would re-read a few tokens.
    pipeline = CompletionPipeline(engine, warm=False)
    path = tmp_path / "calc.py"
    head = 'def add(a, b):\n    """Return the sum of a and b."""\n    return '
    tail = "\n\n\ndef is_even(n):\n    return n % 2 == 0\n"
    first = pipeline.complete(path, head + tail, len(head), use_context=False)
    # What the model suggests is not under test here (tests/e2e/test_cli_complete.py checks that),
    # only what typing it does.
    assert len(first.text.strip()) >= 3, first.text
    # Typing the first two predicted characters: answered from the cache, the model untouched.
    typed = head + first.text[:2]
    second = pipeline.complete(path, typed + tail, len(typed), use_context=False)
    assert second.text == first.text[2:]
    assert (second.result.finish_reason, second.result.generated_tokens) == ("forward_cache", 0)
    assert second.source == "forward_cache"
    # Typing all of it: the next request continues from the cached prompt + accepted tokens.
    done = head + first.text
    third = pipeline.complete(path, done + tail, len(done), use_context=False)
    assert third.source == "continuation"
    assert third.result.cached_tokens == third.result.prompt_tokens - 1
    assert third.result.prompt_tokens > first.result.prompt_tokens


@pytest.mark.slow
def test_a_forward_cache_answer_warms_the_prompt_of_the_next_miss(tmp_path: Path) -> None:
    """At a line start the prompt is PSM; once typing the predicted first word is answered from
    the cache, the line's own prompt (the typed line leading the middle) is prefilled in the
    background, so a miss later on the line reads only what was typed since."""
    engine = LocalEngine.load(EngineOptions(model="qwen2.5-coder-0.5b"), progress=False)
    pipeline = CompletionPipeline(engine)
    path = tmp_path / "calc.py"
    head = 'def add(a, b):\n    """Return the sum of a and b."""\n    '
    tail = "\n\n\ndef is_even(n):\n    return n % 2 == 0\n"
    first = pipeline.complete(path, head + tail, len(head), use_context=False)
    assert " " in first.text, first.text
    word = first.text[: first.text.index(" ") + 1]  # e.g. "return "
    typed = head + word
    second = pipeline.complete(path, typed + tail, len(typed), use_context=False)
    assert second.source == "forward_cache"
    pipeline.warmer.wait()
    assert pipeline.warmer.started == 1
    # Not what was predicted, and the line still leads the middle (it ends in a blank).
    missed = typed + "zz + "
    third = pipeline.complete(path, missed + tail, len(missed), use_context=False)
    assert third.source == "model" and third.prompt.lead.endswith("zz +")
    new_tokens = third.result.prompt_tokens - third.result.cached_tokens
    # Without the warm-up the suffix would be read again (30+ tokens here).
    assert new_tokens <= engine.count_tokens(" zz +") + 1, new_tokens


@pytest.mark.parametrize(
    ("generated", "heal", "answer"),
    [
        (" a + b", " ", "a + b"),
        ("(x):", "(", "x):"),
        ("(primes):", " ", "(primes):"),  # the model left out the typed blank: go on after it
        ("\n    x = 1", " ", ""),  # it ended the line instead
        ("", " ", ""),
        (".items()", "(", ""),  # it continued other text than the typed `(`
        ("a + b", "", "a + b"),
    ],
)
def test_after_heal(generated: str, heal: str, answer: str) -> None:
    assert after_heal(generated, heal) == answer
