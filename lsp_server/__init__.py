"""The editor-facing language server (pygls 2) and the `coder-lsp` command line."""
