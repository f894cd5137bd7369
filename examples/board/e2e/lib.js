// Helpers of the board's browser tests: the server process, the browser, polling.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
/** The repository root (examples/board/e2e -> ../../..). */
export const repoRoot = path.resolve(here, '..', '..', '..');
const targetDir = process.env.CARGO_TARGET_DIR
  ? path.resolve(repoRoot, process.env.CARGO_TARGET_DIR)
  : path.join(repoRoot, 'target');
/** Screenshots and logs go here (`target/e2e`). */
export const outDir = path.join(targetDir, 'e2e');
fs.mkdirSync(outDir, { recursive: true });
const serverLog = path.join(outDir, 'server.log');
fs.writeFileSync(serverLog, ''); // one run's worth

export function tempDir() {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'board-e2e-'));
}

/** A TCP port that was free a moment ago. */
export async function freePort() {
  const srv = net.createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const { port } = srv.address();
  srv.close();
  await once(srv, 'close');
  return port;
}

/**
 * Starts the board binary (`target/debug/board`, or `$BOARD_BIN`) on `port` with a SQLite
 * file in `dir`, and waits for the line with its URL. Builds nothing.
 */
export async function startBoard({ dir, port, graceMs = 1500, redisUrl }) {
  const bin = process.env.BOARD_BIN
    ? path.resolve(process.env.BOARD_BIN)
    : path.join(targetDir, 'debug', 'board');
  if (!fs.existsSync(bin)) {
    throw new Error(`${bin} does not exist: run \`cargo build -p board\` first (or set BOARD_BIN)`);
  }
  const env = { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' };
  for (const k of ['REDIS_URL', 'DATABASE_URL', 'BIND', 'LIVEROOM_BIND', 'LIVEROOM_STATIC_DIR', 'GRACE_MS']) {
    delete env[k];
  }
  const args = [
    '--bind', `127.0.0.1:${port}`,
    '--database-url', `sqlite://${path.join(dir, 'b.db')}`,
    '--grace-ms', String(graceMs),
    ...(redisUrl ? ['--redis-url', redisUrl] : []),
  ];
  const child = spawn(bin, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const log = fs.createWriteStream(serverLog, { flags: 'a' });
  log.write(`\n--- ${new Date().toISOString()} ${bin} ${args.join(' ')}\n`);
  child.stderr.pipe(log, { end: false });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const url = await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`the board printed no URL in 20 s:\n${out}${stderr}`)), 20_000);
    child.stdout.on('data', (d) => {
      out += d;
      const m = /http:\/\/\S+/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[0]);
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the board exited (${code}) before listening:\n${stderr}`));
    });
  });
  child.stdout.resume();
  return {
    url,
    child,
    stop: () => stopChild(child),
  };
}

/**
 * A private `redis-server` on `port` with its files in `dir` (never the shared 6379), resolved
 * once it answers; `stop()` kills it (SIGKILL, as a crash would).
 */
export async function startRedis({ dir, port }) {
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (d) => (output += d));
  child.stderr.on('data', (d) => (output += d));
  child.on('exit', (code, signal) => {
    if (signal !== 'SIGKILL') process.stderr.write(`[redis ${port}] exited ${code} ${signal}:\n${output}\n`);
  });
  await eventually(
    () =>
      new Promise((resolve) => {
        const s = net.connect(port, '127.0.0.1');
        s.once('connect', () => {
          s.end();
          resolve(true);
        });
        s.once('error', () => resolve(false));
      }),
    { message: `redis-server on ${port}` },
  );
  return {
    url: `redis://127.0.0.1:${port}`,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, 'exit');
      child.kill('SIGKILL');
      await exited;
    },
  };
}

/** SIGTERM, then SIGKILL after 5 s; resolves once the child exited. */
export async function stopChild(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

export async function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
}

/** Polls `fn` until it returns a truthy value (returned), or fails after `timeout` ms. */
export async function eventually(fn, { timeout = 10_000, interval = 50, message = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
      last = v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${message} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}

/** Forwards a page's console errors and crashes to stderr, tagged. */
export function watch(page, tag) {
  page.on('console', (m) => {
    if (m.type() === 'error') process.stderr.write(`[${tag} console] ${m.text()}\n`);
  });
  page.on('pageerror', (e) => process.stderr.write(`[${tag} pageerror] ${e.message}\n`));
}
