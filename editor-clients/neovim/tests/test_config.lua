-- Options validation and the pure helpers; no server needed.
local t = require('runner')

local function fails(opts, field)
  local config = require('coder_lsp.config')
  config.reset()
  local ok, err = pcall(config.set, opts)
  config.reset()
  t.ok(not ok, 'expected an error for ' .. vim.inspect(opts))
  t.ok(tostring(err):find(field, 1, true), 'error names ' .. field .. ': ' .. tostring(err))
end

t.run({
  { 'defaults and vim.g.coder_lsp merge without setup()', function()
    local config = require('coder_lsp.config')
    config.reset()
    local opts = config.get()
    t.eq({ 'coder-lsp' }, opts.cmd, 'default cmd')
    t.eq('qwen2.5-coder-0.5b', opts.settings.model, 'settings from vim.g.coder_lsp')
    t.eq(75, opts.inline.debounce_ms, 'nested default kept')
  end },
  { 'setup() options win and lists replace', function()
    local config = require('coder_lsp.config')
    config.reset()
    local opts = config.set({ filetypes = { 'rust' }, inline = { debounce_ms = 10 } })
    t.eq({ 'rust' }, opts.filetypes, 'filetypes replaced, not merged')
    t.eq(10, opts.inline.debounce_ms, 'nested option')
    t.eq('Comment', opts.inline.hl_group, 'sibling default kept')
    config.reset()
  end },
  { 'invalid options are rejected by name', function()
    fails({ cmd = 'coder-lsp' }, 'cmd')
    fails({ cmd = {} }, 'cmd')
    fails({ filetypes = { 1 } }, 'filetypes')
    fails({ inline = { debounce_ms = -1 } }, 'inline.debounce_ms')
    fails({ inline = { native = 'yes' } }, 'inline.native')
    fails({ keymaps = { accept_all = '<Tab>' } }, 'keymaps.accept_all')
    fails({ log_level = 'loud' }, 'log_level')
  end },
  { 'an invalid vim.g.coder_lsp falls back to the defaults with an error message', function()
    local config = require('coder_lsp.config')
    local saved = vim.g.coder_lsp
    vim.g.coder_lsp = { cmd = 42 }
    config.reset()
    local messages = {}
    local notify = vim.notify
    vim.notify = function(message) table.insert(messages, message) end
    local opts = config.get()
    vim.notify = notify
    vim.g.coder_lsp = saved
    config.reset()
    t.eq({ 'coder-lsp' }, opts.cmd, 'default cmd')
    t.ok(messages[1] and messages[1]:find('cmd', 1, true), vim.inspect(messages))
  end },
  { 'next word and next line of a suggestion', function()
    local inline = require('coder_lsp.inline')
    t.eq('fibonacci', inline.next_word('fibonacci(n - 1)'), 'word')
    t.eq('(', inline.next_word('(n - 1)'), 'punctuation')
    t.eq(' -', inline.next_word(' - 1)'), 'space then punctuation')
    t.eq('\n    return', inline.next_word('\n    return x'), 'line break and indent')
    t.eq('a + b', inline.next_line('a + b\nc'), 'line')
    t.eq('\n    c', inline.next_line('\n    c\nd'), 'next line after a break')
  end },
  { 'the plugin file defines the command and <Plug> mappings before anything is required', function()
    t.eq(2, vim.fn.exists(':CoderLsp'), ':CoderLsp exists')
    for _, name in ipairs({ 'accept', 'accept-word', 'accept-line', 'dismiss', 'next' }) do
      t.ok(vim.fn.maparg('<Plug>(coder-lsp-' .. name .. ')', 'i') ~= '', name .. ' mapping')
    end
  end },
})
