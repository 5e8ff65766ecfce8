// Live cursors: every member's pointer, sent as ephemeral values to each
// peer over a direct WebRTC DataChannel when one opens and through the
// server relay otherwise (room.peers()). Each peer's path is shown.
//
// ?p2p=off never tries a direct path; ?p2p=blocked tries with a
// configuration that can gather no candidate (as behind a firewall that
// drops UDP), so it fails and stays on the relay; ?ice=loopback signals only
// loopback candidates (for tests on one machine).

import { connect } from './roomwire.js';
import { $, el, params, userName, transportChoice, bindTransportSelect, bindStatus, colour, avatar } from './common.js';

bindTransportSelect();
const name = userName();
const roomName = params.get('room') || 'cursors';
$('me').textContent = name;
$('room-name').textContent = roomName;

const client = connect({ user: { name }, ...transportChoice() });
bindStatus(client);
const room = client.join(roomName);

const mode = params.get('p2p') ?? 'on';
/** @type {import('./roomwire.js').PeersOptions} */
const peerOpts = { connectTimeout: 8000 };
if (mode === 'blocked') peerOpts.configuration = { iceServers: [], iceTransportPolicy: 'relay' };
if (params.get('ice') === 'loopback') {
  peerOpts.allowCandidate = (c) => {
    const addr = String(c.candidate ?? '').split(' ')[4] ?? '';
    return addr === '127.0.0.1' || addr === '::1';
  };
}
const hasRTC = typeof globalThis.RTCPeerConnection === 'function';
const p2p = mode !== 'off' && hasRTC;
$('p2p-mode').textContent = !hasRTC
  ? 'WebRTC unavailable here: relay only'
  : mode === 'off'
    ? 'direct paths off: relay only'
    : mode === 'blocked'
      ? 'direct paths blocked (simulated firewall)'
      : 'peer to peer when possible';

/** @type {import('./roomwire.js').Peers | null} */
const peers = p2p ? room.peers(peerOpts) : null;

/**
 * What this page knows of each peer.
 * @typedef {object} Peer
 * @property {HTMLElement} cursor
 * @property {string} path
 * @property {string} direct
 * @property {number} seen  when its pointer last moved
 */
/** @type {Map<string, Peer>} */
const known = new Map();

/** @param {string} sid */
function peer(sid) {
  let p = known.get(sid);
  if (!p) {
    const m = room.members.find((x) => x.sid === sid);
    const who = String(m?.user?.name ?? 'someone');
    const cursor = el('div', 'cursor');
    cursor.dataset.sid = sid;
    cursor.hidden = true;
    cursor.style.setProperty('--c', colour(sid));
    cursor.append(el('span', 'arrow'), el('span', 'label', who));
    $('stage').append(cursor);
    p = { cursor, path: 'relay', direct: p2p ? 'connecting' : mode === 'off' ? 'off' : 'unsupported', seen: 0 };
    known.set(sid, p);
  }
  return p;
}

function renderPeers() {
  const others = room.members.filter((m) => !m.self);
  for (const [sid, p] of known) {
    if (!others.some((m) => m.sid === sid)) {
      p.cursor.remove();
      known.delete(sid);
    }
  }
  $('peers').replaceChildren(
    ...others.map((m) => {
      const p = peer(m.sid);
      const who = String(m.user?.name ?? m.sid);
      const li = el('li');
      li.dataset.sid = m.sid;
      const path = el('span', `path path-${p.path}`, p.path);
      path.title = p.path === 'direct' ? 'peer to peer over a DataChannel' : 'through the server';
      const detail = el('span', 'path-detail', p.path === 'direct' ? '' : describeDirect(p.direct));
      li.append(avatar(who, m.sid), el('span', 'who', who), detail, path);
      return li;
    }),
  );
  $('peer-count').textContent = String(others.length);
  $('peers-empty').hidden = others.length > 0;
}

/** @param {string} d */
function describeDirect(d) {
  return { connecting: 'trying direct…', failed: 'direct path failed', unsupported: 'no WebRTC', off: 'direct off', open: '' }[d] ?? d;
}

room.on('members', renderPeers);
peers?.on('path', (st) => {
  const p = peer(st.sid);
  p.path = st.path;
  p.direct = st.direct;
  renderPeers();
});

// --- pointers -------------------------------------------------------------------

/** @param {string} from @param {any} data */
function move(from, data) {
  if (!known.has(from) && !room.members.some((m) => m.sid === from)) return;
  const p = peer(from);
  if (data === null || typeof data?.x !== 'number' || typeof data?.y !== 'number') {
    p.cursor.hidden = true;
    return;
  }
  p.cursor.hidden = false;
  p.cursor.style.left = `${Math.min(1, Math.max(0, data.x)) * 100}%`;
  p.cursor.style.top = `${Math.min(1, Math.max(0, data.y)) * 100}%`;
  p.seen = Date.now();
}

peers?.on('message', (m) => {
  if (m.key === 'cursor') move(m.from, m.data);
});
room.on('eph', (e) => {
  if (e.key === 'cursor') move(e.from, e.data);
});

const stage = $('stage');
let lastSent = 0;
/** @type {{x: number, y: number} | null} */
let pendingPos = null;
/** @type {ReturnType<typeof setTimeout>|undefined} */
let timer;

/** @param {{x: number, y: number} | null} pos */
function sendPos(pos) {
  if (peers) peers.send('cursor', pos);
  else room.ephemeral('cursor', pos);
}

stage.addEventListener('pointermove', (e) => {
  const r = stage.getBoundingClientRect();
  pendingPos = { x: +((e.clientX - r.left) / r.width).toFixed(4), y: +((e.clientY - r.top) / r.height).toFixed(4) };
  // At most 30 values a second: well under the relay's cap of 60.
  const wait = 33 - (Date.now() - lastSent);
  if (wait <= 0) flushPos();
  else if (timer === undefined) timer = setTimeout(flushPos, wait);
});
stage.addEventListener('pointerleave', () => {
  pendingPos = null;
  clearTimeout(timer);
  timer = undefined;
  sendPos(null);
});

function flushPos() {
  timer = undefined;
  if (!pendingPos) return;
  lastSent = Date.now();
  sendPos(pendingPos);
}

// A cursor that has not moved for a while fades.
setInterval(() => {
  const now = Date.now();
  for (const p of known.values()) p.cursor.classList.toggle('idle', now - p.seen > 5000);
}, 1000);

addEventListener('pagehide', (e) => {
  if (e.persisted) return;
  peers?.close();
  client.close();
});
