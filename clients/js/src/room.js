/**
 * Room objects (protocol.md section 5): data / presence / cursors streams, one function per action,
 * and coalesced fire-and-forget senders: `moveCursor` (a `null` position removes my cursor) and
 * `presence.update` (my awareness state, `null` clears it). `presence.count(...roomArgs)` is the
 * number of members, listed or not (large rooms list only the first ones). `lobby()` (rooms
 * declared with a lobby) lists the open rooms with their member counts.
 */

/**
 * @typedef {object} RoomOptions
 * @property {number} [topicArgs] how many leading args select the room (informational)
 * @property {string[]} [args] argument names (informational)
 * @property {import('./merge.js').MergeMode} [merge] data stream merge (default `crud`)
 * @property {string} [key] data stream key (default `id`)
 * @property {boolean} [prepend]
 * @property {number} [max]
 * @property {boolean} [presence] expose `presence(...)` (default true)
 * @property {boolean} [cursors] expose `cursors(...)` and `moveCursor(...)` (default true)
 * @property {boolean} [lobby] expose `lobby()`: the open rooms with their member counts (the
 *   server declares it with `Room::lobby`; default false)
 * @property {string[] | Record<string, unknown>} [actions] action names (array or manifest object)
 */

import { smooth } from './smooth.js';

const RESERVED = new Set(['data', 'presence', 'cursors', 'moveCursor', 'lobby']);

/** Schedule `fn` for the next animation frame, or in ~16 ms where there are no frames. */
const nextFrame =
	typeof requestAnimationFrame === 'function'
		? (/** @type {() => void} */ fn) => requestAnimationFrame(fn)
		: (/** @type {() => void} */ fn) => setTimeout(fn, 16);

/**
 * Build a room object.
 * @param {import('./client.js').LiveClient} client
 * @param {string} path `<module>/<room>`
 * @param {RoomOptions} [options]
 */
export function createRoom(client, path, options = {}) {
	/** @type {Record<string, any>} */
	const room = {
		data: client.stream(`${path}/__data`, {
			arity: options.topicArgs,
			merge: options.merge || 'crud',
			key: options.key || 'id',
			...(options.prepend !== undefined && { prepend: options.prepend }),
			...(options.max !== undefined && { max: options.max })
		})
	};
	const arity = options.topicArgs;
	if (options.presence !== false) {
		const presence = client.stream(`${path}/__presence`, { arity, merge: 'presence', key: 'key' });
		/** @param {...any} args room args */
		presence.count = (...args) => presence(...args).count;
		presence.update = awarenessSender(client, `${path}/__presence_update`, room.data);
		room.presence = presence;
	}
	if (options.cursors !== false) {
		const cursors = client.stream(`${path}/__cursors`, { arity, merge: 'cursor', key: 'key' });
		/** @param {...any} args room args */
		cursors.smooth = (...args) => smooth(cursors(...args));
		room.cursors = cursors;
		room.moveCursor = latestSender(client, `${path}/__cursor`);
	}
	if (options.lobby) {
		// `{ room, args, meta, count, version }` per open room; of two entries of one room that
		// crossed on the way (two replicas), the newer count stays.
		room.lobby = client.stream(`${path}/__lobby`, { merge: 'crud', key: 'room', newer: 'version' });
	}
	const actions = Array.isArray(options.actions) ? options.actions : Object.keys(options.actions || {});
	for (const name of actions) {
		if (RESERVED.has(name)) {
			console.warn(`[liveroom] room '${path}': action '${name}' clashes with a built-in member; call it via client.rpc('${path}/__action/${name}')`);
			continue;
		}
		room[name] = client.rpc(`${path}/__action/${name}`);
	}
	return room;
}

/**
 * `presence.update(...roomArgs, state)`: like `latestSender`, and the last state per room is kept
 * and sent again whenever that room's data stream comes back after a reconnect (the server drops
 * a socket's state with the socket; the new one must say it again, once it is a member).
 * @param {import('./client.js').LiveClient} client
 * @param {string} path
 * @param {(...args: any[]) => { status: import('./store.js').Readable<string> }} data the room's data factory
 */
function awarenessSender(client, path, data) {
	const send = latestSender(client, path);
	/** @type {Map<string, { args: any[], stop: () => void }>} */
	const kept = new Map();
	/** @param {...any} args room args, then the state object, or `null` */
	return function update(...args) {
		const key = JSON.stringify(args.slice(0, -1));
		const state = args[args.length - 1];
		const old = kept.get(key);
		if (state === null || state === undefined) {
			old?.stop();
			kept.delete(key);
		} else if (old) {
			old.args = args;
		} else {
			const entry = { args, stop: () => {} };
			let last = '';
			entry.stop = data(...args.slice(0, -1)).status.subscribe((s) => {
				// Back to ready after a refetch: the new socket is a member again.
				if (s === 'ready' && last === 'refreshing') send(...entry.args);
				last = s;
			});
			kept.set(key, entry);
		}
		send(...args);
	};
}

/**
 * `send(...roomArgs, value)`: fire-and-forget `<path>` calls, coalesced so that each room sends at
 * most once per animation frame (latest value wins). Dropped while disconnected.
 * @param {import('./client.js').LiveClient} client
 * @param {string} path
 */
function latestSender(client, path) {
	/** @type {Map<string, any[]>} */
	const latest = new Map();
	let scheduled = false;
	function flush() {
		scheduled = false;
		for (const args of latest.values()) client.connection.fire(path, args, { dropIfClosed: true });
		latest.clear();
	}
	/** @param {...any} args room args, then the position (or state) object, or `null` */
	return function send(...args) {
		latest.set(JSON.stringify(args.slice(0, -1)), args);
		if (!scheduled) {
			scheduled = true;
			nextFrame(flush);
		}
	};
}
