"""How much of each pause's prompt the model must read again: the replay's typing, prompts only.

    python -m bench.prompt_reuse [--sessions 3] [--seed 0] [--context-budget 1024]
        [--suffix-budget 48] [--packages pygls,httpx,pathspec]

The sessions, workspace and pauses of `bench.replay` (the same seed gives the same bodies), but
no server and no model: at each pause this working tree's pipeline builds the prompt the
language server would (repository context, layout and budgets of its default settings, the
given budgets), and the prompt is compared with the previous pause's, token by token. What
the two share is what a KV prefix cache can keep; the rest is read again. Reported: tokens to
read per pause (p50 / p90 / mean), and the pauses whose repository part changed (the shared
prefix ends before the current file's `<|fim_prefix|>`) with the tokens those re-read. Timing
plays no part: the figures are the same on any machine.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
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
from lsp_server.protocol.options import ServerOptions


class PromptDriver(PromptSide):
    """A `bench.replay` driver that only builds prompts and measures what each one re-reads."""

    name: str = "prompts"
    paced: bool = False
    patience_ms: float | None = None

    def __init__(self, workspace: Path, options: ServerOptions) -> None:
        super().__init__(options, workspace)
        self.fim_prefix = self.pipeline.engine.encode_prompt([("<|fim_prefix|>", True)])[0]
        self.last: list[int] = []
        self.pauses: list[tuple[int, bool]] = []  # (tokens to read, repository part changed)

    async def ask(self, relative: str, text: str, offset: int) -> Answer:
        prompt = self.pipeline.prompt(self.workspace / relative, text, offset)
        ids = self.pipeline.engine.encode_prompt(prompt.segments)
        shared = common_prefix(self.last, ids)
        self.pauses.append((len(ids) - shared, shared < ids.index(self.fim_prefix)))
        self.last = ids
        return Answer("", 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--context-budget", type=int, default=ServerOptions().context_budget)
    parser.add_argument("--suffix-budget", type=int, default=ServerOptions().suffix_budget)
    parser.add_argument("--packages", default=",".join(DEFAULT_PACKAGES))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="coder-lsp-reuse-") as scratch:
        workspace = make_workspace(args.packages.split(","), Path(scratch))
        sessions = plan_sessions(workspace, args.sessions, args.seed)
        options = ServerOptions(
            context_budget=args.context_budget, suffix_budget=args.suffix_budget
        )
        driver = PromptDriver(workspace, options)
        asyncio.run(replay(driver, sessions, workspace, 0, 0))
    reads = sorted(tokens for tokens, _ in driver.pauses)
    changed = [tokens for tokens, repo in driver.pauses if repo]
    print(f"pauses: {len(reads)} ({args.sessions} sessions, seed {args.seed})")
    print(f"budgets: repository {args.context_budget}, suffix {args.suffix_budget} tokens")
    p90 = reads[int(0.9 * (len(reads) - 1))]
    print(f"tokens to read per pause: p50 {statistics.median(reads):.0f}, p90 {p90}, ", end="")
    print(f"mean {statistics.mean(reads):.0f}")
    print(f"pauses whose repository part changed: {len(changed)}, re-reading {sum(changed)} tokens")


if __name__ == "__main__":
    main()
