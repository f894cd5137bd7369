#!/usr/bin/env node
// liveroom CLI: `liveroom codegen --manifest <file|url> --out <dir> [--client liveroom|svelte-realtime]`
import { codegen } from '../src/codegen.js';

const USAGE = `Usage: liveroom codegen --manifest <file|url> --out <dir> [--client liveroom|svelte-realtime] [--import-from <specifier>]

Reads the server manifest (a file, or e.g. http://127.0.0.1:3000/__live/manifest.json) and writes
<module>.js and <module>.d.ts for each module into <dir> (module "a/b" -> <dir>/a/b.js).`;

/** @param {string[]} argv */
function parse(argv) {
	/** @type {Record<string, string>} */
	const opts = {};
	for (let i = 0; i < argv.length; i++) {
		const arg = argv[i];
		if (arg === '-h' || arg === '--help') opts.help = 'true';
		else if (arg.startsWith('--')) {
			const eq = arg.indexOf('=');
			if (eq > 0) opts[arg.slice(2, eq)] = arg.slice(eq + 1);
			else if (i + 1 < argv.length) opts[arg.slice(2)] = argv[++i];
			else throw new Error(`missing value for ${arg}`);
		} else throw new Error(`unexpected argument '${arg}'`);
	}
	return opts;
}

async function main() {
	const [command, ...rest] = process.argv.slice(2);
	if (!command || command === '-h' || command === '--help' || command === 'help') {
		console.log(USAGE);
		return 0;
	}
	if (command !== 'codegen') {
		console.error(`liveroom: unknown command '${command}'\n\n${USAGE}`);
		return 2;
	}
	const opts = parse(rest);
	if (opts.help) {
		console.log(USAGE);
		return 0;
	}
	if (!opts.manifest || !opts.out) {
		console.error(`liveroom codegen: --manifest and --out are required\n\n${USAGE}`);
		return 2;
	}
	const client = /** @type {any} */ (opts.client || 'liveroom');
	if (client !== 'liveroom' && client !== 'svelte-realtime') {
		console.error(`liveroom codegen: --client must be liveroom or svelte-realtime, got '${client}'`);
		return 2;
	}
	const written = await codegen({ manifest: opts.manifest, out: opts.out, client, importFrom: opts['import-from'] });
	for (const file of written) console.log(`wrote ${file}`);
	return 0;
}

main().then(
	(code) => (process.exitCode = code),
	(err) => {
		console.error(`liveroom: ${err?.message || err}`);
		process.exitCode = 1;
	}
);
