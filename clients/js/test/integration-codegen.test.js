// Codegen: run the CLI against the live manifest, import the generated modules, and drive the
// seed example (`import { board } from '$live/collab'`) through them.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import WebSocket from 'ws';
import { configure, defaultClient, get } from '../src/index.js';
import { startServer, clientFor } from '../test-helpers/server.js';
import { waitFor, until } from '../test-helpers/wait.js';

const pkgRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const run = promisify(execFile);

/** @type {import('../test-helpers/server.js').TestServer} */ let server;
/** @type {string} */ let dir;

before(async () => {
	server = await startServer({ graceMs: 300 });
	dir = await mkdtemp(join(tmpdir(), 'liveroom-codegen-'));
	// Let generated files resolve the bare specifier 'liveroom' to this package.
	await mkdir(join(dir, 'node_modules'), { recursive: true });
	await symlink(pkgRoot, join(dir, 'node_modules', 'liveroom'), 'dir');
});
after(async () => {
	defaultClient.close();
	await server?.stop();
	if (dir) await rm(dir, { recursive: true, force: true });
});

test('CLI codegen from the manifest URL writes <module>.js and .d.ts', async () => {
	const out = join(dir, 'live');
	const { stdout } = await run(process.execPath, [join(pkgRoot, 'bin/liveroom.js'), 'codegen', '--manifest', `${server.http}/__live/manifest.json`, '--out', out]);
	assert.match(stdout, /collab\.js/);
	for (const f of ['collab.js', 'collab.d.ts', 'test.js', 'test.d.ts']) assert.ok(existsSync(join(out, f)), f);
	const js = await readFile(join(out, 'collab.js'), 'utf8');
	assert.match(js, /import \{ __room \} from "liveroom";/);
	assert.match(js, /export const board = __room\("collab\/board", /);
	const dts = await readFile(join(out, 'collab.d.ts'), 'utf8');
	// Typed from the server's schemas: the room args struct, the action's args struct.
	assert.match(dts, /addCard: RpcFunction<\[boardId: string, title: string\], unknown>;/);
	assert.match(dts, /addCardAfter: RpcFunction<\[boardId: string, title: string, ms: number\], unknown>;/);
	assert.match(dts, /data\(boardId: \(\) => string\): StreamStore<unknown\[\]>;/);
	assert.match(dts, /presence: PresenceFactory<\[boardId: string\], Member, Awareness>;/);
	assert.match(dts, /moveCursor\(boardId: string, position: CursorPosition \| null\): void;/);
	assert.match(dts, /export interface Member \{\n\tname\?: unknown;\n\}/);
	assert.match(dts, /note: RpcFunction<\[a: string, b: string, text: string\], unknown>;/);
	assert.doesNotMatch(dts, /\bany\b/);
	const test = await readFile(join(out, 'test.d.ts'), 'utf8');
	assert.match(test, /export declare const add: \(a: number, b: number\) => Promise<number>;/);
	assert.match(test, /export declare const slow: \(arg0: number\) => Promise<number>;/);
	assert.match(test, /export declare const echo: \(\.\.\.args: unknown\[\]\) => Promise<unknown\[\]>;/);
	assert.match(test, /export declare const topic: StreamFactory<\[name: string\], unknown\[\]>;/);
});

test('the seed example works through the generated $live/collab module', async () => {
	const out = join(dir, 'live');
	configure({ url: `${server.ws}?user=seed&name=Seed`, WebSocket, reconnect: { baseMs: 50, maxMs: 500 } });
	const { board } = await import(pathToFileURL(join(out, 'collab.js')).href);
	const { items, echo } = await import(pathToFileURL(join(out, 'test.js')).href);
	const boardId = 'seed-board';

	// <script> const data = board.data(boardId); const users = board.presence(boardId); const cursors = board.cursors(boardId);
	const data = board.data(boardId);
	const users = board.presence(boardId);
	const cursors = board.cursors(boardId);
	const subs = [data, users, cursors].map((s) => s.subscribe(() => {}));
	assert.equal(get(data), undefined, '$data is undefined while loading');
	await waitFor(data, Array.isArray);
	await waitFor(users, (v) => Array.isArray(v) && v.some((/** @type {any} */ u) => u.key === 'seed'));

	// <button onclick={() => board.addCard(boardId, 'New card')}>Add</button>
	const card = await board.addCard(boardId, 'New card');
	// {#each $data as card (card.id)}
	await waitFor(data, (v) => v.some((/** @type {any} */ c) => c.id === card.id && c.title === 'New card'));

	// Another user's cursor shows up in $cursors.
	const other = clientFor(server, 'user=peer&name=Peer');
	const peer = other.room('collab/board', { topicArgs: 1 });
	const up = peer.data(boardId).subscribe(() => {});
	await waitFor(peer.data(boardId), Array.isArray);
	peer.moveCursor(boardId, { x: 3, y: 4 });
	await waitFor(cursors, (v) => v.some((/** @type {any} */ c) => c.key === 'peer' && c.x === 3));
	up();
	other.close();

	// Plain stream (store without args: `$items`) and RPC exports.
	const seen = [];
	const ui = items.subscribe((/** @type {any} */ v) => seen.push(v));
	await waitFor(items, Array.isArray);
	assert.deepEqual(await echo('a', 1), ['a', 1]);
	ui();
	subs.forEach((u) => u());
});

test('--client svelte-realtime generates stock svelte-realtime/client calls', async () => {
	const out = join(dir, 'sr');
	await run(process.execPath, [join(pkgRoot, 'bin/liveroom.js'), 'codegen', '--manifest', `${server.http}/__live/manifest.json`, '--out', out, '--client', 'svelte-realtime']);
	// A stand-in for svelte-realtime/client (0.5 signatures) that records the calls.
	const fake = join(out, 'node_modules', 'svelte-realtime');
	await mkdir(fake, { recursive: true });
	await writeFile(join(fake, 'package.json'), JSON.stringify({ name: 'svelte-realtime', type: 'module', exports: { './client': './client.js' } }));
	await writeFile(
		join(fake, 'client.js'),
		`export const calls = [];
export const sent = [];
export function __stream(path, options, isDynamic) { calls.push(['stream', path, options, isDynamic]); return isDynamic ? (...args) => ({ path, args }) : { path }; }
export function __rpc(path) {
	calls.push(['rpc', path]);
	const fn = (...args) => Promise.resolve({ path, args });
	fn.fireAndForget = (...args) => sent.push({ rpc: path, args });
	return fn;
}`
	);
	const { board } = await import(pathToFileURL(join(out, 'collab.js')).href);
	const { calls, sent } = await import(pathToFileURL(join(fake, 'client.js')).href);
	const boardCalls = calls.filter((/** @type {any[]} */ c) => c[1].startsWith('collab/board/'));
	assert.deepEqual(boardCalls.slice(0, 3), [
		['stream', 'collab/board/__data', { merge: 'crud', key: 'id' }, true],
		['stream', 'collab/board/__presence', { merge: 'presence' }, true],
		['stream', 'collab/board/__cursors', { merge: 'cursor' }, true]
	]);
	assert.ok(boardCalls.some((/** @type {any[]} */ c) => c[0] === 'rpc' && c[1] === 'collab/board/__action/addCard'));
	assert.deepEqual(board.data('b1'), { path: 'collab/board/__data', args: ['b1'] });
	assert.deepEqual(await board.addCard('b1', 'x'), { path: 'collab/board/__action/addCard', args: ['b1', 'x'] });
	board.moveCursor('b1', { x: 1, y: 2 });
	board.moveCursor('b1', { x: 3, y: 4 });
	await until(() => sent.length > 0, { label: 'coalesced cursor send' });
	assert.deepEqual(sent, [{ rpc: 'collab/board/__cursor', args: ['b1', { x: 3, y: 4 }] }]);
});

test('generated declarations type-check under strict TypeScript, and a wrong argument type does not', async () => {
	const tsc = join(pkgRoot, 'node_modules', 'typescript', 'bin', 'tsc');
	const work = join(dir, 'ts');
	await mkdir(join(work, 'node_modules'), { recursive: true });
	await symlink(pkgRoot, join(work, 'node_modules', 'liveroom'), 'dir');
	await symlink(join(pkgRoot, 'node_modules', 'svelte'), join(work, 'node_modules', 'svelte'), 'dir');
	const manifest = `${server.http}/__live/manifest.json`;
	for (const client of ['liveroom', 'svelte-realtime']) {
		await run(process.execPath, [join(pkgRoot, 'bin/liveroom.js'), 'codegen', '--manifest', manifest, '--out', join(work, client), '--client', client]);
	}
	const check = async (/** @type {string} */ name, /** @type {string} */ body) => {
		await writeFile(join(work, `${name}.ts`), body);
		const args = [tsc, '--strict', '--noEmit', '--skipLibCheck', '--module', 'esnext', '--moduleResolution', 'bundler', '--target', 'es2022', join(work, `${name}.ts`)];
		return run(process.execPath, args, { cwd: work }).then(
			() => '',
			(/** @type {any} */ e) => String(e.stdout)
		);
	};
	const good = (/** @type {string} */ client) => `import { board } from './${client}/collab.js';
import { add } from './${client}/test.js';
const data = board.data('b1');
const sum: Promise<number> = add(1, 2);
const card: Promise<unknown> = board.addCard('b1', 'title');
data.subscribe((v) => {
	if (v?.error) console.log(v.error.message);
	else if (v) console.log(v.length);
});
board.moveCursor('b1', { x: 1, y: 2 });
export { sum, card };
`;
	const extras = `board.data(() => 'b1');
const add2 = board.addCard.optimistic((id) => board.data(id), (cards, _id, title) => [...(cards ?? []), { title }]);
const p2: Promise<unknown> = add2('b1', 'x');
const pending: number = get(board.data('b1').pending);
const glide = board.cursors.smooth('b1');
const n: number | undefined = get(board.presence.count('b1'));
board.presence.update('b1', { editing: null, typing: true });
board.moveCursor('b1', null);
export { p2, pending, glide, n };
`;
	assert.equal(await check('good-liveroom', `import { get } from 'liveroom';\n` + good('liveroom') + extras), '');
	assert.equal(await check('good-sr', good('svelte-realtime')), '');
	const bad = await check('bad', `import { board } from './liveroom/collab.js';\nboard.addCard('b1', 42);\n`);
	assert.match(bad, /bad\.ts.*Argument of type 'number' is not assignable to parameter of type 'string'/);
	const badSr = await check('bad-sr', `import { add } from './svelte-realtime/test.js';\nadd('1', 2);\n`);
	assert.match(badSr, /not assignable to parameter of type 'number'/);
});
