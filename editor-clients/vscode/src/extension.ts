/**
 * The coder-lsp extension: starts the `coder-lsp` language server over stdio and wires what
 * VS Code needs. Inline completions and code actions (repair / explain) are the language
 * client's own features; this file adds the status bar, commands and suggestion feedback.
 */

import * as vscode from 'vscode';
import { LanguageClient, LanguageClientOptions, ServerOptions, State } from 'vscode-languageclient/node';
import { FeedbackTracker, WireItem } from './feedback';
import { needsRestart, serverCommand, toInitializationOptions } from './settings';
import { ServerState, StatusItem } from './status';

const SECTION = 'coderLsp';
const STATUS_COMMAND = 'coderLsp.status';
/** The server's word that a suggestion it could not wait for is ready (see the README). */
const COMPLETION_READY = 'coderLsp/completionReady';
const POLL_MS = 1000;

let client: LanguageClient | undefined;

/** The value the user set for `coderLsp.<key>` (folder, workspace or user), else undefined. */
function explicitSetting(key: string): unknown {
  const inspected = vscode.workspace.getConfiguration(SECTION).inspect(key);
  return inspected?.workspaceFolderValue ?? inspected?.workspaceValue ?? inspected?.globalValue;
}

/** `item` in the shape the server reads back from feedback notifications. */
function toWireItem(item: vscode.InlineCompletionItem): WireItem {
  const text = typeof item.insertText === 'string' ? item.insertText : item.insertText.value;
  const command = item.command
    ? { title: item.command.title, command: item.command.command, arguments: item.command.arguments }
    : undefined;
  return { insertText: text, command };
}

interface CompletionReady {
  textDocument: { uri: string; version: number | null };
  position: { line: number; character: number };
}

/** Ask for inline suggestions again when the ready one is for the editor and cursor as they are. */
function onCompletionReady(params: CompletionReady): void {
  const editor = vscode.window.activeTextEditor;
  if (!editor || editor.document.uri.toString() !== params.textDocument.uri) {
    return;
  }
  const cursor = editor.selection.active;
  const same =
    editor.document.version === params.textDocument.version &&
    cursor.line === params.position.line &&
    cursor.character === params.position.character;
  if (same && editor.selection.isEmpty) {
    void vscode.commands.executeCommand('editor.action.inlineSuggest.trigger');
  }
}

