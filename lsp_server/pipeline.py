"""One completion from editor state to inserted text: workspace context, prompt, engine,
post-processing. The CLI and the language server both call this."""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from context.files import FileRules, path_refusal, redact_around
from context.index import WorkspaceIndex
from context.prompt import (
    ContextPiece,
    Prompt,
    PromptBudget,
    PromptLayout,
    TokenCounter,
    build_prompt,
)
from context.repo import RepoContext
from context.watcher import WorkspaceWatcher
from lsp_server.forward_cache import (
    ForwardCache,
    ForwardHit,
    Prediction,
    accepted_token_count,
)
from lsp_server.postprocess import CursorContext, postprocess, stop_rule
from lsp_server.warmup import CacheWarmer
from runtime.engine import Engine
from runtime.generate import CancellationToken, GenerationConfig, GenerationResult

logger = logging.getLogger(__name__)


class CompletionRefused(Exception):
    """The file must not reach a model (a secret, or excluded by .gitignore): nothing is sent."""


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


def tokenizable(text: str) -> str:
    """`text` with lone surrogates (undecodable bytes an editor passed through) replaced one
    for one, so the tokenizer accepts it and offsets stay valid."""
    return text.encode("utf-8", "replace").decode("utf-8")


def workspace_root(path: Path) -> Path:
    """The git work tree holding `path`, else its folder."""
    folder = path.parent if not path.is_dir() else path
    try:
        top = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "--show-toplevel"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return folder
    return Path(top.stdout.strip()) if top.returncode == 0 and top.stdout.strip() else folder


@dataclass
class Workspaces:
    """Indexed workspaces by root, opened on first use (index + import graph). With `watch`
    (the language server), each is watched from then on (context.watcher): files created,
    deleted or newly ignored reach the index and the import graph; the CLI re-checks the
    current file per request instead."""

    rules: FileRules = field(default_factory=FileRules)
    watch: bool = False
    _open: dict[Path, RepoContext] = field(default_factory=dict)
    _watchers: list[WorkspaceWatcher] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def opened(self, root: Path) -> RepoContext | None:
        """The repository context of `root` if it is already indexed."""
        with self._lock:
            return self._open.get(root.resolve())

    def get(self, root: Path) -> RepoContext:
        """The repository context of `root`, indexing it the first time."""
        root = root.resolve()
        with self._lock:
            repo = self._open.get(root)
            if repo is None:
                started = time.monotonic()
                index = WorkspaceIndex(root, self.rules)
                if not self._watch(index):
                    index.refresh()
                repo = RepoContext(index)
                repo.build()
                self._open[root] = repo
                logger.info("indexed %s in %.2f s", root, time.monotonic() - started)
            return repo

    def _watch(self, index: WorkspaceIndex) -> bool:
        """Start watching `index` (which scans it once the watch is in place); False when not
        watching (off, or the OS refused: then the caller scans)."""
        if not self.watch:
            return False
        watcher = WorkspaceWatcher()
        if not watcher.start(index):
            return False
        self._watchers.append(watcher)
        return True

    def close(self) -> None:
        """Stop every watcher (the indexes stay usable, unwatched)."""
        with self._lock:
            watchers, self._watchers = self._watchers, []
        for watcher in watchers:
            watcher.stop()


@dataclass(frozen=True)
class SourceFile:
    """A buffer cleared to reach a model: its name in prompts and, with context, its workspace."""

    name: str  # workspace-relative path, else the file name
    repo: RepoContext | None = None
    relative: str | None = None

    def context(self, count: TokenCounter, budget_tokens: int) -> list[ContextPiece]:
        """Repository files to show with this buffer, within `budget_tokens` ([] without one)."""
        if self.repo is None or self.relative is None:
            return []
        return self.repo.context_for(self.relative, count, budget_tokens)


def _cached_answer(hit: ForwardHit | None, started: float) -> Completion | None:
    """The completion a forward-cache hit gives without the model (the rest of the last
    suggestion), or None."""
    if hit is None or not hit.text:
        return None
    result = GenerationResult([], hit.text, "forward_cache", 0, 0)
    latency = (time.monotonic() - started) * 1000
    return Completion(hit.text, hit.replace_chars, hit.prompt, result, latency, "forward_cache")


