// Optimistic changes (reconcile by key, rollback) and smooth cursors (interpolation), without a
// server: a stream driven through its connection hooks, and a cursor store with a fake clock.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createStream } from '../src/stream.js';
import { smooth } from '../src/smooth.js';
import { writable, get } from '../src/store.js';
import { LiveError } from '../src/errors.js';

/** A stream whose connection is a stub; returns the store and its controller. */
function stream() {
	/** @type {any} */ let ctrl;
	const conn = /** @type {any} */ ({
		_streams: new Set(),
		_activate: (/** @type {any} */ c) => (ctrl = c),
		_deactivate() {},
		_watch() {},
		_unwatch() {},
		_fetch() {}
	});
	const store = createStream(conn, 'collab/board/__data', ['b1'], { merge: 'crud', key: 'id' });
	const seen = /** @type {any[]} */ ([]);
	store.subscribe((v) => seen.push(v));
	ctrl.onRequest('r1');
	ctrl.onReply({ ok: true, data: [{ id: 'a', title: 'A' }], topic: 'board:b1', merge: 'crud' }, 'r1');
	return { store, ctrl, seen };
}

/** A call the test settles by hand. */
function deferred() {
	/** @type {(v: any) => void} */ let resolve = () => {};
	/** @type {(e: any) => void} */ let reject = () => {};
	const promise = new Promise((res, rej) => ((resolve = res), (reject = rej)));
	return { promise, resolve, reject };
}

const titles = (/** @type {any} */ v) => v.map((/** @type {any} */ c) => c.title);

test('optimistic add: shown at once, pending, then replaced by the server event for its key', async () => {
	const { store, ctrl } = stream();
	const call = deferred();
	const done = store.optimistic((cards) => [...cards, { id: 'tmp', title: 'B', pending: true }], () => call.promise);
	assert.deepEqual(titles(get(store)), ['A', 'B'], 'before any reply');
	assert.equal(get(store.pending), 1);
	// The reply comes first (in a cluster the event may come later): the change stays.
	call.resolve({ id: 'c9', title: 'B' });
	await done;
	assert.deepEqual(titles(get(store)), ['A', 'B']);
	assert.equal(get(store.pending), 0, 'answered');
	ctrl.onEvent('created', { id: 'c9', title: 'B' }, 2);
	assert.deepEqual(get(store), [{ id: 'a', title: 'A' }, { id: 'c9', title: 'B' }], 'exactly the server card');
});

test('optimistic change: the event before the reply reconciles at once', async () => {
	const { store, ctrl } = stream();
	const call = deferred();
	const done = store.optimistic((cards) => cards.map((c) => (c.id === 'a' ? { ...c, title: 'A2' } : c)), () => call.promise);
	assert.deepEqual(titles(get(store)), ['A2']);
	ctrl.onEvent('updated', { id: 'a', title: 'A2!' }, 2);
	assert.deepEqual(titles(get(store)), ['A2'], 'the overlay still applies until the reply');
	call.resolve({ id: 'a', title: 'A2!' });
	await done;
	assert.deepEqual(titles(get(store)), ['A2!'], "the server's version");
});

test('optimistic change: rolled back with the error on failure or a lost connection', async () => {
	const { store } = stream();
	for (const err of [new LiveError('VALIDATION', 'Title too long'), new LiveError('DISCONNECTED', 'Connection lost')]) {
		const call = deferred();
		const done = store.optimistic((cards) => [], () => call.promise);
		assert.deepEqual(get(store), [], 'deleted at once');
		call.reject(err);
		await assert.rejects(done, (e) => /** @type {any} */ (e).code === err.code);
		assert.deepEqual(titles(get(store)), ['A'], 'rolled back');
		assert.equal(get(store.pending), 0);
	}
});

test('optimistic change: a success whose event never comes goes after the settle time', (t) => {
	t.mock.timers.enable({ apis: ['setTimeout'] });
	const { store } = stream();
	const call = deferred();
	store.optimistic((cards) => [...cards, { id: 'x', title: 'X' }], () => call.promise);
	call.resolve({ id: 'never' });
	return Promise.resolve().then(async () => {
		await Promise.resolve();
		assert.deepEqual(titles(get(store)), ['A', 'X']);
		t.mock.timers.tick(5001);
		assert.deepEqual(titles(get(store)), ['A'], 'gone after 5 s');
	});
});

test('smooth cursors: positions glide between updates over the update interval; the raw store jumps', () => {
	let now = 0;
	/** @type {(() => void)[]} */ const frames = [];
	const raw = writable(/** @type {any} */ (undefined));
	const glide = smooth(raw, { now: () => now, frame: (fn) => frames.push(fn) });
	/** @type {any} */ let shown;
	const u = glide.subscribe((v) => (shown = v));
	raw.set([{ key: 'a', x: 0, y: 0, name: 'A' }]);
	assert.deepEqual(shown, [{ key: 'a', x: 0, y: 0, name: 'A' }], 'the first position as is');
	now = 200;
	raw.set([{ key: 'a', x: 100, y: 50, name: 'A' }]); // 200 ms after the last: glide over 200 ms
	assert.deepEqual(shown, [{ key: 'a', x: 0, y: 0, name: 'A' }]);
	now = 300;
	frames.shift()?.();
	assert.deepEqual(shown, [{ key: 'a', x: 50, y: 25, name: 'A' }], 'half way');
	now = 450;
	frames.shift()?.();
	assert.deepEqual(shown, [{ key: 'a', x: 100, y: 50, name: 'A' }], 'arrived');
	assert.equal(frames.length, 0, 'no frames once still');
	// A cursor that goes is gone at once; loading states pass through.
	raw.set([]);
	assert.deepEqual(shown, []);
	raw.set(undefined);
	assert.equal(shown, undefined);
	u();
});
