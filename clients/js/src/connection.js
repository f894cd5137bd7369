/**
 * One WebSocket connection to a liveroom server: lazy connect, `hello`, reconnect with exponential
 * backoff and jitter, close-code handling, idle detection, RPC correlation and timeouts, topic
 * fan-out, and microtask batching of stream subscriptions (protocol.md sections 1-4).
 *
 * Streams plug in through a small controller interface (see `stream.js`):
 * `{ path, args, seq, onRequest(id), onReply(reply, id) -> boolean, onEvent(event, data, seq),
 *    onTruncated(), onDisconnect(), onError(err) }`.
 */
import { writable, readonly } from './store.js';
import { LiveError, errorFromReply } from './errors.js';

/** Failed opens in a row (the socket never opened) after which `error` says the server is unreachable. */
const UNREACHABLE_AFTER = 3;

/**
 * The message of a terminal close: the server's reason when it sent one, and what to do.
 * @param {number} code
 * @param {string | undefined} reason
 */
function closeMessage(code, reason) {
	const page = typeof location !== 'undefined' ? location.origin : 'this page';
	if (code === 1008) {
		return reason
			? `Connection refused: ${reason} (or serve the page through a proxy of /ws)`
			: `Connection refused (1008): the server does not allow the origin ${page}; allow it with the server's --allowed-origins / LIVEROOM_ALLOWED_ORIGINS, or proxy /ws through your dev server`;
	}
	if (code === 4401) return `Not signed in (4401)${reason && reason !== 'unauthenticated' ? `: ${reason}` : ''}: sign in, then call reconnect()`;
	if (code === 4403) return `Access refused (4403)${reason && reason !== 'forbidden' ? `: ${reason}` : ''}`;
	return `Connection closed by the server (${code})${reason ? `: ${reason}` : ''}`;
}

/** @param {string} url @param {number} attempts */
function unreachableMessage(url, attempts) {
	return (
		`No liveroom server answered at ${url} (${attempts} attempts; an HTTP error such as 404 on the upgrade, or nothing listening). ` +
		`Check the client's url, or proxy /ws to the liveroom server in your dev server ` +
		`(Vite: server: { proxy: { '/ws': { target: 'http://127.0.0.1:3000', ws: true } } }). Still retrying.`
	);
}

/** Close codes after which the client never retries, mapped to the error code it reports. */
const TERMINAL_CODES = { 1008: 'POLICY_VIOLATION', 4401: 'UNAUTHENTICATED', 4403: 'FORBIDDEN' };

/** Close code asking the client to back off hard. */
const RATE_LIMITED_CODE = 4429;

/** A connection open this long counts as stable: the next drop retries from the base delay. */
const STABLE_MS = 5000;

/**
 * @typedef {object} ReconnectOptions
 * @property {number} [baseMs] first retry delay (default 500)
 * @property {number} [maxMs] cap of the exponential delay (default 15000)
 * @property {number} [rateLimitedMs] minimum delay after a 4429 close (default 30000)
 *
 * @typedef {object} ClientOptions
 * @property {string} [url] `ws(s)://...` URL; default `ws(s)://<location.host>/ws`
 * @property {string} [path] path used for the default URL (default `/ws`)
 * @property {any} [WebSocket] WebSocket implementation (default `globalThis.WebSocket`; pass the
 *   `ws` package's export in Node < 22)
 * @property {number} [rpcTimeoutMs] RPC and stream-load timeout (default 30000)
 * @property {number} [idleTimeoutMs] reconnect when no frame arrived for this long (default 150000)
 * @property {ReconnectOptions} [reconnect]
 * @property {number} [recoveredMs] how long `state` says `'recovered'` after a reconnect caught
 *   up, before `'live'` again (default 4000)
 * @property {boolean} [debug] log every frame with `console.debug`
 *
 * @typedef {'connecting' | 'open' | 'closed'} ConnectionStatus
 * @typedef {'healthy' | 'degraded'} Health
 * @typedef {'connecting' | 'live' | 'reconnecting' | 'recovered' | 'degraded' | 'closed' | 'failed'} ConnectionState
 */



