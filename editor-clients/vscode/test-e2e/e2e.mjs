// End-to-end test of the coder-lsp extension in a real VS Code: code-server (from npm) with the
// packaged .vsix installed, driven in Debian's headless Chromium by playwright-core. Types in a
// Python file, waits for ghost text, takes a screenshot, accepts with Tab and checks the file and
// the server's feedback statistics. Exit 0 when every check passed.
//
// Usage: node e2e.mjs [path/to/extension.vsix]   (coder-lsp must be on the PATH)
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const extensionDir = path.dirname(here);
const vsix = process.argv[2] ?? fs.readdirSync(extensionDir).filter((f) => f.endsWith('.vsix')).map((f) => path.join(extensionDir, f))[0];
const codeServer = path.join(here, 'node_modules', '.bin', 'code-server');
const screenshots = path.join(extensionDir, 'screenshots');
const TYPED = '    return ';
// A function whose body the model writes as several lines, the first shown before the rest.
const SUMMARY = ['', 'def summary(values):', '    # Print the count, sum, mean, min and max of values, one line each.', '    '];
const results = [];

function which(name) {
  return execFileSync('sh', ['-c', `command -v ${name}`]).toString().trim();
}

function check(name, ok, detail = '') {
  results.push(ok);
  console.log(`${ok ? 'ok' : 'not ok'} - ${name}${detail ? `: ${detail}` : ''}`);
  if (!ok) {
    throw new Error(`${name} failed ${detail}`);
  }
}

