// roomwire.js against a real roomwire server: go test ./web starts one and
// runs this file with ROOMWIRE_URL set to its realtime prefix (".../rt/").
// Needs a global WebSocket (node 22, or node 20 with --experimental-websocket).

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { connect } from './roomwire.js';

const url = process.env.ROOMWIRE_URL;

/** Resolves when emitter emits type with a detail for which pred holds. */
function until(emitter, type, pred = () => true) {
  return new Promise((resolve) => {
    const off = emitter.on(type, (d) => {
      if (pred(d)) {
        off();
        resolve(d);
      }
    });
  });
}

/** Resolves once room has no pending patch and its version is v. */
function settled(room, v) {
  if (room.pending === 0 && room.version === v) return Promise.resolve();
  return until(room, 'change', () => room.pending === 0 && room.version === v);
}

function client(t, name, extra) {
  const c = connect({ url, user: { name }, minDelay: 10, maxDelay: 50, ackDelay: 20, transports: ['ws'], ...extra });
  t.after(() => c.close());
  return c;
}

test('two clients edit one document and converge', { skip: !url && 'ROOMWIRE_URL not set', timeout: 20_000 }, async (t) => {
  const roomName = `e2e-${Math.random().toString(36).slice(2)}`;
  const ada = client(t, 'ada');
  const bob = client(t, 'bob');

  const a = ada.join(roomName);
  await a.ready;
  assert.equal(a.version, 0);
  assert.deepEqual(a.doc, {});

  const sawBob = until(a, 'presence', (p) => p.event === 'join' && p.member.user.name === 'bob');
  const b = bob.join(roomName);
  await b.ready;
  const bobMember = (await sawBob).member;
  assert.equal(bobMember.transport, 'ws');
  assert.deepEqual(b.members.map((m) => [m.user.name, m.transport, m.self]).sort(), [['ada', 'ws', false], ['bob', 'ws', true]]);

  // A patch, acknowledged to its sender and broadcast to the other.
  const bobSees = until(b, 'change', (c) => c.doc.k === 'x');
  assert.deepEqual(await a.patch([{ op: 'add', path: '/k', value: 'x' }]), { seq: 1, v: 1, rebased: false });
  await bobSees;
  assert.equal(b.version, 1);

  // Two guarded edits of /k at once: exactly one wins, the other is rejected,
  // and both clients end up with the winner's document.
  const guarded = (who) => [{ op: 'test', path: '/k', value: 'x' }, { op: 'replace', path: '/k', value: who }];
  const results = await Promise.allSettled([a.patch(guarded('ada')), b.patch(guarded('bob'))]);
  const won = results.filter((r) => r.status === 'fulfilled');
  const lost = results.filter((r) => r.status === 'rejected');
  assert.equal(won.length, 1, JSON.stringify(results));
  assert.equal(lost[0].reason.code, 'conflict');
  await Promise.all([settled(a, 2), settled(b, 2)]);
  assert.deepEqual(a.doc, b.doc);
  assert.ok(a.doc.k === 'ada' || a.doc.k === 'bob');

  // Unguarded concurrent edits: whatever the order, the clients converge.
  await Promise.allSettled([
    a.patch([{ op: 'replace', path: '/k', value: 'ada again' }]),
    b.patch([{ op: 'remove', path: '/k' }]),
    b.patch([{ op: 'add', path: '/list', value: [] }]),
    a.patch([{ op: 'add', path: '/n', value: 1 }]),
  ]);
  const v = Math.max(a.version, b.version);
  await Promise.all([settled(a, v), settled(b, v)]);
  assert.deepEqual(a.doc, b.doc);
  assert.deepEqual(a.doc, a.confirmed);

  // A late joiner's snapshot is the same document at the same version.
  const carol = client(t, 'carol');
  const c = carol.join(roomName);
  await c.ready;
  assert.deepEqual(c.doc, a.doc);
  assert.equal(c.version, a.version);

  // Events and ephemeral values.
  const event = until(a, 'event');
  await b.publish({ text: 'hello' });
  assert.deepEqual((await event).data, { text: 'hello' });
  const eph = until(b, 'eph');
  assert.equal(a.ephemeral('cursor', { x: 3 }), true);
  assert.deepEqual(await eph, { from: ada.sid, key: 'cursor', data: { x: 3 } });
});

