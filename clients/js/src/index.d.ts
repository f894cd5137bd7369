/** Type declarations for `liveroom` (the JS client). */

/** Svelte store contract: `subscribe` delivers the current value synchronously. */
export interface Readable<T> {
	subscribe(run: (value: T) => void, invalidate?: () => void): () => void;
}

export interface Writable<T> extends Readable<T> {
	set(value: T): void;
	update(fn: (value: T) => T): void;
	/** Current value without subscribing. */
	get(): T;
}

export function writable<T>(value: T, start?: () => void | (() => void)): Writable<T>;
export function readonly<T>(store: Readable<T>): Readable<T>;
/** Read a store's current value once. */
export function get<T>(store: Readable<T>): T;

/** Typed error of RPCs, actions and stream loads. */
export class LiveError extends Error {
	constructor(code: string, message?: string, issues?: ValidationIssue[]);
	name: 'LiveError';
	/** Server code (`FORBIDDEN`, `VALIDATION`, app codes, ...) or client code (`TIMEOUT`, `DISCONNECTED`, ...). */
	code: string;
	/** Present for `VALIDATION` errors. */
	issues?: ValidationIssue[];
	toJSON(): { code: string; message: string; issues?: ValidationIssue[] };
}

export interface ValidationIssue {
	path: Array<string | number>;
	message: string;
}

export type MergeMode = 'crud' | 'latest' | 'set' | 'presence' | 'cursor';

export interface MergeOptions {
	merge?: MergeMode;
	/** Key field for `crud` (default `id`). */
	key?: string;
	prepend?: boolean;
	max?: number;
}

/** Apply one live event to a value (pure; returns new arrays). */
export function applyMerge(current: any, event: string, data: any, options?: MergeOptions): any;

/**
 * Store value: `undefined` while loading, the data, or `{ error }` when the first load failed.
 * Every case has an `error` field, so `$data?.error` type-checks and narrows:
 * `{#if $data?.error} ... {:else if $data} {#each $data as card} ...`.
 */
export type StreamValue<T> = (T & { error?: undefined }) | undefined | { error: LiveError };

/**
 * The data of a stream value, or `fallback` while loading or after a failed first load:
 * `{#each valueOr($people, []) as person (person.key)}`.
 */
export function valueOr<T, F>(value: StreamValue<T>, fallback: F): T | F;

/** A getter of a stream's args: the one arg itself, or the array of several. */
export type ArgsGetter<A extends any[]> = () => A extends [infer One] ? One : A;

export type StreamStatus = 'idle' | 'loading' | 'ready' | 'refreshing' | 'error';

/** How the last refetch after a reconnect recovered: only the missed events, or the full data. */
export type StreamRecovery = 'replayed' | 'reloaded' | null;

/**
 * A stream's state for a status indicator: `'connecting'` (first load), `'live'`,
 * `'reconnecting'` (its refetch after a reconnect is on its way; the value stays),
 * `'recovered'` (caught up after a reconnect, for a few seconds; `recovery` says how),
 * `'degraded'` (the server may be missing other replicas' events), `'error'`.
 */
export type StreamState = 'connecting' | 'live' | 'reconnecting' | 'recovered' | 'degraded' | 'error';

export interface StreamStore<T> extends Readable<StreamValue<T>> {
	/** Last error (`null` when healthy); set on later failures while the data is kept. */
	readonly error: Readable<LiveError | null>;
	readonly status: Readable<StreamStatus>;
	/** `'replayed'` when the last reconnect got only the missed events, `'reloaded'` for a full load. */
	readonly recovery: Readable<StreamRecovery>;
	/** What a status indicator shows for this stream. */
	readonly state: Readable<StreamState>;
	/** Presence streams: members in the room, listed or not (large rooms list the first ones). */
	readonly count: Readable<number | undefined>;
	/** How many optimistic changes of this store wait for their call's answer. */
	readonly pending: Readable<number>;
	/**
	 * Shows `apply(value)` at once until `call` settles: rolled back (and the promise rejects)
	 * when it fails or the connection is lost, replaced by the server's event for the result's
	 * key when it succeeds. Offline-queued calls stay visible meanwhile (see `pending`).
	 */
	optimistic<R>(apply: (value: T) => T, call: () => Promise<R>): Promise<R>;
	readonly path: string;
	readonly args: any[];
	/** Reload from the server, keeping the current value visible meanwhile. */
	refetch(): void;
}

