// Unit tests of roomwire.js: the JSON Patch applier (the RFC 6902 test suite
// in room/testdata plus prototype-pollution attempts) and the client's
// protocol state machine, driven through a fake WebSocket.
//
//	node --test web/roomwire_test.mjs
//
// go test ./web runs this file too.

import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import { applyPatch, parsePointer, formatPointer, lenientRebase, PatchError, connect, CODE_UNUSABLE } from './roomwire.js';

const suiteDir = new URL('../room/testdata/json-patch-tests/', import.meta.url);

for (const file of ['tests.json', 'spec_tests.json']) {
  describe(`RFC 6902 ${file}`, () => {
    const cases = JSON.parse(readFileSync(new URL(file, suiteDir), 'utf8'));
    cases.forEach((tc, i) => {
      if (!('doc' in tc) || !('patch' in tc)) return; // a comment-only record
      const name = `${i}: ${tc.comment ?? tc.error ?? JSON.stringify(tc.patch)}`;
      test(name, { skip: tc.disabled ? 'disabled in the suite' : false }, () => {
        const before = structuredClone(tc.doc);
        if ('error' in tc) {
          assert.throws(() => applyPatch(tc.doc, tc.patch), PatchError, tc.error);
        } else {
          const got = applyPatch(tc.doc, tc.patch);
          assert.deepEqual(got, 'expected' in tc ? tc.expected : tc.doc);
        }
        assert.deepEqual(tc.doc, before, 'the input document must not change');
      });
    });
  });
}

describe('JSON Patch details', () => {
  test('a failed test reports test_failed, other failures bad_patch, with the index', () => {
    const ops = [{ op: 'add', path: '/b', value: 2 }, { op: 'test', path: '/a', value: 2 }];
    assert.throws(() => applyPatch({ a: 1 }, ops), { name: 'PatchError', code: 'test_failed', index: 1 });
    assert.throws(() => applyPatch({}, [{ op: 'remove', path: '/x' }]), { name: 'PatchError', code: 'bad_patch', index: 0 });
  });

  test('pointers: escapes, empty tokens, malformed', () => {
    assert.deepEqual(parsePointer(''), []);
    assert.deepEqual(parsePointer('/'), ['']);
    assert.deepEqual(parsePointer('/a~1b/~0c/~01'), ['a/b', '~c', '~1']);
    assert.equal(formatPointer(['a/b', '~c', '']), '/a~1b/~0c/');
    for (const bad of ['a', '/~', '/~2', '/a~x', 7, null]) {
      assert.throws(() => parsePointer(bad), PatchError, String(bad));
    }
  });

  test('array indices: no negatives, no leading zeros, "-" only to add', () => {
    const doc = { a: [1, 2, 3] };
    assert.deepEqual(applyPatch(doc, [{ op: 'add', path: '/a/-', value: 4 }]), { a: [1, 2, 3, 4] });
    assert.deepEqual(applyPatch(doc, [{ op: 'add', path: '/a/3', value: 4 }]), { a: [1, 2, 3, 4] });
    for (const op of [
      { op: 'add', path: '/a/-1', value: 0 },
      { op: 'add', path: '/a/4', value: 0 },
      { op: 'replace', path: '/a/-', value: 0 },
      { op: 'remove', path: '/a/-' },
      { op: 'remove', path: '/a/3' },
      { op: 'remove', path: '/a/01' },
      { op: 'remove', path: '/a/+1' },
      { op: 'remove', path: '/a/1.0' },
      { op: 'remove', path: '/a/length' },
      { op: 'test', path: '/a/-', value: 3 },
      { op: 'copy', from: '/a/-', path: '/b' },
    ]) {
      assert.throws(() => applyPatch(doc, [op]), PatchError, JSON.stringify(op));
    }
  });

  test('move into its own child fails; onto itself needs an existing source', () => {
    assert.throws(() => applyPatch({ a: { b: 1 } }, [{ op: 'move', from: '/a', path: '/a/c' }]), PatchError);
    assert.throws(() => applyPatch({}, [{ op: 'move', from: '/x', path: '/x' }]), PatchError);
    assert.deepEqual(applyPatch({ a: { b: 1 } }, [{ op: 'move', from: '/a/b', path: '/ab' }]), { a: {}, ab: 1 });
    // "/a" is not a prefix of "/ab": moving there is fine.
    assert.deepEqual(applyPatch({ a: 1 }, [{ op: 'move', from: '/a', path: '/ab' }]), { ab: 1 });
  });

  test('the whole document: replace and add swap it, remove is refused', () => {
    assert.deepEqual(applyPatch({ a: 1 }, [{ op: 'replace', path: '', value: [1] }]), [1]);
    assert.deepEqual(applyPatch([], [{ op: 'add', path: '', value: { x: 1 } }]), { x: 1 });
    assert.throws(() => applyPatch({ a: 1 }, [{ op: 'remove', path: '' }]), PatchError);
  });

  test('results are frozen, inputs untouched, unchanged parts shared', () => {
    const doc = { keep: { deep: [1, 2] }, edit: { n: 1 } };
    const out = applyPatch(doc, [{ op: 'replace', path: '/edit/n', value: 2 }]);
    assert.deepEqual(doc, { keep: { deep: [1, 2] }, edit: { n: 1 } });
    assert.ok(Object.isFrozen(out) && Object.isFrozen(out.edit) && Object.isFrozen(out.keep.deep));
    const again = applyPatch(out, [{ op: 'add', path: '/edit/m', value: 3 }]);
    assert.equal(again.keep, out.keep, 'an untouched subtree is shared, not copied');
    assert.notEqual(again.edit, out.edit);
    assert.deepEqual(out.edit, { n: 2 }, 'the earlier result did not change');
  });

  test('copy then change either side: no aliasing, even of the root', () => {
    const out = applyPatch({ a: { b: [1] } }, [
      { op: 'copy', from: '/a', path: '/c' },
      { op: 'add', path: '/c/b/-', value: 2 },
      { op: 'copy', from: '', path: '/root' },
      { op: 'add', path: '/a/b/-', value: 3 },
    ]);
    assert.deepEqual(out, { a: { b: [1, 3] }, c: { b: [1, 2] }, root: { a: { b: [1] }, c: { b: [1, 2] } } });
  });

  test('a failing patch applies nothing', () => {
    const doc = { a: 1 };
    assert.throws(() => applyPatch(doc, [{ op: 'add', path: '/b', value: 1 }, { op: 'remove', path: '/zz' }]));
    assert.deepEqual(doc, { a: 1 });
  });

  test('values must be JSON', () => {
    for (const value of [undefined, () => 1, NaN, Infinity, 1n, new Date(0), new Map(), Symbol('x')]) {
      assert.throws(() => applyPatch({}, [{ op: 'add', path: '/x', value }]), PatchError, String(typeof value));
    }
    const cyclic = {};
    cyclic.self = cyclic;
    assert.throws(() => applyPatch({}, [{ op: 'add', path: '/x', value: cyclic }]), PatchError);
  });

  test('lenientRebase: replace of a vanished member becomes add, remove of one is dropped, tests stay strict', () => {
    assert.deepEqual(lenientRebase([{ op: 'replace', path: '/k', value: 1 }], {}), [{ op: 'add', path: '/k', value: 1 }]);
    assert.deepEqual(lenientRebase([{ op: 'remove', path: '/k' }, { op: 'add', path: '/j', value: 2 }], {}), [{ op: 'add', path: '/j', value: 2 }]);
    assert.equal(lenientRebase([{ op: 'test', path: '/k', value: 1 }, { op: 'remove', path: '/k' }], { k: 2 }), null);
    assert.equal(lenientRebase([{ op: 'add', path: '/missing/k', value: 1 }], {}), null);
  });
});

