// Codegen and Vite plugin without a server (manifest from the contract).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, writeFile, rm, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generate, generateModule, generateAmbientTypes, toIdentifier, validateManifest, codegen } from '../src/codegen.js';
import liveroomVite from '../src/vite.js';

const MANIFEST = {
	version: 1,
	modules: {
		collab: {
			rooms: {
				board: { topicArgs: 1, args: ['boardId'], merge: 'crud', key: 'id', presence: true, cursors: true, actions: { addCard: { args: ['boardId', 'title'] } } },
				pair: { topicArgs: 2, args: ['a', 'b'], actions: { note: { args: [] } } }
			},
			streams: {},
			rpcs: {}
		},
		test: { rooms: {}, streams: { items: { merge: 'crud', key: 'id', args: [] }, feed: { merge: 'latest', max: 5, prepend: true, args: ['room'] } }, rpcs: { echo: { args: [] }, 'do-it': { args: ['x'] } } },
		'a/b': { streams: { value: { merge: 'set', args: [] } } }
	}
};

test('liveroom flavour: room objects, stream factories, rpcs, nested module paths', () => {
	const files = Object.fromEntries(generate(MANIFEST).map((f) => [f.path, f.contents]));
	assert.deepEqual(Object.keys(files).sort(), ['a/b.d.ts', 'a/b.js', 'collab.d.ts', 'collab.js', 'test.d.ts', 'test.js']);
	assert.match(files['collab.js'], /export const board = __room\("collab\/board", \{"topicArgs":1,"merge":"crud","key":"id","presence":true,"cursors":true,"actions":\["addCard"\]\}\);/);
	assert.match(files['collab.js'], /export const pair = __room\("collab\/pair", \{"topicArgs":2,"merge":"crud","key":"id","presence":false,"cursors":false,"actions":\["note"\]\}\);/);
	assert.match(files['test.js'], /export const feed = __stream\("test\/feed", \{"merge":"latest","prepend":true,"max":5\}\);/);
	assert.match(files['test.js'], /export const doIt = __rpc\("test\/do-it"\);/);
	assert.match(files['test.d.ts'], /export declare const feed: StreamFactory<\[room: any\], any\[\]>;/);
	assert.match(files['test.d.ts'], /export declare const doIt: \(x: any\) => Promise<any>;/);
	assert.match(files['collab.d.ts'], /data\(a: any, b: any\): StreamStore<any\[\]>;/);
	assert.doesNotMatch(files['collab.d.ts'].split('pair')[1], /presence[(:]/, 'no presence member when the room has none');
	assert.match(files['collab.d.ts'], /note: RpcFunction<\[a: any, b: any, \.\.\.args: any\[\]\], any>;/, 'unknown action args: room args then rest');
	assert.match(files['collab.d.ts'], /addCard: RpcFunction<\[boardId: any, title: any\], any>;/);
	// Action args listed without the room args (as the Rust manifest does) give the same signature.
	const extraOnly = generateModule('collab', { rooms: { board: { topicArgs: 1, args: ['boardId'], actions: { addCard: { args: ['title'] } } } } }).dts;
	assert.match(extraOnly, /addCard: RpcFunction<\[boardId: any, title: any\], any>;/);
	assert.match(files['a/b.d.ts'], /StreamFactory<any\[\], any>/);
});

test('svelte-realtime flavour: __stream(path, opts, true) rooms, static/dynamic streams, __rpc actions', () => {
	const { js, dts } = generateModule('collab', MANIFEST.modules.collab, { client: 'svelte-realtime' });
	assert.match(js, /import \{ __rpc, __stream \} from "svelte-realtime\/client";/);
	assert.match(js, /data: __stream\("collab\/board\/__data", \{"merge":"crud","key":"id"\}, true\),/);
	assert.match(js, /presence: __stream\("collab\/board\/__presence", \{"merge":"presence"\}, true\),/);
	assert.match(js, /cursors: __stream\("collab\/board\/__cursors", \{"merge":"cursor"\}, true\),/);
	assert.doesNotMatch(js, /svelte-adapter-uws/);
	assert.match(js, /addCard: __rpc\("collab\/board\/__action\/addCard"\),/);
	assert.match(js, /moveCursor: __cursorSender\("collab\/board\/__cursor"\),/);
	assert.match(dts, /import type \{ Readable \} from 'svelte\/store';/);
	const t = generateModule('test', MANIFEST.modules.test, { client: 'svelte-realtime' }).js;
	assert.match(t, /export const items = __stream\("test\/items", \{"merge":"crud","key":"id"\}\);/);
	assert.match(t, /export const feed = __stream\("test\/feed", \{"merge":"latest","prepend":true,"max":5\}, true\);/);
});

test('ambient declarations: one declare module block per module, both flavours', () => {
	const lr = generateAmbientTypes(MANIFEST);
	assert.deepEqual([...lr.matchAll(/declare module "([^"]+)"/g)].map((m) => m[1]), ['$live/a/b', '$live/collab', '$live/test']);
	const sr = generateAmbientTypes(MANIFEST, { client: 'svelte-realtime', prefix: '~live/' });
	assert.match(sr, /declare module "~live\/collab" \{\n\timport type \{ Readable \} from 'svelte\/store';/);
	assert.match(sr, /\texport type LiveStore<T> =/);
});

test('identifiers and validation', () => {
	assert.equal(toIdentifier('my-room'), 'myRoom');
	assert.equal(toIdentifier('2d'), '_2d');
	assert.equal(toIdentifier('delete'), 'delete_');
	assert.throws(() => validateManifest({ modules: { '../evil': {} } }), /invalid module name/);
	assert.throws(() => validateManifest({ version: 2, modules: {} }), /unsupported manifest version/);
	assert.throws(() => generateModule('m', { rpcs: { 'a-b': {}, aB: {} } }), /clashes/);
});

test('codegen() writes files; the Vite plugin serves virtual $live/* modules or resolves to outDir', async () => {
	const dir = await mkdtemp(join(tmpdir(), 'liveroom-unit-'));
	try {
		const manifestFile = join(dir, 'manifest.json');
		await writeFile(manifestFile, JSON.stringify(MANIFEST));
		const written = await codegen({ manifest: manifestFile, out: join(dir, 'out') });
		assert.equal(written.length, 6);
		assert.match(await readFile(join(dir, 'out/a/b.js'), 'utf8'), /__stream\("a\/b\/value"/);

		const plugin = liveroomVite({ manifest: 'manifest.json' });
		plugin.configResolved({ root: dir });
		await plugin.buildStart.call({ addWatchFile() {} });
		assert.equal(plugin.resolveId('./x'), null);
		const id = plugin.resolveId('$live/collab');
		assert.equal(id, '\0liveroom:collab');
		assert.match(await plugin.load(id), /export const board = __room\("collab\/board"/);
		assert.match(await plugin.load(plugin.resolveId('$live/a/b')), /a\/b\/value/);
		await assert.rejects(plugin.load('\0liveroom:nope'), /not in the manifest/);
		assert.equal(await plugin.load('/some/file.js'), null);

		const typed = liveroomVite({ manifest: 'manifest.json', types: 'src/live.d.ts' });
		typed.configResolved({ root: dir });
		await typed.buildStart.call({});
		const ambient = await readFile(join(dir, 'src/live.d.ts'), 'utf8');
		assert.match(ambient, /declare module "\$live\/collab" \{/);
		assert.match(ambient, /\texport const board: \{/);
		assert.doesNotMatch(ambient, /export declare/, 'no declare inside an ambient module');

		const onDisk = liveroomVite({ manifest: manifestFile, outDir: 'gen', client: 'svelte-realtime' });
		onDisk.configResolved({ root: dir });
		await onDisk.buildStart.call({});
		assert.equal(onDisk.resolveId('$live/collab'), join(dir, 'gen/collab.js'));
		assert.match(await readFile(join(dir, 'gen/collab.js'), 'utf8'), /svelte-realtime\/client/);
	} finally {
		await rm(dir, { recursive: true, force: true });
	}
});

test('schemas become TypeScript types, named types declared once, never any', async () => {
	const { schemaToTs, generate } = await import('../src/codegen.js');
	const refs = new Set();
	assert.equal(schemaToTs({ type: ['string', 'null'] }, refs), 'string | null');
	assert.equal(schemaToTs({ type: 'array', items: { type: 'integer' } }, refs), 'number[]');
	assert.equal(schemaToTs({ type: 'array', prefixItems: [{ type: 'string' }, { type: 'boolean' }], items: false }, refs), '[string, boolean]');
	assert.equal(schemaToTs({ enum: ['todo', 'done'] }, refs), '"todo" | "done"');
	assert.equal(schemaToTs({ type: 'object', additionalProperties: { type: 'number' } }, refs), 'Record<string, number>');
	assert.equal(schemaToTs({ anyOf: [{ $ref: '#/$defs/Card' }, { type: 'null' }] }, refs), 'Card | null');
	assert.equal(schemaToTs(true, refs), 'unknown');
	assert.deepEqual([...refs], ['Card']);
	assert.equal(
		schemaToTs({ type: 'object', properties: { id: { type: 'string' }, 'x-y': { type: 'number' } }, required: ['id'] }, refs),
		'{\n\tid: string;\n\t"x-y"?: number;\n}'
	);

	const manifest = {
		version: 1,
		$defs: {
			Card: { type: 'object', description: 'A card.', properties: { id: { type: 'string' }, tags: { type: 'array', items: { $ref: '#/$defs/Tag' } } }, required: ['id', 'tags'] },
			Tag: { type: 'string', enum: ['a', 'b'] }
		},
		modules: {
			m: {
				rooms: {
					r: {
						topicArgs: 1,
						args: ['id'],
						params: [{ name: 'id', schema: { type: 'string' }, required: true }],
						data: { type: 'array', items: { $ref: '#/$defs/Card' } },
						presence: true,
						presenceData: { type: ['object', 'null'], properties: { n: { type: 'string' } }, required: ['n'] },
						cursors: false,
						actions: {
							add: {
								args: ['id', 'title', 'note'],
								params: [
									{ name: 'id', schema: { type: 'string' }, required: true },
									{ name: 'title', schema: { type: 'string' }, required: true },
									{ name: 'note', schema: { type: ['string', 'null'] }, required: false }
								],
								result: { $ref: '#/$defs/Card' }
							}
						}
					}
				},
				rpcs: { n: { args: [], params: [], result: { type: 'integer' } } }
			}
		}
	};
	const dts = generate(manifest).find((f) => f.path === 'm.d.ts')?.contents ?? '';
	assert.match(dts, /\/\*\* A card\. \*\/\nexport interface Card \{\n\tid: string;\n\ttags: Tag\[\];\n\}/);
	assert.match(dts, /export type Tag = "a" \| "b";/);
	assert.match(dts, /data\(id: string\): StreamStore<Card\[\]>;/);
	assert.match(dts, /data\(id: \(\) => string\): StreamStore<Card\[\]>;/);
	assert.match(dts, /presence: PresenceFactory<\[id: string\], \{\n\tn: string;\n\}, Record<string, unknown>>;/);
	assert.match(dts, /add: RpcFunction<\[id: string, title: string, note\?: string \| null\], Card>;/);
	assert.match(dts, /export declare const n: \(\) => Promise<number>;/);
	assert.doesNotMatch(dts, /\bany\b/);
});

test('a room with a lobby: board.lobby() typed with its args and metadata, both flavours', () => {
	const mod = {
		rooms: {
			board: {
				topicArgs: 1,
				args: ['boardId'],
				params: [{ name: 'boardId', schema: { type: 'string' } }],
				lobby: true,
				lobbyMeta: { type: 'object', properties: { title: { type: 'string' } }, required: ['title'] },
				actions: {}
			}
		}
	};
	const { js, dts } = generateModule('collab', mod);
	assert.match(js, /"lobby":true/);
	assert.match(dts, /lobby: StreamFactory<\[\], LobbyEntry<\[boardId: string\], \{\s*title: string;\s*\}>\[\]>;/);
	assert.match(dts, /import type \{[^}]*LobbyEntry/);
	const sr = generateModule('collab', mod, { client: 'svelte-realtime' });
	assert.match(sr.js, /lobby: __stream\("collab\/board\/__lobby", \{"merge":"crud","key":"room"\}\),/);
	assert.match(sr.dts, /lobby: LiveStore<LobbyEntry<\[boardId: string\], \{\s*title: string;\s*\}>\[\]>;/);
	// Without a lobby, no member.
	assert.doesNotMatch(generateModule('collab', { rooms: { board: { topicArgs: 1, args: ['boardId'] } } }).dts, /lobby/);
});
