/**
 * Settings: the `coderLsp.*` keys of package.json mapped to the server's initializationOptions
 * (camelCase, see lsp_server/protocol/options.py). Pure: no `vscode` import, so unit tests run in Node.
 */

/** Keys the extension uses itself; they never reach the server. */
export const CLIENT_KEYS = ['enable', 'serverPath', 'serverArgs', 'trace.server'] as const;

/** Setting key (under `coderLsp.`) -> initializationOptions field. */
export const SERVER_KEYS: Readonly<Record<string, string>> = {
  model: 'model',
  draftModel: 'draftModel',
  precision: 'precision',
  provider: 'provider',
  engineUrl: 'engineUrl',
  maxTokens: 'maxTokens',
  debounceMs: 'debounceMs',
  maxLatencyMs: 'maxLatencyMs',
  contextBudget: 'contextBudget',
  prefixBudget: 'prefixBudget',
  suffixBudget: 'suffixBudget',
  useContext: 'useContext',
  typedLineLeads: 'typedLineLeads',
  suffixFromNextLine: 'suffixFromNextLine',
  languages: 'languages',
  secretGlobs: 'secretGlobs',
  logLevel: 'logLevel',
};

/** Changing one of these needs a new server process (the model is loaded once). */
export const RESTART_KEYS = ['serverPath', 'serverArgs', 'model', 'precision', 'provider', 'engineUrl'];

/** Optional text settings where an empty string means "none" (null on the wire). */
const NULLABLE_TEXT = new Set(['draftModel', 'engineUrl']);

/**
 * Reads one setting the user set explicitly (user, workspace or folder), or undefined when it is
 * left at its default. Sending only explicit values keeps the server the one owner of defaults.
 */
export type ExplicitGetter = (key: string) => unknown;

/** The initializationOptions object for the settings the user set. */
export function toInitializationOptions(get: ExplicitGetter): Record<string, unknown> {
  const options: Record<string, unknown> = {};
  for (const [key, wire] of Object.entries(SERVER_KEYS)) {
    let value = get(key);
    if (value === undefined) {
      continue;
    }
    if (NULLABLE_TEXT.has(key) && typeof value === 'string' && value.trim() === '') {
      value = null;
    }
    options[wire] = value;
  }
  return options;
}

/** Whether a configuration change under `coderLsp` needs the server restarted. */
export function needsRestart(affects: (key: string) => boolean): boolean {
  return RESTART_KEYS.some((key) => affects(key));
}

/** The server command: the configured path (or `coder-lsp` on the PATH) and its arguments. */
export function serverCommand(get: (key: string) => unknown): { command: string; args: string[] } {
  const path = get('serverPath');
  const args = get('serverArgs');
  return {
    command: typeof path === 'string' && path.trim() !== '' ? path.trim() : 'coder-lsp',
    args: Array.isArray(args) ? args.filter((arg): arg is string => typeof arg === 'string') : [],
  };
}
