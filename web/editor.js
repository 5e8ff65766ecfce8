// The collaborative JSON editor: join a room, see its members, edit its
// JSON document as a key/value table, send events. Edits of an existing key
// are guarded by a test of the value this page showed, so a concurrent edit
// of the same key is detected by the server and rebased here, in view.

import { connect, formatPointer } from './roomwire.js';
import { $, el, params, userName, rememberName, transportChoice, bindTransportSelect, bindStatus, note as addNote, avatar, TRANSPORT_NAMES } from './common.js';

/** @param {string|undefined} t */
const tname = (t) => TRANSPORT_NAMES[t ?? ''] ?? t ?? '';

/** @typedef {import('./roomwire.js').PatchOp} PatchOp */

/** @type {import('./roomwire.js').Client | null} */
let client = null;
/** @type {import('./roomwire.js').Room | null} */
let room = null;
/** @type {(() => void)[]} */
let unsubscribe = [];
/** @type {any} */
let shown = undefined; // the document last rendered, to highlight what changed
let myName = '';

bindTransportSelect();

/**
 * Rebases a rejected edit on the new document, keeping its intent: a guarded
 * replace becomes a replace guarded by the value now there (the last writer
 * wins, having seen the other's value), or an add if the key has gone; a
 * remove of a key already gone is dropped.
 * @param {readonly PatchOp[]} ops
 * @param {any} doc
 * @returns {PatchOp[] | null}
 */
function keepIntent(ops, doc) {
  /** @type {PatchOp[]} */
  const out = [];
  for (const op of ops) {
    if (op.op === 'test') continue;
    let current;
    let exists = true;
    try {
      current = readPointer(doc, op.path);
    } catch {
      exists = false;
    }
    if (op.op === 'remove') {
      if (exists) out.push({ op: 'test', path: op.path, value: current }, op);
    } else if (op.op === 'replace' || op.op === 'add') {
      if (exists && op.path !== '') out.push({ op: 'test', path: op.path, value: current }, { op: 'replace', path: op.path, value: op.value });
      else out.push({ op: 'add', path: op.path, value: op.value });
    } else {
      return null;
    }
  }
  return out;
}

/** @param {any} doc @param {string} path */
function readPointer(doc, path) {
  let cur = doc;
  for (const raw of path.split('/').slice(1)) {
    const tok = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (cur === null || typeof cur !== 'object' || !Object.prototype.hasOwnProperty.call(cur, tok)) throw new Error('missing');
    cur = cur[tok];
  }
  return cur;
}

// --- join / leave -----------------------------------------------------------

const nameInput = /** @type {HTMLInputElement} */ ($('name'));
const roomInput = /** @type {HTMLInputElement} */ ($('room'));
nameInput.value = userName();
const wanted = params.get('room') || (location.hash.length > 1 ? decodeURIComponent(location.hash.slice(1)) : '');
if (wanted) roomInput.value = wanted;

$('join-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const name = nameInput.value.trim();
  const roomName = roomInput.value.trim();
  if (!name || !roomName) return;
  rememberName(name);
  enter(name, roomName);
});

$('leave').addEventListener('click', () => {
  room?.leave();
  room = null;
  for (const off of unsubscribe) off();
  unsubscribe = [];
  history.replaceState(null, '', location.pathname + location.search.replace(/([?&])room=[^&]*&?/, '$1').replace(/[?&]$/, ''));
  $('workspace').hidden = true;
  $('lobby').hidden = false;
});

$('drop').addEventListener('click', () => {
  note('sys', 'Connection cut on purpose: resuming…');
  client?.reconnect();
});

$('conflict').addEventListener('click', () => stageConflict());

/**
 * @param {string} name
 * @param {string} roomName
 */
