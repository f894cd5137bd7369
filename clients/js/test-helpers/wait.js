/**
 * Waiting helpers for tests: everything is event-driven with a timeout, no fixed sleeps.
 */

/**
 * Resolve with the first store value matching `pred` (checked synchronously on subscribe too).
 * @template T
 * @param {{ subscribe(fn: (v: T) => void): () => void }} store
 * @param {(v: T) => boolean} pred
 * @param {{ timeout?: number, label?: string }} [opts]
 * @returns {Promise<T>}
 */
export function waitFor(store, pred, opts = {}) {
	const timeout = opts.timeout ?? 10000;
	return new Promise((resolve, reject) => {
		let done = false;
		/** @type {any} */ let last;
		/** @type {(() => void) | undefined} */ let unsub;
		const finish = (/** @type {() => void} */ fn) => {
			if (done) return;
			done = true;
			clearTimeout(timer);
			queueMicrotask(() => unsub?.());
			fn();
		};
		const timer = setTimeout(
			() => finish(() => reject(new Error(`waitFor ${opts.label || ''} timed out after ${timeout} ms; last value: ${safe(last)}`))),
			timeout
		);
		unsub = store.subscribe((v) => {
			last = v;
			let ok = false;
			try {
				ok = pred(v);
			} catch {
				ok = false;
			}
			if (ok) finish(() => resolve(v));
		});
		if (done) unsub();
	});
}

/**
 * Wait until `check()` returns a truthy value, polling every `pollMs` (for state that has no event
 * or store to subscribe to).
 * @template T
 * @param {() => T} check
 * @param {{ timeout?: number, pollMs?: number, label?: string }} [opts]
 * @returns {Promise<T>}
 */
export function until(check, opts = {}) {
	const timeout = opts.timeout ?? 10000;
	const pollMs = opts.pollMs ?? 10;
	return new Promise((resolve, reject) => {
		const started = Date.now();
		const tick = () => {
			let v;
			try {
				v = check();
			} catch {
				v = undefined;
			}
			if (v) return resolve(v);
			if (Date.now() - started > timeout) return reject(new Error(`until ${opts.label || ''} timed out after ${timeout} ms`));
			setTimeout(tick, pollMs);
		};
		tick();
	});
}

/**
 * Reject if `promise` does not settle in time.
 * @template T
 * @param {Promise<T>} promise
 * @param {number} [ms]
 * @param {string} [label]
 * @returns {Promise<T>}
 */
export function withTimeout(promise, ms = 5000, label = '') {
	/** @type {any} */ let timer;
	return Promise.race([
		promise.finally(() => clearTimeout(timer)),
		new Promise((_, reject) => {
			timer = setTimeout(() => reject(new Error(`${label || 'operation'} timed out after ${ms} ms`)), ms);
		})
	]);
}

/** @param {any} v */
function safe(v) {
	try {
		return JSON.stringify(v);
	} catch {
		return String(v);
	}
}

/**
 * Subscribe and record every value.
 * @template T
 * @param {{ subscribe(fn: (v: T) => void): () => void }} store
 */
export function record(store) {
	/** @type {T[]} */
	const values = [];
	const unsub = store.subscribe((v) => values.push(v));
	return { values, unsub, get last() { return values[values.length - 1]; } };
}
