// Verify, in the browser, that the event on screen is in the signed log, trusting nothing
// the server says but checking it all: byte for byte what src/auditlog/integrity/ does
// (docs/INTEGRITY.md).
//
//   leaf      = SHA-256(0x00 || JCS(event without leaf_hash))        RFC 8785, RFC 9162 §2.1.1
//   node      = SHA-256(0x01 || left || right)
//   root      = the inclusion path folded from the leaf               RFC 9162 §2.1.3.2
//   signature = Ed25519 over JCS({tree_size, root_hash, timestamp})
//
// JSON numbers are IEEE doubles here as RFC 8785 requires (JSON.parse gives exactly that),
// and JavaScript's Number-to-string is the RFC's number form; `canonicalize` is the RFC
// authors' own JavaScript implementation.

import canonicalize from 'canonicalize';

export class VerifyFailure extends Error {}

const HASH_SIZE = 32;
const encoder = new TextEncoder();

export const hasWebCrypto = () => Boolean(globalThis.isSecureContext && globalThis.crypto?.subtle);

export function b64decode(value, what) {
  if (typeof value !== 'string' || value.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(value)) {
    throw new VerifyFailure(`${what} is not standard base64`);
  }
  return Uint8Array.from(atob(value), (c) => c.charCodeAt(0));
}

export const b64encode = (bytes) => btoa(String.fromCharCode(...bytes));

const equal = (a, b) => a.length === b.length && a.every((byte, i) => byte === b[i]);

async function sha256(...parts) {
  const length = parts.reduce((n, part) => n + part.length, 0);
  const joined = new Uint8Array(length);
  let offset = 0;
  for (const part of parts) {
    joined.set(part, offset);
    offset += part.length;
  }
  return new Uint8Array(await crypto.subtle.digest('SHA-256', joined));
}

/** The RFC 8785 bytes of an event as the API returned it, its leaf_hash left out. */
export function canonicalEvent(event) {
  const { leaf_hash: _recorded, ...body } = event;
  return encoder.encode(canonicalize(body));
}

export const leafHash = (event) => sha256(Uint8Array.of(0), canonicalEvent(event));
const hashChildren = (left, right) => sha256(Uint8Array.of(1), left, right);

/** RFC 9162 §2.1.3.2: the root an inclusion path leads to (sizes up to 2^53, no 32-bit ops). */
export async function rootFromInclusionProof(leafIndex, treeSize, leaf, path) {
  if (!Number.isSafeInteger(leafIndex) || !Number.isSafeInteger(treeSize) || leafIndex < 0 || leafIndex >= treeSize) {
    throw new VerifyFailure(`leaf index ${leafIndex} is outside a tree of size ${treeSize}`);
  }
  if (leaf.length !== HASH_SIZE || path.some((node) => node.length !== HASH_SIZE)) {
    throw new VerifyFailure('every hash of the proof must be 32 bytes');
  }
  const half = (n) => Math.floor(n / 2);
  const odd = (n) => n % 2 === 1;
  let fn = leafIndex;
  let sn = treeSize - 1;
  let r = leaf;
  for (const p of path) {
    if (sn === 0) throw new VerifyFailure('the inclusion path is longer than the tree is deep');
    if (odd(fn) || fn === sn) {
      r = await hashChildren(p, r);
      if (!odd(fn)) {
        while (!odd(fn) && fn !== 0) {
          fn = half(fn);
          sn = half(sn);
        }
      }
    } else {
      r = await hashChildren(r, p);
    }
    fn = half(fn);
    sn = half(sn);
  }
  if (sn !== 0) throw new VerifyFailure('the inclusion path is shorter than the tree is deep');
  return r;
}

/** The bytes a tree head's signature covers. */
export const signedHeadBody = (head) =>
  encoder.encode(canonicalize({ tree_size: head.tree_size, root_hash: head.root_hash, timestamp: head.timestamp }));

