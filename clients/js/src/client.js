/**
 * `LiveClient`: a connection plus the `rpc` / `stream` / `room` factories bound to it.
 * The package's top-level exports use one default client; `createClient()` makes more
 * (e.g. two users in one test, or two servers on one page).
 */
import { Connection } from './connection.js';
import { createStream } from './stream.js';
import { createRoom } from './room.js';
import { follow } from './follow.js';

/** @param {string} path @param {any[]} args */
const cacheKey = (path, args) => path + '\0' + JSON.stringify(args);

export class LiveClient {
	/** @param {import('./connection.js').ClientOptions} [options] */
	constructor(options) {
		this.connection = new Connection(options);
		/** Connection status store: `'connecting' | 'open' | 'closed'`. */
		this.status = this.connection.status;
		/** Why the client cannot get through, with a hint (`null` while fine). */
		this.error = this.connection.error;
		/** The server's health store: `'healthy' | 'degraded'` (see `Connection.health`). */
		this.health = this.connection.health;
		/**
		 * What a status indicator shows: `'connecting' | 'live' | 'reconnecting' | 'recovered' |
		 * 'degraded' | 'closed' | 'failed'` (see `Connection.state`).
		 */
		this.state = this.connection.state;
		/** @type {Map<string, ReturnType<typeof createStream>>} */
		this._streams = new Map();
	}

	/** @param {import('./connection.js').ClientOptions} options */
	configure(options) {
		this.connection.configure(options);
		return this;
	}

	/** Open the connection now (it otherwise opens on first use). */
	connect() {
		this.connection.connect();
		return this;
	}

	/** Reconnect at once (also leaves a terminal 4401/4403 state, e.g. after logging in). */
	reconnect() {
		this.connection.reconnect();
	}

	/** Close the connection and stop reconnecting (until the next use). */
	close() {
		this.connection.close();
	}

	/**
	 * An RPC function: `(...args) => Promise<result>`; rejects with a `LiveError`.
	 * `fn.fire(...args)` (alias `fn.fireAndForget`) sends the same call fire-and-forget.
	 * @param {string} path `<module>/<name>`
	 * @param {{ timeout?: number }} [options]
	 */
	rpc(path, options) {
		const conn = this.connection;
		/** @param {...any} args */
		const fn = (...args) => conn.call(path, args, options);
		fn.fire = (/** @type {any[]} */ ...args) => conn.fire(path, args);
		fn.fireAndForget = fn.fire; // svelte-realtime 0.5 spelling
		/**
		 * The same call with an expected effect on a stream store: `apply(value, ...args)` shows
		 * at once and rolls back if the call fails (see `store.optimistic`).
		 * @param {{ optimistic: Function } | ((...args: any[]) => { optimistic: Function })} store the
		 *   store, or a function of the call's args returning it
		 * @param {(value: any, ...args: any[]) => any} apply
		 */
		fn.optimistic = (store, apply) =>
			(/** @type {any[]} */ ...args) => {
				const s = typeof store === 'function' ? store(...args) : store;
				return s.optimistic((/** @type {any} */ v) => apply(v, ...args), () => fn(...args));
			};
		fn.path = path;
		return fn;
	}

	/**
	 * A stream factory: `factory(...args)` returns the store for those args (the same instance
	 * while it is in use). The factory is itself a store for the no-argument stream, so
	 * `$factory` works for streams without arguments. `factory(() => id)` returns a store that
	 * follows the getter (Svelte 5 props; `() => [a, b]` for several args), see `follow.js`.
	 * @param {string} path `<module>/<name>`
	 * @param {import('./merge.js').MergeOptions & { arity?: number }} [options] `arity`: how many
	 *   args the stream takes, if known (a getter of a one-arg stream may return an array)
	 */
	stream(path, options = {}) {
		const { arity, ...merge } = options;
		/** @param {any[]} list */
		const make = (list) => this._stream(path, list, merge);
		/** @param {...any} args */
		const factory = (...args) =>
			args.length === 1 && typeof args[0] === 'function' ? follow(args[0], make, arity) : make(args);
		factory.subscribe = (/** @type {(v: any) => void} */ run) => factory().subscribe(run);
		Object.defineProperty(factory, 'error', { get: () => factory().error });
		Object.defineProperty(factory, 'status', { get: () => factory().status });
		Object.defineProperty(factory, 'recovery', { get: () => factory().recovery });
		Object.defineProperty(factory, 'state', { get: () => factory().state });
		factory.path = path;
		return factory;
	}

	/**
	 * A room object (see `room.js`).
	 * @param {string} path `<module>/<room>`
	 * @param {import('./room.js').RoomOptions} [options]
	 */
	room(path, options) {
		return createRoom(this, path, options);
	}

	/** @param {string} path @param {any[]} args @param {import('./merge.js').MergeOptions} options */
	_stream(path, args, options) {
		const key = cacheKey(path, args);
		const cached = this._streams.get(key);
		if (cached) return cached;
		const store = createStream(this.connection, path, args, options, {
			onStart: () => {
				if (!this._streams.has(key)) this._streams.set(key, store);
			},
			onStop: () => {
				if (this._streams.get(key) === store) this._streams.delete(key);
			}
		});
		this._streams.set(key, store);
		return store;
	}
}

/**
 * Create an independent client (own socket, own stores).
 * @param {import('./connection.js').ClientOptions} [options]
 */
export function createClient(options) {
	return new LiveClient(options);
}
