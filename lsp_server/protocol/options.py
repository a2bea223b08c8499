"""Server options: camelCase on the wire (initializationOptions, didChangeConfiguration),
resolved into typed, defaulted settings. An invalid value is reported by field name and that
field falls back to its default; the rest of the options still apply."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from context.prompt import PromptLayout
from runtime import models

logger = logging.getLogger(__name__)

LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class ServerOptions:
    """Resolved settings; every field has a value."""

    model: str = models.DEFAULT_TARGET
    draft_model: str | None = models.DEFAULT_DRAFT
    precision: str = models.DEFAULT_PRECISION
    provider: str = "auto"
    # local: this process runs the model; remote: an OpenAI-compatible server at engine_url
    # (`coder-lsp serve`, vLLM, llama.cpp); auto: remote when engine_url is set.
    engine: str = "auto"
    engine_url: str | None = None  # a remote engine (team server) instead of a local model
    engine_token: str | None = None
    max_tokens: int = 64
    debounce_ms: int = 150
    # The time a suggestion may take from the request (0: no limit, wait for the whole
    # answer). Within it a block answer is shown as soon as its first whole lines are written
    # and the rest is generated in the background (lsp_server/completion/live.py).
    max_latency_ms: int = 900
    context_budget: int = 1024  # tokens of repository context
    suffix_budget: int = 128  # tokens of the text after the cursor
    use_context: bool = True
    # The line being typed leads the FIM middle (context/prompt.py); false: Qwen's PSM order.
    typed_line_leads: bool = True
    # At the end of a line the FIM suffix starts at the next line (context/prompt.py); None:
    # what was measured best for the model.
    suffix_from_next_line: bool | None = None
    languages: tuple[str, ...] = ("*",)
    secret_globs: tuple[str, ...] = ()
    log_level: str = "info"

    def language_enabled(self, language_id: str) -> bool:
        """Whether completions are offered for this LSP language id."""
        return "*" in self.languages or language_id in self.languages

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


# wire name -> (field name, check returning an error message or None)
def _positive(limit: int) -> Any:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= limit:
            return f"expected an integer in 1..{limit}"
        return None

    return check


def _non_negative(limit: int) -> Any:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
            return f"expected an integer in 0..{limit}"
        return None

    return check


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) and value.strip() else "expected a non-empty string"


def _optional_text(value: Any) -> str | None:
    return None if value is None or isinstance(value, str) else "expected a string or null"


def _choice(*choices: str) -> Any:
    def check(value: Any) -> str | None:
        return None if value in choices else f"expected one of {', '.join(choices)}"

    return check


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "expected true or false"


def _optional_boolean(value: Any) -> str | None:
    return None if value is None or isinstance(value, bool) else "expected true, false or null"


def _strings(value: Any) -> str | None:
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return None
    return "expected a list of strings"


WIRE_FIELDS: dict[str, tuple[str, Any]] = {
    "model": ("model", _text),
    "draftModel": ("draft_model", _optional_text),
    "precision": ("precision", _choice(*models.PRECISIONS)),
    "provider": ("provider", _choice("auto", "tensorrt", "cuda", "cpu")),
    "engine": ("engine", _choice("auto", "local", "remote")),
    "engineUrl": ("engine_url", _optional_text),
    "engineToken": ("engine_token", _optional_text),
    "maxTokens": ("max_tokens", _positive(1024)),
    "debounceMs": ("debounce_ms", _non_negative(5000)),
    "maxLatencyMs": ("max_latency_ms", _non_negative(60000)),
    "contextBudget": ("context_budget", _non_negative(16384)),
    "suffixBudget": ("suffix_budget", _non_negative(1024)),
    "useContext": ("use_context", _boolean),
    "typedLineLeads": ("typed_line_leads", _boolean),
    "suffixFromNextLine": ("suffix_from_next_line", _optional_boolean),
    "languages": ("languages", _strings),
    "secretGlobs": ("secret_globs", _strings),
    "logLevel": ("log_level", _choice(*LOG_LEVELS)),
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
