// Live: GET /v1/events/tail?follow=true read with fetch (EventSource cannot send the
// Authorization header), parsed by eventsource-parser. A stream ends by itself after the
// server's time limit; it is reopened at once with Last-Event-ID, so nothing is missed or
// seen twice. A 503 (too many followers) is retried after its Retry-After.

import { createParser } from 'eventsource-parser';
import { errorOf, url } from './api.js';
import { token } from './session.js';

const sleep = (ms, signal) => new Promise((resolve) => {
  const timer = setTimeout(resolve, ms);
  signal.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
});

/**
 * Follow events matching `params` (the filters the stream applies) until `signal` aborts.
 * `onEvent(event)` gets each one; `onState(state, detail)` hears 'connecting', 'live',
 * 'waiting' (with the reason and the delay) and 'refused' (a 401/403/400: it stops).
 */
export async function follow(params, { signal, onEvent, onState }) {
  let lastEventId = null;
  let retryMs = 1000;
  while (!signal.aborted) {
    onState('connecting');
    try {
      const answer = await fetch(url('/v1/events/tail', { ...params, follow: 'true' }), {
        headers: {
          Authorization: `Bearer ${token()}`,
          Accept: 'text/event-stream',
          ...(lastEventId ? { 'Last-Event-ID': lastEventId } : {}),
        },
        cache: 'no-store',
        credentials: 'omit',
        signal,
      });
      if (!answer.ok) {
        const error = await errorOf(answer);
        if ([400, 401, 403].includes(answer.status)) {
          onState('refused', { error });
          return;
        }
        onState('waiting', { error, ms: (error.retryAfter ?? 1) * 1000 });
        await sleep((error.retryAfter ?? 1) * 1000, signal);
        continue;
      }
      onState('live');
      const opened = Date.now();
      const parser = createParser({
        onEvent(message) {
          if (message.id) lastEventId = message.id;
          onEvent(JSON.parse(message.data));
        },
        onRetry(ms) { retryMs = ms; },
      });
      const reader = answer.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        parser.feed(value);
      }
      // The server's time limit: reconnect from where the stream stopped (at once, unless
      // something keeps closing it early).
      if (Date.now() - opened < 5000) await sleep(retryMs, signal);
    } catch (error) {
      if (signal.aborted) return;
      onState('waiting', { error, ms: retryMs });
      await sleep(retryMs, signal);
    }
  }
}
