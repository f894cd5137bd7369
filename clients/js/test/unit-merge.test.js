import { test } from 'node:test';
import assert from 'node:assert/strict';
import { applyMerge } from '../src/merge.js';

test('crud: created appends/upserts, updated replaces existing only, deleted removes', () => {
	const a = [{ id: 1, t: 'a' }];
	const b = applyMerge(a, 'created', { id: 2, t: 'b' }, { merge: 'crud' });
	assert.deepEqual(b, [{ id: 1, t: 'a' }, { id: 2, t: 'b' }]);
	assert.notEqual(b, a);
	assert.deepEqual(a, [{ id: 1, t: 'a' }], 'input not mutated');
	const c = applyMerge(b, 'created', { id: 1, t: 'A' }, { merge: 'crud' });
	assert.deepEqual(c, [{ id: 1, t: 'A' }, { id: 2, t: 'b' }], 'created with known key upserts in place');
	const d = applyMerge(c, 'updated', { id: 2, t: 'B' }, { merge: 'crud' });
	assert.deepEqual(d, [{ id: 1, t: 'A' }, { id: 2, t: 'B' }]);
	const e = applyMerge(d, 'updated', { id: 9, t: 'x' }, { merge: 'crud' });
	assert.deepEqual(e, d, 'updated with unknown key is ignored');
	assert.notEqual(e, d, 'still a new array');
	assert.deepEqual(applyMerge(d, 'deleted', { id: 1 }, { merge: 'crud' }), [{ id: 2, t: 'B' }]);
	assert.deepEqual(applyMerge(d, 'deleted', null, { merge: 'crud' }), d, 'null data ignored');
});

test('crud: custom key, prepend and max', () => {
	const opts = { merge: 'crud', key: 'slug', prepend: true, max: 2 };
	let v = [];
	v = applyMerge(v, 'created', { slug: 'a' }, opts);
	v = applyMerge(v, 'created', { slug: 'b' }, opts);
	v = applyMerge(v, 'created', { slug: 'c' }, opts);
	assert.deepEqual(v, [{ slug: 'c' }, { slug: 'b' }], 'prepend keeps the newest at the front');
	let w = [];
	for (const s of ['a', 'b', 'c']) w = applyMerge(w, 'created', { slug: s }, { merge: 'crud', key: 'slug', max: 2 });
	assert.deepEqual(w, [{ slug: 'b' }, { slug: 'c' }], 'append keeps the newest at the end');
	assert.deepEqual(applyMerge(undefined, 'created', { id: 1 }), [{ id: 1 }], 'undefined counts as [] (default crud/id)');
});

test('latest: appends and keeps the last max (default 50)', () => {
	let v = [];
	for (let i = 0; i < 60; i++) v = applyMerge(v, 'msg', i, { merge: 'latest' });
	assert.equal(v.length, 50);
	assert.equal(v[0], 10);
	let w = [];
	for (let i = 0; i < 7; i++) w = applyMerge(w, 'x', { i }, { merge: 'latest', max: 5 });
	assert.deepEqual(w.map((x) => x.i), [2, 3, 4, 5, 6]);
});

test('set: every event replaces the value', () => {
	assert.deepEqual(applyMerge({ n: 0 }, 'anything', { n: 1 }, { merge: 'set' }), { n: 1 });
	assert.equal(applyMerge({ n: 0 }, 'x', 5, { merge: 'set' }), 5);
});

test('presence: join upserts, leave removes, set replaces', () => {
	const o = { merge: 'presence' };
	let v = applyMerge([], 'join', { key: 'a', data: { name: 'A' } }, o);
	v = applyMerge(v, 'join', { key: 'b', data: { name: 'B' } }, o);
	v = applyMerge(v, 'join', { key: 'a', data: { name: 'A2' } }, o);
	assert.deepEqual(v, [{ key: 'a', data: { name: 'A2' } }, { key: 'b', data: { name: 'B' } }]);
	v = applyMerge(v, 'leave', { key: 'a' }, o);
	assert.deepEqual(v, [{ key: 'b', data: { name: 'B' } }]);
	v = applyMerge(v, 'set', [{ key: 'z', data: {} }], o);
	assert.deepEqual(v, [{ key: 'z', data: {} }]);
});

test('cursor: update upserts, remove removes, set replaces', () => {
	const o = { merge: 'cursor' };
	let v = applyMerge([], 'update', { key: 'a', x: 1, y: 2 }, o);
	v = applyMerge(v, 'update', { key: 'a', x: 3, y: 4 }, o);
	v = applyMerge(v, 'update', { key: 'b', x: 0, y: 0 }, o);
	assert.deepEqual(v, [{ key: 'a', x: 3, y: 4 }, { key: 'b', x: 0, y: 0 }]);
	v = applyMerge(v, 'remove', { key: 'b' }, o);
	assert.deepEqual(v, [{ key: 'a', x: 3, y: 4 }]);
	assert.deepEqual(applyMerge(v, 'set', [], o), []);
});

test('refreshed replaces the value in every mode, always with a new array', () => {
	for (const merge of ['crud', 'latest', 'set', 'presence', 'cursor']) {
		const data = [{ id: 1, key: 'k' }];
		const out = applyMerge([{ id: 0 }], 'refreshed', data, { merge });
		assert.deepEqual(out, data, merge);
		assert.notEqual(out, data, merge);
	}
});

test('crud with `newer`: of two upserts of one item that crossed on the way, the newer stays', () => {
	const opts = { merge: /** @type {const} */ ('crud'), key: 'room', newer: 'version' };
	let v = applyMerge([], 'created', { room: 'r', count: 2, version: 5 }, opts);
	v = applyMerge(v, 'created', { room: 'r', count: 1, version: 4 }, opts);
	assert.deepEqual(v, [{ room: 'r', count: 2, version: 5 }], 'the older one is ignored');
	v = applyMerge(v, 'created', { room: 'r', count: 3, version: 6 }, opts);
	assert.deepEqual(v, [{ room: 'r', count: 3, version: 6 }]);
	v = applyMerge(v, 'deleted', { room: 'r' }, opts);
	assert.deepEqual(v, []);
	// Without the option, the last one wins.
	const plain = applyMerge([{ room: 'r', version: 5 }], 'created', { room: 'r', version: 4 }, { merge: 'crud', key: 'room' });
	assert.deepEqual(plain, [{ room: 'r', version: 4 }]);
});
