// Export the current search (GET /v1/events/export) as a file download.
//
// TODO(scale): the answer is collected in memory as a Blob before it is saved; an export of
// millions of events should stream to disk instead (showSaveFilePicker + pipeTo where the
// browser has it, or a short-lived download URL that needs no Authorization header).

import { request } from './api.js';
import { h } from './dom.js';

function filenameOf(answer, format) {
  const disposition = answer.headers.get('Content-Disposition') ?? '';
  const match = /filename="?([^";]+)"?/i.exec(disposition);
  return match ? match[1] : `auditlog-events.${format}`;
}

/** Download every event matching `query` in `format`; resolves to the file's name and size. */
export async function exportEvents(format, query) {
  const answer = await request('/v1/events/export', { ...query, format });
  const blob = await answer.blob();
  const name = filenameOf(answer, format);
  const href = URL.createObjectURL(blob);
  const link = h('a', { href, download: name, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(href), 60_000);
  return { name, bytes: blob.size };
}
