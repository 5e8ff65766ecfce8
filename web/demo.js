// The demo page: join a room, see its members, edit its JSON document as a
// key/value table, send events. Everything goes through roomwire.js.

import { connect, formatPointer } from './roomwire.js';

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
const el = (/** @type {string} */ tag, /** @type {string} */ cls = '', /** @type {string} */ text = '') => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text) e.textContent = text;
  return e;
};

/** @type {import('./roomwire.js').Client | null} */
let client = null;
/** @type {import('./roomwire.js').Room | null} */
let room = null;
/** @type {(() => void)[]} */
let unsubscribe = [];
/** @type {any} */
let shown = undefined; // the document last rendered, to highlight what changed
let myName = '';

// --- join / leave -----------------------------------------------------------

const nameInput = /** @type {HTMLInputElement} */ ($('name'));
const roomInput = /** @type {HTMLInputElement} */ ($('room'));
nameInput.value = localStorage.getItem('roomwire.name') || `guest-${Math.floor(100 + Math.random() * 900)}`;
if (location.hash.length > 1) roomInput.value = decodeURIComponent(location.hash.slice(1));

$('join-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const name = nameInput.value.trim();
  const roomName = roomInput.value.trim();
  if (!name || !roomName) return;
  localStorage.setItem('roomwire.name', name);
  enter(name, roomName);
});

$('leave').addEventListener('click', () => {
  room?.leave();
  room = null;
  for (const off of unsubscribe) off();
  unsubscribe = [];
  history.replaceState(null, '', location.pathname);
  $('workspace').hidden = true;
  $('lobby').hidden = false;
});

$('drop').addEventListener('click', () => {
  note('sys', 'Connection cut on purpose: resuming…');
  client?.reconnect();
});

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
    client = connect({ user: { name } });
    client.on('state', renderStatus);
    client.on('welcome', (w) => note('sys', w.resumed ? 'Session resumed: nothing was lost.' : 'Connected.'));
    client.on('close', (c) => note('bad', `Connection closed for good (${c.code} ${c.reason}). Reload to start again.`));
    renderStatus({ state: client.state });
  }
  for (const off of unsubscribe) off();
  room = client.join(roomName);
  shown = undefined;
  $('log').replaceChildren();
  unsubscribe = [
    room.on('change', renderDoc),
    room.on('members', renderMembers),
    room.on('presence', (p) => note('sys', `${who(p.member)} ${p.event === 'join' ? 'joined' : 'left'} (${p.member.transport}).`)),
    room.on('event', (ev) => note('chat', `${nameOf(ev.from)}: ${typeof ev.data?.text === 'string' ? ev.data.text : JSON.stringify(ev.data)}`)),
    room.on('eph', onEphemeral),
    room.on('rebased', (r) => note('warn', r.rebased.length
      ? `Your edit met a concurrent change (${r.code}) and was rebased: ${describe(r.ops)} became ${describe(r.rebased)}.`
      : `Your edit met a concurrent change (${r.code}); it was already in effect, nothing left to send.`)),
    room.on('rejected', (r) => note('bad', `Your edit ${describe(r.ops)} was rejected (${r.code}): ${r.message}`)),
    room.on('error', (e) => note('warn', e.message)),
  ];
  room.ready.then(
    () => note('sys', `Joined #${roomName}.`),
    (err) => note('bad', `Could not join: ${err.message}`),
  );
  history.replaceState(null, '', `#${encodeURIComponent(roomName)}`);
  $('room-name').textContent = roomName;
  $('lobby').hidden = true;
  $('workspace').hidden = false;
  renderDoc({ doc: room.doc, version: room.version, pending: room.pending });
  renderMembers(room.members);
  /** @type {HTMLInputElement} */ ($('kv-key')).focus();
}

// --- status -----------------------------------------------------------------

let lastState = '';

/** @param {{state: string, delay?: number}} s */
function renderStatus(s) {
  const pill = $('status');
  pill.dataset.state = s.state;
  const labels = /** @type {Record<string, string>} */ ({
    connecting: 'connecting…',
    open: `connected · ${client?.transport ?? ''}`,
    reconnecting: s.delay !== undefined ? `reconnecting in ${(s.delay / 1000).toFixed(1)} s…` : 'reconnecting…',
    closed: 'disconnected',
  });
  pill.textContent = labels[s.state] ?? s.state;
  if (s.state === 'reconnecting' && lastState === 'open') note('warn', 'Connection lost; reconnecting.');
  lastState = s.state;
}

// --- members ----------------------------------------------------------------