test('a dropped connection resumes the session; offline edits are sent after', { skip: !url && 'ROOMWIRE_URL not set', timeout: 20_000 }, async (t) => {
  const roomName = `e2e-${Math.random().toString(36).slice(2)}`;
  const ada = client(t, 'ada');
  const bob = client(t, 'bob');
  const a = ada.join(roomName);
  const b = bob.join(roomName);
  await Promise.all([a.ready, b.ready]);
  const sid = ada.sid;

  const resumed = until(ada, 'welcome');
  ada.reconnect();
  assert.equal(ada.state, 'reconnecting');
  // Edited while offline: shown at once, sent once the session is back.
  const offline = a.patch([{ op: 'add', path: '/offline', value: true }]);
  assert.deepEqual(a.doc, { offline: true });
  assert.deepEqual(await resumed, { sid, resumed: true, window: 30000, transport: 'ws' });
  assert.deepEqual(await offline, { seq: 1, v: 1, rebased: false });
  await settled(b, 1);
  assert.deepEqual(b.doc, { offline: true });
  assert.equal(b.members.length, 2, 'bob never saw ada leave');
});

test('WebSocket refused: long-polling; later the session upgrades to WebSocket with nothing lost or doubled', { skip: !url && 'ROOMWIRE_URL not set', timeout: 20_000 }, async (t) => {
  const roomName = `e2e-${Math.random().toString(36).slice(2)}`;
  let refuse = true;
  // Until refuse is lifted, WebSocket connections go to a path with no endpoint (404).
  const Gated = class extends WebSocket {
    constructor(u) {
      super(refuse ? u.replace(/\/ws$/, '/no-ws') : u);
    }
  };
  const ada = client(t, 'ada', { transports: ['ws', 'longpoll'], WebSocket: Gated, upgradeDelay: 300 });
  const bob = client(t, 'bob', { transport: 'longpoll' });
  const a = ada.join(roomName);
  const b = bob.join(roomName);
  await Promise.all([a.ready, b.ready]);
  assert.equal(ada.transport, 'longpoll');
  assert.equal(bob.transport, 'longpoll');
  if (b.members.length < 2) await until(b, 'members', (m) => m.length === 2);
  assert.deepEqual(b.members.map((m) => m.transport), ['longpoll', 'longpoll']);

  // Round trips both ways over long-polling.
  const bobSees = until(b, 'change', (c) => c.doc.from === 'ada');
  await a.patch([{ op: 'add', path: '/from', value: 'ada' }]);
  await bobSees;
  const adaSees = until(a, 'change', (c) => c.doc.n === 2);
  await b.patch([{ op: 'add', path: '/n', value: 2 }]);
  await adaSees;
  assert.ok((await ada.ping()) >= 0);

  // Bob publishes while ada's session moves up to WebSocket.
  const events = [];
  a.on('event', (e) => events.push(e.data));
  const sid = ada.sid;
  const upgraded = until(ada, 'transport');
  refuse = false;
  for (let i = 0; i < 40; i++) {
    await b.publish(i);
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.deepEqual(await upgraded, { transport: 'ws', previous: 'longpoll', why: 'upgrade' });
  assert.equal(ada.sid, sid, 'the same session');
  if (events.length < 40) await until(a, 'event', () => events.length === 40);
  assert.deepEqual(events, [...Array(40).keys()], 'every event once, in order');
  assert.equal(a.members.length, 2, 'bob never saw ada leave');
});
