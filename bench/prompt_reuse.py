"""How much of each pause's prompt the model must read again: the replay's typing, prompts only.

    python -m bench.prompt_reuse [--sessions 3] [--seed 0] [--plan jumps|callers|unimported]
        [--context-budget 1024] [--suffix-budget 48] [--recent-tokens N]
        [--packages pygls,httpx,pathspec]

The sessions, workspace and pauses of `bench.replay` (the same seed gives the same bodies), but
no server and no model: at each pause this working tree's pipeline builds the prompt the
language server would (repository context, layout and budgets of its default settings, the
given budgets), and the prompt is compared with the previous pause's, token by token. What
the two share is what a KV prefix cache can keep; the rest is read again. Reported: tokens to
read per pause (p50 / p90 / mean), and the pauses whose repository part changed (the shared
prefix ends before the current file's `<|fim_prefix|>`) with the tokens those re-read. Then the
same with the held prompt (`context.prompt.Held`): in the same file, the prompt built on the
previous pause's prompt (its prefix start and repository pieces), where it re-reads less, as
the language server answers a cold pause from it; and the pauses re-reading over `--cold`
tokens either way. With `--plan callers` (a helper written, then its caller in another file:
`bench.replay`'s plan) it also counts the caller's pauses whose repository part shows the
helper's `def` line (what the user edited lately: `context.recent`, in up to
`--recent-tokens`; the definitions may show it too). Timing plays no part: the figures are the
same on any machine. `--plan unimported`: the same, with the caller's import of the helper
taken out first.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.replay import (
    DEFAULT_PACKAGES,
    PLANS,
    Answer,
    Pause,
    PromptSide,
    Visit,
    common_prefix,
    make_workspace,
    replay,
)
from context.prompt import Prompt
from context.repo import RECENT_TOKENS
from lsp_server.protocol.options import ServerOptions


@dataclass(frozen=True)
class Reread:
    """What one pause's prompt reads again."""

    tokens: int  # the prompt chosen afresh
    held: int  # at most, with the prompt built on the previous one in the same file
    repository: bool  # the fresh prompt's repository part changed


class PromptDriver(PromptSide):
    """A `bench.replay` driver that only builds prompts and measures what each one re-reads."""

    name: str = "prompts"
    paced: bool = False
    patience_ms: float | None = None

    def __init__(self, workspace: Path, options: ServerOptions) -> None:
        super().__init__(options, workspace)
        self.fim_prefix = self.pipeline.engine.encode_prompt([("<|fim_prefix|>", True)])[0]
        self.last: list[int] = []
        self.last_prompt: tuple[str, Prompt] | None = None  # file, prompt
        self.pauses: list[Reread] = []
        self.repository_parts: list[str] = []  # per pause: the prompt before the current file

    async def ask(self, relative: str, text: str, offset: int) -> Answer:
        path = self.workspace / relative
        prompt = self.pipeline.prompt(path, text, offset)
        ids = self.pipeline.engine.encode_prompt(prompt.segments)
        shared = common_prefix(self.last, ids)
        tokens = len(ids) - shared
        held = tokens
        if self.last_prompt is not None and self.last_prompt[0] == relative:
            kept = self.pipeline.prompt(path, text, offset, held=self.last_prompt[1].held())
            kept_ids = self.pipeline.engine.encode_prompt(kept.segments)
            held = min(tokens, len(kept_ids) - common_prefix(self.last, kept_ids))
        self.pauses.append(Reread(tokens, held, shared < ids.index(self.fim_prefix)))
        self.repository_parts.append(prompt.text[: prompt.text.rfind("<|file_sep|>")])
        self.last, self.last_prompt = ids, (relative, prompt)
        return Answer("", 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plan", choices=tuple(PLANS), default="jumps")
    parser.add_argument("--recent-tokens", type=int, default=RECENT_TOKENS)
    parser.add_argument("--context-budget", type=int, default=ServerOptions().context_budget)
    parser.add_argument("--suffix-budget", type=int, default=ServerOptions().suffix_budget)
    parser.add_argument("--packages", default=",".join(DEFAULT_PACKAGES))
    parser.add_argument("--cold", type=int, default=250, help="a re-read over this is counted")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="coder-lsp-reuse-") as scratch:
        workspace = make_workspace(args.packages.split(","), Path(scratch))
        sessions = PLANS[args.plan](workspace, args.sessions, args.seed)
        options = ServerOptions(
            context_budget=args.context_budget, suffix_budget=args.suffix_budget
        )
        driver = PromptDriver(workspace, options)
        driver.repo.recent_tokens = args.recent_tokens
        pauses = asyncio.run(replay(driver, sessions, workspace, 0, 0))
    print(f"pauses: {len(driver.pauses)} ({args.sessions} sessions, {args.plan}, seed {args.seed})")
    print(
        f"budgets: repository {args.context_budget} (recent edits {args.recent_tokens}), "
        f"suffix {args.suffix_budget} tokens"
    )
    if args.plan != "jumps":
        shown, callers = helper_shown(sessions, pauses, driver.repository_parts)
        print(f"callers' pauses whose repository part shows the helper's def: {shown} of {callers}")
    _report("", [pause.tokens for pause in driver.pauses], args.cold)
    changed = [pause.tokens for pause in driver.pauses if pause.repository]
    print(f"pauses whose repository part changed: {len(changed)}, re-reading {sum(changed)} tokens")
    _report("with the held prompt, ", [pause.held for pause in driver.pauses], args.cold)


def helper_shown(
    sessions: list[list[Visit]], pauses: list[Pause], parts: list[str]
) -> tuple[int, int]:
    """Of the pauses in each session's second body (the caller), how many repository parts
    show the first body's function (the helper) by its `def` line; and how many there are."""
    helpers = {
        (number, session[1].body.relative, session[1].body.function): session[0].body.function
        for number, session in enumerate(sessions)
    }
    callers = [
        (helpers[pause.session, pause.file, pause.function], part)
        for pause, part in zip(pauses, parts, strict=True)
        if (pause.session, pause.file, pause.function) in helpers
    ]
    shown = sum(re.search(rf"\bdef {name}\(", part) is not None for name, part in callers)
    return shown, len(callers)


def _report(how: str, reads: list[int], cold: int) -> None:
    """One line of re-read tokens per pause: p50, p90, mean, and how many exceed `cold`."""
    reads = sorted(reads)
    p90 = reads[int(0.9 * (len(reads) - 1))]
    over = sum(tokens > cold for tokens in reads)
    print(f"{how}tokens to read per pause: p50 {statistics.median(reads):.0f}, p90 {p90}, ", end="")
    print(f"mean {statistics.mean(reads):.0f}; over {cold}: {over}")


if __name__ == "__main__":
    main()
