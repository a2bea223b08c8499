"""`coder-lsp serve` over real HTTP on loopback, with the real 0.5B: auth on every route, limits,
server-sent events, disconnects that stop generation, and users kept apart."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from _serve import CLI, Process, add_token, metric, set_limits, sse_texts, start_serve

pytestmark = pytest.mark.slow

COUNTING = "numbers = [" + ", ".join(str(i) for i in range(1, 40)) + ","
ROUTES = [
    ("GET", "/v1/models", None),
    ("GET", "/metrics", None),
    ("POST", "/v1/completions", {"prompt": "def f():", "max_tokens": 2}),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
]


class Server:
    """A running `serve` and the tokens of its users."""

    def __init__(self, process: Process, url: str, tokens: dict[str, str], config: Path) -> None:
        self.process = process
        self.url = url
        self.tokens = tokens
        self.config = config

    def client(self, user: str | None = None, token: str | None = None) -> httpx.Client:
        """An HTTP client authenticated as `user` (or with a raw `token`)."""
        token = token if token is not None else (self.tokens[user] if user else None)
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120)

    def metrics(self) -> str:
        """The /metrics text."""
        with self.client("admin") as client:
            response = client.get("/metrics")
        assert response.status_code == 200
        return response.text


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`serve` with users admin, alice, bob and mallory and tight limits."""
    config = tmp_path_factory.mktemp("serve") / "server.json"
    tokens = {name: add_token(config, name) for name in ("admin", "alice", "bob", "mallory")}
    set_limits(
        config,
        max_body_bytes=64 * 1024,
        max_tokens=256,
        requests_per_minute=30,
        max_concurrent=2,
    )
    process, url = start_serve(config, "--max-batch", "4", "--cache-mb", "800")
    yield Server(process, url, tokens, config)
    process.stop()


def test_tokens_are_stored_hashed(server: Server) -> None:
    stored = server.config.read_text()
    assert all(token not in stored for token in server.tokens.values())
    assert server.config.stat().st_mode & 0o077 == 0


def test_every_route_but_health_needs_a_valid_token(server: Server) -> None:
    real = server.tokens["alice"]
    key_id = real.split("-")[1]
    wrong = [None, "nonsense", f"clsp-{key_id}-not-the-secret", real[:-1] + "x"]
    for method, path, body in ROUTES:
        for token in wrong:
            with server.client(token=token) as client:
                response = client.request(method, path, json=body)
            assert response.status_code == 401, (path, token)
            assert response.json()["error"]["type"] == "authentication_error"
            assert response.headers["www-authenticate"] == "Bearer"
    with server.client() as client:
        assert client.get("/health").json() == {"status": "ok"}
    with server.client("alice") as client:
        models = client.get("/v1/models").json()
    assert models["data"][0]["id"] == "qwen2.5-coder-0.5b"


def test_oversized_body_is_413(server: Server) -> None:
    body = {"prompt": "x" * (65 * 1024), "max_tokens": 1}
    with server.client("alice") as client:
        response = client.post("/v1/completions", json=body)
    assert response.status_code == 413
    assert "bytes" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"prompt": "def f():", "max_tokens": 257}, "max_tokens"),
        ({"prompt": [1] * 4200, "max_tokens": 4}, "context window"),
        ({"prompt": "def f():", "n": 2}, "n"),
        ({"prompt": [-5, 3]}, "token ids"),
        ({"max_tokens": 3}, "prompt"),
    ],
)
def test_bad_requests_are_422(server: Server, body: dict[str, Any], needle: str) -> None:
    with server.client("alice") as client:
        response = client.post("/v1/completions", json=body)
    assert response.status_code == 422, response.text
    assert needle in response.json()["error"]["message"]


def test_not_json_is_422(server: Server) -> None:
    with server.client("alice") as client:
        response = client.post("/v1/completions", content=b"{not json")
    assert response.status_code == 422


def test_request_rate_over_the_limit_is_429(server: Server) -> None:
    with server.client("mallory") as client:
        statuses = [client.get("/v1/models").status_code for _ in range(31)]
        refused = client.get("/v1/models")
    assert statuses[:30] == [200] * 30
    assert statuses[30] == 429
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["type"] == "rate_limit_error"


def test_too_many_requests_in_flight_is_429(server: Server) -> None:
    body = {"prompt": COUNTING, "max_tokens": 256, "temperature": 0, "stream": True}
    with (
        server.client("bob") as client,
        client.stream("POST", "/v1/completions", json=body) as first,
    ):
        # Keep the line iterators: dropping one makes httpx close its connection.
        first_lines = first.iter_lines()
        next(first_lines)
        with client.stream("POST", "/v1/completions", json=body) as second:
            second_lines = second.iter_lines()
            next(second_lines)
            third = client.post("/v1/completions", json={**body, "stream": False})
    assert (first.status_code, second.status_code, third.status_code) == (200, 200, 429)
    assert "in flight" in third.json()["error"]["message"]


