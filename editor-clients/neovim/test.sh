#!/usr/bin/env bash
# Headless end-to-end tests of the Neovim plugin in a real Neovim, against the real `coder-lsp`
# found on the PATH and the 0.5B model. Exit 0 = every test passed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

command -v nvim > /dev/null || { echo "nvim not found (apt-get install neovim)" >&2; exit 1; }
command -v coder-lsp > /dev/null || { echo "coder-lsp not found on the PATH" >&2; exit 1; }
nvim --version | head -1

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# A private statistics file, so feedback counts start at zero.
export CODER_LSP_STATS="$work/stats.json"

status=0
for test in "$here"/tests/test_*.lua; do
    name="$(basename "$test" .lua)"
    rm -rf "$work/project" && cp -r "$here/../fixtures/project" "$work/project"
    echo "== $name"
    if ! CODER_LSP_TEST_DIR="$work/project" \
        timeout 900 nvim --headless -i NONE -u "$here/tests/minimal_init.lua" -c "luafile $test"; then
        status=1
    fi
done
exit "$status"
