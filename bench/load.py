"""Load on the team server: simulated users typing on loopback, with cancellations.

    python -m bench.load [--users 16] [--seconds 60] [--model qwen2.5-coder-0.5b]
                         [--max-batch 4] [--max-tokens 32] [--cache-mb 2048] [--seed 0]

Starts `coder-lsp serve` (its own config, one token per user), then each user types through a
different standard-library file: keystrokes 60-250 ms apart in bursts of 3-12, pauses of
2-8 s between bursts. Like the editor plugin (150 ms debounce), a request goes out when the
user pauses; a keystroke that arrives while a request runs closes that request's stream (a
cancellation) before the next one is sent. Requests are streamed FIM completions (`prompt` +
`suffix`, up to 1,500 characters before the cursor and 400 after) carrying the user's document
and repository, so the server supersedes and reuses KV slots as it would for real editors.

Prints a Markdown table: completed requests, latency p50/p95 (request sent -> stream ended) and
time to first chunk, throughput, cancellations, errors (goal 0), server RSS before (model
loaded and warmed up, a quarter into the run, and at the end (goal: flat once the KV slot pool,
1 GiB by default, has filled). Sends traffic to 127.0.0.1 only and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.context import percentile

logger = logging.getLogger(__name__)

DEBOUNCE_S = 0.15


@dataclass
class Tally:
    """What all users saw."""

    latencies: list[float] = field(default_factory=list)
    first_chunks: list[float] = field(default_factory=list)
    generated_tokens: int = 0
    cancelled: int = 0
    errors: list[str] = field(default_factory=list)


def sources(count: int) -> list[str]:
    """`count` standard-library modules of some length, one per user."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in stdlib.glob("*.py") if 8_000 < p.stat().st_size < 120_000)
    rng = random.Random(1)
    return [p.read_text(encoding="utf-8") for p in rng.sample(files, count)]


def vm_rss_mb(pid: int) -> float:
    """Resident memory of process `pid` in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def complete(
    client: httpx.AsyncClient, body: dict[str, object], tally: Tally, sent: float
) -> None:
    """One streamed request, read to its end; records latency, or an error."""
    first: float | None = None
    async with client.stream("POST", "/v1/completions", json=body) as response:
        if response.status_code != 200:
            tally.errors.append(f"HTTP {response.status_code}: {(await response.aread())[:200]!r}")
            return
        async for line in response.aiter_lines():
            if not line.startswith("data:") or line.endswith("[DONE]"):
                continue
            first = first or time.monotonic()
            usage = json.loads(line[5:]).get("usage")
            if usage:
                tally.generated_tokens += usage["completion_tokens"]
    now = time.monotonic()
    tally.latencies.append(now - sent)
    tally.first_chunks.append((first or now) - sent)


async def user(
    index: int, url: str, token: str, text: str, args: argparse.Namespace, tally: Tally, end: float
) -> None:
    """One developer typing through `text` until `end`."""
    rng = random.Random(args.seed * 1000 + index)
    headers = {"Authorization": f"Bearer {token}"}
    cursor = rng.randrange(len(text) // 4, len(text) // 2)
    document = f"user{index}/module.py"
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as client:
        running: asyncio.Task[None] | None = None
        while time.monotonic() < end:
            for _ in range(rng.randint(3, 12)):  # a burst of keystrokes
                await asyncio.sleep(rng.uniform(0.06, 0.25))
                cursor = min(cursor + 1, len(text) - 1)
                if running is not None and not running.done():
                    running.cancel()  # the editor cancels: the stream is closed
                    tally.cancelled += 1
                running = None
            await asyncio.sleep(DEBOUNCE_S)
            # The prefix window starts on a 512-character grid (the pipeline moves its window in
            # steps of 16 lines) so that consecutive requests share a long token prefix.
            start = max(0, cursor - 1500) // 512 * 512
            body = {
                "prompt": text[start:cursor],
                "suffix": text[cursor : cursor + 400],
                "max_tokens": args.max_tokens,
                "temperature": 0,
                "stream": True,
                "document": document,
                "repository": f"user{index}",
            }
            running = asyncio.create_task(complete(client, body, tally, time.monotonic()))
            running.add_done_callback(lambda task: _record_failure(task, tally))
            await asyncio.sleep(rng.uniform(2.0, 8.0))  # reading the suggestion, thinking
        if running is not None:
            await asyncio.gather(running, return_exceptions=True)


def _record_failure(task: asyncio.Task[None], tally: Tally) -> None:
    if not task.cancelled() and task.exception() is not None:
        tally.errors.append(repr(task.exception()))


async def warm_up(url: str, token: str) -> None:
    """One request, so the "before" RSS includes a first generation's allocations."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as client:
        response = await client.post(
            "/v1/completions", json={"prompt": "def main():\n", "max_tokens": 8}
        )
        response.raise_for_status()


