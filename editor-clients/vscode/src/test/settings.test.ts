import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CLIENT_KEYS, SERVER_KEYS, needsRestart, serverCommand, toInitializationOptions } from '../settings';

/** The `contributes.configuration.properties` of package.json, keyed without `coderLsp.`. */
function declaredSettings(): Record<string, { default?: unknown; enum?: unknown[]; description?: string; markdownDescription?: string; scope?: string }> {
  const manifest = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8'));
  const properties = manifest.contributes.configuration.properties;
  return Object.fromEntries(Object.entries(properties).map(([key, value]) => [key.replace(/^coderLsp\./, ''), value])) as never;
}

/** The option names lsp_server/protocol/options.py accepts: the fields of its ServerOptions
 * dataclass, camelCase on the wire (its WIRE_FIELDS are built from them). */
function serverWireFields(): string[] {
  const source = fs.readFileSync(path.join(__dirname, '..', '..', '..', '..', 'lsp_server', 'protocol', 'options.py'), 'utf8');
  const start = source.indexOf('class ServerOptions');
  const fields = source.slice(start, source.indexOf('\n    def ', start));
  return [...fields.matchAll(/^ {4}(\w+): /gm)].map((match) => match[1].replace(/_(\w)/g, (_, c: string) => c.toUpperCase()));
}

suite('settings mapping', () => {
  test('only settings the user set are sent, under their wire names', () => {
    const set: Record<string, unknown> = { model: 'qwen2.5-coder-0.5b', maxTokens: 32, useContext: false, serverPath: '/x/coder-lsp' };
    assert.deepEqual(toInitializationOptions((key) => set[key]), {
      model: 'qwen2.5-coder-0.5b',
      maxTokens: 32,
      useContext: false,
    });
  });

  test('nothing set gives an empty object: the server keeps its defaults', () => {
    assert.deepEqual(toInitializationOptions(() => undefined), {});
  });

  test('an empty draft model or engine URL means none (null)', () => {
    const set: Record<string, unknown> = { draftModel: '  ', engineUrl: '', model: '' };
    assert.deepEqual(toInitializationOptions((key) => set[key]), { draftModel: null, engineUrl: null, model: '' });
  });

  test('lists pass through unchanged', () => {
    const set: Record<string, unknown> = { languages: ['python', 'rust'], secretGlobs: ['*.secret'] };
    assert.deepEqual(toInitializationOptions((key) => set[key]), { languages: ['python', 'rust'], secretGlobs: ['*.secret'] });
  });

  test('every server setting is declared in package.json with a description and scope', () => {
    const declared = declaredSettings();
    for (const key of Object.keys(SERVER_KEYS)) {
      assert.ok(declared[key], `coderLsp.${key} is not declared`);
      assert.ok(declared[key].description || declared[key].markdownDescription, `coderLsp.${key} has no description`);
      assert.ok(declared[key].scope, `coderLsp.${key} has no scope`);
    }
    const known = new Set<string>([...Object.keys(SERVER_KEYS), ...CLIENT_KEYS]);
    for (const key of Object.keys(declared)) {
      assert.ok(known.has(key), `coderLsp.${key} is declared but neither sent nor used`);
    }
  });

  test('every wire name is an option the server accepts', () => {
    const accepted = new Set(serverWireFields());
    assert.ok(accepted.has('model') && accepted.has('maxTokens'), 'could not read lsp_server/protocol/options.py');
    for (const wire of Object.values(SERVER_KEYS)) {
      assert.ok(accepted.has(wire), `${wire} is not a server option`);
    }
  });

  test('enum settings list the values the server accepts', () => {
    const declared = declaredSettings();
    assert.deepEqual(declared.precision.enum, ['int4', 'int8', 'w8a8', 'fp32']);
    assert.deepEqual(declared.provider.enum, ['auto', 'tensorrt', 'cuda', 'cpu']);
    assert.deepEqual(declared.logLevel.enum, ['debug', 'info', 'warning', 'error']);
  });

  test('model, precision and server changes restart; tuning does not', () => {
    assert.equal(needsRestart((key) => key === 'model'), true);
    assert.equal(needsRestart((key) => key === 'serverPath'), true);
    assert.equal(needsRestart((key) => key === 'maxTokens' || key === 'debounceMs'), false);
  });

  test('server command: the configured path, else coder-lsp on the PATH', () => {
    assert.deepEqual(serverCommand(() => undefined), { command: 'coder-lsp', args: [] });
    const set: Record<string, unknown> = { serverPath: ' /opt/venv/bin/coder-lsp ', serverArgs: ['--log-level', 'debug', 3] };
    assert.deepEqual(serverCommand((key) => set[key]), {
      command: '/opt/venv/bin/coder-lsp',
      args: ['--log-level', 'debug'],
    });
  });
});
