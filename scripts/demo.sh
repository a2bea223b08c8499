#!/usr/bin/env bash
# The one main-job command: install, prepare the default models (target + draft) in the user
# cache, then complete the hole in examples/fim_demo.py (line 25, just after `return`).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install --quiet --disable-pip-version-check -e .

coder-lsp models prepare
coder-lsp complete examples/fim_demo.py:25:11
