/**
 * Feedback on suggestions: which were shown, and how much of one was accepted piecewise (word or
 * line at a time). Full acceptance needs no code here: every item carries the server's
 * `coderLsp.didAcceptCompletion` command, which the editor runs on accept. Pure: no `vscode`.
 */

export const DID_SHOW = 'textDocument/didShowCompletion';
export const DID_PARTIALLY_ACCEPT = 'textDocument/didPartiallyAcceptCompletion';
export const ACCEPT_COMMAND = 'coderLsp.didAcceptCompletion';

/** The parts of an LSP InlineCompletionItem the server reads back (Copilot's shapes). */
export interface WireItem {
  insertText: string;
  command?: { title: string; command: string; arguments?: unknown[] };
}

/** Sends one notification to the server. */
export type Notify = (method: string, params: object) => void;

/** The suggestion id the server put in the item's accept command, if any. */
export function suggestionId(item: WireItem): string | undefined {
  const command = item.command;
  if (!command || command.command !== ACCEPT_COMMAND || !Array.isArray(command.arguments)) {
    return undefined;
  }
  const id = command.arguments[0];
  return typeof id === 'string' ? id : undefined;
}

/** Remembers the visible suggestion and reports shown / partially accepted once per event. */
export class FeedbackTracker {
  private current: { item: WireItem; id: string; accepted: number } | undefined;
  private readonly shown: string[] = [];

  /** `limit`: how many shown ids to remember, so a re-shown item is not counted twice. */
  constructor(
    private readonly notify: Notify,
    private readonly limit = 64,
  ) {}

  /** The editor displays `item`: report it once (the same id shown again is not re-counted). */
  didShow(item: WireItem): void {
    const id = suggestionId(item);
    if (id === undefined || item.insertText === '') {
      return;
    }
    if (this.current?.id !== id) {
      this.current = { item, id, accepted: 0 };
    }
    if (this.shown.includes(id)) {
      return;
    }
    this.shown.push(id);
    if (this.shown.length > this.limit) {
      this.shown.shift();
    }
    this.notify(DID_SHOW, { item });
  }

  /**
   * The user accepted `inserted` (a word or a line) of the visible suggestion. Reports the total
   * length accepted so far; text that is not the suggestion's next part is ignored (typed by the
   * user, or another provider's suggestion). Returns the accepted length, or undefined.
   */
  didPartiallyAccept(inserted: string): number | undefined {
    const current = this.current;
    if (!current || inserted === '') {
      return undefined;
    }
    const rest = current.item.insertText.slice(current.accepted);
    if (!rest.startsWith(inserted)) {
      return undefined;
    }
    current.accepted += inserted.length;
    this.notify(DID_PARTIALLY_ACCEPT, { item: current.item, acceptedLength: current.accepted });
    if (current.accepted >= current.item.insertText.length) {
      this.current = undefined;
    }
    return current.accepted;
  }

  /** The suggestion went away (dismissed, accepted whole, or the cursor moved). */
  clear(): void {
    this.current = undefined;
  }
}
