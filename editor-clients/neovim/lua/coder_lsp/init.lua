--- coder-lsp for Neovim: public entry points. `setup()` is optional: the plugin starts with
--- the defaults (or `vim.g.coder_lsp`) for the configured filetypes.
local config = require('coder_lsp.config')

local M = {}

local mapped = false

-- Map the configured insert-mode keys to the <Plug> mappings, leaving the user's own alone.
local function map_keys()
  local keymaps = config.get().keymaps
  if mapped or keymaps == false then
    return
  end
  mapped = true
  for action, key in pairs(keymaps) do
    if key and vim.fn.maparg(key, 'i') == '' then
      local plug = '<Plug>(coder-lsp-' .. action:gsub('_', '-') .. ')'
      if action == 'accept' then
        -- Falls through to the key itself when no suggestion is shown.
        local keys = vim.api.nvim_replace_termcodes(key, true, false, true)
        vim.keymap.set('i', key, function()
          if not require('coder_lsp.inline').accept() then
            vim.api.nvim_feedkeys(keys, 'n', false)
          end
        end, { desc = 'coder-lsp: accept suggestion' })
      else
        vim.keymap.set('i', key, plug, { remap = true, desc = 'coder-lsp: ' .. action:gsub('_', ' ') })
      end
    end
  end
end

--- Configure (optional); `opts` is merged over the defaults and `vim.g.coder_lsp`. Raises on
--- an invalid option, naming it.
function M.setup(opts)
  config.set(opts)
  map_keys()
  -- Buffers opened before setup() get the server now.
  for _, bufnr in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_is_loaded(bufnr) then
      M.on_filetype(bufnr)
    end
  end
end

--- Whether `bufnr` should get completions: a normal buffer of a configured filetype.
function M.wants(bufnr)
  local ft = vim.bo[bufnr].filetype
  if ft == '' or vim.bo[bufnr].buftype ~= '' then
    return false
  end
  for _, wanted in ipairs(config.get().filetypes) do
    if wanted == '*' or wanted == ft then
      return true
    end
  end
  return false
end

--- FileType autocommand: start or reuse the server for `bufnr` if it is wanted.
function M.on_filetype(bufnr)
  if not M.wants(bufnr) then
    return
  end
  map_keys()
  require('coder_lsp.lsp').attach(bufnr)
end

local function status_lines()
  local lsp = require('coder_lsp.lsp')
  local inline = require('coder_lsp.inline')
  local lines = {
    string.format('coder-lsp: model %s%s; suggestions %s%s', lsp.state.value,
      lsp.state.detail ~= '' and (' (' .. lsp.state.detail .. ')') or '',
      inline.is_enabled() and 'on' or 'off', inline.native() and ' (native)' or ''),
  }
  for _, client in ipairs(lsp.clients()) do
    local status = lsp.status(client)
    if status then
      local feedback = status.feedback or {}
      table.insert(lines, string.format('client %d: %s, model %s, folders %s', client.id, status.state,
        tostring(status.model), table.concat(status.folders or {}, ', ')))
      table.insert(lines, 'outcomes: ' .. vim.inspect(status.outcomes or {}, { newline = ' ', indent = '' }))
      table.insert(lines, 'feedback: ' .. vim.inspect(feedback, { newline = ' ', indent = '' }))
    end
  end
  return lines
end

--- `:CoderLsp {action}`: status, toggle, log, restart.
function M.command(action)
  if action == 'status' then
    vim.notify(table.concat(status_lines(), '\n'), vim.log.levels.INFO)
  elseif action == 'toggle' then
    local on = require('coder_lsp.inline').toggle()
    vim.notify('coder-lsp: suggestions ' .. (on and 'on' or 'off'), vim.log.levels.INFO)
  elseif action == 'log' then
    vim.cmd('split ' .. vim.fn.fnameescape(require('coder_lsp.log').path()))
    vim.notify('Server messages are in ' .. vim.lsp.get_log_path(), vim.log.levels.INFO)
  elseif action == 'restart' then
    local lsp = require('coder_lsp.lsp')
    lsp.stop()
    vim.defer_fn(function()
      for _, bufnr in ipairs(vim.api.nvim_list_bufs()) do
        if vim.api.nvim_buf_is_loaded(bufnr) then
          M.on_filetype(bufnr)
        end
      end
    end, 500)
  else
    vim.notify('coder-lsp: unknown action ' .. tostring(action) .. ' (status, toggle, log, restart)', vim.log.levels.ERROR)
  end
end

--- The status lines `:CoderLsp status` shows.
M.status_lines = status_lines

return M
