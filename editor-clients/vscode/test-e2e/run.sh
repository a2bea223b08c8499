#!/usr/bin/env bash
# End-to-end test of the extension in code-server (npm) driven by Debian's Chromium.
# Needs: node 20, chromium, ripgrep, libkrb5-dev, build tools (code-server builds native
# modules), coder-lsp on the PATH, and the .vsix built in editor-clients/vscode.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

if [ ! -x node_modules/.bin/code-server ]; then
    # code-server's VS Code fetches a ripgrep binary from GitHub at install time; only the
    # package registries are reachable here, so seed its download cache with Debian's rg.
    # code-server 4.100.3 (package-lock.json) pins @vscode/ripgrep 1.15.11, which wants rg 13.0.0-10.
    rg_version=1.15.11
    cache="$(node -p "require('os').tmpdir()")/vscode-ripgrep-cache-$rg_version"
    mkdir -p "$cache"
    seed="$(mktemp -d)"
    cp "$(command -v rg)" "$seed/rg"
    tar -czf "$cache/ripgrep-v13.0.0-10-x86_64-unknown-linux-musl.tar.gz" -C "$seed" rg
    rm -rf "$seed"
    # code-server's postinstall refuses to run as root without unsafe-perm, and node-pty's runs
    # `npx node-gyp`, which must not stop to ask.
    npm_config_unsafe_perm=true npm_config_yes=true npm ci --no-audit --no-fund
fi
node e2e.mjs "$@"
