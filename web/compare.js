// The transport comparison: one client per transport, each forced to it,
// all in one room, with live round-trip latency (drawn on a canvas, no
// library), messages per second and payload bytes. The DataChannel client
// (transport 'rtc') runs only where the server mounts that transport and a
// UDP path to it opens: the page finds out by trying, and shows the lane as
// not available, with the reason, when the first attempt fails.
// ?ice=loopback offers the server only loopback candidates (tests).

import { connect, CODE_UNUSABLE } from './roomwire.js';
import { $, el, params, bindStatus, TRANSPORT_NAMES } from './common.js';

const WINDOW_MS = 60_000;
const PING_EVERY = 500;

const roomName = params.get('room') || `compare-${Math.random().toString(36).slice(2, 8)}`;
$('room-name').textContent = roomName;

/** @type {Record<string, string>} */
const COLOURS = { ws: '#3b5bdb', sse: '#e8590c', longpoll: '#2b8a3e', rtc: '#ae3ec9' };

/**
 * One transport's panel and its client.
 * @typedef {object} Lane
 * @property {string} name
 * @property {import('./roomwire.js').Client | null} client
 * @property {import('./roomwire.js').Room | null} room
 * @property {{t: number, ms: number}[]} samples
 * @property {number} received  ephemeral ticks received in the current second
 * @property {number} rate  ticks per second, last full second
 * @property {boolean} busy  a ping is in flight
 * @property {boolean} opened  the client has been connected at least once
 * @property {Record<string, HTMLElement>} ui
 */

/** @type {Lane[]} */
const lanes = ['ws', 'sse', 'longpoll', 'rtc'].map((name) => ({ name, client: null, room: null, samples: [], received: 0, rate: 0, busy: false, opened: false, ui: {} }));

for (const lane of lanes) {
  const card = el('section', 'card lane');
  card.dataset.transport = lane.name;
  const head = el('div', 'lane-head');
  const swatch = el('span', 'swatch');
  swatch.style.background = COLOURS[lane.name];
  const title = el('h2', '', TRANSPORT_NAMES[lane.name]);
  const pill = el('span', 'pill', 'starting…');
  const toggle = /** @type {HTMLInputElement} */ (el('input'));
  toggle.type = 'checkbox';
  toggle.checked = true;
  toggle.title = `Run the ${TRANSPORT_NAMES[lane.name]} client`;
  toggle.setAttribute('aria-label', toggle.title);
  toggle.addEventListener('change', () => (toggle.checked ? start(lane) : stop(lane)));
  const onoff = el('label', 'onoff');
  onoff.append(toggle, document.createTextNode('on'));
  head.append(swatch, title, el('span', 'spacer'), onoff);
  const figures = el('dl', 'figures');
  /** @param {string} label @param {string} cls */
  const figure = (label, cls) => {
    const d = el('div', 'figure');
    const dd = el('dd', cls, '–');
    d.append(el('dt', '', label), dd);
    figures.append(d);
    return dd;
  };
  lane.ui = {
    pill,
    toggle,
    rtt: figure('round trip', 'rtt'),
    median: figure('median (60 s)', 'median'),
    rate: figure('received', 'rate'),
    bytes: figure('payload sent / received', 'bytes'),
  };
  const why = el('p', 'muted why');
  why.hidden = true;
  lane.ui.why = why;
  card.append(head, pill, figures, why);
  $('panels').append(card);
  const legend = el('li');
  const dot = el('span', 'swatch');
  dot.style.background = COLOURS[lane.name];
  legend.append(dot, document.createTextNode(TRANSPORT_NAMES[lane.name]));
  $('legend').append(legend);
}

/** @type {import('./roomwire.js').ConnectOptions} */
const rtcOptions = {};
if (params.get('ice') === 'loopback') {
  rtcOptions.rtcAllowCandidate = (c) => {
    const addr = String(c.candidate ?? '').split(' ')[4] ?? '';
    return addr === '127.0.0.1' || addr === '::1';
  };
}

/** @param {Lane} lane */
function start(lane) {
  if (lane.client) return;
  const card = /** @type {HTMLElement} */ (lane.ui.pill.parentElement);
  card.classList.remove('unavailable');
  lane.ui.why.hidden = true;
  const client = connect({ transport: lane.name, user: { name: `${TRANSPORT_NAMES[lane.name]} client` }, ...(lane.name === 'rtc' ? rtcOptions : {}) });
  lane.client = client;
  lane.samples = [];
  lane.opened = false;
  bindStatus(client, lane.ui.pill);
  client.on('state', (/** @type {any} */ s) => {
    if (lane.client !== client) return;
    if (s.state === 'open') lane.opened = true;
    // The first attempt failed for good (this server has no such transport,
    // or no path to it): say so, rather than retry for ever.
    const refused = (s.state === 'reconnecting' && s.code === CODE_UNUSABLE) || s.state === 'closed';
    // Not from inside the client's event: let it finish its step first.
    if (!lane.opened && refused) queueMicrotask(() => lane.client === client && unavailable(lane, s.reason || `close code ${s.code ?? '?'}`));
  });
  lane.room = client.join(roomName);
  lane.room.on('eph', (e) => {
    if (e.key === 'tick') lane.received++;
  });
}

