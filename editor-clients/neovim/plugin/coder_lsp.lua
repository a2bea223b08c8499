-- coder-lsp: local code completion (ghost text) from the coder-lsp language server.
-- Kept tiny: everything else loads on first use (a FileType match or :CoderLsp).
if vim.g.loaded_coder_lsp == 1 or vim.fn.has('nvim-0.7') == 0 then
  return
end
vim.g.loaded_coder_lsp = 1

vim.api.nvim_create_user_command('CoderLsp', function(args)
  require('coder_lsp').command(args.fargs[1] or 'status')
end, {
  nargs = '?',
  desc = 'coder-lsp: status | toggle | log | restart',
  complete = function()
    return { 'status', 'toggle', 'log', 'restart' }
  end,
})

local function plug(name, action)
  vim.keymap.set('i', '<Plug>(coder-lsp-' .. name .. ')', function()
    require('coder_lsp.inline')[action]()
  end, { desc = 'coder-lsp: ' .. name:gsub('-', ' ') })
end
plug('accept', 'accept')
plug('accept-word', 'accept_word')
plug('accept-line', 'accept_line')
plug('dismiss', 'dismiss')
plug('next', 'next')

vim.api.nvim_create_autocmd('FileType', {
  group = vim.api.nvim_create_augroup('coder_lsp', { clear = true }),
  desc = 'coder-lsp: start the server for configured filetypes',
  callback = function(args)
    require('coder_lsp').on_filetype(args.buf)
  end,
})
