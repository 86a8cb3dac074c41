// What this API offers, read from its own description (/openapi.json) rather than repeated
// here: the filters of the event list (a tenant filter appears when the API has one), the
// filters a follow stream applies itself, the chart's groupings, the export formats.

import { getJson } from './api.js';

// Parameters of GET /v1/events that are not filters.
const PAGING = new Set(['since', 'until', 'limit', 'order', 'cursor']);
const STREAM = new Set(['limit', 'follow', 'Last-Event-ID']);

function parameters(document, path) {
  const operation = document.paths?.[path]?.get;
  if (!operation) throw new Error(`the API does not describe GET ${path}`);
  return operation.parameters ?? [];
}

/** One filter of the event list: its parameter name and, for an enum, the values. */
function filterOf(parameter) {
  return { name: parameter.name, values: parameter.schema?.enum ?? null };
}

export async function capabilities() {
  const document = await getJson('/openapi.json', {}, { auth: false });
  const list = parameters(document, '/v1/events');
  const buckets = parameters(document, '/v1/stats/buckets');
  const tail = parameters(document, '/v1/events/tail');
  const exports = parameters(document, '/v1/events/export');
  const enumOf = (params, name) => params.find((p) => p.name === name)?.schema?.enum ?? [];
  const pageSize = list.find((p) => p.name === 'limit')?.schema ?? {};
  return {
    filters: list.filter((p) => p.in === 'query' && !PAGING.has(p.name)).map(filterOf),
    followFilters: new Set(tail.filter((p) => p.in === 'query' && !STREAM.has(p.name)).map((p) => p.name)),
    groupBy: enumOf(buckets, 'group_by'),
    exportFormats: enumOf(exports, 'format'),
    maxPage: pageSize.maximum ?? 100,
  };
}