/** @type {Required<Omit<ClientOptions, 'url' | 'WebSocket' | 'reconnect'>> & { reconnect: Required<ReconnectOptions> }} */
const DEFAULTS = {
	path: '/ws',
	debug: false,
	rpcTimeoutMs: 30000,
	idleTimeoutMs: 150000,
	recoveredMs: 4000,
	reconnect: { baseMs: 500, maxMs: 15000, rateLimitedMs: 30000 }
};

const ID_PREFIX = Math.random().toString(36).slice(2, 6);

/** @param {ReturnType<typeof setTimeout>} t */
const unref = (t) => {
	// Do not keep a Node process alive just for housekeeping timers.
	if (t && typeof t === 'object' && 'unref' in t) /** @type {any} */ (t).unref();
	return t;
};

export class Connection {
	/** @param {ClientOptions} [options] */
	constructor(options = {}) {
		/** @type {ClientOptions & typeof DEFAULTS} */
		this.options = { ...DEFAULTS, reconnect: { ...DEFAULTS.reconnect } };
		this.configure(options);

		this._status = writable(/** @type {ConnectionStatus} */ ('closed'));
		/** Connection status store: `'connecting' | 'open' | 'closed'`. */
		this.status = readonly(this._status);
		/** Session id from the server's optional `welcome` frame. */
		this.sessionId = /** @type {string | null} */ (null);
		/** Code of the last close event (`null` before any close). */
		this.lastCloseCode = /** @type {number | null} */ (null);
		/** Set after a terminal close (1008/4401/4403): every call fails with it until `reconnect()`. */
		this.terminalError = /** @type {LiveError | null} */ (null);
		this._error = writable(/** @type {LiveError | null} */ (null));
		/**
		 * Why the client cannot get through, with a hint (`null` while fine): a terminal close
		 * (the server's reason, e.g. a refused origin) or `UNREACHABLE` after several failed
		 * opens (a 404 upgrade, nothing listening). Cleared when a socket opens.
		 */
		this.error = readonly(this._error);
		this._failedOpens = 0;
		this._health = writable(/** @type {Health} */ ('healthy'));
		/**
		 * The server's health (its `__realtime` events): `'degraded'` while it may be missing
		 * other replicas' events (its Redis is unreachable), else `'healthy'`.
		 */
		this.health = readonly(this._health);
		this._state = writable(/** @type {ConnectionState} */ ('connecting'));
		/**
		 * What a status indicator shows (see `_restate`): `'connecting'` (never open yet),
		 * `'live'`, `'reconnecting'` (lost, retrying, or open but its streams not caught up yet),
		 * `'recovered'` (caught up after a reconnect, for `recoveredMs`), `'degraded'` (open, but
		 * the server says events from elsewhere may be missing), `'closed'` (by `close()`),
		 * `'failed'` (a terminal close; see `error`).
		 */
		this.state = readonly(this._state);
		this._everOpen = false;
		this._catchingUp = false;
		this._recoveredUntil = 0;
		/** @type {ReturnType<typeof setTimeout> | null} */ this._recoveredTimer = null;

		/** @type {any} */ this._ws = null;
		this._open = false;
		this._closedByUser = false;
		this._attempts = 0;
		this._openedAt = 0;
		this._lastFrameAt = 0;
		/** @type {ReturnType<typeof setTimeout> | null} */ this._retryTimer = null;
		/** @type {ReturnType<typeof setTimeout> | null} */ this._idleTimer = null;
		this._counter = 0;
		/** Frames waiting for the next open socket. @type {Array<{ frame: any, id?: string }>} */
		this._queue = [];
		/** In-flight calls by correlation id. @type {Map<string, { resolve?: Function, reject?: Function, stream?: any, timer: any, sent: boolean }>} */
		this._pending = new Map();
		/** Active stream controllers (have subscribers). @type {Set<any>} */
		this._streams = new Set();
		/** Controllers that need a (re)fetch on the next flush. @type {Set<any>} */
		this._toFetch = new Set();
		this._flushScheduled = false;
		/** Topic -> controllers applying its events. @type {Map<string, Set<any>>} */
		this._topics = new Map();

		if (typeof window !== 'undefined' && typeof window.addEventListener === 'function') {
			// Back online: retry now instead of waiting for the backoff timer.
			window.addEventListener('online', () => {
				if (this._retryTimer) {
					clearTimeout(this._retryTimer);
					this._retryTimer = null;
					this._connect();
				}
			});
		}
	}

