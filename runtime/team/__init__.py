"""The team server, `coder-lsp serve`: one model shared by a team over an OpenAI-compatible HTTP
API.

cli.py (the `serve` command and `serve token ...`) loads a model, starts a scheduler.py
(per-user fair queue, KV slots, batched decode) and serves app.py (the routes) on a socket from
listen.py. A request goes through config.py (tokens, limits), limits.py (rate), bodies.py
(request bodies into token ids) and comes back through responses.py (JSON or server-sent events);
metrics.py counts it all for Prometheus. errors.py holds the one HTTP error they raise.
"""
