"""Background KV warm-ups: one at a time, each cancelling the last, failures contained; a file
opened in a repository gets its context prefilled before the first request."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from lsp_server.completion.pipeline import CompletionPipeline
from lsp_server.completion.warmup import CacheWarmer
from runtime.engine import EngineOptions, LocalEngine
from runtime.generate import CancellationToken


def test_a_new_warm_up_cancels_the_last_and_failures_stay_inside() -> None:
    warmer = CacheWarmer()
    release = threading.Event()
    seen: list[tuple[str, bool]] = []

    def slow(cancel: CancellationToken) -> None:
        release.wait(5)
        seen.append(("slow", cancel.cancelled))

    def failing(cancel: CancellationToken) -> None:
        raise RuntimeError("index gone")

    warmer.start(slow)
    warmer.start(failing)  # cancels `slow`'s token; its own error is logged, not raised
    release.set()
    warmer.wait()
    warmer.start(lambda cancel: seen.append(("last", cancel.cancelled)))
    warmer.wait()
    assert seen == [("slow", True), ("last", False)]
    assert warmer.started == 3


@pytest.mark.slow
def test_opening_a_file_prefills_its_repository_context(tmp_path: Path) -> None:
    git = pytest.importorskip("git")
    repo = git.Repo.init(tmp_path)
    (tmp_path / "shapes.py").write_text(
        "".join(f"def area_{i}(r):\n    return 3.14159 * r * r * {i}\n\n\n" for i in range(40))
    )
    main = tmp_path / "main.py"
    main.write_text("from shapes import area_1\n\n\ndef report(r):\n    total = \n")
    repo.index.add(["shapes.py", "main.py"])
    repo.index.commit("initial")
    engine = LocalEngine.load(EngineOptions(model="qwen2.5-coder-0.5b"), progress=False)
    pipeline = CompletionPipeline(engine)
    text = main.read_text()
    pipeline.warm_file(main, text, tmp_path)
    pipeline.warmer.wait()
    offset = text.index("total = ") + len("total = ")
    prompt = pipeline.prompt(main, text, offset, workspace=tmp_path)
    assert prompt.files == ["shapes.py", "main.py"]
    done = pipeline.complete(main, text, offset, workspace=tmp_path)
    # The file outlines (the cursor-independent start of the repository part) came from the
    # warm-up; the definitions the cursor's code uses follow them and may differ.
    outlines = prompt.segments[: prompt.segments.index(("<|file_sep|>", True), 3)]
    shared = len(engine.encode_prompt(outlines))
    assert shared > 200
    assert done.result.cached_tokens >= shared
