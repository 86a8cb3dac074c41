// The event list: GET /v1/events for the search, newest first, a page at a time by the
// keyset cursor (Older follows next_cursor; Newer goes back to a cursor already seen).

import { getJson } from './api.js';
import { $, fill, glimpse, h } from './dom.js';

export const PAGE_SIZE = 100;
const MAX_LIVE_ROWS = 1000; // live rows beyond this drop off the bottom

const party = (p) => (p && typeof p === 'object' ? [p.type, p.id].filter((x) => x != null).join(':') : '');

const COLUMNS = [
  (e) => e.occurred_at,
  (e) => e.service,
  (e) => e.type,
  (e) => party(e.actor),
  (e) => party(e.subject),
  (e) => e.action,
  (e) => e.outcome,
];

const rows = new Map(); // event id -> the event its row shows
let paging = null; // {query, cursors, index, next}
let onOpen = () => {};

function row(event, { fresh = false } = {}) {
  rows.set(event.id, event);
  return h('tr', { 'data-id': event.id, tabindex: 0, class: fresh ? 'fresh' : null },
    COLUMNS.map((column, i) => h('td', { class: i === 6 ? `outcome-${glimpse(column(event), 16)}` : null }, glimpse(column(event) ?? ''))));
}

function render(events) {
  rows.clear();
  fill($('#events tbody'), events.map((event) => row(event)));
  if (!events.length) {
    $('#events tbody').append(h('tr', { class: 'empty' }, h('td', { colspan: COLUMNS.length }, 'No events match.')));
  }
}

function pager(count) {
  const first = paging.index * PAGE_SIZE;
  const info = $('#page-info');
  info.textContent = count ? `events ${(first + 1).toLocaleString('en')}–${(first + count).toLocaleString('en')}` : '';
  info.dataset.page = String(paging.index + 1);
  $('#newer').disabled = paging.index === 0;
  $('#older').disabled = !paging.next;
}

async function load() {
  const answer = await getJson('/v1/events', { ...paging.query, limit: PAGE_SIZE, cursor: paging.cursors[paging.index] });
  paging.next = answer.next_cursor;
  render(answer.events);
  pager(answer.events.length);
}

/** Start a new list for `query` (filters and the window), at the newest page. */
export function list(query) {
  paging = { query, cursors: [undefined], index: 0, next: null };
  return load();
}

export async function older() {
  if (!paging?.next) return;
  paging.cursors[paging.index + 1] = paging.next;
  paging.index += 1;
  await load();
}

export async function newer() {
  if (!paging || paging.index === 0) return;
  paging.index -= 1;
  await load();
}

export const onNewestPage = () => paging?.index === 0;

/** Put a live event at the top, once. */
export function prepend(event) {
  if (rows.has(event.id)) return;
  const body = $('#events tbody');
  body.querySelector('tr.empty')?.remove();
  body.prepend(row(event, { fresh: true }));
  while (body.rows.length > MAX_LIVE_ROWS) {
    rows.delete(body.lastElementChild.dataset.id);
    body.lastElementChild.remove();
  }
}

export function onOpenEvent(callback) {
  onOpen = callback;
}

const open = (target) => {
  const tr = target.closest('tr[data-id]');
  if (tr && rows.has(tr.dataset.id)) onOpen(rows.get(tr.dataset.id));
};
$('#events tbody').addEventListener('click', (e) => open(e.target));
$('#events tbody').addEventListener('keydown', (e) => {
  if (e.key === 'Enter') open(e.target);
});
