--- :checkhealth coder_lsp
local M = {}

-- vim.health.ok (0.10+), vim.health.report_ok (0.8-0.9), health#report_ok (0.7).
local function reporter(name)
  local health = vim.health or {}
  return health[name] or health['report_' .. name] or function(...)
    vim.fn['health#report_' .. name](...)
  end
end

local start, ok, warn, error, info = reporter('start'), reporter('ok'), reporter('warn'), reporter('error'), reporter('info')

--- Run the checks.
function M.check()
  start('coder-lsp')
  if vim.fn.has('nvim-0.7') == 1 then
    ok('Neovim ' .. tostring(vim.version().major) .. '.' .. tostring(vim.version().minor) .. ' (0.7+ needed)')
  else
    error('Neovim 0.7 or newer is needed')
  end
  local valid, problem = pcall(function()
    local config = require('coder_lsp.config')
    config.validate(config.get())
  end)
  if valid then
    ok('configuration is valid')
  else
    error('invalid configuration: ' .. tostring(problem))
    return
  end
  local config = require('coder_lsp.config').get()
  local exe = vim.fn.exepath(config.cmd[1])
  if exe == '' then
    error('`' .. config.cmd[1] .. '` not found', { 'Install coder-lsp (pip install -e . in its repository) and put its venv bin/ on PATH, or set cmd = { "/path/to/.venv/bin/coder-lsp" }' })
    return
  end
  ok('server: ' .. exe)
  local model = config.settings.model
  local listing = vim.fn.systemlist({ exe, 'models', 'list' })
  if vim.v.shell_error ~= 0 then
    error('`coder-lsp models list` failed: ' .. table.concat(listing, ' '))
  else
    local wanted = model or listing[#listing]:match('target (%S+),') or ''
    local state
    for _, line in ipairs(listing) do
      local name, _, line_state = line:match('^(%S+)%s+(%S+)%s+(%S+)')
      if name == wanted then
        state = line_state
      end
    end
    if state == 'prepared' then
      ok('model ' .. wanted .. ' is prepared')
    elseif model and state == nil then
      info('model ' .. wanted .. ' is not an embedded model (a local path or hub id): not checked')
    else
      warn('model ' .. wanted .. ' is ' .. tostring(state), { 'Run `coder-lsp models prepare ' .. wanted .. '` once (a few minutes), or the first start prepares it' })
    end
  end
  local inline = require('coder_lsp.inline')
  info('ghost text: ' .. (inline.native() and 'native vim.lsp.inline_completion' or 'extmarks'))
  local lsp = require('coder_lsp.lsp')
  local clients = lsp.clients()
  if #clients == 0 then
    info('no server running (it starts when a file of a configured filetype opens)')
  end
  for _, client in ipairs(clients) do
    local status = lsp.status(client)
    if status == nil then
      warn('client ' .. client.id .. ': no answer to coderLsp.status')
    elseif status.state == 'ready' then
      ok('client ' .. client.id .. ': model ' .. tostring(status.model) .. ' ready')
    elseif status.state == 'failed' then
      error('client ' .. client.id .. ': model failed: ' .. tostring(status.detail))
    else
      info('client ' .. client.id .. ': model ' .. tostring(status.state))
    end
  end
end

return M
