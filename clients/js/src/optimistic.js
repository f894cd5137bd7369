/**
 * Optimistic changes of a stream (docs in the README, "Optimistic changes").
 *
 * A stream keeps the value the server sent (`server`) and a list of overlays, each the expected
 * effect of a call in flight. What subscribers see is the server value with every overlay
 * applied in order. An overlay goes:
 * - when its call fails or the connection is lost (the promise rejects): the change rolls back;
 * - when its call succeeds and the server's event for the result's key has been applied (before
 *   or after the reply: in a cluster the event may come later), or after `SETTLE_MS` at most;
 * - at once on success when the result has no key (nothing to wait for).
 * While a call is queued offline its overlay stays, so the change shows as pending.
 */
import { writable, readonly } from './store.js';

/** How long a succeeded change waits for the server's event before it goes anyway. */
export const SETTLE_MS = 5000;

/**
 * @typedef {object} Overlay
 * @property {(value: any) => any} apply
 * @property {Set<unknown>} touched keys of server events applied since it was added
 * @property {unknown} [wait] the key whose server event it waits for, after success
 * @property {boolean} settled its call has answered
 * @property {ReturnType<typeof setTimeout> | null} timer
 */

/**
 * @param {() => void} changed called when what subscribers see may have changed
 */
export function createOverlays(changed) {
	/** @type {Set<Overlay>} */
	const live = new Set();
	const pending = writable(0);

	function refresh() {
		let n = 0;
		for (const o of live) if (!o.settled) n++;
		pending.set(n);
		changed();
	}

	/** @param {Overlay} o */
	function remove(o) {
		if (!live.delete(o)) return;
		if (o.timer) clearTimeout(o.timer);
		refresh();
	}

	return {
		/** Store: how many optimistic changes are waiting for their call's answer. */
		pending: readonly(pending),

		/** @param {(value: any) => any} apply @returns {Overlay} */
		add(apply) {
			/** @type {Overlay} */
			const o = { apply, touched: new Set(), settled: false, timer: null };
			live.add(o);
			refresh();
			return o;
		},

		/** The server value with every overlay applied (`undefined` while loading stays so). */
		render(/** @type {any} */ server) {
			if (server === undefined || live.size === 0) return server;
			let v = Array.isArray(server) ? server.slice() : server;
			for (const o of live) {
				try {
					v = o.apply(v);
				} catch (e) {
					console.warn('[liveroom] an optimistic change threw; ignored', e);
				}
			}
			return v;
		},

		/** A server event about `key` was applied. */
		touch(/** @type {unknown} */ key) {
			if (key === undefined) return;
			for (const o of [...live]) {
				if (o.settled && o.wait === key) remove(o);
				else o.touched.add(key);
			}
		},

		/** A full value arrived: overlays waiting for a key it holds are done. */
		loaded(/** @type {any} */ server, /** @type {string} */ keyField) {
			if (!Array.isArray(server)) return;
			const keys = new Set(server.map((x) => x?.[keyField]));
			for (const o of [...live]) if (o.settled && keys.has(o.wait)) remove(o);
		},

		/** The call succeeded with a result whose key is `key`. @param {Overlay} o @param {unknown} key */
		succeed(o, key) {
			if (!live.has(o)) return;
			o.settled = true;
			if (key === undefined || key === null || o.touched.has(key)) return remove(o);
			o.wait = key;
			o.timer = setTimeout(() => remove(o), SETTLE_MS);
			refresh();
		},

		/** The call failed: roll back. @param {Overlay} o */
		fail(o) {
			remove(o);
		},

		/** Drop everything (the store stopped). */
		clear() {
			for (const o of live) if (o.timer) clearTimeout(o.timer);
			live.clear();
			pending.set(0);
		}
	};
}
