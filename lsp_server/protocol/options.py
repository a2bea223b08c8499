"""Server options: camelCase on the wire (initializationOptions, didChangeConfiguration),
resolved into typed, defaulted settings. Each field's type says which wire values it takes (a
`Literal` its choices, `Annotated[int, Bounds(...)]` its range). An invalid value is reported by
field name and that field falls back to its default; the rest of the options still apply."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args, get_origin, get_type_hints

from context.prompt import PromptBudget, PromptLayout
from runtime import models
from runtime.config import Precision
from runtime.session import Provider

logger = logging.getLogger(__name__)

# local: this process runs the model; remote: an OpenAI-compatible server at engine_url
# (`coder-lsp serve`, vLLM, llama.cpp); auto: remote when engine_url is set.
EngineMode = Literal["auto", "local", "remote"]
LogLevel = Literal["debug", "info", "warning", "error"]


@dataclass(frozen=True)
class Bounds:
    """The range of an integer option, both ends included: `Annotated[int, Bounds(0, 10)]`."""

    low: int
    high: int


@dataclass(frozen=True)
class ServerOptions:
    """Resolved settings; every field has a value."""

    model: str = models.DEFAULT_TARGET
    draft_model: str | None = models.DEFAULT_DRAFT
    precision: Precision = models.DEFAULT_PRECISION
    provider: Provider = "auto"
    engine: EngineMode = "auto"
    engine_url: str | None = None  # a remote engine (team server) instead of a local model
    engine_token: str | None = None
    max_tokens: Annotated[int, Bounds(1, 1024)] = 64
    debounce_ms: Annotated[int, Bounds(0, 5000)] = 150
    # The time a suggestion may take from the request (0: no limit, wait for the whole
    # answer). Within it a block answer is shown as soon as its first whole lines are written
    # and the rest is generated in the background (lsp_server/completion/live.py).
    max_latency_ms: Annotated[int, Bounds(0, 60000)] = 900
    # Tokens of repository context: 256 rather than the one-shot CLI's 1,024 (bench/RESULTS.md,
    # replay runs A, B, J: 13-52 more line matches in time, the cold prompt after a jump read
    # faster; on holes with no time limit 1,024 holds more definitions). Raise it where
    # prefill is cheap (a GPU, a team server).
    context_budget: Annotated[int, Bounds(0, 16384)] = 256
    # Tokens of the text after the cursor, read again at every pause inside a word and on a new
    # line: 48 rather than the one-shot CLI's 128 (bench/RESULTS.md: on the replay, 113 line
    # matches instead of 78, the 128 tokens' re-read alone outlasting the time budget here; on
    # SantaCoder FIM holes with no time limit, Python unchanged, Java and JavaScript 4-12
    # points lower). Raise it where prefill is cheap (a GPU, a team server).
    suffix_budget: Annotated[int, Bounds(0, 1024)] = 48
    # Tokens of the text before the cursor, read whole whenever the window before the cursor
    # moves (a file opened, a jump; the window stepping forward as lines are typed is read in
    # the background while the last window, up to twice this, answers): 512 rather
    # than the one-shot CLI's 1,024 (bench/RESULTS.md, replay runs K and L: the target is back
    # from the small model after 2-3 pauses instead of 5-9, more line matches). At most 1,984,
    # within the 4,096-token window. Raise it where prefill is cheap (a GPU, a team server).
    prefix_budget: Annotated[int, Bounds(64, 1984)] = 512
    use_context: bool = True
    # The line being typed leads the FIM middle (context/prompt.py); false: Qwen's PSM order.
    typed_line_leads: bool = True
    # At the end of a line the FIM suffix starts at the next line (context/prompt.py); None:
    # what was measured best for the model.
    suffix_from_next_line: bool | None = None
    languages: tuple[str, ...] = ("*",)
    secret_globs: tuple[str, ...] = ()
    log_level: LogLevel = "info"

    def language_enabled(self, language_id: str) -> bool:
        """Whether completions are offered for this LSP language id."""
        return "*" in self.languages or language_id in self.languages

    def prompt_budget(self) -> PromptBudget:
        """The prompt's token quotas these settings ask for."""
        return PromptBudget(
            repo_tokens=self.context_budget,
            prefix_tokens=self.prefix_budget,
            suffix_tokens=self.suffix_budget,
            output_tokens=self.max_tokens,
        )

    def prompt_layout(self) -> PromptLayout:
        """The FIM prompt layout these settings ask for."""
        return PromptLayout.for_model(
            self.model,
            typed_line_leads=self.typed_line_leads,
            suffix_from_next_line=self.suffix_from_next_line,
        )

    @property
    def remote(self) -> bool:
        """Whether completions come from the server at engine_url."""
        return self.engine == "remote" or (self.engine == "auto" and bool(self.engine_url))