function enter(name, roomName) {
  if (client && name !== myName) {
    client.close(); // the name travels in hello: a new name needs a new session
    client = null;
  }
  myName = name;
  if (!client) {
    client = connect({ user: { name }, persist: 'roomwire.editor', ...transportChoice() });
    bindStatus(client);
    client.on('welcome', (w) => note('sys', w.resumed ? `Session resumed over ${tname(w.transport)}: nothing was lost.` : `Connected over ${tname(w.transport)}.`));
    client.on('transport', (t) => note('sys', `Moved from ${tname(t.previous)} to ${tname(t.transport)} (${t.why}).`));
    client.on('close', (c) => note('bad', `Connection closed for good (${c.code} ${c.reason}). Reload to start again.`));
  }
  for (const off of unsubscribe) off();
  room = client.join(roomName, { rebase: keepIntent });
  shown = undefined;
  $('log').replaceChildren();
  unsubscribe = [
    room.on('change', renderDoc),
    room.on('members', renderMembers),
    room.on('presence', (p) => note('sys', `${who(p.member)} ${p.event === 'join' ? 'joined' : 'left'} (${tname(p.member.transport)}).`)),
    room.on('event', (ev) => note('chat', `${nameOf(ev.from)}: ${typeof ev.data?.text === 'string' ? ev.data.text : JSON.stringify(ev.data)}`)),
    room.on('eph', onEphemeral),
    room.on('rebased', (r) => note('warn', r.rebased.length
      ? `Conflict: your edit ${describe(r.ops)} met a concurrent change (${r.code}); rebased on the new version as ${describe(r.rebased)}.`
      : `Conflict: your edit ${describe(r.ops)} met a concurrent change (${r.code}); it was already in effect, nothing left to send.`, 'conflict')),
    room.on('rejected', (r) => note('bad', `Your edit ${describe(r.ops)} was rejected (${r.code}): ${r.message}`)),
    room.on('error', (e) => note('warn', e.message)),
  ];
  room.ready.then(
    () => note('sys', `Joined #${roomName} at version ${room?.version}.`),
    (err) => note('bad', `Could not join: ${err.message}`),
  );
  const q = new URLSearchParams(location.search);
  q.set('room', roomName);
  history.replaceState(null, '', `?${q}`);
  $('room-name').textContent = roomName;
  $('lobby').hidden = true;
  $('workspace').hidden = false;
  renderDoc({ doc: room.doc, version: room.version, pending: room.pending });
  renderMembers(room.members);
  /** @type {HTMLInputElement} */ ($('kv-key')).focus();
}

// --- members ----------------------------------------------------------------

/** @param {import('./roomwire.js').Member[]} members */
function renderMembers(members) {
  $('members').replaceChildren(
    ...members.map((m) => {
      const li = el('li');
      const name = String(m.user?.name ?? m.sid);
      const label = el('span', 'who', name);
      if (m.self) label.append(el('span', 'you', ' (you)'));
      li.append(avatar(name, m.sid), label, el('span', `transport t-${m.transport}`, tname(m.transport)));
      return li;
    }),
  );
  $('member-count').textContent = String(members.length);
}

/** @param {string} sid */
function nameOf(sid) {
  const m = room?.members.find((x) => x.sid === sid);
  return m ? who(m) : 'someone';
}

/** @param {{user?: any, sid: string, self?: boolean}} m */
function who(m) {
  return m.self ? 'you' : String(m.user?.name ?? m.sid);
}

// --- the document -----------------------------------------------------------