describe('prototype pollution', () => {
  const attempts = [
    { op: 'add', path: '/__proto__/polluted', value: 'yes' },
    { op: 'add', path: '/__proto__', value: { polluted: 'yes' } },
    { op: 'replace', path: '/__proto__', value: { polluted: 'yes' } },
    { op: 'add', path: '/constructor/prototype/polluted', value: 'yes' },
    { op: 'add', path: '/a/constructor/prototype/polluted', value: 'yes' },
    { op: 'add', path: '/a/__proto__/polluted', value: 'yes' },
    { op: 'add', path: '/arr/__proto__/polluted', value: 'yes' },
    { op: 'copy', from: '/__proto__', path: '/x' },
    { op: 'copy', from: '/constructor', path: '/x' },
    { op: 'move', from: '/a', path: '/__proto__' },
    { op: 'test', path: '/constructor', value: {} },
    { op: 'test', path: '/toString', value: {} },
    { op: 'test', path: '/a/hasOwnProperty', value: {} },
    { op: 'remove', path: '/prototype' },
  ];
  for (const op of attempts) {
    test(JSON.stringify(op), () => {
      const doc = { a: {}, arr: [] };
      assert.throws(() => applyPatch(doc, [op]), PatchError);
      assert.equal(({}).polluted, undefined);
      assert.equal(Object.prototype.polluted, undefined);
      assert.equal(Array.prototype.polluted, undefined);
    });
  }

  test('an own "__proto__" member in a document or value stays plain data', () => {
    const doc = JSON.parse('{"__proto__": {"polluted": "yes"}, "a": 1}');
    const value = JSON.parse('{"__proto__": {"polluted": "yes"}}');
    const out = applyPatch(doc, [{ op: 'add', path: '/b', value }, { op: 'replace', path: '/a', value: 2 }]);
    assert.equal(Object.getPrototypeOf(out), Object.prototype);
    assert.equal(Object.getPrototypeOf(out.b), Object.prototype);
    assert.ok(Object.prototype.hasOwnProperty.call(out, '__proto__'));
    assert.ok(Object.prototype.hasOwnProperty.call(out.b, '__proto__'));
    assert.equal(out.polluted, undefined);
    assert.equal(({}).polluted, undefined);
    assert.equal(out.a, 2);
  });

  test('operations with inherited members are refused', () => {
    const op = Object.create({ op: 'add', path: '/x', value: 1 });
    assert.throws(() => applyPatch({}, [op]), PatchError);
  });
});

// ---------------------------------------------------------------------------
// The client, against a fake server
// ---------------------------------------------------------------------------

/** A scripted server: each connection the client opens is a FakeSocket. */
class FakeServer {
  sockets = [];
  #waiters = [];

