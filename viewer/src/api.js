// Every request to the API: the bearer token on each, errors read from the API's
// {title, description} answers.

import { token } from './session.js';

export class ApiError extends Error {
  constructor(status, title, description, retryAfter, requestId) {
    super(description ? `${title}: ${description}` : title);
    this.status = status;
    this.title = title;
    this.description = description;
    this.retryAfter = retryAfter;
    this.requestId = requestId;
  }

  /** The message and the request's id: nginx names every request, and the access log, the
   * API's and the writer's logs all carry that id, so an operator finds it by this. */
  get reported() {
    return this.requestId ? `${this.message} (request ${this.requestId})` : this.message;
  }
}

/** An absolute URL on this origin, with the parameters that have a value. */
export function url(path, params = {}) {
  const target = new URL(path, location.origin);
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') target.searchParams.set(name, value);
  }
  return target;
}

/** The answer, or an ApiError saying what the API said was wrong. */
export async function request(path, params = {}, { headers = {}, signal, auth = true } = {}) {
  const answer = await fetch(url(path, params), {
    headers: { ...(auth ? { Authorization: `Bearer ${token()}` } : {}), ...headers },
    signal,
    cache: 'no-store',
    credentials: 'omit',
  });
  if (!answer.ok) throw await errorOf(answer);
  return answer;
}

export async function getJson(path, params = {}, options = {}) {
  const answer = await request(path, params, { ...options, headers: { Accept: 'application/json' } });
  return answer.json();
}

export async function errorOf(answer) {
  let title = `HTTP ${answer.status}`;
  let description = '';
  try {
    const body = await answer.json();
    title = String(body.title ?? title);
    description = String(body.description ?? '');
  } catch {
    // Not the API's JSON (a proxy's page): the status says enough.
  }
  const retryAfter = Number(answer.headers.get('Retry-After')) || undefined;
  const requestId = answer.headers.get('X-Request-ID') || undefined;
  return new ApiError(answer.status, title, description, retryAfter, requestId);
}
