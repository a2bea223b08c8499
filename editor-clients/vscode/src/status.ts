/** The status bar item: loading / ready / error / off, with the last suggestion latency. */

import * as vscode from 'vscode';

export type ServerState = 'starting' | 'loading' | 'ready' | 'failed' | 'stopped';

/** One status bar item; click shows the server's statistics. */
export class StatusItem implements vscode.Disposable {
  private readonly item = vscode.window.createStatusBarItem('coderLsp.status', vscode.StatusBarAlignment.Right, 100);
  private state: ServerState = 'starting';
  private detail = '';
  private latencyMs: number | undefined;
  private enabled = true;

  constructor() {
    this.item.name = 'coder-lsp';
    this.item.command = 'coderLsp.showStats';
    this.render();
    this.item.show();
  }

  /** The server's model state, with a detail for the tooltip (model name or error). */
  setState(state: ServerState, detail = ''): void {
    this.state = state;
    this.detail = detail;
    this.render();
  }

  /** The time from request to answer of the last suggestion shown. */
  setLatency(ms: number): void {
    this.latencyMs = ms;
    this.render();
  }

  /** Inline suggestions switched on or off by the user. */
  setEnabled(enabled: boolean): void {
    this.enabled = enabled;
    this.render();
  }

  private render(): void {
    const icons: Record<ServerState, string> = {
      starting: '$(loading~spin)',
      loading: '$(loading~spin)',
      ready: '$(sparkle)',
      failed: '$(error)',
      stopped: '$(debug-stop)',
    };
    let text = `${icons[this.state]} coder-lsp`;
    if (!this.enabled) {
      text = '$(circle-slash) coder-lsp: off';
    } else if (this.state === 'ready' && this.latencyMs !== undefined) {
      text += ` ${Math.round(this.latencyMs)} ms`;
    } else if (this.state !== 'ready') {
      text += `: ${this.state}`;
    }
    this.item.text = text;
    this.item.tooltip = `coder-lsp ${this.state}${this.detail ? ` (${this.detail})` : ''}; click for statistics`;
    this.item.backgroundColor =
      this.state === 'failed' ? new vscode.ThemeColor('statusBarItem.errorBackground') : undefined;
  }

  /** Remove the item. */
  dispose(): void {
    this.item.dispose();
  }
}
