"""One completion from editor state to inserted text: workspace context, prompt, engine,
post-processing. The CLI and the language server both call this."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from context.prompt import Held, Prompt, PromptBudget, PromptLayout, build_prompt
from context.redaction import redact_around
from context.workspaces import AdmissionRefused, SourceFile, Workspaces
from lsp_server.completion.forward_cache import (
    ForwardCache,
    ForwardHit,
    Prediction,
    accepted_token_count,
)
from lsp_server.completion.live import (
    Completion,
    LiveGeneration,
    after_heal,
    complete_lines,
    first_lines_only,
    word_cuts,
)
from lsp_server.completion.postprocess import (
    CursorContext,
    Suggestion,
    comment_marker,
    postprocess,
    stop_rule,
)
from lsp_server.completion.warmup import CacheWarmer
from runtime.engine import Engine
from runtime.generate import CancellationToken, GenerationConfig, GenerationResult
from runtime.tokenizer import tokenizable

logger = logging.getLogger(__name__)


class CompletionRefused(Exception):
    """The file must not reach a model (a secret, or excluded by .gitignore): nothing is sent
    (context.workspaces' AdmissionRefused, as the pipeline's callers see it)."""


def _finished(
    result: GenerationResult,
    prompt: Prompt,
    heal: str,
    cursor: CursorContext,
    latency_ms: float,
    source: str,
) -> tuple[Completion, str]:
    """The completion a generation's `result` gives at `cursor`, and the typed text its
    tokens spell before the answer (what `heal` left out of the prompt). A block the token
    limit cut keeps its whole lines: its last line is half written."""
    answer = after_heal(result.text, heal)
    if result.finish_reason == "length":
        answer = complete_lines(answer) or answer
    shown = postprocess(answer, cursor)
    done = Completion("", 0, prompt, result, latency_ms, source)
    if shown is not None:
        done = replace(done, text=shown.text, replace_chars=shown.replace_suffix_chars)
    return done, result.text[: len(result.text) - len(answer)]


def _cached_answer(hit: ForwardHit | None, started: float) -> Completion | None:
    """The completion a forward-cache hit gives without the model (the rest of the last
    suggestion), or None."""
    if hit is None or not hit.text:
        return None
    result = GenerationResult([], hit.text, "forward_cache", 0, 0)
    latency = (time.monotonic() - started) * 1000
    return Completion(hit.text, hit.replace_chars, hit.prompt, result, latency, "forward_cache")


# A request is cold when the target would need more than this share of the time left just to
# read the prompt; the small model then answers from an in-file prompt: the first of
# QUICK_BUDGETS it can read within QUICK_SHARE of the time left (its cache may hold one from
# the last pause), else the last. The sizes halve, so one size keeps its window start
# (`context.prompt.fim_window`) and its cache from one pause to the next.
COLD_SHARE = 1.0
QUICK_SHARE = 0.5
QUICK_BUDGETS = tuple(
    PromptBudget(repo_tokens=0, prefix_tokens=prefix, suffix_tokens=suffix)
    for prefix, suffix in ((384, 64), (192, 32), (96, 16))
)
# Before that, the target answers from the window and repository part of the file's last prompt
# it read (`context.prompt.Held`) when it would read that one in time: the window moved on or a
# definition was appended since, and the prompt chosen afresh is read in the background after
# the answer (source "held").
HELD_FILES = 64  # files whose last read prompt is kept
# Typing along the small model's suggestion is answered by the target instead once it would
# read the prompt within this share of the time left (the warm-up has caught up): its answer
# replaces a guess made from a short in-file prompt, which could otherwise answer every pause
# until the user leaves it.
TAKEOVER_SHARE = 0.5


def _within(ms: float | None, share: float, deadline: float) -> bool:
    """Whether `ms` (an estimate, None: unknown) fits in `share` of the time left before
    `deadline`."""
    return ms is not None and ms <= share * (deadline - time.monotonic()) * 1000


@dataclass(frozen=True)
class _ColdPrompt:
    """The prompt a cold request is answered from: the held one, or the small model's."""

    prompt: Prompt
    ids: list[int]
    source: str  # "held" or "small_model"


@dataclass(frozen=True)
class _Request:
    """A completion request's buffer, cursor and settings."""

    path: Path
    text: str
    offset: int
    workspace: Path | None
    use_context: bool
    max_tokens: int


