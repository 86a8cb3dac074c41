// The auditors' viewer: sign in, search, chart, detail with Verify, live, export.

import 'uplot/dist/uPlot.min.css';
import './style.css';
import { ApiError, getJson } from './api.js';
import { capabilities } from './capabilities.js';
import { clearChart, drawChart } from './chart.js';
import { closeDetail, configureDetail, showDetail } from './detail.js';
import { $, busy, fill, h, say } from './dom.js';
import { exportEvents } from './exporter.js';
import { follow } from './follow.js';
import { matcher } from './match.js';
import * as search from './search.js';
import * as session from './session.js';
import { CUSTOM, DEFAULT_RANGE, PRESETS, bucketWidth, iso, isTimestamp, readState, resolveWindow, writeState } from './state.js';

// How the form names the API's filters; a filter the API offers that is not named here
// shows under "More filters" with its parameter name.
const LABELS = {
  tenant: 'Tenant',
  service: 'Service',
  type: 'Type (exact, or a prefix: customer.*)',
  actor_id: 'Actor',
  subject_id: 'Subject',
  action: 'Action',
  outcome: 'Outcome',
  actor_type: 'Actor type',
  subject_type: 'Subject type',
  trace_id: 'Trace id',
  publisher: 'Publisher',
};
const MAIN = ['tenant', 'service', 'type', 'actor_id', 'subject_id', 'action', 'outcome'];

let api = null; // what the API offers (capabilities.js)
let state = null; // the search as the URL has it (state.js)
let query = null; // the search on screen: filters and its absolute window
let live = null; // the follow stream's AbortController while Live is on

const filterNames = () => api.filters.map((f) => f.name);

async function viewerConfig() {
  const answer = await fetch('/viewer/config.json', { cache: 'no-store', credentials: 'omit' });
  if (!answer.ok) throw new Error(`/viewer/config.json answered ${answer.status}`);
  return answer.json();
}

function buildForm() {
  fill($('#range'), [
    ...PRESETS.map(([key, label]) => h('option', { value: key }, label)),
    h('option', { value: CUSTOM }, 'custom range (UTC)'),
  ]);
  const main = $('#filters');
  const more = $('#more-filters fieldset');
  for (const filter of api.filters) {
    const id = `f-${filter.name}`;
    const input = filter.values
      ? h('select', { id, name: filter.name }, h('option', { value: '' }, 'any'), filter.values.map((v) => h('option', { value: v }, v)))
      : h('input', { id, name: filter.name, spellcheck: 'false' });
    (MAIN.includes(filter.name) ? main : more).append(
      h('div', { class: 'field' }, h('label', { for: id }, LABELS[filter.name] ?? filter.name), input));
  }
  $('#more-filters').hidden = !more.children.length;
  fill($('#group-by'), h('option', { value: '' }, 'total'), api.groupBy.map((g) => h('option', { value: g }, `by ${g}`)));
  for (const format of ['csv', 'ndjson']) $(`#export-${format}`).hidden = !api.exportFormats.includes(format);
}

function setForm() {
  $('#range').value = state.range;
  $('#since').value = state.since;
  $('#until').value = state.until;
  $('#since').hidden = $('#until').hidden = state.range !== CUSTOM;
  for (const name of filterNames()) $(`#f-${name}`).value = state.filters[name] ?? '';
  $('#group-by').value = state.groupBy;
  $('#more-filters').open ||= Object.keys(state.filters).some((n) => !MAIN.includes(n));
}

