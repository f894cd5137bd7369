/**
 * Vite plugin: makes `import { board } from '$live/collab'` work from the server manifest.
 *
 * ```js
 * // vite.config.js
 * import liveroom from 'liveroom/vite';
 * export default { plugins: [liveroom({ manifest: 'http://127.0.0.1:3000/__live/manifest.json' })] };
 * ```
 *
 * Without `outDir`, `$live/*` are virtual modules generated in memory. With `outDir`, the modules
 * (and their `.d.ts`) are written there at build start and `$live/*` resolves to those files.
 * With `types`, virtual mode also writes one declaration file (`declare module '$live/...'`).
 */
import { resolve, join, dirname } from 'node:path';
import { mkdir, writeFile } from 'node:fs/promises';
import { loadManifest, generateModule, generateAmbientTypes, codegen } from './codegen.js';

const PREFIX = '$live/';
const VIRTUAL = '\0liveroom:';

/**
 * @param {{ manifest: string, outDir?: string, types?: string, client?: import('./codegen.js').ClientFlavour,
 *   importFrom?: string, prefix?: string }} options
 *   `manifest`: file path or http(s) URL; `types`: d.ts file to write in virtual mode;
 *   `prefix`: import prefix (default `$live/`)
 */
export default function liveroom(options) {
	if (!options || !options.manifest) throw new Error('liveroom/vite: the `manifest` option (file path or URL) is required');
	const prefix = options.prefix || PREFIX;
	const isUrl = /^https?:\/\//i.test(options.manifest);
	let root = process.cwd();
	/** @type {Promise<import('./codegen.js').Manifest> | null} */
	let manifest = null;
	const gen = { client: options.client, importFrom: options.importFrom };

	const manifestPath = () => (isUrl ? options.manifest : resolve(root, options.manifest));
	const getManifest = () => (manifest ??= loadManifest(manifestPath()));
	const outDir = () => resolve(root, /** @type {string} */ (options.outDir));

	return {
		name: 'liveroom',
		enforce: /** @type {'pre'} */ ('pre'),

		/** @param {{ root: string }} config */
		configResolved(config) {
			root = config.root || root;
		},

		async buildStart() {
			manifest = null; // re-read on every build / dev-server start
			if (!isUrl) /** @type {any} */ (this).addWatchFile?.(manifestPath());
			if (options.outDir) await codegen({ manifest: await getManifest(), out: outDir(), ...gen });
			else if (options.types) {
				const file = resolve(root, options.types);
				await mkdir(dirname(file), { recursive: true });
				await writeFile(file, generateAmbientTypes(await getManifest(), { ...gen, prefix }));
			}
		},

		/** @param {string} id */
		resolveId(id) {
			if (!id.startsWith(prefix)) return null;
			const mod = id.slice(prefix.length).replace(/\.js$/, '');
			return options.outDir ? join(outDir(), `${mod}.js`) : VIRTUAL + mod;
		},

		/** @param {string} id */
		async load(id) {
			if (!id.startsWith(VIRTUAL)) return null;
			const name = id.slice(VIRTUAL.length);
			let m;
			try {
				m = await getManifest();
			} catch (err) {
				manifest = null;
				throw new Error(`liveroom/vite: cannot load the manifest from ${manifestPath()}: ${/** @type {Error} */ (err).message}`);
			}
			const mod = m.modules[name];
			if (!mod) throw new Error(`liveroom/vite: module '${name}' is not in the manifest (known: ${Object.keys(m.modules).join(', ')})`);
			return generateModule(name, mod, gen).js;
		},

		/** @param {{ file: string }} ctx */
		handleHotUpdate(ctx) {
			if (!isUrl && resolve(ctx.file) === manifestPath()) manifest = null;
		}
	};
}
