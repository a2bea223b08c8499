--- Starting the server and attaching buffers: vim.lsp.start on 0.8+, start_client on 0.7.
local config = require('coder_lsp.config')
local log = require('coder_lsp.log')

local M = {}

M.NAME = 'coder_lsp'
-- Model state as the server reports it through $/progress: starting, loading, ready, failed.
M.state = { value = 'stopped', detail = '' }
-- root_dir -> client id, for 0.7 (vim.lsp.start reuses clients by itself on 0.8+).
local by_root = {}

--- Call a client method: `client:name(...)` on 0.11+, `client.name(...)` before.
function M.call(client, name, ...)
  if vim.fn.has('nvim-0.11') == 1 then
    return client[name](client, ...)
  end
  return client[name](...)
end

local function exists(path)
  return vim.loop.fs_stat(path) ~= nil
end

--- The project root of `bufnr`: the nearest parent with a root marker, else the file's folder.
function M.root_dir(bufnr)
  local name = vim.api.nvim_buf_get_name(bufnr)
  local dir = name ~= '' and vim.fn.fnamemodify(name, ':p:h') or vim.loop.cwd()
  local markers = config.get().root_markers
  local candidate = dir
  while candidate and candidate ~= '' do
    for _, marker in ipairs(markers) do
      if exists(candidate .. '/' .. marker) then
        return candidate
      end
    end
    local parent = vim.fn.fnamemodify(candidate, ':h')
    if parent == candidate then
      break
    end
    candidate = parent
  end
  return dir
end

--- Client capabilities: Neovim's, plus inline completion (so the server sends ghost text
--- instead of completion items) and progress.
function M.capabilities()
  local capabilities = vim.lsp.protocol.make_client_capabilities()
  capabilities.textDocument = capabilities.textDocument or {}
  capabilities.textDocument.inlineCompletion = { dynamicRegistration = false }
  capabilities.window = capabilities.window or {}
  capabilities.window.workDoneProgress = true
  return capabilities
end

local function on_progress(err, result, ctx, cfg)
  local default = vim.lsp.handlers['$/progress']
  if default then
    pcall(default, err, result, ctx, cfg)
  end
  local value = result and result.value
  if type(value) ~= 'table' then
    return
  end
  if value.kind == 'begin' then
    M.state = { value = 'loading', detail = value.message or '' }
  elseif value.kind == 'report' and value.message then
    M.state.detail = value.message
  elseif value.kind == 'end' then
    local ready = value.message == 'ready'
    M.state = { value = ready and 'ready' or 'failed', detail = value.message or '' }
    log.info('model %s', M.state.value)
  end
end

--- The client config for `root`.
function M.client_config(root)
  local opts = config.get()
  return {
    name = M.NAME,
    cmd = opts.cmd,
    root_dir = root,
    workspace_folders = { { uri = vim.uri_from_fname(root), name = vim.fn.fnamemodify(root, ':t') } },
    init_options = opts.settings,
    capabilities = M.capabilities(),
    handlers = {
      ['$/progress'] = on_progress,
      ['coderLsp/completionReady'] = function(_, params)
        require('coder_lsp.inline').on_ready(params)
      end,
    },
    on_init = function()
      M.state = { value = 'loading', detail = 'starting' }
    end,
    on_attach = function(client, bufnr)
      require('coder_lsp.inline').attach(bufnr, client)
    end,
    on_exit = function(code, signal, client_id)
      M.state = { value = code == 0 and 'stopped' or 'failed', detail = 'exit ' .. tostring(code) .. ', signal ' .. tostring(signal) }
      log.warn('server exited: code %s, signal %s', tostring(code), tostring(signal))
      for dir, id in pairs(by_root) do
        if id == client_id then
          by_root[dir] = nil
        end
      end
    end,
  }
end

--- Start (or reuse) the server for `bufnr` and attach it; returns the client id or nil.
function M.attach(bufnr)
  local opts = config.get()
  if vim.fn.executable(opts.cmd[1]) ~= 1 then
    log.error('%s is not executable', opts.cmd[1])
    vim.notify_once('coder-lsp: `' .. opts.cmd[1] .. '` not found; see :checkhealth coder_lsp', vim.log.levels.ERROR)
    return nil
  end
  local root = M.root_dir(bufnr)
  if M.state.value == 'stopped' then
    M.state = { value = 'starting', detail = '' }
  end
  if vim.lsp.start then
    return vim.lsp.start(M.client_config(root), { bufnr = bufnr })
  end
  local id = by_root[root]
  if id == nil or vim.lsp.get_client_by_id(id) == nil then
    id = vim.lsp.start_client(M.client_config(root))
    by_root[root] = id
  end
  if id then
    vim.lsp.buf_attach_client(bufnr, id)
  end
  return id
end

--- The running coder-lsp clients.
function M.clients()
  local found = {}
  local all = vim.lsp.get_clients and vim.lsp.get_clients() or vim.lsp.get_active_clients()
  for _, client in pairs(all) do
    if client.name == M.NAME then
      table.insert(found, client)
    end
  end
  return found
end

--- The coder-lsp client attached to `bufnr` (0: current), if any.
function M.client_for(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and vim.api.nvim_get_current_buf() or bufnr
  for _, client in ipairs(M.clients()) do
    if vim.lsp.buf_is_attached(bufnr, client.id) then
      return client
    end
  end
  return nil
end

--- Ask the server for `coderLsp.status` (blocking, at most `timeout_ms`); nil on failure.
function M.status(client, timeout_ms)
  local params = { command = 'coderLsp.status', arguments = {} }
  local answer = M.call(client, 'request_sync', 'workspace/executeCommand', params, timeout_ms or 2000)
  if answer and answer.result then
    return answer.result
  end
  return nil
end

--- Stop every coder-lsp client.
function M.stop()
  for _, client in ipairs(M.clients()) do
    M.call(client, 'stop')
  end
  by_root = {}
  M.state = { value = 'stopped', detail = '' }
end

return M
