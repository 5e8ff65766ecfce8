// roomwire.js: the browser client for roomwire. One ES module, no build step,
// no dependencies; the file the demo loads is this file.
//
//	import { connect } from '/roomwire.js';
//
//	const rw = connect({ user: { name: 'ada' } });     // same-origin /rt/, best transport
//	const room = rw.join('lobby');
//	room.on('change', ({ doc, version }) => render(doc));
//	room.on('members', (members) => showMembers(members));
//	await room.ready;
//	await room.patch([{ op: 'add', path: '/title', value: 'hello' }]);
//
// The wire protocol is in docs/PROTOCOL.md. In short: one connection carries
// one session and any number of rooms; the first message is hello, answered by
// welcome; durable server messages carry a session sequence number ("sseq")
// that the client acknowledges; a client that reconnects within the resume
// window resumes its session with no loss, otherwise it rejoins each room
// with the last room seq it saw and gets a replay or a fresh snapshot.
//
// The room document works like this. The *confirmed* document and its version
// change only through server messages, in room order: a snapshot, replayed or
// broadcast patches, and the acknowledgements of this client's own patches.
// Local patches wait in a pending list and are applied on top of the
// confirmed document to give the *view* (room.doc), so edits show at once.
// Pending patches go to the server one at a time, each against the confirmed
// version at the time it is sent. When the server rejects one (conflict, a
// failed test), the room's rebase function may turn it into a patch that still
// makes sense on the new confirmed document (the default, lenientRebase,
// turns a replace of a vanished member into an add and drops a remove of one);
// otherwise it is dropped. Either way the view is recomputed, and every client
// converges on the server's document. Documents are frozen: treat them as
// read-only values.
//
// Transports. The client tries WebSocket, then SSE+POST, then long-polling
// (docs/protocol-http.md), in the order of options.transports; a transport
// that fails before its welcome hands over to the next at once, and a
// connection that worked and dropped is retried on the same transport after
// a backoff with full jitter. options.transport forces one. SSE is checked
// for proxies that buffer it: the link pings as soon as the stream is
// requested and hands over the welcome only when the first event arrives;
// none within options.sseTimeout and SSE is marked unusable for this client
// (CODE_UNUSABLE), so long-polling takes over. While on a lesser transport,
// the client opens the best one now and then (options.upgradeDelay, doubling
// up to 5 minutes); when it opens, the session moves to it by a hello with
// resume and the last sseq processed, so the server resends exactly what
// follows: no gap, no duplicate.
//
// The fourth transport, "rtc" (docs/protocol-webrtc.md, section 1), carries
// the session over two WebRTC DataChannels to the server: the reliable
// ordered "roomwire" for hello, welcome and everything durable, and the
// unordered "roomwire-eph" (no retransmissions) for ephemeral values,
// measured pings and acks, with no head-of-line blocking behind durable
// traffic. It is not in the default order (so the client never tries or
// upgrades to it unless told to): it needs the server to mount it
// (EnableRTC) and a UDP path to the server's port that the server's
// candidate filter allows, which many networks and deployments do not
// have, and when that path is missing it fails only after ICE gives up
// (seconds), where WebSocket fails at once. Use it by asking for it:
// transport: 'rtc', or transports: ['rtc', 'ws', ...] to fall back.
//
// Persistence (options.persist, a sessionStorage key; off by default). Kept,
// as JSON under that key: the session id, its resume token and the last
// sseq acknowledged (so that a reload within the resume window resumes the
// session: others see no leave and join); the client-id prefix and counter
// (so that resent messages keep their cids and new ones never reuse one);
// the transports found unusable here; and, per room, the patches and events
// not yet confirmed by the server (cid and content). A room joined again
// after the reload starts from a fresh snapshot and resends those with their
// original cids: the server applies a cid once, so nothing is applied twice.
// Not kept: documents, members, ephemeral values. close() says bye and drops
// the session from storage but keeps the unconfirmed messages. sessionStorage
// is per tab, so two tabs never share a session (a duplicated tab copies it,
// and the older tab's connection is then replaced: close code 4004).
//
// Sections: JSON Pointer and JSON Patch; events; links (transports); the
// client; rooms; peers (direct DataChannels between members).

// ---------------------------------------------------------------------------
// JSON Pointer (RFC 6901) and JSON Patch (RFC 6902)
// ---------------------------------------------------------------------------

/**
 * A JSON value.
 * @typedef {null | boolean | number | string | JSONValue[] | {[key: string]: JSONValue}} JSONValue
 */

/**
 * One JSON Patch operation.
 * @typedef {object} PatchOp
 * @property {'add'|'remove'|'replace'|'move'|'copy'|'test'} op
 * @property {string} path
 * @property {string} [from]
 * @property {JSONValue} [value]
 */

/** An error applying a JSON Patch. `code` is the server's error code for it. */
export class PatchError extends Error {
  /**
   * @param {'bad_patch'|'test_failed'} code
   * @param {string} message
   */
  constructor(code, message) {
    super(message);
    this.name = 'PatchError';
    /** @type {'bad_patch'|'test_failed'} */
    this.code = code;
    /** Index of the failing operation in its patch, when known. @type {number|undefined} */
    this.index = undefined;
  }
}

const bad = (/** @type {string} */ msg) => new PatchError('bad_patch', msg);

// Path segments that could reach an object's prototype. They are refused
// everywhere, whatever the document holds, so that no patch from the server,
// another client or this page can pollute Object.prototype.
const FORBIDDEN_SEGMENTS = new Set(['__proto__', 'constructor', 'prototype']);

// Deepest nesting a value may have (guards against cyclic input).
const MAX_DEPTH = 1000;

const hasOwn = (/** @type {object} */ o, /** @type {string} */ k) => Object.prototype.hasOwnProperty.call(o, k);
const isObject = (/** @type {unknown} */ v) => v !== null && typeof v === 'object' && !Array.isArray(v);
const isContainer = (/** @type {unknown} */ v) => v !== null && typeof v === 'object';

/** Sets an own data property, even for a key like "__proto__". */
function define(/** @type {object} */ o, /** @type {string} */ k, /** @type {unknown} */ v) {
  Object.defineProperty(o, k, { value: v, writable: true, enumerable: true, configurable: true });
}

/**
 * Splits a JSON Pointer into unescaped reference tokens.
 * @param {unknown} pointer
 * @returns {string[]}
 * @throws {PatchError} on a malformed pointer or a forbidden segment
 */
export function parsePointer(pointer) {
  if (typeof pointer !== 'string') throw bad('a JSON Pointer must be a string');
  if (pointer === '') return [];
  if (pointer[0] !== '/') throw bad(`JSON Pointer ${JSON.stringify(pointer)} must start with "/"`);
  return pointer.slice(1).split('/').map((raw) => {
    if (/~(?![01])/.test(raw)) throw bad(`bad escape in JSON Pointer ${JSON.stringify(pointer)}`);
    const tok = raw.replace(/~1/g, '/').replace(/~0/g, '~'); // in this order (RFC 6901, 4)
    if (FORBIDDEN_SEGMENTS.has(tok)) throw bad(`path segment ${JSON.stringify(tok)} is not allowed`);
    return tok;
  });
}

/**
 * Escapes one reference token: formatPointer(['a/b', 'c']) is "/a~1b/c".
 * @param {string[]} tokens
 */
