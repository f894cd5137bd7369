// RPCs against the real server: results, typed errors, timeouts, fire-and-forget, auth close codes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LiveError, get } from '../src/index.js';
import { useServer } from '../test-helpers/server.js';
import { waitFor } from '../test-helpers/wait.js';

const { server, client } = useServer();

test('results: test/echo and test/add', async () => {
	const c = client();
	assert.deepEqual(await c.rpc('test/echo')(1, 'two', { three: [3] }), [1, 'two', { three: [3] }]);
	assert.equal(await c.rpc('test/add')(2, 40), 42);
});

test('typed errors: app code + message from test/fail, VALIDATION with the argument, NOT_FOUND', async () => {
	const c = client();
	const err = await c.rpc('test/fail')('TEAPOT', 'I am a teapot').catch((e) => e);
	assert.ok(err instanceof LiveError);
	assert.equal(err.code, 'TEAPOT');
	assert.equal(err.message, 'I am a teapot');
	const v = await c.rpc('test/fail')('VALIDATION', 'Title must be 1-200 characters').catch((e) => e);
	assert.equal(v.code, 'VALIDATION');
	assert.equal(v.message, 'Title must be 1-200 characters');
	const missing = await c.rpc('test/add')(1).catch((e) => e);
	assert.equal(missing.code, 'VALIDATION');
	assert.deepEqual(missing.issues[0].path, ['b']);
	const wrong = await c.rpc('test/add')('a', 'b').catch((e) => e);
	assert.equal(wrong.code, 'VALIDATION');
	assert.deepEqual(wrong.issues[0].path, ['a']);
	assert.equal((await c.rpc('test/missing')().catch((e) => e)).code, 'NOT_FOUND');
});

test('timeout: rejects with TIMEOUT; the connection stays usable', async () => {
	const c = client();
	const err = await c.rpc('test/slow', { timeout: 100 })(2000).catch((e) => e);
	assert.equal(err.code, 'TIMEOUT');
	assert.equal(await c.rpc('test/slow')(10), 10);
});

test('concurrent calls are matched by id', async () => {
	const c = client();
	const results = await Promise.all([c.rpc('test/slow')(150), c.rpc('test/slow')(10), c.rpc('test/add')(1, 2)]);
	assert.deepEqual(results, [150, 10, 3]);
});

test('fire-and-forget: test/publish.fire reaches a live stream', async () => {
	const c = client();
	const items = c.stream('test/items')();
	const u = items.subscribe(() => {});
	await waitFor(items, Array.isArray);
	c.rpc('test/publish').fire('items', 'created', { id: 'fired' });
	await waitFor(items, (v) => v.some((/** @type {any} */ x) => x.id === 'fired'));
	u();
});

test('?reject=401 / 403: terminal UNAUTHENTICATED / FORBIDDEN, no retry', async () => {
	for (const [q, code] of [['reject=401', 'UNAUTHENTICATED'], ['reject=403', 'FORBIDDEN']]) {
		const c = client(q);
		const store = c.stream('test/items')();
		const u = store.subscribe(() => {});
		const v = await waitFor(store, (x) => x !== undefined);
		assert.equal(v.error.code, code);
		assert.equal((await c.rpc('test/echo')().catch((e) => e)).code, code);
		assert.equal(get(c.status), 'closed');
		assert.equal(c.connection.lastCloseCode, code === 'UNAUTHENTICATED' ? 4401 : 4403);
		u();
	}
});

test('a page on another origin (a Vite dev server) gets the server reason and a hint, not an endless "connecting"', async () => {
	const { default: WebSocket } = await import('ws');
	const { createClient } = await import('../src/index.js');
	// What a browser on http://localhost:5173 sends when it connects to the liveroom port directly.
	class DevPageSocket extends WebSocket {
		/** @param {string} url */
		constructor(url) {
			super(url, { origin: 'http://localhost:5173' });
		}
	}
	const c = createClient({ url: server().ws, WebSocket: DevPageSocket, reconnect: { baseMs: 20, maxMs: 50 } });
	const store = c.stream('test/items')();
	const u = store.subscribe(() => {});
	const err = await waitFor(c.error, (e) => e !== null);
	assert.equal(err.code, 'POLICY_VIOLATION');
	assert.match(err.message, /origin http:\/\/localhost:5173 is not allowed: add it to LIVEROOM_ALLOWED_ORIGINS/);
	const v = await waitFor(store, (x) => x !== undefined && 'error' in x);
	assert.equal(v.error.code, 'POLICY_VIOLATION');
	u();
	c.close();
});
