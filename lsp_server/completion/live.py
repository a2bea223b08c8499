"""The generation running in the background for the last model request, and what a later
request may take from it before it ends.

An editor shows a suggestion only if it arrives before the user types on. So a request does
not wait for a whole block: once the answer's first line is complete (and balanced) it is
shown, and the generation goes on in the background into the forward cache, so that typing or
accepting that line is answered with the next lines at no model cost. A request that finds a
generation whose text so far agrees with what the user typed since waits for it instead of
starting another; any other request cancels it (one engine, one generation at a time).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from context.prompt import Prompt
from lsp_server.completion.postprocess import CursorContext, scan_brackets
from runtime.generate import CancellationToken, GenerationResult

OPENERS, CLOSERS = "([{", ")]}"
# A line still being written is cut, for showing at the deadline, before a blank, or before one
# of these after a word, a closer or a quote: never inside a word, a number or an operator.
CUT_BEFORE = "()[]{}.,:;"
WORD_ENDS = ")]}\"'`"
PARTIAL_CUTS = 8  # cuts tried, longest first


@dataclass(frozen=True)
class Completion:
    """What a request produced and what it cost."""

    text: str  # what to insert at the cursor ("" when nothing is worth showing)
    replace_chars: int  # characters after the cursor the text replaces (auto-closed brackets)
    prompt: Prompt
    result: GenerationResult
    latency_ms: float
    # "model"; "forward_cache": the rest of the last suggestion, no model call; "continuation":
    # the model continuing the last generation after the user typed or accepted all of it.
    source: str = "model"

    # The generation still running for it when it was answered early (first lines, or empty at
    # the deadline): its whole answer lands in the forward cache when it ends.
    pending: LiveGeneration | None = None

    @property
    def cancelled(self) -> bool:
        """Whether its generation was cancelled before it ended."""
        return self.result.finish_reason == "cancelled"


def after_heal(generated: str, heal: str) -> str:
    """The answer after the typed text the prompt left out for the model to write (a prompt's
    `heal`, see context.prompt): the rest of `generated` once it has written `heal`. When the
    model left out a typed blank instead (`if` + `(x)` where the user typed `if `), the answer
    goes on after the blank the user typed; any other disagreement gives "" (it continued
    other text than what was typed, or ended the line)."""
    if generated.startswith(heal):
        return generated[len(heal) :]
    if heal.isspace() and generated.strip(" \t")[:1] not in ("", "\n", "\r"):
        return generated.lstrip(" \t")
    return ""


def complete_lines(text: str) -> str:
    """The longest start of `text` that ends at a line break after some code and leaves no
    bracket open: whole lines a user can take while the rest is still being written ("" if
    there is none yet). The line break itself is left out."""
    depth, seen_code, end = 0, False, 0
    for index, char in enumerate(text):
        if char == "\n":
            if seen_code and depth <= 0:
                end = index
        elif char in OPENERS:
            depth += 1
        elif char in CLOSERS:
            depth -= 1
        elif not char.isspace():
            seen_code = True
    return text[:end]


def word_cuts(text: str, line_prefix: str, comment: str | None) -> list[str]:
    """Starts of `text` (an answer whose first line is still being written after `line_prefix`,
    the cursor's line before it) that end between two words of that line and leave nothing the
    answer opened there unclosed (a bracket, a string), longest first, `PARTIAL_CUTS` at most.
    The end of `text` is never one: its last word may be unfinished."""
    start = len(text) - len(text.lstrip())
    first = text.rfind("\n", 0, start) + 1  # where the answer's first line starts
    lead = line_prefix if first == 0 else ""
    end = text.find("\n", start)
    cuts: list[str] = []
    for index in range(len(text) - 1 if end < 0 else end, start, -1):
        if not _between_words(text[index - 1], text[index]):
            continue
        opened, _ = scan_brackets(lead + text[first:index], comment)
        if all(opener < len(lead) for opener in opened):
            cuts.append(text[:index])
            if len(cuts) == PARTIAL_CUTS:
                break
    return cuts


def _between_words(last: str, following: str) -> bool:
    """Whether a line may be cut between these two characters (`CUT_BEFORE`)."""
    if last.isspace():
        return False
    if following.isspace():
        return True
    return following in CUT_BEFORE and (last.isalnum() or last == "_" or last in WORD_ENDS)


def first_lines_only(rule: Callable[[str], int | None]) -> Callable[[str], int | None]:
    """`rule` (a stop rule: where to cut generated text, None: go on) that also ends at the
    first whole, balanced lines (`complete_lines`)."""

    def stop(text: str) -> int | None:
        end = rule(text)
        if end is not None:
            return end
        lines = complete_lines(text)
        return len(lines) if lines else None

    return stop


@dataclass
class LiveGeneration:
    """One generation in the background: the buffer it was asked for, its text so far (pushed
    from the generating thread), and its end."""

    key: str  # the document
    before: str  # the buffer before the cursor when it was asked for
    after: str  # the buffer after the cursor
    heal: str  # typed text the model writes first (removed from the answer)
    cursor: CursorContext
    prompt: Prompt
    # What else decided the prompt and the answer (settings, workspace): a request made under
    # other ones never takes this generation's answer.
    settings: tuple[object, ...] = ()
    source: str = "model"  # what writes it (`Completion.source`)
    cancel: CancellationToken = field(default_factory=CancellationToken)
    raw: str = ""  # generated text so far
    finished: bool = False
    result: Completion | None = None  # set when it ends, with `error` if it failed
    error: Exception | None = None
    changed: threading.Condition = field(default_factory=threading.Condition)
    _on_finish: list[Callable[[], None]] = field(default_factory=list)

    def push(self, piece: str) -> None:
        """More generated text (called from the generating thread)."""
        with self.changed:
            self.raw += piece
            self.changed.notify_all()

    def finish(self) -> None:
        """The generation ended (its result is in the forward cache, if worth showing): wake
        the waiting requests and call what `when_finished` registered."""
        with self.changed:
            self.finished = True
            self.changed.notify_all()
            callbacks, self._on_finish = self._on_finish, []
        for callback in callbacks:
            callback()

    def when_finished(self, callback: Callable[[], None]) -> None:
        """Call `callback` when the generation ends (from the generating thread), or now if it
        has ended."""
        with self.changed:
            if not self.finished:
                self._on_finish.append(callback)
                return
        callback()

    def answer(self) -> str:
        """The answer so far, after the healed text; "" while the model is still writing it."""
        with self.changed:
            return after_heal(self.raw, self.heal)

    def typed(self, key: str, before: str, after: str) -> str | None:
        """What the user typed since, when this buffer is the asked one plus typing that agrees
        with the answer so far (it may run ahead of an unfinished answer); else None."""
        if key != self.key or after != self.after or not before.startswith(self.before):
            return None
        typed, answer = before[len(self.before) :], self.answer()
        if answer.startswith(typed) or (not self.finished and typed.startswith(answer)):
            return typed
        return None

    def follows(self, key: str, before: str, after: str, settings: tuple[object, ...]) -> bool:
        """Whether a request at this buffer, under these settings, should take its answer from
        this generation: the typing agrees with it, and it did not end cancelled or failed."""
        if settings != self.settings or self.typed(key, before, after) is None:
            return False
        if not self.finished:
            return True
        return self.error is None and self.result is not None and not self.result.cancelled

    def early_lines(self, typed: str) -> str:
        """Whole, balanced lines of the answer after `typed`, for a block answer (nothing
        follows the cursor on its line); "" when there are none yet."""
        if self.cursor.mid_line:
            return ""
        answer = self.answer()
        if not answer.startswith(typed):
            return ""
        return complete_lines(answer[len(typed) :])

    def wait(self, timeout_s: float) -> None:
        """Block until more text arrives, the generation ends or `timeout_s` passes."""
        with self.changed:
            self.changed.wait(timeout_s)
