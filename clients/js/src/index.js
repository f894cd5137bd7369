/**
 * liveroom client: streams, RPCs and rooms over the svelte-realtime 0.5 wire protocol.
 *
 * ```js
 * import { configure, __room } from 'liveroom';
 * configure({ url: 'ws://127.0.0.1:3000/ws' }); // optional in a browser
 * const board = __room('collab/board', { actions: ['addCard'] });
 * board.data('b1').subscribe(console.log);
 * ```
 */
import { LiveClient } from './client.js';

export { LiveClient, createClient } from './client.js';
export { LiveError } from './errors.js';
export { applyMerge } from './merge.js';
export { writable, readonly, get } from './store.js';
export { valueOr } from './errors.js';
export { smooth } from './smooth.js';

/** The client behind the top-level exports (and generated `$live/*` modules). */
export const defaultClient = new LiveClient();

/** Connection status store of the default client: `'connecting' | 'open' | 'closed'`. */
export const status = defaultClient.status;
/** Why the default client cannot connect, with a hint (`null` while fine). */
export const connectionError = defaultClient.error;
/** The default client's server health: `'healthy' | 'degraded'` (svelte-realtime's `health`). */
export const health = defaultClient.health;
/**
 * The default client's state for a status indicator: `'connecting' | 'live' | 'reconnecting' |
 * 'recovered' | 'degraded' | 'closed' | 'failed'`.
 */
export const connectionState = defaultClient.state;

/**
 * Configure the default client (`url`, `WebSocket`, timeouts, reconnect delays).
 * @param {import('./connection.js').ClientOptions} options
 */
export function configure(options) {
	return defaultClient.configure(options);
}

/**
 * Open the default client's connection now (optionally configuring it first).
 * @param {import('./connection.js').ClientOptions} [options]
 */
export function connect(options) {
	if (options) defaultClient.configure(options);
	return defaultClient.connect();
}

/** @param {string} path @param {{ timeout?: number }} [options] */
export const __rpc = (path, options) => defaultClient.rpc(path, options);

/** @param {string} path @param {import('./merge.js').MergeOptions} [options] */
export const __stream = (path, options) => defaultClient.stream(path, options);

/** @param {string} path @param {import('./room.js').RoomOptions} [options] */
export const __room = (path, options) => defaultClient.room(path, options);
