// Drives an app made by `liveroom new` in Chromium: two users in two contexts on the built page
// served by the app's own server, and a third through the Vite dev server and its /ws proxy.
//
//   node scaffold.mjs <app dir> <app binary>
//
// (Kept next to the board's e2e tests to share their playwright-core and helpers.)
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { eventually, freePort, launchBrowser, stopChild, watch } from './lib.js';

const [appDir, bin] = process.argv.slice(2);
if (!appDir || !bin) throw new Error('usage: node scaffold.mjs <app dir> <app binary>');

/** Starts `cmd` and resolves with the first `http://...` it prints (stdout or stderr). */
async function start(cmd, args, { cwd, env }) {
  const child = spawn(cmd, args, { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${cmd} printed no URL in 60 s:\n${out}`)), 60_000);
    const read = (d) => {
      out += d;
      const m = /http:\/\/[^\s)]+/.exec(out.replace(/\x1b\[[0-9;]*m/g, ''));
      if (m) {
        clearTimeout(timer);
        resolve(m[0].replace(/\/$/, ''));
      }
    };
    child.stdout.on('data', read);
    child.stderr.on('data', read);
    child.on('exit', (code) => reject(new Error(`${cmd} exited (${code}):\n${out}`)));
  });
  return {
    url,
    stop: () => stopChild(child),
  };
}

async function signIn(browser, url, name) {
  const context = await browser.newContext({ viewport: { width: 1000, height: 700 } });
  const page = await context.newPage();
  watch(page, name);
  await page.goto(`${url}/#e2e`);
  await page.getByTestId('name').fill(name);
  await page.getByTestId('sign-in').click();
  await page.getByTestId('board').waitFor({ timeout: 15_000 });
  return { context, page };
}

const text = async (locator) => (await locator.allTextContents()).join(' | ');

const port = await freePort();
const server = await start(bin, [], {
  cwd: appDir,
  env: { LIVEROOM_BIND: `127.0.0.1:${port}`, LIVEROOM_STATIC_DIR: path.join(appDir, 'web', 'dist') },
});
const browser = await launchBrowser();
let dev;
try {
  // The startup line says where and how.
  assert.equal(server.url, `http://127.0.0.1:${port}`);

  const ann = await signIn(browser, server.url, 'Ann');
  const bob = await signIn(browser, server.url, 'Bob');
  for (const { page } of [ann, bob]) {
    await eventually(async () => /Ann.*Bob|Bob.*Ann/.test(await text(page.getByTestId('people'))), {
      message: 'both names in the room',
    });
  }

  await ann.page.getByTestId('note-input').fill('Hello from Ann');
  await ann.page.getByTestId('add-note').click();
  await bob.page.getByTestId('note').filter({ hasText: 'Hello from Ann' }).waitFor();

  // Bob's pointer over the board shows up on Ann's page.
  const box = await bob.page.getByTestId('board').boundingBox();
  await bob.page.mouse.move(box.x + box.width * 0.5, box.y + box.height * 0.5, { steps: 5 });
  await ann.page.locator('[data-testid="cursor"][data-key="Bob"]').waitFor({ timeout: 10_000 });

  // The dev workflow: the page from `vite` on its own port, the socket through its /ws proxy.
  const vitePort = await freePort();
  const vite = path.join(appDir, 'web', 'node_modules', '.bin', 'vite');
  dev = await start(vite, ['--port', String(vitePort), '--strictPort', '--host', '127.0.0.1'], {
    cwd: path.join(appDir, 'web'),
    env: { LIVEROOM_SERVER: server.url },
  });
  const cy = await signIn(browser, dev.url, 'Cy');
  await cy.page.getByTestId('note').filter({ hasText: 'Hello from Ann' }).waitFor();
  await eventually(async () => /Cy/.test(await text(ann.page.getByTestId('people'))), { message: 'Ann sees Cy' });
  assert.equal(await cy.page.getByTestId('connection-error').count(), 0);
  console.log('scaffolded app: two users, notes, presence and cursors in Chromium; dev proxy ok');
} catch (e) {
  console.error(e);
  process.exitCode = 1;
} finally {
  await browser.close();
  await dev?.stop();
  await server.stop();
}
// Nothing may keep the process alive (a grandchild holding a pipe open).
process.exit(process.exitCode ?? 0);