@dataclass
class CompletionPipeline:
    """Prompt building and generation around one engine."""

    engine: Engine
    workspaces: Workspaces = field(default_factory=Workspaces)
    budget: PromptBudget = field(default_factory=PromptBudget)
    # The last suggestion per file: typing that follows it is answered without the model.
    forward: ForwardCache = field(default_factory=ForwardCache)
    # After such an answer, prefill the buffer's prompt in the background (`warmup.py`); off
    # for a remote engine, whose server other users share.
    warm: bool = True
    warmer: CacheWarmer = field(default_factory=CacheWarmer)
    # Where the typed line and the suffix go in the prompt (context.prompt).
    layout: PromptLayout = field(default_factory=PromptLayout)
    # The last model generation, which may still run after its request was answered; one
    # thread runs them, one at a time (lsp_server.completion.live).
    _live: LiveGeneration | None = None
    _live_lock: threading.Lock = field(default_factory=threading.Lock)
    _generator: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="live-generation")
    )
    # The warm-up writing the target's answer where the small model answered (`_upgrade`), and
    # its file, while it generates (a forward-cache answer does not restart it; a miss stops it).
    _upgrading: tuple[str, CancellationToken] | None = None
    # Told the file (its path) whose small-model suggestion the target's answer has just
    # replaced, on the warm-up's thread: the server announces it to the editor.
    on_upgrade: Callable[[str], None] | None = None
    # What the last prompt the target read in each file was built on (least recent out).
    _held: OrderedDict[str, Held] = field(default_factory=OrderedDict)
    _held_lock: threading.Lock = field(default_factory=threading.Lock)

    def predicted(
        self,
        path: Path,
        text: str,
        offset: int,
        *,
        workspace: Path | None = None,
        use_context: bool = True,
        max_tokens: int = 64,
        deadline: float | None = None,
    ) -> Completion | None:
        """The rest of the last suggestion for `path` when the user typed its beginning since
        (no model call, the prompt warmed in the background), else None; with a `deadline`,
        also None for the small model's suggestion once the target is in time for it."""
        text = tokenizable(text)
        request = _Request(path, text, offset, workspace, use_context, max_tokens)
        return self._forward_answer(request, deadline)[1]

    def _forward_answer(
        self, request: _Request, deadline: float | None
    ) -> tuple[ForwardHit | None, Completion | None]:
        """The forward cache's view of this cursor, and its answer if it has one (then the
        prompt is warmed in the background, and the target's answer written where the
        suggestion is the small model's). No answer from the small model's suggestion when
        the target would read the prompt within TAKEOVER_SHARE of the time left: it answers."""
        started = time.monotonic()
        hit = self.forward.lookup(str(request.path), request.text, request.offset)
        cached = _cached_answer(hit, started)
        if hit is None or cached is None:
            return hit, None
        if hit.small_model and self._target_in_time(request, deadline, TAKEOVER_SHARE):
            return hit, None
        self._warm_later(request, upgrade=hit.small_model)
        return hit, cached

    def _target_in_time(self, request: _Request, deadline: float | None, share: float) -> bool:
        """Whether the target would read `request`'s prompt within `share` of the time left
        before `deadline` (False without a deadline or an estimate)."""
        if deadline is None:
            return False
        return _within(self.engine.prefill_ms(self._encoded(request)[1]), share, deadline)

    def warm_file(self, path: Path, text: str, workspace: Path) -> None:
        """Prefill, in the background, what every prompt in this file starts with: the
        repository context chosen for it (up to the current file's <|fim_prefix|>), so the
        first request in a just-opened file does not read that part (up to the context budget)."""
        self._warm_later(_Request(path, tokenizable(text), 0, workspace, True, 0), upgrade=False)

    def _warm_later(self, request: _Request, *, upgrade: bool) -> None:
        """Prefill the prompt for this buffer and cursor in the background (when `warm` and no
        generation is running: it holds the engine and ends in a prediction of its own). With
        `upgrade` (the file's suggestion is the small model's, or a cold request got none), the
        target then writes its own answer here for the forward cache (`_upgrade`). An upgrade
        generating for this file goes on: typing along its small-model suggestion would
        otherwise restart it at every pause, and it would never end."""
        key = str(request.path)
        if not self.warm or (self._live is not None and not self._live.finished):
            return
        upgrading = self._upgrading
        if upgrading is not None and upgrading[0] == key and not upgrading[1].cancelled:
            return
        seen = self.forward.current(key)

        def job(cancel: CancellationToken) -> None:
            prompt, prompt_ids = self._encoded(request)
            self.engine.prefill(prompt_ids, cancel)
            if cancel.cancelled:
                return
            self._hold(key, prompt)
            if upgrade:
                self._upgrade(request, prompt, prompt_ids, seen, cancel)

        self.warmer.start(job)

    def _upgrade(
        self,
        request: _Request,
        prompt: Prompt,
        prompt_ids: list[int],
        seen: Prediction | None,
        cancel: CancellationToken,
    ) -> None:
        """The target's answer at `request`'s cursor (its prompt read already) in place of the
        small model's suggestion `seen`, unless a newer one came meanwhile: typing on is then
        answered from the target's suggestion, where it would follow the small model's until
        the user left it (a warm-up's last step; a model request stops it)."""
        key = str(request.path)
        self._upgrading = (key, cancel)
        try:
            cursor = CursorContext.at(request.text, request.offset, key)
            config = GenerationConfig(
                max_new_tokens=request.max_tokens,
                stop_rule=stop_rule(cursor, typed_line_block=True),
            )
            started = time.monotonic()
            result = self.engine.complete(prompt_ids, config, cancel)
            if result.finish_reason == "cancelled":
                return
            latency = (time.monotonic() - started) * 1000
            done, lead_in = _finished(result, prompt, prompt.heal, cursor, latency, "model")
            prediction = self._prediction(request, prompt_ids, done, lead_in)
            if self.forward.replace(key, seen, prediction):
                logger.info("the target's answer replaces the small model's: %r", done.text)
                self._adopt(request, done)
                if self.on_upgrade is not None:
                    self.on_upgrade(key)
        finally:
            self._upgrading = None

    def _adopt(self, request: _Request, done: Completion) -> None:
        """A request asked again at `request`'s cursor, which the small model's finished
        generation answered, gets `done`, the target's answer, from now on."""
        with self._live_lock:
            live = self._live
        before, after = request.text[: request.offset], request.text[request.offset :]
        if (
            live is not None
            and live.finished
            and live.source == "small_model"
            and live.typed(str(request.path), before, after) == ""
        ):
            live.result = done

    def suggestion_at(self, path: Path, text: str, offset: int) -> str | None:
        """The rest of the file's last suggestion at this cursor (no model call, nothing
        counted), or None when the buffer has left it."""
        text = tokenizable(text)
        prediction = self.forward.current(str(path))
        if prediction is None:
            return None
        typed = prediction.typed(text[:offset], text[offset:])
        return None if typed is None else prediction.text[len(typed) :]

    def complete(
        self,
        path: Path,
        text: str,
        offset: int,
        *,
        workspace: Path | None = None,
        use_context: bool = True,
        max_tokens: int = 64,
        cancel: CancellationToken | None = None,
        deadline: float | None = None,
    ) -> Completion:
        """Complete `text` (the buffer of `path`) at character `offset`.

        Without a `deadline` (the CLI) this waits for the whole answer, and `cancel` stops the
        generation. With one (a `time.monotonic()` value: the editor), the answer is the first
        whole lines of a block as soon as they are written, or empty at the deadline; the
        generation goes on in the background into the forward cache either way, and `cancel`
        only ends this request's wait (see lsp_server.completion.live)."""
        started = time.monotonic()
        text = tokenizable(text)
        key, before, after = str(path), text[:offset], text[offset:]
        request = _Request(path, text, offset, workspace, use_context, max_tokens)
        hit, cached = self._forward_answer(request, deadline)
        if cached is not None:
            return cached
        live = self._live
        if live is not None and live.follows(key, before, after, self._settings(request)):
            done = self._await(live, before, after, started, deadline, cancel)
            if done is not None:
                return done
            hit, cached = self._forward_answer(request, deadline)
            if cached is not None:
                return cached
        live = self._start(request, hit, cancel if deadline is None else None, deadline)
        done = self._await(live, before, after, started, deadline, cancel)
        return done if done is not None else self._empty(live, started, "cancelled")

    def _start(
        self,
        request: _Request,
        hit: ForwardHit | None,
        cancel: CancellationToken | None,
        deadline: float | None,
    ) -> LiveGeneration:
        """Cancel the generation in progress and start one for `request` in the background
        (continuing the last one when the user typed or accepted all of it). A warm-up stops
        first: one left to run while the prompt is built would hold the engine a chunk longer
        when the generation asks for it (the cache keeps what it read; a small model's answer
        starts it again)."""
        self.warmer.stop()
        with self._live_lock:
            if self._live is not None:
                self._live.cancel.cancel()
        path, text, offset = request.path, request.text, request.offset
        source, heal = "model", ""
        if hit is not None and hit.continuation is not None:
            self._admit(path, text, request.workspace, request.use_context)
            prompt, prompt_ids = hit.prompt, list(hit.continuation)
            source = "continuation"
        else:
            prompt, prompt_ids = self._encoded(request)
            heal = prompt.heal
        cursor = CursorContext.at(text, offset, str(path))
        config = GenerationConfig(
            max_new_tokens=request.max_tokens,
            # A typed line's block only where the first line is shown first (`_await`).
            stop_rule=stop_rule(cursor, typed_line_block=deadline is not None),
            stream_unfinished_line=True,  # `_partial` shows its whole words at the deadline
        )
        cold = self._cold(request, prompt_ids, deadline) if source == "model" else None
        if cold is not None:
            # The target would not read this prompt in time: it answers from the prompt its
            # cache holds, else the small model from a short in-file prompt, its first whole
            # lines only (the engine is the warm-up's sooner); either way the target reads the
            # whole prompt after it (`_generate`).
            prompt, prompt_ids, heal, source = cold.prompt, cold.ids, cold.prompt.heal, cold.source
            if source == "small_model":
                rule = first_lines_only(stop_rule(cursor))
                config = replace(config, small_model=True, stop_rule=rule)
        before, after = text[:offset], text[offset:]
        settings = self._settings(request)
        live = LiveGeneration(str(path), before, after, heal, cursor, prompt, settings, source)
        if cancel is not None:
            live.cancel = cancel
        with self._live_lock:
            if self._live is not None:
                self._live.cancel.cancel()  # another request's, started meanwhile
            self._live = live
        self._generator.submit(self._generate, live, request, prompt_ids, config, source)
        return live

    def _cold(
        self, request: _Request, prompt_ids: list[int], deadline: float | None
    ) -> _ColdPrompt | None:
        """The prompt to answer from when the target's cache lacks so much of `prompt_ids`
        that reading it would take longer than the time left (a file just opened, a jump, the
        window moved on): the held one if the target reads it in time, else the small model's;
        None when in time (or no deadline, no estimate, no small model)."""
        if deadline is None:
            return None
        target_ms = self.engine.prefill_ms(prompt_ids)
        if target_ms is None or _within(target_ms, COLD_SHARE, deadline):
            return None
        held = self._held_prompt(request, target_ms, deadline)
        return held if held is not None else self._quick(request, target_ms, deadline)

    def _held_prompt(
        self, request: _Request, cold_ms: float, deadline: float
    ) -> _ColdPrompt | None:
        """For a cold request, the prompt built on what the file's last prompt the target read
        was built on, when the target reads that one in time; else None."""
        with self._held_lock:
            held = self._held.get(str(request.path))
        if held is None:
            return None
        prompt, ids = self._encoded(request, held=held)
        held_ms = self.engine.prefill_ms(ids)
        if held_ms is None or not _within(held_ms, COLD_SHARE, deadline):
            return None
        logger.info(
            "cold prompt (target ~%.0f ms to read): the target answers from the last prompt's "
            "window and repository part (~%.0f ms to read)",
            cold_ms,
            held_ms,
        )
        return _ColdPrompt(prompt, ids, "held")

    def _hold(self, key: str, prompt: Prompt) -> None:
        """Remember what `prompt`, which the target read for file `key`, was built on."""
        with self._held_lock:
            self._held.pop(key, None)
            self._held[key] = prompt.held()
            while len(self._held) > HELD_FILES:
                self._held.popitem(last=False)

    def _quick(self, request: _Request, target_ms: float, deadline: float) -> _ColdPrompt | None:
        """The small model's short in-file prompt for a cold request (the target would read
        its prompt in `target_ms`), or None without a small model."""
        if self.engine.prefill_ms([], small_model=True) is None:
            return None
        for budget in QUICK_BUDGETS:
            quota = replace(budget, output_tokens=request.max_tokens)
            prompt, ids = self._encoded(request, in_file_within=quota)
            small_ms = self.engine.prefill_ms(ids, small_model=True) or 0.0
            if _within(small_ms, QUICK_SHARE, deadline):
                break
        logger.info(
            "cold prompt (target ~%.0f ms to read): the small model answers from %d tokens "
            "(~%.0f ms to read)",
            target_ms,
            len(ids),
            small_ms,
        )
        return _ColdPrompt(prompt, ids, "small_model")

    def _generate(
        self,
        live: LiveGeneration,
        request: _Request,
        prompt_ids: list[int],
        config: GenerationConfig,
        source: str,
    ) -> None:
        """Run `live` to its end (generator thread) and remember what it suggests."""
        started = time.monotonic()
        try:
            result = self.engine.complete(prompt_ids, config, live.cancel, live.push)
            latency = (time.monotonic() - started) * 1000
            done, lead_in = _finished(result, live.prompt, live.heal, live.cursor, latency, source)
            self.forward.remember(live.key, self._prediction(request, prompt_ids, done, lead_in))
            if source != "small_model" and result.finish_reason != "cancelled":
                self._hold(live.key, live.prompt)
            live.result = done
        except Exception as error:  # handed to the request that waits for it
            live.error = error
        finally:
            live.finish()
        if source in ("small_model", "held") and not live.cancel.cancelled:
            # The prompt chosen afresh is read now (and, after the small model, answered).
            self._warm_later(request, upgrade=source == "small_model")

    def _await(
        self,
        live: LiveGeneration,
        before: str,
        after: str,
        started: float,
        deadline: float | None,
        cancel: CancellationToken | None,
    ) -> Completion | None:
        """What `live` gives the cursor between `before` and `after`: its whole answer when it
        ends (None if the user typed some of it meanwhile: the forward cache holds the rest, or
        if the typing left it); with a deadline, the first whole lines of a block as soon as
        they are worth showing, or empty at the deadline or when this request is cancelled.
        Lines not worth showing alone (a lone word, an echo of the next line) wait for more
        lines or the end: an empty answer before the deadline would waste the time left."""
        refused = ""
        while True:
            typed = live.typed(live.key, before, after)
            if typed is None:
                return None
            if live.finished:
                if typed:
                    return None
                if live.error is not None:
                    raise live.error
                assert live.result is not None
                return replace(live.result, latency_ms=(time.monotonic() - started) * 1000)
            if deadline is not None:
                lines = live.early_lines(typed)
                if lines and lines != refused:
                    early = self._early(live, lines, before, after, started)
                    if early is not None:
                        return early
                    refused = lines
                if time.monotonic() >= deadline:
                    partial = self._partial(live, typed, before, after, started)
                    return partial or self._empty(live, started, "deadline")
                if cancel is not None and cancel.cancelled:
                    return self._empty(live, started, "cancelled")
            live.wait(0.05)

    def _early(
        self, live: LiveGeneration, lines: str, before: str, after: str, started: float
    ) -> Completion | None:
        """The first whole lines of an unfinished block answer, post-processed at this cursor
        (None when they are not worth showing)."""
        cursor = CursorContext.at(before + after, len(before), live.key)
        shown = postprocess(lines, cursor)
        return None if shown is None else self._shown(live, shown, started, "first_line")

    def _partial(
        self, live: LiveGeneration, typed: str, before: str, after: str, started: float
    ) -> Completion | None:
        """At the deadline, an answer whose first line is still being written, cut between two
        words with nothing it opened left open (`word_cuts`): the longest cut worth showing at
        this cursor, or None."""
        answer = live.answer()
        if not answer.startswith(typed):
            return None
        cursor = CursorContext.at(before + after, len(before), live.key)
        for cut in word_cuts(answer[len(typed) :], cursor.line_prefix, comment_marker(cursor)):
            shown = postprocess(cut, cursor)
            if shown is not None:
                return self._shown(live, shown, started, "partial_line")
        return None

    def _shown(
        self, live: LiveGeneration, shown: Suggestion, started: float, reason: str
    ) -> Completion:
        """What `live` has written so far, as `shown` at the cursor, before it ended; `reason`
        says why it was shown then."""
        result = GenerationResult([], live.answer(), reason, 0, 0)
        latency = (time.monotonic() - started) * 1000
        return Completion(
            shown.text,
            shown.replace_suffix_chars,
            live.prompt,
            result,
            latency,
            live.source,
            pending=live,
        )

    def _empty(self, live: LiveGeneration, started: float, reason: str) -> Completion:
        """No suggestion (yet) for this request; `reason` says why."""
        result = GenerationResult([], "", reason, 0, 0)
        latency = (time.monotonic() - started) * 1000
        return Completion("", 0, live.prompt, result, latency, pending=live)

    def _settings(self, request: _Request) -> tuple[object, ...]:
        """What besides the buffer decides a request's prompt and answer."""
        return (
            request.workspace,
            request.use_context,
            request.max_tokens,
            self.budget,
            self.layout,
        )

    def set_prompt_settings(self, budget: PromptBudget, layout: PromptLayout) -> None:
        """Build prompts within `budget` and in `layout` from now on (the settings changed)."""
        self.budget, self.layout = budget, layout
        with self._held_lock:
            self._held.clear()

    def forget(self) -> None:
        """Drop the last generation and every remembered suggestion (when what builds the
        prompts changed in a way the settings do not show, as a benchmark's variants do)."""
        self.close()
        self.wait_idle()
        self._live = None
        self.forward = ForwardCache()
        with self._held_lock:
            self._held.clear()

    def close(self) -> None:
        """Stop the generation and the warm-up in progress (the server is shutting down)."""
        with self._live_lock:
            if self._live is not None:
                self._live.cancel.cancel()
        self.warmer.stop()

    def wait_idle(self) -> None:
        """Block until the generation in progress (if any) and the warm-up it started have
        ended (benchmarks, tests)."""
        live = self._live
        while live is not None and not live.finished:
            live.wait(0.05)
        self._generator.submit(lambda: None).result()  # its thread has left `_generate`
        self.warmer.wait()

    def _prediction(
        self, request: _Request, prompt_ids: list[int], done: Completion, lead_in: str
    ) -> Prediction:
        """`done` as the prediction typing at `request`'s cursor is checked against; the
        generated tokens spell `lead_in` (typed already) before the suggestion."""
        generated = done.result.token_ids
        shown = done.text if done.result.finish_reason != "cancelled" else ""
        text, offset = request.text, request.offset
        return Prediction(
            before=text[:offset],
            after=text[offset:],
            text=shown,
            replace_chars=done.replace_chars,
            prompt=done.prompt,
            prompt_ids=tuple(prompt_ids),
            generated_ids=tuple(generated),
            accepted_ids=(
                accepted_token_count(self.engine.decode, generated, lead_in + shown)
                if shown
                else None
            ),
            small_model=done.source == "small_model",
        )

    def _encoded(
        self,
        request: _Request,
        in_file_within: PromptBudget | None = None,
        held: Held | None = None,
    ) -> tuple[Prompt, list[int]]:
        """`request`'s prompt and its token ids (an in-file one within `in_file_within` if
        given, else the request's own, built on `held` if given)."""
        use_context = request.use_context and in_file_within is None
        prompt = self.prompt(
            request.path,
            request.text,
            request.offset,
            workspace=request.workspace,
            use_context=use_context,
            budget=in_file_within,
            held=held,
        )
        return prompt, self.engine.encode_prompt(prompt.segments)

    def _admit(
        self, path: Path, text: str, workspace: Path | None, use_context: bool
    ) -> SourceFile:
        """`Workspaces.admit` (secret and gitignored files refused) with the refusal as
        CompletionRefused."""
        try:
            return self.workspaces.admit(path, text, workspace=workspace, use_context=use_context)
        except AdmissionRefused as error:
            raise CompletionRefused(str(error)) from error

    def prompt(
        self,
        path: Path,
        text: str,
        offset: int,
        *,
        workspace: Path | None = None,
        use_context: bool = True,
        budget: PromptBudget | None = None,
        held: Held | None = None,
    ) -> Prompt:
        """The prompt for a cursor (within `budget`, else the pipeline's; with `held`, its
        prefix start and repository pieces kept); raises CompletionRefused for files that must
        stay local."""
        text = tokenizable(text)
        budget = budget or self.budget
        source = self._admit(path, text, workspace, use_context)
        repo, relative, name = source.repo, source.relative, source.name
        # Redacted as one text (a key block around the cursor goes on both sides), then split.
        before, after = redact_around(text, offset)
        count = self.engine.count_tokens
        start = held.start_in(before + after, len(before)) if held is not None else None
        if repo is None or relative is None:
            return build_prompt(
                name,
                before + after,
                len(before),
                count,
                budget,
                layout=self.layout,
                prefix_start=start,
            )
        if held is not None and all(piece.path in repo.index for piece in held.pieces):
            pieces = list(held.pieces)
        else:  # chosen afresh, also when a file the held pieces show left the index (ignored)
            pieces = source.context(count, budget.repo_tokens, before + after, len(before))
        return build_prompt(
            relative,
            before + after,
            len(before),
            count,
            budget,
            repo_name=repo.index.name,
            context=pieces,
            layout=self.layout,
            prefix_start=start,
        )