	/**
	 * Change options. A new `url` takes effect at the next (re)connect; call `reconnect()` to apply
	 * it at once.
	 * @param {ClientOptions} options
	 */
	configure(options = {}) {
		const { reconnect, ...rest } = options;
		Object.assign(this.options, rest);
		if (reconnect) Object.assign(this.options.reconnect, reconnect);
		return this;
	}

	/** The WebSocket URL this client connects to. */
	get url() {
		if (this.options.url) return this.options.url;
		const loc = /** @type {any} */ (globalThis).location;
		if (!loc || !loc.host) {
			throw new LiveError('CONFIG', 'liveroom: no URL configured and no page location; call configure({ url })');
		}
		return `${loc.protocol === 'https:' ? 'wss' : 'ws'}://${loc.host}${this.options.path}`;
	}

	/** Open the connection now (it otherwise opens lazily on first use). */
	connect() {
		this._closedByUser = false;
		this._connect();
		return this;
	}

	/**
	 * Drop the current socket (if any) and connect again at once. Clears a terminal state, so use
	 * it after the user logs in, or after `configure({ url })`.
	 */
	reconnect() {
		this.terminalError = null;
		this._closedByUser = false;
		this._attempts = 0;
		if (this._retryTimer) clearTimeout(this._retryTimer);
		this._retryTimer = null;
		if (this._ws) this._drop(this._ws, 1000, false);
		for (const ctrl of this._streams) this._toFetch.add(ctrl);
		this._connect();
	}

	/**
	 * Close the socket and stop reconnecting. In-flight calls reject with `DISCONNECTED`. The next
	 * use (a call, a new stream) connects again.
	 */
	close() {
		this._closedByUser = true;
		if (this._retryTimer) clearTimeout(this._retryTimer);
		this._retryTimer = null;
		if (this._ws) this._drop(this._ws, 1000, false);
		this._status.set('closed');
		this._restate();
	}

	// ---------------------------------------------------------------- RPC

	/**
	 * Call an RPC and wait for its reply.
	 * @param {string} path `<module>/<name>`
	 * @param {any[]} args
	 * @param {{ timeout?: number }} [opts]
	 * @returns {Promise<any>} resolves with the result, rejects with a LiveError
	 */
	call(path, args, opts = {}) {
		if (this.terminalError) return Promise.reject(this.terminalError);
		const id = this._nextId();
		const timeout = opts.timeout ?? this.options.rpcTimeoutMs;
		return new Promise((resolve, reject) => {
			const timer = setTimeout(() => {
				if (!this._pending.delete(id)) return;
				reject(new LiveError('TIMEOUT', `RPC '${path}' timed out after ${timeout} ms`));
			}, timeout);
			this._pending.set(id, { resolve, reject, timer, sent: false });
			this._sendOrQueue({ rpc: path, id, args }, id);
		});
	}

	/**
	 * Fire-and-forget call: sent without an id, the server replies nothing.
	 * @param {string} path
	 * @param {any[]} args
	 * @param {{ dropIfClosed?: boolean }} [opts] drop instead of queueing when the socket is not open
	 */
	fire(path, args, opts = {}) {
		if (this.terminalError) return;
		if (!this._open && opts.dropIfClosed) return;
		this._sendOrQueue({ rpc: path, args });
	}

	// ---------------------------------------------------------------- streams (used by stream.js)

	/** A stream got its first subscriber. @param {any} ctrl */
	_activate(ctrl) {
		this._streams.add(ctrl);
		this._fetch(ctrl);
	}

	/** A stream lost its last subscriber. @param {any} ctrl */
	_deactivate(ctrl) {
		this._streams.delete(ctrl);
		this._toFetch.delete(ctrl);
	}

	/**
	 * Ask for a (re)fetch of a stream; requests made in the same microtask go out as one frame.
	 * @param {any} ctrl
	 */
	_fetch(ctrl) {
		if (this.terminalError) {
			ctrl.onError(this.terminalError);
			return;
		}
		this._toFetch.add(ctrl);
		if (this._flushScheduled) return;
		this._flushScheduled = true;
		queueMicrotask(() => {
			this._flushScheduled = false;
			if (this._open) this._flushFetches();
			else this._connect();
		});
	}

