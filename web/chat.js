// Chat with presence: who is here and on which transport, who is typing.
// Messages are appended to the room document (so newcomers get the
// history); typing and each member's current transport are ephemeral values.

import { connect } from './roomwire.js';
import { $, el, params, userName, transportChoice, bindTransportSelect, bindStatus, avatar, TRANSPORT_NAMES } from './common.js';

const MAX_MESSAGES = 100;
const TYPING_TTL = 4000;

bindTransportSelect();
const name = userName();
const roomName = params.get('room') || 'chat';
$('me').textContent = name;
$('room-name').textContent = roomName;

const client = connect({ user: { name }, persist: 'roomwire.chat', ...transportChoice() });
bindStatus(client);
const room = client.join(roomName);

/** Each member's transport as it last said (ephemeral "status"). @type {Map<string, string>} */
const transports = new Map();
/** Who is typing, until when. @type {Map<string, number>} */
const typing = new Map();

// --- presence -----------------------------------------------------------------

function announce() {
  if (client.transport) room.ephemeral('status', { transport: client.transport });
}
client.on('welcome', () => queueMicrotask(announce));
room.on('joined', announce);
room.on('presence', (p) => {
  if (p.event === 'join') announce(); // the newcomer has not heard it
  else {
    transports.delete(p.member.sid);
    typing.delete(p.member.sid);
  }
  renderTyping();
});
room.on('members', renderMembers);

/** @param {import('./roomwire.js').Member[]} members */
function renderMembers(members) {
  $('members').replaceChildren(
    ...members.map((m) => {
      const li = el('li');
      li.dataset.sid = m.sid;
      const who = String(m.user?.name ?? m.sid);
      const label = el('span', 'who', who);
      if (m.self) label.append(el('span', 'you', ' (you)'));
      const t = m.self ? client.transport ?? m.transport : transports.get(m.sid) ?? m.transport;
      const chip = el('span', `transport t-${t}`, TRANSPORT_NAMES[t] ?? t);
      chip.title = `${who} is connected over ${TRANSPORT_NAMES[t] ?? t}`;
      li.append(avatar(who, m.sid), label, chip);
      return li;
    }),
  );
  $('member-count').textContent = String(members.length);
}
client.on('state', () => renderMembers(room.members));

// --- ephemeral values -----------------------------------------------------------

room.on('eph', (e) => {
  if (e.key === 'status' && typeof e.data?.transport === 'string') {
    transports.set(e.from, e.data.transport);
    renderMembers(room.members);
  } else if (e.key === 'typing') {
    if (e.data === true) typing.set(e.from, Date.now() + TYPING_TTL);
    else typing.delete(e.from);
    renderTyping();
  }
});

function renderTyping() {
  const now = Date.now();
  const names = [];
  for (const [sid, until] of typing) {
    if (until < now) typing.delete(sid);
    else names.push(String(room.members.find((m) => m.sid === sid)?.user?.name ?? 'someone'));
  }
  $('typing').textContent = names.length === 0 ? '' : names.length === 1 ? `${names[0]} is typing…` : `${names.join(', ')} are typing…`;
}
setInterval(renderTyping, 1000);

const input = /** @type {HTMLInputElement} */ ($('say'));
let typingSent = 0;
input.addEventListener('input', () => {
  const now = Date.now();
  if (input.value === '') {
    room.ephemeral('typing', false);
    typingSent = 0;
  } else if (now - typingSent > TYPING_TTL / 2) {
    room.ephemeral('typing', true);
    typingSent = now;
  }
});

// --- messages -------------------------------------------------------------------

$('say-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const text = input.value.trim();
  if (!text || !room.synced) return;
  const msg = { name, sid: client.sid ?? '', text, at: Date.now() };
  const doc = /** @type {any} */ (room.doc);
  const list = Array.isArray(doc?.messages) ? doc.messages : null;
  /** @type {import('./roomwire.js').PatchOp[]} */
  const ops = list ? [{ op: 'add', path: '/messages/-', value: msg }] : [{ op: 'add', path: '/messages', value: [msg] }];
  if (list && list.length >= MAX_MESSAGES) ops.push({ op: 'test', path: '/messages/0', value: list[0] }, { op: 'remove', path: '/messages/0' });
  room.patch(ops).catch(() => {});
  input.value = '';
  room.ephemeral('typing', false);
  typingSent = 0;
});

room.on('change', (c) => {
  const doc = /** @type {any} */ (c.doc);
  const list = Array.isArray(doc?.messages) ? doc.messages : [];
  const confirmed = /** @type {any} */ (room.confirmed);
  const known = new Set((Array.isArray(confirmed?.messages) ? confirmed.messages : []).map((/** @type {any} */ m) => `${m.sid}|${m.at}|${m.text}`));
  const box = $('messages');
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  box.replaceChildren(
    ...list.map((/** @type {any} */ m) => {
      const li = el('li', m.sid === client.sid ? 'mine' : '');
      const who = String(m.name ?? '?');
      const head = el('div', 'msg-head');
      head.append(el('strong', '', who), el('time', '', new Date(Number(m.at) || 0).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })));
      if (!known.has(`${m.sid}|${m.at}|${m.text}`)) {
        li.classList.add('pending');
        head.append(el('span', 'sending', client.state === 'open' ? 'sending…' : 'queued offline'));
      }
      const body = el('div', 'msg-text', String(m.text ?? ''));
      li.append(avatar(who, String(m.sid ?? who)), el('div', 'msg-body'));
      /** @type {HTMLElement} */ (li.lastChild).append(head, body);
      return li;
    }),
  );
  $('chat-empty').hidden = list.length > 0;
  if (atBottom || c.cause === 'local' || c.cause === 'snapshot') box.scrollTop = box.scrollHeight;
});

$('drop').addEventListener('click', () => client.reconnect());

addEventListener('pagehide', (e) => {
  if (!e.persisted) client.close();
});
