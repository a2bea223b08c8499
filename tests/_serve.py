"""Helpers for tests that run `coder-lsp serve` (or another HTTP server) as a real process."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

CLI = [sys.executable, "-m", "lsp_server"]
TOKEN = re.compile(r"^clsp-[0-9a-f]+-[A-Za-z0-9_-]+$")


def add_token(config: Path, name: str) -> str:
    """`coder-lsp serve token add NAME --config FILE`; the token is its last line."""
    done = subprocess.run(
        [*CLI, "serve", "token", "add", name, "--config", str(config)],
        capture_output=True,
        text=True,
        check=True,
    )
    token = done.stdout.strip().splitlines()[-1]
    assert TOKEN.match(token), done.stdout
    return token


def set_limits(config: Path, **limits: int) -> None:
    """Rewrite the limits of a configuration file."""
    data = json.loads(config.read_text())
    data["limits"].update(limits)
    config.write_text(json.dumps(data))


@dataclass
class Process:
    """A server process whose stderr is collected in the background."""

    popen: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            self.lines.append(line)

    def wait_for(self, pattern: str, timeout_s: float = 300) -> re.Match[str]:
        """The first stderr line matching `pattern` (fails if the process exits first)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in list(self.lines):
                match = re.search(pattern, line)
                if match:
                    return match
            if self.popen.poll() is not None:
                time.sleep(0.2)  # let the drain thread catch up with the last lines
                raise AssertionError(f"server exited {self.popen.returncode}: {self.stderr}")
            time.sleep(0.1)
        raise AssertionError(f"no {pattern!r} on stderr in {timeout_s} s: {self.stderr}")

    @property
    def stderr(self) -> str:
        """Everything the process wrote to stderr so far."""
        return "".join(self.lines)

    def stop(self) -> None:
        """Terminate (then kill) the process."""
        self.popen.terminate()
        try:
            self.popen.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


def start(argv: Sequence[str]) -> Process:
    """Run `argv` with stdout discarded and stderr collected."""
    popen = subprocess.Popen(
        list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    return Process(popen)


def start_serve(
    config: Path, *flags: str, model: str = "qwen2.5-coder-0.5b"
) -> tuple[Process, str]:
    """`coder-lsp serve` on a free loopback port; (process, base URL) once it listens."""
    process = start(
        [*CLI, "serve", "--host", "127.0.0.1", "--port", "0", "--config", str(config),
         "--model", model, *flags]
    )  # fmt: skip
    match = process.wait_for(r"on (http://127\.0\.0\.1:\d+)")
    return process, match.group(1)


def wait_http(url: str, timeout_s: float = 300, process: Process | None = None) -> None:
    """Poll `url` until it answers 200."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process is not None and process.popen.poll() is not None:
            raise AssertionError(f"server exited: {process.stderr}")
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer in {timeout_s} s")


def metric(text: str, name: str, labels: str = "") -> float:
    """The value of one sample in Prometheus' text format (0 when absent)."""
    wanted = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    return 0.0


def sse_texts(lines: Sequence[str]) -> tuple[list[dict[str, Any]], bool]:
    """Parsed `data:` chunks of an event stream, and whether it ended with [DONE]."""
    chunks, done = [], False
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            done = True
        else:
            chunks.append(json.loads(data))
    return chunks, done
