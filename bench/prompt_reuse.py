"""How much of each pause's prompt the model must read again: the replay's typing, prompts only.

    python -m bench.prompt_reuse [--sessions 3] [--seed 0] [--context-budget 1024]
        [--suffix-budget 48] [--packages pygls,httpx,pathspec]

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
tokens either way. Timing plays no part: the figures are the same on any machine.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.replay import (
    DEFAULT_PACKAGES,
    Answer,
    PromptSide,
    common_prefix,
    make_workspace,
    plan_sessions,
    replay,
)
from context.prompt import Prompt
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
        self.last, self.last_prompt = ids, (relative, prompt)
        return Answer("", 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--context-budget", type=int, default=ServerOptions().context_budget)
    parser.add_argument("--suffix-budget", type=int, default=ServerOptions().suffix_budget)
    parser.add_argument("--packages", default=",".join(DEFAULT_PACKAGES))
    parser.add_argument("--cold", type=int, default=250, help="a re-read over this is counted")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="coder-lsp-reuse-") as scratch:
        workspace = make_workspace(args.packages.split(","), Path(scratch))
        sessions = plan_sessions(workspace, args.sessions, args.seed)
        options = ServerOptions(
            context_budget=args.context_budget, suffix_budget=args.suffix_budget
        )
        driver = PromptDriver(workspace, options)
        asyncio.run(replay(driver, sessions, workspace, 0, 0))
    print(f"pauses: {len(driver.pauses)} ({args.sessions} sessions, seed {args.seed})")
    print(f"budgets: repository {args.context_budget}, suffix {args.suffix_budget} tokens")
    _report("", [pause.tokens for pause in driver.pauses], args.cold)
    changed = [pause.tokens for pause in driver.pauses if pause.repository]
    print(f"pauses whose repository part changed: {len(changed)}, re-reading {sum(changed)} tokens")
    _report("with the held prompt, ", [pause.held for pause in driver.pauses], args.cold)


def _report(how: str, reads: list[int], cold: int) -> None:
    """One line of re-read tokens per pause: p50, p90, mean, and how many exceed `cold`."""
    reads = sorted(reads)
    p90 = reads[int(0.9 * (len(reads) - 1))]
    over = sum(tokens > cold for tokens in reads)
    print(f"{how}tokens to read per pause: p50 {statistics.median(reads):.0f}, p90 {p90}, ", end="")
    print(f"mean {statistics.mean(reads):.0f}; over {cold}: {over}")


if __name__ == "__main__":
    main()