/** @param {Lane} lane @param {string} reason */
function unavailable(lane, reason) {
  stop(lane);
  lane.ui.pill.textContent = 'not available';
  lane.ui.pill.dataset.state = 'unavailable';
  lane.ui.why.textContent = `${TRANSPORT_NAMES[lane.name]}: ${reason}`;
  lane.ui.why.hidden = false;
  lane.ui.pill.parentElement?.classList.add('unavailable');
  /** @type {HTMLInputElement} */ (lane.ui.toggle).checked = false;
}

/** @param {Lane} lane */
function stop(lane) {
  const c = lane.client;
  lane.client = null;
  c?.close();
  lane.room = null;
  lane.ui.pill.textContent = 'stopped';
  lane.ui.pill.dataset.state = 'closed';
}

for (const lane of lanes) start(lane);

// --- measuring ------------------------------------------------------------------

setInterval(() => {
  for (const lane of lanes) {
    const c = lane.client;
    if (!c || lane.busy || c.state !== 'open') continue;
    lane.busy = true;
    c.ping(5000).then(
      (ms) => {
        lane.samples.push({ t: performance.now(), ms });
        lane.busy = false;
      },
      () => {
        lane.busy = false;
      },
    );
  }
}, PING_EVERY);

let tickN = 0;
/** @type {ReturnType<typeof setInterval>|undefined} */
let tickTimer;
const traffic = /** @type {HTMLSelectElement} */ ($('traffic'));
function setTraffic() {
  clearInterval(tickTimer);
  const rate = Number(traffic.value);
  if (rate > 0) {
    tickTimer = setInterval(() => {
      tickN++;
      for (const lane of lanes) lane.room?.ephemeral('tick', tickN);
    }, 1000 / rate);
  }
}
traffic.addEventListener('change', setTraffic);
setTraffic();

setInterval(() => {
  for (const lane of lanes) {
    lane.rate = lane.received;
    lane.received = 0;
  }
}, 1000);

/** @param {number} n */
function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(2)} MiB`;
}

/** @param {number} ms */
const fmt = (ms) => (ms < 10 ? ms.toFixed(2) : ms < 100 ? ms.toFixed(1) : ms.toFixed(0)) + ' ms';

function renderFigures() {
  const now = performance.now();
  for (const lane of lanes) {
    lane.samples = lane.samples.filter((s) => now - s.t <= WINDOW_MS);
    const last = lane.samples.at(-1);
    lane.ui.rtt.textContent = last ? fmt(last.ms) : '–';
    lane.ui.rtt.dataset.samples = String(lane.samples.length);
    if (last) lane.ui.rtt.dataset.ms = String(last.ms);
    const sorted = lane.samples.map((s) => s.ms).sort((a, b) => a - b);
    lane.ui.median.textContent = sorted.length ? fmt(sorted[Math.floor(sorted.length / 2)]) : '–';
    lane.ui.rate.textContent = lane.client ? `${lane.rate} msg/s` : '–';
    const st = lane.client?.stats;
    lane.ui.bytes.textContent = st ? `${bytes(st.bytesOut)} / ${bytes(st.bytesIn)}` : '–';
  }
}

// --- the chart --------------------------------------------------------------------

const canvas = /** @type {HTMLCanvasElement} */ ($('chart'));
const ctx = /** @type {CanvasRenderingContext2D} */ (canvas.getContext('2d'));

function draw() {
  const dpr = globalThis.devicePixelRatio || 1;
  const w = canvas.clientWidth;
  const h = canvas.clientHeight;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const style = getComputedStyle(document.body);
  const muted = style.getPropertyValue('--muted').trim() || '#6a7285';
  const line = style.getPropertyValue('--line').trim() || '#e3e6ec';
  const left = 52;
  const bottom = 22;
  const top = 10;
  const right = 12;
  const now = performance.now();
  let max = 1;
  for (const lane of lanes) for (const s of lane.samples) max = Math.max(max, s.ms);
  max = niceCeil(max * 1.1);
  const x = (/** @type {number} */ t) => left + ((t - (now - WINDOW_MS)) / WINDOW_MS) * (w - left - right);
  const y = (/** @type {number} */ ms) => top + (1 - ms / max) * (h - top - bottom);

  ctx.font = '11px system-ui, sans-serif';
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    ctx.strokeStyle = line;
    ctx.beginPath();
    ctx.moveTo(left, Math.round(y(v)) + 0.5);
    ctx.lineTo(w - right, Math.round(y(v)) + 0.5);
    ctx.stroke();
    ctx.fillStyle = muted;
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    ctx.fillText(fmt(v), left - 6, y(v));
  }
  ctx.textAlign = 'center';
  ctx.textBaseline = 'top';
  for (let s = 60; s >= 0; s -= 15) ctx.fillText(s === 0 ? 'now' : `-${s} s`, x(now - s * 1000), h - bottom + 6);

  ctx.lineWidth = 2;
  ctx.lineJoin = 'round';
  for (const lane of lanes) {
    if (lane.samples.length === 0) continue;
    ctx.strokeStyle = COLOURS[lane.name];
    ctx.beginPath();
    lane.samples.forEach((s, i) => (i === 0 ? ctx.moveTo(x(s.t), y(s.ms)) : ctx.lineTo(x(s.t), y(s.ms))));
    ctx.stroke();
  }
}

/** A round number at or above v (1, 2 or 5 times a power of ten). @param {number} v */
function niceCeil(v) {
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function frame() {
  renderFigures();
  draw();
}
setInterval(frame, 250);
frame();

addEventListener('pagehide', (e) => {
  if (!e.persisted) for (const lane of lanes) lane.client?.close();
});
