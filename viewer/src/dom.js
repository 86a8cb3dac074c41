// Building the page. Everything that comes from the log is put in as text (text nodes,
// textContent, attribute values): no HTML is ever parsed from data, and the
// Content-Security-Policy's Trusted Types rule makes any HTML sink throw if one slips in.

/** An element with properties and children; strings and numbers become text nodes. */
export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'class') node.className = value;
    else if (name === 'text') node.textContent = value;
    else if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
}

export const $ = (selector) => document.querySelector(selector);

/** Replace an element's children. */
export function fill(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

/** At most `max` characters of a string, for places that show a glimpse (table cells). */
export function glimpse(value, max = 120) {
  const text = String(value ?? '');
  return text.length > max ? `${text.slice(0, max)}…` : text;
}

let statusTimer = null;

/** A one-line message under the header; errors stay until the next one. */
export function say(message, { error = false, sticky = false } = {}) {
  const status = $('#status');
  clearTimeout(statusTimer);
  status.hidden = !message;
  status.textContent = message ?? '';
  status.classList.toggle('error', error);
  if (message && !error && !sticky) statusTimer = setTimeout(() => say(null), 6000);
}

let pending = 0;

/**
 * Run `work()` with the page marked busy (body[data-busy]) until it settles: a person sees
 * the cursor wait, a test knows when the answer is on screen.
 */
export async function busy(work) {
  pending += 1;
  document.body.dataset.busy = String(pending);
  try {
    return await work();
  } finally {
    pending -= 1;
    if (pending === 0) delete document.body.dataset.busy;
    else document.body.dataset.busy = String(pending);
  }
}
