--- Options: defaults, merged from `vim.g.coder_lsp` and/or `require('coder_lsp').setup()`,
--- validated with vim.validate. `setup()` is optional.
local M = {}

---@class coder_lsp.Config
M.defaults = {
  -- The server command; `coder-lsp` must be on the PATH, or give its full path.
  cmd = { 'coder-lsp' },
  -- Filetypes to complete; { '*' } for every normal buffer with a filetype.
  filetypes = {
    'c', 'cpp', 'cs', 'css', 'go', 'html', 'java', 'javascript', 'javascriptreact', 'json',
    'kotlin', 'lua', 'markdown', 'php', 'python', 'ruby', 'rust', 'scala', 'sh', 'sql',
    'swift', 'toml', 'typescript', 'typescriptreact', 'vim', 'yaml', 'zig',
  },
  -- Files or directories that mark a project root (the workspace the server indexes).
  root_markers = { '.git', 'pyproject.toml', 'package.json', 'go.mod', 'Cargo.toml', 'pom.xml' },
  -- Server settings (initializationOptions, camelCase as in the README's settings table),
  -- e.g. { model = 'qwen2.5-coder-0.5b', maxTokens = 48 }.
  settings = {},
  inline = {
    enabled = true,
    -- Milliseconds after the last keystroke before a request (the server debounces too).
    debounce_ms = 75,
    -- Highlight group of the ghost text.
    hl_group = 'Comment',
    -- Neovim 0.12+ has vim.lsp.inline_completion: 'auto' uses it there, false never.
    native = 'auto',
  },
  -- Insert-mode keys; false maps nothing (use the <Plug>(coder-lsp-*) mappings yourself).
  -- A key is only mapped when nothing else is mapped to it already.
  keymaps = {
    accept = '<Tab>', -- falls through to a normal <Tab> when no suggestion is shown
    accept_word = '<M-Right>',
    accept_line = '<M-Down>',
    dismiss = '<C-]>',
    next = '<M-]>',
  },
  log_level = 'warn', -- this plugin's own log (see :CoderLsp log): debug, info, warn, error
}

local current = nil
local user = {}

local LEVELS = { debug = true, info = true, warn = true, error = true }

local function list_of_strings(value)
  if type(value) ~= 'table' then
    return false
  end
  for _, item in ipairs(value) do
    if type(item) ~= 'string' then
      return false
    end
  end
  return true
end

--- Check `opts` (a merged config); raises an error naming the bad field.
function M.validate(opts)
  vim.validate({
    cmd = { opts.cmd, list_of_strings, 'list of strings' },
    filetypes = { opts.filetypes, list_of_strings, 'list of strings' },
    root_markers = { opts.root_markers, list_of_strings, 'list of strings' },
    settings = { opts.settings, 'table' },
    inline = { opts.inline, 'table' },
    keymaps = { opts.keymaps, function(v) return v == false or type(v) == 'table' end, 'table or false' },
    log_level = { opts.log_level, function(v) return LEVELS[v] == true end, 'debug|info|warn|error' },
  })
  vim.validate({
    ['inline.enabled'] = { opts.inline.enabled, 'boolean' },
    ['inline.debounce_ms'] = { opts.inline.debounce_ms, function(v) return type(v) == 'number' and v >= 0 end, 'number >= 0' },
    ['inline.hl_group'] = { opts.inline.hl_group, 'string' },
    ['inline.native'] = { opts.inline.native, function(v) return v == 'auto' or type(v) == 'boolean' end, "'auto' or boolean" },
  })
  if #opts.cmd == 0 then
    error('cmd: expected the server command, got an empty list')
  end
  if type(opts.keymaps) == 'table' then
    for name, key in pairs(opts.keymaps) do
      if M.defaults.keymaps[name] == nil then
        error('keymaps.' .. name .. ': unknown action')
      end
      if key ~= false and type(key) ~= 'string' then
        error('keymaps.' .. name .. ': expected a key or false')
      end
    end
  end
end

--- Merge `opts` over the defaults and `vim.g.coder_lsp`, validate, and make it current.
function M.set(opts)
  user = vim.tbl_deep_extend('force', user, opts or {})
  local merged = vim.tbl_deep_extend('force', vim.deepcopy(M.defaults), vim.g.coder_lsp or {}, user)
  -- Lists replace, never merge index by index.
  for _, key in ipairs({ 'cmd', 'filetypes', 'root_markers' }) do
    local given = user[key] or (vim.g.coder_lsp or {})[key]
    if given ~= nil then
      merged[key] = given
    end
  end
  M.validate(merged)
  current = merged
  return current
end

--- The current config (built from defaults and `vim.g.coder_lsp` on first use).
function M.get()
  if current == nil then
    local ok, err = pcall(M.set, {})
    if not ok then
      vim.notify('coder-lsp: invalid config: ' .. tostring(err) .. '; using the defaults', vim.log.levels.ERROR)
      user = {}
      current = vim.deepcopy(M.defaults)
    end
  end
  return current
end

--- Forget the merged config (tests, :CoderLsp restart after changing vim.g.coder_lsp).
function M.reset()
  current = nil
  user = {}
end

return M