/** Wire the client, status bar, commands and settings; everything is disposed on deactivate. */
export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const log = vscode.window.createOutputChannel('coder-lsp', { log: true });
  const status = new StatusItem();
  const tracker = new FeedbackTracker((method, params) => {
    void client?.sendNotification(method, params);
  });
  const enabled = (): boolean => vscode.workspace.getConfiguration(SECTION).get<boolean>('enable', true);
  status.setEnabled(enabled());
  context.subscriptions.push(log, status);

  const { command, args } = serverCommand((key) => vscode.workspace.getConfiguration(SECTION).get(key));
  const serverOptions: ServerOptions = { command, args };
  const clientOptions: LanguageClientOptions = {
    documentSelector: [{ scheme: 'file' }, { scheme: 'untitled' }],
    outputChannel: log,
    initializationOptions: () => toInitializationOptions(explicitSetting),
    middleware: {
      provideInlineCompletionItems: async (document, position, ctx, token, next) => {
        if (!enabled()) {
          return undefined;
        }
        const started = Date.now();
        const result = await next(document, position, ctx, token);
        const items = Array.isArray(result) ? result : result?.items;
        if (items && items.length > 0 && !token.isCancellationRequested) {
          status.setLatency(Date.now() - started);
          tracker.didShow(toWireItem(items[0]));
        }
        return result;
      },
    },
  };
  client = new LanguageClient('coderLsp', 'coder-lsp', serverOptions, clientOptions);
  const current = client;
  context.subscriptions.push(
    current.onNotification(COMPLETION_READY, onCompletionReady),
    current.onDidChangeState((event) => {
      if (event.newState === State.Stopped) {
        status.setState('stopped');
      } else if (event.newState === State.Running) {
        void pollModelState(current, status, log);
      }
    }),
  );

  const acceptPartially = (builtin: string) => async (): Promise<void> => {
    const editor = vscode.window.activeTextEditor;
    if (!editor) {
      await vscode.commands.executeCommand(builtin);
      return;
    }
    // What was accepted is the text between the cursor before and after the command: robust to
    // how the edit is split into change events and to when they arrive.
    const document = editor.document;
    const before = document.offsetAt(editor.selection.active);
    const version = document.version;
    await vscode.commands.executeCommand(builtin);
    const deadline = Date.now() + 2000;
    while (document.version === version && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const after = document.offsetAt(editor.selection.active);
    const inserted =
      after > before ? document.getText(new vscode.Range(document.positionAt(before), document.positionAt(after))) : '';
    tracker.didPartiallyAccept(inserted);
  };

  context.subscriptions.push(
    vscode.commands.registerCommand('coderLsp.toggle', async () => {
      await vscode.workspace
        .getConfiguration(SECTION)
        .update('enable', !enabled(), vscode.ConfigurationTarget.Global);
    }),
    vscode.commands.registerCommand('coderLsp.restart', async () => {
      status.setState('starting');
      await current.restart();
    }),
    vscode.commands.registerCommand('coderLsp.showLog', () => log.show()),
    vscode.commands.registerCommand('coderLsp.showStats', async () => {
      const stats = await current.sendRequest('workspace/executeCommand', { command: STATUS_COMMAND, arguments: [] });
      const document = await vscode.workspace.openTextDocument({
        language: 'json',
        content: JSON.stringify(stats, null, 2),
      });
      await vscode.window.showTextDocument(document, { preview: true });
    }),
    vscode.commands.registerCommand('coderLsp.acceptWord', acceptPartially('editor.action.inlineSuggest.acceptNextWord')),
    vscode.commands.registerCommand('coderLsp.acceptLine', acceptPartially('editor.action.inlineSuggest.acceptNextLine')),
    vscode.commands.registerCommand('coderLsp.dismiss', async () => {
      tracker.clear();
      await vscode.commands.executeCommand('editor.action.inlineSuggest.hide');
    }),
    vscode.workspace.onDidChangeConfiguration(async (event) => {
      if (!event.affectsConfiguration(SECTION)) {
        return;
      }
      status.setEnabled(enabled());
      if (needsRestart((key) => event.affectsConfiguration(`${SECTION}.${key}`))) {
        log.info('coder-lsp settings changed that need a new server: restarting');
        await current.restart();
      } else if (current.isRunning()) {
        await current.sendNotification('workspace/didChangeConfiguration', {
          settings: toInitializationOptions(explicitSetting),
        });
      }
    }),
  );

  log.info(`starting ${command} ${args.join(' ')}`);
  try {
    await current.start();
  } catch (error) {
    status.setState('failed', String(error));
    log.error(`coder-lsp could not start: ${String(error)}`);
    void vscode.window.showErrorMessage(
      `coder-lsp could not start (${command}). Set "coderLsp.serverPath" or see the log.`,
      'Show Log',
    ).then((choice) => choice && log.show());
  }
}

/** Ask the server for its model state until it is no longer loading. */
async function pollModelState(current: LanguageClient, status: StatusItem, log: vscode.LogOutputChannel): Promise<void> {
  status.setState('loading');
  while (current.isRunning()) {
    try {
      const answer = (await current.sendRequest('workspace/executeCommand', {
        command: STATUS_COMMAND,
        arguments: [],
      })) as { state?: string; detail?: string } | null;
      const state = (answer?.state ?? 'loading') as ServerState;
      status.setState(state, answer?.detail ?? '');
      if (state !== 'loading') {
        return;
      }
    } catch (error) {
      log.warn(`status request failed: ${String(error)}`);
      status.setState('failed', String(error));
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

/** Stop the server. */
export async function deactivate(): Promise<void> {
  await client?.stop();
  client = undefined;
}
