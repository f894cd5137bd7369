// Kill the server and restart it on the same port: stores keep their old value meanwhile, then
// recover (re-subscribe + refetch); actions work again.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { get } from '../src/index.js';
import { startServer, clientFor } from '../test-helpers/server.js';
import { waitFor } from '../test-helpers/wait.js';

/** @type {import('../test-helpers/server.js').TestServer | undefined} */ let server;
/** @type {any} */ let c;
/** @type {any} */ let watcher;

after(async () => {
	c?.close();
	watcher?.close();
	await server?.stop();
});

test('stores and actions recover after the server restarts on the same port', async () => {
	server = await startServer({ graceMs: 300 });
	const port = server.port;
	c = clientFor(server, 'user=rc&name=Rc');
	const board = c.room('collab/board', { topicArgs: 1, actions: ['addCard'] });
	const data = board.data('rb');
	const presence = board.presence('rb');
	const items = c.stream('test/items')();
	const subs = [data, presence, items].map((s) => s.subscribe(() => {}));
	await waitFor(data, Array.isArray);
	await waitFor(items, Array.isArray);
	await board.addCard('rb', 'before restart');
	const before = await waitFor(data, (v) => v.some((/** @type {any} */ x) => x.title === 'before restart'));
	await waitFor(presence, (v) => Array.isArray(v) && v.some((/** @type {any} */ p) => p.key === 'rc'));

	await server.stop();
	await waitFor(c.status, (s) => s !== 'open', { label: 'status leaves open' });
	await waitFor(data.status, (s) => s === 'refreshing');
	assert.deepEqual(get(data), before, 'old value stays visible while disconnected');
	// A call made while disconnected is queued and sent after the reconnect.
	const queued = board.addCard('rb', 'queued while offline');

	server = await startServer({ graceMs: 300, port });
	await waitFor(c.status, (s) => s === 'open', { label: 'reconnected', timeout: 10000 });
	// The new server starts empty: the refetch replaces the old value with the fresh one.
	await waitFor(data.status, (s) => s === 'ready', { timeout: 10000 });
	await waitFor(data, (v) => Array.isArray(v) && !v.some((/** @type {any} */ x) => x.title === 'before restart'));
	await waitFor(presence, (v) => Array.isArray(v) && v.some((/** @type {any} */ p) => p.key === 'rc'), { label: 'presence back' });
	const q = await queued;
	assert.equal(q.title, 'queued while offline');
	await waitFor(data, (v) => v.some((/** @type {any} */ x) => x.id === q.id));

	// Live again: an action resolves and its event reaches the re-subscribed store, also on a second client.
	watcher = clientFor(server, 'user=w&name=W');
	const wdata = watcher.room('collab/board', { topicArgs: 1 }).data('rb');
	const uw = wdata.subscribe(() => {});
	await waitFor(wdata, Array.isArray);
	const card = await board.addCard('rb', 'after restart');
	await waitFor(data, (v) => v.some((/** @type {any} */ x) => x.id === card.id));
	await waitFor(wdata, (v) => v.some((/** @type {any} */ x) => x.id === card.id));
	await c.rpc('test/publish')('items', 'created', { id: 'after-restart' });
	await waitFor(items, (v) => v.some((/** @type {any} */ x) => x.id === 'after-restart'));
	uw();
	subs.forEach((u) => u());
});
