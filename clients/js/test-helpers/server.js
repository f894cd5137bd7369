/**
 * Start the real Rust test server (`liveroom-testserver`) for integration tests.
 * Binary: $LIVEROOM_TESTSERVER, else <repo>/target/debug/liveroom-testserver
 * (build it with `cargo build -p liveroom-testserver`).
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { resolve, dirname } from 'node:path';
import WebSocket from 'ws';
import { before, after } from 'node:test';
import { createClient } from '../src/index.js';

const here = dirname(fileURLToPath(import.meta.url));
export const BINARY = process.env.LIVEROOM_TESTSERVER || resolve(here, '../../../target/debug/liveroom-testserver');

/**
 * @typedef {{ proc: import('node:child_process').ChildProcess, port: number, http: string, ws: string,
 *   stop(): Promise<void>, output(): string }} TestServer
 */

/**
 * Spawn the server and wait for its `LISTENING http://127.0.0.1:<port>` line.
 * @param {{ port?: number, graceMs?: number, args?: string[], timeout?: number }} [opts]
 * @returns {Promise<TestServer>}
 */
export async function startServer(opts = {}) {
	if (!existsSync(BINARY)) {
		throw new Error(`test server binary not found at ${BINARY}; run \`cargo build -p liveroom-testserver\` in the repo root (or set LIVEROOM_TESTSERVER)`);
	}
	const args = ['--bind', `127.0.0.1:${opts.port ?? 0}`];
	if (opts.graceMs !== undefined) args.push('--grace-ms', String(opts.graceMs));
	args.push(...(opts.args || []));
	// A `.js` "binary" is the JS stand-in (test-helpers/mock-testserver.js): run it with node.
	const proc = BINARY.endsWith('.js')
		? spawn(process.execPath, [BINARY, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
		: spawn(BINARY, args, { stdio: ['ignore', 'pipe', 'pipe'] });
	let out = '';
	proc.stderr.on('data', (d) => (out += d));
	const port = await new Promise((resolveP, reject) => {
		const timer = setTimeout(() => reject(new Error(`server did not print LISTENING within ${opts.timeout ?? 20000} ms:\n${out}`)), opts.timeout ?? 20000);
		let buf = '';
		proc.stdout.on('data', (d) => {
			buf += d;
			out += d;
			const m = /LISTENING http:\/\/127\.0\.0\.1:(\d+)/.exec(buf);
			if (m) {
				clearTimeout(timer);
				resolveP(Number(m[1]));
			}
		});
		proc.once('exit', (code) => {
			clearTimeout(timer);
			reject(new Error(`server exited (${code}) before listening:\n${out}`));
		});
	});
	return {
		proc,
		port,
		http: `http://127.0.0.1:${port}`,
		ws: `ws://127.0.0.1:${port}/ws`,
		output: () => out,
		stop: () => stopProcess(proc)
	};
}

/** Kill a child process and wait for it to exit. @param {import('node:child_process').ChildProcess} proc */
export function stopProcess(proc) {
	if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
	return new Promise((r) => {
		proc.once('exit', () => r(undefined));
		proc.kill('SIGKILL');
	});
}

/**
 * A client for the test server, with short reconnect delays.
 * @param {TestServer | string} server
 * @param {string} [query] e.g. `user=alice&name=Alice`
 */
export function clientFor(server, query) {
	const base = typeof server === 'string' ? server : server.ws;
	return createClient({
		url: query ? `${base}?${query}` : base,
		WebSocket,
		rpcTimeoutMs: 10000,
		debug: !!process.env.LIVEROOM_DEBUG,
		reconnect: { baseMs: 50, maxMs: 500 }
	});
}

/**
 * One test server for the whole file: starts it before the tests, and after them closes every
 * client made with `client()` and stops the server.
 */
export function useServer() {
	/** @type {TestServer | undefined} */ let server;
	/** @type {ReturnType<typeof clientFor>[]} */ const clients = [];
	before(async () => {
		server = await startServer();
	});
	after(async () => {
		for (const c of clients) c.close();
		await server?.stop();
	});
	return {
		/** The running server (available once the tests run). */
		server: () => /** @type {TestServer} */ (server),
		/** A client of the server, closed after the file's tests. @param {string} [query] */
		client: (query) => {
			const c = clientFor(/** @type {TestServer} */ (server), query);
			clients.push(c);
			return c;
		}
	};
}
