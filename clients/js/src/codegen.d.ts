export interface RpcDef {
	args?: string[];
}
export interface StreamDef {
	merge?: string;
	key?: string;
	prepend?: boolean;
	max?: number;
	args?: string[];
	topicArgs?: number;
	dynamic?: boolean;
}
export interface RoomDef {
	topicArgs?: number;
	args?: string[];
	merge?: string;
	key?: string;
	prepend?: boolean;
	max?: number;
	presence?: boolean;
	cursors?: boolean;
	actions?: Record<string, RpcDef> | string[];
}
export interface ModuleDef {
	rooms?: Record<string, RoomDef>;
	streams?: Record<string, StreamDef>;
	rpcs?: Record<string, RpcDef>;
}
export interface Manifest {
	version: number;
	modules: Record<string, ModuleDef>;
}
export type ClientFlavour = 'liveroom' | 'svelte-realtime';
export interface GenerateOptions {
	/** `liveroom` (default) or `svelte-realtime` (imports the stock `svelte-realtime/client`). */
	client?: ClientFlavour;
	/** Override the import specifier of the client module. */
	importFrom?: string;
}
export interface GeneratedFile {
	/** Relative to the output directory: `collab.js`, `collab.d.ts`, `a/b.js`, ... */
	path: string;
	contents: string;
}
/** Load a manifest from a file path or an http(s) URL. */
export function loadManifest(source: string): Promise<Manifest>;
export function validateManifest(manifest: unknown): Manifest;
export function toIdentifier(name: string): string;
export function generateModule(moduleName: string, mod: ModuleDef, options?: GenerateOptions): { js: string; dts: string };
/** One d.ts with `declare module '$live/<module>'` blocks (for virtual modules). */
export function generateAmbientTypes(manifest: Manifest, options?: GenerateOptions & { prefix?: string }): string;
export function generate(manifest: Manifest, options?: GenerateOptions): GeneratedFile[];
/** Load the manifest and write every module into `out`; returns the absolute paths written. */
export function codegen(options: { manifest: string | Manifest; out: string } & GenerateOptions): Promise<string[]>;