	/** Send every pending stream request, batched into one frame. */
	_flushFetches() {
		if (!this._toFetch.size) return;
		const calls = [];
		for (const ctrl of this._toFetch) {
			const id = this._nextId();
			const timeout = this.options.rpcTimeoutMs;
			const timer = setTimeout(() => {
				if (!this._pending.delete(id)) return;
				if (this._streams.has(ctrl)) {
					ctrl.onError(new LiveError('TIMEOUT', `Stream '${ctrl.path}' timed out after ${timeout} ms`));
				}
			}, timeout);
			this._pending.set(id, { stream: ctrl, timer, sent: true });
			ctrl.onRequest(id);
			const call = { rpc: ctrl.path, id, args: ctrl.args, stream: true };
			if (typeof ctrl.seq === 'number') call.seq = ctrl.seq;
			calls.push(call);
		}
		this._toFetch.clear();
		this._send(calls.length === 1 ? calls[0] : { batch: calls });
	}

	/** Route events of `topic` to `ctrl`. @param {string} topic @param {any} ctrl */
	_watch(topic, ctrl) {
		let set = this._topics.get(topic);
		if (!set) this._topics.set(topic, (set = new Set()));
		set.add(ctrl);
	}

	/**
	 * Stop routing `topic` to `ctrl`; when nobody else uses the topic, tell the server.
	 * @param {string} topic @param {any} ctrl
	 */
	_unwatch(topic, ctrl) {
		const set = this._topics.get(topic);
		if (!set) return;
		set.delete(ctrl);
		if (set.size) return;
		this._topics.delete(topic);
		if (this._open) this._send({ type: 'unsubscribe', topic });
	}

	// ---------------------------------------------------------------- socket lifecycle

	_nextId() {
		return ID_PREFIX + (this._counter++).toString(36);
	}

	/** @param {any} frame @param {string} [id] */
	_sendOrQueue(frame, id) {
		if (this._open) {
			this._send(frame);
			if (id) this._markSent(id);
		} else {
			this._queue.push({ frame, id });
			this._connect();
		}
	}

	/** @param {string} id */
	_markSent(id) {
		const entry = this._pending.get(id);
		if (entry) entry.sent = true;
	}

	/** @param {any} frame */
	_send(frame) {
		const text = JSON.stringify(frame);
		if (this.options.debug) console.debug('[liveroom] ->', text);
		this._ws.send(text);
	}

	/** Open a socket unless one exists, a retry is scheduled, or the client is terminal. */
	_connect() {
		if (this._ws || this._retryTimer || this.terminalError) return;
		this._closedByUser = false;
		const WS = this.options.WebSocket || /** @type {any} */ (globalThis).WebSocket;
		let url;
		try {
			url = this.url;
			if (!WS) throw new LiveError('CONFIG', 'liveroom: no WebSocket implementation; pass configure({ WebSocket })');
		} catch (err) {
			this._terminate(/** @type {LiveError} */ (err));
			return;
		}
		this._status.set('connecting');
		this._restate();
		let ws;
		try {
			ws = new WS(url);
		} catch {
			this._scheduleRetry(1006);
			return;
		}
		this._ws = ws;
		ws.onopen = () => ws === this._ws && this._onOpen();
		ws.onmessage = (/** @type {any} */ ev) => ws === this._ws && this._onMessage(ev.data);
		ws.onclose = (/** @type {any} */ ev) => ws === this._ws && this._onClose(ev.code, ev.reason);
		ws.onerror = () => {}; // a close event follows
	}

	_onOpen() {
		this._open = true;
		this._openedAt = this._lastFrameAt = Date.now();
		this._failedOpens = 0;
		this._error.set(null);
		this._status.set('open');
		this._catchingUp = this._everOpen;
		this._everOpen = true;
		this._send({ type: 'hello', caps: ['batch'] });
		this._flushFetches();
		const queued = this._queue;
		this._queue = [];
		for (const { frame, id } of queued) {
			if (id && !this._pending.has(id)) continue; // timed out while queued
			this._send(frame);
			if (id) this._markSent(id);
		}
		this._armIdle();
		this._restate();
	}

	/** Whether a stream load sent on this socket still waits for its reply. */
	_fetching() {
		if (this._toFetch.size > 0) return true;
		for (const entry of this._pending.values()) if (entry.stream && this._streams.has(entry.stream)) return true;
		return false;
	}

