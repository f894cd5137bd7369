/**
 * Smooth cursors: a store that follows a cursor store and moves each cursor from where it is
 * shown to its new position over the time its last update took to come, one step per animation
 * frame. At the adaptive low rates of a large room (a position every few hundred ms) motion stays
 * continuous instead of jumping. The raw `cursors(...)` store is unchanged; `smooth(store)` or
 * `room.cursors.smooth(...roomArgs)` is the interpolating one.
 */
import { writable, readonly } from './store.js';

const defaultFrame =
	typeof requestAnimationFrame === 'function'
		? (/** @type {() => void} */ fn) => requestAnimationFrame(fn)
		: (/** @type {() => void} */ fn) => setTimeout(fn, 16);

const defaultNow = () => (typeof performance !== 'undefined' ? performance.now() : Date.now());

/**
 * @typedef {object} SmoothOptions
 * @property {number} [minMs] shortest glide (default 16: faster updates just follow)
 * @property {number} [maxMs] longest glide (default 600: after a pause the cursor moves promptly)
 * @property {() => number} [now] clock in ms (tests)
 * @property {(fn: () => void) => void} [frame] frame scheduler (tests)
 */

/**
 * @typedef {object} Track
 * @property {{ x: number, y: number }} from
 * @property {{ x: number, y: number }} to
 * @property {number} t0 when the glide to `to` started
 * @property {number} dur its length
 * @property {number} last when the latest update arrived
 * @property {any} entry the latest entry (its other fields are passed through)
 */

/** @param {Track} t @param {number} now */
function at(t, now) {
	const k = t.dur <= 0 ? 1 : Math.min(1, Math.max(0, (now - t.t0) / t.dur));
	return { x: t.from.x + (t.to.x - t.from.x) * k, y: t.from.y + (t.to.y - t.from.y) * k };
}

/**
 * @template T
 * @param {import('./store.js').Readable<T>} source a cursor store (`[{ key, x, y, ... }]`)
 * @param {SmoothOptions} [options]
 * @returns {import('./store.js').Readable<T>}
 */
export function smooth(source, options = {}) {
	const { minMs = 16, maxMs = 600, now = defaultNow, frame = defaultFrame } = options;
	/** @type {Map<string, Track>} */
	const tracks = new Map();
	let stopped = true;
	let scheduled = false;
	/** @type {any} */ let raw;

	const out = writable(/** @type {any} */ (undefined), () => {
		stopped = false;
		const unsubscribe = source.subscribe(take);
		return () => {
			stopped = true;
			unsubscribe();
			tracks.clear();
		};
	});

	/** @param {any} v */
	function take(v) {
		raw = v;
		if (!Array.isArray(v)) {
			tracks.clear();
			out.set(v);
			return;
		}
		const t = now();
		const seen = new Set();
		for (const c of v) {
			if (!c || typeof c.x !== 'number' || typeof c.y !== 'number') continue;
			seen.add(c.key);
			const tr = tracks.get(c.key);
			if (!tr) {
				tracks.set(c.key, { from: { x: c.x, y: c.y }, to: { x: c.x, y: c.y }, t0: t, dur: 0, last: t, entry: c });
			} else {
				if (tr.to.x !== c.x || tr.to.y !== c.y) {
					tr.from = at(tr, t);
					tr.to = { x: c.x, y: c.y };
					tr.t0 = t;
					tr.dur = Math.min(maxMs, Math.max(minMs, t - tr.last));
					tr.last = t;
				}
				tr.entry = c;
			}
		}
		for (const k of [...tracks.keys()]) if (!seen.has(k)) tracks.delete(k);
		render();
	}

	function render() {
		if (!Array.isArray(raw)) return;
		const t = now();
		let moving = false;
		const list = raw.map((c) => {
			const tr = c && tracks.get(c.key);
			if (!tr) return c;
			if (t < tr.t0 + tr.dur) moving = true;
			return { ...c, ...at(tr, t) };
		});
		out.set(list);
		if (moving && !scheduled && !stopped) {
			scheduled = true;
			frame(() => {
				scheduled = false;
				if (!stopped) render();
			});
		}
	}

	return readonly(out);
}
