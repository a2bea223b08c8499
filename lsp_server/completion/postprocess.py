"""What happens to raw model text before anyone sees it.

The Instruct models fill the hole and then often keep going (more lines, test code): the notes
measured it. So generation stops at the end of what the cursor asks for — the rest of the line
when the cursor is mid-line, else the indented block it sits in (`stop_rule`) — and `postprocess`
then turns the generated text into a `Suggestion`: the text to insert, and how many characters
after the cursor it replaces (closers the editor auto-inserted), or None when nothing is worth
showing. `RULES` lists every step, in order, and says why that order.

Decisions worth knowing:
- Mid-line (code follows the cursor on its line) means the rest of the line; otherwise (a
  blank line, after `:` or `{`, a line being typed) the indented block: on a line being typed,
  the rest of it (or, when the model finds it complete, the next line) and the lines of its
  block after it. An editor is shown the first line as soon as it is written; the rest goes to
  the forward cache, so that finishing the line and pressing Enter shows the next ones without
  a model call. Without that (the CLI, which waits for the whole answer) and at the top level
  (a block there would run into what follows) a line being typed gets that one line. Inside a
  multi-line construct (`if (` above the cursor) the block is the statement's: its closing
  line, indented less than the cursor, does not end it.
  `foo({|})` is mid-line too, so a brace the editor auto-closed on the cursor's line gets a
  one-line body; after Enter the closer is on the next line and the block rules apply.
- Text is handled with "\\n" line breaks and converted back to the file's ("\\r\\n") at the end.
- Mid-line at the start of a line (only indentation before the cursor), the model may write a
  whole new line to go before the code: the suggestion then ends with its line break.
- Short suggestions: fewer than 3 non-space characters is shown only when it finishes a line the
  user started and holds a word character (` b` after `return a +`, `1` after `x = `), or when
  it is a line of closers the file lacks (accepting it removes a syntax error: the `}` a Java
  method still needs). A `;`, a closer the file does not need, and a lone word on an empty line
  are not shown. A closer line at column 0 ends a block suggestion; other column-0 lines from
  inside a definition start a new one and are cut.
- Control characters (C0 but tab and line breaks, DEL, C1) that the file does not already use,
  and NUL always, end the suggestion: it is cut before the first one, keeping what precedes it.
- The syntax check only trims: it never adds text and never moves the replace range beyond what
  the bracket rule decided (re-deciding it for the trimmed text).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import tree_sitter

from context.parsing import PYTHON, edit_tree, language_for_path, parse

OPENERS = "([{"
CLOSERS = ")]}"
QUOTES = "\"'`"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


@dataclass(frozen=True)
class CursorContext:
    """The cursor's line, split at the cursor, and the rest of the document around it.

    `above` ends with the line break before the cursor's line and `below` starts with the one
    after it (both "" when unknown), so `above + line_prefix + line_suffix + below` is the file.
    """

    line_prefix: str
    line_suffix: str
    above: str = ""
    below: str = ""
    path: str = ""

    @classmethod
    def at(cls, text: str, offset: int, path: str = "") -> CursorContext:
        """The context of character `offset` in `text`, the buffer of `path`."""
        line_start = text.rfind("\n", 0, offset) + 1
        line_end = text.find("\n", offset)
        if line_end < 0:
            line_end = len(text)
        elif line_end > offset and text[line_end - 1] == "\r":
            line_end -= 1  # CRLF: the "\r" belongs to the line break, not to the suffix
        return cls(
            text[line_start:offset], text[offset:line_end], text[:line_start], text[line_end:], path
        )

    @property
    def mid_line(self) -> bool:
        """Code follows the cursor on its line: complete that line only."""
        return bool(self.line_suffix.strip())

    @property
    def block_indent(self) -> int:
        """Indentation of the block the cursor is in."""
        return _indent(self.line_prefix) if self.line_prefix.strip() else len(self.line_prefix)

    @property
    def statement_indent(self) -> int:
        """Indentation of the statement the cursor is in: that of the line that opened a
        bracket still open at the cursor (`if (` above), else `block_indent`."""
        pending = _pending_openers(self)
        return _indent(pending[0][0]) if pending else self.block_indent

    @property
    def typing_line(self) -> bool:
        """Code before the cursor, none after, and the line opens no block: the user is
        writing this line (the suggestion is the rest of it, or when the model finds it
        complete, the next line, then the block's next lines; see `stop_rule`)."""
        return not self.mid_line and bool(self.line_prefix.strip()) and not self.opens_block

    @property
    def at_line_start(self) -> bool:
        """Only indentation before the cursor and code after it on its line."""
        return self.mid_line and not self.line_prefix.strip()

    @property
    def opens_block(self) -> bool:
        """The cursor ends a line that opens a block: the completion is that block's body."""
        return self.line_prefix.rstrip().endswith((":", "{"))

    @property
    def eol(self) -> str:
        """The file's line break."""
        around = self.below if self.below else self.above[-2:]
        return "\r\n" if around.startswith("\r\n") else "\n"

    @property
    def language(self) -> str | None:
        """The tree-sitter language id of the file, or None."""
        return language_for_path(self.path) if self.path else None

    @property
    def document(self) -> str:
        """The whole file as it is now."""
        return self.above + self.line_prefix + self.line_suffix + self.below

    def next_line(self) -> str | None:
        """The first non-blank line after the cursor's line (without its line break)."""
        start = self.below.find("\n")
        while start >= 0:
            end = self.below.find("\n", start + 1)
            line = self.below[start + 1 : None if end < 0 else end].rstrip("\r")
            if line.strip():
                return line
            start = end
        return None

    def previous_line(self) -> str | None:
        """The last non-blank line before the cursor's line (without its line break)."""
        end = len(self.above) - 1  # the line break ending the previous line
        while end >= 0:
            start = self.above.rfind("\n", 0, end) + 1
            line = self.above[start:end].rstrip("\r")
            if line.strip():
                return line
            end = start - 1
        return None


@dataclass(frozen=True)
class Suggestion:
    """Text to insert at the cursor, replacing the next `replace_suffix_chars` characters."""

    text: str
    replace_suffix_chars: int = 0


def stop_rule(
    context: CursorContext, *, typed_line_block: bool = False
) -> Callable[[str], int | None]:
    """A function telling where to cut generated text: end of line, or end of the block. A line
    being typed gets its block only with `typed_line_block` (a caller that shows the first line
    first and keeps the rest, and post-processing, which keeps what the generation wrote);
    else that one line (the CLI and the benchmarks' other engines wait for the whole answer)."""

    def end_of_line(text: str) -> int | None:
        index = text.find("\n")
        if index < 0:
            return None
        # At the start of a line that holds code, a whole new line goes in before that code:
        # its line break is part of the suggestion.
        return index + 1 if context.at_line_start else index

    if context.mid_line:
        return end_of_line
    statement_indent = context.statement_indent  # scans the lines above once, not per token

    def end_of_block(text: str) -> int | None:
        # Inside a multi-line construct (`if (` above), its closing line is not the end.
        base = statement_indent
        # A suggestion that starts on a new line after a finished statement may dedent out of
        # a nested block (the next statement of the enclosing one): its first line sets the
        # block, except that it may not start a new top-level definition from inside one.
        first_line_sets_block = text.startswith("\n") and not context.opens_block
        position = text.find("\n")
        while position >= 0:
            following = text.find("\n", position + 1)
            if following < 0:
                return None  # the next line is still being written
            line = text[position + 1 : following]
            if line.strip():
                indent = _indent(line)
                if first_line_sets_block:
                    first_line_sets_block = False
                    if indent == 0 < context.block_indent:
                        # Closing the enclosing definition (`}` of a Java method) ends the
                        # suggestion; anything else at column 0 starts a new definition.
                        return following if is_closer_line(line) else position
                    base = min(base, indent)
                elif indent < base or (context.opens_block and indent <= context.block_indent):
                    return position
            position = following
        return None

    def end_of_first_line(text: str) -> int | None:
        start = len(text) - len(text.lstrip())
        if start == len(text):
            return None  # nothing but whitespace yet
        index = text.find("\n", start)
        if index < 0:
            return None
        line_start = text.rfind("\n", 0, start) + 1
        if line_start > 0 and _indent(text[line_start:index]) == 0 < context.block_indent:
            # As in a block: a new line at column 0 from inside a definition starts another
            # definition, unless it closes this one.
            return index if is_closer_line(text[line_start:index]) else 0
        return index

    if context.typing_line and not (typed_line_block and statement_indent):
        return end_of_first_line  # at the top level a block would run into what follows
    return end_of_block


# --- helpers -----------------------------------------------------------------------------------


def is_closer_line(line: str) -> bool:
    """A line of closing brackets only, perhaps with `;` or `,` (`}`, `});`, `)`)."""
    return re.fullmatch(r"[)\]}]+[;,]?", line.strip()) is not None


def _with(suggestion: Suggestion, text: str, replace: int | None = None) -> Suggestion:
    if replace is None:
        replace = suggestion.replace_suffix_chars
    return dataclasses.replace(suggestion, text=text, replace_suffix_chars=replace)


def _keep_lines(lines: list[str], count: int) -> str:
    """The first `count` lines, without trailing blank lines or spaces."""
    return "\n".join(lines[:count]).rstrip()


def _full_lines(text: str, context: CursorContext) -> list[str]:
    """The completion's lines as they will read in the file (the first one joins the cursor's)."""
    lines = text.split("\n")
    lines[0] = context.line_prefix + lines[0]
    return lines


def comment_marker(context: CursorContext) -> str | None:
    language = context.language
    if language is None:
        return None
    return "#" if language == PYTHON else "//"


def scan_brackets(line: str, comment: str | None) -> tuple[list[int], list[tuple[int, int]]]:
    """Bracket and quote pairs of one line: (indexes of the openers left open, and every
    (closer index, opener index) with -1 for a closer whose opener is not on this line).

    Brackets inside strings do not count; quotes open and close strings; a line comment ends
    the scan. Good enough for one line of code, not a tokenizer.
    """
    stack: list[int] = []
    closes: list[tuple[int, int]] = []
    index = 0
    while index < len(line):
        char = line[index]
        if stack and line[stack[-1]] in QUOTES:  # inside a string
            if char == "\\":
                index += 2
                continue
            if char == line[stack[-1]]:
                closes.append((index, stack.pop()))
        elif comment is not None and line.startswith(comment, index):
            break
        elif char in OPENERS or char in QUOTES:
            stack.append(index)
        elif char in CLOSERS:
            if stack and line[stack[-1]] == OPENERS[CLOSERS.index(char)]:
                closes.append((index, stack.pop()))
            else:
                closes.append((index, -1))
        index += 1
    return stack, closes


def _imbalance(line: str, comment: str | None) -> int:
    """Openers left open plus closers without an opener, on one line."""
    opened, closes = scan_brackets(line, comment)
    return len(opened) + sum(1 for _, opener in closes if opener < 0)


# Lines above the cursor's searched for brackets a multi-line construct left open.
PENDING_LINES = 12


def _pending_openers(context: CursorContext) -> list[tuple[str, str]]:
    """The brackets opened on the lines above the cursor's (up to PENDING_LINES) and still
    open at the cursor, outermost first: (the line that opened it, the opener)."""
    comment = comment_marker(context)
    lines = context.above.split("\n")[-PENDING_LINES - 1 : -1]
    pending: list[tuple[str, str]] = []
    for number, line in enumerate([*lines, context.line_prefix]):
        opened, closes = scan_brackets(line, comment)
        for _, opener in closes:
            if opener < 0 and pending:
                pending.pop()
        if number < len(lines):  # the cursor's own line closes, it opens nothing pending
            pending += [(line, line[index]) for index in opened if line[index] in OPENERS]
    return pending


def _pending_closers(context: CursorContext) -> str:
    """Closers of the brackets still open at the cursor from the lines above: the rest of a
    multi-line construct the user has yet to type (`if (` above `    name := |` gives `)`);
    "" when none."""
    pending = _pending_openers(context)
    return "".join(CLOSERS[OPENERS.index(opener)] for _, opener in reversed(pending))


def _closer_run(suffix: str) -> str:
    """The closing brackets and quotes right after the cursor (what editors auto-insert)."""
    run = re.match(r"[)\]}\"'`]*", suffix)
    return run.group(0) if run else ""


def _consume_closers(text: str, context: CursorContext) -> tuple[str, int]:
    """`text` and how many closers after the cursor it replaces: closers in `text` that close
    an opener before the cursor take the place of the same closers the editor already put after
    it. A replaced closer that `text` ends with is dropped from both (the same edit, a smaller
    range), so `foo(|)` + `a)` is inserted as `a` replacing nothing."""
    run = _closer_run(context.line_suffix) if context.mid_line else ""
    if not run or "\n" in text:
        return text, 0
    start = len(context.line_prefix)
    line = context.line_prefix + text
    _, closes = scan_brackets(line, comment_marker(context))
    closing = [line[closer] for closer, opener in closes if closer >= start and opener < start]
    count = 0
    while count < min(len(closing), len(run)) and closing[count] == run[count]:
        count += 1
    while count > 0 and text.endswith(run[count - 1]):
        text, count = text[:-1], count - 1
    return text, count


# --- the rules ---------------------------------------------------------------------------------

Rule = Callable[[Suggestion, CursorContext], Suggestion]


# C0 controls but tab and line breaks, DEL and C1 controls.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def cut_control_characters(suggestion: Suggestion, context: CursorContext) -> Suggestion:
    """Cut before the first control character the file does not already use (a form feed in a
    file with page breaks stays); a NUL is always cut, even when the document holds one (it
    would end the text in many editors and tools, and a model echoes what it sees)."""
    for match in _CONTROL.finditer(suggestion.text):  # rare: the document is built only then
        char = match.group()
        if char == "\0" or char not in context.document:
            return _with(suggestion, suggestion.text[: match.start()])
    return suggestion


def limit_scope(suggestion: Suggestion, context: CursorContext) -> Suggestion:
    """The same cut as during generation: the rest of the line, or the indented block."""
    text = suggestion.text
    cut = stop_rule(context, typed_line_block=True)(text + "\n")
    return _with(suggestion, text if cut is None else text[:cut])


def trim_trailing_space(suggestion: Suggestion, context: CursorContext) -> Suggestion:
    """No trailing blank lines or spaces; but a space before a word that follows the cursor on
    its line stays (`return |x` + `not ` must not become `return notx`)."""
    text = suggestion.text
    if context.at_line_start and text.rstrip(" \t").endswith("\n"):
        return _with(suggestion, text.rstrip() + "\n" if text.strip() else "")
    if context.mid_line and re.match(r"\w", context.line_suffix):
        return _with(suggestion, text if text.strip() else "")
    return _with(suggestion, text.rstrip())


def drop_repetition(suggestion: Suggestion, context: CursorContext) -> Suggestion:
    """Cut a loop at its first repetition: a line (or a block of up to 4 lines) repeated 3+
    times in a row keeps its first copy; a last line ending in a 2-16 character pattern
    repeated 4+ times (`foo(foo(foo(foo(`, `0, 0, 0, 0, `) keeps the first unit. Runs of one
    character (`# ------`) are decoration, not loops."""
    lines = suggestion.text.split("\n")
    full = [line.rstrip() for line in _full_lines(suggestion.text, context)]
    for first in range(len(full)):
        for period in range(1, 5):
            if first + 3 * period > len(full):
                break
            block = full[first : first + period]
            if (
                any(line.strip() for line in block)
                and full[first + period : first + 2 * period] == block
                and full[first + 2 * period : first + 3 * period] == block
            ):
                return _with(suggestion, _keep_lines(lines, first + period))
    last = full[-1]
    for unit in range(2, 17):
        if len(last) < 4 * unit:
            break
        start = len(last) - unit
        while start > 0 and last[start - 1] == last[start - 1 + unit]:
            start -= 1
        pattern = last[start : start + unit]
        if len(last) - start >= 4 * unit and len(set(pattern)) > 1 and pattern.strip():
            offset = len(context.line_prefix) if len(lines) == 1 else 0
            lines[-1] = lines[-1][: max(0, start + unit - offset)]
            return _with(suggestion, "\n".join(lines).rstrip())
    return suggestion


def fix_block_indentation(suggestion: Suggestion, context: CursorContext) -> Suggestion:
    """A block the model indented deeper than the cursor's line allows is shifted back.

    Only on a blank cursor line: the first line's leading whitespace adds to the cursor's
    column. It is excess beyond the previous line's indentation, unless that line opens a block
    or continues (ends with an opener, `:`, `,`, an operator), where a deeper body is right. The
    whole block moves when every later line is at least as deep as the first, else only the
    first line does (the model wrote it with the file's indentation, the rest is right already).
    """
    lines = suggestion.text.split("\n")
    column = len(context.line_prefix)
    lead = _indent(lines[0])
    if context.mid_line or context.line_prefix.strip() or lead == 0 or not lines[0].strip():
        return suggestion
    previous = context.previous_line()
    if previous is not None and previous.rstrip().endswith(tuple(":{([,\\=+-*/|&<>")):
        return suggestion
    level = _indent(previous) if previous is not None else column
    excess = column + lead - max(column, level)
    if excess <= 0:
        return suggestion
    rest = [line for line in lines[1:] if line.strip()]
    lines[0] = lines[0][excess:]
    if all(_indent(line) >= column + lead for line in rest):
        lines[1:] = [line[excess:] if line.strip() else line for line in lines[1:]]
    return _with(suggestion, "\n".join(lines))


def drop_following_lines(suggestion: Suggestion, context: CursorContext) -> Suggestion:
    """Stop where the model re-emits the line that already follows the cursor (the next
    statement, or the closing line of the enclosing block): compared whole, indentation
    included. The first line counts only when the cursor's line was blank."""
    target = context.next_line()
    if context.mid_line or target is None:
        return suggestion
    lines = suggestion.text.split("\n")
    full = _full_lines(suggestion.text, context)
    for index, line in enumerate(full):
        if index == 0 and context.line_prefix.strip():
            continue
        if line.strip() and line.rstrip() == target.rstrip():
            return _with(suggestion, _keep_lines(lines, index))
    return suggestion


def drop_suffix_echo(suggestion: Suggestion, context: CursorContext) -> Suggestion:
    """Mid-line, a text ending with the rest of the line (`x = |;` + `5;`) loses that copy —
    unless the copy closes something the text opened (`foo(|)` + `bar()` stays), judged by
    which version leaves the cursor's line with fewer unbalanced brackets."""
    rest = context.line_suffix.strip()
    text = suggestion.text
    if context.at_line_start and text.endswith("\n"):  # a new line: an echo copies the next
        return _with(suggestion, "") if text.strip() == rest else suggestion
    if not context.mid_line or not text.rstrip().endswith(rest):
        return suggestion
    kept = text.rstrip()[: -len(rest)]
    if context.line_suffix[:1].isspace():
        kept = kept.rstrip()
    comment = comment_marker(context)
    with_echo = _imbalance(context.line_prefix + text + context.line_suffix, comment)
    without = _imbalance(context.line_prefix + kept + context.line_suffix, comment)
    return _with(suggestion, kept) if without <= with_echo else suggestion


def closers_on_their_own_line(suggestion: Suggestion, context: CursorContext) -> Suggestion:
    """At the end of a line that leaves no bracket open, closers written without a line break
    (`return x;` + `}`: the model, given a suffix that starts at the next line, may leave the
    break out) close an earlier line's block, so they go on a line of their own: indented as
    the model indented them, else as the line that opened the block. Whether the file needs
    them is left to `drop_trivial`'s syntax check."""
    text = suggestion.text
    if context.mid_line or not context.line_prefix.strip() or "\n" in text:
        return suggestion
    left_open, _ = scan_brackets(context.line_prefix, comment_marker(context))
    if not is_closer_line(text) or left_open:
        return suggestion
    indent = text[: _indent(text)] or _opener_indent(context)
    return _with(suggestion, "\n" + indent + text.strip())


def _opener_indent(context: CursorContext) -> str:
    """The indentation of the nearest line above the cursor's that is indented less than it
    (the line that opened the cursor's block), or "" when there is none."""
    level = _indent(context.line_prefix)
    for line in reversed(context.above.split("\n")):
        if line.strip() and _indent(line) < level:
            return line[: _indent(line)]
    return ""


def consume_auto_closed(suggestion: Suggestion, context: CursorContext) -> Suggestion:
    """Closers the editor auto-inserted after the cursor are not emitted twice: see
    `_consume_closers` (`foo(|)` + `a) + 1` replaces the `)`)."""
    text, replace = _consume_closers(suggestion.text, context)
    return _with(suggestion, text, replace)


class SyntaxCheck:
    """Syntax errors of the file as it is and as it would be with a suggestion accepted.

    tree-sitter ERROR and MISSING nodes are counted; each candidate is parsed incrementally
    from the current tree.
    """

    def __init__(self, context: CursorContext, tree: tree_sitter.Tree) -> None:
        self.context = context
        self.tree = tree
        self.old = context.document.encode("utf-8", "surrogatepass")
        self.current_errors = _syntax_errors(tree.root_node)

    @classmethod
    def of(cls, context: CursorContext) -> SyntaxCheck | None:
        """A check for the file at `context`, or None when its language has no grammar."""
        tree = parse(context.path, context.document) if context.language is not None else None
        return None if tree is None else cls(context, tree)

    def errors_with(self, text: str, replace: int) -> int | None:
        """Errors after inserting `text` in place of `replace` characters after the cursor."""
        context = self.context
        after = (
            context.above
            + context.line_prefix
            + text.replace("\n", context.eol)
            + context.line_suffix[replace:]
            + context.below
        )
        new = after.encode("utf-8", "surrogatepass")
        edited = self.tree.copy()
        edit_tree(edited, self.old, new)
        reparsed = parse(context.path, new, edited)
        return None if reparsed is None else _syntax_errors(reparsed.root_node)


def keep_valid_syntax(suggestion: Suggestion, context: CursorContext) -> Suggestion:
    """Trim the text to a prefix that adds no syntax error to the file.

    Candidates are the text's prefixes by whole lines (a single line: cut before a closer, see
    `_syntax_candidates`), longest first, each checked by `SyntaxCheck`. The file as it is now
    sets the limit, and among candidates within it the one with the fewest errors wins, the
    longest on a tie: the hole's own error (`total = sum(|` already is one) must not let a
    broken tail through (`xs))` keeps `xs)`). When no candidate passes and the cursor is inside
    a multi-line construct the user is still typing (`if (` above `    name := |`), they are
    judged again with the construct's brackets closed, the file before them too. Files without
    a grammar are not checked.
    """
    check = SyntaxCheck.of(context)
    if check is None:
        return suggestion
    best = _least_errors(suggestion, context, check, "")
    pending = _pending_closers(context) if "\n" not in suggestion.text else ""
    if best is None and pending:
        best = _least_errors(suggestion, context, check, pending)
    return best if best is not None else _with(suggestion, "", 0)


def _least_errors(
    suggestion: Suggestion, context: CursorContext, check: SyntaxCheck, pending: str
) -> Suggestion | None:
    """The candidate of `keep_valid_syntax` adding the fewest errors (none more than the file
    has now), each judged with `pending` typed after it; None when none passes."""
    allowed = check.errors_with(pending, 0) if pending else check.current_errors
    if allowed is None:
        return None
    best: Suggestion | None = None
    fewest = allowed
    for index, candidate in enumerate(_syntax_candidates(suggestion.text)):
        text, replace = (
            (candidate, suggestion.replace_suffix_chars)
            if index == 0
            else _consume_closers(candidate, context)
        )
        errors = check.errors_with(text + pending, replace)
        if errors is None:
            continue
        if errors <= allowed and (best is None or errors < fewest):
            best, fewest = _with(suggestion, text, replace), errors
            if errors == 0:
                break
    return best


def _syntax_errors(root: tree_sitter.Node) -> int:
    """ERROR and MISSING nodes under `root`, visiting only subtrees that contain one."""
    count = 0
    pending = [root]
    while pending:
        node = pending.pop()
        if node.is_error or node.is_missing:
            count += 1
        pending.extend(child for child in node.children if child.has_error)
    return count


def _syntax_candidates(text: str, limit: int = 12) -> Iterator[str]:
    """Prefixes of `text`, longest first, each once, none blank: whole lines; a single line is
    cut before each of its last `limit` closing brackets instead. Only before closers: an
    over-closed line is wrong, while one that opens more than it closes (`if (x > 0) {`) is
    merely unfinished and must not lose its opener to a cut that happens to parse."""
    lines = text.split("\n")
    if len(lines) > 1:
        shorter = [_keep_lines(lines, count) for count in range(len(lines) - 1, 0, -1)]
    else:
        cuts = [index for index, char in enumerate(text) if char in CLOSERS][-limit:]
        shorter = [text[:index].rstrip() for index in reversed(cuts)]
    seen: set[str] = set()
    for candidate in [text, *shorter]:
        if candidate.strip() and candidate not in seen:
            seen.add(candidate)
            yield candidate


def drop_trivial(suggestion: Suggestion, context: CursorContext) -> Suggestion:
    """Nothing for whitespace, or for under 3 non-space characters unless they finish a line
    the user started and hold a word character (` b` after `return a +` is kept; a lone `;` or
    a lone word on an empty line is not), or they are a line of closers that the file lacks:
    a `}` on its own line that removes a syntax error (the method's missing brace) is the
    whole answer, while one the file does not need is noise."""
    shown = "".join(suggestion.text.split())
    if len(shown) >= 3:
        return suggestion
    finishes_line = bool(context.line_prefix.strip())
    if shown and finishes_line and re.search(r"\w", shown):
        return suggestion
    if shown and _closes_what_is_open(suggestion, context):
        return suggestion
    return _with(suggestion, "", 0)


def _closes_what_is_open(suggestion: Suggestion, context: CursorContext) -> bool:
    """`suggestion` is a line of its own made of closers, and accepting it leaves the file
    with fewer syntax errors."""
    own_line = suggestion.text.startswith("\n") or not context.line_prefix.strip()
    if not own_line or context.mid_line or not is_closer_line(suggestion.text):
        return False
    check = SyntaxCheck.of(context)
    if check is None:
        return False
    errors = check.errors_with(suggestion.text, suggestion.replace_suffix_chars)
    return errors is not None and errors < check.current_errors


# The order matters:
# 0. cut_control_characters before anything: nothing after a control character the file does
#    not use can be shown, and every later rule should judge the text that is left.
# 1. limit_scope next: it is the cut generation already made, and every later rule should only
#    see what could be shown.
# 2. trim_trailing_space next, so that line comparisons and "ends with" checks see clean ends.
# 3. drop_repetition before the rules that compare lines: a loop is cut to its first copy
#    whatever else it contains, and the later rules need not reason about it.
# 4. fix_block_indentation before drop_following_lines, which compares whole lines including
#    their indentation (an over-indented copy of the next line only matches once shifted).
# 5. drop_following_lines (block mode) and then drop_suffix_echo / consume_auto_closed
#    (mid-line): the echo of the whole rest of the line goes first, since dropping it needs no
#    replace range; consume_auto_closed then settles the closers that remain.
# 6. closers_on_their_own_line before the syntax check, which judges the line it makes.
# 7. keep_valid_syntax after every rule that edits the text or the replace range: it parses
#    the file exactly as it would be after accepting.
# 8. drop_trivial last: it judges exactly what would be shown, after every trim.
RULES: tuple[Rule, ...] = (
    cut_control_characters,
    limit_scope,
    trim_trailing_space,
    drop_repetition,
    fix_block_indentation,
    drop_following_lines,
    drop_suffix_echo,
    consume_auto_closed,
    closers_on_their_own_line,
    keep_valid_syntax,
    drop_trivial,
)


def postprocess(text: str, context: CursorContext) -> Suggestion | None:
    """What to show for raw model `text` at `context`, or None when nothing is worth showing."""
    suggestion = Suggestion(text.replace("\r\n", "\n"))
    for rule in RULES:
        suggestion = rule(suggestion, context)
        if not suggestion.text:
            return None
    return _with(suggestion, suggestion.text.replace("\n", context.eol))
