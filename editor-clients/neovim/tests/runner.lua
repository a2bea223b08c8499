-- A tiny test runner for headless Neovim: tests run in a coroutine so they can wait on the event
-- loop (typed keys, LSP answers) without blocking it. Exits 0 when every test passed.
local M = {}

local function out(line)
  io.stdout:write(line .. '\n')
end

-- Resume the test coroutine; an error outside a test ends Neovim with a failure.
local function resume(co)
  local ok, err = coroutine.resume(co)
  if not ok then
    out('runner error: ' .. tostring(err))
    vim.cmd('cquit 3')
  end
end

--- Yield to the event loop for `ms` milliseconds.
function M.sleep(ms)
  local co = coroutine.running()
  vim.defer_fn(function()
    resume(co)
  end, ms)
  coroutine.yield()
end

--- Wait until `condition()` returns a truthy value (returned); fail after `timeout_ms`.
function M.wait_until(condition, timeout_ms, what)
  local deadline = vim.loop.now() + timeout_ms
  while true do
    local ok, value = pcall(condition)
    if ok and value then
      return value
    end
    if vim.loop.now() > deadline then
      error('timed out after ' .. timeout_ms .. ' ms waiting for ' .. what .. (ok and '' or (': ' .. tostring(value))), 2)
    end
    M.sleep(50)
  end
end

--- Type `keys` as a user would (termcodes such as <Esc> allowed); `remap` for mappings.
function M.type(keys, remap)
  local codes = vim.api.nvim_replace_termcodes(keys, true, false, true)
  vim.api.nvim_feedkeys(codes, remap and 'mt' or 'nt', false)
  M.sleep(20)
end

--- Fail with `message` unless `a` equals `b` (compared with vim.deep_equal).
function M.eq(a, b, message)
  if not vim.deep_equal(a, b) then
    error(string.format('%s: expected %s, got %s', message or 'not equal', vim.inspect(a), vim.inspect(b)), 2)
  end
end

--- Fail with `message` unless `value` is truthy.
function M.ok(value, message)
  if not value then
    error(message or 'expected a truthy value', 2)
  end
  return value
end

--- Run `tests` ({ {name, fn}, ... }) in order, print TAP-style lines and a summary, exit.
function M.run(tests)
  local co = coroutine.create(function()
    local passed, failed = 0, 0
    for _, test in ipairs(tests) do
      local ok, err = xpcall(test[2], debug.traceback)
      if ok then
        passed = passed + 1
        out('ok - ' .. test[1])
      else
        failed = failed + 1
        out('not ok - ' .. test[1] .. '\n' .. tostring(err))
      end
    end
    out(string.format('\nneovim: %d passed, %d failed', passed, failed))
    vim.cmd(failed == 0 and 'qall!' or 'cquit 1')
  end)
  -- A test that hangs must not hang CI.
  vim.defer_fn(function()
    out('neovim: timed out')
    vim.cmd('cquit 2')
  end, 600000)
  vim.schedule(function()
    resume(co)
  end)
end

return M
