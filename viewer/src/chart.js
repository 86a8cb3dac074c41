// Events over time: GET /v1/stats/buckets for the search's filters and window, drawn with
// uPlot (bars for the total, a line per key with a grouping). Dragging across the chart
// selects a range; the search is zoomed to the whole buckets it covers.

import uPlot from 'uplot';
import { $, fill, h } from './dom.js';

const PALETTE = ['#2f6db5', '#d9822b', '#3d9970', '#c23b3b', '#7b5ea7', '#8c6d31', '#d46aa8', '#5f6b73', '#17a2b8'];
const MAX_KEYS = 8; // more keys than this are summed as "other"
const HEIGHT = 180;

let plot = null;

const pad = (n) => String(n).padStart(2, '0');

/** Tick labels in UTC, 24-hour: the time, with the date where it changes. */
function timeLabels(u, splits) {
  const span = (u.scales.x.max ?? 0) - (u.scales.x.min ?? 0);
  let lastDay = null;
  return splits.map((s) => {
    const d = new Date(s * 1000);
    const day = `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
    const time = `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`;
    const label = span > 3 * 86400 ? day : lastDay === day ? time : `${time}\n${day}`;
    lastDay = day;
    return label;
  });
}

/** Series (name, counts) aligned on the bucket starts, the biggest keys first. */
function seriesOf(buckets, grouped) {
  const starts = [...new Set(buckets.map((b) => Date.parse(b.start) / 1000))].sort((a, b) => a - b);
  const index = new Map(starts.map((x, i) => [x, i]));
  const byKey = new Map();
  for (const bucket of buckets) {
    const key = grouped ? String(bucket.key ?? '(none)') : 'events';
    if (!byKey.has(key)) byKey.set(key, new Array(starts.length).fill(0));
    byKey.get(key)[index.get(Date.parse(bucket.start) / 1000)] += bucket.count;
  }
  let series = [...byKey.entries()].sort(
    ([, a], [, b]) => b.reduce((s, n) => s + n, 0) - a.reduce((s, n) => s + n, 0),
  );
  if (series.length > MAX_KEYS) {
    const other = new Array(starts.length).fill(0);
    for (const [, counts] of series.slice(MAX_KEYS - 1)) counts.forEach((n, i) => { other[i] += n; });
    series = [...series.slice(0, MAX_KEYS - 1), [`other (${series.length - MAX_KEYS + 1} keys)`, other]];
  }
  return { starts, series };
}

/**
 * Draw `answer` (the buckets endpoint's JSON) in #chart. `widthS` is the bucket width in
 * seconds; `onZoom(sinceMs, untilMs)` is called with the whole buckets a drag selected.
 */
export function drawChart(answer, { widthS, onZoom }) {
  const box = $('#chart');
  const grouped = Boolean(answer.group_by);
  const { starts, series } = seriesOf(answer.buckets, grouped);
  const total = answer.buckets.reduce((sum, b) => sum + b.count, 0);
  const totalNode = $('#chart-total');
  totalNode.textContent = `${total.toLocaleString('en')} event${total === 1 ? '' : 's'} in the range`;
  totalNode.dataset.total = String(total);

  plot?.destroy();
  plot = null;
  if (!starts.length) {
    fill(box, h('p', { class: 'muted empty' }, 'No events in this range.'));
    return;
  }
  fill(box);
  const options = {
    width: Math.max(320, box.clientWidth),
    height: HEIGHT,
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), 'Etc/UTC'),
    cursor: { drag: { x: true, y: false, setScale: false } },
    legend: { show: grouped },
    scales: { x: { time: true, range: (u, min, max) => [min, max + widthS] }, y: { range: (u, min, max) => [0, Math.max(1, max)] } },
    axes: [{ values: timeLabels, space: 70 }, { size: 50 }],
    series: [
      {},
      ...series.map(([name], i) => ({
        label: name,
        stroke: PALETTE[i % PALETTE.length],
        fill: grouped ? undefined : `${PALETTE[0]}99`,
        width: grouped ? 2 : 0,
        paths: grouped ? uPlot.paths.stepped({ align: 1 }) : uPlot.paths.bars({ align: 1, size: [0.9, Infinity] }),
        points: { show: false },
      })),
    ],
    hooks: {
      setSelect: [
        (u) => {
          if (u.select.width < 3) return;
          const from = u.posToVal(u.select.left, 'x');
          const to = u.posToVal(u.select.left + u.select.width, 'x');
          const first = starts[0];
          const since = first + Math.floor((from - first) / widthS) * widthS;
          const until = first + Math.ceil((to - first) / widthS) * widthS;
          u.setSelect({ left: 0, width: 0, top: 0, height: 0 }, false);
          onZoom(since * 1000, until * 1000);
        },
      ],
    },
  };
  plot = new uPlot(options, [starts, ...series.map(([, counts]) => counts)], box);
}

export function clearChart(message) {
  plot?.destroy();
  plot = null;
  fill($('#chart'), h('p', { class: 'muted empty' }, message));
  const totalNode = $('#chart-total');
  totalNode.textContent = '';
  delete totalNode.dataset.total;
}

window.addEventListener('resize', () => plot?.setSize({ width: Math.max(320, $('#chart').clientWidth), height: HEIGHT }));
