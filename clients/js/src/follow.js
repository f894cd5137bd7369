/**
 * Stores whose args follow reactive values: `board.data(() => boardId)`.
 *
 * In a Svelte 5 component, `const data = board.data(boardId)` reads the prop once (and Svelte
 * warns `state_referenced_locally`). Passing a getter instead makes the store follow it: the
 * getter is tracked with `svelte/store`'s `toStore` (Svelte 5), and whenever its value changes the
 * store switches to the stream for the new args, keeping the shared per-args stores underneath.
 * Call it while a component is set up (its `<script>`), as Svelte's `toStore` expects. Without
 * Svelte the getter is read at each first subscription; on the server (SSR) once.
 */
import { writable } from './store.js';

/** @type {null | (<T>(get: () => T) => { subscribe(run: (v: T) => void): () => void })} */
let toStore = null;
try {
	({ toStore } = await import('svelte/store'));
	if (typeof toStore !== 'function') toStore = null; // Svelte 4
} catch {
	toStore = null;
}

/**
 * The args a getter stands for: its value, wrapped in an array unless the stream takes several
 * args (then the getter returns the array).
 * @param {unknown} value
 * @param {number | undefined} arity
 * @returns {any[]}
 */
function argsOf(value, arity) {
	if (arity === 1 || !Array.isArray(value)) return [value];
	return value;
}

/**
 * A store that follows `getter`: `make(args)` gives the stream store for the current args.
 * @template S
 * @param {() => unknown} getter
 * @param {(args: any[]) => S & { subscribe: Function, error: any, status: any, recovery: any, state: any, count: any, pending: any }} make
 * @param {number | undefined} arity
 */
export function follow(getter, make, arity) {
	// One tracker, made now: Svelte ties its effect to the component being set up (a tracker
	// made later, inside a template effect, would die when that effect re-runs). Without Svelte the
	// getter is read at each first subscription.
	const args = toStore
		? toStore(getter)
		: { subscribe: (/** @type {(v: unknown) => void} */ run) => (run(getter()), () => {}) };

	/**
	 * One of the stream's stores (`value`, `error`, `status`, `recovery`), switched with the args.
	 * @param {(store: any) => { subscribe: Function }} pick
	 */
	const switching = (pick) => {
		/** @type {any} */
		let initial;
		const out = writable(initial, () => {
			/** @type {string | undefined} */ let key;
			/** @type {undefined | (() => void)} */ let stop;
			const unArgs = args.subscribe((/** @type {unknown} */ raw) => {
				const list = argsOf(raw, arity);
				const k = JSON.stringify(list);
				if (k === key) return;
				key = k;
				const previous = stop;
				stop = pick(make(list)).subscribe((/** @type {any} */ v) => out.set(v));
				previous?.();
			});
			return () => {
				unArgs();
				stop?.();
			};
		});
		return { subscribe: out.subscribe };
	};

	const current = () => make(argsOf(getter(), arity));
	return {
		subscribe: switching((s) => s).subscribe,
		error: switching((s) => s.error),
		status: switching((s) => s.status),
		recovery: switching((s) => s.recovery),
		state: switching((s) => s.state),
		count: switching((s) => s.count),
		pending: switching((s) => s.pending),
		/**
		 * An optimistic change of the current stream (see `StreamStore.optimistic`).
		 * @param {(value: any) => any} apply
		 * @param {() => Promise<any>} call
		 */
		optimistic(apply, call) {
			return /** @type {any} */ (current()).optimistic(apply, call);
		},
		/** The stream path. */
		get path() {
			return /** @type {any} */ (current()).path;
		},
		/** The current args. */
		get args() {
			return argsOf(getter(), arity);
		},
		/** Reload the current stream. */
		refetch() {
			/** @type {any} */ (current()).refetch();
		}
	};
}