Check = Callable[[object], str | None]  # a wire value -> why it is invalid, or None


def _integer(bounds: Bounds) -> Check:
    expected = f"expected an integer in {bounds.low}..{bounds.high}"

    def check(value: object) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return expected
        return None if bounds.low <= value <= bounds.high else expected

    return check


def _one_of(choices: tuple[str, ...]) -> Check:
    def check(value: object) -> str | None:
        return None if value in choices else f"expected one of {', '.join(choices)}"

    return check


def _text(value: object) -> str | None:
    return None if isinstance(value, str) and value.strip() else "expected a non-empty string"


def _optional_text(value: object) -> str | None:
    return None if value is None or isinstance(value, str) else "expected a string or null"


def _boolean(value: object) -> str | None:
    return None if isinstance(value, bool) else "expected true or false"


def _optional_boolean(value: object) -> str | None:
    return None if value is None or isinstance(value, bool) else "expected true, false or null"


def _strings(value: object) -> str | None:
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return None
    return "expected a list of strings"


# The check of each plain field type; `Literal` and `Annotated` ones are built from their args.
_CHECKS: dict[object, Check] = {
    str: _text,
    str | None: _optional_text,
    bool: _boolean,
    bool | None: _optional_boolean,
    tuple[str, ...]: _strings,
}


def _check_of(field_type: object) -> Check:
    """The check of the wire values a field of `field_type` takes."""
    if get_origin(field_type) is Literal:
        return _one_of(get_args(field_type))
    if get_origin(field_type) is Annotated:
        _, bounds = get_args(field_type)  # Annotated[int, Bounds(low, high)]
        return _integer(bounds)
    return _CHECKS[field_type]


def _camel_case(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(word.capitalize() for word in rest)


# wire name -> (field name, check)
WIRE_FIELDS: dict[str, tuple[str, Check]] = {
    _camel_case(name): (name, _check_of(field_type))
    for name, field_type in get_type_hints(ServerOptions, include_extras=True).items()
}


def parse_options(wire: Any, base: ServerOptions | None = None) -> tuple[ServerOptions, list[str]]:
    """Resolve wire options over `base` (defaults if None); returns options and problems.

    Accepts the options object itself or one nested under "coderLsp" (the shape VS Code's
    settings section and Neovim's `settings` table send).
    """
    base = base or ServerOptions()
    if wire is None:
        return base, []
    if isinstance(wire, dict) and isinstance(wire.get("coderLsp"), dict):
        wire = wire["coderLsp"]
    if not isinstance(wire, dict):
        return base, ["options: expected an object"]
    changes: dict[str, Any] = {}
    problems = []
    for key, value in wire.items():
        if key not in WIRE_FIELDS:
            problems.append(f"{key}: unknown option")
            continue
        name, check = WIRE_FIELDS[key]
        problem = check(value)
        if problem is not None:
            problems.append(f"{key}: {problem} (got {value!r}); using the default")
            continue
        changes[name] = tuple(value) if isinstance(value, list) else value
    return dataclasses.replace(base, **changes), problems
