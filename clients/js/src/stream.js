/**
 * Live stream stores (protocol.md section 4).
 *
 * Value lifecycle: `undefined` while loading, the data when ready, `{ error }` when the first load
 * fails. Once data has loaded, later failures (e.g. the refetch after a reconnect) keep the data and
 * are reported on `store.error` / `store.status` instead.
 *
 * Recovery (docs/protocol.md, "Delivery"): a stream remembers the `seq` of the newest event it
 * applied. The refetch after a reconnect sends it, and the server answers with just the missed
 * events (`replay: true`) when its buffer still has them, else with the full data; the value
 * stays on screen meanwhile either way, and `store.recovery` says which it was.
 */
import { writable, readonly } from './store.js';
import { applyMerge } from './merge.js';
import { errorFromReply } from './errors.js';
import { createOverlays } from './optimistic.js';

/**
 * @typedef {import('./merge.js').MergeOptions} StreamOptions
 * @typedef {'idle' | 'loading' | 'ready' | 'refreshing' | 'error'} StreamStatus
 * @typedef {'replayed' | 'reloaded' | null} StreamRecovery
 * @typedef {'connecting' | 'live' | 'reconnecting' | 'recovered' | 'degraded' | 'error'} StreamState
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
	/** The seq of the newest event in the value (`null`: unknown, the next fetch loads). */
	/** @type {number | null} */ let seq = null;

	const error = writable(/** @type {import('./errors.js').LiveError | null} */ (null));
	const status = writable(/** @type {StreamStatus} */ ('idle'));
	const recovery = writable(/** @type {StreamRecovery} */ (null));
	// What a status indicator shows: `status`, the server's health and a recent recovery in one.
	const state = writable(/** @type {StreamState} */ ('connecting'));
	let recoveredUntil = 0;
	/** @type {ReturnType<typeof setTimeout> | null} */ let recoveredTimer = null;
	function restate() {
		const st = status.get();
		/** @type {StreamState} */
		let s;
		if (st === 'error') s = 'error';
		else if (st === 'refreshing') s = 'reconnecting';
		else if (st !== 'ready') s = 'connecting';
		else if (conn._health?.get() === 'degraded') s = 'degraded';
		else if (Date.now() < recoveredUntil) s = 'recovered';
		else s = 'live';
		state.set(s);
	}
	status.subscribe(restate);
	/** @type {(() => void) | null} */ let unHealth = null;
	// Presence streams: how many members (listed or not), from the server's `count` events (the
	// newest version wins), else the roster's length.
	const count = writable(/** @type {number | undefined} */ (undefined));
	/** @type {{ total: number, version: number } | null} */ let counted = null;
	function recount() {
		if (merge.merge !== 'presence') return;
		count.set(counted ? counted.total : Array.isArray(server) ? server.length : undefined);
	}
	/** The value as the server sent it; subscribers see it with the optimistic overlays. */
	/** @type {any} */ let server;
	const overlays = createOverlays(() => {
		if (loaded) value.set(overlays.render(server));
	});
	/** @param {any} v */
	function setServer(v) {
		server = v;
		value.set(overlays.render(v));
	}
	const keyField = () => (merge.merge === 'presence' || merge.merge === 'cursor' ? 'key' : merge.key || 'id');
	const value = writable(/** @type {any} */ (undefined), () => {
		unHealth = conn._health?.subscribe(restate) ?? null;
		status.set('loading');
		hooks.onStart?.();
		conn._activate(ctrl); // may fail at once (terminal connection): sets the error state
		return stop;
	});

	function stop() {
		conn._deactivate(ctrl);
		if (topic) conn._unwatch(topic, ctrl);
		topic = reqId = seq = null;
		counted = null;
		loaded = live = false;
		overlays.clear();
		server = undefined;
		value.set(undefined);
		count.set(undefined);
		error.set(null);
		status.set('idle');
		recovery.set(null);
		recoveredUntil = 0;
		if (recoveredTimer) clearTimeout(recoveredTimer);
		unHealth?.();
		unHealth = null;
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
		/** The seq to send with the next request: only with data on screen to apply events to. */
		get seq() {
			return loaded ? seq : null;
		},
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
			const refetch = loaded;
			loaded = true;
			if (reply.replay === true && refetch && Array.isArray(reply.data)) {
				let v = server;
				for (const e of reply.data) {
					v = applyMerge(v, e.event, e.data, merge);
					overlays.touch(e.data?.[keyField()]);
				}
				setServer(v);
			} else if (!(reply.unchanged === true && refetch)) {
				setServer(copy(reply.data));
				overlays.loaded(server, keyField());
			}
			if (refetch) {
				recovery.set(reply.replay === true ? 'replayed' : 'reloaded');
				const ms = conn.options?.recoveredMs ?? 4000;
				recoveredUntil = Date.now() + ms;
				if (recoveredTimer) clearTimeout(recoveredTimer);
				recoveredTimer = setTimeout(restate, ms + 1);
				if (typeof recoveredTimer === 'object' && 'unref' in recoveredTimer) recoveredTimer.unref();
			}
			seq = typeof reply.seq === 'number' ? reply.seq : null;
			recount();
			error.set(null);
			status.set('ready');
			return true;
		},
		/** @param {string} event @param {any} data @param {number} [eventSeq] */
		onEvent(event, data, eventSeq) {
			// Events before the stream reply are not applied (protocol ordering rule).
			if (!live) return;
			if (event === 'count' && merge.merge === 'presence') {
				if (data && typeof data.total === 'number' && (!counted || !(data.version < counted.version))) {
					counted = { total: data.total, version: Number(data.version) || 0 };
				}
				recount();
				return;
			}
			setServer(applyMerge(server, event, data, merge));
			overlays.touch(data?.[keyField()]);
			recount();
			if (typeof eventSeq === 'number') seq = seq === null ? eventSeq : Math.max(seq, eventSeq);
		},
		/** The server no longer has the events this stream missed: load it again. */
		onTruncated() {
			seq = null;
			if (conn._streams.has(ctrl)) conn._fetch(ctrl);
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
		/**
		 * Store: how the last refetch (after a reconnect) recovered: `'replayed'` (only the
		 * missed events came, nothing was reloaded), `'reloaded'` (the full data), `null` before any.
		 */
		recovery: readonly(recovery),
		/**
		 * Store, for a status indicator: `'connecting'` (first load), `'live'`, `'reconnecting'`
		 * (the refetch after a reconnect is on its way; the value stays), `'recovered'` (caught up
		 * after a reconnect, for a few seconds; `recovery` says how), `'degraded'` (the server may
		 * be missing other replicas' events), `'error'` (see `error`).
		 */
		state: readonly(state),
		/** Store (presence streams): members in the room, listed or not; `undefined` while loading. */
		count: readonly(count),
		/** Store: how many optimistic changes of this stream wait for their call's answer. */
		pending: overlays.pending,
		/**
		 * Shows `apply(value)` at once, until `call` settles (see optimistic.js): rolled back
		 * when it rejects, replaced by the server's event for its result's key when it resolves.
		 * Returns `call`'s promise.
		 * @template R
		 * @param {(value: any) => any} apply
		 * @param {() => Promise<R>} call
		 * @returns {Promise<R>}
		 */
		optimistic(apply, call) {
			const o = overlays.add(apply);
			/** @type {Promise<R>} */
			let p;
			try {
				p = call();
			} catch (e) {
				overlays.fail(o);
				throw e;
			}
			return p.then(
				(result) => {
					const key = result !== null && typeof result === 'object' ? /** @type {any} */ (result)[keyField()] : undefined;
					overlays.succeed(o, key);
					return result;
				},
				(err) => {
					overlays.fail(o);
					throw err;
				}
			);
		},
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