	/** Recomputes `state` from the socket, the server's health and the streams' catch-up. */
	_restate() {
		if (this._catchingUp && this._open && !this._fetching()) {
			this._catchingUp = false;
			const ms = this.options.recoveredMs;
			this._recoveredUntil = Date.now() + ms;
			if (this._recoveredTimer) clearTimeout(this._recoveredTimer);
			this._recoveredTimer = unref(setTimeout(() => this._restate(), ms + 1));
		}
		/** @type {ConnectionState} */
		let s;
		if (this.terminalError) s = 'failed';
		else if (!this._open) s = this._closedByUser && !this._ws ? 'closed' : this._everOpen ? 'reconnecting' : 'connecting';
		else if (this._catchingUp) s = 'reconnecting';
		else if (this._health.get() === 'degraded') s = 'degraded';
		else if (Date.now() < this._recoveredUntil) s = 'recovered';
		else s = 'live';
		this._state.set(s);
	}

	/** (Re)arm the idle watchdog: no frame for `idleTimeoutMs` means a dead connection. */
	_armIdle() {
		if (this._idleTimer) clearTimeout(this._idleTimer);
		const wait = Math.max(0, this._lastFrameAt + this.options.idleTimeoutMs - Date.now());
		this._idleTimer = unref(
			setTimeout(() => {
				this._idleTimer = null;
				if (!this._ws || !this._open) return;
				if (Date.now() - this._lastFrameAt >= this.options.idleTimeoutMs) this._drop(this._ws, 4000, true);
				else this._armIdle();
			}, wait)
		);
	}

	/** @param {any} raw */
	_onMessage(raw) {
		this._lastFrameAt = Date.now();
		if (this.options.debug) console.debug('[liveroom] <-', String(raw));
		let msg;
		try {
			msg = JSON.parse(typeof raw === 'string' ? raw : String(raw));
		} catch {
			return; // not JSON: ignore
		}
		if (!msg || typeof msg !== 'object') return;
		if (typeof msg.type === 'string') {
			if (msg.type === 'batch' && Array.isArray(msg.events)) {
				for (const env of msg.events) this._onEnvelope(env);
			} else if (msg.type === 'welcome') {
				this.sessionId = msg.sessionId ?? null;
			} else if (msg.type === 'subscribe-denied' && typeof msg.topic === 'string') {
				const err = new LiveError(msg.reason || 'FORBIDDEN', `Subscription to '${msg.topic}' denied`);
				for (const ctrl of this._topics.get(msg.topic) || []) ctrl.onError(err);
			}
			// noop, subscribed and unknown types: ignore
			return;
		}
		this._onEnvelope(msg);
	}

	/** @param {any} env `{ topic, event, data }` */
	_onEnvelope(env) {
		if (!env || typeof env.topic !== 'string') return;
		if (env.topic === '__realtime') {
			// The server's own health (never subscribed: every socket gets it).
			if (env.event === 'degraded' || env.event === 'recovered') {
				this._health.set(env.event === 'degraded' ? 'degraded' : 'healthy');
				this._restate();
			}
			return;
		}
		if (env.topic === '__rpc') {
			const data = env.data;
			if (!data || typeof data !== 'object') return;
			if (env.event === '__batch' && Array.isArray(data.batch)) {
				for (const reply of data.batch) this._onReply(reply);
			} else {
				this._onReply({ id: env.event, ...data });
			}
			return;
		}
		const ctrls = this._topics.get(env.topic);
		if (!ctrls) return;
		const data = env.data;
		// A `reqId` in event data is a replay marker, never data (protocol.md section 4); with
		// `truncated` the server lost events of the topic: its streams load again.
		if (data !== null && typeof data === 'object' && 'reqId' in data) {
			if (data.truncated === true) for (const ctrl of [...ctrls]) ctrl.onTruncated();
			return;
		}
		for (const ctrl of [...ctrls]) ctrl.onEvent(env.event, data, env.seq);
	}

	/** @param {any} reply */
	_onReply(reply) {
		if (!reply || typeof reply !== 'object') return;
		const entry = this._pending.get(reply.id);
		if (!entry) {
			this._releaseOrphan(reply);
			return;
		}
		this._pending.delete(reply.id);
		clearTimeout(entry.timer);
		if (entry.stream) {
			const accepted = this._streams.has(entry.stream) && entry.stream.onReply(reply, reply.id);
			if (!accepted) this._releaseOrphan(reply, entry.stream.key);
			if (this._catchingUp) this._restate();
		} else if (reply.ok) {
			entry.resolve?.(reply.data);
		} else {
			entry.reject?.(errorFromReply(reply));
		}
	}