/** The search the form describes, or null (and a message) if it is not one. */
function readForm() {
  const range = $('#range').value;
  const since = $('#since').value.trim();
  const until = $('#until').value.trim();
  if (range === CUSTOM) {
    for (const [name, value] of [['since', since], ['until', until]]) {
      if (value && !isTimestamp(value)) {
        say(`${name}: write a UTC time such as 2026-11-28T09:30:00Z (or with an offset)`, { error: true });
        return null;
      }
    }
    if (since && until && Date.parse(since) >= Date.parse(until)) {
      say('since must be before until', { error: true });
      return null;
    }
  }
  const filters = {};
  for (const name of filterNames()) {
    const value = $(`#f-${name}`).value.trim();
    if (value) filters[name] = value;
  }
  return { range, since: range === CUSTOM ? since : '', until: range === CUSTOM ? until : '', filters, groupBy: $('#group-by').value };
}

/** Show what went wrong; a token the API no longer accepts (401) ends the session. A 403
 * (a key that may not read, a filter outside a token's binding) is said, not signed out. */
function handle(error) {
  if (error instanceof ApiError && error.status === 401) {
    session.signOut();
    showSignIn('The API refused this token (unknown, revoked or expired): sign in again.');
  } else {
    say(error instanceof ApiError ? error.reported : error.message ?? String(error), { error: true });
  }
}

async function drawBuckets() {
  const { since, until } = query;
  if (!since || !until) {
    clearChart('Set both ends of the range to draw the chart.');
    return;
  }
  const [width, widthS] = bucketWidth(Date.parse(since), Date.parse(until));
  const filters = Object.fromEntries(Object.entries(query).filter(([name]) => filterNames().includes(name)));
  const answer = await getJson('/v1/stats/buckets', { ...filters, since, until, width, group_by: state.groupBy });
  drawChart(answer, { widthS, onZoom: zoom });
}

function run({ push = true } = {}) {
  return busy(() => searchNow({ push }));
}

async function searchNow({ push }) {
  if ($('#status').classList.contains('error')) say(null); // the last error was about another search
  writeState(state, { replace: !push });
  const span = resolveWindow(state);
  query = { ...state.filters, since: span.since, until: span.until };
  try {
    await Promise.all([search.list(query), drawBuckets()]);
  } catch (error) {
    handle(error);
    return;
  }
  if (live) startLive();
}

function zoom(sinceMs, untilMs) {
  state = { ...state, range: CUSTOM, since: iso(sinceMs), until: iso(untilMs) };
  setForm();
  run();
}

function liveState(text, stateName) {
  const node = $('#live-state');
  node.textContent = text;
  node.dataset.state = stateName;
}

function stopLive() {
  live?.abort();
  live = null;
  liveState('', 'off');
}

function startLive() {
  live?.abort();
  live = null;
  const streamed = {};
  const local = {};
  for (const [name, value] of Object.entries(state.filters)) {
    (api.followFilters.has(name) ? streamed : local)[name] = value;
  }
  // A preset window ends "now", so live events past its end still belong to it.
  const check = matcher(local, state.range === CUSTOM ? query : { since: query.since, until: '' });
  if (check.unsupported) {
    $('#live').checked = false;
    liveState(`live cannot apply the filter(s) ${check.unsupported.join(', ')}`, 'off');
    return;
  }
  const controller = new AbortController();
  live = controller;
  let unseen = 0;
  follow(streamed, {
    signal: controller.signal,
    onEvent(event) {
      if (!check.matches(event)) return;
      if (search.onNewestPage()) search.prepend(event);
      else liveState(`live: ${++unseen} new on the newest page`, 'live');
    },
    onState(name, detail) {
      if (controller.signal.aborted) return;
      if (name === 'connecting') liveState('connecting…', name);
      else if (name === 'live') liveState('live: new events appear at the top', name);
      else if (name === 'waiting') liveState(`reconnecting in ${Math.round(detail.ms / 1000)} s (${detail.error.message})`, name);
      else if (name === 'refused') {
        $('#live').checked = false;
        live = null;
        liveState(`live refused: ${detail.error.message}`, 'off');
        if ([401, 403].includes(detail.error.status)) handle(detail.error);
      }
    },
  });
}