/** @param {import('./roomwire.js').Member[]} members */
function renderMembers(members) {
  const list = $('members');
  list.replaceChildren(
    ...members.map((m) => {
      const li = el('li');
      const name = String(m.user?.name ?? m.sid);
      const avatar = el('span', 'avatar', name.slice(0, 1).toUpperCase());
      avatar.style.background = colour(m.sid);
      const label = el('span', 'who', name);
      if (m.self) label.append(el('span', 'you', ' (you)'));
      li.append(avatar, label, el('span', 'transport', m.transport));
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

/** @param {string} s */
function colour(s) {
  let h = 0;
  for (const c of s) h = (h * 31 + c.charCodeAt(0)) % 360;
  return `hsl(${h} 55% 48%)`;
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
      const isPending = !confirmed || typeof confirmed !== 'object' || JSON.stringify(confirmed[key]) !== JSON.stringify(value);
      if (isPending && c.pending > 0) tr.className = 'pending';
      else if (c.cause === 'remote' && shown && JSON.stringify(shown[key]) !== JSON.stringify(value)) tr.className = 'flash';
      tr.append(
        el('td', 'key', key),
        el('td', typeof value === 'string' ? 'value string' : 'value', typeof value === 'string' ? value : JSON.stringify(value)),
      );
      const actions = el('td', 'actions');
      const edit = el('button', 'small', 'Edit');
      edit.type = 'button';
      edit.addEventListener('click', () => {
        /** @type {HTMLInputElement} */ ($('kv-key')).value = key;
        const input = /** @type {HTMLInputElement} */ ($('kv-value'));
        input.value = typeof value === 'string' ? value : JSON.stringify(value);
        input.focus();
        input.select();
      });
      const del = el('button', 'small danger', 'Delete');
      del.type = 'button';
      del.addEventListener('click', () => send([{ op: 'remove', path: formatPointer([key]) }]));
      actions.append(edit, del);
      tr.append(actions);
      return tr;
    }),
  );
  const empty = $('kv-empty');
  empty.hidden = rows.length > 0 || doc === undefined;
  empty.textContent = obj ? 'The document is empty. Add a first key below.' : 'The document is not an object: see the raw view. Setting a key replaces it.';
  $('raw').textContent = doc === undefined ? 'loading…' : JSON.stringify(doc, null, 2);
  $('version').textContent = `v${c.version}`;
  const pending = c.pending ? ` · ${c.pending} pending local edit${c.pending > 1 ? 's' : ''}` : ' · all edits confirmed';
  $('raw-meta').textContent = room ? `version ${c.version} · room seq ${room.seq}${pending}` : '';
  shown = obj;
}

$('kv-form').addEventListener('submit', (e) => {
  e.preventDefault();
  if (!room) return;
  const keyInput = /** @type {HTMLInputElement} */ ($('kv-key'));
  const valueInput = /** @type {HTMLInputElement} */ ($('kv-value'));
  const key = keyInput.value.trim();
  if (!key) return;
  const value = parseValue(valueInput.value);
  const doc = room.doc;
  let ops;
  if (doc !== null && typeof doc === 'object' && !Array.isArray(doc)) {
    const exists = Object.prototype.hasOwnProperty.call(doc, key);
    ops = [{ op: exists ? 'replace' : 'add', path: formatPointer([key]), value }];
  } else {
    ops = [{ op: 'replace', path: '', value: { [key]: value } }];
  }
  send(/** @type {any} */ (ops));
  valueInput.value = '';
  keyInput.focus();
  keyInput.select();
  room.ephemeral('editing', null);
});

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

/** @param {import('./roomwire.js').PatchOp[]} ops */
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
  return ops.map((o) => `${o.op} ${o.path || '(whole document)'}`).join(', ') || 'nothing';
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

// --- activity log -------------------------------------------------------------

/**
 * @param {'sys'|'chat'|'warn'|'bad'} kind
 * @param {string} text
 */
function note(kind, text) {
  const log = $('log');
  const li = el('li', kind);
  const t = new Date();
  li.append(el('time', '', t.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' })), el('span', 'text', text));
  log.prepend(li);
  while (log.children.length > 200) log.lastElementChild?.remove();
}

// Leaving the page leaves the room at once (others would otherwise see us
// until the resume window ends).
addEventListener('pagehide', (e) => {
  if (!e.persisted) client?.close();
});

if (location.hash.length > 1) {
  // A shared link (#room): join at once under the remembered name.
  enter(nameInput.value, roomInput.value);
}
