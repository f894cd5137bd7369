import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writable, get } from '../src/store.js';

test('store contract: synchronous first value, unsubscribe function, start/stop', () => {
	let started = 0;
	let stopped = 0;
	const s = writable(1, () => {
		started++;
		return () => stopped++;
	});
	const seen = [];
	const u1 = s.subscribe((v) => seen.push(v));
	assert.deepEqual(seen, [1], 'value delivered synchronously');
	const u2 = s.subscribe(() => {});
	assert.equal(started, 1);
	s.set(2);
	s.set(2); // same primitive: no notification
	assert.deepEqual(seen, [1, 2]);
	u1();
	u1(); // idempotent
	assert.equal(stopped, 0);
	u2();
	assert.equal(stopped, 1);
	assert.equal(get(s), 2);
	assert.equal(started, 2, 'get() subscribes and unsubscribes');
});

test('objects always notify (new arrays for keyed each blocks)', () => {
	const s = writable([1]);
	const seen = [];
	s.subscribe((v) => seen.push(v));
	const arr = [1, 2];
	s.set(arr);
	s.set(arr);
	assert.equal(seen.length, 3);
});

test('a getter of args gives the store of its current args (one arg, several, an array arg)', async () => {
	const { follow } = await import('../src/follow.js');
	/** @type {Map<string, ReturnType<typeof writable>>} */
	const made = new Map();
	const make = (/** @type {any[]} */ args) => {
		const key = JSON.stringify(args);
		if (!made.has(key)) {
			const s = writable(`value of ${key}`);
			made.set(key, Object.assign(s, { error: writable(null), status: writable('ready'), recovery: writable(null), path: 'p', refetch() {} }));
		}
		return /** @type {any} */ (made.get(key));
	};
	const store = follow(() => 'a', make, 1);
	assert.equal(get(store), 'value of ["a"]');
	assert.deepEqual(store.args, ['a']);
	assert.equal(get(store.status), 'ready');
	assert.equal(store.path, 'p');
	// Several args: the getter returns them as an array.
	const pair = follow(() => ['x', 2], make, 2);
	assert.equal(get(pair), 'value of ["x",2]');
	// One arg that is itself an array stays one arg.
	const list = follow(() => [1, 2], make, 1);
	assert.equal(get(list), 'value of [[1,2]]');
});

test('valueOr: the data, or the fallback while loading or after a failed first load', async () => {
	const { valueOr, LiveError } = await import('../src/index.js');
	assert.deepEqual(valueOr([1], []), [1]);
	assert.deepEqual(valueOr(undefined, []), []);
	assert.deepEqual(valueOr({ error: new LiveError('FORBIDDEN', 'no') }, []), []);
	assert.deepEqual(valueOr({ n: 1, error: 'a field of the data' }, null), { n: 1, error: 'a field of the data' });
});
