/**
 * Merge strategies for live events (protocol.md section 4). Pure functions: they never mutate the
 * current value and always return a NEW array for array-based modes, so keyed `{#each}` blocks and
 * `===`-based change detection see every update.
 */

/**
 * @typedef {'crud' | 'latest' | 'set' | 'presence' | 'cursor'} MergeMode
 * @typedef {{ merge?: MergeMode, key?: string, prepend?: boolean, max?: number, newer?: string }} MergeOptions
 */

/** Default cap for `latest`. */
export const DEFAULT_LATEST_MAX = 50;

/**
 * Upsert `item` into a copy of `list` by `key`: replace in place when present, else append (or
 * prepend).
 * @param {any[]} list
 * @param {any} item
 * @param {string} key
 * @param {boolean} [prepend]
 */
function upsert(list, item, key, prepend) {
	const out = list.slice();
	const i = out.findIndex((x) => x != null && x[key] === item[key]);
	if (i >= 0) out[i] = item;
	else if (prepend) out.unshift(item);
	else out.push(item);
	return out;
}

/**
 * @param {any[]} list
 * @param {any} id
 * @param {string} key
 */
function remove(list, id, key) {
	return list.filter((x) => x == null || x[key] !== id);
}

/**
 * Apply one live event to the current value.
 *
 * - all modes: `refreshed` replaces the whole value;
 * - `crud` (key default `id`): `created` upserts (append, or prepend), `updated` replaces an existing
 *   key (unknown keys are ignored), `deleted` removes; `max` caps the length (keeping the newest end);
 *   with `newer` (a field name, e.g. `version`), an upsert older than the item it would replace is
 *   ignored (two updates of one item that crossed on the way: the newest stays);
 * - `latest`: every event appends its data, keeping the last `max` (default 50);
 * - `set`: every event replaces the value;
 * - `presence`: keyed by `.key`; `join` upserts, `leave` removes, `set` replaces;
 * - `cursor`: keyed by `.key`; `update` upserts, `remove` removes, `set` replaces.
 *
 * Keyed events with `null`/non-object data are ignored.
 *
 * @param {any} current current value (non-arrays count as `[]` for array modes)
 * @param {string} event
 * @param {any} data
 * @param {MergeOptions} [options]
 * @returns {any} the new value
 */
export function applyMerge(current, event, data, options = {}) {
	const mode = options.merge || 'crud';
	if (event === 'refreshed') return Array.isArray(data) ? data.slice() : data;
	if (mode === 'set') return Array.isArray(data) ? data.slice() : data;

	const list = Array.isArray(current) ? current : [];

	if (mode === 'latest') {
		const max = options.max || DEFAULT_LATEST_MAX;
		const out = list.concat([data]);
		return out.length > max ? out.slice(out.length - max) : out;
	}

	if (mode === 'presence' || mode === 'cursor') {
		const upsertEvent = mode === 'presence' ? 'join' : 'update';
		const removeEvent = mode === 'presence' ? 'leave' : 'remove';
		if (event === 'set') return Array.isArray(data) ? data.slice() : [];
		if (data === null || typeof data !== 'object') return list.slice();
		if (event === upsertEvent) return upsert(list, data, 'key');
		if (event === removeEvent) return remove(list, data.key, 'key');
		return list.slice();
	}

	// crud
	const key = options.key || 'id';
	if (data === null || typeof data !== 'object') return list.slice();
	let out;
	if (options.newer && (event === 'created' || event === 'updated')) {
		const f = options.newer;
		const old = list.find((x) => x != null && x[key] === data[key]);
		if (old && typeof old[f] === 'number' && typeof data[f] === 'number' && data[f] < old[f]) return list.slice();
	}
	if (event === 'created') out = upsert(list, data, key, options.prepend);
	else if (event === 'updated') {
		const i = list.findIndex((x) => x != null && x[key] === data[key]);
		out = list.slice();
		if (i >= 0) out[i] = data;
	} else if (event === 'deleted') out = remove(list, data[key], key);
	else out = list.slice();
	if (options.max && out.length > options.max) {
		out = options.prepend ? out.slice(0, options.max) : out.slice(out.length - options.max);
	}
	return out;
}