/** `factory(...args)` -> store (same instance while in use). Itself a store for the no-arg stream. */
export interface StreamFactory<A extends any[], T> extends Readable<StreamValue<T>> {
	(...args: A): StreamStore<T>;
	/** A store that follows reactive args (Svelte 5 props): `items(() => listId)`. */
	(args: ArgsGetter<A>): StreamStore<T>;
	readonly error: Readable<LiveError | null>;
	readonly status: Readable<StreamStatus>;
	readonly state: Readable<StreamState>;
	readonly path: string;
}

export interface RpcFunction<A extends any[] = any[], R = any> {
	(...args: A): Promise<R>;
	/** Same call, fire-and-forget (no id, no reply). */
	fire(...args: A): void;
	/** Alias of `fire` (svelte-realtime 0.5 spelling). */
	fireAndForget(...args: A): void;
	readonly path: string;
	/**
	 * The same call with an expected effect on a stream store: `apply(value, ...args)` shows at
	 * once (see `StreamStore.optimistic`). `store` may be a function of the call's args.
	 */
	optimistic<T>(
		store: StreamStore<T> | ((...args: A) => StreamStore<T>),
		apply: (value: T, ...args: A) => T
	): (...args: A) => Promise<R>;
}

/** An open room of a lobby (`Room::lobby`): its topic, room args, metadata and member count. */
export interface LobbyEntry<A extends any[] = any[], M = unknown> {
	/** The room's data topic (the entry's key). */
	room: string;
	/** The room args it was opened with. */
	args: A;
	/** What `Room::lobby_meta` computed when it opened (`null` without). */
	meta: M;
	/** Members in the room, across the cluster. */
	count: number;
	/** Goes up with every change of `count`. */
	version: number;
}

export interface PresenceEntry<D = any> {
	key: string;
	data: D;
}

export interface CursorPosition {
	x: number;
	y: number;
	[field: string]: unknown;
}

/** A room's presence: `presence(...roomArgs)` is the roster store. */
export interface PresenceFactory<A extends any[] = any[], D = any, U = Record<string, unknown>>
	extends StreamFactory<A, PresenceEntry<D>[]> {
	/** Members in the room, listed or not; `undefined` while loading. */
	count(...roomArgs: A): Readable<number | undefined>;
	/**
	 * Share my awareness state (merged into what others see of me; the server's fields win):
	 * fire-and-forget, at most once per animation frame, latest wins. `null` clears it; it also
	 * goes when this socket leaves the room.
	 */
	update(...roomArgsThenState: [...A, U | null]): void;
}

export interface SmoothOptions {
	/** Shortest glide, ms (default 16). */
	minMs?: number;
	/** Longest glide, ms (default 600). */
	maxMs?: number;
	now?: () => number;
	frame?: (fn: () => void) => void;
}

/** A store that glides each cursor to its new position (see smooth.js); the raw store is unchanged. */
export function smooth<S extends Readable<any>>(source: S, options?: SmoothOptions): Readable<S extends Readable<infer V> ? V : never>;

/** A room's cursors: `cursors(...roomArgs)` is the raw store. */
export interface CursorFactory<A extends any[] = any[], C = CursorEntry> extends StreamFactory<A, C[]> {
	/** The same cursors gliding between updates (see `smooth`). */
	smooth(...roomArgs: A): Readable<StreamValue<C[]>>;
	/** The same, following reactive args (Svelte 5 props). */
	smooth(args: ArgsGetter<A>): Readable<StreamValue<C[]>>;
}

/** A cursor of another user: its position type plus the user's `key`. */
export type CursorEntry<P = CursorPosition> = P & { key: string };

export interface RoomOptions extends MergeOptions {
	topicArgs?: number;
	args?: string[];
	/** Expose `presence(...)` (default true). */
	presence?: boolean;
	/** Expose `cursors(...)` and `moveCursor(...)` (default true). */
	cursors?: boolean;
	/** Action names, or the manifest's `{ name: { args } }` object. */
	actions?: string[] | Record<string, unknown>;
}

export interface Room {
	data(...roomArgs: any[]): StreamStore<any>;
	presence: PresenceFactory;
	cursors: CursorFactory;
	/**
	 * `moveCursor(...roomArgs, position)`: fire-and-forget, at most once per animation frame. A
	 * `null` position removes my cursor (the pointer left).
	 */
	moveCursor(...roomArgsThenPosition: any[]): void;
	/** Actions: `room.addCard(boardId, title)` -> Promise of the result. */
	[action: string]: any;
}

export type ConnectionStatus = 'connecting' | 'open' | 'closed';

