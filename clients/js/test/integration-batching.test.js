// Batching against the real server, observed by instrumenting the client's socket.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { createClient } from '../src/index.js';
import { startServer } from '../test-helpers/server.js';
import { waitFor } from '../test-helpers/wait.js';

/** @type {import('../test-helpers/server.js').TestServer} */ let server;
/** @type {any} */ let c;
/** @type {any[]} */ const sent = [];
/** @type {any[]} */ const received = [];

/** A `ws` WebSocket that records every frame it sends and receives. */
class RecordingWebSocket extends WebSocket {
	/** @param {any[]} args */
	constructor(...args) {
		// @ts-ignore
		super(...args);
		this.addEventListener('message', (ev) => received.push(JSON.parse(String(ev.data))));
	}
	/** @param {any} data @param {any[]} rest */
	send(data, ...rest) {
		sent.push(JSON.parse(String(data)));
		// @ts-ignore
		return super.send(data, ...rest);
	}
}

before(async () => {
	server = await startServer();
	c = createClient({ url: `${server.ws}?user=batcher&name=Batcher`, WebSocket: RecordingWebSocket });
});
after(async () => {
	c?.close();
	await server?.stop();
});

test('three subscriptions in one microtask: hello, then ONE {"batch":[...]} frame; all three load', async () => {
	const board = c.room('collab/board', { topicArgs: 1 });
	const stores = [board.data('batch-b'), board.presence('batch-b'), board.cursors('batch-b')];
	const subs = stores.map((s) => s.subscribe(() => {}));
	for (const s of stores) await waitFor(s, Array.isArray);
	assert.deepEqual(sent[0], { type: 'hello', caps: ['batch'] });
	assert.equal(sent.length, 2, `frames sent: ${JSON.stringify(sent)}`);
	assert.deepEqual(
		sent[1].batch.map((/** @type {any} */ call) => [call.rpc, call.args, call.stream]),
		[
			['collab/board/__data', ['batch-b'], true],
			['collab/board/__presence', ['batch-b'], true],
			['collab/board/__cursors', ['batch-b'], true]
		]
	);
	const batchReply = received.find((m) => m.topic === '__rpc' && m.event === '__batch');
	assert.ok(batchReply, 'the server answered with one __batch reply');
	assert.equal(batchReply.data.batch.length, 3);
	assert.deepEqual(new Set(batchReply.data.batch.map((/** @type {any} */ r) => r.merge)), new Set(['crud', 'presence', 'cursor']));
	subs.forEach((u) => u());
	// The last subscriber leaving sends a wire unsubscribe per topic (synchronously).
	const unsubs = sent.filter((f) => f.type === 'unsubscribe').map((f) => f.topic).sort();
	assert.deepEqual(unsubs, ['board:batch-b', 'board:batch-b:cursors', 'board:batch-b:presence']);
});