/** @param {{doc: any, version: number, pending: number, cause?: string}} c */
function renderDoc(c) {
  const doc = c.doc;
  const obj = doc !== null && typeof doc === 'object' && !Array.isArray(doc) ? doc : null;
  const body = /** @type {HTMLTableSectionElement} */ (document.querySelector('#kv tbody'));
  const confirmed = room?.confirmed;
  const rows = obj ? Object.keys(obj).sort() : [];
  body.replaceChildren(
    ...rows.map((key) => {
      const value = obj[key];
      const tr = el('tr');
      tr.dataset.key = key;
      const isPending = !confirmed || typeof confirmed !== 'object' || JSON.stringify(confirmed[key]) !== JSON.stringify(value);
      if (isPending && c.pending > 0) tr.className = 'pending';
      else if ((c.cause === 'remote' || c.cause === 'rebase') && shown && JSON.stringify(shown[key]) !== JSON.stringify(value)) tr.className = 'flash';
      tr.append(
        el('td', 'key', key),
        el('td', typeof value === 'string' ? 'value string' : 'value', typeof value === 'string' ? value : JSON.stringify(value)),
      );
      const actions = el('td', 'actions');
      const edit = el('button', 'small', 'Edit');
      edit.setAttribute('type', 'button');
      edit.addEventListener('click', () => {
        /** @type {HTMLInputElement} */ ($('kv-key')).value = key;
        const input = /** @type {HTMLInputElement} */ ($('kv-value'));
        input.value = typeof value === 'string' ? value : JSON.stringify(value);
        input.focus();
        input.select();
      });
      const del = el('button', 'small danger', 'Delete');
      del.setAttribute('type', 'button');
      del.addEventListener('click', () => send([{ op: 'test', path: formatPointer([key]), value }, { op: 'remove', path: formatPointer([key]) }]));
      actions.append(edit, del);
      tr.append(actions);
      return tr;
    }),
  );
  const empty = $('kv-empty');
  empty.hidden = rows.length > 0 || doc === undefined;
  empty.textContent = obj ? 'The document is empty. Add a first key below.' : 'The document is not an object: see the raw view. Setting a key replaces it.';
  $('raw').textContent = doc === undefined ? 'loading…' : JSON.stringify(doc, null, 2);
  $('version').textContent = `version ${c.version}`;
  const pending = $('pending');
  pending.textContent = c.pending ? `${c.pending} unconfirmed edit${c.pending > 1 ? 's' : ''}` : 'all edits confirmed';
  pending.dataset.pending = String(c.pending);
  $('raw-meta').textContent = room ? `version ${c.version} · room seq ${room.seq}` : '';
  shown = obj;
}

$('kv-form').addEventListener('submit', (e) => {
  e.preventDefault();
  if (!room) return;
  const keyInput = /** @type {HTMLInputElement} */ ($('kv-key'));
  const valueInput = /** @type {HTMLInputElement} */ ($('kv-value'));
  const key = keyInput.value.trim();
  if (!key) return;
  send(setKey(key, parseValue(valueInput.value)));
  valueInput.value = '';
  keyInput.focus();
  keyInput.select();
  room.ephemeral('editing', null);
});

/**
 * The patch that sets key to value, guarded by the value this page shows.
 * @param {string} key
 * @param {any} value
 * @returns {PatchOp[]}
 */
function setKey(key, value) {
  const doc = room?.doc;
  const path = formatPointer([key]);
  if (doc !== null && typeof doc === 'object' && !Array.isArray(doc)) {
    if (!Object.prototype.hasOwnProperty.call(doc, key)) return [{ op: 'add', path, value }];
    return [{ op: 'test', path, value: /** @type {any} */ (doc)[key] }, { op: 'replace', path, value }];
  }
  return [{ op: 'replace', path: '', value: { [key]: value } }];
}

/** Text that parses as JSON is JSON (42, true, [1,2], {"a":1}); anything else is a string. */
function parseValue(/** @type {string} */ text) {
  const t = text.trim();
  if (t === '') return '';
  try {
    return JSON.parse(t);
  } catch {
    return text;
  }
}

/** @param {PatchOp[]} ops */
function send(ops) {
  if (!room) return;
  const before = room.pending;
  const done = room.patch(ops);
  const queued = room.pending > before; // else refused locally, before sending
  done.then(
    (r) => {
      if (r.rebased && r.seq !== undefined) note('sys', `Rebased edit confirmed as version ${r.v}.`);
    },
    (err) => {
      // A server rejection has its "rejected" note already.
      if (!queued) note('bad', `Not sent: ${err.message}`);
    },
  );
}

