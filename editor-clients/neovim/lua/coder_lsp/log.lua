--- A small file log for the plugin itself: stdpath('cache')/coder_lsp.log.
--- The server's own log is separate (vim.lsp's log, or `--log-file` in `cmd`).
local M = {}

local LEVELS = { debug = 1, info = 2, warn = 3, error = 4 }

--- The log file's path.
function M.path()
  return vim.fn.stdpath('cache') .. '/coder_lsp.log'
end

local function write(level, fmt, ...)
  local threshold = LEVELS[require('coder_lsp.config').get().log_level] or LEVELS.warn
  if LEVELS[level] < threshold then
    return
  end
  local ok, message = pcall(string.format, fmt, ...)
  if not ok then
    message = fmt
  end
  local file = io.open(M.path(), 'a')
  if file then
    file:write(string.format('%s [%s] %s\n', os.date('%Y-%m-%d %H:%M:%S'), level:upper(), message))
    file:close()
  end
end

--- Log at debug level (string.format arguments).
function M.debug(...) write('debug', ...) end
--- Log at info level.
function M.info(...) write('info', ...) end
--- Log at warn level.
function M.warn(...) write('warn', ...) end
--- Log at error level.
function M.error(...) write('error', ...) end

return M
