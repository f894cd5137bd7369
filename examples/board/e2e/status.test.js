// Honest status in a real browser: the board in cluster mode over a private Redis; when Redis
// dies the page says "Degraded" (the server's `degraded` event on `__realtime`), and "Connected"
// again once Redis is back.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { eventually, freePort, launchBrowser, startBoard, startRedis, tempDir, watch } from './lib.js';

let dir;
let redisPort;
let redis;
let server;
let browser;

const status = async (page) => (await page.getByTestId('status').textContent())?.trim();

describe('board: honest status in cluster mode', { timeout: 120_000 }, () => {
  before(async () => {
    dir = tempDir();
    redisPort = await freePort();
    redis = await startRedis({ dir, port: redisPort });
    server = await startBoard({ dir, port: await freePort(), redisUrl: redis.url });
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
    await redis?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  test('Redis goes away: the page says Degraded with a banner; it comes back: Connected', async () => {
    const context = await browser.newContext({ viewport: { width: 1100, height: 760 } });
    const page = await context.newPage();
    watch(page, 'status');
    await page.goto(`${server.url}/`);
    await page.getByTestId('new-board-input').fill('Status board');
    await page.getByTestId('create-board').click();
    await page.getByTestId('board').waitFor();
    await eventually(async () => (await status(page)) === 'Connected', { message: 'Connected at first' });
    assert.equal(await page.getByTestId('degraded').count(), 0);

    await redis.stop();
    await eventually(async () => (await status(page)) === 'Degraded', { timeout: 20_000, message: 'Degraded after Redis died' });
    await page.getByTestId('degraded').waitFor();
    assert.equal(await page.getByTestId('status').getAttribute('data-state'), 'degraded');
    // The board keeps working for this server's own users meanwhile.
    await page.getByTestId('new-card-input').fill('Written while degraded');
    await page.getByTestId('add-card').click();
    await page.getByTestId('card').filter({ hasText: 'Written while degraded' }).waitFor();

    redis = await startRedis({ dir, port: redisPort });
    await eventually(async () => (await status(page)) === 'Connected', { timeout: 20_000, message: 'Connected once Redis is back' });
    await page.getByTestId('degraded').waitFor({ state: 'detached' });
    await context.close();
  });
});