export function formatPointer(tokens) {
  return tokens.map((t) => '/' + String(t).replace(/~/g, '~0').replace(/\//g, '~1')).join('');
}

/**
 * Resolves an array reference token. "-" (one past the end) is accepted only
 * where an element may be inserted; leading zeros, signs and exponents never.
 * @param {string} tok
 * @param {number} len
 * @param {boolean} insert
 */
function arrayIndex(tok, len, insert) {
  if (tok === '-') {
    if (insert) return len;
    throw bad('"-" names no existing array element');
  }
  if (!/^(0|[1-9][0-9]*)$/.test(tok)) throw bad(`${JSON.stringify(tok)} is not an array index`);
  const i = Number(tok);
  if (i > len || (!insert && i === len)) throw bad(`array index ${i} out of bounds (length ${len})`);
  return i;
}

// Values this module has validated and deep-frozen. They can be shared
// between documents freely, since nobody can change them.
/** @type {WeakSet<object>} */
const FROZEN = new WeakSet();

/**
 * Returns v as a deep-frozen JSON value, copying it unless it is already one
 * of ours. Anything that is not plain JSON is refused.
 * @param {unknown} v
 * @param {number} [depth]
 * @returns {JSONValue}
 */
export function freezeJSON(v, depth = 0) {
  switch (typeof v) {
    case 'string':
    case 'boolean':
      return v;
    case 'number':
      if (!Number.isFinite(v)) throw bad(`${v} is not a JSON number`);
      return v;
    case 'object': {
      if (v === null) return null;
      if (FROZEN.has(v)) return /** @type {JSONValue} */ (v);
      if (depth >= MAX_DEPTH) throw bad(`value nested deeper than ${MAX_DEPTH}`);
      let out;
      if (Array.isArray(v)) {
        out = v.map((x) => freezeJSON(x, depth + 1));
      } else {
        const proto = Object.getPrototypeOf(v);
        if (proto !== Object.prototype && proto !== null) throw bad('value is not a plain JSON object');
        out = {};
        for (const k of Object.keys(v)) define(out, k, freezeJSON(/** @type {any} */ (v)[k], depth + 1));
      }
      Object.freeze(out);
      FROZEN.add(out);
      return out;
    }
    default:
      throw bad(`a ${typeof v} is not a JSON value`);
  }
}

/**
 * Structural equality of JSON values (object member order does not matter).
 * @param {unknown} a
 * @param {unknown} b
 * @returns {boolean}
 */
export function deepEqual(a, b) {
  if (a === b) return true;
  if (!isContainer(a) || !isContainer(b)) return false;
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false;
    return a.every((x, i) => deepEqual(x, b[i]));
  }
  if (Array.isArray(b)) return false;
  const ka = Object.keys(/** @type {object} */ (a));
  const kb = Object.keys(/** @type {object} */ (b));
  if (ka.length !== kb.length) return false;
  return ka.every((k) => hasOwn(/** @type {object} */ (b), k) && deepEqual(/** @type {any} */ (a)[k], /** @type {any} */ (b)[k]));
}

/**
 * Copy-on-write state of one applyPatch call: containers created by this
 * call ("fresh") may be changed in place until it returns, when they are
 * frozen; every other container is copied before it is changed.
 */
class Draft {
  /** @type {Set<object>} */
  fresh = new Set();

  /**
   * Returns c itself if it is fresh, else a fresh shallow copy of it.
   * @template {object} T
   * @param {T} c
   * @returns {T}
   */
  own(c) {
    if (this.fresh.has(c)) return c;
    let copy;
    if (Array.isArray(c)) {
      copy = c.slice();
    } else {
      copy = {};
      for (const k of Object.keys(c)) define(copy, k, /** @type {any} */ (c)[k]);
    }
    this.fresh.add(copy);
    return /** @type {T} */ (copy);
  }

  /**
   * Freezes v and every fresh container under it, so that it can be shared
   * (copy puts one value in two places).
   * @param {unknown} v
   */
  seal(v) {
    if (!isContainer(v) || !this.fresh.has(/** @type {object} */ (v))) return;
    const c = /** @type {any} */ (v);
    this.fresh.delete(c);
    for (const k of Object.keys(c)) this.seal(c[k]);
    Object.freeze(c);
    FROZEN.add(c);
  }

  /** Freezes everything this call created. */
  finish() {
    for (const c of this.fresh) {
      Object.freeze(c);
      FROZEN.add(c);
    }
    this.fresh.clear();
  }
}

/**
 * Reads the value at tokens.
 * @param {JSONValue} root
 * @param {string[]} tokens
 * @returns {JSONValue}
 */
function getAt(root, tokens) {
  let cur = root;
  for (const tok of tokens) {
    if (Array.isArray(cur)) {
      cur = cur[arrayIndex(tok, cur.length, false)];
    } else if (isObject(cur)) {
      if (!hasOwn(/** @type {object} */ (cur), tok)) throw bad(`path ${formatPointer(tokens)} does not exist`);
      cur = /** @type {any} */ (cur)[tok];
    } else {
      throw bad(`path ${formatPointer(tokens)} does not exist`);
    }
  }
  return cur;
}

/**
 * Copies (on write) the containers from the root down to the parent of the
 * last token, and returns the new root and that parent, ready to be changed.
 * @param {JSONValue} root
 * @param {string[]} tokens  at least one token
 * @param {Draft} draft
 * @returns {[JSONValue, any]}
 */
function parentFor(root, tokens, draft) {
  if (!isContainer(root)) throw bad(`path ${formatPointer(tokens)} does not exist`);
  const top = draft.own(/** @type {object} */ (root));
  let cur = /** @type {any} */ (top);
  for (let i = 0; i < tokens.length - 1; i++) {
    const tok = tokens[i];
    let key;
    if (Array.isArray(cur)) {
      key = arrayIndex(tok, cur.length, false);
    } else if (hasOwn(cur, tok)) {
      key = tok;
    } else {
      throw bad(`path ${formatPointer(tokens.slice(0, i + 1))} does not exist`);
    }
    const child = cur[key];
    if (!isContainer(child)) throw bad(`path ${formatPointer(tokens.slice(0, i + 2))} does not exist`);
    const owned = draft.own(child);
    if (Array.isArray(cur)) cur[/** @type {number} */ (key)] = owned;
    else define(cur, /** @type {string} */ (key), owned);
    cur = owned;
  }
  return [/** @type {JSONValue} */ (top), cur];
}

/** @returns {JSONValue} */
function addAt(/** @type {JSONValue} */ root, /** @type {string[]} */ tokens, /** @type {JSONValue} */ value, /** @type {Draft} */ draft) {
  if (tokens.length === 0) return value;
  const [top, parent] = parentFor(root, tokens, draft);
  const last = tokens[tokens.length - 1];
  if (Array.isArray(parent)) parent.splice(arrayIndex(last, parent.length, true), 0, value);
  else define(parent, last, value);
  return top;
}

/** @returns {[JSONValue, JSONValue]} the new root and the removed value */
function removeAt(/** @type {JSONValue} */ root, /** @type {string[]} */ tokens, /** @type {Draft} */ draft) {
  if (tokens.length === 0) throw bad('the whole document cannot be removed');
  const [top, parent] = parentFor(root, tokens, draft);
  const last = tokens[tokens.length - 1];
  if (Array.isArray(parent)) {
    const [old] = parent.splice(arrayIndex(last, parent.length, false), 1);
    return [top, old];
  }
  if (!hasOwn(parent, last)) throw bad(`path ${formatPointer(tokens)} does not exist`);
  const old = parent[last];
  delete parent[last];
  return [top, old];
}

/** @returns {JSONValue} */
function replaceAt(/** @type {JSONValue} */ root, /** @type {string[]} */ tokens, /** @type {JSONValue} */ value, /** @type {Draft} */ draft) {
  if (tokens.length === 0) return value;
  const [top, parent] = parentFor(root, tokens, draft);
  const last = tokens[tokens.length - 1];
  if (Array.isArray(parent)) {
    parent[arrayIndex(last, parent.length, false)] = value;
  } else {
    if (!hasOwn(parent, last)) throw bad(`path ${formatPointer(tokens)} does not exist`);
    define(parent, last, value);
  }
  return top;
}

/**
 * Reads a required member of an operation (own properties only).
 * @param {object} op
 * @param {string} name
 */
function member(op, name) {
  if (!hasOwn(op, name)) throw bad(`operation has no "${name}"`);
  return /** @type {any} */ (op)[name];
}

/**
 * Applies one operation; see applyPatch.
 * @param {JSONValue} root
 * @param {unknown} op
 * @param {Draft} draft
 * @returns {JSONValue}
 */
function applyOp(root, op, draft) {
  if (!isObject(op)) throw bad('an operation must be an object');
  const o = /** @type {object} */ (op);
  const kind = member(o, 'op');
  const path = parsePointer(member(o, 'path'));
  switch (kind) {
    case 'add':
      return addAt(root, path, freezeJSON(member(o, 'value')), draft);
    case 'remove':
      return removeAt(root, path, draft)[0];
    case 'replace':
      return replaceAt(root, path, freezeJSON(member(o, 'value')), draft);
    case 'test': {
      const want = member(o, 'value');
      if (!deepEqual(getAt(root, path), want)) throw new PatchError('test_failed', `test of ${formatPointer(path)} failed`);
      return root;
    }
    case 'copy': {
      const v = getAt(root, parsePointer(member(o, 'from')));
      draft.seal(v);
      return addAt(root, path, v, draft);
    }
    case 'move': {
      const from = parsePointer(member(o, 'from'));
      const inside = from.length <= path.length && from.every((t, i) => t === path[i]);
      if (inside) {
        if (from.length === path.length) {
          getAt(root, from); // a move onto itself changes nothing, but "from" must exist
          return root;
        }
        throw bad(`cannot move ${formatPointer(from)} into its own child ${formatPointer(path)}`);
      }
      const [next, v] = removeAt(root, from, draft);
      return addAt(next, path, v, draft);
    }
    default:
      throw bad(`unknown operation ${JSON.stringify(kind)}`);
  }
}

/**
 * Applies an RFC 6902 patch to doc and returns the result, a deep-frozen
 * document that shares unchanged parts with doc. doc itself is never changed:
 * a patch applies completely or not at all.
 *
 * Path segments "__proto__", "constructor" and "prototype" are refused, and
 * every lookup is an own-property lookup, so no patch can reach a prototype.
 *
 * @param {JSONValue} doc
 * @param {readonly PatchOp[]} ops
 * @returns {JSONValue}
 * @throws {PatchError} code "test_failed" when a test operation fails,
 *   "bad_patch" for anything else (malformed operation, missing path, bad index)
 */
export function applyPatch(doc, ops) {
  if (!Array.isArray(ops)) throw bad('a patch must be an array of operations');
  const draft = new Draft();
  let root = freezeJSON(doc);
  ops.forEach((op, i) => {
    try {
      root = applyOp(root, op, draft);
    } catch (err) {
      if (err instanceof PatchError) err.index = i;
      throw err;
    }
  });
  draft.finish();
  return root;
}

/**
 * Checks and freezes a patch a caller hands in, so that later changes to the
 * caller's objects cannot change it and re-applying it is cheap.
 * @param {unknown} ops
 * @returns {readonly PatchOp[]}
 */
function normalizePatch(ops) {
  if (!Array.isArray(ops) || ops.length === 0) throw bad('a patch must be a non-empty array of operations');
  return Object.freeze(ops.map((op) => /** @type {PatchOp} */ (freezeJSON(op))));
}

/**
 * The default rebase: given a patch the server rejected and the current
 * confirmed document, returns the patch that still expresses the same intent,
 * or null to drop it. Operation by operation: one that applies is kept; a
 * replace whose target has gone becomes an add (last writer wins); a remove
 * whose target has gone is dropped (it is already gone); anything else, in
 * particular a failed test, drops the whole patch.
 * @param {readonly PatchOp[]} ops
 * @param {JSONValue} doc
 * @returns {PatchOp[] | null}
 */
export function lenientRebase(ops, doc) {
  /** @type {PatchOp[]} */
  const out = [];
  let cur = doc;
  for (const op of ops) {
    const tries = [op];
    if (op.op === 'replace') tries.push({ op: 'add', path: op.path, value: op.value });
    let done = false;
    for (const t of tries) {
      try {
        cur = applyPatch(cur, [t]);
        out.push(t);
        done = true;
        break;
      } catch {
        // try the next form
      }
    }
    if (!done && op.op !== 'remove') return null;
  }
  return out;
}

// ---------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------

/** A minimal event emitter: on() returns the function that unsubscribes. */
class Emitter {
  /** @type {Map<string, Set<(detail: any) => void>>} */
  #handlers = new Map();

  /**
   * @param {string} type
   * @param {(detail: any) => void} fn
   * @returns {() => void} unsubscribe
   */
  on(type, fn) {
    let set = this.#handlers.get(type);
    if (!set) this.#handlers.set(type, (set = new Set()));
    set.add(fn);
    return () => this.off(type, fn);
  }

  /**
   * @param {string} type
   * @param {(detail: any) => void} fn
   */
  off(type, fn) {
    this.#handlers.get(type)?.delete(fn);
  }

  /**
   * Calls the handlers of type. A handler that throws does not disturb the
   * client or the other handlers; its error is rethrown asynchronously, so
   * that it still shows up (console, test runner).
   * @param {string} type
   * @param {any} [detail]
   */
  emit(type, detail) {
    const set = this.#handlers.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(detail);
      } catch (err) {
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Links: one connection of one transport
// ---------------------------------------------------------------------------

/**
 * What a transport gives the client: a connection that carries text frames,
 * each holding one or more JSON messages separated by "\n". The client sends
 * hello as the first frame, and the link hands back welcome as the first
 * frame it delivers. WebSocket, SSE+POST and long-polling are built in.
 * @typedef {object} Link
 * @property {string} transport  the name the server reports in presence
 * @property {(frame: string) => void} send  send one frame (only after onopen)
 * @property {() => void} close  close without further callbacks; frames
 *   already handed to send still go out where the transport allows
 */

/**
 * The callbacks a link calls. onclose is called at most once, and never after
 * the client has called close().
 * @typedef {object} LinkHandlers
 * @property {() => void} onopen  the link can take the hello frame
 * @property {(frame: string) => void} onframe
 * @property {(code: number, reason: string) => void} onclose
 * @property {() => number} ack  the highest sseq the client has processed
 *   (the HTTP transports acknowledge with it when they poll or re-ticket)
 */

/**
 * Opens a link to the realtime endpoints at base (a URL ending in "/").
 * @typedef {(base: URL, handlers: LinkHandlers, options: ConnectOptions) => Link} LinkFactory
 */

/**
 * A close code that never travels on the wire (3000-3999 is the range RFC
 * 6455 leaves to libraries): the transport answers, but cannot carry the
 * session from here (an SSE stream that a proxy buffers, an endpoint the
 * server does not have). The client skips that transport from then on.
 */
export const CODE_UNUSABLE = 3001;

/** @type {LinkFactory} */
function openWebSocket(base, h, options) {
  const WS = options.WebSocket ?? globalThis.WebSocket;
  if (!WS) throw new Error('roomwire: no WebSocket implementation (pass options.WebSocket)');
  const url = new URL('ws', base);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  const ws = new WS(url.href);
  let done = false;
  ws.onopen = () => {
    if (!done) h.onopen();
  };
  ws.onmessage = (/** @type {MessageEvent} */ e) => {
    if (!done && typeof e.data === 'string') h.onframe(e.data);
  };
  ws.onclose = (/** @type {CloseEvent} */ e) => {
    if (done) return;
    done = true;
    h.onclose(e.code, e.reason);
  };
  // Browsers follow an error with close, but not every implementation does
  // (node 20 does not when the connection is refused): an error ends the link.
  ws.onerror = () => {
    if (done) return;
    done = true;
    h.onclose(1006, 'connection failed');
    try {
      ws.close();
    } catch {
      // not open
    }
  };
  return {
    transport: 'ws',
    send: (frame) => ws.send(frame),
    close: () => {
      if (done) return;
      done = true;
      try {
        ws.close(1000, 'bye');
      } catch {
        // already closing
      }
    },
  };
}

/** A request the server refused, as a close code and reason. */
class LinkError extends Error {
  /** @param {number} code @param {string} reason */
  constructor(code, reason) {
    super(reason);
    this.code = code;
  }
}

/**
 * Maps a refused HTTP request to a close code (docs/protocol-http.md, "Status
 * codes"): a 410 body is the close message itself; 401 means an unknown
 * session (reconnect: the resume fails and a new session begins), except on
 * hello, where the server's authentication hook refused us (terminal).
 * @param {number} status
 * @param {string} text  the body
 * @param {boolean} hello  the request was a hello
 * @returns {LinkError}
 */
function refusal(status, text, hello) {
  /** @type {any} */
  let body = {};
  try {
    body = JSON.parse(text) ?? {};
  } catch {
    // not JSON: a proxy's error page
  }
  if (body.t === 'close' && typeof body.code === 'number') return new LinkError(body.code, String(body.reason ?? ''));
  const why = `HTTP ${status}${body.msg ? ': ' + body.msg : ''}`;
  switch (status) {
    case 401:
      return new LinkError(hello ? 4101 : 4003, why);
    case 403:
      return new LinkError(4100, why); // origin refused: reconnecting changes nothing
    case 400:
      return new LinkError(hello ? 4100 : 1002, why);
    case 413:
      return new LinkError(hello ? 4100 : 1009, why);
    case 404:
    case 405:
      return new LinkError(CODE_UNUSABLE, why); // this server has no such transport
    case 503:
      return new LinkError(4000, why);
    default:
      return new LinkError(1006, why);
  }
}

// A send request's body stays well under the server's 1 MiB limit.
const MAX_SEND_BODY = 256 * 1024;
// Browsers let a keepalive request (one that outlives its page, so that bye
// arrives) carry at most 64 KiB.
const MAX_KEEPALIVE_BODY = 60 * 1024;

/**
 * One session over HTTP: its credentials (kept in headers, never in a URL),
 * and the send queue, which keeps at most one send request in flight and
 * batches what queues up meanwhile (docs/protocol-http.md, "send").
 */
class HttpSession {
  sid = '';
  token = '';
  #fetch;
  #base;
  #prefix;
  #onfail;
  /** @type {string[]} */
  #queue = [];
  #busy = false;
  #stopped = false;

  /**
   * @param {typeof fetch} fetchFn
   * @param {URL} base
   * @param {string} prefix  "sse/" or "longpoll/"
   * @param {(err: LinkError) => void} onfail  a send failed (not called after stop)
   */
  constructor(fetchFn, base, prefix, onfail) {
    this.#fetch = fetchFn;
    this.#base = base;
    this.#prefix = prefix;
    this.#onfail = onfail;
  }

  /**
   * POSTs body to the endpoint; resolves with the answer's status and text
   * and rejects (with a LinkError 1006) when the network fails.
   * @param {string} endpoint
   * @param {string} body
   * @param {{signal?: AbortSignal, keepalive?: boolean, type?: string}} [init]
   * @returns {Promise<{status: number, text: string}>}
   */
  async post(endpoint, body, init = {}) {
    /** @type {Record<string, string>} */
    const headers = { 'Content-Type': init.type ?? 'application/json' };
    if (this.sid) {
      headers['Roomwire-Session'] = this.sid;
      headers['Roomwire-Token'] = this.token;
    }
    try {
      const res = await this.#fetch(new URL(this.#prefix + endpoint, this.#base).href, {
        method: 'POST',
        headers,
        body,
        cache: 'no-store',
        credentials: 'same-origin',
        signal: init.signal,
        keepalive: init.keepalive ?? false,
      });
      return { status: res.status, text: await res.text() };
    } catch (err) {
      if (/** @type {Error} */ (err)?.name === 'AbortError') throw err;
      throw new LinkError(1006, `${this.#prefix}${endpoint}: ${/** @type {Error} */ (err)?.message ?? err}`);
    }
  }

  /**
   * Says hello; resolves with the welcome (and takes its credentials).
   * @param {string} frame  the hello message
   * @returns {Promise<any>}
   */
  async hello(frame) {
    const r = await this.post('hello', frame);
    if (r.status !== 200) throw refusal(r.status, r.text, true);
    let w;
    try {
      w = JSON.parse(r.text);
    } catch {
      throw new LinkError(1006, 'hello: the answer is not JSON');
    }
    if (!isObject(w) || w.t !== 'welcome' || typeof w.sid !== 'string' || typeof w.token !== 'string') {
      throw new LinkError(4100, 'hello: the answer is not a welcome');
    }
    this.sid = w.sid;
    this.token = w.token;
    return w;
  }

  /** Queues a frame of client messages for the next send request. @param {string} frame */
  send(frame) {
    this.#queue.push(frame);
    if (!this.#busy) this.#drain();
  }

  async #drain() {
    this.#busy = true;
    while (this.#queue.length > 0) {
      let body = /** @type {string} */ (this.#queue.shift());
      while (this.#queue.length > 0 && body.length + 1 + this.#queue[0].length <= MAX_SEND_BODY) body += '\n' + this.#queue.shift();
      let err = null;
      try {
        // keepalive lets a bye sent as the page goes away still arrive.
        const r = await this.post('send', body, { type: 'application/x-ndjson', keepalive: body.length <= MAX_KEEPALIVE_BODY });
        if (r.status !== 204 && r.status !== 200) err = refusal(r.status, r.text, false);
      } catch (e) {
        err = e instanceof LinkError ? e : new LinkError(1006, String(e));
      }
      if (err) {
        this.#queue = [];
        if (!this.#stopped) this.#onfail(err);
        break;
      }
    }
    this.#busy = false;
  }

  /** No more failure callbacks; frames already queued still go out. */
  stop() {
    this.#stopped = true;
  }

  /** Ends the session on the server (a session this link opened and will not use). */
  end() {
    if (this.sid) this.post('close', '', { keepalive: true }).catch(() => {});
  }
}

/**
 * SSE+POST (docs/protocol-http.md): hello by POST, server messages on an
 * EventSource opened with a single-use ticket (EventSource cannot send the
 * session headers, and the token must not go in a URL), client messages by
 * POST. When the stream drops, the link asks for a new ticket, acknowledging
 * what it has, and opens a new stream; EventSource's own retry (which would
 * present a used ticket) is never used.
 *
 * A proxy that buffers the stream would hold every server message back. So
 * the link sends a ping as soon as the stream is requested and hands the
 * client its welcome only when the first event (the pong, or anything else)
 * arrives; if none does within options.sseTimeout it closes with
 * CODE_UNUSABLE, and the client falls back to long-polling.
 * @type {LinkFactory}
 */
function openSSE(base, h, options) {
  const fetchFn = options.fetch ?? globalThis.fetch?.bind(globalThis);
  const ES = options.EventSource ?? globalThis.EventSource;
  if (!fetchFn || !ES) throw new Error('roomwire: SSE needs fetch and EventSource');
  let done = false;
  /** @type {EventSource|null} */
  let es = null;
  let welcome = '';
  let fresh = false; // the welcome opened a new session
  let streaming = false; // the stream has delivered an event
  /** @type {ReturnType<typeof setTimeout>|undefined} */
  let probe;
  const http = new HttpSession(fetchFn, base, 'sse/', (err) => fail(err.code, err.message));

  const stop = () => {
    done = true;
    clearTimeout(probe);
    es?.close();
    es = null;
    http.stop();
  };
  const fail = (/** @type {number} */ code, /** @type {string} */ reason) => {
    if (done) return;
    stop();
    if (code === CODE_UNUSABLE && fresh) http.end(); // nobody will resume that session
    h.onclose(code, reason);
  };
  const failWith = (/** @type {unknown} */ err) => {
    if (err instanceof LinkError) fail(err.code, err.message);
    else fail(1006, String(err));
  };

  const openStream = (/** @type {string} */ ticket) => {
    const url = new URL('sse/events', base);
    url.searchParams.set('ticket', ticket);
    const src = new ES(url.href);
    es = src;
    let got = false;
    src.onmessage = (/** @type {MessageEvent} */ ev) => {
      if (done || src !== es) return;
      got = true;
      if (!streaming) {
        streaming = true;
        clearTimeout(probe);
        h.onframe(welcome);
        if (done) return;
      }
      if (typeof ev.data === 'string') h.onframe(ev.data);
    };
    src.onerror = () => {
      if (done || src !== es) return;
      src.close();
      es = null;
      // A stream that never delivered anything is not worth a new ticket:
      // let the client reconnect with backoff.
      if (!got) {
        fail(1006, 'the event stream failed');
        return;
      }
      http.post('ticket', JSON.stringify({ ack: h.ack() })).then((r) => {
        if (done) return;
        if (r.status !== 200) throw refusal(r.status, r.text, false);
        const t = JSON.parse(r.text)?.ticket;
        if (typeof t !== 'string') throw new LinkError(1006, 'ticket: no ticket in the answer');
        openStream(t);
      }).catch(failWith);
    };
  };

  queueMicrotask(() => {
    if (!done) h.onopen();
  });
  return {
    transport: 'sse',
    send(frame) {
      if (done) return;
      if (http.sid) {
        http.send(frame);
        return;
      }
      // The first frame is the hello.
      http.hello(frame).then((w) => {
        if (done) return;
        fresh = w.resumed !== true;
        const ticket = w.ticket;
        delete w.ticket;
        welcome = JSON.stringify(w);
        if (typeof ticket !== 'string') throw new LinkError(1006, 'hello: no ticket in the welcome');
        probe = setTimeout(() => fail(CODE_UNUSABLE, `no event arrived within ${options.sseTimeout} ms: the stream is buffered on its way`), options.sseTimeout ?? 5000);
        openStream(ticket);
        http.send(JSON.stringify({ t: 'ping', data: 'sse-probe' }));
      }).catch(failWith);
    },
    close() {
      if (!done) stop();
    },
  };
}

/**
 * Long-polling (docs/protocol-http.md): hello by POST, then one poll at a
 * time, each acknowledging what the client has processed and held by the
 * server until there is something to return; client messages by POST.
 * @type {LinkFactory}
 */
function openLongPoll(base, h, options) {
  const fetchFn = options.fetch ?? globalThis.fetch?.bind(globalThis);
  if (!fetchFn) throw new Error('roomwire: long-polling needs fetch');
  let done = false;
  /** @type {AbortController|null} */
  let poll = null;
  const http = new HttpSession(fetchFn, base, 'longpoll/', (err) => fail(err.code, err.message));
  const fail = (/** @type {number} */ code, /** @type {string} */ reason) => {
    if (done) return;
    done = true;
    poll?.abort();
    http.stop();
    h.onclose(code, reason);
  };

  const loop = async () => {
    while (!done) {
      poll = new AbortController();
      let r;
      try {
        r = await http.post('poll', JSON.stringify({ ack: h.ack() }), { signal: poll.signal });
      } catch (err) {
        if (!done) fail(err instanceof LinkError ? err.code : 1006, String(/** @type {Error} */ (err)?.message ?? err));
        return;
      }
      if (done) return;
      if (r.status !== 200) {
        const err = refusal(r.status, r.text, false);
        fail(err.code, err.message);
        return;
      }
      let msgs;
      try {
        msgs = JSON.parse(r.text);
      } catch {
        msgs = null;
      }
      if (!Array.isArray(msgs)) {
        fail(1006, 'poll: the answer is not a JSON array');
        return;
      }
      if (msgs.length > 0) h.onframe(msgs.map((m) => JSON.stringify(m)).join('\n'));
    }
  };

  queueMicrotask(() => {
    if (!done) h.onopen();
  });
  return {
    transport: 'longpoll',
    send(frame) {
      if (done) return;
      if (http.sid) {
        http.send(frame);
        return;
      }
      http.hello(frame).then((w) => {
        if (done) return;
        h.onframe(JSON.stringify(w));
        loop();
      }).catch((err) => {
        if (err instanceof LinkError) fail(err.code, err.message);
        else fail(1006, String(err));
      });
    },
    close() {
      if (done) return;
      done = true;
      poll?.abort();
      http.stop();
    },
  };
}

// The DataChannel transport's channel labels (docs/protocol-webrtc.md, 1.2).
const LABEL_RTC = 'roomwire';
const LABEL_RTC_EPH = 'roomwire-eph';
// Largest DataChannel message the client sends (the server's limit, 1.3).
const MAX_RTC_MESSAGE = 64 * 1024;
// Above this many bytes waiting on roomwire-eph, ephemeral messages go on
// roomwire instead (as the server does when that channel is congested).
const MAX_EPH_BUFFERED = 256 * 1024;
// Most candidates the server takes in one negotiation (1.1).
const MAX_RTC_CANDIDATES = 64;

/**
 * Which channel a client message goes on: roomwire-eph for eph, relay with
 * a key, ack and a ping that carries data (a latency measurement: the
 * unordered channel has no head-of-line blocking); roomwire for everything
 * else, the data-less heartbeat ping included (a lost heartbeat would drop a
 * healthy connection). Messages are JSON.stringify'd objects whose first
 * member is "t".
 * @param {string} line
 */
function ephemeralLine(line) {
  if (line.startsWith('{"t":"eph"') || line.startsWith('{"t":"ack"')) return true;
  if (line.startsWith('{"t":"ping"')) return line !== '{"t":"ping"}';
  if (line.startsWith('{"t":"relay"')) {
    try {
      return typeof JSON.parse(line).key === 'string';
    } catch {
      return false;
    }
  }
  return false;
}

/**
 * WebRTC DataChannels to the server (docs/protocol-webrtc.md, section 1):
 * the server is this client's WebRTC peer. The link creates the two
 * channels ("roomwire", reliable and ordered; "roomwire-eph", unordered
 * without retransmissions), POSTs its offer to rtc/offer, applies the answer
 * (which carries every server candidate) and trickles its own candidates to
 * rtc/candidate, in order, once the answer has named the negotiation; it
 * opens when "roomwire" does. hello, welcome and every durable message
 * travel on "roomwire"; see ephemeralLine for what goes on "roomwire-eph"
 * (when it is open and not congested). A server message too large for one
 * DataChannel message arrives in binary pieces closed by a string piece,
 * which the link reassembles. The link ends (1006) when ICE fails, stays
 * disconnected for options.rtcDisconnectedTimeout, or "roomwire" closes; it
 * is unusable here (CODE_UNUSABLE) when the server has no such endpoint or
 * no ICE path opens within options.rtcTimeout.
 * @type {LinkFactory}
 */
function openRTC(base, h, options) {
  const PC = options.RTCPeerConnection ?? globalThis.RTCPeerConnection;
  const fetchFn = options.fetch ?? globalThis.fetch?.bind(globalThis);
  if (!PC || !fetchFn) throw new Error('roomwire: the DataChannel transport needs RTCPeerConnection and fetch');
  const allow = options.rtcAllowCandidate ?? (() => true);
  let done = false;
  let opened = false;
  let welcomed = false; // "roomwire" has delivered its first frame
  let id = '';
  /** @type {RTCIceCandidateInit[]} */
  let cands = [];
  let candCount = 0;
  let posting = false;
  /** @type {Uint8Array[]} */
  let pieces = [];
  let pieceBytes = 0;
  /** @type {ReturnType<typeof setTimeout>|undefined} */
  let disconnected;

  /** @type {RTCPeerConnection} */
  const pc = new PC(options.rtcConfiguration ?? { iceServers: [] });
  const rel = pc.createDataChannel(LABEL_RTC);
  const eph = pc.createDataChannel(LABEL_RTC_EPH, { ordered: false, maxRetransmits: 0 });
  rel.binaryType = 'arraybuffer';
  eph.binaryType = 'arraybuffer';
  const connectTimer = setTimeout(() => fail(CODE_UNUSABLE, `no ICE connection to the server within ${options.rtcTimeout ?? 15000} ms`), options.rtcTimeout ?? 15000);

  /** Stops everything; lets what "roomwire" still buffers go out first. */
  const stop = () => {
    done = true;
    clearTimeout(connectTimer);
    clearTimeout(disconnected);
    pieces = [];
    for (const ch of [rel, eph]) {
      ch.onopen = ch.onmessage = ch.onclose = ch.onerror = null;
    }
    pc.onicecandidate = pc.onconnectionstatechange = null;
    const closePC = () => {
      try {
        pc.close();
      } catch {
        // closed already
      }
    };
    if (opened && rel.readyState === 'open' && rel.bufferedAmount > 0) {
      // Closing the channel sends what it buffers first; the
      // PeerConnection goes when that is done, or after a bound.
      const bound = setTimeout(closePC, 2000);
      rel.onclose = () => {
        clearTimeout(bound);
        closePC();
      };
      eph.close();
      rel.close();
      return;
    }
    closePC();
  };
  const fail = (/** @type {number} */ code, /** @type {string} */ reason) => {
    if (done) return;
    stop();
    h.onclose(code, reason);
  };

  /** POSTs to rtc/<endpoint>. @param {string} endpoint @param {object} body */
  const post = async (endpoint, body) => {
    try {
      const res = await fetchFn(new URL('rtc/' + endpoint, base).href, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
        cache: 'no-store',
        credentials: 'same-origin',
      });
      return { status: res.status, text: await res.text() };
    } catch (err) {
      throw new LinkError(1006, `rtc/${endpoint}: ${/** @type {Error} */ (err)?.message ?? err}`);
    }
  };

  // Candidates go out once the offer's answer has given the id, one request
  // at a time (so in order), batching what queued up meanwhile. A refused
  // candidate request does not end the link: ICE decides.
  const trickle = async () => {
    if (posting || !id || done) return;
    posting = true;
    while (cands.length > 0 && !done) {
      const batch = cands;
      cands = [];
      let r;
      try {
        r = await post('candidate', { id, candidates: batch });
      } catch {
        break;
      }
      if (r.status === 404) {
        fail(1006, 'rtc/candidate: the server no longer holds this negotiation');
        break;
      }
    }
    posting = false;
  };
  pc.onicecandidate = (/** @type {RTCPeerConnectionIceEvent} */ e) => {
    if (done) return;
    if (e.candidate) {
      const c = e.candidate.toJSON();
      // The server listens on UDP only, and takes at most 64 candidates.
      if (!c.candidate || String(c.candidate).split(' ')[2]?.toLowerCase() !== 'udp' || !allow(c)) return;
      if (candCount >= MAX_RTC_CANDIDATES - 1) return;
      candCount++;
      cands.push(c);
    } else {
      cands.push({ candidate: '' }); // end of candidates
    }
    trickle();
  };
  pc.onconnectionstatechange = () => {
    if (done) return;
    const s = pc.connectionState;
    if (s === 'failed') fail(opened ? 1006 : CODE_UNUSABLE, 'ICE failed');
    else if (s === 'closed') fail(1006, 'the PeerConnection closed');
    else if (s === 'disconnected') {
      clearTimeout(disconnected);
      const ms = options.rtcDisconnectedTimeout ?? 5000;
      disconnected = setTimeout(() => fail(1006, `ICE disconnected for ${ms} ms`), ms);
    } else clearTimeout(disconnected);
  };

  rel.onopen = () => {
    if (done || opened) return;
    opened = true;
    clearTimeout(connectTimer);
    h.onopen();
  };
  rel.onclose = () => fail(1006, 'the DataChannel closed');
  rel.onerror = () => fail(1006, 'the DataChannel failed');
  rel.onmessage = (/** @type {MessageEvent} */ e) => {
    if (done) return;
    const d = e.data;
    if (typeof d !== 'string') {
      // A piece of a large message.
      const b = d instanceof ArrayBuffer ? new Uint8Array(d) : ArrayBuffer.isView(d) ? new Uint8Array(d.buffer, d.byteOffset, d.byteLength) : null;
      if (!b) {
        fail(1006, 'a binary DataChannel message of an unknown type');
        return;
      }
      pieces.push(b.slice());
      pieceBytes += b.byteLength;
      return;
    }
    let frame = d;
    if (pieces.length > 0) {
      const last = new TextEncoder().encode(d);
      const all = new Uint8Array(pieceBytes + last.byteLength);
      let at = 0;
      for (const p of pieces) {
        all.set(p, at);
        at += p.byteLength;
      }
      all.set(last, at);
      pieces = [];
      pieceBytes = 0;
      frame = new TextDecoder().decode(all);
    }
    welcomed = true;
    h.onframe(frame);
  };
  eph.onmessage = (/** @type {MessageEvent} */ e) => {
    // Nothing ephemeral can precede the welcome (it would be taken for a
    // broken handshake), and the server sends only strings here.
    if (!done && welcomed && typeof e.data === 'string') h.onframe(e.data);
  };

  (async () => {
    await pc.setLocalDescription(await pc.createOffer());
    if (done) return;
    const offer = pc.localDescription;
    const r = await post('offer', { type: offer.type, sdp: offer.sdp });
    if (done) return;
    if (r.status !== 200) throw refusal(r.status, r.text, true);
    let ans;
    try {
      ans = JSON.parse(r.text);
    } catch {
      ans = null;
    }
    if (!isObject(ans) || ans.type !== 'answer' || typeof ans.sdp !== 'string' || typeof ans.id !== 'string') {
      throw new LinkError(1006, 'rtc/offer: the answer is not an SDP answer');
    }
    await pc.setRemoteDescription({ type: 'answer', sdp: ans.sdp });
    if (done) return;
    id = ans.id;
    trickle();
  })().catch((err) => {
    if (err instanceof LinkError) fail(err.code, err.message);
    else fail(1006, `negotiation: ${/** @type {Error} */ (err)?.message ?? err}`);
  });

  /** Sends lines joined by "\n" on ch, in DataChannel messages of at most 64 KiB. @param {RTCDataChannel} ch @param {string[]} lines */
  const sendLines = (ch, lines) => {
    let msg = '';
    let size = 0;
    for (const line of lines) {
      const n = utf8Length(line);
      if (msg && size + 1 + n > MAX_RTC_MESSAGE) {
        ch.send(msg);
        msg = '';
        size = 0;
      }
      msg = msg ? msg + '\n' + line : line;
      size += msg === line ? n : 1 + n;
    }
    if (msg) ch.send(msg);
  };

  return {
    transport: 'rtc',
    send(frame) {
      if (done) return;
      /** @type {string[]} */
      const durable = [];
      /** @type {string[]} */
      const quick = [];
      const ephOK = welcomed && eph.readyState === 'open' && eph.bufferedAmount <= MAX_EPH_BUFFERED;
      for (const line of frame.split('\n')) {
        if (!line) continue;
        (ephOK && ephemeralLine(line) ? quick : durable).push(line);
      }
      try {
        if (durable.length > 0) sendLines(rel, durable);
        if (quick.length > 0) sendLines(eph, quick);
      } catch (err) {
        fail(1006, `send: ${/** @type {Error} */ (err)?.message ?? err}`);
      }
    },
    close() {
      if (!done) stop();
    },
  };
}

/**
 * The built-in transports: ws, sse and longpoll (best first: the order a
 * client tries them in by default), and rtc, used only when asked for.
 * @type {Readonly<Record<string, LinkFactory>>}
 */
const LINKS = Object.freeze({ ws: openWebSocket, sse: openSSE, longpoll: openLongPoll, rtc: openRTC });

/** The transports a client uses by default, in the order it tries them. */
export const TRANSPORTS = Object.freeze(['ws', 'sse', 'longpoll']);

// ---------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------

/**
 * @typedef {object} ConnectOptions
 * @property {string | URL} [url]  base URL of the realtime endpoints, such as
 *   "https://example.com/rt/". Default: "/rt/" on the page's origin.
 * @property {{[key: string]: JSONValue}} [user]  what other members see of you
 * @property {string[]} [transports]  transports to try, best first: "ws",
 *   "sse" (SSE+POST), "longpoll", "rtc" (DataChannels to the server).
 *   Default TRANSPORTS: ws, sse, longpoll in that order (not rtc).
 * @property {string} [transport]  force one transport: the same as
 *   transports: [transport], upgrade: false
 * @property {boolean} [upgrade]  while on a transport other than the first,
 *   try the better ones now and then and move the session to one that works.
 *   Default true.
 * @property {number} [upgradeDelay]  ms before the first upgrade attempt; it
 *   doubles after each failed one, up to 5 minutes. Default 10000.
 * @property {number} [sseTimeout]  ms an SSE stream may take to deliver its
 *   first event before it counts as buffered by a proxy (and the client
 *   falls back to long-polling). Default 5000.
 * @property {number} [minDelay]  first reconnect delay ceiling, ms. Default 500.
 * @property {number} [maxDelay]  largest reconnect delay, ms. Default 30000.
 * @property {number} [ackDelay]  how long acks are batched, ms. Default 100.
 * @property {number} [heartbeat]  ms of silence before a ping; twice this
 *   without any message closes the connection and reconnects. Default 25000.
 * @property {number} [maxMessageBytes]  largest message the client will send
 *   (the server's limit). Default 65536.
 * @property {string | false} [persist]  a storage key: keep the session and the
 *   offline queue under it (see Persistence in the module comment), so that a
 *   page reload resumes and sends what was not sent. Default false.
 * @property {Pick<Storage, 'getItem'|'setItem'|'removeItem'>} [storage]  where
 *   persist keeps them. Default globalThis.sessionStorage.
 * @property {any} [WebSocket]  WebSocket constructor. Default globalThis.WebSocket.
 * @property {any} [EventSource]  EventSource constructor. Default globalThis.EventSource.
 * @property {typeof fetch} [fetch]  fetch function. Default globalThis.fetch.
 * @property {any} [RTCPeerConnection]  for the rtc transport. Default
 *   globalThis.RTCPeerConnection.
 * @property {RTCConfiguration} [rtcConfiguration]  the rtc transport's
 *   PeerConnection configuration. Default {iceServers: []} (the server
 *   gives its own candidates; no STUN or TURN is needed to reach it).
 * @property {(c: RTCIceCandidateInit) => boolean} [rtcAllowCandidate]  which
 *   local candidates the rtc transport sends the server. Default: all UDP
 *   candidates.
 * @property {number} [rtcTimeout]  ms from the offer to the open channel;
 *   after it the rtc transport counts as unusable here. Default 15000.
 * @property {number} [rtcDisconnectedTimeout]  ms the rtc transport's ICE
 *   may stay "disconnected" before the connection counts as dropped.
 *   Default 5000.
 */

/**
 * Client states: "connecting" (first connection), "open" (welcome received),
 * "reconnecting" (waiting or dialling again, or moving to a better
 * transport), "closed" (for good).
 * @typedef {'connecting'|'open'|'reconnecting'|'closed'} ClientState
 */

/** An error the server sent, or a request that could not be carried out. */
export class RoomwireError extends Error {
  /**
   * @param {string} code  the server's error code, or "closed" / "too_large" / "left"
   * @param {string} message
   * @param {number} [v]  the document version the server reported
   */
  constructor(code, message, v) {
    super(message);
    this.name = 'RoomwireError';
    this.code = code;
    this.v = v;
  }
}

/**
 * Connects to a roomwire server. The client reconnects by itself until
 * close() or a terminal close code.
 * @param {ConnectOptions} [options]
 */
export function connect(options) {
  return new Client(options);
}

// Close codes (docs/PROTOCOL.md): 4000-4099 reconnect, 4100-4199 are terminal.
// 4004 ("replaced by a newer connection") means another connection now
// carries this session: reconnecting would just steal it back.
const CODE_REPLACED = 4004;
const isTerminal = (/** @type {number} */ code) => code === CODE_REPLACED || (code >= 4100 && code <= 4199);

// Frames the client sends stay well under the server's message limit.
const MAX_FRAME_CHARS = 16 * 1024;

// The longest wait between two upgrade attempts.
const MAX_UPGRADE_DELAY = 5 * 60 * 1000;

/**
 * What persist keeps (JSON, under the storage key).
 * @typedef {object} Saved
 * @property {1} v
 * @property {string} [sid]
 * @property {string} [token]
 * @property {number} [ack]
 * @property {[string, number]} cid  the client-id prefix and counter
 * @property {string[]} broken  transports found unusable here
 * @property {{[room: string]: Unsent}} rooms
 */

/**
 * A room's messages not yet confirmed by the server.
 * @typedef {object} Unsent
 * @property {{cid: string, ops: readonly PatchOp[]}[]} patches
 * @property {{cid: string, data: JSONValue}[]} pubs
 */

/**
 * Events: "state" {state, delay?, code?, reason?}; "welcome" {sid, resumed,
 * window, transport}; "transport" {transport, previous, why} where why is
 * "upgrade" or "fallback"; "close" {code, reason} (terminal); "error" {code,
 * message} (errors not tied to a room).
 */
export class Client extends Emitter {
  /** @type {ClientState} */
  state = 'connecting';
  /** Session id (after the first welcome). @type {string|undefined} */
  sid = undefined;
  /** Transport of the current connection, once welcomed. @type {string|undefined} */
  transport = undefined;
  /**
   * Traffic since the client was created: frames and messages each way, and
   * their payload bytes (UTF-8; without HTTP or WebSocket framing).
   * @type {{framesIn: number, framesOut: number, messagesIn: number, messagesOut: number, bytesIn: number, bytesOut: number}}
   */
  stats = { framesIn: 0, framesOut: 0, messagesIn: 0, messagesOut: 0, bytesIn: 0, bytesOut: 0 };

  #opts;
  /** @type {URL} */
  #base;
  #token = '';
  /** @type {Link|null} */
  #link = null;
  #welcomed = false;
  #attempt = 0;
  /** The transport to dial next. */
  #next = '';
  /** The transport of the last welcomed connection. @type {string|undefined} */
  #last = undefined;
  /** Transports that cannot carry the session here (buffered SSE, missing endpoint). @type {Set<string>} */
  #broken = new Set();
  /** @type {Link|null} */
  #probe = null;
  #upgrades = 0;
  /** @type {ReturnType<typeof setTimeout>|undefined} */
  #upgradeTimer;
  /** @type {ReturnType<typeof setTimeout>|undefined} */
  #retryTimer;
  /** @type {ReturnType<typeof setInterval>|undefined} */
  #beatTimer;
  #lastRecv = 0;
  #pinged = false;
  #lastSseq = 0;
  #ackedSseq = 0;
  /** @type {ReturnType<typeof setTimeout>|undefined} */
  #ackTimer;
  /** @type {string[]} */
  #outq = [];
  /** @type {Map<string, Room>} */
  #rooms = new Map();
  /** Rooms left while their leave may not have reached the server: name → cid. @type {Map<string, string>} */
  #leaving = new Map();
  #cidPrefix = randomId() + '-';
  #cidN = 0;
  /** @type {{key: string, storage: Pick<Storage, 'getItem'|'setItem'|'removeItem'>} | null} */
  #store = null;
  /** Unsent messages restored from storage, for rooms not joined yet. @type {Map<string, Unsent>} */
  #restored = new Map();
  #saveQueued = false;
  /** Pings waiting for their pong, by number. @type {Map<number, {t0: number, resolve: (ms: number) => void, reject: (e: Error) => void}>} */
  #pings = new Map();
  #pingN = 0;

  /** @param {ConnectOptions} [options] */
  constructor(options = {}) {
    super();
    const forced = options.transport;
    this.#opts = {
      transports: [...TRANSPORTS],
      upgrade: true,
      upgradeDelay: 10000,
      sseTimeout: 5000,
      minDelay: 500,
      maxDelay: 30000,
      ackDelay: 100,
      heartbeat: 25000,
      maxMessageBytes: 65536,
      ...options,
    };
    if (forced) {
      this.#opts.transports = [forced];
      this.#opts.upgrade = false;
    }
    const loc = globalThis.location;
    const url = options.url ?? (loc ? new URL('/rt/', loc.href) : undefined);
    if (!url) throw new Error('roomwire: options.url is required outside a browser page');
    this.#base = new URL(String(url), loc?.href);
    if (!this.#base.pathname.endsWith('/')) this.#base.pathname += '/';
    if (this.#opts.transports.length === 0) throw new Error('roomwire: no transport to use');
    for (const t of this.#opts.transports) {
      if (!Object.hasOwn(LINKS, t)) throw new Error(`roomwire: unknown transport ${JSON.stringify(t)}`);
    }
    if (options.persist) {
      const storage = options.storage ?? globalThis.sessionStorage;
      if (storage) this.#store = { key: String(options.persist), storage };
      this.#load();
    }
    this.#next = this.#order()[0];
    this.#dial();
  }

  /**
   * Joins a room (or returns the room already joined under that name).
   * @param {string} name
   * @param {RoomOptions} [options]
   * @returns {Room}
   */
  join(name, options) {
    if (this.state === 'closed') throw new RoomwireError('closed', 'roomwire: the client is closed');
    let room = this.#rooms.get(name);
    if (!room) {
      room = new Room(this, name, options ?? {}, {
        send: (m) => this.#send(m),
        cid: () => this.#cid(),
        isOpen: () => this.#welcomed,
        maxBytes: this.#opts.maxMessageBytes,
        forget: () => this.#forget(name),
        save: () => this.#save(),
      }, this.#restored.get(name));
      this.#restored.delete(name);
      this.#rooms.set(name, room);
      if (this.#welcomed) room._connected(false);
    }
    return room;
  }

  /** The rooms joined, by name. @returns {ReadonlyMap<string, Room>} */
  get rooms() {
    return this.#rooms;
  }

  /** Drops the current connection and reconnects at once, resuming the session. */
  reconnect() {
    if (this.state === 'closed') return;
    clearTimeout(this.#retryTimer);
    if (this.#link) this.#lost(1000, 'reconnect requested', true, true);
    else this.#dial();
  }

  /**
   * Closes the client for good: pending requests fail with code "closed".
   * The rooms are left and the session ended (bye) first, so other members
   * see this client go at once rather than when the resume window ends.
   * With persist, messages not yet confirmed stay in storage (the session
   * does not): a page that connects again with the same key sends them.
   */
  close() {
    if (this.state === 'closed') return;
    this.#saveNow(false);
    this.#store = null;
    const rooms = [...this.#rooms.values()];
    for (const room of rooms) this.#forget(room.name);
    this.#sendAck();
    if (this.#welcomed) this.#send({ t: 'bye' });
    this.#flushOut();
    this.#setState('closed');
    this.#teardown();
    const err = new RoomwireError('closed', 'roomwire: client closed');
    for (const room of rooms) room._closed(err);
    this.emit('close', { code: 1000, reason: 'closed by the client' });
  }

  /**
   * Measures the round trip to the server over the current connection:
   * sends a ping and resolves with the milliseconds until its pong. Rejects
   * if the connection is not open, drops first, or timeout ms pass.
   * @param {number} [timeout]
   * @returns {Promise<number>}
   */
  ping(timeout = 10000) {
    if (!this.#welcomed) return Promise.reject(new RoomwireError('closed', 'roomwire: not connected'));
    const n = ++this.#pingN;
    const now = () => globalThis.performance?.now() ?? Date.now();
    const p = new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pings.delete(n);
        reject(new RoomwireError('timeout', 'roomwire: no pong in time'));
      }, timeout);
      this.#pings.set(n, {
        t0: now(),
        resolve: (ms) => {
          clearTimeout(timer);
          resolve(ms);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
    });
    this.#send({ t: 'ping', data: { rw: n } });
    return /** @type {Promise<number>} */ (p);
  }

  /** A pong answers every ping up to the number it carries (pongs coalesce). @param {any} data */
  #pong(data) {
    const n = data?.rw;
    if (typeof n !== 'number') return;
    const t = globalThis.performance?.now() ?? Date.now();
    for (const [k, p] of this.#pings) {
      if (k > n) continue;
      this.#pings.delete(k);
      p.resolve(t - p.t0);
    }
  }

  #cid() {
    return this.#cidPrefix + (++this.#cidN).toString(36);
  }

  #forget(/** @type {string} */ name) {
    const room = this.#rooms.get(name);
    if (!room) return;
    this.#rooms.delete(name);
    this.#save();
    if (room._member) {
      const cid = this.#cid();
      this.#leaving.set(name, cid);
      if (this.#welcomed) this.#send({ t: 'leave', room: name, cid });
    }
  }

  /** @param {ClientState} state @param {object} [extra] */
  #setState(state, extra) {
    if (this.state === state && !extra) return;
    this.state = state;
    this.emit('state', { state, ...extra });
  }

  /** The transports to try, best first, without those found unusable (unless that leaves none). */
  #order() {
    const all = this.#opts.transports;
    const ok = all.filter((t) => !this.#broken.has(t));
    return ok.length > 0 ? ok : all;
  }

  /**
   * Opens a link of transport name whose callbacks reach this client only
   * while it is the client's current link.
   * @param {string} name
   * @param {(link: Link) => void} [onopen]  instead of sending hello
   * @param {(code: number, reason: string) => void} [onclose]  while not current
   */
  #open(name, onopen, onclose) {
    /** @type {Link|null} */
    let link = null;
    const mine = () => link !== null && link === this.#link;
    link = LINKS[name](this.#base, {
      onopen: () => {
        if (mine()) this.#onOpen();
        else if (link && onopen) onopen(link);
      },
      onframe: (frame) => mine() && this.#onFrame(frame),
      onclose: (code, reason) => {
        if (mine()) this.#lost(code, reason, false);
        else if (onclose) onclose(code, reason);
      },
      ack: () => this.#lastSseq,
    }, this.#opts);
    return link;
  }

  #dial() {
    clearTimeout(this.#retryTimer);
    const name = this.#next;
    try {
      this.#link = this.#open(name);
    } catch (err) {
      // Refused at once (no EventSource here, a bad URL, a content security
      // policy): try the next transport.
      const message = String(/** @type {Error} */ (err)?.message ?? err);
      this.#link = { transport: name, send() {}, close() {} };
      queueMicrotask(() => this.#lost(CODE_UNUSABLE, message, false));
      return;
    }
    this.#startBeat();
  }

  // The heartbeat also bounds the opening handshake and the wait for welcome.
  #startBeat() {
    this.#lastRecv = Date.now();
    this.#pinged = false;
    clearInterval(this.#beatTimer);
    this.#beatTimer = setInterval(() => this.#checkBeat(), Math.max(10, this.#opts.heartbeat / 2));
  }

  #onOpen() {
    /** @type {any} */
    const hello = { t: 'hello', user: this.#opts.user ?? {} };
    if (this.sid) hello.resume = { sid: this.sid, token: this.#token, ack: this.#lastSseq };
    this.#sendFrame(JSON.stringify(hello), 1);
    this.#lastRecv = Date.now();
  }

  #checkBeat() {
    const idle = Date.now() - this.#lastRecv;
    const beat = this.#opts.heartbeat;
    if (idle > 2 * beat) {
      this.#lost(4002, 'heartbeat timeout', true);
    } else if (idle > beat && !this.#pinged && this.#welcomed) {
      this.#pinged = true;
      this.#send({ t: 'ping' });
    }
  }

  /** @param {string} frame */
  #onFrame(frame) {
    this.#lastRecv = Date.now();
    this.#pinged = false;
    this.stats.framesIn++;
    this.stats.bytesIn += utf8Length(frame);
    for (const line of frame.split('\n')) {
      if (!line.trim()) continue;
      this.stats.messagesIn++;
      let msg;
      try {
        msg = JSON.parse(line);
      } catch {
        this.emit('error', { code: 'bad_request', message: 'undecodable server message' });
        continue;
      }
      if (!isObject(msg)) continue;
      this.#dispatch(msg);
      if (!this.#link) return; // the message closed the connection
    }
    // Requests go out after the whole frame: a rejoin's replay arrives in
    // the frame of its joined reply and may settle what is pending.
    for (const room of this.#rooms.values()) room._settle();
  }

  /** @param {any} msg */
  #dispatch(msg) {
    if (!this.#welcomed) {
      if (msg.t !== 'welcome') {
        this.#lost(4100, 'expected welcome', true);
        return;
      }
      this.#welcome(msg);
      return;
    }
    if (typeof msg.sseq === 'number') {
      if (msg.sseq <= this.#lastSseq) return; // delivered already
      this.#lastSseq = msg.sseq;
      this.#scheduleAck();
    }
    switch (msg.t) {
      case 'pong':
        this.#pong(msg.data);
        return;
      case 'close':
        this.#lost(msg.code ?? 4000, msg.reason ?? '', true);
        return;
    }
    if (typeof msg.room === 'string' && msg.room !== '') {
      if (msg.t === 'ok' && this.#leaving.get(msg.room) === msg.cid) {
        this.#leaving.delete(msg.room);
        return;
      }
      this.#rooms.get(msg.room)?._receive(msg);
      return;
    }
    if (msg.t === 'error') this.emit('error', { code: msg.code, message: msg.msg });
  }

  /** @param {any} msg */
  #welcome(msg) {
    const resumed = msg.resumed === true && msg.sid === this.sid;
    this.sid = msg.sid;
    this.#token = msg.token;
    const previous = this.#last;
    this.transport = this.#link?.transport;
    this.#last = this.transport;
    this.#welcomed = true;
    this.#attempt = 0;
    if (!resumed) {
      this.#lastSseq = 0;
      this.#ackedSseq = 0;
      this.#leaving.clear(); // a new session is in no room
    }
    this.#setState('open');
    if (previous && previous !== this.transport) {
      const order = this.#opts.transports;
      const why = order.indexOf(/** @type {string} */ (this.transport)) < order.indexOf(previous) ? 'upgrade' : 'fallback';
      this.emit('transport', { transport: this.transport, previous, why });
    }
    this.emit('welcome', { sid: this.sid, resumed, window: msg.window, transport: this.transport });
    for (const [name, cid] of this.#leaving) this.#send({ t: 'leave', room: name, cid });
    for (const room of this.#rooms.values()) room._connected(resumed);
    this.#save();
    this.#scheduleUpgrade();
  }

  /** Queues msg; everything queued in one task goes out in as few frames as possible. */
  #send(/** @type {object} */ msg) {
    if (!this.#welcomed) return;
    this.#outq.push(JSON.stringify(msg));
    if (this.#outq.length === 1) queueMicrotask(() => this.#flushOut());
  }

  #flushOut() {
    const q = this.#outq;
    this.#outq = [];
    if (!this.#link || !this.#welcomed) return;
    let frame = '';
    let n = 0;
    for (const m of q) {
      if (frame && frame.length + 1 + m.length > MAX_FRAME_CHARS) {
        this.#sendFrame(frame, n);
        frame = '';
        n = 0;
      }
      frame = frame ? frame + '\n' + m : m;
      n++;
    }
    if (frame) this.#sendFrame(frame, n);
  }

  /** @param {string} frame @param {number} messages */
  #sendFrame(frame, messages) {
    this.stats.framesOut++;
    this.stats.messagesOut += messages;
    this.stats.bytesOut += utf8Length(frame);
    this.#link?.send(frame);
  }

  #scheduleAck() {
    if (this.#ackTimer !== undefined) return;
    this.#ackTimer = setTimeout(() => {
      this.#ackTimer = undefined;
      this.#sendAck();
    }, this.#opts.ackDelay);
  }

  #sendAck() {
    clearTimeout(this.#ackTimer);
    this.#ackTimer = undefined;
    if (this.#lastSseq > this.#ackedSseq && this.#welcomed) {
      this.#ackedSseq = this.#lastSseq;
      this.#send({ t: 'ack', ack: this.#lastSseq });
      this.#save();
    }
  }

  // --- upgrading to a better transport ---------------------------------------

  /** While on a transport other than the best usable one, plans an attempt to move up. */
  #scheduleUpgrade() {
    clearTimeout(this.#upgradeTimer);
    if (!this.#opts.upgrade || !this.#welcomed) return;
    const order = this.#order();
    if (order.indexOf(/** @type {string} */ (this.transport)) <= 0) return;
    const ceiling = Math.min(MAX_UPGRADE_DELAY, this.#opts.upgradeDelay * 2 ** Math.min(this.#upgrades, 10));
    const delay = ceiling / 2 + (Math.random() * ceiling) / 2;
    this.#upgradeTimer = setTimeout(() => this.#tryUpgrade(), delay);
  }

  /**
   * Opens the best usable transport beside the current link. If it opens,
   * the session moves to it: the current link is closed and the new one says
   * hello with resume and the last sseq processed, so the server sends
   * everything after it, once (docs/protocol-http.md, "Resume across
   * transports"). If it fails, the current link carries on untouched.
   */
  #tryUpgrade() {
    if (!this.#welcomed || this.#probe) return;
    const order = this.#order();
    const target = order[0];
    if (order.indexOf(/** @type {string} */ (this.transport)) <= 0) return;
    /** @type {ReturnType<typeof setTimeout>|undefined} */
    let timer;
    /** @type {Link|null} */
    let probe = null;
    const failed = () => {
      clearTimeout(timer);
      probe?.close();
      if (this.#probe !== probe) return;
      this.#probe = null;
      this.#upgrades++;
      this.#scheduleUpgrade();
    };
    try {
      probe = this.#open(target, (link) => {
        if (this.#probe !== link) return;
        clearTimeout(timer);
        this.#probe = null;
        this.#adopt(link);
      }, failed);
    } catch {
      this.#upgrades++;
      this.#scheduleUpgrade();
      return;
    }
    this.#probe = probe;
    timer = setTimeout(failed, this.#opts.sseTimeout);
  }

  /** Moves the session to link, which has just opened (see #tryUpgrade). @param {Link} link */
  #adopt(link) {
    this.#sendAck();
    this.#flushOut();
    this.#teardown();
    for (const room of this.#rooms.values()) room._disconnected();
    this.#upgrades = 0;
    this.#link = link;
    this.#next = link.transport;
    this.#setState('reconnecting', { delay: 0, code: 1000, reason: `moving to ${link.transport}` });
    this.#startBeat();
    this.#onOpen();
  }

  // --- persistence -------------------------------------------------------------

  #load() {
    if (!this.#store) return;
    /** @type {any} */
    let s;
    try {
      s = JSON.parse(this.#store.storage.getItem(this.#store.key) ?? 'null');
    } catch {
      s = null;
    }
    if (!isObject(s) || s.v !== 1) return;
    if (typeof s.sid === 'string' && typeof s.token === 'string' && Number.isSafeInteger(s.ack)) {
      this.sid = s.sid;
      this.#token = s.token;
      this.#lastSseq = s.ack;
      this.#ackedSseq = s.ack;
    }
    if (Array.isArray(s.cid) && typeof s.cid[0] === 'string' && Number.isSafeInteger(s.cid[1])) {
      // The same prefix, so that a resent message keeps its cid and a new
      // one never reuses an old cid.
      [this.#cidPrefix, this.#cidN] = s.cid;
    }
    if (Array.isArray(s.broken)) for (const t of s.broken) if (this.#opts.transports.includes(t)) this.#broken.add(t);
    if (isObject(s.rooms)) {
      for (const name of Object.keys(s.rooms)) {
        const u = s.rooms[name];
        try {
          this.#restored.set(name, {
            patches: (Array.isArray(u.patches) ? u.patches : []).filter((p) => typeof p?.cid === 'string').map((p) => ({ cid: p.cid, ops: normalizePatch(p.ops) })),
            pubs: (Array.isArray(u.pubs) ? u.pubs : []).filter((p) => typeof p?.cid === 'string').map((p) => ({ cid: p.cid, data: freezeJSON(p.data) })),
          });
        } catch {
          // a damaged entry: drop it
        }
      }
    }
  }

  /** Saves the state soon (once per task, however often it changes). */
  #save() {
    if (!this.#store || this.#saveQueued) return;
    this.#saveQueued = true;
    queueMicrotask(() => {
      this.#saveQueued = false;
      this.#saveNow(true);
    });
  }

  /** @param {boolean} session  keep the session too */
  #saveNow(session) {
    if (!this.#store) return;
    /** @type {Saved} */
    const s = { v: 1, cid: [this.#cidPrefix, this.#cidN], broken: [...this.#broken], rooms: {} };
    if (session && this.sid) Object.assign(s, { sid: this.sid, token: this.#token, ack: this.#ackedSseq });
    for (const [name, u] of this.#restored) s.rooms[name] = u;
    for (const room of this.#rooms.values()) {
      const u = room._unsent();
      if (u.patches.length > 0 || u.pubs.length > 0) s.rooms[room.name] = u;
    }
    try {
      this.#store.storage.setItem(this.#store.key, JSON.stringify(s));
    } catch {
      // storage full or disabled: persistence is best effort
    }
  }

  // --- losing the connection ---------------------------------------------------

  /** Stops the link and every timer. */
  #teardown() {
    const link = this.#link;
    this.#link = null;
    this.#welcomed = false;
    this.#outq = [];
    clearInterval(this.#beatTimer);
    clearTimeout(this.#ackTimer);
    clearTimeout(this.#retryTimer);
    clearTimeout(this.#upgradeTimer);
    this.#ackTimer = undefined;
    link?.close();
    const probe = this.#probe;
    this.#probe = null;
    probe?.close();
    const err = new RoomwireError('closed', 'roomwire: the connection dropped');
    for (const p of this.#pings.values()) p.reject(err);
    this.#pings.clear();
  }

  /**
   * The connection is gone (closed by the server, the network or us).
   * @param {number} code
   * @param {string} reason
   * @param {boolean} byUs  we decided to drop it: close the link
   * @param {boolean} [now]  reconnect at once, without backoff
   */
  #lost(code, reason, byUs, now = false) {
    if (byUs && this.#link) this.#flushOut();
    const failed = this.#link?.transport ?? this.#next;
    const wasWelcomed = this.#welcomed;
    this.#teardown();
    this.transport = undefined;
    for (const room of this.#rooms.values()) room._disconnected();
    if (this.state === 'closed') return;
    if (isTerminal(code)) {
      this.#saveNow(false);
      this.#store = null;
      this.#setState('closed');
      for (const room of this.#rooms.values()) room._closed(new RoomwireError('closed', `roomwire: closed by the server: ${code} ${reason}`));
      this.#rooms.clear();
      this.emit('close', { code, reason });
      return;
    }
    if (code === CODE_UNUSABLE && this.#opts.transports.length > 1) {
      this.#broken.add(failed);
      this.#save();
    }
    if (now) {
      this.#setState('reconnecting', { delay: 0, code, reason });
      this.#dial();
      return;
    }
    // A transport that failed before its welcome: try the next one at once.
    // Once every transport has failed, start again from the best, after a
    // backoff. A connection that worked and dropped: the same transport
    // again, after a backoff.
    const order = this.#order();
    const i = order.indexOf(failed);
    if (!wasWelcomed && i >= 0 && i + 1 < order.length) {
      this.#next = order[i + 1];
      this.#setState('reconnecting', { delay: 0, code, reason });
      this.#retryTimer = setTimeout(() => this.#dial(), 0);
      return;
    }
    this.#next = wasWelcomed && i >= 0 ? failed : order[0];
    // Exponential backoff with full jitter: a random delay up to a ceiling
    // that doubles with every failed attempt.
    const ceiling = Math.min(this.#opts.maxDelay, this.#opts.minDelay * 2 ** this.#attempt);
    const delay = Math.random() * ceiling;
    this.#attempt++;
    this.#setState('reconnecting', { delay, code, reason });
    this.#retryTimer = setTimeout(() => this.#dial(), delay);
  }
}

/** The length of s in UTF-8. @param {string} s */
function utf8Length(s) {
  let n = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) i++; // a surrogate pair: 4 bytes for 2 units
    else if (c >= 0x800) n += 2;
    else if (c >= 0x80) n += 1;
    if (c >= 0xd800 && c <= 0xdbff) n += 2;
  }
  return n;
}

function randomId() {
  const b = new Uint8Array(6);
  if (globalThis.crypto?.getRandomValues) globalThis.crypto.getRandomValues(b);
  else for (let i = 0; i < b.length; i++) b[i] = Math.floor(Math.random() * 256);
  return Array.from(b, (x) => x.toString(36).padStart(2, '0')).join('');
}

// ---------------------------------------------------------------------------
// Rooms
// ---------------------------------------------------------------------------

/**
 * @typedef {object} RoomOptions
 * @property {((ops: readonly PatchOp[], doc: JSONValue, err: RoomwireError) => PatchOp[] | null) | null} [rebase]
 *   turns a patch the server rejected (codes "conflict" and "test_failed")
 *   into one to send instead, given the confirmed document; null or an
 *   exception drops the patch. Default lenientRebase; null never rebases.
 */

/**
 * A member of a room.
 * @typedef {object} Member
 * @property {string} sid
 * @property {{[key: string]: JSONValue}} user
 * @property {string} transport
 * @property {boolean} self  this client's own session
 */

/**
 * What the room needs of its client.
 * @typedef {object} RoomPort
 * @property {(msg: object) => void} send
 * @property {() => string} cid
 * @property {() => boolean} isOpen
 * @property {number} maxBytes
 * @property {() => void} forget
 * @property {() => void} save  the unsent messages changed
 */

/**
 * @typedef {object} Pending
 * @property {string} cid
 * @property {readonly PatchOp[]} ops
 * @property {(r: {seq: number|undefined, v: number, rebased: boolean}) => void} resolve
 * @property {(e: RoomwireError) => void} reject
 * @property {boolean} rebased
 */

/**
 * One joined room: its document, members, events and ephemeral values.
 * Create it with client.join.
 *
 * Events: "joined" {mode, seq, v}; "change" {doc, version, pending, cause}
 * where cause is "snapshot", "remote", "local", "ack" or "rebase"; "members"
 * (the member list); "presence" {event, member}; "event" {from, data, seq,
 * self}; "eph" {from, key, data}; "signal" {from, data} and "relay" {from,
 * key, data} (messages another member addressed to this one); "rebased"
 * {ops, rebased, code, message}; "rejected" {ops, code, message}; "error"
 * {code, message}.
 */
export class Room extends Emitter {
  /** @type {string} */
  name;
  /** Resolves at the first joined reply; rejects if the join is refused. @type {Promise<void>} */
  ready;

  #client;
  #port;
  #rebase;
  /** @type {() => void} */
  #readyResolve = () => {};
  /** @type {(e: RoomwireError) => void} */
  #readyReject = () => {};

  // The confirmed state: only server messages change it.
  #hasState = false;
  /** @type {JSONValue} */
  #doc = null;
  #v = 0;
  #seq = 0;
  // A snapshot was asked for (the replica diverged or has a gap): until it
  // arrives, entries are not applied and no patch is sent.
  #awaiting = false;

  // The view: the confirmed document plus the pending patches that apply.
  /** @type {JSONValue} */
  #view = null;
  #dirty = '';
  /** @type {Pending[]} */
  #pending = [];
  /** @type {Pending|null} */
  #inflight = null;
  // Patches sent and not yet acknowledged, kept after a rejection too: an ok
  // can still come for one that was retried across a reconnect.
  /** @type {Map<string, readonly PatchOp[]>} */
  #sent = new Map();

  /** @type {Map<string, {data: JSONValue, resolve: (r: {seq: number}) => void, reject: (e: RoomwireError) => void, sent: boolean}>} */
  #pubs = new Map();

  #joined = false; // a member on the server, on the current session
  /** @type {string|null} */
  #joinCid = null;
  #gone = false;
  /** @type {Map<string, Member>} */
  #members = new Map();
  /** @type {ReturnType<typeof setTimeout>|undefined} */
  #retryTimer;

  /**
   * @param {Client} client
   * @param {string} name
   * @param {RoomOptions} options
   * @param {RoomPort} port
   * @param {Unsent} [unsent]  messages a previous page did not get confirmed
   */
  constructor(client, name, options, port, unsent) {
    super();
    this.name = name;
    this.#client = client;
    this.#port = port;
    this.#rebase = options.rebase === undefined ? lenientRebase : options.rebase;
    this.ready = new Promise((resolve, reject) => {
      this.#readyResolve = resolve;
      this.#readyReject = reject;
    });
    this.ready.catch(() => {}); // reported through "error" too
    // Restored messages go out again with their original cids once the room
    // has its document: the server applies each cid once, so one that was
    // committed before the reload is acknowledged, not applied twice.
    const noop = () => {};
    for (const p of unsent?.patches ?? []) this.#pending.push({ cid: p.cid, ops: p.ops, resolve: noop, reject: noop, rebased: false });
    for (const p of unsent?.pubs ?? []) this.#pubs.set(p.cid, { data: p.data, resolve: noop, reject: noop, sent: false });
  }

  /**
   * The document as this client sees it: confirmed plus pending local
   * patches; undefined until the room has joined.
   * @returns {JSONValue|undefined}
   */
  get doc() {
    return this.#hasState ? this.#view : undefined;
  }

  /**
   * The document as the server has confirmed it.
   * @returns {JSONValue|undefined}
   */
  get confirmed() {
    return this.#hasState ? this.#doc : undefined;
  }

  /** The confirmed document version. */
  get version() {
    return this.#v;
  }

  /** The last room seq received. */
  get seq() {
    return this.#seq;
  }

  /** Local patches not yet confirmed. */
  get pending() {
    return this.#pending.length;
  }

  /** Whether the room has received its document. */
  get synced() {
    return this.#hasState && !this.#awaiting;
  }

  /** The members, sorted by session id. @returns {Member[]} */
  get members() {
    return [...this.#members.values()].sort((a, b) => (a.sid < b.sid ? -1 : a.sid > b.sid ? 1 : 0));
  }

  /** @internal The messages not yet confirmed, for persistence. @returns {Unsent} */
  _unsent() {
    return {
      patches: this.#pending.map((p) => ({ cid: p.cid, ops: p.ops })),
      pubs: [...this.#pubs].map(([cid, p]) => ({ cid, data: p.data })),
    };
  }

  /** @internal Whether the server may count us a member (a leave is due). */
  get _member() {
    return this.#joined || this.#joinCid !== null;
  }

  /**
   * Changes the document. The patch shows in room.doc at once and is sent
   * when the connection allows. The promise resolves when the server has
   * applied it (possibly rebased: see RoomOptions.rebase) and rejects with a
   * RoomwireError when it was dropped. A patch that does not apply to the
   * current view is refused at once.
   * @param {PatchOp[]} ops
   * @returns {Promise<{seq: number|undefined, v: number, rebased: boolean}>}
   */
  patch(ops) {
    /** @type {Promise<any>} */
    let p;
    try {
      if (this.#gone) throw new RoomwireError('left', 'roomwire: not in the room');
      if (!this.#hasState) throw new RoomwireError('not_member', 'roomwire: the room has no document yet (await room.ready)');
      const norm = normalizePatch(ops);
      if (JSON.stringify(norm).length > this.#port.maxBytes - 256) throw new RoomwireError('too_large', 'roomwire: patch over the message size limit');
      const view = applyPatch(this.#view, norm);
      p = new Promise((resolve, reject) => {
        this.#pending.push({ cid: this.#port.cid(), ops: norm, resolve, reject, rebased: false });
      });
      this.#view = view;
      this.#changed('local');
      this.#port.save();
      this.#flush();
    } catch (err) {
      p = Promise.reject(err instanceof PatchError ? new RoomwireError(err.code, err.message) : err);
    }
    p.catch(() => {}); // a caller that ignores the result still sees "rejected"
    return p;
  }

  /**
   * Publishes a durable event to the other members. Resolves with its room
   * seq once the server has ordered it.
   * @param {JSONValue} data
   * @returns {Promise<{seq: number}>}
   */
  publish(data) {
    /** @type {Promise<{seq: number}>} */
    let p;
    try {
      if (this.#gone) throw new RoomwireError('left', 'roomwire: not in the room');
      const frozen = freezeJSON(data);
      if (JSON.stringify(frozen).length > this.#port.maxBytes - 256) throw new RoomwireError('too_large', 'roomwire: event over the message size limit');
      const cid = this.#port.cid();
      p = new Promise((resolve, reject) => this.#pubs.set(cid, { data: frozen, resolve, reject, sent: false }));
      this.#port.save();
      this.#flush();
    } catch (err) {
      p = Promise.reject(err instanceof PatchError ? new RoomwireError('bad_request', err.message) : err);
    }
    p.catch(() => {});
    return p;
  }

  /**
   * Sends an ephemeral value (cursor, typing): latest value per key wins, it
   * is not queued while offline. Returns false when it could not be sent.
   * @param {string} key
   * @param {JSONValue} data
   */
  ephemeral(key, data) {
    if (this.#gone || !this.#joined || !this.#port.isOpen()) return false;
    this.#port.send({ t: 'eph', room: this.name, key, data });
    return true;
  }

  /**
   * Sends a WebRTC signal (an SDP or an ICE candidate; data is opaque to the
   * server) to one other member. Durable for the recipient. Returns false
   * when it could not be sent (not connected or not joined).
   * @param {string} to  the member's session id
   * @param {JSONValue} data
   */
  signal(to, data) {
    if (this.#gone || !this.#joined || !this.#port.isOpen()) return false;
    this.#port.send({ t: 'signal', room: this.name, to, data });
    return true;
  }

  /**
   * Sends data to one other member through the server: durable and in
   * order without key, latest-wins ephemeral with key (and dropped over the
   * rate cap). Returns false when it could not be sent.
   * @param {string} to  the member's session id
   * @param {JSONValue} data
   * @param {string} [key]
   */
  relay(to, data, key) {
    if (this.#gone || !this.#joined || !this.#port.isOpen()) return false;
    /** @type {any} */
    const m = { t: 'relay', room: this.name, to, data };
    if (key !== undefined) m.key = key;
    this.#port.send(m);
    return true;
  }

  /**
   * Direct DataChannels to the other members, for ephemeral values, with
   * the server relay as fallback. See Peers.
   * @param {PeersOptions} [options]
   * @returns {Peers}
   */
  peers(options) {
    return new Peers(this, options ?? {});
  }

  /** Leaves the room. Pending patches and events fail with code "left". */
  leave() {
    if (this.#gone) return;
    this.#port.forget();
    this._closed(new RoomwireError('left', 'roomwire: left the room'));
  }

  // --- called by the client ------------------------------------------------

  /** @internal A session is ready: resumed, or new (rejoin). @param {boolean} resumed */
  _connected(resumed) {
    if (this.#gone) return;
    if (!resumed) this.#joined = false;
    if (!this.#joined || this.#joinCid !== null) this.#sendJoin();
    this.#flush();
  }

  /** @internal The connection dropped: what was sent may have been lost. */
  _disconnected() {
    clearTimeout(this.#retryTimer);
    this.#inflight = null;
    for (const pub of this.#pubs.values()) pub.sent = false;
  }

  /** @internal The room is over (left, or the client closed). @param {RoomwireError} err */
  _closed(err) {
    if (this.#gone) return;
    this.#gone = true;
    this.#joined = false;
    clearTimeout(this.#retryTimer);
    for (const p of this.#pending) p.reject(err);
    for (const pub of this.#pubs.values()) pub.reject(err);
    this.#pending = [];
    this.#pubs.clear();
    this.#inflight = null;
    this.#readyReject(err);
  }

  /** @internal End of a frame: emit one change and send what is due. */
  _settle() {
    this.#port.save();
    if (this.#dirty) {
      const cause = this.#dirty;
      this.#dirty = '';
      this.#changed(cause);
    }
    this.#flush();
  }

  /** @internal One server message for this room. @param {any} msg */
  _receive(msg) {
    if (this.#gone) return;
    switch (msg.t) {
      case 'joined':
        return this.#onJoined(msg);
      case 'patch':
        return this.#onPatch(msg);
      case 'event':
        return this.#onEvent(msg);
      case 'ok':
        return this.#onOK(msg);
      case 'error':
        return this.#onError(msg);
      case 'presence':
        return this.#onPresence(msg);
      case 'eph':
        if (this.#hasState) this.emit('eph', { from: msg.from, key: msg.key, data: msg.data });
        return;
      case 'signal':
        this.emit('signal', { from: msg.from, data: msg.data });
        return;
      case 'relay':
        this.emit('relay', { from: msg.from, key: msg.key, data: msg.data });
        return;
    }
  }

  // --- internals -----------------------------------------------------------

  #sendJoin() {
    if (!this.#port.isOpen()) return;
    /** @type {any} */
    const m = { t: 'join', room: this.name, cid: (this.#joinCid = this.#port.cid()) };
    if (this.#hasState && !this.#awaiting) m.since = this.#seq;
    this.#port.send(m);
  }

  /**
   * Asks for a fresh snapshot: the replica can no longer follow the log. A
   * join already in flight may be a replay; #onJoined asks again after it.
   */
  #resync(/** @type {string} */ why) {
    if (this.#awaiting) return;
    this.#awaiting = true;
    this.emit('error', { code: 'resync', message: `roomwire: resynchronising room ${this.name}: ${why}` });
    if (this.#joinCid === null) this.#sendJoin();
  }

  /** @param {any} msg */
  #onJoined(msg) {
    if (msg.cid && msg.cid === this.#joinCid) this.#joinCid = null;
    this.#joined = true;
    this.#members = new Map();
    for (const m of msg.members ?? []) this.#members.set(m.sid, this.#member(m));
    if (msg.mode === 'snapshot' || msg.mode === 'resync') {
      try {
        this.#doc = freezeJSON(msg.data ?? {});
      } catch {
        this.#doc = freezeJSON({});
      }
      this.#v = msg.v ?? 0;
      this.#seq = msg.seq ?? 0;
      this.#hasState = true;
      this.#awaiting = false;
      this.#touch('snapshot');
    } else if (!this.#hasState) {
      this.#awaiting = true; // a replay is no use without a document
    } else if (msg.seq > this.#seq || (msg.seq === this.#seq && msg.v !== undefined && msg.v !== this.#v)) {
      this.#resync('replay does not match the replica');
    }
    // Replay: the entries after msg.seq follow; those we have are skipped.
    if (this.#awaiting && this.#joinCid === null) this.#sendJoin();
    if (!this.#hasState) return;
    this.#readyResolve();
    this.emit('joined', { mode: msg.mode, seq: this.#seq, v: this.#v });
    this.emit('members', this.members);
  }

  /**
   * Moves the confirmed state past one log entry. Returns false for an entry
   * that is already in the replica, or that cannot be applied (then a
   * snapshot is requested).
   * @param {number} seq
   * @param {number} v
   * @param {readonly PatchOp[]|null} ops  null for an event
   */
  #advance(seq, v, ops) {
    if (!this.#hasState || this.#awaiting || seq <= this.#seq) return false;
    if (seq !== this.#seq + 1) {
      this.#resync(`gap in room seq: ${seq} after ${this.#seq}`);
      return false;
    }
    if (ops) {
      if (v !== this.#v + 1) {
        this.#resync(`version ${v} after ${this.#v}`);
        return false;
      }
      try {
        this.#doc = applyPatch(this.#doc, ops);
      } catch (err) {
        this.#resync(`a committed patch does not apply: ${/** @type {Error} */ (err).message}`);
        return false;
      }
      this.#v = v;
      this.#touch('remote');
    }
    this.#seq = seq;
    return true;
  }

  /** @param {any} msg */
  #onPatch(msg) {
    const own = msg.cid ? this.#pending.findIndex((p) => p.cid === msg.cid) : -1;
    if (own >= 0) {
      // Our own patch, committed by an earlier session of ours (seen in a replay).
      this.#confirm(own, msg.seq, msg.v);
      return;
    }
    this.#advance(msg.seq, msg.v, msg.ops ?? []);
  }

  /** @param {any} msg */
  #onEvent(msg) {
    const pub = msg.cid ? this.#pubs.get(msg.cid) : undefined;
    if (pub) {
      this.#pubs.delete(msg.cid);
      pub.resolve({ seq: msg.seq });
    }
    const fresh = msg.seq > this.#seq;
    this.#advance(msg.seq, msg.v, null);
    if (fresh && this.#hasState) this.emit('event', { from: msg.from, data: msg.data, seq: msg.seq, self: !!pub });
  }

  /** @param {any} msg */
  #onOK(msg) {
    if (msg.cid === this.#joinCid) return; // not sent for joins, but harmless
    const pub = this.#pubs.get(msg.cid);
    if (pub) {
      this.#pubs.delete(msg.cid);
      if (typeof msg.seq === 'number') this.#advance(msg.seq, msg.v, null);
      pub.resolve({ seq: msg.seq });
      return;
    }
    const i = this.#pending.findIndex((p) => p.cid === msg.cid);
    if (i >= 0) {
      this.#confirm(i, msg.seq, msg.v);
      return;
    }
    const ops = this.#sent.get(msg.cid);
    if (!this.#hasState || typeof msg.seq !== 'number') return;
    if (ops) {
      // A patch we had given up on was applied after all (a retry raced
      // its rejection): it is part of the log, so apply it.
      this.#sent.delete(msg.cid);
      this.#advance(msg.seq, msg.v, ops);
    } else if (msg.seq > this.#seq) {
      this.#resync('acknowledgement of an unknown patch');
    }
  }

  /** Our pending patch i is committed at seq, v. */
  #confirm(/** @type {number} */ i, /** @type {number} */ seq, /** @type {number} */ v) {
    const [p] = this.#pending.splice(i, 1);
    if (this.#inflight === p) this.#inflight = null;
    this.#sent.delete(p.cid);
    // seq at or below ours: the snapshot or replay already holds it.
    this.#advance(seq, v, p.ops);
    this.#touch('ack');
    p.resolve({ seq, v, rebased: p.rebased });
  }

  /** @param {any} msg */
  #onError(msg) {
    const err = new RoomwireError(msg.code ?? 'internal', msg.msg ?? 'roomwire: error', msg.v);
    if (msg.cid && msg.cid === this.#joinCid) {
      this.#joinCid = null;
      if (msg.code === 'rate_limited') {
        this.#retryLater(() => this.#sendJoin());
        return;
      }
      this.emit('error', { code: err.code, message: err.message });
      this.#port.forget();
      this._closed(err);
      return;
    }
    const pub = msg.cid ? this.#pubs.get(msg.cid) : undefined;
    if (pub) {
      if (msg.code === 'rate_limited' || msg.code === 'not_member') {
        pub.sent = false;
        this.#retryOrRejoin(msg.code);
        return;
      }
      this.#pubs.delete(msg.cid);
      pub.reject(err);
      return;
    }
    const i = msg.cid ? this.#pending.findIndex((p) => p.cid === msg.cid) : -1;
    if (i < 0) {
      if (!msg.cid) this.emit('error', { code: err.code, message: err.message });
      return;
    }
    const p = this.#pending[i];
    if (this.#inflight === p) this.#inflight = null;
    if (msg.code === 'rate_limited' || msg.code === 'not_member') {
      this.#retryOrRejoin(msg.code);
      return;
    }
    // Rejected. The confirmed document is current up to the rejection
    // (everything before it arrived first): rebase the patch on it, or drop it.
    let next = null;
    if ((err.code === 'conflict' || err.code === 'test_failed') && this.#rebase && this.#hasState) {
      try {
        next = this.#rebase(p.ops, this.#doc, err);
        if (next) next = /** @type {PatchOp[]} */ ([...normalizeOrEmpty(next)]);
      } catch {
        next = null;
      }
    }
    if (next && next.length > 0) {
      this.#pending[i] = { ...p, cid: this.#port.cid(), ops: Object.freeze(next), rebased: true };
    } else {
      this.#pending.splice(i, 1);
    }
    this.#touch('rebase');
    if (!next) {
      this.emit('rejected', { ops: p.ops, code: err.code, message: err.message });
      p.reject(err);
      return;
    }
    this.emit('rebased', { ops: p.ops, rebased: next, code: err.code, message: err.message });
    // Rebased to nothing: what it wanted is already true.
    if (next.length === 0) p.resolve({ seq: undefined, v: this.#v, rebased: true });
  }

  /** Retries what is pending after a rate limit, or rejoins after not_member. */
  #retryOrRejoin(/** @type {string} */ code) {
    if (code === 'not_member') {
      this.#joined = false;
      if (this.#joinCid === null) this.#sendJoin();
      return;
    }
    this.#retryLater(() => {
      for (const pub of this.#pubs.values()) pub.sent = false;
      this.#flush();
    });
  }

  #retryLater(/** @type {() => void} */ fn) {
    clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(() => {
      if (!this.#gone) fn();
    }, 1000);
  }

  /** @param {any} msg */
  #onPresence(msg) {
    if (!this.#hasState || !msg.member) return;
    const m = this.#member(msg.member);
    if (msg.event === 'join') this.#members.set(m.sid, m);
    else if (msg.event === 'leave') this.#members.delete(m.sid);
    else return;
    this.emit('presence', { event: msg.event, member: m });
    this.emit('members', this.members);
  }

  /** @returns {Member} */
  #member(/** @type {any} */ m) {
    return Object.freeze({ sid: m.sid, user: m.user ?? {}, transport: m.transport ?? '', self: m.sid === this.#client.sid });
  }

  /** Rebuilds the view: confirmed document plus every pending patch that applies. */
  #recompute() {
    let view = this.#doc;
    for (const p of this.#pending) {
      try {
        view = applyPatch(view, p.ops);
      } catch {
        // Does not apply to the new state; the server will say what happens to it.
      }
    }
    this.#view = view;
  }

  /**
   * The confirmed document or the pending list changed: the view follows at
   * once (listeners may read it); "change" is emitted once, at the end of
   * the frame.
   */
  #touch(/** @type {string} */ cause) {
    this.#recompute();
    this.#dirty = this.#dirty === 'snapshot' ? 'snapshot' : cause;
  }

  #changed(/** @type {string} */ cause) {
    this.emit('change', { doc: this.#view, version: this.#v, pending: this.#pending.length, cause });
  }

  /** Sends what is due: unsent events, and the oldest pending patch if none is in flight. */
  #flush() {
    if (this.#gone || !this.#joined || !this.#port.isOpen()) return;
    for (const [cid, pub] of this.#pubs) {
      if (pub.sent) continue;
      pub.sent = true;
      this.#port.send({ t: 'pub', room: this.name, cid, data: pub.data });
    }
    if (this.#inflight || this.#awaiting || !this.#hasState || this.#pending.length === 0) return;
    const p = this.#pending[0];
    this.#inflight = p;
    this.#sent.set(p.cid, p.ops);
    if (this.#sent.size > 256) this.#sent.delete(this.#sent.keys().next().value ?? '');
    this.#port.send({ t: 'patch', room: this.name, cid: p.cid, base: this.#v, ops: p.ops });
  }
}

/** @param {unknown} ops */
function normalizeOrEmpty(ops) {
  return Array.isArray(ops) && ops.length === 0 ? [] : normalizePatch(ops);
}

// ---------------------------------------------------------------------------
// Peers: direct DataChannels between members of a room
// ---------------------------------------------------------------------------

/**
 * @typedef {object} PeersOptions
 * @property {RTCConfiguration} [configuration]  for every RTCPeerConnection
 *   (ICE servers). Default: no ICE servers (host candidates only).
 * @property {(c: RTCIceCandidateInit) => boolean} [allowCandidate]  filters
 *   the candidates signalled to peers and accepted from them. Default: all.
 * @property {number} [connectTimeout]  ms the direct path may take to open;
 *   after it the attempt is abandoned and the peer stays on the relay.
 *   Default 10000.
 * @property {any} [RTCPeerConnection]  constructor. Default globalThis.RTCPeerConnection.
 */

/**
 * How a peer's messages travel: "direct" over the peers' own DataChannel, or
 * "relay" through the server.
 * @typedef {'direct'|'relay'} PeerPath
 */

/**
 * A peer's path and what the direct attempt is doing: "connecting",
 * "open", "failed" (the attempt timed out or ICE failed: relay from now on),
 * "unsupported" (no WebRTC here).
 * @typedef {object} PeerState
 * @property {string} sid
 * @property {PeerPath} path
 * @property {'connecting'|'open'|'failed'|'unsupported'} direct
 */

const LABEL_LINK = 'roomwire-link';
const LABEL_LINK_EPH = 'roomwire-link-eph';

/**
 * Ephemeral values (cursors, game state) exchanged with every other member
 * of a room, peer to peer: over a direct DataChannel when one opens, through
 * the server relay ("relay" messages with a key) otherwise, transparently to
 * the caller. Create it with room.peers().
 *
 * The direct channels are negotiated with "signal" messages through the
 * room, as the Go package signaling does, and speak its frames: the member
 * whose session id sorts first offers; signal data is {type: "offer" |
 * "answer" | "candidate" | "bye", pc, sdp?, candidate?}; the channels are
 * "roomwire-link" (reliable) and "roomwire-link-eph" (unordered, no
 * retransmissions); an ephemeral value is the frame {k: "e", n, key, d} on
 * the ephemeral channel or as a relay's data. Only ephemeral values are
 * carried: send durable data with room.publish.
 *
 * Events: "message" {from, key, data, direct}; "path" PeerState (a peer's
 * path or direct state changed).
 */
export class Peers extends Emitter {
  #room;
  #opts;
  /** @type {Map<string, PeerLink>} */
  #links = new Map();
  /** @type {(() => void)[]} */
  #offs = [];
  #closed = false;

  /**
   * @param {Room} room
   * @param {PeersOptions} options
   */
  constructor(room, options) {
    super();
    this.#room = room;
    this.#opts = { connectTimeout: 10000, ...options };
    this.#offs.push(
      room.on('members', () => this.#sync()),
      room.on('joined', () => this.#reset()),
      room.on('signal', (m) => this.#link(m.from)?.signal(m.data)),
      room.on('relay', (m) => {
        if (m.key !== undefined) this.#link(m.from)?.frame(m.data, false);
      }),
    );
    this.#sync();
  }

  /** Every peer's state, by session id. @returns {PeerState[]} */
  get states() {
    return [...this.#links.values()].map((l) => l.state());
  }

  /**
   * Sends an ephemeral value under key to every other member: directly where
   * the channel is open, by relay otherwise. Latest value per key wins; a
   * value may be lost.
   * @param {string} key
   * @param {JSONValue} data
   */
  send(key, data) {
    for (const l of this.#links.values()) l.send(key, data);
  }

  /** Closes every direct channel (saying bye to each peer). */
  close() {
    if (this.#closed) return;
    this.#closed = true;
    for (const off of this.#offs) off();
    for (const l of this.#links.values()) l.close(true);
    this.#links.clear();
  }

  /** The session changed (a rejoin): negotiate afresh. */
  #reset() {
    for (const l of this.#links.values()) l.close(false);
    this.#links.clear();
    this.#sync();
  }

  #sync() {
    if (this.#closed) return;
    const members = this.#room.members;
    const self = members.find((m) => m.self)?.sid;
    if (!self) return;
    const others = new Set(members.filter((m) => !m.self).map((m) => m.sid));
    for (const [sid, l] of this.#links) {
      if (!others.has(sid) || l.self !== self) {
        l.close(false);
        this.#links.delete(sid);
        this.emit('gone', { sid });
      }
    }
    for (const sid of others) this.#link(sid);
  }

  /** The link to sid, created on demand. @param {string} sid */
  #link(sid) {
    if (this.#closed || typeof sid !== 'string') return undefined;
    let l = this.#links.get(sid);
    if (l) return l;
    const self = this.#room.members.find((m) => m.self)?.sid;
    if (!self || sid === self) return undefined;
    l = new PeerLink(self, sid, this.#opts, {
      signal: (data) => this.#room.signal(sid, data),
      relay: (key, frame) => this.#room.relay(sid, frame, key),
      deliver: (key, data, direct) => this.emit('message', { from: sid, key, data, direct }),
      changed: (st) => this.emit('path', st),
    });
    this.#links.set(sid, l);
    l.start();
    return l;
  }
}

/**
 * One peer: its RTCPeerConnection (one attempt at a time, numbered pc) and
 * the relay fallback. See Peers.
 */
class PeerLink {
  /** @type {any} */
  #pc = null;
  #n = 0; // attempt number (the offerer's)
  /** @type {RTCDataChannel|null} */
  #eph = null;
  /** @type {RTCDataChannel|null} */
  #rel = null;
  #remoteSet = false;
  /** @type {RTCIceCandidateInit[]} */
  #queued = [];
  /** @type {'connecting'|'open'|'failed'|'unsupported'} */
  #direct = 'connecting';
  /** @type {ReturnType<typeof setTimeout>|undefined} */
  #timer;
  #sent = 0; // frames sent, numbered
  /** Highest frame number received per key (the ephemeral channel is unordered). @type {Map<string, number>} */
  #seen = new Map();
  #closed = false;
  #opts;
  #io;

  /**
   * @param {string} self
   * @param {string} peer
   * @param {PeersOptions} opts
   * @param {{signal: (d: any) => void, relay: (key: string, frame: any) => void, deliver: (key: string, data: any, direct: boolean) => void, changed: (s: PeerState) => void}} io
   */
  constructor(self, peer, opts, io) {
    this.self = self;
    this.peer = peer;
    this.#opts = opts;
    this.#io = io;
  }

  /** @returns {PeerState} */
  state() {
    return { sid: this.peer, path: this.#eph?.readyState === 'open' ? 'direct' : 'relay', direct: this.#direct };
  }

  #changed() {
    if (!this.#closed) this.#io.changed(this.state());
  }

  start() {
    const PC = this.#opts.RTCPeerConnection ?? globalThis.RTCPeerConnection;
    if (!PC) {
      this.#direct = 'unsupported';
      this.#changed();
      return;
    }
    this.#changed();
    if (this.self < this.peer) this.#offer();
  }

  async #offer() {
    const n = ++this.#n;
    const pc = this.#newPC(n);
    this.#attach(pc.createDataChannel(LABEL_LINK, { ordered: true }));
    this.#attach(pc.createDataChannel(LABEL_LINK_EPH, { ordered: false, maxRetransmits: 0 }));
    try {
      await pc.setLocalDescription(await pc.createOffer());
      if (pc !== this.#pc) return;
      this.#io.signal({ type: 'offer', pc: n, sdp: pc.localDescription.sdp });
    } catch {
      this.#fail(pc);
    }
  }

  /** @param {number} n */
  #newPC(n) {
    this.#closePC();
    const PC = this.#opts.RTCPeerConnection ?? globalThis.RTCPeerConnection;
    const pc = new PC(this.#opts.configuration ?? {});
    this.#pc = pc;
    this.#n = n;
    this.#remoteSet = false;
    this.#queued = [];
    this.#direct = 'connecting';
    const allow = this.#opts.allowCandidate ?? (() => true);
    pc.onicecandidate = (/** @type {RTCPeerConnectionIceEvent} */ e) => {
      if (pc !== this.#pc) return;
      const c = e.candidate ? e.candidate.toJSON() : null;
      if (c && !allow(c)) return;
      this.#io.signal({ type: 'candidate', pc: n, candidate: c });
    };
    pc.ondatachannel = (/** @type {RTCDataChannelEvent} */ e) => {
      if (pc === this.#pc) this.#attach(e.channel);
    };
    pc.onconnectionstatechange = () => {
      if (pc === this.#pc && pc.connectionState === 'failed') this.#fail(pc);
    };
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      if (pc === this.#pc && this.#eph?.readyState !== 'open') this.#fail(pc);
    }, this.#opts.connectTimeout ?? 10000);
    return pc;
  }

  /** @param {RTCDataChannel} ch */
  #attach(ch) {
    if (ch.label === LABEL_LINK_EPH) this.#eph = ch;
    else if (ch.label === LABEL_LINK) this.#rel = ch;
    else return;
    ch.onopen = () => {
      if (ch === this.#eph) {
        clearTimeout(this.#timer);
        this.#direct = 'open';
        this.#changed();
      }
    };
    ch.onclose = () => {
      if (ch === this.#eph && !this.#closed) {
        this.#eph = null;
        this.#direct = 'failed';
        this.#changed();
      }
    };
    ch.onmessage = (/** @type {MessageEvent} */ e) => {
      if (typeof e.data !== 'string') return;
      try {
        this.frame(JSON.parse(e.data), true);
      } catch {
        // not a frame
      }
    };
  }

  /** The direct attempt is over: relay from now on. @param {any} pc */
  #fail(pc) {
    if (pc !== this.#pc) return;
    this.#closePC();
    this.#direct = 'failed';
    this.#changed();
  }

  #closePC() {
    clearTimeout(this.#timer);
    const pc = this.#pc;
    this.#pc = null;
    this.#eph = null;
    this.#rel = null;
    try {
      pc?.close();
    } catch {
      // closed already
    }
  }

  /** A signal from the peer. @param {any} d */
  async signal(d) {
    if (this.#closed || !isObject(d) || typeof d.pc !== 'number') return;
    try {
      switch (d.type) {
        case 'offer': {
          if (this.self < this.peer || d.pc < this.#n || typeof d.sdp !== 'string') return;
          const pc = this.#newPC(d.pc);
          this.#changed();
          await pc.setRemoteDescription({ type: 'offer', sdp: d.sdp });
          if (pc !== this.#pc) return;
          this.#remoteSet = true;
          await this.#drain(pc);
          await pc.setLocalDescription(await pc.createAnswer());
          if (pc !== this.#pc) return;
          this.#io.signal({ type: 'answer', pc: d.pc, sdp: pc.localDescription.sdp });
          return;
        }
        case 'answer': {
          const pc = this.#pc;
          if (!pc || d.pc !== this.#n || this.#remoteSet || typeof d.sdp !== 'string') return;
          await pc.setRemoteDescription({ type: 'answer', sdp: d.sdp });
          if (pc !== this.#pc) return;
          this.#remoteSet = true;
          await this.#drain(pc);
          return;
        }
        case 'candidate': {
          if (d.pc !== this.#n || !this.#pc) return;
          const c = d.candidate ?? null;
          if (c && !(this.#opts.allowCandidate ?? (() => true))(c)) return;
          // Candidates that arrive before the remote description wait for it.
          if (!this.#remoteSet) this.#queued.push(c);
          else await this.#pc.addIceCandidate(c ?? undefined);
          return;
        }
        case 'bye':
          if (d.pc === this.#n) this.#fail(this.#pc);
          return;
      }
    } catch {
      this.#fail(this.#pc);
    }
  }

  /** @param {any} pc */
  async #drain(pc) {
    for (const c of this.#queued.splice(0)) {
      if (pc !== this.#pc) return;
      await pc.addIceCandidate(c ?? undefined);
    }
  }

  /** @param {string} key @param {JSONValue} data */
  send(key, data) {
    if (this.#closed) return;
    const frame = { k: 'e', n: ++this.#sent, key, d: data };
    const eph = this.#eph;
    if (eph?.readyState === 'open') {
      try {
        eph.send(JSON.stringify(frame));
        return;
      } catch {
        // closing: relay it
      }
    }
    this.#io.relay(key, frame);
  }

  /** A frame from the peer, direct or relayed. @param {any} f @param {boolean} direct */
  frame(f, direct) {
    if (this.#closed || !isObject(f) || f.k !== 'e' || typeof f.key !== 'string' || typeof f.n !== 'number') return;
    const last = this.#seen.get(f.key) ?? 0;
    if (f.n <= last && f.n > last - 1000) return; // older than what we have (a restart numbers from 1 again)
    this.#seen.set(f.key, f.n);
    this.#io.deliver(f.key, f.d, direct);
  }

  /** @param {boolean} bye  tell the peer */
  close(bye) {
    if (this.#closed) return;
    if (bye && this.#pc) this.#io.signal({ type: 'bye', pc: this.#n });
    this.#closed = true;
    this.#closePC();
  }
}