	/**
	 * A stream reply nobody wants any more (the store lost its subscribers meanwhile): the server
	 * subscribed this socket to the topic, so unsubscribe unless another stream uses it, or a newer
	 * request for the same stream (a remounted component) is about to.
	 * @param {any} reply
	 * @param {string} [key] the stream's path+args key
	 */
	_releaseOrphan(reply, key) {
		if (!reply.ok || typeof reply.topic !== 'string' || this._topics.has(reply.topic) || !this._open) return;
		if (key) {
			for (const ctrl of this._toFetch) if (ctrl.key === key) return;
			for (const entry of this._pending.values()) if (entry.stream?.key === key) return;
		}
		this._send({ type: 'unsubscribe', topic: reply.topic });
	}

	/**
	 * Detach and close a socket ourselves, then run the close logic.
	 * @param {any} ws @param {number} code @param {boolean} retry
	 */
	_drop(ws, code, retry) {
		ws.onopen = ws.onmessage = ws.onclose = null;
		ws.onerror = () => {};
		try {
			ws.close(1000);
		} catch {
			/* already closing */
		}
		if (!retry) this._closedByUser = true;
		this._onClose(code);
	}

	/** @param {number} code @param {string} [reason] the server's close reason */
	_onClose(code, reason) {
		const opened = this._open;
		const wasOpenFor = this._open ? Date.now() - this._openedAt : 0;
		this._ws = null;
		this._open = false;
		this.lastCloseCode = code;
		if (this._idleTimer) clearTimeout(this._idleTimer);
		this._idleTimer = null;
		this._status.set('closed');
		// The next server reports its own health.
		this._health.set('healthy');

		const terminal = /** @type {Record<number, string>} */ (TERMINAL_CODES)[code];
		if (terminal) {
			this._terminate(new LiveError(terminal, closeMessage(code, reason)));
			return;
		}
		if (!opened && ++this._failedOpens === UNREACHABLE_AFTER) {
			// Still retrying, but say why nothing loads instead of "connecting" forever.
			const err = new LiveError('UNREACHABLE', unreachableMessage(this.url, UNREACHABLE_AFTER));
			this._error.set(err);
			for (const ctrl of this._streams) ctrl.onError(err);
		}
		// Calls sent on the dead socket will never be answered (they are not re-sent: an action
		// must not run twice); stream loads are simply redone after the reconnect.
		for (const [id, entry] of this._pending) {
			if (!entry.sent) continue;
			this._pending.delete(id);
			clearTimeout(entry.timer);
			entry.reject?.(new LiveError('DISCONNECTED', 'Connection lost before the reply arrived'));
		}
		for (const ctrl of this._streams) {
			ctrl.onDisconnect();
			this._toFetch.add(ctrl);
		}
		this._restate();
		if (this._closedByUser) return;
		if (wasOpenFor >= STABLE_MS) this._attempts = 0;
		this._scheduleRetry(code);
	}

	/** @param {number} code */
	_scheduleRetry(code) {
		const { baseMs, maxMs, rateLimitedMs } = this.options.reconnect;
		let delay = Math.min(maxMs, baseMs * 2 ** this._attempts);
		if (code === RATE_LIMITED_CODE) delay = Math.max(delay, rateLimitedMs);
		this._attempts++;
		delay = delay / 2 + (Math.random() * delay) / 2; // jitter: 50-100 % of the delay
		this._status.set('closed');
		this._retryTimer = setTimeout(() => {
			this._retryTimer = null;
			this._connect();
		}, delay);
	}

	/** Enter the terminal state: fail everything, never retry (until `reconnect()`). @param {LiveError} err */
	_terminate(err) {
		this.terminalError = err;
		this._error.set(err);
		this._status.set('closed');
		for (const [id, entry] of this._pending) {
			this._pending.delete(id);
			clearTimeout(entry.timer);
			entry.reject?.(err);
		}
		this._queue = [];
		this._toFetch.clear();
		for (const ctrl of this._streams) ctrl.onError(err);
		this._restate();
	}
}