def start_server(
    args: argparse.Namespace, workdir: Path
) -> tuple[subprocess.Popen[str], str, list[str]]:
    """`coder-lsp serve` with one token per user; (process, URL, tokens)."""
    cli = [sys.executable, "-m", "lsp_server"]
    config = workdir / "server.json"
    tokens = []
    for index in range(args.users):
        done = subprocess.run(
            [*cli, "serve", "token", "add", f"user{index}", "--config", str(config)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        tokens.append(done.stdout.strip().splitlines()[-1])
    data = json.loads(config.read_text())
    data["limits"].update(requests_per_minute=10_000, max_queue=256)
    config.write_text(json.dumps(data))
    log_path = workdir / "serve.log"
    with log_path.open("w") as log:  # the server writes its stderr straight to the file
        process = subprocess.Popen(
            [*cli, "--log-level", args.server_log_level, "serve", "--port", "0",
             "--config", str(config), "--model", args.model, "--max-batch", str(args.max_batch),
             "--cache-mb", str(args.cache_mb)],
            stdout=subprocess.DEVNULL, stderr=log, text=True,
        )  # fmt: skip
    while process.poll() is None:
        for line in log_path.read_text().splitlines():
            if "coder-lsp serve:" in line:
                return process, line.split(" on ", 1)[1].split()[0], tokens
        time.sleep(0.2)
    raise SystemExit(f"serve exited: see {log_path}")


def main() -> None:
    """Run the load and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--max-batch", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--cache-mb", type=int, default=2048, help="serve's KV slot pool")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--server-log-level", default="WARNING", help="serve's log (in a temp dir)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    workdir = Path(tempfile.mkdtemp(prefix="coder-lsp-load-"))
    process, url, tokens = start_server(args, workdir)
    try:
        asyncio.run(warm_up(url, tokens[0]))
        rss = [vm_rss_mb(process.pid)]
        tally = Tally()
        started = time.monotonic()
        end = started + args.seconds

        async def everyone() -> None:
            texts = sources(args.users)
            users = asyncio.gather(
                *(user(i, url, tokens[i], texts[i], args, tally, end) for i in range(args.users))
            )
            # RSS once the KV slot pool has had a quarter of the run to fill, and at the end.
            await asyncio.sleep(args.seconds / 4)
            rss.append(vm_rss_mb(process.pid))
            await users

        asyncio.run(everyone())
        elapsed = time.monotonic() - started
        rss.append(vm_rss_mb(process.pid))
    finally:
        process.terminate()
        process.wait(timeout=30)
    report(args, tally, elapsed, rss, workdir)


def report(
    args: argparse.Namespace, tally: Tally, elapsed: float, rss: list[float], workdir: Path
) -> None:
    """The Markdown table."""
    ms = [v * 1000 for v in tally.latencies]
    first = [v * 1000 for v in tally.first_chunks]

    def p50_p95(values: list[float]) -> str:
        return f"{percentile(values, 0.5):.0f} / {percentile(values, 0.95):.0f} ms"

    rate = f"{len(ms) / elapsed:.2f} req/s, {tally.generated_tokens / elapsed:.1f} tok/s"
    rows = [
        (
            "users, duration",
            f"{args.users}, {args.seconds:.0f} s typing + {elapsed - args.seconds:.0f} s draining",
        ),
        ("server", f"max batch {args.max_batch}, KV pool {args.cache_mb} MB"),
        ("completed requests", f"{len(ms)}"),
        ("cancelled by typing", f"{tally.cancelled}"),
        ("errors", f"{len(tally.errors)} (goal 0)"),
        ("latency p50 / p95", p50_p95(ms)),
        ("first chunk p50 / p95", p50_p95(first)),
        ("throughput", rate),
        ("server RSS: loaded / at 25 % / end", " / ".join(f"{v:.0f}" for v in rss) + " MB"),
    ]
    print(f"model {args.model}, max_tokens {args.max_tokens}, server log in {workdir}\n")
    print("| measure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    for error in tally.errors[:5]:
        print(f"\nerror: {error}")


if __name__ == "__main__":
    main()
