// Recovery after a lost connection (docs/protocol.md, "Delivery"): the stream sends the seq of
// the newest event it applied, the server answers with just the missed events, and the value
// never blanks; a server that lost them (a restart) answers with a full load instead.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { createClient, get } from '../src/index.js';
import { startServer, clientFor } from '../test-helpers/server.js';
import { waitFor } from '../test-helpers/wait.js';

/** @type {import('../test-helpers/server.js').TestServer | undefined} */ let server;
/** @type {any[]} */ const clients = [];

after(async () => {
	for (const c of clients) c.close();
	await server?.stop();
});

/** A client that waits about a second before reconnecting, so events can be missed meanwhile. */
function slowReconnecting(/** @type {string} */ query) {
	const c = createClient({
		url: `${/** @type {any} */ (server).ws}?${query}`,
		WebSocket,
		rpcTimeoutMs: 10000,
		reconnect: { baseMs: 1000, maxMs: 1000 }
	});
	clients.push(c);
	return c;
}

test('a dropped socket recovers with only the missed events, without a reload or a blank', async () => {
	server = await startServer();
	const ann = slowReconnecting('user=ann&name=Ann');
	const bob = clientFor(server, 'user=bob&name=Bob');
	clients.push(bob);
	const board = ann.room('collab/board', { topicArgs: 1, actions: ['addCard'] });
	const bobBoard = bob.room('collab/board', { topicArgs: 1, actions: ['addCard'] });
	const data = board.data('js1');
	/** @type {any[]} */ const seen = [];
	const unsub = data.subscribe((v) => seen.push(v));
	await waitFor(data, Array.isArray);
	const first = await bobBoard.addCard('js1', 'before');
	await waitFor(data, (v) => v.some((/** @type {any} */ c) => c.id === first.id));
	const shownBefore = seen.length;

	ann.connection._ws.close();
	await waitFor(ann.status, (s) => s !== 'open', { label: 'dropped' });
	const missed = [];
	for (const t of ['missed 1', 'missed 2']) missed.push(await bobBoard.addCard('js1', t));

	await waitFor(data.recovery, (r) => r !== null, { label: 'recovered', timeout: 10000 });
	assert.equal(get(data.recovery), 'replayed', 'only the missed events came');
	const v = await waitFor(data, (v) => missed.every((m) => v.some((/** @type {any} */ c) => c.id === m.id)));
	assert.deepEqual(v.map((/** @type {any} */ c) => c.title), ['before', 'missed 1', 'missed 2']);
	for (const value of seen.slice(shownBefore)) {
		assert.ok(Array.isArray(value) && value.length > 0, `no blank while recovering: ${JSON.stringify(value)}`);
	}
	// Live again.
	const live = await bobBoard.addCard('js1', 'live');
	await waitFor(data, (v) => v.some((/** @type {any} */ c) => c.id === live.id));
	unsub();
});

test('after a server restart the stream reloads (the new server has no buffer)', async () => {
	const ann = slowReconnecting('user=ann2&name=Ann');
	const items = ann.stream('test/items')();
	const unsub = items.subscribe(() => {});
	await waitFor(items, Array.isArray);
	await ann.rpc('test/publish')('items', 'created', { id: 'r1' });
	await waitFor(items, (v) => v.some((/** @type {any} */ x) => x.id === 'r1'));
	const port = /** @type {any} */ (server).port;
	await /** @type {any} */ (server).stop();
	await waitFor(ann.status, (s) => s !== 'open');
	server = await startServer({ port });
	await waitFor(items.recovery, (r) => r !== null, { timeout: 15000 });
	assert.equal(get(items.recovery), 'reloaded');
	assert.deepEqual(get(items), [], 'the fresh server has no items');
	unsub();
});
