/**
 * Live stream stores (protocol.md section 4).
 *
 * Value lifecycle: `undefined` while loading, the data when ready, `{ error }` when the first load
 * fails. Once data has loaded, later failures (e.g. the refetch after a reconnect) keep the data and
 * are reported on `store.error` / `store.status` instead.
 */
import { writable, readonly } from './store.js';
import { applyMerge } from './merge.js';
import { errorFromReply } from './errors.js';

/**
 * @typedef {import('./merge.js').MergeOptions} StreamOptions
 * @typedef {'idle' | 'loading' | 'ready' | 'refreshing' | 'error'} StreamStatus
 */

/** @param {any} v */
const copy = (v) => (Array.isArray(v) ? v.slice() : v);

/**
 * Create one stream store for `path` called with `args`.
 *
 * @param {import('./connection.js').Connection} conn
 * @param {string} path
 * @param {any[]} args
 * @param {StreamOptions} options merge options; the server's reply (`merge`, `key`, `max`,
 *   `prepend`) overrides them
 * @param {{ onStart?: () => void, onStop?: () => void }} [hooks] cache bookkeeping
 */
export function createStream(conn, path, args, options, hooks = {}) {
	/** @type {StreamOptions} */
	let merge = { merge: 'crud', key: 'id', ...options };
	let loaded = false; // data arrived at least once since the first subscriber
	let live = false; // events may be applied: the current socket's reply has been handled
	/** @type {string | null} */ let topic = null;
	/** @type {string | null} */ let reqId = null;

	const error = writable(/** @type {import('./errors.js').LiveError | null} */ (null));
	const status = writable(/** @type {StreamStatus} */ ('idle'));
	const value = writable(/** @type {any} */ (undefined), () => {
		status.set('loading');
		hooks.onStart?.();
		conn._activate(ctrl); // may fail at once (terminal connection): sets the error state
		return stop;
	});

	function stop() {
		conn._deactivate(ctrl);
		if (topic) conn._unwatch(topic, ctrl);
		topic = reqId = null;
		loaded = live = false;
		value.set(undefined);
		error.set(null);
		status.set('idle');
		hooks.onStop?.();
	}

	/** @param {import('./errors.js').LiveError} err */
	function fail(err) {
		reqId = null;
		live = false;
		error.set(err);
		status.set('error');
		if (!loaded) value.set({ error: err });
	}

	const ctrl = {
		path,
		args,
		key: path + '\0' + JSON.stringify(args),
		/** @param {string} id */
		onRequest(id) {
			reqId = id;
			live = false;
		},
		/**
		 * @param {any} reply
		 * @param {string} id
		 * @returns {boolean} whether the reply was taken
		 */
		onReply(reply, id) {
			// A stale reply while a newer request is pending: swallow it (the newer reply will
			// register the topic, so the connection must not unsubscribe it).
			if (id !== reqId) return reqId !== null;
			reqId = null;
			if (!reply.ok) {
				fail(errorFromReply(reply));
				return false;
			}
			for (const k of /** @type {const} */ (['merge', 'key', 'max', 'prepend'])) {
				if (reply[k] !== undefined) /** @type {any} */ (merge)[k] = reply[k];
			}
			const nextTopic = typeof reply.topic === 'string' ? reply.topic : null;
			if (nextTopic !== topic) {
				if (topic) conn._unwatch(topic, ctrl);
				if (nextTopic) conn._watch(nextTopic, ctrl);
				topic = nextTopic;
			}
			live = true;
			if (!(reply.unchanged === true && loaded)) value.set(copy(reply.data));
			loaded = true;
			error.set(null);
			status.set('ready');
			return true;
		},
		/** @param {string} event @param {any} data */
		onEvent(event, data) {
			// Events before the stream reply are not applied (protocol ordering rule).
			if (!live) return;
			value.set(applyMerge(value.get(), event, data, merge));
		},
		onDisconnect() {
			reqId = null;
			live = false;
			if (loaded) status.set('refreshing');
		},
		/** @param {import('./errors.js').LiveError} err */
		onError(err) {
			fail(err);
		}
	};

	return {
		subscribe: value.subscribe,
		/** Store of the last error (`null` when healthy). */
		error: readonly(error),
		/** Store: `'idle' | 'loading' | 'ready' | 'refreshing' | 'error'`. */
		status: readonly(status),
		path,
		args,
		/** Reload the data from the server (keeps the current value visible meanwhile). */
		refetch() {
			if (!conn._streams.has(ctrl)) return;
			if (loaded) status.set('refreshing');
			conn._fetch(ctrl);
		}
	};
}
