// Store lifecycle against the real server: undefined -> data, { error } on failure,
// data kept + .error on a later failure.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { get } from '../src/index.js';
import { useServer } from '../test-helpers/server.js';
import { waitFor } from '../test-helpers/wait.js';

const { server, client } = useServer();

test('undefined while loading, then the data; .status goes loading -> ready', async () => {
	const c = client();
	const items = c.stream('test/items')();
	const seen = [];
	const statuses = [];
	const u1 = items.status.subscribe((s) => statuses.push(s));
	const u2 = items.subscribe((v) => seen.push(v));
	assert.deepEqual(seen, [undefined]);
	const data = await waitFor(items, (v) => v !== undefined);
	assert.ok(Array.isArray(data), `data is the item list: ${JSON.stringify(data)}`);
	assert.deepEqual(statuses, ['idle', 'loading', 'ready']);
	assert.equal(get(items.error), null);
	const value = c.stream('test/value')();
	const u3 = value.subscribe(() => {});
	assert.deepEqual(await waitFor(value, (v) => v !== undefined), { n: 0 });
	u1();
	u2();
	u3();
	assert.equal(get(items), undefined, 'back to undefined once unused');
});

test('{ error } with code and message when the guard denies (test/denied)', async () => {
	const c = client();
	const denied = c.stream('test/denied')();
	const u = denied.subscribe(() => {});
	const v = await waitFor(denied, (x) => x !== undefined);
	assert.equal(v.error.code, 'FORBIDDEN');
	assert.equal(typeof v.error.message, 'string');
	assert.equal(get(denied.status), 'error');
	assert.equal(get(denied.error).code, 'FORBIDDEN');
	u();
});

test('{ error } with INTERNAL_ERROR when init fails (test/broken), NOT_FOUND for unknown streams', async () => {
	const c = client();
	const broken = c.stream('test/broken')();
	const missing = c.stream('test/nope')();
	const us = [broken.subscribe(() => {}), missing.subscribe(() => {})];
	assert.equal((await waitFor(broken, (x) => x !== undefined)).error.code, 'INTERNAL_ERROR');
	assert.equal((await waitFor(missing, (x) => x !== undefined)).error.code, 'NOT_FOUND');
	us.forEach((u) => u());
});

test('room guard without a user: { error: UNAUTHENTICATED }', async () => {
	const c = client();
	const board = c.room('collab/board', { actions: ['addCard'] });
	const data = board.data('guest-board');
	const u = data.subscribe(() => {});
	assert.equal((await waitFor(data, (x) => x !== undefined)).error.code, 'UNAUTHENTICATED');
	await assert.rejects(board.addCard('guest-board', 'x'), (e) => /** @type {any} */ (e).code === 'UNAUTHENTICATED');
	u();
});

test('after data has loaded, a failed refetch keeps the data and reports on .error / .status', async () => {
	const c = client('user=lc&name=Lc');
	const board = c.room('collab/board', { actions: ['addCard'] });
	const data = board.data('lifecycle-board');
	const u = data.subscribe(() => {});
	await waitFor(data, (x) => Array.isArray(x));
	await board.addCard('lifecycle-board', 'kept');
	const before = await waitFor(data, (x) => x.some((/** @type {any} */ card) => card.title === 'kept'));
	// Reconnect as a guest: the refetch after the reconnect fails the room guard.
	c.configure({ url: server().ws });
	c.reconnect();
	const err = await waitFor(data.error, (e) => e !== null);
	assert.equal(err.code, 'UNAUTHENTICATED');
	assert.equal(get(data.status), 'error');
	assert.deepEqual(get(data), before, 'old data still visible');
	// Back as a user: the next refetch heals the store.
	c.configure({ url: `${server().ws}?user=lc&name=Lc` });
	c.reconnect();
	await waitFor(data.status, (s) => s === 'ready');
	assert.equal(get(data.error), null);
	assert.ok(get(data).some((/** @type {any} */ card) => card.title === 'kept'));
	u();
});
