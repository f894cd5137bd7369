/**
 * A scriptable fake liveroom server built on `ws`, for unit tests of the client's wire behaviour.
 * It records every frame and lets the test answer calls by hand or with a default handler.
 */
import { WebSocketServer } from 'ws';
import { EventEmitter } from 'node:events';

export class FakeServer extends EventEmitter {
	/**
	 * @param {{ onCall?: (call: any, sock: FakeSocket) => void, port?: number }} [opts]
	 *   `onCall` handles each RPC call (also each entry of a batch frame) unless it returns false.
	 */
	constructor(opts = {}) {
		super();
		this.opts = opts;
		/** @type {FakeSocket[]} */
		this.sockets = [];
		/** All frames from all sockets, parsed. @type {any[]} */
		this.frames = [];
		/** @type {any[]} */
		this.urls = [];
	}

	/** @param {number} [port] */
	async start(port = 0) {
		this.wss = new WebSocketServer({ host: '127.0.0.1', port });
		await new Promise((r) => this.wss.once('listening', r));
		this.port = /** @type {any} */ (this.wss.address()).port;
		this.url = `ws://127.0.0.1:${this.port}/ws`;
		this.wss.on('connection', (ws, req) => {
			const sock = new FakeSocket(ws, this);
			this.urls.push(req.url);
			this.sockets.push(sock);
			this.emit('connection', sock);
		});
		return this;
	}

	/** The most recent connection. */
	get last() {
		return this.sockets[this.sockets.length - 1];
	}

	/** Wait for the next connection. @param {number} [timeout] @returns {Promise<FakeSocket>} */
	nextConnection(timeout = 5000) {
		return once(this, 'connection', timeout);
	}

	async stop() {
		for (const s of this.sockets) s.ws.terminate();
		await new Promise((r) => this.wss.close(() => r(undefined)));
	}
}

export class FakeSocket extends EventEmitter {
	/** @param {import('ws').WebSocket} ws @param {FakeServer} server */
	constructor(ws, server) {
		super();
		this.ws = ws;
		/** @type {any[]} */
		this.frames = [];
		ws.on('message', (raw) => {
			const frame = JSON.parse(String(raw));
			this.frames.push(frame);
			server.frames.push(frame);
			this.emit('frame', frame);
			const calls = Array.isArray(frame.batch) ? frame.batch : frame.rpc ? [frame] : [];
			for (const call of calls) server.opts.onCall?.(call, this);
		});
		ws.on('close', (code) => this.emit('close', code));
	}

	/** @param {any} msg */
	send(msg) {
		this.ws.send(JSON.stringify(msg));
	}

	/** Reply to a call. @param {string} id @param {any} body e.g. `{ ok: true, data: 1 }` */
	reply(id, body) {
		this.send({ topic: '__rpc', event: id, data: { id, ...body } });
	}

	/** Publish an event to this socket. @param {string} topic @param {string} event @param {any} data */
	event(topic, event, data) {
		this.send({ topic, event, data });
	}

	/** @param {number} code @param {string} [reason] */
	close(code, reason) {
		this.ws.close(code, reason);
	}

	/**
	 * Wait for a frame matching `pred` (already received ones count).
	 * @param {(f: any) => boolean} pred
	 * @param {number} [timeout]
	 */
	waitFrame(pred, timeout = 5000) {
		const found = this.frames.find(pred);
		if (found) return Promise.resolve(found);
		return new Promise((resolve, reject) => {
			const t = setTimeout(() => {
				this.off('frame', on);
				reject(new Error(`no matching frame within ${timeout} ms; got ${JSON.stringify(this.frames)}`));
			}, timeout);
			const on = (/** @type {any} */ f) => {
				if (!pred(f)) return;
				clearTimeout(t);
				this.off('frame', on);
				resolve(f);
			};
			this.on('frame', on);
		});
	}

	/** Wait for the socket to close; resolves with the close code. @param {number} [timeout] */
	waitClose(timeout = 5000) {
		if (this.ws.readyState === 3) return Promise.resolve(-1);
		return once(this, 'close', timeout);
	}
}

/**
 * @param {EventEmitter} emitter @param {string} event @param {number} timeout
 * @returns {Promise<any>}
 */
function once(emitter, event, timeout) {
	return new Promise((resolve, reject) => {
		const t = setTimeout(() => {
			emitter.off(event, on);
			reject(new Error(`no '${event}' within ${timeout} ms`));
		}, timeout);
		const on = (/** @type {any} */ v) => {
			clearTimeout(t);
			resolve(v);
		};
		emitter.once(event, on);
	});
}
