/**
 * Minimal stores implementing the Svelte store contract: `subscribe(fn)` calls `fn` synchronously
 * with the current value and returns an unsubscribe function. No dependency on `svelte`.
 */

/**
 * @template T
 * @typedef {{ subscribe(run: (value: T) => void, invalidate?: () => void): () => void }} Readable
 */

/**
 * A writable store. `start` runs when the first subscriber arrives and may return a stop function
 * that runs when the last one leaves (same semantics as `svelte/store`).
 *
 * Objects and arrays always notify on `set` (like Svelte's `safe_not_equal`), primitives only when
 * they change.
 *
 * @template T
 * @param {T} value
 * @param {() => (void | (() => void))} [start]
 */
export function writable(value, start) {
	/** @type {Set<(value: T) => void>} */
	const subscribers = new Set();
	/** @type {void | (() => void)} */
	let stop;

	/** @param {T} next */
	function set(next) {
		const changed = next !== value || (next !== null && typeof next === 'object') || typeof next === 'function';
		if (!changed) return;
		value = next;
		// Copy so (un)subscribing inside a callback is safe.
		for (const fn of [...subscribers]) if (subscribers.has(fn)) fn(value);
	}

	/** @param {(value: T) => void} run */
	function subscribe(run) {
		const fn = (/** @type {T} */ v) => run(v);
		subscribers.add(fn);
		if (subscribers.size === 1 && start) stop = start();
		fn(value);
		return () => {
			if (!subscribers.delete(fn)) return;
			if (subscribers.size === 0 && stop) {
				stop();
				stop = undefined;
			}
		};
	}

	return {
		set,
		subscribe,
		/** @param {(value: T) => T} fn */
		update: (fn) => set(fn(value)),
		/** Current value without subscribing. */
		get: () => value
	};
}

/**
 * Read-only view of a writable.
 * @template T
 * @param {{ subscribe: Readable<T>['subscribe'] }} store
 * @returns {Readable<T>}
 */
export function readonly(store) {
	return { subscribe: store.subscribe };
}

/**
 * Read a store's current value once.
 * @template T
 * @param {Readable<T>} store
 * @returns {T}
 */
export function get(store) {
	/** @type {any} */
	let value;
	store.subscribe((v) => (value = v))();
	return value;
}