async function toggleLive() {
  if (!$('#live').checked) {
    stopLive();
    return;
  }
  if (!search.onNewestPage()) {
    try {
      await busy(() => search.list(query));
    } catch (error) {
      handle(error);
      return;
    }
  }
  startLive();
}

async function download(format) {
  const buttons = [$('#export-csv'), $('#export-ndjson')];
  buttons.forEach((b) => { b.disabled = true; });
  say(`Exporting ${format.toUpperCase()}…`, { sticky: true });
  try {
    const { name, bytes } = await exportEvents(format, query);
    say(`Saved ${name} (${bytes.toLocaleString('en')} bytes).`);
  } catch (error) {
    if (error instanceof ApiError && error.status === 503) {
      say(`The server is busy with other exports: try again in ${error.retryAfter ?? 1} s.`, { error: true });
    } else handle(error);
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
}

function showSignIn(message) {
  stopLive();
  $('#live').checked = false;
  closeDetail();
  fill($('#events tbody'));
  clearChart('');
  $('#viewer').hidden = true;
  $('#sign-out').hidden = true;
  $('#sign-in').hidden = false;
  $('#token').value = '';
  if (message) say(message, { error: true });
  else say(null);
  $('#token').focus();
}

async function openViewer() {
  $('#sign-in').hidden = true;
  $('#viewer').hidden = false;
  $('#sign-out').hidden = false;
  state = readState(filterNames(), api.groupBy);
  setForm();
  await run({ push: false });
}

function wire() {
  $('#sign-in-form').addEventListener('submit', (e) => {
    e.preventDefault();
    session.signIn($('#token').value);
    say(null);
    openViewer();
  });
  $('#sign-out').addEventListener('click', () => {
    session.signOut();
    showSignIn();
  });
  $('#search').addEventListener('submit', (e) => {
    e.preventDefault();
    const next = readForm();
    if (!next) return;
    state = next;
    say(null);
    run();
  });
  $('#range').addEventListener('change', () => {
    const custom = $('#range').value === CUSTOM;
    $('#since').hidden = $('#until').hidden = !custom;
    if (custom && !$('#since').value && query?.since) {
      $('#since').value = query.since;
      $('#until').value = query.until;
    }
  });
  $('#reset').addEventListener('click', () => {
    state = { range: DEFAULT_RANGE, since: '', until: '', filters: {}, groupBy: '' };
    setForm();
    run();
  });
  $('#group-by').addEventListener('change', () => {
    state = { ...state, groupBy: $('#group-by').value };
    writeState(state);
    busy(drawBuckets).catch(handle);
  });
  $('#older').addEventListener('click', () => busy(search.older).catch(handle));
  $('#newer').addEventListener('click', () => busy(search.newer).catch(handle));
  $('#live').addEventListener('change', toggleLive);
  $('#export-csv').addEventListener('click', () => busy(() => download('csv')));
  $('#export-ndjson').addEventListener('click', () => busy(() => download('ndjson')));
  search.onOpenEvent(showDetail);
  window.addEventListener('popstate', () => {
    session.takeTokenFromFragment();
    if (!session.token()) return;
    if ($('#viewer').hidden) {
      openViewer();
      return;
    }
    state = readState(filterNames(), api.groupBy);
    setForm();
    run({ push: false });
  });
}

function showPin(config) {
  $('#key-pin').textContent = config.public_key
    ? `log key pinned: ${config.public_key.slice(0, 12)}…`
    : 'log key not pinned: Verify trusts the key the server gives';
}

async function boot() {
  session.takeTokenFromFragment();
  try {
    const [config, offered] = await Promise.all([viewerConfig(), capabilities()]);
    api = offered;
    configureDetail(config);
    showPin(config);
  } catch (error) {
    say(`The viewer cannot start: ${error.message}`, { error: true });
    return;
  }
  buildForm();
  wire();
  if (session.token()) await openViewer();
  else showSignIn();
}

boot();