async function ed25519Key(raw) {
  try {
    return await crypto.subtle.importKey('raw', raw, { name: 'Ed25519' }, false, ['verify']);
  } catch (error) {
    if (error?.name === 'NotSupportedError') {
      throw new VerifyFailure("this browser's WebCrypto has no Ed25519: the signature cannot be checked here");
    }
    throw new VerifyFailure(`the log's public key is not an Ed25519 key (${error?.message ?? error})`);
  }
}

/**
 * Check that `event` (exactly as shown) is in the log the key signed. `get(path, params)`
 * fetches the API's JSON. `pinnedKey` (base64), when the viewer's configuration has one, is
 * the only key accepted. `report(step)` hears each check as it passes.
 * Resolves to {treeSize, timestamp, leafIndex, pinned}; rejects with a VerifyFailure.
 */
export async function verifyEvent(event, { get, pinnedKey, report = () => {} }) {
  if (!hasWebCrypto()) {
    throw new VerifyFailure(
      'this page has no WebCrypto (crypto.subtle exists only in a secure context: HTTPS, or ' +
        'http://127.0.0.1): nothing was checked. Open the viewer over HTTPS, or check the ' +
        'event with `auditlog verify` or docs/INTEGRITY.md.',
    );
  }

  const recorded = b64decode(event.leaf_hash, "the event's leaf_hash");
  const leaf = await leafHash(event);
  if (!equal(leaf, recorded)) {
    throw new VerifyFailure(
      `the event as shown does not hash to its recorded leaf hash: its content was changed ` +
        `after it was written (recomputed ${b64encode(leaf)}, recorded ${event.leaf_hash})`,
    );
  }
  report(`leaf hash recomputed from the event shown: ${b64encode(leaf)}`);

  const served = await get('/v1/integrity/public-key');
  if (served.algorithm !== 'Ed25519') {
    throw new VerifyFailure(`the log signs with ${served.algorithm}, which this viewer cannot check`);
  }
  if (pinnedKey && served.public_key !== pinnedKey) {
    throw new VerifyFailure(
      `the server's public key (${served.public_key}) is not the key pinned in this viewer's ` +
        `configuration (${pinnedKey}): it may be serving another log`,
    );
  }
  const key = await ed25519Key(b64decode(pinnedKey || served.public_key, 'the public key'));
  report(pinnedKey ? `public key: the pinned one, ${pinnedKey}` : `public key, as the server gives it (not pinned): ${served.public_key}`);

  const head = await get('/v1/integrity/tree-head');
  const signature = b64decode(head.signature, "the tree head's signature");
  const signed = await crypto.subtle.verify({ name: 'Ed25519' }, key, signature, signedHeadBody(head));
  if (!signed) {
    throw new VerifyFailure(`the tree head of size ${head.tree_size} is not signed by the log's key`);
  }
  report(`tree head of ${head.tree_size} events, signed at ${head.timestamp}: signature valid`);

  const proof = await get(`/v1/events/${encodeURIComponent(event.id)}/proof`, { tree_size: head.tree_size });
  if (proof.tree_size !== head.tree_size) {
    throw new VerifyFailure(`the proof is for a tree of ${proof.tree_size} events, not the signed ${head.tree_size}`);
  }
  if (proof.leaf_index !== event.seq) {
    throw new VerifyFailure(`the proof places the event at position ${proof.leaf_index}, but its seq is ${event.seq}`);
  }
  const root = await rootFromInclusionProof(
    proof.leaf_index,
    head.tree_size,
    leaf,
    (proof.inclusion_path ?? []).map((node, i) => b64decode(node, `inclusion path node ${i}`)),
  );
  if (!equal(root, b64decode(head.root_hash, "the head's root hash"))) {
    throw new VerifyFailure(
      `the inclusion proof does not lead to the signed root: the event is not in the log the ` +
        `key signed (the proof gives ${b64encode(root)}, the head says ${head.root_hash})`,
    );
  }
  report(`inclusion proof (${proof.inclusion_path.length} hashes) leads from leaf ${proof.leaf_index} to the signed root`);
  return { treeSize: head.tree_size, timestamp: head.timestamp, leafIndex: proof.leaf_index, pinned: Boolean(pinnedKey) };
}
