--- Ghost text from textDocument/inlineCompletion.
--- Neovim 0.7-0.11: drawn here with extmarks (virt_text for the first line, virt_lines for the
--- rest). Neovim 0.12+: the native vim.lsp.inline_completion, unless `inline.native = false`.
local config = require('coder_lsp.config')
local log = require('coder_lsp.log')
local lsp = require('coder_lsp.lsp')

local M = {}

local api = vim.api
local ns = api.nvim_create_namespace('coder_lsp')
M.namespace = ns

local METHOD = 'textDocument/inlineCompletion'
local DID_SHOW = 'textDocument/didShowCompletion'
local DID_PARTIALLY_ACCEPT = 'textDocument/didPartiallyAcceptCompletion'
local TRIGGER_INVOKED, TRIGGER_AUTOMATIC = 1, 2

-- bufnr -> { client_id, timer, request_id, ignore_tick, suggestion }
-- suggestion: { item, ghost, row, col, replace, typed, accepted, extmark }
local buffers = {}
local shown_ids = {}
M.enabled = nil -- nil: follow config.inline.enabled; :CoderLsp toggle flips it

--- Whether suggestions are on.
function M.is_enabled()
  if M.enabled == nil then
    return config.get().inline.enabled
  end
  return M.enabled
end

--- Whether the native vim.lsp.inline_completion is used.
function M.native()
  local choice = config.get().inline.native
  local available = vim.fn.has('nvim-0.12') == 1 and vim.lsp.inline_completion ~= nil
  return available and (choice == true or choice == 'auto')
end

local function suggestion_id(item)
  local command = item and item.command
  local arguments = command and command.arguments
  if type(arguments) == 'table' and type(arguments[1]) == 'string' then
    return arguments[1]
  end
  return nil
end

local function client_of(state)
  return state and state.client_id and vim.lsp.get_client_by_id(state.client_id) or nil
end

local function cursor()
  local pos = api.nvim_win_get_cursor(0)
  return pos[1] - 1, pos[2]
end

local function in_insert_mode()
  return api.nvim_get_mode().mode:sub(1, 1) == 'i'
end

