// Whether a live event matches the search, for the filters a follow stream does not apply
// itself (the stream applies those /openapi.json lists for it: service and type today).
// Each filter reads the event field GET /v1/events filters on (docs/API.md).
//
// TODO(scale): following a busy service for one rare subject streams all of that service's
// events to the browser, which drops most of them. Once the follow stream accepts every
// list filter, /openapi.json says so and this falls away by itself.

const FIELDS = {
  service: (e) => e.service,
  tenant: (e) => e.tenant,
  actor_type: (e) => e.actor?.type,
  actor_id: (e) => e.actor?.id,
  subject_type: (e) => e.subject?.type,
  subject_id: (e) => e.subject?.id,
  action: (e) => e.action,
  outcome: (e) => e.outcome,
  trace_id: (e) => e.context?.trace_id,
  publisher: (e) => e.publisher,
};

// `type` is exact, or a prefix when it ends in `*` (`customer.*`).
const typeMatches = (wanted, type) =>
  wanted.endsWith('*') ? String(type ?? '').startsWith(wanted.slice(0, -1)) : type === wanted;

/**
 * A predicate for `filters` (name -> value), or the names it cannot apply. `span` is
 * {since, until} (either may be empty) on occurred_at.
 */
export function matcher(filters, span) {
  const unsupported = Object.keys(filters).filter((name) => name !== 'type' && !(name in FIELDS));
  if (unsupported.length) return { unsupported };
  const since = span.since ? Date.parse(span.since) : -Infinity;
  const until = span.until ? Date.parse(span.until) : Infinity;
  return {
    matches(event) {
      const at = Date.parse(event.occurred_at);
      if (!(at >= since && at < until)) return false;
      return Object.entries(filters).every(([name, value]) =>
        name === 'type' ? typeMatches(value, event.type) : String(FIELDS[name](event) ?? '') === value);
    },
  };
}
