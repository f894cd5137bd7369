import type { ClientFlavour } from './codegen.js';

export interface LiveroomViteOptions {
	/** Manifest file path (relative to the Vite root) or URL, e.g. `http://127.0.0.1:3000/__live/manifest.json`. */
	manifest: string;
	/** Write `<module>.js` / `.d.ts` here at build start; default: in-memory virtual modules. */
	outDir?: string;
	/** Virtual mode: also write one declaration file (`declare module '$live/...'`) here, e.g. `src/live.d.ts`. */
	types?: string;
	/** `liveroom` (default) or `svelte-realtime`. */
	client?: ClientFlavour;
	/** Override the client import specifier. */
	importFrom?: string;
	/** Import prefix (default `$live/`). */
	prefix?: string;
}

/** Minimal structural type so this package does not depend on `vite`. */
export interface LiveroomVitePlugin {
	name: 'liveroom';
	enforce: 'pre';
	configResolved(config: { root: string }): void;
	buildStart(): Promise<void>;
	resolveId(id: string): string | null;
	load(id: string): Promise<string | null>;
	handleHotUpdate(ctx: { file: string }): void;
}

export default function liveroom(options: LiveroomViteOptions): LiveroomVitePlugin;