/** @param {readonly any[]} ops */
function describe(ops) {
  return ops.filter((o) => o.op !== 'test').map((o) => `${o.op} ${o.path || '(whole document)'}${'value' in o ? ' = ' + JSON.stringify(o.value) : ''}`).join(', ') || 'nothing';
}

// --- a staged conflict --------------------------------------------------------

/**
 * A second client in this page ("a bot") and this page set the key "race"
 * at the same moment, each guarded by the value both saw. The server takes
 * one first; the other's guard fails, and it is rebased on the winner's
 * value, in view in both activity logs.
 */
async function stageConflict() {
  if (!room || !client) return;
  const button = /** @type {HTMLButtonElement} */ ($('conflict'));
  button.disabled = true;
  const r = room;
  const bot = connect({ user: { name: 'bot' }, ...transportChoice() });
  try {
    const botRoom = bot.join(r.name, { rebase: keepIntent });
    await Promise.all([botRoom.ready, r.ready]);
    botRoom.on('rebased', (e) => note('warn', `Conflict: the bot's edit ${describe(e.ops)} met yours (${e.code}); rebased as ${describe(e.rebased)}.`, 'conflict'));
    await r.patch(setKey('race', 'start'));
    // Until the bot has seen "start" too, its guard would be wrong.
    while (JSON.stringify(/** @type {any} */ (botRoom.doc)?.race) !== '"start"') await new Promise((ok) => botRoom.on('change', ok));
    note('sys', 'Staged: you and the bot both change "race" from "start" now.');
    const mine = r.patch(setKey('race', `${myName} was here`));
    const theirs = botRoom.patch([{ op: 'test', path: '/race', value: 'start' }, { op: 'replace', path: '/race', value: 'bot was here' }]);
    await Promise.allSettled([mine, theirs]);
  } catch (err) {
    note('bad', `Conflict demo failed: ${/** @type {Error} */ (err).message}`);
  } finally {
    bot.close();
    button.disabled = false;
  }
}

// --- ephemeral: who is editing ---------------------------------------------

/** @type {Map<string, {key: string, timer: ReturnType<typeof setTimeout>}>} */
const editing = new Map();

let lastEph = 0;
$('kv-value').addEventListener('input', () => {
  const now = Date.now();
  if (now - lastEph < 300) return;
  lastEph = now;
  room?.ephemeral('editing', { key: /** @type {HTMLInputElement} */ ($('kv-key')).value.trim() });
});

/** @param {{from: string, key: string, data: any}} e */
function onEphemeral(e) {
  if (e.key !== 'editing') return;
  clearTimeout(editing.get(e.from)?.timer);
  if (e.data === null) editing.delete(e.from);
  else editing.set(e.from, { key: String(e.data?.key ?? ''), timer: setTimeout(() => { editing.delete(e.from); renderEditing(); }, 3000) });
  renderEditing();
}

function renderEditing() {
  const parts = [...editing].map(([sid, v]) => `${nameOf(sid)} is editing${v.key ? ` “${v.key}”` : ''}…`);
  $('typing').textContent = parts.join(' ');
}

// --- events -----------------------------------------------------------------

$('say-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const input = /** @type {HTMLInputElement} */ ($('say'));
  const text = input.value.trim();
  if (!room || !text) return;
  room.publish({ text }).then(
    () => note('chat', `you: ${text}`),
    (err) => note('bad', `Event not sent: ${err.message}`),
  );
  input.value = '';
});

/**
 * @param {'sys'|'chat'|'warn'|'bad'} kind
 * @param {string} text
 * @param {string} [tag]  a class for tests and styling
 */
function note(kind, text, tag) {
  addNote($('log'), kind, text);
  if (tag) $('log').firstElementChild?.classList.add(tag);
}

// Leaving the page ends the session at once (others would otherwise see us
// until the resume window ends); unconfirmed edits stay in session storage.
addEventListener('pagehide', (e) => {
  if (!e.persisted) client?.close();
});

if (wanted) enter(nameInput.value, roomInput.value);
