-- End-to-end: the plugin in a real Neovim against the real coder-lsp and the 0.5B model.
-- Run by test.sh with the fixture project copied to $CODER_LSP_TEST_DIR.
local t = require('runner')
local api = vim.api

local project = assert(os.getenv('CODER_LSP_TEST_DIR'), 'CODER_LSP_TEST_DIR is not set')
local file = project .. '/fib.py'
local FIXTURE = vim.fn.readfile(file)

local function lines()
  return api.nvim_buf_get_lines(0, 0, -1, true)
end

local function extmarks()
  return api.nvim_buf_get_extmarks(0, require('coder_lsp.inline').namespace, 0, -1, { details = true })
end

local function feedback()
  local client = require('coder_lsp.lsp').client_for(0)
  local status = client and require('coder_lsp.lsp').status(client)
  local row = status and status.feedback and status.feedback.language and status.feedback.language.python
  return row or { shown = 0, accepted = 0, partial = 0 }
end

-- Back to the fixture's text, normal mode, cursor on its last line.
local function reset_buffer()
  t.type('<Esc>')
  api.nvim_buf_set_lines(0, 0, -1, true, FIXTURE)
  api.nvim_win_set_cursor(0, { #FIXTURE, 0 })
end

-- Type a new last line and wait for the ghost text; returns the suggestion.
local function type_and_wait(text)
  reset_buffer()
  t.type('o' .. text)
  return t.wait_until(function()
    return #extmarks() > 0 and require('coder_lsp.inline').get()
  end, 60000, 'ghost text after typing ' .. vim.inspect(text))
end

t.run({
  { 'the server starts for a python buffer without setup() and loads the model', function()
    vim.cmd('edit ' .. vim.fn.fnameescape(file))
    t.eq('python', vim.bo.filetype, 'filetype')
    -- Typed text goes in as typed: no automatic indentation.
    vim.bo.autoindent = false
    vim.bo.indentexpr = ''
    local lsp = require('coder_lsp.lsp')
    t.wait_until(function()
      return lsp.client_for(0)
    end, 20000, 'the client to attach')
    t.wait_until(function()
      return lsp.state.value == 'ready'
    end, 180000, 'the model to load ($/progress end)')
    local status = t.ok(lsp.status(lsp.client_for(0)), 'coderLsp.status answered')
    t.eq('ready', status.state, 'server state')
    t.eq('qwen2.5-coder-0.5b', status.model, 'model from vim.g.coder_lsp.settings')
  end },

  { 'typing shows ghost text as extmarks, and <Tab> accepts it into the buffer', function()
    local ghost = type_and_wait('    return ')
    local marks = extmarks()
    t.eq(1, #marks, 'one extmark')
    local details = marks[1][4]
    local ghost_lines = vim.split(ghost, '\n', { plain = true })
    t.eq(ghost_lines[1], details.virt_text[1][1], 'first ghost line as virt_text')
    t.eq(#ghost_lines - 1, details.virt_lines and #details.virt_lines or 0, 'other ghost lines as virt_lines')
    t.eq({ #FIXTURE, 11 }, { marks[1][2], marks[1][3] }, 'extmark at the cursor')
    t.eq(FIXTURE, vim.list_slice(lines(), 1, #FIXTURE), 'buffer untouched while the ghost is shown')
    -- <Tab> is the default accept key (an expr mapping onto <Plug>(coder-lsp-accept)).
    t.type('<Tab>', true)
    local expected = vim.list_extend(vim.deepcopy(FIXTURE), vim.split('    return ' .. ghost, '\n', { plain = true }))
    t.wait_until(function()
      return vim.deep_equal(lines(), expected)
    end, 5000, 'the buffer to hold the suggestion: ' .. vim.inspect(expected))
    t.eq(0, #extmarks(), 'ghost cleared after accept')
    local last = expected[#expected]
    t.eq({ #expected, #last }, api.nvim_win_get_cursor(0), 'cursor after the inserted text')
    t.wait_until(function()
      local counts = feedback()
      return counts.shown >= 1 and counts.accepted >= 1
    end, 5000, 'the server to count the suggestion shown and accepted')
    io.stdout:write(('\nghost accepted: %q\n'):format(ghost))
  end },

  { 'accept word inserts the next word and keeps the rest as ghost text', function()
    local before = feedback().partial
    local ghost = type_and_wait('    return ')
    local word = require('coder_lsp.inline').next_word(ghost)
    t.ok(#word < #ghost, 'a suggestion of more than one word: ' .. vim.inspect(ghost))
    t.type('<Plug>(coder-lsp-accept-word)', true)
    t.wait_until(function()
      return lines()[#FIXTURE + 1] == '    return ' .. word
    end, 5000, 'the first word in the buffer')
    t.eq(ghost:sub(#word + 1), require('coder_lsp.inline').get(), 'the rest still shown')
    t.wait_until(function()
      return feedback().partial > before
    end, 5000, 'the server to count a partial acceptance')
    t.type('<Plug>(coder-lsp-accept)', true)
    local expected = vim.list_extend(vim.deepcopy(FIXTURE), vim.split('    return ' .. ghost, '\n', { plain = true }))
    t.wait_until(function()
      return vim.deep_equal(lines(), expected)
    end, 5000, 'the whole suggestion after accepting the rest')
  end },

  { 'a first line shown before its block is written grows to the block when the server has it', function()
    local client = require('coder_lsp.lsp').client_for(0)
    local function configure(settings)
      require('coder_lsp.lsp').call(client, 'notify', 'workspace/didChangeConfiguration', { settings = settings })
    end
    -- A budget the first line fits in, and room for more lines than one.
    configure({ maxLatencyMs = 60000, maxTokens = 64 })
    local ok, err = pcall(function()
      local first = type_and_wait('<CR>def summary(values):<CR>    # Print the count, sum, mean, min and max of values, one line each.<CR>    ')
      t.ok(not vim.trim(first):find('\n'), 'the first line alone: ' .. vim.inspect(first))
      local grown = t.wait_until(function()
        local ghost = require('coder_lsp.inline').get()
        return ghost and #ghost > #first and ghost
      end, 60000, 'the ghost text to grow past ' .. vim.inspect(first))
      t.eq(first, grown:sub(1, #first), 'the block goes on from the line shown')
      t.ok(vim.trim(grown):find('\n'), 'more lines than one: ' .. vim.inspect(grown))
      io.stdout:write(('\nfirst line %q grew to %q\n'):format(first, grown))
    end)
    configure({ maxLatencyMs = 900, maxTokens = 24 })
    t.ok(ok, tostring(err))
  end },

  { 'dismiss hides the ghost text; then <Tab> is an ordinary Tab', function()
    type_and_wait('    return ')
    t.type('<Plug>(coder-lsp-dismiss)', true)
    t.eq(0, #extmarks(), 'no extmark after dismiss')
    t.eq(nil, require('coder_lsp.inline').get(), 'no suggestion after dismiss')
    t.eq('    return ', lines()[#FIXTURE + 1], 'typed text kept')
    -- With nothing shown, <Tab> is an ordinary Tab (spaces to the next stop in Python files).
    t.type('<Tab>', true)
    local line = lines()[#FIXTURE + 1]
    t.ok(line:match('^    return [ \t]+$') and #line > #'    return ', 'a Tab inserted: ' .. vim.inspect(line))
  end },

  { ':CoderLsp toggle turns suggestions off and on; :CoderLsp status reports the model', function()
    reset_buffer()
    local inline = require('coder_lsp.inline')
    vim.cmd('CoderLsp toggle')
    t.eq(false, inline.is_enabled(), 'off after toggle')
    vim.cmd('CoderLsp toggle')
    t.eq(true, inline.is_enabled(), 'on after a second toggle')
    local status = table.concat(require('coder_lsp').status_lines(), '\n')
    t.ok(status:find('model ready', 1, true), status)
    t.ok(status:find('qwen2.5-coder-0.5b', 1, true), status)
    vim.cmd('CoderLsp status')
  end },

  { ':checkhealth coder_lsp reports OK and no error', function()
    vim.cmd('checkhealth coder_lsp')
    local report = table.concat(api.nvim_buf_get_lines(0, 0, -1, true), '\n')
    vim.cmd('tabclose')
    t.ok(not report:find('ERROR'), 'no ERROR in:\n' .. report)
    t.ok(report:find('OK:? configuration is valid'), report)
    t.ok(report:find('OK:? server: '), report)
    t.ok(report:find('OK:? model qwen2.5%-coder%-0.5b is prepared'), report)
    t.ok(report:find('OK:? client %d+: model qwen2.5%-coder%-0.5b ready'), report)
    io.stdout:write(report .. '\n')
  end },

  { 'a code action applies a verified repair (codeAction/resolve through vim.lsp.buf.code_action)', function()
    t.type('<Esc>')
    vim.cmd('edit ' .. vim.fn.fnameescape(project .. '/calc.py'))
    local broken = lines()
    t.eq('    print(add(1, 2)', broken[6], 'fixture: an unclosed parenthesis')
    local lsp = require('coder_lsp.lsp')
    t.wait_until(function()
      return lsp.client_for(0)
    end, 20000, 'the client to attach to calc.py')
    api.nvim_win_set_cursor(0, { 6, 4 })
    -- Neovim's own code action menu, answered as a user would: pick the repair.
    local offered
    local select = vim.ui.select
    vim.ui.select = function(items, opts, on_choice)
      offered = vim.tbl_map(opts.format_item, items)
      for i, title in ipairs(offered) do
        if title:find('^Fix with coder%-lsp') then
          return on_choice(items[i], i)
        end
      end
      on_choice(nil, nil)
    end
    vim.lsp.buf.code_action()
    local ok, err = pcall(t.wait_until, function()
      return not vim.deep_equal(lines(), broken)
    end, 120000, 'the repair to be applied')
    vim.ui.select = select
    t.ok(ok, tostring(err) .. '; offered: ' .. vim.inspect(offered))
    t.ok(vim.tbl_contains(offered, 'Explain with coder-lsp'), 'explain offered too: ' .. vim.inspect(offered))
    local text = table.concat(lines(), '\n') .. '\n'
    vim.fn.system({ 'python3', '-c', 'import sys; compile(sys.stdin.read(), "calc.py", "exec")' }, text)
    t.eq(0, vim.v.shell_error, 'the repaired buffer compiles:\n' .. text)
    t.ok(lines()[6]:find('print(add(1, 2)', 1, true), 'the call is kept: ' .. lines()[6])
    io.stdout:write('\nrepaired: ' .. lines()[6] .. '\n')
  end },
})
