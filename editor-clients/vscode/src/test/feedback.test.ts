import * as assert from 'node:assert/strict';
import { ACCEPT_COMMAND, DID_PARTIALLY_ACCEPT, DID_SHOW, FeedbackTracker, WireItem, suggestionId } from '../feedback';

function item(id: string, insertText: string): WireItem {
  return { insertText, command: { title: 'coder-lsp: accepted', command: ACCEPT_COMMAND, arguments: [id] } };
}

function recorder(): { sent: [string, object][]; tracker: FeedbackTracker } {
  const sent: [string, object][] = [];
  return { sent, tracker: new FeedbackTracker((method, params) => sent.push([method, params]), 3) };
}

suite('feedback', () => {
  test('the suggestion id comes from the accept command only', () => {
    assert.equal(suggestionId(item('abc', 'x')), 'abc');
    assert.equal(suggestionId({ insertText: 'x' }), undefined);
    assert.equal(suggestionId({ insertText: 'x', command: { title: '', command: 'other', arguments: ['abc'] } }), undefined);
    assert.equal(suggestionId({ insertText: 'x', command: { title: '', command: ACCEPT_COMMAND, arguments: [1] } }), undefined);
  });

  test('a shown item is reported once with the whole item', () => {
    const { sent, tracker } = recorder();
    const shown = item('a', 'return x');
    tracker.didShow(shown);
    tracker.didShow(shown);
    assert.deepEqual(sent, [[DID_SHOW, { item: shown }]]);
  });

  test('items without an id or text are not reported', () => {
    const { sent, tracker } = recorder();
    tracker.didShow({ insertText: 'x' });
    tracker.didShow(item('a', ''));
    assert.deepEqual(sent, []);
  });

  test('the remembered ids are bounded, so an old id counts again', () => {
    const { sent, tracker } = recorder();
    for (const id of ['a', 'b', 'c', 'd', 'a']) {
      tracker.didShow(item(id, 'x'));
    }
    assert.deepEqual(
      sent.map(([, params]) => suggestionId((params as { item: WireItem }).item)),
      ['a', 'b', 'c', 'd', 'a'],
    );
  });

  test('partial acceptance reports the total accepted length so far', () => {
    const { sent, tracker } = recorder();
    const shown = item('a', 'return total\n    done()');
    tracker.didShow(shown);
    assert.equal(tracker.didPartiallyAccept('return '), 7);
    assert.equal(tracker.didPartiallyAccept('total\n'), 13);
    assert.deepEqual(sent.slice(1), [
      [DID_PARTIALLY_ACCEPT, { item: shown, acceptedLength: 7 }],
      [DID_PARTIALLY_ACCEPT, { item: shown, acceptedLength: 13 }],
    ]);
  });

  test('text that is not the next part of the suggestion is not counted', () => {
    const { sent, tracker } = recorder();
    tracker.didShow(item('a', 'return total'));
    assert.equal(tracker.didPartiallyAccept('total'), undefined);
    assert.equal(tracker.didPartiallyAccept(''), undefined);
    assert.equal(sent.length, 1);
  });

  test('accepting the last part ends the suggestion; a new item starts from zero', () => {
    const { tracker } = recorder();
    tracker.didShow(item('a', 'ab'));
    assert.equal(tracker.didPartiallyAccept('ab'), 2);
    assert.equal(tracker.didPartiallyAccept('c'), undefined);
    tracker.didShow(item('b', 'cd'));
    assert.equal(tracker.didPartiallyAccept('c'), 1);
  });

  test('after dismissal nothing is counted', () => {
    const { tracker } = recorder();
    tracker.didShow(item('a', 'abc'));
    tracker.clear();
    assert.equal(tracker.didPartiallyAccept('a'), undefined);
  });
});