  constructor() {
    const server = this;
    this.WebSocket = class extends FakeSocket {
      constructor(url) {
        super(url);
        server.sockets.push(this);
        for (const w of server.#waiters.splice(0)) w();
      }
    };
  }

  /** Resolves with connection number n (0-based) once the client opened it. */
  async accept(n) {
    while (this.sockets.length <= n) await new Promise((r) => this.#waiters.push(r));
    const s = this.sockets[n];
    await s.opened;
    return s;
  }
}

class FakeSocket {
  /** What the client sent, one decoded message per entry. */
  sent = [];
  #read = 0;
  #waiters = [];

  constructor(url) {
    this.url = url;
    this.opened = new Promise((resolve) =>
      setTimeout(() => {
        this.onopen?.({});
        resolve();
      }, 0),
    );
  }

  send(frame) {
    for (const line of frame.split('\n')) this.sent.push(JSON.parse(line));
    for (const w of this.#waiters.splice(0)) w();
  }

  close(code, reason) {
    this.closedByClient = { code, reason };
  }

  /** The next message the client sends (skipping acks unless wanted). */
  async next({ acks = false } = {}) {
    for (;;) {
      while (this.#read < this.sent.length) {
        const m = this.sent[this.#read++];
        if (acks || m.t !== 'ack') return m;
      }
      await new Promise((r) => this.#waiters.push(r));
    }
  }

  /** Delivers one frame holding msgs. */
  push(...msgs) {
    this.onmessage?.({ data: msgs.map((m) => JSON.stringify(m)).join('\n') });
  }

  /** The server closes the connection. */
  drop(code, reason = '') {
    this.onclose?.({ code, reason });
  }
}

const opts = (server, extra) => ({
  url: 'http://example.test/rt/',
  user: { name: 'ada' },
  transports: ['ws'],
  WebSocket: server.WebSocket,
  minDelay: 1,
  maxDelay: 2,
  ackDelay: 1,
  heartbeat: 60_000,
  ...extra,
});

/** Connects, says welcome, joins "lobby" with doc at seq/v, returns the pieces. */
async function joined(t, doc = {}, { seq = 0, v = 0, roomOpts } = {}) {
  const server = new FakeServer();
  const client = connect(opts(server));
  t.after(() => client.close());
  const s = await server.accept(0);
  assert.deepEqual(await s.next(), { t: 'hello', user: { name: 'ada' } });
  assert.equal(s.url, 'ws://example.test/rt/ws');
  s.push({ t: 'welcome', sid: 's1', token: 'tok', resumed: false, window: 30000 });
  const room = client.join('lobby', roomOpts);
  const join = await s.next();
  assert.equal(join.t, 'join');
  assert.equal(join.room, 'lobby');
  assert.equal('since' in join, false);
  s.push({ sseq: 1, t: 'joined', room: 'lobby', cid: join.cid, mode: 'snapshot', seq, v, data: doc, members: [{ sid: 's1', user: { name: 'ada' }, transport: 'ws' }] });
  await room.ready;
  return { server, client, s, room, sseq: 1 };
}

describe('client', { timeout: 10_000 }, () => {
  test('optimistic patch, a remote patch before the ack, batched acks', async (t) => {
    const { s, room } = await joined(t);
    assert.deepEqual(room.doc, {});
    assert.deepEqual(room.members, [{ sid: 's1', user: { name: 'ada' }, transport: 'ws', self: true }]);
    assert.deepEqual(await s.next({ acks: true }), { t: 'ack', ack: 1 });

    const done = room.patch([{ op: 'add', path: '/a', value: 1 }]);
    assert.deepEqual(room.doc, { a: 1 }, 'applied locally at once');
    assert.equal(room.version, 0);
    assert.equal(room.pending, 1);
    const sent = await s.next();
    assert.deepEqual({ ...sent, cid: undefined }, { t: 'patch', room: 'lobby', cid: undefined, base: 0, ops: [{ op: 'add', path: '/a', value: 1 }] });

    // A second local patch waits until the first is acknowledged.
    room.patch([{ op: 'add', path: '/c', value: 3 }]);

    const changes = [];
    room.on('change', (c) => changes.push(c.cause));
    s.push({ sseq: 2, t: 'patch', room: 'lobby', from: 's2', seq: 1, v: 1, ops: [{ op: 'add', path: '/b', value: 2 }] });
    assert.deepEqual(room.confirmed, { b: 2 });
    assert.deepEqual(room.doc, { a: 1, b: 2, c: 3 });
    s.push({ sseq: 3, t: 'ok', room: 'lobby', cid: sent.cid, seq: 2, v: 2 });
    assert.deepEqual(await done, { seq: 2, v: 2, rebased: false });
    assert.deepEqual(room.confirmed, { a: 1, b: 2 });
    assert.deepEqual(changes, ['remote', 'ack']);

    const second = await s.next();
    assert.equal(second.base, 2);
    assert.deepEqual(await s.next({ acks: true }), { t: 'ack', ack: 3 }, 'one ack for sseq 2 and 3');
  });

  test('a conflict is rebased, a failed test is rejected', async (t) => {
    const { s, room } = await joined(t, { k: 'x' }, { seq: 4, v: 3 });
    const notes = [];
    room.on('rebased', (e) => notes.push(['rebased', e.code, e.rebased]));
    room.on('rejected', (e) => notes.push(['rejected', e.code, room.doc]));

    const first = room.patch([{ op: 'replace', path: '/k', value: 'mine' }]);
    const p1 = await s.next();
    s.push(
      { sseq: 2, t: 'patch', room: 'lobby', from: 's2', seq: 5, v: 4, ops: [{ op: 'remove', path: '/k' }] },
      { sseq: 3, t: 'error', room: 'lobby', cid: p1.cid, code: 'conflict', msg: 'stale', v: 4 },
    );
    const p1b = await s.next();
    assert.notEqual(p1b.cid, p1.cid, 'a rebased patch is a new message');
    assert.equal(p1b.base, 4);
    assert.deepEqual(p1b.ops, [{ op: 'add', path: '/k', value: 'mine' }]);
    assert.deepEqual(room.doc, { k: 'mine' });
    s.push({ sseq: 4, t: 'ok', room: 'lobby', cid: p1b.cid, seq: 6, v: 5 });
    assert.deepEqual(await first, { seq: 6, v: 5, rebased: true });

    const second = room.patch([{ op: 'test', path: '/k', value: 'mine' }, { op: 'replace', path: '/k', value: 'z' }]);
    const p2 = await s.next();
    s.push(
      { sseq: 5, t: 'patch', room: 'lobby', from: 's2', seq: 7, v: 6, ops: [{ op: 'replace', path: '/k', value: 'theirs' }] },
      { sseq: 6, t: 'error', room: 'lobby', cid: p2.cid, code: 'test_failed', msg: 'test failed', v: 6 },
    );
    await assert.rejects(second, { name: 'RoomwireError', code: 'test_failed' });
    assert.deepEqual(room.doc, { k: 'theirs' });
    assert.equal(room.pending, 0);
    assert.deepEqual(notes, [['rebased', 'conflict', [{ op: 'add', path: '/k', value: 'mine' }]], ['rejected', 'test_failed', { k: 'theirs' }]]);
  });

  test('a reconnect resumes the session and resends the patch in flight', async (t) => {
    const { server, client, s, room } = await joined(t);
    await s.next({ acks: true });
    const done = room.patch([{ op: 'add', path: '/a', value: 1 }]);
    const p = await s.next();
    s.push({ sseq: 2, t: 'presence', room: 'lobby', event: 'join', member: { sid: 's2', user: { name: 'bob' }, transport: 'ws' } });
    const states = [];
    client.on('state', (e) => states.push(e.state));
    s.drop(4000, 'server shutting down');

    const s2 = await server.accept(1);
    assert.deepEqual(await s2.next(), { t: 'hello', user: { name: 'ada' }, resume: { sid: 's1', token: 'tok', ack: 2 } });
    s2.push({ t: 'welcome', sid: 's1', token: 'tok', resumed: true, window: 30000 });
    const again = await s2.next();
    assert.equal(again.t, 'patch', 'no rejoin after a resume');
    assert.equal(again.cid, p.cid, 'the same client message id, so the server applies it once');
    s2.push({ sseq: 3, t: 'ok', room: 'lobby', cid: p.cid, seq: 1, v: 1 });
    await done;
    assert.deepEqual(states, ['reconnecting', 'open']);
    assert.deepEqual(room.members.map((m) => m.user.name), ['ada', 'bob']);
  });

  test('a failed resume rejoins with since; a replayed own patch settles it', async (t) => {
    const { server, s, room } = await joined(t, { n: 0 }, { seq: 3, v: 2 });
    const done = room.patch([{ op: 'replace', path: '/n', value: 1 }]);
    const p = await s.next();
    s.drop(1006);

    const s2 = await server.accept(1);
    const hello = await s2.next();
    assert.equal(hello.resume.sid, 's1');
    s2.push({ t: 'welcome', sid: 's9', token: 'tok9', resumed: false, window: 30000 });
    const join = await s2.next();
    assert.equal(join.since, 3);
    // The old session's patch made it: the replay carries it (from the old sid).
    s2.push(
      { sseq: 1, t: 'joined', room: 'lobby', cid: join.cid, mode: 'replay', seq: 3, members: [{ sid: 's9', user: { name: 'ada' }, transport: 'ws' }] },
      { sseq: 2, t: 'patch', room: 'lobby', from: 's1', cid: p.cid, seq: 4, v: 3, ops: [{ op: 'replace', path: '/n', value: 1 }] },
      { sseq: 3, t: 'event', room: 'lobby', from: 's5', seq: 5, v: 3, data: 'hi' },
    );
    assert.deepEqual(await done, { seq: 4, v: 3, rebased: false });
    assert.deepEqual(room.confirmed, { n: 1 });
    assert.equal(room.seq, 5);
    assert.deepEqual(await s2.next({ acks: true }), { t: 'ack', ack: 3 }, 'nothing resent: the patch is settled');
  });

  test('a gap, or a committed patch that does not apply, asks for a snapshot', async (t) => {
    const { s, room } = await joined(t, { a: 1 }, { seq: 1, v: 1 });
    const errors = [];
    room.on('error', (e) => errors.push(e.code));
    const docsAtJoined = [];
    room.on('joined', () => docsAtJoined.push(room.doc));
    s.push({ sseq: 2, t: 'patch', room: 'lobby', from: 's2', seq: 2, v: 2, ops: [{ op: 'add', path: '/__proto__/polluted', value: 1 }] });
    assert.equal(({}).polluted, undefined);
    const join = await s.next();
    assert.equal(join.t, 'join');
    assert.equal('since' in join, false, 'a snapshot, not a replay');
    // Entries before the snapshot are skipped; the snapshot replaces the document.
    s.push(
      { sseq: 3, t: 'patch', room: 'lobby', from: 's2', seq: 3, v: 3, ops: [{ op: 'add', path: '/b', value: 1 }] },
      { sseq: 4, t: 'joined', room: 'lobby', cid: join.cid, mode: 'snapshot', seq: 3, v: 3, data: { a: 1, b: 1 }, members: [] },
      { sseq: 5, t: 'patch', room: 'lobby', from: 's2', seq: 5, v: 4, ops: [{ op: 'add', path: '/c', value: 1 }] },
    );
    assert.deepEqual(room.doc, { a: 1, b: 1 });
    assert.deepEqual(docsAtJoined, [{ a: 1, b: 1 }], 'listeners see the new document');
    const join2 = await s.next();
    assert.equal('since' in join2, false, 'seq 5 after 3 is a gap');
    assert.deepEqual(errors, ['resync', 'resync']);
  });

  test('duplicate session seqs are ignored', async (t) => {
    const { s, room } = await joined(t);
    const seen = [];
    room.on('presence', (e) => seen.push(e.event));
    room.on('event', (e) => seen.push(e.data));
    // Presence has no room seq: only the session seq can tell a duplicate.
    const pres = { sseq: 2, t: 'presence', room: 'lobby', event: 'join', member: { sid: 's2', user: {}, transport: 'ws' } };
    const ev = { sseq: 3, t: 'event', room: 'lobby', from: 's2', seq: 1, v: 0, data: 'once' };
    s.push(pres, pres, ev);
    s.push(ev, pres);
    assert.deepEqual(seen, ['join', 'once']);
  });

  test('events and ephemeral values', async (t) => {
    const { s, room } = await joined(t);
    const pub = room.publish({ hello: 'world' });
    const m = await s.next();
    assert.deepEqual({ ...m, cid: undefined }, { t: 'pub', room: 'lobby', cid: undefined, data: { hello: 'world' } });
    s.push({ sseq: 2, t: 'ok', room: 'lobby', cid: m.cid, seq: 1, v: 0 });
    assert.deepEqual(await pub, { seq: 1 });
    assert.equal(room.seq, 1);

    assert.equal(room.ephemeral('cursor', { x: 1 }), true);
    assert.deepEqual(await s.next(), { t: 'eph', room: 'lobby', key: 'cursor', data: { x: 1 } });
    const eph = [];
    room.on('eph', (e) => eph.push(e));
    s.push({ t: 'eph', room: 'lobby', from: 's2', key: 'cursor', data: { x: 9 } });
    assert.deepEqual(eph, [{ from: 's2', key: 'cursor', data: { x: 9 } }]);
  });

  test('a terminal close code stops the client', async (t) => {
    const { client, s, room } = await joined(t);
    const pending = room.patch([{ op: 'add', path: '/a', value: 1 }]);
    const closed = new Promise((resolve) => client.on('close', resolve));
    s.drop(4101, 'unauthorized');
    assert.deepEqual(await closed, { code: 4101, reason: 'unauthorized' });
    assert.equal(client.state, 'closed');
    await assert.rejects(pending, { code: 'closed' });
  });

  test('heartbeat: a ping when idle, a redial when silent', async (t) => {
    const server = new FakeServer();
    const client = connect(opts(server, { heartbeat: 40 }));
    t.after(() => client.close());
    const s = await server.accept(0);
    await s.next(); // hello
    s.push({ t: 'welcome', sid: 's1', token: 'tok', resumed: false, window: 30000 });
    assert.deepEqual(await s.next(), { t: 'ping' });
    s.push({ t: 'pong' });
    // Now the server says nothing more: the client gives up on it and dials again.
    const s2 = await server.accept(1);
    assert.ok(s.closedByClient, 'the silent connection was closed');
    assert.equal((await s2.next()).resume.sid, 's1');
  });

  test('a transport that throws at once is retried', async (t) => {
    const server = new FakeServer();
    let fail = true;
    const Flaky = class extends server.WebSocket {
      constructor(url) {
        if (fail) {
          fail = false;
          throw new Error('blocked by policy');
        }
        super(url);
      }
    };
    const client = connect(opts(server, { WebSocket: Flaky }));
    t.after(() => client.close());
    const s = await server.accept(0);
    assert.equal((await s.next()).t, 'hello');
  });

  test('close leaves the rooms, ends the session and fails what is pending', async (t) => {
    const { client, s, room } = await joined(t);
    await s.next({ acks: true });
    const pending = room.publish('late');
    client.close();
    const sent = s.sent.slice(-3);
    assert.equal(sent[0].t, 'pub');
    assert.deepEqual({ ...sent[1], cid: undefined }, { t: 'leave', room: 'lobby', cid: undefined });
    assert.deepEqual(sent[2], { t: 'bye' });
    assert.ok(s.closedByClient, 'the socket is closed');
    assert.equal(client.state, 'closed');
    await assert.rejects(pending, { code: 'closed' });
  });

  test('a patch that does not apply to the view is refused at once', async (t) => {
    const { room } = await joined(t);
    await assert.rejects(room.patch([{ op: 'remove', path: '/nope' }]), { code: 'bad_patch' });
    await assert.rejects(room.patch([{ op: 'add', path: '/__proto__/x', value: 1 }]), { code: 'bad_patch' });
    assert.equal(room.pending, 0);
  });
});

// ---------------------------------------------------------------------------
// HTTP transports, fallback, upgrade and persistence, against fakes
// ---------------------------------------------------------------------------

/** A scripted HTTP server behind a fake fetch: send requests are answered 204 at once, the rest by the test. */
class FakeHttp {
  /** Every request, in order. */
  requests = [];
  /** Client messages that came by send, decoded, with the session header they carried. */
  sent = [];
  #read = 0;
  #sentRead = 0;
  #waiters = [];

  fetch = (url, init) =>
    new Promise((resolve, reject) => {
      const u = new URL(url);
      const req = {
        path: u.pathname,
        url: u,
        headers: init.headers ?? {},
        body: init.body ?? '',
        keepalive: init.keepalive,
        answered: false,
        respond(status, body = '') {
          if (req.answered) return;
          req.answered = true;
          const text = typeof body === 'string' ? body : JSON.stringify(body);
          resolve({ status, text: async () => text });
        },
      };
      init.signal?.addEventListener('abort', () => {
        req.answered = true;
        reject(Object.assign(new Error('aborted'), { name: 'AbortError' }));
      });
      this.requests.push(req);
      if (u.pathname.endsWith('/send')) {
        for (const line of req.body.split('\n')) this.sent.push({ ...JSON.parse(line), _sid: req.headers['Roomwire-Session'] });
        setTimeout(() => req.respond(204), 0);
      }
      for (const w of this.#waiters.splice(0)) w();
    });

  /** The next request (other than send) whose path ends with suffix. */
  async next(suffix) {
    for (;;) {
      while (this.#read < this.requests.length) {
        const r = this.requests[this.#read++];
        if (r.path.endsWith('/send')) continue;
        assert.ok(r.path.endsWith(suffix), `got ${r.path}, want …${suffix}`);
        return r;
      }
      await new Promise((r) => this.#waiters.push(r));
    }
  }

  /** The next message that came by send (acks skipped unless wanted). */
  async nextSent({ acks = false } = {}) {
    for (;;) {
      while (this.#sentRead < this.sent.length) {
        const m = this.sent[this.#sentRead++];
        if (acks || m.t !== 'ack') return m;
      }
      await new Promise((r) => this.#waiters.push(r));
    }
  }
}

/** EventSource stand-in: the test pushes events into the latest instance. */
function fakeEventSource() {
  const all = [];
  const waiters = [];
  class FakeES {
    closed = false;
    constructor(url) {
      this.url = new URL(url);
      all.push(this);
      for (const w of waiters.splice(0)) w();
    }
    close() {
      this.closed = true;
    }
    event(msg) {
      this.onmessage?.({ data: JSON.stringify(msg), lastEventId: msg.sseq ? String(msg.sseq) : '' });
    }
    fail() {
      this.onerror?.({});
    }
  }
  FakeES.all = all;
  FakeES.opened = async (n) => {
    while (all.length <= n) await new Promise((r) => waiters.push(r));
    return all[n];
  };
  return FakeES;
}

const httpOpts = (http, ES, extra) => ({
  url: 'http://example.test/rt/',
  user: { name: 'ada' },
  fetch: http.fetch,
  EventSource: ES,
  minDelay: 1,
  maxDelay: 2,
  ackDelay: 1,
  heartbeat: 60_000,
  ...extra,
});

const welcomeOf = (sid, extra) => ({ t: 'welcome', sid, token: 'tok-' + sid, resumed: false, window: 30000, ...extra });
const snapshot = (cid, sid, transport, extra) => ({ sseq: 1, t: 'joined', room: 'lobby', cid, mode: 'snapshot', seq: 0, v: 0, data: {}, members: [{ sid, user: { name: 'ada' }, transport }], ...extra });

describe('HTTP transports', { timeout: 10_000 }, () => {
  test('SSE: hello, a ticket in the URL and the token in headers only, welcome after the first event', async (t) => {
    const http = new FakeHttp();
    const ES = fakeEventSource();
    const client = connect(httpOpts(http, ES, { transport: 'sse' }));
    t.after(() => client.close());

    const hello = await http.next('/rt/sse/hello');
    assert.deepEqual(JSON.parse(hello.body), { t: 'hello', user: { name: 'ada' } });
    assert.equal(hello.headers['Roomwire-Token'], undefined);
    hello.respond(200, welcomeOf('s1', { ticket: 'T1' }));

    const es = await ES.opened(0);
    assert.equal(es.url.pathname, '/rt/sse/events');
    assert.equal(es.url.search, '?ticket=T1');
    const probe = await http.nextSent();
    assert.deepEqual({ t: probe.t, sid: probe._sid }, { t: 'ping', sid: 's1' });
    const sendReq = http.requests.find((r) => r.path.endsWith('/send'));
    assert.equal(sendReq.headers['Roomwire-Token'], 'tok-s1');
    assert.equal(client.state, 'connecting', 'no welcome before the stream proves itself');

    const welcomed = new Promise((r) => client.on('welcome', r));
    es.event({ t: 'pong', data: 'sse-probe' });
    assert.deepEqual(await welcomed, { sid: 's1', resumed: false, window: 30000, transport: 'sse' });
    assert.equal(client.transport, 'sse');

    const room = client.join('lobby');
    const join = await http.nextSent();
    assert.equal(join.t, 'join');
    es.event(snapshot(join.cid, 's1', 'sse'));
    await room.ready;
    assert.deepEqual(await http.nextSent({ acks: true }), { t: 'ack', ack: 1, _sid: 's1' });

    // Patches are sent one request at a time, in order.
    room.patch([{ op: 'add', path: '/a', value: 1 }]);
    const p = await http.nextSent();
    assert.equal(p.t, 'patch');
    es.event({ sseq: 2, t: 'ok', room: 'lobby', cid: p.cid, seq: 1, v: 1 });
    assert.deepEqual(room.confirmed, { a: 1 });
  });

  test('SSE: a dropped stream gets a new ticket, acknowledging what was processed', async (t) => {
    const http = new FakeHttp();
    const ES = fakeEventSource();
    const client = connect(httpOpts(http, ES, { transport: 'sse' }));
    t.after(() => client.close());
    (await http.next('/sse/hello')).respond(200, welcomeOf('s1', { ticket: 'T1' }));
    const es = await ES.opened(0);
    assert.equal((await http.nextSent()).t, 'ping');
    es.event({ t: 'pong' });
    const room = client.join('lobby');
    const join = await http.nextSent();
    assert.equal(join.t, 'join');
    es.event(snapshot(join.cid, 's1', 'sse'));
    await room.ready;

    es.fail();
    assert.ok(es.closed, 'EventSource may not retry with its used ticket');
    const ticket = await http.next('/sse/ticket');
    assert.deepEqual(JSON.parse(ticket.body), { ack: 1 });
    assert.equal(ticket.headers['Roomwire-Session'], 's1');
    ticket.respond(200, { ticket: 'T2' });
    const es2 = await ES.opened(1);
    assert.equal(es2.url.searchParams.get('ticket'), 'T2');
    assert.equal(client.state, 'open', 'a new stream is not a reconnect');

    // A 410 answer is the close message: the client resumes with a new hello.
    es2.fail(); // nothing arrived on es2: the link gives up
    const hello = await http.next('/sse/hello');
    assert.deepEqual(JSON.parse(hello.body).resume, { sid: 's1', token: 'tok-s1', ack: 1 });
  });

  test('SSE that a proxy buffers: long-polling takes over, the abandoned session is closed', async (t) => {
    const http = new FakeHttp();
    const ES = fakeEventSource();
    const client = connect(httpOpts(http, ES, { transports: ['sse', 'longpoll'], sseTimeout: 30 }));
    t.after(() => client.close());
    (await http.next('/sse/hello')).respond(200, welcomeOf('s1', { ticket: 'T1' }));
    await ES.opened(0); // ...and never delivers anything

    const close = await http.next('/sse/close');
    assert.equal(close.headers['Roomwire-Session'], 's1');
    const hello = await http.next('/longpoll/hello');
    assert.equal(JSON.parse(hello.body).resume, undefined, 'the client never had the SSE session');
    hello.respond(200, welcomeOf('s2'));
    const poll = await http.next('/longpoll/poll');
    assert.deepEqual(JSON.parse(poll.body), { ack: 0 });
    assert.equal(poll.headers['Roomwire-Session'], 's2');
    assert.equal(client.transport, 'longpoll');
    assert.ok(ES.all[0].closed);

    const room = client.join('lobby');
    const join = await http.nextSent();
    poll.respond(200, [snapshot(join.cid, 's2', 'longpoll')]);
    await room.ready;
    const poll2 = await http.next('/longpoll/poll');
    assert.deepEqual(JSON.parse(poll2.body), { ack: 1 }, 'each poll acknowledges what came before');
    poll2.respond(200, [{ sseq: 2, t: 'event', room: 'lobby', cid: 'x', seq: 1, v: 0, from: 's9', data: 'hi' }]);
    const poll3 = await http.next('/longpoll/poll');
    assert.deepEqual(JSON.parse(poll3.body), { ack: 2 });
    assert.equal(room.seq, 1);

    // A send answered 410 carries the close message: resume elsewhere.
    poll3.respond(200, [{ t: 'close', code: 4001, reason: 'slow consumer', reconnect: true }]);
    const again = await http.next('/longpoll/hello');
    assert.deepEqual(JSON.parse(again.body).resume, { sid: 's2', token: 'tok-s2', ack: 2 });
  });

  test('WebSocket blocked: SSE; later the session moves up to WebSocket with no gap or duplicate', async (t) => {
    const server = new FakeServer();
    let blocked = true;
    let refused = 0;
    // A WebSocket that a proxy refuses: it errors and never opens.
    function Gate(url) {
      if (!blocked) return new server.WebSocket(url);
      refused++;
      const ws = { send() {}, close() {} };
      setTimeout(() => ws.onerror?.({}), 0);
      return ws;
    }
    const http = new FakeHttp();
    const ES = fakeEventSource();
    const client = connect(httpOpts(http, ES, { WebSocket: Gate, upgradeDelay: 20 }));
    t.after(() => client.close());
    const moves = [];
    client.on('transport', (e) => moves.push(e));

    (await http.next('/sse/hello')).respond(200, welcomeOf('s1', { ticket: 'T1' }));
    const es = await ES.opened(0);
    assert.equal((await http.nextSent()).t, 'ping');
    es.event({ t: 'pong' });
    const room = client.join('lobby');
    const join = await http.nextSent();
    es.event(snapshot(join.cid, 's1', 'sse'));
    es.event({ sseq: 2, t: 'event', room: 'lobby', cid: 'e1', seq: 1, v: 0, from: 's9', data: 1 });
    await room.ready;
    assert.equal(client.transport, 'sse');
    const events = [];
    room.on('event', (e) => events.push(e.seq));

    // The first upgrade attempt meets the blocked WebSocket; a later one opens.
    while (refused < 2) await new Promise((r) => setTimeout(r, 5));
    assert.equal(client.transport, 'sse', 'a failed upgrade leaves the session where it was');
    blocked = false;
    const ws = await server.accept(0);
    await ws.next();
    const hello = ws.sent[0];
    assert.deepEqual(hello.resume, { sid: 's1', token: 'tok-s1', ack: 2 });
    assert.ok(es.closed, 'the SSE stream is closed once WebSocket opened');
    // The server sends everything after the ack again; older ones are ignored.
    ws.push(
      { t: 'welcome', sid: 's1', token: 'tok-s1', resumed: true, window: 30000 },
      { sseq: 2, t: 'event', room: 'lobby', cid: 'e1', seq: 1, v: 0, from: 's9', data: 1 },
      { sseq: 3, t: 'event', room: 'lobby', cid: 'e2', seq: 2, v: 0, from: 's9', data: 2 },
    );
    assert.equal(client.transport, 'ws');
    assert.deepEqual(events, [2]);
    assert.deepEqual(moves, [{ transport: 'ws', previous: 'sse', why: 'upgrade' }]);
    assert.deepEqual(await ws.next({ acks: true }), { t: 'ack', ack: 3 });
  });

  test('persist: a reload resumes the session and resends unconfirmed messages with their cids', async (t) => {
    const store = new Map();
    const storage = { getItem: (k) => store.get(k) ?? null, setItem: (k, v) => store.set(k, v), removeItem: (k) => store.delete(k) };
    const server = new FakeServer();
    const first = connect(opts(server, { persist: 'rw', storage }));
    const s = await server.accept(0);
    await s.next();
    s.push({ t: 'welcome', sid: 's1', token: 'tok', resumed: false, window: 30000 });
    const room = first.join('lobby');
    const join = await s.next();
    s.push({ sseq: 1, t: 'joined', room: 'lobby', cid: join.cid, mode: 'snapshot', seq: 0, v: 0, data: {}, members: [] });
    await room.ready;
    await s.next({ acks: true });
    room.patch([{ op: 'add', path: '/a', value: 1 }]);
    const patch = await s.next();
    room.publish({ text: 'hi' });
    await s.next();
    s.drop(1006); // the page is killed before any answer
    await new Promise((r) => setTimeout(r, 0));
    const saved = JSON.parse(store.get('rw'));
    assert.deepEqual({ sid: saved.sid, token: saved.token, ack: saved.ack }, { sid: 's1', token: 'tok', ack: 1 });
    assert.deepEqual(saved.rooms.lobby.patches, [{ cid: patch.cid, ops: [{ op: 'add', path: '/a', value: 1 }] }]);
    assert.equal(saved.rooms.lobby.pubs.length, 1);

    // The reloaded page: a new client with the same storage.
    const server2 = new FakeServer();
    const second = connect(opts(server2, { persist: 'rw', storage }));
    t.after(() => second.close());
    t.after(() => first.close());
    const s2 = await server2.accept(0);
    assert.deepEqual((await s2.next()).resume, { sid: 's1', token: 'tok', ack: 1 });
    s2.push({ t: 'welcome', sid: 's1', token: 'tok', resumed: true, window: 30000 });
    const room2 = second.join('lobby');
    const join2 = await s2.next();
    assert.equal(join2.t, 'join');
    assert.notEqual(join2.cid, patch.cid);
    s2.push({ sseq: 2, t: 'joined', room: 'lobby', cid: join2.cid, mode: 'snapshot', seq: 0, v: 0, data: {}, members: [] });
    await room2.ready;
    const resent = [await s2.next(), await s2.next()].sort((a, b) => a.t.localeCompare(b.t));
    assert.deepEqual(resent.map((m) => [m.t, m.cid === patch.cid || m.t === 'pub']), [['patch', true], ['pub', true]]);
    assert.deepEqual(room2.doc, { a: 1 }, 'the restored patch shows at once');
    s2.push({ sseq: 3, t: 'ok', room: 'lobby', cid: patch.cid, seq: 1, v: 1 });
    assert.deepEqual(room2.confirmed, { a: 1 });
    second.close();
    const after = JSON.parse(store.get('rw'));
    assert.equal(after.sid, undefined, 'close ends the session: it is not kept');
    assert.equal(after.rooms.lobby?.patches.length ?? 0, 0);
  });
});

// ---------------------------------------------------------------------------
// The DataChannel transport (rtc), against a fake RTCPeerConnection
// ---------------------------------------------------------------------------

/** A fake RTCDataChannel: records what the client sends, lets the test deliver. */
class FakeChannel {
  readyState = 'connecting';
  bufferedAmount = 0;
  binaryType = 'blob';
  /** Every DataChannel message sent, as sent. */
  sent = [];
  #waiters = [];
  constructor(label, init) {
    this.label = label;
    this.init = init;
  }
  send(data) {
    assert.equal(this.readyState, 'open', `send on ${this.label} before it is open`);
    this.sent.push(data);
    for (const w of this.#waiters.splice(0)) w();
  }
  close() {
    this.readyState = 'closed';
  }
  open() {
    this.readyState = 'open';
    this.onopen?.({});
  }
  /** Delivers a DataChannel message (string, or bytes as an ArrayBuffer). */
  deliver(data) {
    this.onmessage?.({ data });
  }
  /** The decoded client messages sent so far. */
  messages() {
    return this.sent.flatMap((d) => d.split('\n').map((l) => JSON.parse(l)));
  }
  /** Resolves when the client has sent n DataChannel messages here. */
  async waitSent(n) {
    while (this.sent.length < n) await new Promise((r) => this.#waiters.push(r));
  }
  /** Resolves with the first client message sent here that pred accepts. */
  async waitFor(pred) {
    for (;;) {
      const m = this.messages().find(pred);
      if (m) return m;
      await new Promise((r) => this.#waiters.push(r));
    }
  }
}

/** A fake RTCPeerConnection; instances are kept in all. */
function fakePeerConnection() {
  const all = [];
  const waiters = [];
  class FakePC {
    connectionState = 'new';
    channels = [];
    closed = false;
    localDescription = null;
    remoteDescription = null;
    constructor(config) {
      this.config = config;
      all.push(this);
      for (const w of waiters.splice(0)) w();
    }
    createDataChannel(label, init) {
      assert.equal(this.localDescription, null, 'channels are created before the offer');
      const ch = new FakeChannel(label, init);
      this.channels.push(ch);
      return ch;
    }
    async createOffer() {
      return { type: 'offer', sdp: 'v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n' };
    }
    async setLocalDescription(d) {
      this.localDescription = d;
    }
    async setRemoteDescription(d) {
      this.remoteDescription = d;
    }
    close() {
      this.closed = true;
      this.connectionState = 'closed';
    }
    /** An icecandidate event; c null for the end of candidates. */
    candidate(c) {
      this.onicecandidate?.({ candidate: c && { toJSON: () => c } });
    }
    state(s) {
      this.connectionState = s;
      this.onconnectionstatechange?.({});
    }
    get rel() {
      return this.channels.find((c) => c.label === 'roomwire');
    }
    get eph() {
      return this.channels.find((c) => c.label === 'roomwire-eph');
    }
  }
  FakePC.all = all;
  FakePC.made = async (n) => {
    while (all.length <= n) await new Promise((r) => waiters.push(r));
    return all[n];
  };
  return FakePC;
}

const rtcOpts = (http, PC, extra) => ({
  url: 'http://example.test/rt/',
  user: { name: 'ada' },
  transport: 'rtc',
  fetch: http.fetch,
  RTCPeerConnection: PC,
  minDelay: 1,
  maxDelay: 2,
  ackDelay: 1,
  heartbeat: 60_000,
  ...extra,
});

const udp = (n) => ({ candidate: `candidate:${n} 1 udp 2130706431 127.0.0.1 ${50000 + n} typ host`, sdpMid: '0', sdpMLineIndex: 0, usernameFragment: 'u' });

/** Negotiates and opens an rtc client up to its welcome; returns the pieces. */
async function rtcWelcomed(t, extra) {
  const http = new FakeHttp();
  const PC = fakePeerConnection();
  const client = connect(rtcOpts(http, PC, extra));
  t.after(() => client.close());
  const pc = await PC.made(0);
  const offer = await http.next('/rt/rtc/offer');
  offer.respond(200, { id: 'neg-1', type: 'answer', sdp: 'v=0\r\nanswer\r\n' });
  pc.state('connecting');
  pc.rel.open();
  pc.eph.open();
  await pc.rel.waitSent(1);
  assert.deepEqual(pc.rel.messages(), [{ t: 'hello', user: { name: 'ada' } }]);
  pc.rel.deliver(JSON.stringify(welcomeOf('s1')));
  pc.state('connected');
  assert.equal(client.state, 'open');
  assert.equal(client.transport, 'rtc');
  return { http, PC, pc, client };
}

describe('DataChannel transport', { timeout: 10_000 }, () => {
  test('not in the default order; forced, it negotiates: channels, offer, answer, trickled candidates in order', async (t) => {
    const { TRANSPORTS } = await import('./roomwire.js');
    assert.deepEqual([...TRANSPORTS], ['ws', 'sse', 'longpoll']);

    const http = new FakeHttp();
    const PC = fakePeerConnection();
    const client = connect(rtcOpts(http, PC));
    t.after(() => client.close());
    const pc = await PC.made(0);
    assert.deepEqual(pc.config, { iceServers: [] });
    assert.deepEqual(pc.channels.map((c) => [c.label, c.init]), [['roomwire', undefined], ['roomwire-eph', { ordered: false, maxRetransmits: 0 }]]);

    // Candidates before the answer wait for the negotiation id; TCP ones are not sent.
    pc.candidate(udp(1));
    pc.candidate({ ...udp(2), candidate: 'candidate:2 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active' });
    const offer = await http.next('/rt/rtc/offer');
    assert.deepEqual(JSON.parse(offer.body), { type: 'offer', sdp: pc.localDescription.sdp });
    assert.equal(offer.headers['Content-Type'], 'application/json');
    pc.candidate(udp(3));
    assert.equal(http.requests.length, 1, 'no candidate request before the answer');
    offer.respond(200, { id: 'neg-1', type: 'answer', sdp: 'v=0\r\nanswer\r\n' });

    const c1 = await http.next('/rt/rtc/candidate');
    assert.deepEqual(JSON.parse(c1.body), { id: 'neg-1', candidates: [udp(1), udp(3)] });
    assert.deepEqual(pc.remoteDescription, { type: 'answer', sdp: 'v=0\r\nanswer\r\n' });
    // One request at a time: what comes meanwhile goes in the next one, with the end marker.
    pc.candidate(udp(4));
    pc.candidate(null);
    c1.respond(204);
    const c2 = await http.next('/rt/rtc/candidate');
    assert.deepEqual(JSON.parse(c2.body), { id: 'neg-1', candidates: [udp(4), { candidate: '' }] });
    c2.respond(204);

    // hello goes on roomwire once it opens; the welcome comes back on it.
    pc.rel.open();
    await pc.rel.waitSent(1);
    assert.deepEqual(pc.rel.messages(), [{ t: 'hello', user: { name: 'ada' } }]);
    pc.rel.deliver(JSON.stringify(welcomeOf('s1')));
    assert.equal(client.state, 'open');
    assert.equal(client.transport, 'rtc');
  });

  test('durable messages on roomwire, eph, keyed relay, acks and measured pings on roomwire-eph', async (t) => {
    const { pc, client } = await rtcWelcomed(t);
    const room = client.join('lobby');
    await pc.rel.waitSent(2);
    const join = pc.rel.messages()[1];
    assert.equal(join.t, 'join');
    pc.rel.deliver(JSON.stringify(snapshot(join.cid, 's1', 'rtc')));
    await room.ready;

    room.ephemeral('cursor', { x: 1 });
    room.publish('durable');
    const ping = client.ping();
    await pc.eph.waitFor((m) => m.t === 'eph' && m.key === 'cursor');
    await pc.eph.waitFor((m) => m.t === 'ack' && m.ack === 1);
    const p = await pc.eph.waitFor((m) => m.t === 'ping');
    assert.ok(p.data, 'the measured ping carries data');
    await pc.rel.waitFor((m) => m.t === 'pub');
    assert.ok(!pc.rel.messages().some((m) => m.t === 'eph' || m.t === 'ping' || m.t === 'ack'));
    // The pong may come on roomwire-eph.
    pc.eph.deliver(JSON.stringify({ t: 'pong', data: p.data }));
    assert.ok((await ping) >= 0);

    // An ephemeral value from another member arrives on roomwire-eph.
    const got = new Promise((r) => room.on('eph', r));
    pc.eph.deliver(JSON.stringify({ t: 'eph', room: 'lobby', from: 's2', key: 'cursor', data: 7 }));
    assert.equal((await got).data, 7);

    // With roomwire-eph not open, everything goes on roomwire.
    pc.eph.readyState = 'closing';
    const before = pc.rel.sent.length;
    room.ephemeral('other', { x: 2 });
    await pc.rel.waitSent(before + 1);
    assert.equal(pc.rel.messages().at(-1).t, 'eph');
    // Nothing durable ever goes on roomwire-eph, nor the data-less heartbeat ping.
    assert.ok(pc.eph.messages().every((m) => ['eph', 'ack', 'ping'].includes(m.t) && (m.t !== 'ping' || m.data)));
  });

  test('a large server message in binary pieces and a final string piece is reassembled, UTF-8 split anywhere', async (t) => {
    const { pc, client } = await rtcWelcomed(t);
    const room = client.join('lobby');
    await pc.rel.waitSent(2);
    const join = pc.rel.messages()[1];
    const big = { text: 'é€😀'.repeat(20000), n: [1, 2, 3] };
    const line = JSON.stringify(snapshot(join.cid, 's1', 'rtc', { data: big }));
    const bytes = new TextEncoder().encode(line + '\n' + JSON.stringify({ t: 'eph', room: 'lobby', from: 's2', key: 'k', data: 1 }));
    const chunk = 65536 - 7; // not on a character boundary
    const gotEph = new Promise((r) => room.on('eph', r));
    // Binary pieces cut anywhere, even inside a character; the final piece
    // is a string, so it must start on a character (a UTF-8 lead byte).
    let at = 0;
    let pieces = 0;
    while (bytes.length - at > chunk) {
      let end = at + chunk;
      if (bytes.length - end <= chunk) while ((bytes[end] & 0xc0) === 0x80) end--;
      pc.rel.deliver(bytes.slice(at, end).buffer);
      at = end;
      pieces++;
    }
    assert.ok(pieces >= 2);
    assert.equal(room.doc, undefined, 'nothing is delivered before the final string piece');
    const tail = new TextDecoder().decode(bytes.slice(at));
    assert.equal(new TextEncoder().encode(tail).length, bytes.length - at);
    pc.rel.deliver(tail);
    await room.ready;
    assert.deepEqual(room.doc, big);
    assert.equal((await gotEph).data, 1);
  });

  test('ICE failure after the welcome drops the connection (1006) and the client redials over rtc', async (t) => {
    const { PC, pc, client } = await rtcWelcomed(t);
    const states = [];
    client.on('state', (s) => states.push(s));
    pc.state('failed');
    assert.equal(states[0].state, 'reconnecting');
    assert.equal(states[0].code, 1006);
    assert.ok(pc.closed, 'the PeerConnection is closed');
    const pc2 = await PC.made(1);
    assert.equal(pc2.channels.length, 2);
  });

  test('ICE disconnected longer than rtcDisconnectedTimeout drops the connection; a short blip does not', async (t) => {
    const { PC, pc, client } = await rtcWelcomed(t, { rtcDisconnectedTimeout: 20 });
    const lost = new Promise((r) => client.on('state', (s) => s.state === 'reconnecting' && r(s)));
    pc.state('disconnected');
    pc.state('connected');
    pc.state('disconnected');
    const s = await lost;
    assert.equal(s.code, 1006);
    assert.match(s.reason, /disconnected/);
    await PC.made(1);
  });

  test('a server without the transport: the offer is refused with 404, CODE_UNUSABLE', async (t) => {
    const http = new FakeHttp();
    const PC = fakePeerConnection();
    const client = connect(rtcOpts(http, PC));
    t.after(() => client.close());
    const pc = await PC.made(0);
    const lost = new Promise((r) => client.on('state', (s) => s.state === 'reconnecting' && r(s)));
    (await http.next('/rt/rtc/offer')).respond(404, '404 page not found\n');
    const s = await lost;
    assert.equal(s.code, CODE_UNUSABLE);
    assert.match(s.reason, /404/);
    assert.ok(pc.closed);
  });

  test('close says bye on roomwire before the PeerConnection goes', async (t) => {
    const { pc, client } = await rtcWelcomed(t);
    client.close();
    assert.deepEqual(pc.rel.messages().at(-1), { t: 'bye' });
    assert.ok(pc.closed);
  });
});
