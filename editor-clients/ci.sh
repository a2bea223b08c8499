#!/usr/bin/env bash
# The editor clients' checks, run by scripts/test.sh (so by CI) with the venv active:
# - Neovim: the plugin's headless end-to-end tests in Debian's Neovim;
# - VS Code: build, lint, unit tests, the .vsix, and the end-to-end test in code-server driven
#   by Debian's Chromium.
# Installs the Debian packages it needs when they are missing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

need=()
command -v nvim > /dev/null || need+=(neovim)
command -v chromium > /dev/null || need+=(chromium)
command -v rg > /dev/null || need+=(ripgrep)
command -v make > /dev/null || need+=(build-essential)
command -v pkg-config > /dev/null || need+=(pkg-config)
# code-server's VS Code builds the kerberos module, which needs the GSSAPI headers.
[ -e /usr/include/gssapi/gssapi.h ] || need+=(libkrb5-dev)
if [ "${#need[@]}" -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing ${need[*]}"
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" > /dev/null
fi

bash "$here/neovim/test.sh"

cd "$here/vscode"
npm ci --no-audit --no-fund
npm run compile
npm run lint
npm test
npm run package
bash test-e2e/run.sh