/** The server's health: `'degraded'` while it may be missing other replicas' events (its Redis is down). */
export type Health = 'healthy' | 'degraded';

/**
 * The connection's state for a status indicator: `'connecting'` (never open yet), `'live'`,
 * `'reconnecting'` (lost and retrying, or open with its streams not caught up yet),
 * `'recovered'` (caught up after a reconnect, for a few seconds), `'degraded'` (open, but the
 * server says events from elsewhere may be missing), `'closed'` (by `close()`), `'failed'` (a
 * terminal close; see `error`).
 */
export type ConnectionState = 'connecting' | 'live' | 'reconnecting' | 'recovered' | 'degraded' | 'closed' | 'failed';

export interface ReconnectOptions {
	/** First retry delay, ms (default 500); doubles per attempt, with jitter. */
	baseMs?: number;
	/** Cap of the retry delay, ms (default 15000). */
	maxMs?: number;
	/** Minimum delay after a 4429 close, ms (default 30000). */
	rateLimitedMs?: number;
}

export interface ClientOptions {
	/** `ws(s)://...` URL; default `ws(s)://<location.host>/ws`. */
	url?: string;
	/** Path of the default URL (default `/ws`). */
	path?: string;
	/** WebSocket implementation (default `globalThis.WebSocket`; pass `ws` in Node < 22). */
	WebSocket?: any;
	/** RPC / stream-load timeout, ms (default 30000). */
	rpcTimeoutMs?: number;
	/** Reconnect when no frame arrived for this long, ms (default 150000). */
	idleTimeoutMs?: number;
	reconnect?: ReconnectOptions;
	/** How long `state` says `'recovered'` after a reconnect caught up, ms (default 4000). */
	recoveredMs?: number;
	/** Log every frame with `console.debug`. */
	debug?: boolean;
}

export interface Connection {
	readonly status: Readable<ConnectionStatus>;
	readonly health: Readable<Health>;
	readonly state: Readable<ConnectionState>;
	/**
	 * Why the client cannot get through, with a hint (`null` while fine): a 1008/4401/4403 close
	 * (`POLICY_VIOLATION` with the server's reason, e.g. a refused origin) or `UNREACHABLE` after
	 * 3 failed opens (a 404 upgrade, nothing listening; it keeps retrying). Cleared on open.
	 */
	readonly error: Readable<LiveError | null>;
	readonly url: string;
	sessionId: string | null;
	lastCloseCode: number | null;
	/** Set after a 1008/4401/4403 close until `reconnect()`. */
	terminalError: LiveError | null;
	call(path: string, args: any[], options?: { timeout?: number }): Promise<any>;
	fire(path: string, args: any[], options?: { dropIfClosed?: boolean }): void;
}

export class LiveClient {
	constructor(options?: ClientOptions);
	readonly connection: Connection;
	readonly status: Readable<ConnectionStatus>;
	/** `connection.health`. */
	readonly health: Readable<Health>;
	/** `connection.state`. */
	readonly state: Readable<ConnectionState>;
	/** `connection.error`. */
	readonly error: Readable<LiveError | null>;
	configure(options: ClientOptions): this;
	connect(): this;
	reconnect(): void;
	close(): void;
	rpc<A extends any[] = any[], R = any>(path: string, options?: { timeout?: number }): RpcFunction<A, R>;
	stream<A extends any[] = any[], T = any>(path: string, options?: MergeOptions & { arity?: number }): StreamFactory<A, T>;
	room(path: string, options?: RoomOptions): Room;
}

export function createClient(options?: ClientOptions): LiveClient;

/** The client behind the top-level exports and generated `$live/*` modules. */
export const defaultClient: LiveClient;
/** Connection status of the default client. */
export const status: Readable<ConnectionStatus>;
/** Why the default client cannot connect, with a hint (`null` while fine); see `Connection.error`. */
export const connectionError: Readable<LiveError | null>;
/** The default client's server health (svelte-realtime's `health` store reads the same events). */
export const health: Readable<Health>;
/** The default client's state for a status indicator. */
export const connectionState: Readable<ConnectionState>;
export function configure(options: ClientOptions): LiveClient;
export function connect(options?: ClientOptions): LiveClient;
export function __rpc<A extends any[] = any[], R = any>(path: string, options?: { timeout?: number }): RpcFunction<A, R>;
export function __stream<A extends any[] = any[], T = any>(path: string, options?: MergeOptions & { arity?: number }): StreamFactory<A, T>;
export function __room(path: string, options?: RoomOptions): Room;