def test_streaming_sends_events_then_done(server: Server) -> None:
    body = {"prompt": "def fibonacci(n):\n", "max_tokens": 24, "temperature": 0}
    with server.client("alice") as client:
        whole = client.post("/v1/completions", json=body).json()
        with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            chunks, done = sse_texts(list(response.iter_lines()))
    assert done
    assert len(chunks) >= 3
    assert all(chunk["object"] == "text_completion" for chunk in chunks)
    streamed = "".join(chunk["choices"][0]["text"] for chunk in chunks)
    assert streamed == whole["choices"][0]["text"]
    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert last["usage"] == whole["usage"]
    assert last["usage"]["completion_tokens"] == 24


def test_chat_streams_deltas(server: Server) -> None:
    body = {
        "messages": [{"role": "user", "content": "Name one prime number. One word."}],
        "max_tokens": 8,
        "temperature": 0,
        "stream": True,
    }
    with (
        server.client("alice") as client,
        client.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        chunks, done = sse_texts(list(response.iter_lines()))
    assert done and chunks[0]["object"] == "chat.completion.chunk"
    text = "".join(chunk["choices"][0]["delta"].get("content", "") for chunk in chunks)
    assert text.strip()
    assert "<|im_end|>" not in text


def test_dropped_connection_stops_generation(server: Server) -> None:
    before = server.metrics()
    body = {"prompt": COUNTING, "max_tokens": 256, "temperature": 0, "stream": True}
    with (
        server.client("alice") as client,
        client.stream("POST", "/v1/completions", json=body) as response,
    ):
        lines = response.iter_lines()
        received = [next(lines) for _ in range(3)]
    assert all(line.startswith("data:") or not line for line in received)
    # The client has gone; wait (no time limit asserted) until the server has noticed.
    for _ in range(600):
        after = server.metrics()
        if metric(after, "coderlsp_active_generations") == 0:
            break
        time.sleep(0.1)
    cause = 'cause="disconnected"'
    assert metric(after, "coderlsp_cancellations_total", cause) == (
        metric(before, "coderlsp_cancellations_total", cause) + 1
    )
    assert metric(after, "coderlsp_generations_total", 'reason="cancelled"') >= 1
    generated = metric(after, "coderlsp_generated_tokens_total") - metric(
        before, "coderlsp_generated_tokens_total"
    )
    assert 0 < generated < 256


def test_users_never_see_each_others_text(server: Server) -> None:
    canaries = {"alice": "QZX-ALICE-4817", "bob": "QZX-BOB-9352"}

    def ask(user: str, stream: bool) -> str:
        canary = canaries[user]
        prompt = f'first = "{canary}"\nsecond = "{canary}"\nthird = "'
        body = {
            "prompt": prompt,
            "max_tokens": 12,
            "temperature": 0,
            "repository": "same-repo",  # the same repository name must not share a KV slot
            "stream": stream,
        }
        with server.client(user) as client:
            if not stream:
                return str(client.post("/v1/completions", json=body).json()["choices"][0]["text"])
            with client.stream("POST", "/v1/completions", json=body) as response:
                chunks, _ = sse_texts(list(response.iter_lines()))
            return "".join(c["choices"][0]["text"] for c in chunks)

    jobs = [(user, stream) for stream in (False, True) for user in canaries]
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda job: ask(*job), jobs))
    for (user, _), answer in zip(jobs, answers, strict=True):
        other = next(name for name in canaries if name != user)
        assert canaries[other] not in answer
        assert other.upper() not in answer
    # The test can fail: each user does get their own canary back.
    for user, canary in canaries.items():
        assert any(canary in a for (u, _), a in zip(jobs, answers, strict=True) if u == user)


def test_metrics_cover_latency_queue_and_cache(server: Server) -> None:
    text = server.metrics()
    for name in (
        "coderlsp_request_duration_seconds_bucket",
        "coderlsp_time_to_first_token_seconds_count",
        "coderlsp_queue_depth",
        "coderlsp_decode_tokens_per_second_count",
        "coderlsp_cached_prompt_tokens_total",
        "coderlsp_scheduler_slot_hits_total",
        "coderlsp_draft_accepted_tokens_total",
        "coderlsp_rejected_requests_total",
    ):
        assert name in text, name
    assert metric(text, "coderlsp_cached_prompt_tokens_total") > 0
    assert metric(text, "coderlsp_rejected_requests_total", 'status="401"') > 0


def test_non_loopback_bind_without_tokens_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "none.json"
    done = subprocess.run(
        [*CLI, "serve", "--host", "0.0.0.0", "--port", "0", "--config", str(empty)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "refusing to listen on 0.0.0.0 without tokens" in done.stderr
    assert "--insecure-no-auth" in done.stderr


def test_token_list_and_remove(server: Server, tmp_path: Path) -> None:
    config = tmp_path / "server.json"
    add_token(config, "carol")
    add_token(config, "dave")
    run = [*CLI, "serve", "token"]
    subprocess.run([*run, "remove", "carol", "--config", str(config)], check=True)
    listed = subprocess.run(
        [*run, "list", "--config", str(config)], capture_output=True, text=True, check=True
    )
    assert listed.stdout.split() == ["dave"]
    assert set(json.loads(config.read_text())["users"]) == {"dave"}