@dataclass
class CompletionPipeline:
    """Prompt building and generation around one engine."""

    engine: Engine
    workspaces: Workspaces = field(default_factory=Workspaces)
    budget: PromptBudget = field(default_factory=PromptBudget)
    # The last suggestion per file: typing that follows it is answered without the model.
    forward: ForwardCache = field(default_factory=ForwardCache)
    # After such an answer, prefill the buffer's prompt in the background (lsp_server.warmup);
    # off for a remote engine, whose server other users share.
    warm: bool = True
    warmer: CacheWarmer = field(default_factory=CacheWarmer)
    # Where the typed line and the suffix go in the prompt (context.prompt).
    layout: PromptLayout = field(default_factory=PromptLayout)

    def predicted(
        self,
        path: Path,
        text: str,
        offset: int,
        *,
        workspace: Path | None = None,
        use_context: bool = True,
    ) -> Completion | None:
        """The rest of the last suggestion for `path` when the user typed its beginning since
        (no model call, the prompt warmed in the background), else None."""
        return self._forward_answer(path, tokenizable(text), offset, workspace, use_context)[1]

    def _forward_answer(
        self, path: Path, text: str, offset: int, workspace: Path | None, use_context: bool
    ) -> tuple[ForwardHit | None, Completion | None]:
        """The forward cache's view of this cursor, and its answer if it has one (then the
        prompt is warmed in the background)."""
        started = time.monotonic()
        hit = self.forward.lookup(str(path), text, offset)
        cached = _cached_answer(hit, started)
        if cached is not None:
            self._warm_later(path, text, offset, workspace, use_context)
        return hit, cached

    def warm_file(self, path: Path, text: str, workspace: Path) -> None:
        """Prefill, in the background, what every prompt in this file starts with: the
        repository context chosen for it (up to the current file's <|fim_prefix|>), so the
        first request in a just-opened file does not read that part (up to 1,024 tokens)."""
        self._warm_later(path, tokenizable(text), 0, workspace, True)

    def _warm_later(
        self, path: Path, text: str, offset: int, workspace: Path | None, use_context: bool
    ) -> None:
        """Prefill the prompt for this buffer and cursor in the background (when `warm`)."""
        if not self.warm:
            return

        def job(cancel: CancellationToken) -> None:
            prompt = self.prompt(path, text, offset, workspace=workspace, use_context=use_context)
            ids = self.engine.encode_prompt(prompt.segments)
            self.engine.complete(ids, GenerationConfig(max_new_tokens=1, lookup=False), cancel)

        self.warmer.start(job)

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
    ) -> Completion:
        """Complete `text` (the buffer of `path`) at character `offset`."""
        started = time.monotonic()
        text = tokenizable(text)
        hit, cached = self._forward_answer(path, text, offset, workspace, use_context)
        if cached is not None:
            return cached
        self.warmer.stop()
        source, heal = "model", ""
        if hit is not None and hit.continuation is not None:
            # The whole suggestion was typed or accepted: continue that generation.
            self.admit(path, text, workspace=workspace, use_context=use_context)
            prompt, prompt_ids = hit.prompt, list(hit.continuation)
            source = "continuation"
        else:
            prompt = self.prompt(path, text, offset, workspace=workspace, use_context=use_context)
            prompt_ids = self.engine.encode_prompt(prompt.segments)
            heal = prompt.heal
        cursor = CursorContext.at(text, offset, str(path))
        config = GenerationConfig(max_new_tokens=max_tokens, stop_rule=stop_rule(cursor))
        result = self.engine.complete(prompt_ids, config, cancel)
        latency = (time.monotonic() - started) * 1000
        answer = after_heal(result.text, heal)
        shown = postprocess(answer, cursor)
        done = Completion("", 0, prompt, result, latency, source)
        if shown is not None:
            done = replace(done, text=shown.text, replace_chars=shown.replace_suffix_chars)
        # The answer ends the generated text; what comes before it is the healed text.
        lead_in = result.text[: len(result.text) - len(answer)]
        self._remember(str(path), text, offset, prompt_ids, done, lead_in)
        return done

    def _remember(
        self,
        key: str,
        text: str,
        offset: int,
        prompt_ids: list[int],
        done: Completion,
        lead_in: str,
    ) -> None:
        """Keep `done` as the prediction typing at this cursor is checked against; the
        generated tokens spell `lead_in` (typed already) before the suggestion."""
        generated = done.result.token_ids
        shown = done.text if done.result.finish_reason != "cancelled" else ""
        prediction = Prediction(
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
        )
        self.forward.remember(key, prediction)

    def admit(
        self,
        path: Path,
        text: str,
        *,
        workspace: Path | None = None,
        use_context: bool = True,
    ) -> SourceFile:
        """Where `path` (buffer `text`) sits, once it may reach a model: raises CompletionRefused
        for secret files, links to secrets or out of the workspace, non-regular files and files
        the workspace excludes (.gitignore); the buffer goes to the workspace index so that
        repository context sees it."""
        repo = self.workspaces.get(workspace or workspace_root(path)) if use_context else None
        relative = repo.index.relative_path(path) if repo is not None else None
        if repo is not None and relative is not None:
            why = repo.index.refusal(relative)
        else:
            # No workspace (or a file outside it): the file's own folder is its workspace.
            absolute = Path(os.path.abspath(path))
            base = Path(os.path.abspath(workspace)) if workspace is not None else None
            root = base if base is not None and absolute.is_relative_to(base) else absolute.parent
            relative_to_root = absolute.relative_to(root).as_posix()
            why = path_refusal(root, relative_to_root, self.workspaces.rules)
        name = relative or path.name
        if why is not None:
            raise CompletionRefused(f"{name}: {why}; nothing is sent to a model")
        if repo is not None and relative is not None:
            repo.index.set_buffer(relative, text)
        return SourceFile(name, repo, relative)

    def prompt(
        self,
        path: Path,
        text: str,
        offset: int,
        *,
        workspace: Path | None = None,
        use_context: bool = True,
    ) -> Prompt:
        """The prompt for a cursor; raises CompletionRefused for files that must stay local."""
        text = tokenizable(text)
        source = self.admit(path, text, workspace=workspace, use_context=use_context)
        repo, relative, name = source.repo, source.relative, source.name
        # Redacted as one text (a key block around the cursor goes on both sides), then split.
        before, after = redact_around(text, offset)
        count = self.engine.count_tokens
        if repo is None or relative is None:
            return build_prompt(
                name, before + after, len(before), count, self.budget, layout=self.layout
            )
        pieces = source.context(count, self.budget.repo_tokens)
        return build_prompt(
            relative,
            before + after,
            len(before),
            count,
            self.budget,
            repo_name=repo.index.name,
            context=pieces,
            layout=self.layout,
        )
