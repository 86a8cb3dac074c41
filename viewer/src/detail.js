// One event, every field of it, as text: objects as a folded tree, long strings cut to a
// glimpse with a button that shows the rest. And Verify.

import { ApiError, getJson } from './api.js';
import { $, fill, h } from './dom.js';
import { VerifyFailure, verifyEvent } from './verify.js';

const SHOWN_CHARS = 600; // a longer string shows this much until asked for all of it
const OPEN_DEPTH = 1; // tree levels unfolded at first

// Fields in the order an auditor reads them; any other field the API adds follows.
const ORDER = ['id', 'seq', 'type', 'service', 'tenant', 'occurred_at', 'received_at', 'publisher',
  'actor', 'subject', 'action', 'outcome', 'context', 'data', 'leaf_hash'];

let current = null;
let config = { public_key: null };

export function configureDetail(viewerConfig) {
  config = viewerConfig;
}

function stringNode(value) {
  const quoted = JSON.stringify(value);
  if (quoted.length <= SHOWN_CHARS) return h('span', { class: 'json-string' }, quoted);
  const node = h('span', { class: 'json-string' }, `${quoted.slice(0, SHOWN_CHARS)}…`);
  const more = h('button', {
    type: 'button',
    class: 'link',
    onclick: () => {
      node.textContent = quoted;
      more.remove();
    },
  }, `show all ${value.length.toLocaleString('en')} characters`);
  return h('span', {}, node, ' ', more);
}

/** A JSON value as a tree of text: objects and arrays fold (<details>), leaves are text. */
export function tree(value, depth = 0) {
  if (value === null) return h('span', { class: 'json-null' }, 'null');
  if (typeof value === 'string') return stringNode(value);
  if (typeof value !== 'object') return h('span', { class: `json-${typeof value}` }, JSON.stringify(value));
  const entries = Array.isArray(value) ? value.map((v, i) => [String(i), v]) : Object.entries(value);
  const summary = Array.isArray(value)
    ? `[…] ${entries.length} item${entries.length === 1 ? '' : 's'}`
    : `{…} ${entries.length} key${entries.length === 1 ? '' : 's'}`;
  if (!entries.length) return h('span', { class: 'json-empty' }, Array.isArray(value) ? '[]' : '{}');
  return h('details', { class: 'json', open: depth < OPEN_DEPTH },
    h('summary', {}, summary),
    h('ul', {}, entries.map(([key, item]) =>
      h('li', {}, h('span', { class: 'json-key' }, Array.isArray(value) ? key : JSON.stringify(key)), ': ', tree(item, depth + 1)))));
}

export function showDetail(event) {
  current = event;
  $('#detail-title').textContent = `${event.type ?? 'event'}`;
  const keys = [...ORDER.filter((k) => k in event), ...Object.keys(event).filter((k) => !ORDER.includes(k))];
  fill($('#detail-fields'), keys.map((key) => [
    h('dt', {}, key),
    h('dd', { 'data-field': key }, tree(event[key])),
  ]));
  resetVerify();
  const panel = $('#detail');
  panel.hidden = false;
  panel.scrollTop = 0;
  $('#verify').focus();
}

export function closeDetail() {
  current = null;
  $('#detail').hidden = true;
}

function resetVerify() {
  const summary = $('#verify-summary');
  summary.hidden = true;
  summary.textContent = '';
  delete summary.dataset.outcome;
  fill($('#verify-steps'));
  $('#verify').disabled = false;
}

async function runVerify() {
  const event = current;
  if (!event) return;
  resetVerify();
  const button = $('#verify');
  const summary = $('#verify-summary');
  const steps = $('#verify-steps');
  button.disabled = true;
  summary.hidden = false;
  summary.textContent = 'Checking…';
  summary.dataset.outcome = 'running';
  const report = (text) => steps.append(h('li', { class: 'ok' }, text));
  let outcome;
  let message;
  try {
    const result = await verifyEvent(event, { get: getJson, pinnedKey: config.public_key, report });
    outcome = 'ok';
    message = `Verified: included in the log of ${result.treeSize.toLocaleString('en')} events signed at ${result.timestamp}` +
      (result.pinned ? ' (by the pinned key).' : ' (by the key the server gives; no key is pinned).');
  } catch (error) {
    outcome = 'failed';
    let reason;
    if (error instanceof VerifyFailure) reason = error.message;
    else if (error instanceof ApiError) reason = `the server answered ${error.status} (${error.reported})`;
    else reason = `the check could not run: ${error?.message ?? error}`;
    message = `Not verified: ${reason}`;
  }
  if (current !== event) return; // another event was opened meanwhile
  summary.textContent = message;
  summary.dataset.outcome = outcome;
  button.disabled = false;
}

$('#verify').addEventListener('click', runVerify);
$('#close-detail').addEventListener('click', closeDetail);
document.addEventListener('keydown', (e) => {
  if (e.key === 'Escape' && !$('#detail').hidden) closeDetail();
});
