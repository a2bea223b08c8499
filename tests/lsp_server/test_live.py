"""Answers within a time budget: the first whole lines of a block are shown while the rest is
generated in the background into the forward cache; at the deadline a line still being written
is shown up to its last whole word with nothing it opened left open (never cut inside a word or
a bracket), else the answer is empty, and the generation it interrupted answers the next
pause."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from context.prompt import Prompt, PromptBudget
from lsp_server.completion.live import (
    Completion,
    LiveGeneration,
    complete_lines,
    first_lines_only,
    word_cuts,
)
from lsp_server.completion.pipeline import QUICK_BUDGETS, CompletionPipeline
from lsp_server.completion.postprocess import CursorContext
from runtime.engine import EngineOptions, LocalEngine

BLOCK = "def mean(values):\n    total = 0\n    for value in values:\n"
PROMPT = Prompt([("x", False)], ["m.py"], 1, "x", "")


@pytest.mark.parametrize(
    ("text", "lines"),
    [
        ("\n        total += value\n        count", "\n        total += value"),
        ("        total += value", ""),  # the line is still being written
        ("\n", ""),  # no code yet
        ("x = f(a,\n      b)\ny = 1", "x = f(a,\n      b)"),  # the bracket closes first
        ("x = f(a,\n      b", ""),  # an open bracket is never shown cut
        ("a = 1\nb = 2\nc", "a = 1\nb = 2"),
    ],
)
def test_complete_lines_end_at_a_balanced_line_break(text: str, lines: str) -> None:
    assert complete_lines(text) == lines


@pytest.mark.parametrize(
    ("text", "line_prefix", "cuts"),
    [
        ("VED_CHARS + safe", "    NON_ESCA", ["VED_CHARS +", "VED_CHARS"]),  # not in the last word
        ("update(params.text", "    self.workspace.", ["update"]),  # nor in a bracket it opened
        ('"a, (" + f(x', "y = ", ['"a, (" + f', '"a, (" +', '"a, ("']),  # a string's bracket
        ("b) + c", "x = f(a, ", ["b) +", "b)", "b"]),  # closing the user's bracket is fine
        ("\n    if (\n        ready", "if x:", ["\n    if"]),  # the first line only
        ("x == 10", "if ", ["x ==", "x"]),  # never inside an operator
        ("me", "    na", []),  # one word, maybe unfinished
    ],
)
def test_word_cuts_end_between_words_with_nothing_left_open(
    text: str, line_prefix: str, cuts: list[str]
) -> None:
    assert word_cuts(text, line_prefix, "#") == cuts


def test_first_lines_only_ends_where_the_first_whole_lines_do() -> None:
    never = first_lines_only(lambda text: None)
    assert never("        total = 0") is None  # the line is still being written
    assert never("\n        total = 0\n") == len("\n        total = 0")
    assert never("        x = f(a,\n      b") is None  # an open bracket goes on
    end_of_line = first_lines_only(lambda text: 3)
    assert end_of_line("abc\ndef\n") == 3  # the rule's own end comes first


def live_at(before: str, after: str = "\n") -> LiveGeneration:
    cursor = CursorContext.at(before + after, len(before), "m.py")
    return LiveGeneration("m.py", before, after, "", cursor, PROMPT)


def test_typing_that_agrees_with_the_text_so_far_follows_the_generation() -> None:
    live = live_at(BLOCK)
    live.push("        total += value\n")
    assert live.typed("m.py", BLOCK + "        tot", "\n") == "        tot"
    assert live.typed("m.py", BLOCK + "        count", "\n") is None  # typed something else
    assert live.typed("other.py", BLOCK + "        tot", "\n") is None
    # Typing ahead of an unfinished answer still follows it; a finished one it cannot.
    assert live.typed("m.py", BLOCK + "        total += value\n    ret", "\n") is not None
    live.finish()
    assert live.typed("m.py", BLOCK + "        total += value\n    ret", "\n") is None


def test_what_waits_for_the_end_is_called_once_when_it_comes() -> None:
    live = live_at(BLOCK)
    calls: list[str] = []
    live.when_finished(lambda: calls.append("registered before"))
    live.push("        total += value\n")
    assert calls == []
    live.finish()
    assert calls == ["registered before"]
    live.when_finished(lambda: calls.append("registered after"))  # called at once
    live.finish()  # ends once: nothing is called again
    assert calls == ["registered before", "registered after"]


def test_early_lines_only_for_a_block() -> None:
    live = live_at(BLOCK)
    live.push("        total += value\n        count")
    assert live.early_lines("") == "        total += value"
    assert live.early_lines("        tot") == "al += value"  # the rest of the typed line
    assert live.early_lines("        total += value\n        co") == ""  # still being written
    mid_line = live_at("x = f(", ")\n")
    mid_line.push("a, b\n")
    assert mid_line.early_lines("") == ""


@pytest.fixture(scope="module")
def engine() -> LocalEngine:
    """The real 0.5B, without speculation (one model, deterministic greedy)."""
    options = EngineOptions(model="qwen2.5-coder-0.5b").without_speculation()
    return LocalEngine.load(options, progress=False)


SUMMARY = (
    "def summary(values):\n"
    "    '''Print the count, sum, mean, min and max of `values`, one line each.'''\n"
)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("typing", "enter"),
    [
        ("", ""),  # a blank line: the user accepts the first line (it ends with its break)
        ('    print("count:", len(', "\n    "),  # a line being typed: finished, then Enter
    ],
)
def test_first_line_first_then_the_rest_from_the_forward_cache(
    engine: LocalEngine, tmp_path: Path, typing: str, enter: str
) -> None:
    pipeline = CompletionPipeline(engine, warm=False)
    path = tmp_path / "stats.py"
    text = SUMMARY + typing
    path.write_text(text)
    far = time.monotonic() + 600
    first = pipeline.complete(path, text, len(text), use_context=False, deadline=far)
    assert first.result.finish_reason == "first_line", first
    assert first.text.strip() and "\n" not in first.text.strip("\n")
    pipeline.wait_idle()
    whole = pipeline.complete(path, text, len(text), use_context=False)
    assert whole.text.startswith(first.text + enter)
    assert len(whole.text) > len(first.text + enter)
    # The next lines come from the forward cache, no model call.
    typed = text + first.text + enter
    rest = pipeline.complete(path, typed, len(typed), use_context=False, deadline=far)
    assert rest.source == "forward_cache"
    assert first.text + enter + rest.text == whole.text


@pytest.mark.slow
def test_a_block_the_token_limit_cut_keeps_its_whole_lines(
    engine: LocalEngine, tmp_path: Path
) -> None:
    path = tmp_path / "stats.py"
    text = SUMMARY + "    "
    path.write_text(text)
    cut = CompletionPipeline(engine, warm=False).complete(
        path, text, len(text), use_context=False, max_tokens=24
    )
    whole = CompletionPipeline(engine, warm=False).complete(
        path, text, len(text), use_context=False, max_tokens=64
    )
    assert cut.result.finish_reason == "length", cut
    # Greedy: the longer answer goes on from the cut one, whose last line is whole.
    assert "\n" in cut.text and whole.text.startswith(cut.text), (cut.text, whole.text)
    assert whole.text[len(cut.text)] == "\n", (cut.text, whole.text)


@pytest.mark.slow
def test_a_deadline_answers_empty_and_the_generation_answers_the_next_pause(
    engine: LocalEngine, tmp_path: Path
) -> None:
    pipeline = CompletionPipeline(engine, warm=False)
    path = tmp_path / "geometry.py"
    text = "import math\n\n\ndef circle_area(radius):\n    return "
    path.write_text(text)
    now = time.monotonic()
    empty = pipeline.complete(path, text, len(text), use_context=False, deadline=now)
    assert (empty.text, empty.result.finish_reason) == ("", "deadline")
    pipeline.wait_idle()
    # The same pause again: the generation the deadline left running answers it.
    later = pipeline.complete(path, text, len(text), use_context=False, deadline=now + 600)
    assert later.text and later.result.finish_reason in ("stop", "stop_string", "length")
    assert later.result.cached_tokens == 0 and later.result.prompt_tokens > 0  # its one prefill
    # Typing the start of it is answered with the rest, no model call.
    typed = text + later.text[:3]
    rest = pipeline.complete(path, typed, len(typed), use_context=False, deadline=now + 600)
    assert rest.source == "forward_cache" and later.text[:3] + rest.text == later.text


@pytest.mark.slow
def test_first_lines_not_worth_showing_alone_wait_for_the_next(engine: LocalEngine) -> None:
    pipeline = CompletionPipeline(engine, warm=False)
    before = "def double(x):\n    "
    live = live_at(before)

    def write() -> None:
        live.push("x\n")  # a lone word on an empty line: not worth showing alone
        time.sleep(0.3)
        live.push("    return x + x\n    # done")

    writer = threading.Thread(target=write)
    writer.start()
    started = time.monotonic()
    shown = pipeline._await(live, before, "\n", started, started + 600, None)
    writer.join()
    assert shown is not None and shown.result.finish_reason == "first_line"
    assert shown.text == "x\n    return x + x"
    # At the deadline with nothing worth showing, the answer is empty.
    alone = live_at(before)
    alone.push("x\n")
    started = time.monotonic()
    empty = pipeline._await(alone, before, "\n", started, started + 0.2, None)
    assert empty is not None and (empty.text, empty.result.finish_reason) == ("", "deadline")


@pytest.mark.slow
def test_a_line_still_being_written_at_the_deadline_shows_its_whole_words(
    engine: LocalEngine,
) -> None:
    pipeline = CompletionPipeline(engine, warm=False)
    before = "import math\n\n\ndef area(radius):\n    return "
    written = {
        "math.pi * radius * rad": "math.pi * radius",  # `math.pi * radius *` would not parse
        "round(math.pi * rad": "round",  # the bracket it opened is still open
        "rou": "",  # no whole word yet
    }
    for text, expected in written.items():
        live = live_at(before)
        live.push(text)
        started = time.monotonic()
        shown = pipeline._await(live, before, "\n", started, started + 0.1, None)
        assert shown is not None and shown.text == expected
        assert shown.result.finish_reason == ("partial_line" if expected else "deadline")
        assert shown.pending is live  # it goes on into the forward cache


def generated(pipeline: CompletionPipeline, shown: Completion) -> Completion:
    """The whole answer of the generation behind `shown` (an early answer's counts are its
    generation's, known when it ends)."""
    pipeline.wait_idle()
    done = shown if shown.pending is None else shown.pending.result
    assert done is not None
    return done


@pytest.fixture(scope="module")
def target_and_small() -> LocalEngine:
    """The defaults: the 1.5B with the 0.5B as its small model."""
    return LocalEngine.load(EngineOptions(), progress=False)


@pytest.mark.slow
def test_a_cold_prompt_is_answered_by_the_small_model_then_the_target_takes_over(
    target_and_small: LocalEngine, tmp_path: Path
) -> None:
    engine = target_and_small
    pipeline = CompletionPipeline(engine)
    engine.prefill_rate.ms_per_token = 1000.0  # as a very slow CPU would measure: all is cold
    path = tmp_path / "shapes.py"
    text = "import math\n\n\ndef circle_area(radius):\n    return "
    path.write_text(text)
    upgraded: list[str] = []
    pipeline.on_upgrade = upgraded.append
    deadline = time.monotonic() + 5
    quick = pipeline.complete(path, text, len(text), use_context=False, deadline=deadline)
    # The small model's short in-file prompt (its answer may come after the 5 s: empty).
    assert len(engine.encode_prompt(quick.prompt.segments)) <= 384 + 64 + 16
    pipeline.wait_idle()  # the target read the whole prompt meanwhile, and answered
    full = pipeline.prompt(path, text, len(text), use_context=False)
    full_ids = engine.encode_prompt(full.segments)
    assert engine.prefill_ms(full_ids) == pytest.approx(0.0)
    # The target's answer to the full prompt replaced the small model's suggestion (the server
    # is told, to announce it), and typing along it is answered from it.
    target = pipeline.forward.current(str(path))
    assert target is not None and not target.small_model and target.text
    assert target.prompt_ids == tuple(full_ids) and target.before == text
    assert upgraded == [str(path)]
    assert pipeline.suggestion_at(path, text, len(text)) == target.text
    # The same pause asked again (as an editor does when told) gets the target's answer.
    deadline = time.monotonic() + 600
    again = pipeline.complete(path, text, len(text), use_context=False, deadline=deadline)
    assert again.source == "model" and again.text == target.text
    assert again.result.prompt_tokens == len(full_ids)
    typed = text + target.text[:1]
    along = pipeline.complete(path, typed, len(typed), use_context=False, deadline=deadline)
    assert along.source == "forward_cache" and along.text == target.text[1:]
    pipeline.wait_idle()
    engine.prefill_rate.ms_per_token = 50.0
    # A miss now (typing something else) is the target's, its prompt already read.
    typed = text + "radius * radius *"
    upgraded = pipeline.complete(path, typed, len(typed), use_context=False, deadline=deadline)
    assert upgraded.source == "model" and generated(pipeline, upgraded).result.cached_tokens > 0


@pytest.mark.slow
def test_typing_along_the_small_models_suggestion_goes_to_the_target_once_it_is_warm(
    target_and_small: LocalEngine, tmp_path: Path
) -> None:
    engine = target_and_small
    pipeline = CompletionPipeline(engine, warm=False)  # no upgrade: the guess stays
    path = tmp_path / "circles.py"
    text = "import math\n\n\ndef circumference(radius):\n    return "
    path.write_text(text)
    engine.prefill_rate.ms_per_token = 1000.0  # the target: cold
    pipeline.complete(path, text, len(text), use_context=False, deadline=time.monotonic() + 5)
    pipeline.wait_idle()
    guess = pipeline.forward.current(str(path))
    assert guess is not None and guess.small_model and len(guess.text) > 1
    typed = text + guess.text[:1]
    deadline = time.monotonic() + 5  # the target would read what it lacks in over 5 s
    # While the target is cold, typing along the guess is answered from it.
    along = pipeline.predicted(path, typed, len(typed), use_context=False, deadline=deadline)
    assert along is not None and along.text == guess.text[1:]
    # Once the target would read the prompt in time, it answers instead.
    engine.prefill_rate.ms_per_token = 1.0
    assert pipeline.predicted(path, typed, len(typed), use_context=False, deadline=deadline) is None
    later = time.monotonic() + 60
    target = pipeline.complete(path, typed, len(typed), use_context=False, deadline=later)
    full = pipeline.prompt(path, typed, len(typed), use_context=False)
    assert target.source == "model"
    prompt_tokens = generated(pipeline, target).result.prompt_tokens
    assert prompt_tokens == len(engine.encode_prompt(full.segments))
    # Without a deadline (the CLI) the forward cache answers as before.
    pipeline.forward.remember(str(path), guess)
    assert pipeline.predicted(path, typed, len(typed), use_context=False) is not None


@pytest.mark.slow
def test_the_small_model_writes_a_blocks_first_line_only(
    target_and_small: LocalEngine, tmp_path: Path
) -> None:
    engine = target_and_small
    pipeline = CompletionPipeline(engine, warm=False)
    path = tmp_path / "report.py"
    text = (
        "def report(values):\n"
        '    """Print the count, sum, mean, min and max of `values`, one line each."""\n'
    )
    path.write_text(text)
    engine.prefill_rate.ms_per_token = 1000.0  # the target: cold
    deadline = time.monotonic() + 5
    quick = pipeline.complete(path, text, len(text), use_context=False, deadline=deadline)
    pipeline.wait_idle()
    guess = pipeline.forward.current(str(path))
    assert quick.source == "small_model" and guess is not None and guess.small_model
    assert guess.text.strip() and "\n" not in guess.text.strip("\n")


@pytest.mark.slow
def test_the_small_models_prompt_is_cut_to_what_it_reads_in_time(
    target_and_small: LocalEngine, tmp_path: Path
) -> None:
    engine = target_and_small
    pipeline = CompletionPipeline(engine, warm=False)
    path = tmp_path / "table.py"
    rows = "".join(f"ROW_{number} = ({number}, '{number}')\n" for number in range(90))
    text = rows + "\n\ndef square(number):\n    return "
    path.write_text(text)

    def tier(budget: PromptBudget, buffer: str) -> int:
        prompt = pipeline.prompt(path, buffer, len(buffer), use_context=False, budget=budget)
        return len(engine.encode_prompt(prompt.segments))

    assert tier(QUICK_BUDGETS[0], text) > 300 > tier(QUICK_BUDGETS[1], text) > 100
    engine.prefill_rate.ms_per_token = 1000.0  # the target: cold
    engine.small_prefill_rate.ms_per_token = 20.0  # 250 tokens in half of 10 s: not 300
    deadline = time.monotonic() + 10
    quick = pipeline.complete(path, text, len(text), use_context=False, deadline=deadline)
    assert quick.source == "small_model"
    assert quick.result.prompt_tokens == tier(QUICK_BUDGETS[1], text)
    pipeline.wait_idle()
    # With the time to read the longest, it gets the longest.
    engine.prefill_rate.ms_per_token, engine.small_prefill_rate.ms_per_token = 1000.0, 1.0
    typed = text + "0\n\n\ndef cube(number):\n    return "  # another function: a miss
    longest = pipeline.complete(path, typed, len(typed), use_context=False, deadline=deadline)
    assert longest.source == "small_model"
    assert longest.result.prompt_tokens == tier(QUICK_BUDGETS[0], typed)


@pytest.mark.slow
def test_a_moved_window_is_answered_by_the_target_from_the_prompt_it_read(
    target_and_small: LocalEngine, tmp_path: Path
) -> None:
    engine = target_and_small
    budget = PromptBudget(prefix_tokens=400, suffix_tokens=16)
    pipeline = CompletionPipeline(engine, budget=budget)
    path = tmp_path / "table.py"
    rows = "".join(f"ROW_{number} = ({number}, '{number}')\n" for number in range(90))
    text = rows + "\n\ndef square(number):\n    return "
    path.write_text(text)
    engine.prefill_rate.ms_per_token = 1.0
    pipeline.complete(path, text, len(text), use_context=False, deadline=time.monotonic() + 60)
    pipeline.wait_idle()  # the target read this prompt
    earlier = pipeline.prompt(path, text, len(text), use_context=False)
    # 17 lines typed: the window chosen afresh moves on, so the target would read all of it.
    typed = text + "number\n" + "".join(f"x{n} = {n}\n" for n in range(16)) + "y = "
    fresh = pipeline.prompt(path, typed, len(typed), use_context=False)
    fresh_ids = engine.encode_prompt(fresh.segments)
    assert fresh.prefix_start > earlier.prefix_start
    lacking = (engine.prefill_ms(fresh_ids) or 0.0) / engine.prefill_rate.ms_per_token
    engine.prefill_rate.ms_per_token = 5000 / lacking  # the fresh prompt: 5 s to read
    deadline = time.monotonic() + 3
    done = pipeline.complete(path, typed, len(typed), use_context=False, deadline=deadline)
    # The target answers from the earlier window (what it lacks of that: the typed lines).
    source = done.pending.source if done.pending is not None else done.source
    assert source == "held" and done.prompt.prefix_start == earlier.prefix_start
    assert done.prompt.prefix.endswith("x15 = 15\ny = ")
    pipeline.wait_idle()
    held = pipeline.forward.current(str(path))
    assert held is not None and not held.small_model
    assert held.prompt_ids == tuple(engine.encode_prompt(done.prompt.segments))
    # Then the fresh prompt was read in the background: the next pause is warm.
    assert engine.prefill_ms(fresh_ids) == pytest.approx(0.0)


@pytest.mark.slow
def test_a_held_prompt_never_shows_a_file_that_left_the_index(
    engine: LocalEngine, tmp_path: Path
) -> None:
    git = pytest.importorskip("git")
    repo = git.Repo.init(tmp_path)
    (tmp_path / "shapes.py").write_text("def area(r):\n    return 3.14159 * r * r\n")
    main = tmp_path / "main.py"
    main.write_text("from shapes import area\n\n\ndef report(r):\n    total = \n")
    repo.index.add(["shapes.py", "main.py"])
    repo.index.commit("initial")
    pipeline = CompletionPipeline(engine, warm=False)
    text = main.read_text()
    offset = text.index("total = ") + len("total = ")
    earlier = pipeline.prompt(main, text, offset, workspace=tmp_path)
    assert earlier.files == ["shapes.py", "main.py"]
    held = earlier.held()
    kept = pipeline.prompt(main, text, offset, workspace=tmp_path, held=held)
    assert kept.segments == earlier.segments
    # shapes.py becomes ignored: a prompt built on the earlier one no longer shows it.
    (tmp_path / ".gitignore").write_text("shapes.py\n")
    repo.index.remove(["shapes.py"])
    repo.index.commit("ignore shapes")
    index = pipeline.workspaces.get(tmp_path).index
    index.refresh()
    assert "shapes.py" not in index
    after = pipeline.prompt(main, text, offset, workspace=tmp_path, held=held)
    assert after.files == ["main.py"] and "3.14159" not in after.text
