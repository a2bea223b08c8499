"""Qwen2.5-Coder FIM prompts, in-file or repository-level, under an exact token budget.

Repository-level layout (Qwen's):

    <|repo_name|>{name}\\n<|file_sep|>{path}\\n{content}\\n ... <|file_sep|>{current path}\\n
    <|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>

The prompt is kept as (text, is_special) segments: the engine emits control tokens by id and
tokenizes user text as plain text (a file containing "<|endoftext|>" stays text). Because every
special token splits tokenization, the prompt's token count is exactly the sum of its segments'
counts plus one per special token, which is how budgets are enforced here.

Cache-friendliness: repository files come first and only change when the files or the import
graph change; the prefix window starts on a line that moves in steps of LINE_STRIDE lines; so
consecutive keystrokes share a long token prefix and the engine's KV prefix cache keeps hitting.

A line being typed leads the middle (llama.vim's layout): the part of the cursor's line before
the cursor goes after <|fim_middle|>, as if the model had written it, instead of at the end of
<|fim_prefix|>. In Qwen's PSM order everything after the edit is re-read on every keystroke, and
that is the whole suffix; here it is only the typed line, so a keystroke costs the few tokens
typed and the suffix is read once per line. A line start is always a pre-tokenizer boundary of
Qwen's tokenizer (a newline ends a pre-token), so the tokens before the lead are unchanged.

The lead must also end where the model's own tokens would: it writes canonical tokens, and
Qwen's tokenizer glues a space, a `(`, `[` or `.` to the word after it, so a lead ending in one
leaves the model continuing from a token it never produces. Such a trailing blank run or
character is left out of the lead and becomes `heal`: text the answer must start with, removed
from it (token healing). Which lines lead was measured (0.5B, SantaCoder FIM rows, the rest of
the hole line after a cut, exact text): after a space, lead without the space 82 / 105 right,
PSM 62, lead with the space 8 (first space of a line 113 / 167 vs PSM 82; last space 102 / 126
vs 68); after `=`, lead 28 / 42, PSM 14; after a word and `(`, `.` or `[`, lead without that
character 89 / 173, PSM 87, lead with it 8 / 27; on a blank line, PSM 132 / 240, lead 14, lead
without the indentation 102; mid-word, PSM 81 / 175, lead 6 (the typed half of the word would
have to be healed too, and the model cannot guess it). After a line that may be complete the
next line is wanted, and a model handed the finished line appends to it (EM 52 -> 30 %). So a
line leads when it ends in a blank, a word and `(`, `.` or `[` (healed), or `=`; otherwise it
stays at the end of the prefix. Reproducible through the whole pipeline with `python -m
bench.fim_quality --variants typing,typing-psm` (cursor after the hole line's first space, 174
rows): 0.5B 66.7 % vs 49.4 % in PSM order, 1.5B 79.3 % vs 80.5 % (2 rows, within noise).
`PromptLayout(typed_line_leads=False)` (the `typedLineLeads` option) keeps PSM order throughout.

When nothing follows the cursor on its line, the suffix starts at the next line: the line break
is left out, so the middle spans it, as in Qwen's own FIM evaluation (HumanEval-FIM: the hole is
"\n<line>\n", the suffix starts on the line below). Measured through the whole pipeline on the
240 SantaCoder rows with the hole line deleted (`bench/fim_quality --variants editor`): the 1.5B
81.6 % weighted vs 78.3 % with the break kept (11 rows won, 3 lost: mostly empty answers that
became right ones); the 0.5B 49.4 % vs 52.4 % (2 won, 8 lost: it then writes `}` without a line
break, or nothing). So the embedded 0.5B keeps the break (`PromptLayout.for_model`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

logger = logging.getLogger(__name__)

TokenCounter = Callable[[str], int]
Segments = list[tuple[str, bool]]
LINE_STRIDE = 16
# Reserved for <|repo_name|>{name}, <|file_sep|>{current path} and the FIM tokens.
HEADER_TOKENS = 64
# A cursor line longer than this (minified code, data) stays at the end of the prefix: leading
# the middle with it would make the model continue a line it was never shown the start of.
MAX_LEAD_TOKENS = 256
# A prompt built on an earlier one of the same file (`Held`) keeps that one's prefix start while
# its prefix holds up to this many times the prefix quota.
HELD_PREFIX_FACTOR = 2
# A line may lead as it is after these; after a word these are healed (see above).
LEADING_LINE_ENDINGS = ("=",)
HEALED_AFTER_A_WORD = frozenset("([.")
# Models that do better with the line break kept at the start of the suffix (module docstring).
KEEP_LINE_BREAK_MODELS = frozenset({"qwen2.5-coder-0.5b"})


@dataclass(frozen=True)
class PromptBudget:
    """Token quotas of each part; the whole prompt plus reserved output fits `window_tokens`.

    `prefix_tokens` includes the typed line that leads the middle.
    """

    repo_tokens: int = 1024
    prefix_tokens: int = 1024
    # The suffix is re-read whenever the cursor changes lines (the typed line leads the middle,
    # so keystrokes within a line keep it cached): 128 tokens cost ~220 ms with the 0.5B here.
    suffix_tokens: int = 128
    output_tokens: int = 64
    window_tokens: int = 4096

    def __post_init__(self) -> None:
        # Room for the in-file part, the answer, and the repo name / current path lines.
        needed = self.prefix_tokens + self.suffix_tokens + self.output_tokens + HEADER_TOKENS
        if min(self.repo_tokens, self.prefix_tokens, self.suffix_tokens, self.output_tokens) < 0:
            raise ValueError("token quotas cannot be negative")
        if self.window_tokens < needed:
            raise ValueError(
                f"window of {self.window_tokens} tokens cannot hold prefix + suffix + output "
                f"+ {HEADER_TOKENS} ({needed})"
            )

    @property
    def held_prefix_tokens(self) -> int:
        """The most a prefix kept from an earlier prompt (`Held`) may hold."""
        room = self.window_tokens - self.output_tokens - self.suffix_tokens - HEADER_TOKENS
        return min(HELD_PREFIX_FACTOR * self.prefix_tokens, room)


@dataclass(frozen=True)
class PromptLayout:
    """Where the text around the cursor goes in the FIM prompt (both choices measured, see the
    module docstring)."""

    # The line being typed leads the middle (llama.vim's layout); false: Qwen's PSM order.
    typed_line_leads: bool = True
    # A cursor at the end of its line: the suffix starts at the next line (Qwen's evaluation).
    suffix_from_next_line: bool = True

    @classmethod
    def for_model(cls, model: str | None, **overrides: bool | None) -> PromptLayout:
        """The measured best layout for `model` (a model name, None: the default target), with
        the `overrides` that are not None applied."""
        defaults = {"suffix_from_next_line": model not in KEEP_LINE_BREAK_MODELS}
        chosen = {name: value for name, value in overrides.items() if value is not None}
        return cls(**{**defaults, **chosen})

    def fim_suffix(self, suffix: str) -> str:
        """The suffix as the prompt holds it: without the line break ending the cursor's line
        when nothing else follows the cursor there and `suffix_from_next_line` is set."""
        if self.suffix_from_next_line:
            for line_break in ("\r\n", "\n"):
                if suffix.startswith(line_break):
                    return suffix[len(line_break) :]
        return suffix


@dataclass(frozen=True)
class ContextPiece:
    """One repository file as it goes into the prompt: whole, or as an outline."""

    path: str
    content: str
    outlined: bool = False

    def text(self) -> str:
        """The segment after its <|file_sep|>."""
        return f"{self.path}\n{self.content}\n"


@dataclass(frozen=True)
class Prompt:
    """A prompt ready to encode, with the files it holds in order (current file last).

    `prefix` is all the text kept before the cursor; when `lead` is set, `prefix` ends with
    `lead + heal` (the cursor's line up to the cursor): `lead` sits after <|fim_middle|> rather
    than in <|fim_prefix|>, and `heal` is in no segment: the answer must start with it.
    """

    segments: Segments
    files: list[str]
    tokens: int
    prefix: str
    suffix: str
    lead: str = ""
    heal: str = ""
    pieces: tuple[ContextPiece, ...] = ()  # the repository pieces it holds, in order
    prefix_start: int = 0  # where `prefix` starts in the buffer (a character offset)

    @property
    def text(self) -> str:
        """The prompt as one string (what --show-prompt prints)."""
        return "".join(text for text, _ in self.segments)

    def held(self) -> Held:
        """What this prompt was built on, for a later prompt of the same file to keep."""
        return Held(self.prefix_start, self.prefix.split("\n", 1)[0], self.pieces)


@dataclass(frozen=True)
class Held:
    """What an earlier prompt of a file was built on: where its prefix started (a character
    offset and the text of that line) and the repository pieces it held. A prompt built on it
    (`build_prompt` given those pieces and `prefix_start`) shares that prompt's tokens up to
    what changed since, which the engine's cache may hold while a prompt chosen afresh (the
    window moved on, a definition appended to the repository part) is read again from where
    it differs."""

    prefix_start: int
    first_line: str
    pieces: tuple[ContextPiece, ...]

    def start_in(self, text: str, offset: int) -> int | None:
        """The held prefix start in `text` with the cursor at `offset`, or None when the line
        there changed, or the cursor is above it."""
        start = self.prefix_start
        at_line_start = start == 0 or text[start - 1 : start] == "\n"
        if start > offset or not at_line_start or not text.startswith(self.first_line, start):
            return None
        return start


def select_context(
    candidates: Sequence[tuple[str, str, Callable[[int], str]]],
    count: TokenCounter,
    budget_tokens: int,
) -> list[ContextPiece]:
    """Pick repository files, most relevant first, until `budget_tokens` is spent.

    `candidates` are (path, full text, outline factory) in rank order; a file goes in whole when
    it fits, else as its outline cut to the tokens left (the factory gets that budget), else not
    at all. Each piece costs its text plus the <|file_sep|> token.
    """
    chosen: list[ContextPiece] = []
    left = budget_tokens
    for path, text, make_outline in candidates:
        piece = ContextPiece(path, text)
        cost = count(piece.text()) + 1
        if cost > left:
            # What the outline may spend: the budget minus the path line, separators and slack
            # for a merge across the joins.
            room = left - count(f"{path}\n") - 4
            outline = make_outline(room) if room > 0 else ""
            piece = ContextPiece(path, outline, outlined=True)
            cost = count(piece.text()) + 1
            if not outline.strip() or cost > left:
                continue
        chosen.append(piece)
        left -= cost
    return chosen


def _window_start(lines: list[str], cursor_line: str, count: TokenCounter, budget: int) -> int:
    """Index of the first line kept before the cursor line: as early as the budget allows,
    rounded forward to a multiple of LINE_STRIDE so that it rarely moves."""
    used = count(cursor_line)
    start = len(lines)
    while start > 0 and used + count(lines[start - 1]) <= budget:
        start -= 1
        used += count(lines[start])
    return -(-start // LINE_STRIDE) * LINE_STRIDE if start > 0 else 0


def _tail_within(text: str, count: TokenCounter, budget: int) -> str:
    """The longest tail of `text` that fits `budget` tokens (binary search on characters)."""
    low, high = 0, len(text)
    while low < high:
        middle = (low + high) // 2
        if count(text[middle:]) <= budget:
            high = middle
        else:
            low = middle + 1
    return text[low:]


def fim_window(
    text: str,
    offset: int,
    count: TokenCounter,
    budget: PromptBudget,
    prefix_start: int | None = None,
) -> tuple[str, str]:
    """The prefix and suffix around character `offset`, each within its token quota; with
    `prefix_start` (a line start), the prefix starts there while it holds at most
    `budget.held_prefix_tokens`."""
    before, after = text[:offset], text[offset:]
    suffix = _suffix_within(after, count, budget.suffix_tokens)
    if prefix_start is not None and count(before[prefix_start:]) <= budget.held_prefix_tokens:
        return before[prefix_start:], suffix
    return _prefix_within(before, count, budget.prefix_tokens), suffix


def _prefix_within(before: str, count: TokenCounter, budget: int) -> str:
    """The end of `before` the prefix window keeps within `budget` tokens."""
    *lines, cursor_line = before.split("\n")
    lines = [line + "\n" for line in lines]
    start = _window_start(lines, cursor_line, count, budget)
    prefix = "".join(lines[start:]) + cursor_line
    # Line-by-line counts can differ from the joined text's by a merge across a line end:
    # check the real total and drop whole strides until it fits.
    while count(prefix) > budget and start < len(lines):
        start += LINE_STRIDE
        prefix = "".join(lines[start:]) + cursor_line
    if count(prefix) > budget:
        # One cursor line longer than the whole quota: keep its end.
        prefix = _tail_within(prefix, count, budget)
    return prefix


def _suffix_within(after: str, count: TokenCounter, budget: int) -> str:
    """The whole lines at the start of `after` that fit `budget` tokens."""
    suffix_lines = after.splitlines(keepends=True)
    kept, used = 0, 0
    while kept < len(suffix_lines) and used + count(suffix_lines[kept]) <= budget:
        used += count(suffix_lines[kept])
        kept += 1
    suffix = "".join(suffix_lines[:kept])
    while count(suffix) > budget and kept > 0:  # a merge across a line end (see above)
        kept -= 1
        suffix = "".join(suffix_lines[:kept])
    return suffix


def cursor_line_lead(text: str, offset: int, prefix: str, count: TokenCounter) -> tuple[str, str]:
    """(lead, heal) for a cursor: the cursor's line up to the cursor split into the part that
    leads the middle and the end the answer must start with (see the module docstring); ("",
    "") when the line stays in the prefix: it is blank or does not end as a leading line does,
    is cut by the budget (not all of it in the kept `prefix`), or is over MAX_LEAD_TOKENS."""
    line = text[text.rfind("\n", 0, offset) + 1 : offset]
    lead = line.rstrip(" \t")
    if (
        lead == line
        and line[-1:] in HEALED_AFTER_A_WORD
        and (line[-2:-1].isalnum() or line[-2:-1] == "_")
    ):
        lead = line[:-1]
    heal = line[len(lead) :]
    leads = bool(lead.strip()) and (bool(heal) or lead.endswith(LEADING_LINE_ENDINGS))
    if not leads or len(line) > len(prefix) or count(lead) > MAX_LEAD_TOKENS:
        return "", ""
    return lead, heal


def build_prompt(
    current_path: str,
    text: str,
    offset: int,
    count: TokenCounter,
    budget: PromptBudget | None = None,
    repo_name: str | None = None,
    context: Sequence[ContextPiece] = (),
    layout: PromptLayout | None = None,
    prefix_start: int | None = None,
) -> Prompt:
    """The FIM prompt for a cursor at character `offset` of `text`.

    Without `repo_name` it is the plain in-file prompt; with it, Qwen's repository layout with
    `context` pieces in the given order before the current file (chosen within
    `budget.repo_tokens` by `select_context`); a piece that would push the prompt plus reserved
    output past `budget.window_tokens` is left out. `layout` places the typed line and the
    suffix (default: PromptLayout()). `prefix_start` keeps an earlier prompt's prefix start
    (`Held.start_in`; see `fim_window`).
    """
    budget = budget or PromptBudget()
    layout = layout or PromptLayout()
    prefix, suffix = fim_window(text, offset, count, budget, prefix_start)
    start = offset - len(prefix)
    lead, heal = ("", "")
    if layout.typed_line_leads:
        lead, heal = cursor_line_lead(text, offset, prefix, count)
    above = prefix[: len(prefix) - len(lead) - len(heal)]
    fim_suffix = layout.fim_suffix(suffix)
    fim: Segments = [
        ("<|fim_prefix|>", True),
        (above, False),
        ("<|fim_suffix|>", True),
        (fim_suffix, False),
        ("<|fim_middle|>", True),
    ]
    if lead:
        fim.append((lead, False))
    tokens = count(above) + count(lead) + count(fim_suffix) + 3
    if repo_name is None:
        logger.debug("in-file prompt: %d tokens", tokens)
        return Prompt(fim, [current_path], tokens, prefix, suffix, lead, heal, (), start)

    header: Segments = [("<|repo_name|>", True), (f"{repo_name}\n", False)]
    current: Segments = [("<|file_sep|>", True), (f"{current_path}\n", False)]
    tokens += 2 + count(f"{repo_name}\n") + count(f"{current_path}\n")
    room = budget.window_tokens - budget.output_tokens - tokens
    pieces: Segments = []
    kept: list[ContextPiece] = []
    for piece in context:
        cost = count(piece.text()) + 1
        if cost > room:
            continue
        room -= cost
        tokens += cost
        pieces += [("<|file_sep|>", True), (piece.text(), False)]
        kept.append(piece)
    files = [piece.path for piece in kept]
    logger.debug("repo prompt: %d tokens, %d context files", tokens, len(files))
    segments = header + pieces + current + fim
    return Prompt(
        segments, [*files, current_path], tokens, prefix, suffix, lead, heal, tuple(kept), start
    )
