// Wire-level behaviour of the client against a scriptable fake server (no Rust binary needed).
import { test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { createClient, LiveError, get } from '../src/index.js';
import { FakeServer } from '../test-helpers/fake-server.js';
import { waitFor, withTimeout, until } from '../test-helpers/wait.js';

/** @type {FakeServer} */ let server;
/** @type {any[]} */ let clients = [];

/** Default fake behaviour: streams return `[]` on topic = path; RPC `t/echo` echoes. */
function defaultCall(call, sock) {
	if (call.stream) sock.reply(call.id, { ok: true, data: [], topic: call.rpc.replace('/', ':'), merge: 'crud', key: 'id' });
	else if (call.rpc === 't/echo' && call.id) sock.reply(call.id, { ok: true, data: call.args });
}

async function setup(onCall = defaultCall, clientOpts = {}) {
	server = await new FakeServer({ onCall }).start();
	const client = createClient({ url: server.url, WebSocket, reconnect: { baseMs: 10, maxMs: 50 }, ...clientOpts });
	clients.push(client);
	return client;
}

beforeEach(() => {
	clients = [];
});
afterEach(async () => {
	for (const c of clients) c.close();
	await server?.stop();
	server = undefined;
});

test('hello first, then three subscriptions made in one microtask go out as ONE batch frame', async () => {
	const client = await setup();
	const a = client.stream('t/a', { merge: 'crud' });
	const b = client.stream('t/b', { merge: 'crud' });
	const c = client.stream('t/c', { merge: 'crud' });
	const unsubs = [a('x').subscribe(() => {}), b().subscribe(() => {}), c(1, 2).subscribe(() => {})];
	const sock = server.last ?? (await server.nextConnection());
	const batch = await sock.waitFrame((f) => Array.isArray(f.batch));
	assert.deepEqual(sock.frames[0], { type: 'hello', caps: ['batch'] });
	assert.equal(sock.frames.length, 2, 'hello + one batch frame');
	assert.deepEqual(
		batch.batch.map((/** @type {any} */ e) => [e.rpc, e.args, e.stream]),
		[['t/a', ['x'], true], ['t/b', [], true], ['t/c', [1, 2], true]]
	);
	assert.equal(new Set(batch.batch.map((/** @type {any} */ e) => e.id)).size, 3, 'distinct ids');
	await waitFor(a('x'), (v) => Array.isArray(v));
	unsubs.forEach((u) => u());
});

test('batch replies, live events, batch events, ordering rule, reqId replay marker', async () => {
	/** @type {any[]} */ const held = [];
	const client = await setup((call, sock) => {
		if (call.stream) held.push({ call, sock });
	});
	const store = client.stream('t/items', { merge: 'crud' })();
	const seen = [];
	const unsub = store.subscribe((v) => seen.push(v));
	assert.deepEqual(seen, [undefined], 'undefined while loading, delivered synchronously');
	await until(() => held.length === 1);
	const { call, sock } = held[0];
	// Published before the reply: must not be applied.
	sock.event('items', 'created', { id: 'early' });
	sock.send({ topic: '__rpc', event: '__batch', data: { batch: [{ id: call.id, ok: true, data: [{ id: 1 }], topic: 'items', merge: 'crud', key: 'id' }] } });
	await waitFor(store, (v) => Array.isArray(v));
	assert.deepEqual(get(store), [{ id: 1 }]);
	sock.send({ type: 'welcome', sessionId: 's1' });
	sock.send({ type: 'noop' });
	sock.event('items', 'created', { id: 2, reqId: 'r1' }); // replay marker: dropped
	sock.send({ type: 'batch', events: [{ topic: 'items', event: 'created', data: { id: 3 } }, { topic: 'items', event: 'updated', data: { id: 1, v: 'x' } }] });
	sock.event('other', 'created', { id: 99 });
	await waitFor(store, (v) => v.length === 2);
	assert.deepEqual(get(store), [{ id: 1, v: 'x' }, { id: 3 }]);
	assert.equal(client.connection.sessionId, 's1');
	assert.equal(get(store.status), 'ready');
	unsub();
});

test('same args return the same store; unsubscribe is sent only when the last user of a topic leaves', async () => {
	const client = await setup((call, sock) => {
		if (call.stream) sock.reply(call.id, { ok: true, data: [], topic: 'shared', merge: 'crud' });
	});
	const f = client.stream('t/s');
	assert.equal(f('a'), f('a'));
	assert.notEqual(f('a'), f('b'));
	const u1 = f('a').subscribe(() => {});
	const u1b = f('a').subscribe(() => {});
	const u2 = f('b').subscribe(() => {});
	await waitFor(f('a').status, (s) => s === 'ready');
	await waitFor(f('b').status, (s) => s === 'ready');
	const sock = server.last;
	u1();
	u1b();
	u2();
	const unsub = await sock.waitFrame((fr) => fr.type === 'unsubscribe');
	assert.deepEqual(unsub, { type: 'unsubscribe', topic: 'shared' });
	assert.equal(sock.frames.filter((fr) => fr.type === 'unsubscribe').length, 1, 'one unsubscribe for the shared topic, after the last user');
	assert.equal(sock.frames.indexOf(unsub), sock.frames.length - 1);
});

test('a store that loses its subscribers before the reply unsubscribes the topic on arrival', async () => {
	/** @type {any[]} */ const held = [];
	const client = await setup((call, sock) => {
		if (call.stream) held.push({ call, sock });
	});
	const u = client.stream('t/x')().subscribe(() => {});
	await until(() => held.length === 1);
	u();
	const { call, sock } = held[0];
	sock.reply(call.id, { ok: true, data: [], topic: 'x' });
	assert.deepEqual(await sock.waitFrame((f) => f.type === 'unsubscribe'), { type: 'unsubscribe', topic: 'x' });
});

test('RPC: result, typed errors (code, message, issues), timeout, fire-and-forget', async () => {
	const client = await setup((call, sock) => {
		if (call.rpc === 't/echo') sock.reply(call.id, { ok: true, data: call.args });
		if (call.rpc === 't/fail') sock.reply(call.id, { ok: false, code: 'VALIDATION', error: 'bad', issues: [{ path: ['a'], message: 'm' }] });
	});
	assert.deepEqual(await client.rpc('t/echo')(1, 'two'), [1, 'two']);
	const err = await client.rpc('t/fail')().catch((e) => e);
	assert.ok(err instanceof LiveError);
	assert.equal(err.code, 'VALIDATION');
	assert.equal(err.message, 'bad');
	assert.deepEqual(err.issues, [{ path: ['a'], message: 'm' }]);
	const t = await client.rpc('t/silent', { timeout: 100 })().catch((e) => e);
	assert.equal(t.code, 'TIMEOUT');
	client.rpc('t/echo').fire('ff');
	const ff = await server.last.waitFrame((f) => f.rpc === 't/echo' && f.args[0] === 'ff');
	assert.equal('id' in ff, false, 'fire-and-forget has no id');
});

test('in-flight calls reject with DISCONNECTED; reconnect re-sends hello and refetches every live stream in one batch, keeping old values visible', async () => {
	let version = 0;
	/** @type {any} */ let holdRefetch = null;
	const client = await setup((call, sock) => {
		if (call.stream) {
			const reply = () => sock.reply(call.id, { ok: true, data: [{ id: call.rpc, v: version }], topic: call.rpc, merge: 'crud' });
			if (version > 0 && !holdRefetch) holdRefetch = reply;
			else reply();
		}
	});
	const s1 = client.stream('t/one')();
	const s2 = client.stream('t/two')();
	const u1 = s1.subscribe(() => {});
	const u2 = s2.subscribe(() => {});
	await waitFor(s1, (v) => Array.isArray(v));
	await waitFor(s2, (v) => Array.isArray(v));
	const first = server.last;
	const slow = client.rpc('t/never')().catch((e) => e);
	await first.waitFrame((f) => f.rpc === 't/never');
	version = 1;
	const next = server.nextConnection();
	first.close(1011);
	const err = await withTimeout(slow, 3000, 'in-flight rejection');
	assert.equal(err.code, 'DISCONNECTED');
	const sock = await next;
	const batch = await sock.waitFrame((f) => Array.isArray(f.batch));
	assert.deepEqual(sock.frames[0], { type: 'hello', caps: ['batch'] });
	assert.deepEqual(batch.batch.map((/** @type {any} */ c) => c.rpc).sort(), ['t/one', 't/two']);
	await until(() => holdRefetch);
	// One refetch is held back: its store keeps the old value and says 'refreshing'.
	const held = get(s1)[0].v === 0 ? s1 : s2;
	assert.equal(get(held)[0].v, 0);
	await waitFor(held.status, (s) => s === 'refreshing' || s === 'ready');
	holdRefetch();
	await waitFor(s1, (v) => v[0].v === 1);
	await waitFor(s2, (v) => v[0].v === 1);
	assert.equal(get(client.status), 'open');
	u1();
	u2();
});

test('lifecycle: { error } on first-load failure; after data, a failed refetch keeps data and reports .error/.status', async () => {
	let fail = false;
	const client = await setup((call, sock) => {
		if (!call.stream) return;
		if (call.rpc === 't/denied' || fail) sock.reply(call.id, { ok: false, code: 'FORBIDDEN', error: 'nope' });
		else sock.reply(call.id, { ok: true, data: { n: 1 }, topic: 'v', merge: 'set' });
	});
	const denied = client.stream('t/denied')();
	const ud = denied.subscribe(() => {});
	const v = await waitFor(denied, (x) => x !== undefined);
	assert.equal(v.error.code, 'FORBIDDEN');
	assert.equal(v.error.message, 'nope');
	assert.equal(get(denied.status), 'error');

	const ok = client.stream('t/value')();
	const uo = ok.subscribe(() => {});
	await waitFor(ok, (x) => x && x.n === 1);
	fail = true;
	ok.refetch();
	const e = await waitFor(ok.error, (x) => x !== null);
	assert.equal(e.code, 'FORBIDDEN');
	assert.deepEqual(get(ok), { n: 1 }, 'data kept');
	assert.equal(get(ok.status), 'error');
	ud();
	uo();
	assert.equal(get(ok), undefined, 'reset once unused');
	assert.equal(get(ok.status), 'idle');
});

test('close codes: 4401 is terminal (streams error, calls reject, no retry) until reconnect()', async () => {
	let reject = true;
	const client = await setup((call, sock) => {
		if (call.stream) sock.reply(call.id, { ok: true, data: [], topic: 't' });
	});
	server.on('connection', (s) => reject && s.close(4401));
	const store = client.stream('t/a')();
	const u = store.subscribe(() => {});
	const v = await waitFor(store, (x) => x !== undefined && 'error' in x);
	assert.equal(v.error.code, 'UNAUTHENTICATED');
	const err = await client.rpc('t/echo')().catch((e) => e);
	assert.equal(err.code, 'UNAUTHENTICATED');
	assert.equal(get(client.status), 'closed');
	assert.equal(server.sockets.length, 1, 'no retry after 4401');
	reject = false;
	client.reconnect();
	await waitFor(store, (x) => Array.isArray(x));
	assert.equal(server.sockets.length, 2);
	u();
});

test('close codes: 4403 and 1008 are terminal too; 1001/1013 are retried', async () => {
	for (const [code, expect] of [[4403, 'FORBIDDEN'], [1008, 'POLICY_VIOLATION']]) {
		const client = await setup();
		server.on('connection', (s) => s.close(code));
		const err = await client.rpc('t/echo')().catch((e) => e);
		assert.equal(err.code, expect);
		client.close();
		await server.stop();
	}
	const client = await setup();
	let n = 0;
	server.on('connection', (s) => {
		n++;
		if (n === 1) s.close(1001);
		if (n === 2) s.close(1013);
	});
	const store = client.stream('t/retry')();
	const u = store.subscribe(() => {});
	await waitFor(store, (v) => Array.isArray(v));
	assert.equal(n, 3);
	assert.deepEqual(await client.rpc('t/echo')('ok'), ['ok']);
	u();
});

test('4429 backs off hard (rateLimitedMs), other codes use the short backoff', async () => {
	const client = await setup(defaultCall, { reconnect: { baseMs: 10, maxMs: 20, rateLimitedMs: 400 } });
	const times = [];
	server.on('connection', (s) => {
		times.push(Date.now());
		if (times.length === 1) s.close(4429);
		if (times.length === 2) s.close(1011);
	});
	const store = client.stream('t/retry')();
	const u = store.subscribe(() => {});
	await waitFor(store, (v) => Array.isArray(v));
	assert.equal(times.length, 3);
	assert.ok(times[1] - times[0] >= 190, `4429 retry waited ${times[1] - times[0]} ms`);
	assert.ok(times[2] - times[1] < 190, `1011 retry waited ${times[2] - times[1]} ms`);
	u();
});

test('reconnects when no frame arrives for idleTimeoutMs', async () => {
	const client = await setup(defaultCall, { idleTimeoutMs: 150 });
	client.connect();
	const first = await server.nextConnection();
	const second = await server.nextConnection(3000);
	assert.notEqual(first, second);
	await withTimeout(first.waitClose(), 2000, 'old socket closed');
});

test('room: paths, actions, same store per args, moveCursor coalesced per frame and fire-and-forget', async () => {
	const client = await setup((call, sock) => {
		if (call.stream) sock.reply(call.id, { ok: true, data: [], topic: call.rpc, merge: call.rpc.endsWith('__presence') ? 'presence' : 'crud' });
		else if (call.id) sock.reply(call.id, { ok: true, data: { path: call.rpc, args: call.args } });
	});
	const board = client.room('collab/board', { topicArgs: 1, presence: true, cursors: true, actions: ['addCard'] });
	assert.equal(board.data('b1'), board.data('b1'));
	const us = [board.data('b1'), board.presence('b1'), board.cursors('b1')].map((s) => s.subscribe(() => {}));
	const sock = await server.nextConnection();
	const batch = await sock.waitFrame((f) => Array.isArray(f.batch));
	assert.deepEqual(batch.batch.map((/** @type {any} */ c) => [c.rpc, c.args]), [
		['collab/board/__data', ['b1']],
		['collab/board/__presence', ['b1']],
		['collab/board/__cursors', ['b1']]
	]);
	assert.deepEqual(await board.addCard('b1', 'New card'), { path: 'collab/board/__action/addCard', args: ['b1', 'New card'] });
	for (let i = 0; i < 5; i++) board.moveCursor('b1', { x: i, y: i });
	const cur = await sock.waitFrame((f) => f.rpc === 'collab/board/__cursor');
	assert.deepEqual(cur, { rpc: 'collab/board/__cursor', args: ['b1', { x: 4, y: 4 }] });
	await new Promise((r) => setTimeout(r, 60)); // let any (wrong) extra frame arrive
	assert.equal(sock.frames.filter((f) => f.rpc === 'collab/board/__cursor').length, 1);
	us.forEach((u) => u());
});

test('default URL: ws(s)://<page host>/ws; status goes closed -> connecting -> open -> closed', async () => {
	const { Connection } = await import('../src/connection.js');
	const g = /** @type {any} */ (globalThis);
	const saved = g.location;
	try {
		g.location = { protocol: 'https:', host: 'example.com:8443' };
		assert.equal(new Connection().url, 'wss://example.com:8443/ws');
		g.location = { protocol: 'http:', host: 'localhost:5173' };
		assert.equal(new Connection({ path: '/live' }).url, 'ws://localhost:5173/live');
		assert.equal(new Connection({ url: 'ws://other/ws?token=t' }).url, 'ws://other/ws?token=t');
		g.location = undefined;
		assert.throws(() => new Connection().url, (e) => /** @type {any} */ (e).code === 'CONFIG');
	} finally {
		g.location = saved;
	}
	const client = await setup();
	const statuses = [];
	const u = client.status.subscribe((s) => statuses.push(s));
	client.connect();
	await waitFor(client.status, (s) => s === 'open');
	client.close();
	assert.deepEqual(statuses, ['closed', 'connecting', 'open', 'closed']);
	u();
});

test('a refused origin (1008) becomes an error with the server reason and a hint, on the client and its stores', async () => {
	const client = await setup();
	server.on('connection', (s) => s.close(1008, 'origin http://localhost:5173 is not allowed: add it to LIVEROOM_ALLOWED_ORIGINS'));
	const store = client.stream('t/a')();
	const u = store.subscribe(() => {});
	const v = await waitFor(store, (x) => x !== undefined && 'error' in x);
	assert.equal(v.error.code, 'POLICY_VIOLATION');
	assert.match(v.error.message, /origin http:\/\/localhost:5173 is not allowed: add it to LIVEROOM_ALLOWED_ORIGINS/);
	const err = get(client.error);
	assert.equal(err?.code, 'POLICY_VIOLATION');
	assert.match(err?.message ?? '', /proxy of \/ws/);
	u();
});

test('an upgrade that keeps failing (404, nothing listening) says so after 3 attempts, keeps retrying, and clears on open', async () => {
	const { createServer } = await import('node:http');
	// An HTTP server that answers every upgrade with 404, like a dev server without the /ws proxy.
	let upgrades = 0;
	const http = createServer((_req, res) => res.writeHead(404).end());
	http.on('upgrade', (_req, socket) => {
		upgrades++;
		// The client may reset the socket before reading the answer: that is not an error here.
		socket.on('error', () => {});
		socket.end('HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n');
	});
	await new Promise((r) => http.listen(0, '127.0.0.1', () => r(undefined)));
	const port = /** @type {any} */ (http.address()).port;
	const client = createClient({ url: `ws://127.0.0.1:${port}/ws`, WebSocket, reconnect: { baseMs: 10, maxMs: 30 } });
	clients.push(client);
	const store = client.stream('t/a')();
	const u = store.subscribe(() => {});
	const err = await waitFor(client.error, (e) => e !== null);
	assert.equal(err.code, 'UNREACHABLE');
	assert.match(err.message, new RegExp(`No liveroom server answered at ws://127.0.0.1:${port}/ws`));
	assert.match(err.message, /proxy: \{ '\/ws'/);
	const v = get(store);
	assert.equal(v?.error?.code, 'UNREACHABLE', 'the store shows it instead of loading forever');
	assert.equal(get(client.status) === 'open', false);
	await until(() => upgrades > 4, { label: 'still retrying' });

	// Pointed at a server that answers: the error clears and the data loads.
	server = await new FakeServer({ onCall: defaultCall }).start();
	client.configure({ url: server.url });
	client.reconnect();
	await waitFor(store, Array.isArray);
	assert.equal(get(client.error), null);
	u();
	client.close();
	http.closeAllConnections?.();
	await new Promise((r) => http.close(() => r(undefined)));
});

test('state: connecting, live, reconnecting until the streams caught up, recovered, live; degraded from the server; closed', async () => {
	/** @type {any} */ let holdRefetch = null;
	let loads = 0;
	const client = await setup(
		(call, sock) => {
			if (!call.stream) return;
			const reply = () => sock.reply(call.id, { ok: true, data: [{ id: 'a' }], topic: 't:s', merge: 'crud' });
			if (loads++ === 0) reply();
			else holdRefetch = reply;
		},
		{ recoveredMs: 150 }
	);
	/** @type {string[]} */ const states = [];
	const unState = client.state.subscribe((s) => {
		if (states[states.length - 1] !== s) states.push(s);
	});
	const store = client.stream('t/s')();
	const unsub = store.subscribe(() => {});
	await waitFor(store.state, (s) => s === 'live');
	await waitFor(client.state, (s) => s === 'live');

	// The server says it lost Redis: degraded, on the connection and on its streams.
	const first = server.last;
	first.event('__realtime', 'degraded', { at: Date.now() });
	await waitFor(client.state, (s) => s === 'degraded');
	await waitFor(client.health, (h) => h === 'degraded');
	await waitFor(store.state, (s) => s === 'degraded');
	first.event('__realtime', 'recovered', { at: Date.now() });
	await waitFor(client.state, (s) => s === 'live');
	await waitFor(store.state, (s) => s === 'live');

	// Degraded again, then the socket drops: a new socket starts healthy (each server says its own).
	first.event('__realtime', 'degraded', { at: Date.now() });
	await waitFor(client.health, (h) => h === 'degraded');
	const next = server.nextConnection();
	first.close(1011);
	await waitFor(client.state, (s) => s === 'reconnecting');
	const sock = await next;
	await until(() => holdRefetch);
	// Open again, but the stream's refetch is not answered yet: still reconnecting.
	assert.equal(get(client.status), 'open');
	assert.equal(get(client.state), 'reconnecting');
	assert.equal(get(store.state), 'reconnecting');
	assert.equal(get(client.health), 'healthy');
	holdRefetch();
	await waitFor(client.state, (s) => s === 'recovered');
	await waitFor(store.state, (s) => s === 'recovered');
	assert.equal(get(store.recovery), 'reloaded');
	// ... for `recoveredMs`, then live.
	await waitFor(client.state, (s) => s === 'live');
	await waitFor(store.state, (s) => s === 'live');
	assert.deepEqual(states, ['connecting', 'live', 'degraded', 'live', 'degraded', 'reconnecting', 'recovered', 'live']);
	assert.ok(sock);

	client.close();
	assert.equal(get(client.state), 'closed');
	unsub();
	unState();
});

test('state: a terminal close is failed; a stream whose load fails is error', async () => {
	const client = await setup((call, sock) => {
		if (call.stream) sock.reply(call.id, { ok: false, code: 'FORBIDDEN', error: 'no' });
	});
	const store = client.stream('t/s')();
	const unsub = store.subscribe(() => {});
	await waitFor(store.state, (s) => s === 'error');
	server.last.close(4401, 'unauthenticated');
	await waitFor(client.state, (s) => s === 'failed');
	unsub();
});