-- Byte column of an LSP position on `line` (the client's offset encoding).
local function byte_col(line, character, encoding)
  if encoding == 'utf-8' then
    return math.min(character, #line)
  end
  local ok, col = pcall(vim.str_byteindex, line, character, encoding ~= 'utf-32')
  return ok and col or #line
end

local function clear(bufnr)
  local state = buffers[bufnr]
  if state and state.suggestion then
    pcall(api.nvim_buf_del_extmark, bufnr, ns, state.suggestion.extmark)
    state.suggestion = nil
  end
end

local function cancel(bufnr)
  local state = buffers[bufnr]
  if not state then
    return
  end
  if state.timer then
    state.timer:stop()
  end
  local client = client_of(state)
  if state.request_id and client then
    pcall(lsp.call, client, 'cancel_request', state.request_id)
  end
  state.request_id = nil
end

local function display(text)
  -- Tabs in virtual text would show as ^I.
  return (text:gsub('\t', string.rep(' ', vim.bo.tabstop)))
end

local function render(bufnr, suggestion)
  local hl = config.get().inline.hl_group
  local lines = vim.split(suggestion.ghost, '\n', { plain = true })
  local line = api.nvim_buf_get_lines(bufnr, suggestion.row, suggestion.row + 1, true)[1]
  local after = line:sub(suggestion.col + 1)
  local pos = 'overlay'
  if after ~= '' and after ~= suggestion.replace then
    -- Code follows the cursor: insert the ghost before it where Neovim can (0.10+).
    pos = vim.fn.has('nvim-0.10') == 1 and 'inline' or 'eol'
  end
  local virt_lines = {}
  for i = 2, #lines do
    table.insert(virt_lines, { { display(lines[i]), hl } })
  end
  local opts = {
    id = suggestion.extmark,
    virt_text = { { display(lines[1]), hl } },
    virt_text_pos = pos,
    hl_mode = 'combine',
  }
  if #virt_lines > 0 then
    opts.virt_lines = virt_lines
  end
  suggestion.extmark = api.nvim_buf_set_extmark(bufnr, ns, suggestion.row, suggestion.col, opts)
end

local function notify(state, method, params)
  local client = client_of(state)
  if client then
    lsp.call(client, 'notify', method, params)
  end
end

-- Turn an answer into a suggestion at the cursor, or nil.
local function suggestion_from(bufnr, client, item, row, col)
  local text = item.insertText
  if type(text) == 'table' then
    text = text.value -- a snippet: shown and inserted as plain text
  end
  if type(text) ~= 'string' or text == '' then
    return nil
  end
  local line = api.nvim_buf_get_lines(bufnr, row, row + 1, true)[1]
  local start_col, end_col = col, col
  if item.range then
    if item.range.start.line ~= row or item.range['end'].line ~= row then
      return nil -- only ranges on the cursor's line are supported
    end
    start_col = byte_col(line, item.range.start.character, client.offset_encoding)
    end_col = byte_col(line, item.range['end'].character, client.offset_encoding)
  end
  if start_col > col or end_col < col then
    return nil
  end
  local typed = line:sub(start_col + 1, col)
  if text:sub(1, #typed) ~= typed then
    return nil
  end
  local ghost = text:sub(#typed + 1)
  if ghost == '' then
    return nil
  end
  return {
    item = item,
    ghost = ghost,
    row = row,
    col = col,
    replace = line:sub(col + 1, end_col),
    typed = vim.fn.strchars(typed),
    accepted = 0,
  }
end

-- Ask for a suggestion at the cursor; with `keep`, a suggestion shown now stays when the
-- answer has none.
local function request(bufnr, trigger, keep)
  local state = buffers[bufnr]
  local client = client_of(state)
  if not client or not M.is_enabled() or bufnr ~= api.nvim_get_current_buf() or not in_insert_mode() then
    return
  end
  cancel(bufnr)
  local row, col = cursor()
  local tick = api.nvim_buf_get_changedtick(bufnr)
  local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
  params.context = { triggerKind = trigger }
  local ok, id
  ok, id = lsp.call(client, 'request', METHOD, params, function(err, result)
    if state.request_id == id then
      state.request_id = nil
    end
    if err then
      log.warn('inlineCompletion failed: %s', vim.inspect(err))
      return
    end
    -- Drop an answer for a buffer, text or cursor that has changed meanwhile.
    if not api.nvim_buf_is_valid(bufnr) or bufnr ~= api.nvim_get_current_buf() or not in_insert_mode() then
      return
    end
    local now_row, now_col = cursor()
    if api.nvim_buf_get_changedtick(bufnr) ~= tick or now_row ~= row or now_col ~= col then
      log.debug('stale inlineCompletion answer dropped')
      return
    end
    local items = result and (result.items or result) or {}
    local suggestion = items[1] and suggestion_from(bufnr, client, items[1], row, col)
    if not suggestion and keep then
      return
    end
    clear(bufnr)
    if not suggestion then
      return
    end
    state.suggestion = suggestion
    render(bufnr, suggestion)
    local sid = suggestion_id(suggestion.item)
    if sid and not shown_ids[sid] then
      shown_ids[sid] = true
      notify(state, DID_SHOW, { item = suggestion.item })
    end
  end, bufnr)
  if ok then
    state.request_id = id
  end
end

-- Typing: keep a suggestion the typed text agrees with, else ask again after a pause.
local function on_text_changed(bufnr)
  local state = buffers[bufnr]
  if not state or api.nvim_buf_get_changedtick(bufnr) == state.ignore_tick then
    return
  end
  local suggestion = state.suggestion
  local row, col = cursor()
  if suggestion and row == suggestion.row and col > suggestion.col then
    local line = api.nvim_buf_get_lines(bufnr, row, row + 1, true)[1]
    local typed = line:sub(suggestion.col + 1, col)
    if suggestion.ghost:sub(1, #typed) == typed and #typed < #suggestion.ghost then
      suggestion.ghost = suggestion.ghost:sub(#typed + 1)
      suggestion.typed = suggestion.typed + vim.fn.strchars(typed)
      suggestion.col = col
      render(bufnr, suggestion)
      return
    end
  end
  clear(bufnr)
  cancel(bufnr)
  if not M.is_enabled() or vim.fn.pumvisible() == 1 then
    return
  end
  state.timer = state.timer or vim.loop.new_timer()
  state.timer:start(config.get().inline.debounce_ms, 0, vim.schedule_wrap(function()
    if api.nvim_buf_is_valid(bufnr) then
      request(bufnr, TRIGGER_AUTOMATIC)
    end
  end))
end

--- Start showing suggestions from `client` in `bufnr` (called on attach).
function M.attach(bufnr, client)
  if M.native() then
    vim.lsp.inline_completion.enable(true, { bufnr = bufnr })
    return
  end
  if buffers[bufnr] then
    buffers[bufnr].client_id = client.id
    return
  end
  buffers[bufnr] = { client_id = client.id }
  local group = api.nvim_create_augroup('coder_lsp_inline_' .. bufnr, { clear = true })
  api.nvim_create_autocmd('TextChangedI', {
    group = group,
    buffer = bufnr,
    callback = function()
      on_text_changed(bufnr)
    end,
  })
  api.nvim_create_autocmd('CursorMovedI', {
    group = group,
    buffer = bufnr,
    callback = function()
      local suggestion = buffers[bufnr] and buffers[bufnr].suggestion
      if suggestion then
        local row, col = cursor()
        if row ~= suggestion.row or col ~= suggestion.col then
          clear(bufnr)
        end
      end
    end,
  })
  api.nvim_create_autocmd({ 'InsertLeave', 'BufLeave' }, {
    group = group,
    buffer = bufnr,
    callback = function()
      M.dismiss(bufnr)
    end,
  })
  api.nvim_create_autocmd('BufWipeout', {
    group = group,
    buffer = bufnr,
    callback = function()
      M.detach(bufnr)
    end,
  })
end

--- Stop showing suggestions in `bufnr`.
function M.detach(bufnr)
  local state = buffers[bufnr]
  if not state then
    return
  end
  cancel(bufnr)
  clear(bufnr)
  if state.timer then
    state.timer:close()
  end
  pcall(api.nvim_del_augroup_by_name, 'coder_lsp_inline_' .. bufnr)
  buffers[bufnr] = nil
end

--- The ghost text shown in `bufnr` (0: current), or nil.
function M.get(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and api.nvim_get_current_buf() or bufnr
  local state = buffers[bufnr]
  return state and state.suggestion and state.suggestion.ghost or nil
end

--- Whether a suggestion is shown in the current buffer (extmark mode; the native API of 0.12
--- cannot tell, so there use accept()'s result).
function M.visible()
  return M.get(0) ~= nil
end

local function insert_at_cursor(bufnr, suggestion, text, replace)
  local lines = vim.split(text, '\n', { plain = true })
  local end_col = suggestion.col
  local line = api.nvim_buf_get_lines(bufnr, suggestion.row, suggestion.row + 1, true)[1]
  if replace and replace ~= '' and line:sub(suggestion.col + 1, suggestion.col + #replace) == replace then
    end_col = suggestion.col + #replace
  end
  api.nvim_buf_set_text(bufnr, suggestion.row, suggestion.col, suggestion.row, end_col, lines)
  local row = suggestion.row + #lines - 1
  local col = (#lines == 1 and suggestion.col or 0) + #lines[#lines]
  api.nvim_win_set_cursor(0, { row + 1, col })
  return row, col
end

-- The current buffer, its state and the suggestion shown in it (or nil).
local function current()
  local bufnr = api.nvim_get_current_buf()
  local state = buffers[bufnr]
  return bufnr, state, state and state.suggestion
end

--- Accept the whole suggestion; returns true if there was one.
function M.accept()
  if M.native() then
    return vim.lsp.inline_completion.get({ bufnr = 0 }) == true
  end
  local bufnr, state, suggestion = current()
  if not suggestion then
    return false
  end
  clear(bufnr)
  cancel(bufnr)
  insert_at_cursor(bufnr, suggestion, suggestion.ghost, suggestion.replace)
  local command = suggestion.item.command
  local client = client_of(state)
  if command and client then
    -- The item's command is how the server counts an acceptance.
    lsp.call(client, 'request', 'workspace/executeCommand', { command = command.command, arguments = command.arguments }, function() end, bufnr)
  end
  return true
end

local function accept_part(part_of)
  if M.native() then
    vim.notify_once('coder-lsp: accept word/line needs inline.native = false on Neovim 0.12+', vim.log.levels.WARN)
    return false
  end
  local bufnr, state, suggestion = current()
  if not suggestion then
    return false
  end
  local part = part_of(suggestion.ghost)
  if part == '' or part == suggestion.ghost then
    return M.accept()
  end
  cancel(bufnr)
  local row, col = insert_at_cursor(bufnr, suggestion, part, nil)
  -- Our own edit must not start a new request: the rest of the suggestion stays.
  state.ignore_tick = api.nvim_buf_get_changedtick(bufnr)
  suggestion.ghost = suggestion.ghost:sub(#part + 1)
  suggestion.accepted = suggestion.accepted + vim.fn.strchars(part)
  suggestion.row, suggestion.col = row, col
  render(bufnr, suggestion)
  notify(state, DID_PARTIALLY_ACCEPT, { item = suggestion.item, acceptedLength = suggestion.typed + suggestion.accepted })
  return true
end

--- The next word of `text`: leading whitespace (newlines included) and then one word or one run
--- of punctuation.
function M.next_word(text)
  local space = text:match('^%s*')
  local rest = text:sub(#space + 1)
  local word = rest:match('^[%w_]+') or rest:match('^[^%w_%s]+') or ''
  return space .. word
end

--- The next line of `text`: up to its first line break; if it starts with one, the break and
--- the line after it.
function M.next_line(text)
  if text:sub(1, 1) == '\n' then
    return '\n' .. (text:sub(2):match('^[^\n]*'))
  end
  return text:match('^[^\n]*')
end

--- Accept the next word of the suggestion.
function M.accept_word()
  return accept_part(M.next_word)
end

--- Accept the next line of the suggestion.
function M.accept_line()
  return accept_part(M.next_line)
end

--- Hide the suggestion in `bufnr` (0 or nil: current) and drop a pending request.
function M.dismiss(bufnr)
  if M.native() then
    -- No dismiss in the native API: switching it off and on again clears the candidate.
    vim.lsp.inline_completion.enable(false, { bufnr = bufnr or 0 })
    vim.lsp.inline_completion.enable(true, { bufnr = bufnr or 0 })
    return
  end
  bufnr = (bufnr == nil or bufnr == 0) and api.nvim_get_current_buf() or bufnr
  cancel(bufnr)
  clear(bufnr)
end

--- Ask for a suggestion now (the server answers with one item: this asks again).
function M.next()
  if M.native() then
    local inline = vim.lsp.inline_completion
    local step = inline.select or inline.jump
    return step and step({ count = 1 })
  end
  local bufnr = api.nvim_get_current_buf()
  clear(bufnr)
  request(bufnr, TRIGGER_INVOKED)
end

--- Turn suggestions on or off everywhere; returns the new state.
function M.toggle()
  M.enabled = not M.is_enabled()
  if not M.enabled then
    for bufnr in pairs(buffers) do
      M.dismiss(bufnr)
    end
  end
  if M.native() then
    vim.lsp.inline_completion.enable(M.enabled)
  end
  return M.enabled
end

--- The server's `coderLsp/completionReady`: a suggestion it could not wait for is ready (or
--- the rest of one shown before it ended). Ask again when the buffer, its version and the
--- cursor are still as they were; the answer replaces what is shown.
function M.on_ready(params)
  if M.native() or type(params) ~= 'table' or type(params.textDocument) ~= 'table' then
    return
  end
  local bufnr = vim.uri_to_bufnr(params.textDocument.uri)
  local state = buffers[bufnr]
  local client = client_of(state)
  if not client or bufnr ~= api.nvim_get_current_buf() or not in_insert_mode() then
    return
  end
  if params.textDocument.version ~= vim.lsp.util.buf_versions[bufnr] then
    return
  end
  local row, col = cursor()
  local line = api.nvim_buf_get_lines(bufnr, row, row + 1, true)[1] or ''
  if row == params.position.line and byte_col(line, params.position.character, client.offset_encoding) == col then
    request(bufnr, TRIGGER_AUTOMATIC, true)
  end
end

return M
