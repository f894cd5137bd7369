/**
 * Typed error for failed RPCs, actions and stream loads.
 *
 * `code` is the server's error code (`FORBIDDEN`, `VALIDATION`, `NOT_FOUND`, an app code such as
 * `BOOM`, ...) or one of the client-side codes `TIMEOUT`, `DISCONNECTED`, `UNAUTHENTICATED` /
 * `FORBIDDEN` / `POLICY_VIOLATION` (terminal close), `CONFIG`.
 */
export class LiveError extends Error {
	/**
	 * @param {string} code
	 * @param {string} [message]
	 * @param {Array<{ path: Array<string | number>, message: string }>} [issues] validation issues
	 */
	constructor(code, message, issues) {
		super(message || code);
		this.name = 'LiveError';
		/** @type {string} */
		this.code = code;
		if (issues !== undefined) this.issues = issues;
	}

	/** Plain-object form, handy for logging and JSON. */
	toJSON() {
		/** @type {Record<string, unknown>} */
		const out = { code: this.code, message: this.message };
		if (this.issues !== undefined) out.issues = this.issues;
		return out;
	}
}

/**
 * Build a LiveError from an `ok:false` reply object.
 * @param {{ code?: string, error?: string, message?: string, issues?: any }} reply
 * @returns {LiveError}
 */
export function errorFromReply(reply) {
	return new LiveError(reply.code || 'UNKNOWN', reply.error || reply.message || 'Unknown error', reply.issues);
}

/**
 * The data of a stream store's value, or `fallback` while it loads or after its first load
 * failed: `{#each valueOr($people, []) as person}` without an `{#if}` around it.
 * @template T, F
 * @param {T | undefined | { error: LiveError }} value
 * @param {F} fallback
 * @returns {T | F}
 */
export function valueOr(value, fallback) {
	if (value === undefined) return fallback;
	if (value !== null && typeof value === 'object' && /** @type {any} */ (value).error instanceof LiveError) return fallback;
	return /** @type {T} */ (value);
}
