// The search lives in the URL fragment (#range=24h&service=billing…), so a view can be
// shared or bookmarked, and nothing of it reaches a server log. The token is never put there
// by the viewer (see session.js).

export const PRESETS = [
  ['15m', 'last 15 minutes', 15 * 60],
  ['1h', 'last hour', 3600],
  ['6h', 'last 6 hours', 6 * 3600],
  ['24h', 'last 24 hours', 24 * 3600],
  ['7d', 'last 7 days', 7 * 86400],
  ['30d', 'last 30 days', 30 * 86400],
];
export const DEFAULT_RANGE = '24h';
export const CUSTOM = 'custom';

/** The search the fragment describes; unknown parameters and groupings are ignored. */
export function readState(filterNames, groupings) {
  const params = new URLSearchParams(location.hash.slice(1));
  const since = params.get('since') ?? '';
  const until = params.get('until') ?? '';
  let range = params.get('range') ?? (since || until ? CUSTOM : DEFAULT_RANGE);
  if (range !== CUSTOM && !PRESETS.some(([key]) => key === range)) range = DEFAULT_RANGE;
  const filters = {};
  for (const name of filterNames) {
    const value = params.get(name);
    if (value) filters[name] = value;
  }
  const groupBy = params.get('group_by') ?? '';
  return { range, since, until, filters, groupBy: groupings.includes(groupBy) ? groupBy : '' };
}

export function fragmentOf(state) {
  const params = new URLSearchParams();
  if (state.range === CUSTOM) {
    if (state.since) params.set('since', state.since);
    if (state.until) params.set('until', state.until);
  } else {
    params.set('range', state.range);
  }
  for (const [name, value] of Object.entries(state.filters)) if (value) params.set(name, value);
  if (state.groupBy) params.set('group_by', state.groupBy);
  return `#${params}`;
}

export function writeState(state, { replace = false } = {}) {
  const target = `${location.pathname}${location.search}${fragmentOf(state)}`;
  if (target === `${location.pathname}${location.search}${location.hash}`) return;
  if (replace) history.replaceState(null, '', target);
  else history.pushState(null, '', target);
}

/** A timestamp as the API writes it: UTC, `Z`. */
export const iso = (ms) => new Date(ms).toISOString();

/** Whether a string is an RFC 3339 time with an offset, as the API requires. */
export function isTimestamp(value) {
  return /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/i.test(value) &&
    !Number.isNaN(Date.parse(value));
}

/** The absolute [since, until) a search covers now: a preset ends at this moment. */
export function resolveWindow(state, now = Date.now()) {
  if (state.range === CUSTOM) return { since: state.since, until: state.until };
  const seconds = PRESETS.find(([key]) => key === state.range)[2];
  return { since: iso(now - seconds * 1000), until: iso(now) };
}

// Bucket widths the chart may use, smallest first; it picks the first that draws at most
// MAX_BARS bars over the window.
const WIDTHS = [
  ['1m', 60], ['5m', 300], ['15m', 900], ['30m', 1800], ['1h', 3600], ['3h', 10800],
  ['6h', 21600], ['12h', 43200], ['1d', 86400], ['7d', 604800],
];
const MAX_BARS = 150;

export function bucketWidth(sinceMs, untilMs) {
  const span = Math.max(1, (untilMs - sinceMs) / 1000);
  for (const [width, seconds] of WIDTHS) if (span / seconds <= MAX_BARS) return [width, seconds];
  const days = Math.ceil(span / 86400 / MAX_BARS);
  return [`${days}d`, days * 86400];
}
