"""`python -m lsp_server`: the same as the `coder-lsp` command."""

from lsp_server.cli import main

raise SystemExit(main())
