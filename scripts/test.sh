#!/usr/bin/env bash
# The one test command, the same locally and in CI (.ci/run): install, format, lint, types, tests.
# Tests marked `slow` use the real embedded models and run too.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install --quiet --disable-pip-version-check -e '.[test]'

ruff format --check .
ruff check .
mypy runtime context lsp_server bench
pytest -q
# The editor clients in real editors: the Neovim plugin (headless Neovim) and the VS Code
# extension (build, lint, unit tests, .vsix, code-server + Chromium end-to-end).
bash editor-clients/ci.sh
