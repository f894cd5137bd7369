// Every merge mode against real events published through rpc `test/publish`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { get } from '../src/index.js';
import { startServer, clientFor } from '../test-helpers/server.js';
import { waitFor } from '../test-helpers/wait.js';

/** @type {import('../test-helpers/server.js').TestServer} */ let server;
/** @type {import('../src/index.js').LiveClient} */ let c;
/** @type {(topic: string, event: string, data: any) => Promise<any>} */ let publish;

before(async () => {
	server = await startServer();
	c = clientFor(server, 'user=merger&name=Merger');
	publish = c.rpc('test/publish');
});
after(async () => {
	c?.close();
	await server?.stop();
});

/** Subscribe and wait for the first data. @param {any} store */
async function live(store) {
	const u = store.subscribe(() => {});
	const v = await waitFor(store, (x) => x !== undefined);
	if (v && v.error) throw new Error(`${store.path} failed to load: ${v.error.code} ${v.error.message}`);
	return u;
}

const ids = (/** @type {any[]} */ v) => v.map((x) => x.id);

test('crud (test/items, key id): created / updated / deleted / refreshed, new arrays every time', async () => {
	const items = c.stream('test/items')();
	const u = await live(items);
	const seen = new Set();
	const u2 = items.subscribe((v) => {
		assert.ok(!seen.has(v), 'every update is a new array');
		seen.add(v);
	});
	await publish('items', 'created', { id: 'm1', title: 'one' });
	await publish('items', 'created', { id: 'm2', title: 'two' });
	await waitFor(items, (v) => ids(v).includes('m1') && ids(v).includes('m2'));
	await publish('items', 'updated', { id: 'm1', title: 'ONE' });
	await waitFor(items, (v) => v.find((/** @type {any} */ x) => x.id === 'm1')?.title === 'ONE');
	await publish('items', 'deleted', { id: 'm2' });
	await waitFor(items, (v) => !ids(v).includes('m2'));
	const list = get(items);
	assert.equal(list.filter((/** @type {any} */ x) => x.id === 'm1').length, 1);
	await publish('items', 'refreshed', [{ id: 'r1' }, { id: 'r2' }]);
	assert.deepEqual(ids(await waitFor(items, (v) => ids(v).includes('r1'))), ['r1', 'r2']);
	u();
	u2();
});

test('latest (test/feed, max 5): appends and keeps the last 5; refreshed replaces', async () => {
	const feed = c.stream('test/feed')();
	const u = await live(feed);
	for (let i = 0; i < 7; i++) await publish('feed', 'message', { i });
	const v = await waitFor(feed, (x) => x.length === 5 && x[4].i === 6);
	assert.deepEqual(v.map((/** @type {any} */ x) => x.i), [2, 3, 4, 5, 6]);
	await publish('feed', 'refreshed', [{ i: 'r' }]);
	assert.deepEqual(await waitFor(feed, (x) => x.length === 1), [{ i: 'r' }]);
	u();
});

test('set (test/value): every event replaces the value; refreshed too', async () => {
	const value = c.stream('test/value')();
	const u = await live(value);
	await publish('value', 'set', { n: 5 });
	assert.deepEqual(await waitFor(value, (x) => x.n === 5), { n: 5 });
	await publish('value', 'whatever', { n: 6 });
	await waitFor(value, (x) => x.n === 6);
	await publish('value', 'refreshed', { n: 7 });
	await waitFor(value, (x) => x.n === 7);
	u();
});

test('presence (room __presence): join upserts, leave removes, set replaces, refreshed replaces', async () => {
	const board = c.room('collab/board');
	const presence = board.presence('merge-presence');
	const data = board.data('merge-presence'); // membership: the caller appears in the roster
	const u1 = await live(data);
	const u2 = await live(presence);
	await waitFor(presence, (v) => v.some((/** @type {any} */ p) => p.key === 'merger'));
	const T = 'board:merge-presence:presence';
	await publish(T, 'join', { key: 'ghost', data: { name: 'Ghost' } });
	await waitFor(presence, (v) => v.some((/** @type {any} */ p) => p.key === 'ghost'));
	await publish(T, 'join', { key: 'ghost', data: { name: 'Ghost 2' } });
	const v = await waitFor(presence, (x) => x.some((/** @type {any} */ p) => p.data?.name === 'Ghost 2'));
	assert.equal(v.filter((/** @type {any} */ p) => p.key === 'ghost').length, 1, 'join upserts');
	await publish(T, 'leave', { key: 'ghost' });
	await waitFor(presence, (x) => !x.some((/** @type {any} */ p) => p.key === 'ghost'));
	await publish(T, 'set', [{ key: 'a', data: {} }, { key: 'b', data: {} }]);
	await waitFor(presence, (x) => x.map((/** @type {any} */ p) => p.key).join() === 'a,b');
	await publish(T, 'refreshed', [{ key: 'z', data: {} }]);
	await waitFor(presence, (x) => x.length === 1 && x[0].key === 'z');
	u1();
	u2();
});

test('cursor (room __cursors): update upserts, remove removes, set replaces, refreshed replaces', async () => {
	const board = c.room('collab/board');
	const data = board.data('merge-cursors');
	const cursors = board.cursors('merge-cursors');
	const u1 = await live(data);
	const u2 = await live(cursors);
	const T = 'board:merge-cursors:cursors';
	await publish(T, 'update', { key: 'k1', x: 1, y: 1 });
	await publish(T, 'update', { key: 'k1', x: 2, y: 3 });
	await publish(T, 'update', { key: 'k2', x: 0, y: 0 });
	const v = await waitFor(cursors, (x) => x.length === 2 && x[0].x === 2);
	assert.deepEqual(v[0], { key: 'k1', x: 2, y: 3 });
	await publish(T, 'remove', { key: 'k1' });
	await waitFor(cursors, (x) => x.length === 1 && x[0].key === 'k2');
	await publish(T, 'set', [{ key: 's', x: 9, y: 9 }]);
	await waitFor(cursors, (x) => x.length === 1 && x[0].key === 's');
	await publish(T, 'refreshed', []);
	await waitFor(cursors, (x) => x.length === 0);
	u1();
	u2();
});

test('events whose data carries reqId are dropped (replay marker)', async () => {
	const value = c.stream('test/value')();
	const u = await live(value);
	const seen = [];
	const u2 = value.subscribe((x) => seen.push(x));
	await publish('value', 'set', { n: 100, reqId: 'x' });
	await publish('value', 'set', { n: 101 });
	await waitFor(value, (x) => x.n === 101);
	assert.ok(!seen.some((x) => x.n === 100), JSON.stringify(seen));
	u();
	u2();
});
