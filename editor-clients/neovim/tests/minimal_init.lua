-- Neovim started by test.sh: only this plugin, configured through vim.g (no setup() call).
local root = vim.fn.fnamemodify(debug.getinfo(1, 'S').source:sub(2), ':p:h:h')
vim.opt.runtimepath:prepend(root)
package.path = root .. '/tests/?.lua;' .. package.path
vim.o.swapfile = false
vim.o.showmode = false
vim.o.autoindent = false
vim.o.shortmess = vim.o.shortmess .. 'I'
vim.cmd('filetype on')
vim.g.coder_lsp = {
  -- The 0.5B model loads in about a second; short suggestions keep the tests quick.
  settings = { model = 'qwen2.5-coder-0.5b', maxTokens = 24, useContext = false, logLevel = os.getenv('CODER_LSP_TEST_LOG') and 'debug' or nil },
  log_level = 'debug',
}
-- test.sh passes a server log file, shown when a test fails.
if os.getenv('CODER_LSP_TEST_LOG') then
  vim.g.coder_lsp = vim.tbl_extend('force', vim.g.coder_lsp, {
    cmd = { 'coder-lsp', '--log-file', os.getenv('CODER_LSP_TEST_LOG'), '--log-level', 'DEBUG' },
  })
end
