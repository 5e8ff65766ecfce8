// Shared by the demo pages: the header (navigation, transport choice,
// connection status), names, colours and small DOM helpers. Every page
// talks to the server only through roomwire.js.

/** @param {string} id */
export const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

/**
 * @param {string} tag
 * @param {string} [cls]
 * @param {string} [text]
 */
export function el(tag, cls = '', text = '') {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text) e.textContent = text;
  return e;
}

/** The page's query parameters: ?name=, ?room=, ?transport=. */
export const params = new URLSearchParams(location.search);

/** Human names of the transports. @type {Record<string, string>} */
export const TRANSPORT_NAMES = { ws: 'WebSocket', sse: 'SSE + POST', longpoll: 'long-polling', rtc: 'DataChannel' };

/** A stable colour for a session id or name. @param {string} s */
export function colour(s) {
  let h = 0;
  for (const c of s) h = (h * 31 + c.charCodeAt(0)) % 360;
  return `hsl(${h} 60% 46%)`;
}

/** The user's name: ?name=, else the one remembered, else a guest name. */
export function userName() {
  const fromURL = params.get('name')?.trim();
  if (fromURL) return fromURL.slice(0, 40);
  return localStorage.getItem('roomwire.name') || `guest-${Math.floor(100 + Math.random() * 900)}`;
}

/** @param {string} name */
export function rememberName(name) {
  localStorage.setItem('roomwire.name', name);
}

/**
 * connect() options from the page's URL: ?transport=ws|sse|longpoll forces
 * one transport; anything else lets the client choose (WebSocket, then SSE,
 * then long-polling).
 * @returns {{transport?: string}}
 */
export function transportChoice() {
  const t = params.get('transport');
  return t === 'ws' || t === 'sse' || t === 'longpoll' ? { transport: t } : {};
}

/**
 * Wires the header's transport selector: choosing one reloads the page with
 * ?transport=.
 */
export function bindTransportSelect() {
  const sel = /** @type {HTMLSelectElement|null} */ (document.getElementById('transport-select'));
  if (!sel) return;
  sel.value = transportChoice().transport ?? 'auto';
  sel.addEventListener('change', () => {
    const p = new URLSearchParams(location.search);
    if (sel.value === 'auto') p.delete('transport');
    else p.set('transport', sel.value);
    location.search = p.toString();
  });
}

/**
 * Shows a client's state in the header pill: connected over which
 * transport, reconnecting in how long.
 * @param {import('./roomwire.js').Client} client
 * @param {HTMLElement} [pill]
 */
export function bindStatus(client, pill = $('status')) {
  /** @param {{state: string, delay?: number}} s */
  const render = (s) => {
    pill.dataset.state = s.state;
    const labels = /** @type {Record<string, string>} */ ({
      connecting: 'connecting…',
      open: `connected · ${TRANSPORT_NAMES[client.transport ?? ''] ?? client.transport ?? ''}`,
      reconnecting: s.delay ? `reconnecting in ${(s.delay / 1000).toFixed(1)} s…` : 'reconnecting…',
      closed: 'disconnected',
    });
    pill.textContent = labels[s.state] ?? s.state;
    pill.dataset.transport = s.state === 'open' ? client.transport ?? '' : '';
  };
  client.on('state', render);
  render({ state: client.state });
}

/**
 * Adds a line to an activity log (newest first, at most 200 lines).
 * @param {HTMLElement} log
 * @param {'sys'|'chat'|'warn'|'bad'} kind
 * @param {string} text
 */
export function note(log, kind, text) {
  const li = el('li', kind);
  const t = new Date();
  li.append(el('time', '', t.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' })), el('span', 'text', text));
  log.prepend(li);
  while (log.children.length > 200) log.lastElementChild?.remove();
}

/**
 * An avatar: the first letter of name on the session's colour.
 * @param {string} name
 * @param {string} key
 */
export function avatar(name, key) {
  const a = el('span', 'avatar', (name || '?').slice(0, 1).toUpperCase());
  a.style.background = colour(key);
  return a;
}
