#!/usr/bin/env bash
# Screenshot of ghost text in a real Neovim: nvim runs in a tmux terminal, the plugin shows a
# suggestion from the real server, the screen (with colours) is captured and rendered to PNG by
# headless Chromium. Writes screenshots/ghost-text.png. Needs tmux, chromium, coder-lsp on PATH.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/screenshots/ghost-text.png}"
work="$(mktemp -d)"
session="coder-lsp-shot-$$"
trap 'tmux kill-session -t "$session" 2>/dev/null || true; rm -rf "$work"' EXIT
cp -r "$here/../fixtures/project" "$work/project"
export CODER_LSP_STATS="$work/stats.json"

tmux new-session -d -s "$session" -x 90 -y 14 \
    "CODER_LSP_TEST_LOG='$work/server.log' TERM=xterm-256color nvim -i NONE \
      -u '$here/tests/minimal_init.lua' -c 'set termguicolors number' \
      -c 'edit $work/project/fib.py' -c 'setlocal noautoindent indentexpr=' -c 'normal! G'"
# Wait for the model to load (the server's log says so), then type a new last line.
for _ in $(seq 1 240); do
    grep -q "ready in" "$work/server.log" 2>/dev/null && break
    sleep 0.5
done
tmux send-keys -t "$session" "o    return "
for _ in $(seq 1 120); do
    sleep 0.5
    if tmux capture-pane -t "$session" -p | grep -q "return fib"; then
        break
    fi
done
sleep 0.3
tmux capture-pane -t "$session" -e -p > "$work/screen.ans"
tmux capture-pane -t "$session" -p | grep -q "return fib" || { echo "no ghost text on the screen:" >&2; cat "$work/screen.ans" >&2; exit 1; }
python3 "$here/tests/ansi_to_html.py" "coder-lsp in Neovim" < "$work/screen.ans" > "$work/screen.html"
mkdir -p "$(dirname "$out")"
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --hide-scrollbars --window-size=840,300 --screenshot="$out" "file://$work/screen.html" 2>/dev/null
echo "wrote $out"