async function waitFor(what, fn, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn().catch(() => undefined);
    if (value) {
      return value;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

async function main() {
  if (!vsix || !fs.existsSync(vsix)) {
    throw new Error('no .vsix: run `npx vsce package` in editor-clients/vscode first');
  }
  const serverPath = which('coder-lsp');
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'coder-lsp-vscode-'));
  const userData = path.join(work, 'user-data');
  const extensions = path.join(work, 'extensions');
  const project = path.join(work, 'project');
  const stats = path.join(work, 'stats.json');
  fs.mkdirSync(path.join(userData, 'User'), { recursive: true });
  fs.mkdirSync(project);
  for (const name of ['fib.py', 'calc.py']) {
    fs.copyFileSync(path.join(here, '..', '..', 'fixtures', 'project', name), path.join(project, name));
  }
  fs.writeFileSync(
    path.join(userData, 'User', 'settings.json'),
    JSON.stringify(
      {
        'coderLsp.serverPath': serverPath,
        'coderLsp.serverArgs': ['--log-file', path.join(work, 'server.log'), '--log-level', 'DEBUG'],
        'coderLsp.model': 'qwen2.5-coder-0.5b',
        'coderLsp.maxTokens': 24,
        // A budget every first line fits in: what is shown first does not depend on the load.
        'coderLsp.maxLatencyMs': 60000,
        'coderLsp.useContext': false,
        'editor.autoIndent': 'none',
        'editor.inlineSuggest.enabled': true,
        'editor.minimap.enabled': false,
        'security.workspace.trust.enabled': false,
        'telemetry.telemetryLevel': 'off',
        'workbench.startupEditor': 'none',
        'workbench.tips.enabled': false,
        'workbench.colorTheme': 'Default Dark Modern',
        'extensions.autoCheckUpdates': false,
        'extensions.autoUpdate': false,
        'extensions.ignoreRecommendations': true,
        'chat.commandCenter.enabled': false,
      },
      null,
      2,
    ),
  );
  // Its own config file, so nothing is written to the user's ~/.config/code-server.
  const configFile = path.join(work, 'config.yaml');
  fs.writeFileSync(configFile, 'auth: none\ncert: false\n');
  const common = ['--config', configFile, '--user-data-dir', userData, '--extensions-dir', extensions];
  execFileSync(codeServer, [...common, '--install-extension', vsix], { stdio: 'inherit' });
  const installed = fs.readdirSync(extensions).filter((name) => name.startsWith('coder-lsp.coder-lsp-'));
  check('the .vsix installs into code-server', installed.length === 1, installed.join(', '));

  const port = 20000 + Math.floor(Math.random() * 20000);
  const server = spawn(
    codeServer,
    [...common, '--bind-addr', `127.0.0.1:${port}`, '--auth', 'none', '--disable-telemetry', '--disable-update-check',
      '--disable-workspace-trust', '--disable-getting-started-override', project],
    { env: { ...process.env, CODER_LSP_STATS: stats }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const serverLog = fs.createWriteStream(path.join(work, 'code-server.log'));
  server.stdout.pipe(serverLog);
  server.stderr.pipe(serverLog);
  let browser;
  let page;
  try {
    await waitFor('code-server to listen', async () => (await fetch(`http://127.0.0.1:${port}/healthz`)).ok, 60000);
    browser = await chromium.launch({
      executablePath: '/usr/bin/chromium',
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    page = await browser.newPage({ viewport: { width: 1100, height: 520 } });
    await page.goto(`http://127.0.0.1:${port}/?folder=${encodeURIComponent(project)}`);
    await page.locator('.monaco-workbench').waitFor({ timeout: 60000 });

    // Open fib.py from the Explorer.
    await page.locator('.explorer-folders-view .monaco-list-row', { hasText: 'fib.py' }).first().dblclick({ timeout: 60000 });
    const editor = page.locator('.editor-instance .monaco-editor').first();
    await editor.waitFor({ timeout: 30000 });
    await waitFor('the file in the editor', async () => (await editor.locator('.view-lines').innerText()).includes('fibonacci'), 30000);

    const status = page.locator('.statusbar-item', { hasText: 'coder-lsp' }).first();
    await waitFor('the status bar to say the model is ready', async () => {
      const text = await status.innerText();
      return !/loading|starting|failed|stopped/.test(text);
    }, 180000);
    check('status bar shows the server ready', true, (await status.innerText()).trim());

    // Type a new last line.
    await editor.locator('.view-lines').click();
    await page.keyboard.press('Control+End');
    // The fixture ends with a line break: Ctrl+End is already on a new empty last line.
    await page.keyboard.type(TYPED, { delay: 30 });
    const ghost = editor.locator('.ghost-text-decoration, .ghost-text').first();
    await ghost.waitFor({ timeout: 60000 });
    // Monaco splits the ghost line into one span per token.
    const ghostText = (await editor.locator('.ghost-text-decoration').allInnerTexts()).join('').replace(/\u00a0/g, ' ');
    check('ghost text appears after typing', ghostText.trim().length > 0, JSON.stringify(ghostText));
    fs.mkdirSync(screenshots, { recursive: true });
    await page.screenshot({ path: path.join(screenshots, 'ghost-text.png') });
    check('screenshot saved', true, path.join(screenshots, 'ghost-text.png'));

    // Ctrl+Right: the extension's accept-next-word, reported as a partial acceptance.
    await page.keyboard.press('Control+ArrowRight');
    const firstWord = ghostText.match(/^\s*[\w]+/)?.[0] ?? '';
    await waitFor('the first word in the editor', async () => {
      const line = await editor.locator('.view-line', { hasText: 'return fib' }).first().innerText();
      return line.replace(/\u00a0/g, ' ').startsWith(`${TYPED}${firstWord}`);
    }, 15000);
    check('Ctrl+Right accepts the next word', firstWord.length > 0, JSON.stringify(firstWord));
    await editor.locator('.ghost-text-decoration').first().waitFor({ timeout: 30000 });
    await page.keyboard.press('Tab');
    await page.keyboard.press('Control+S');
    const expected = `${TYPED}${ghostText}`;
    const saved = await waitFor('the accepted text saved to disk', async () => {
      const text = fs.readFileSync(path.join(project, 'fib.py'), 'utf8');
      return text.includes(expected) ? text : undefined;
    }, 15000);
    check('Tab accepts the suggestion into the file', saved.includes(expected), JSON.stringify(saved.split('\n').slice(-3)));

    const counts = await waitFor('feedback statistics', async () => {
      const data = JSON.parse(fs.readFileSync(stats, 'utf8'));
      const python = data.language?.python;
      return python && python.shown >= 1 && python.accepted >= 1 && python.partial >= 1 ? python : undefined;
    }, 15000);
    check('the server counted the suggestion shown, partly accepted and accepted', true, JSON.stringify(counts));

    // A first line shown before its block is written grows to the block when the server has it
    // (coderLsp/completionReady, then the extension asks again), and Tab takes the block.
    await page.keyboard.press('Control+End');
    for (const line of SUMMARY) {
      await page.keyboard.press('Enter');
      await page.keyboard.type(line, { delay: 10 });
    }
    const shownGhost = async () =>
      (await editor.locator('.ghost-text-decoration, .ghost-text').allInnerTexts()).map((t) => t.replace(/\u00a0/g, ' '));
    const firstShown = await waitFor('ghost text for the summary body', async () => {
      const parts = await shownGhost();
      return parts.join('').trim() ? parts : undefined;
    }, 60000);
    const grown = await waitFor('the ghost text to grow to more lines', async () => {
      const parts = await shownGhost();
      return parts.join('\n').trim().split('\n').length > firstShown.join('\n').trim().split('\n').length ? parts : undefined;
    }, 60000);
    check('a first line shown first grows to its block', true, JSON.stringify({ first: firstShown, grown }));
    await page.keyboard.press('Tab');
    await page.keyboard.press('Control+S');
    const block = await waitFor('the block saved to disk', async () => {
      const text = fs.readFileSync(path.join(project, 'fib.py'), 'utf8');
      const body = text.slice(text.indexOf(SUMMARY[2]) + SUMMARY[2].length).trim().split('\n');
      return body.length > 1 ? body : undefined;
    }, 15000);
    check('Tab accepts the grown block', true, JSON.stringify(block));

    // Repair through VS Code's own code action menu (Ctrl+.), resolved with codeAction/resolve.
    await page.locator('.explorer-folders-view .monaco-list-row', { hasText: 'calc.py' }).first().dblclick();
    await waitFor('calc.py in the editor', async () => (await editor.locator('.view-lines').innerText()).includes('print(add'), 30000);
    await editor.locator('.view-line', { hasText: 'print(add' }).first().click();
    await page.keyboard.press('End');
    await page.keyboard.press('Control+.');
    const fix = page.locator('.action-widget .monaco-list-row', { hasText: 'Fix with coder-lsp' }).first();
    await fix.waitFor({ timeout: 30000 });
    const menu = (await page.locator('.action-widget .monaco-list-row').allInnerTexts()).map((t) => t.trim());
    check('Ctrl+. offers the repair and the explanation', menu.some((t) => t.includes('Explain with coder-lsp')), JSON.stringify(menu));
    // Keyboard, as the menu's overlay takes pointer events: move to the repair, then Enter.
    for (let i = 0; i < menu.length; i += 1) {
      const focused = await page.locator('.action-widget .monaco-list-row.focused').first().innerText().catch(() => '');
      if (focused.includes('Fix with coder-lsp')) {
        break;
      }
      await page.keyboard.press('ArrowDown');
    }
    await page.keyboard.press('Enter');
    const repaired = await waitFor('the repair in the editor', async () => {
      await page.keyboard.press('Control+S');
      const text = fs.readFileSync(path.join(project, 'calc.py'), 'utf8');
      return text.includes('print(add(1, 2))') ? text : undefined;
    }, 120000);
    check('choosing it applies a verified repair', true, JSON.stringify(repaired.split('\n').slice(-2)));
  } catch (error) {
    // Keep what the browser showed and the server's log for the diagnosis.
    const failure = path.join(os.tmpdir(), 'coder-lsp-vscode-e2e-failure.png');
    await page?.screenshot({ path: failure }).catch(() => undefined);
    console.error(`screen at failure: ${failure}`);
    for (const log of ['code-server.log', 'server.log', 'stats.json']) {
      const text = fs.existsSync(path.join(work, log)) ? fs.readFileSync(path.join(work, log), 'utf8') : '(none)';
      console.error(`--- ${log}\n${text.split('\n').slice(-30).join('\n')}`);
    }
    throw error;
  } finally {
    await browser?.close();
    server.kill('SIGTERM');
    fs.rmSync(work, { recursive: true, force: true, maxRetries: 3 });
  }
}

main()
  .then(() => {
    console.log(`\nvscode-e2e: ${results.filter(Boolean).length} passed, 0 failed`);
  })
  .catch((error) => {
    console.error(error);
    console.log(`\nvscode-e2e: ${results.filter(Boolean).length} passed, 1 failed`);
    process.exit(1);
  });
