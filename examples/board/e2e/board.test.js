// Two people on one board, in a real browser: cards, presence, cursors, errors, persistence.
//
// Needs `target/debug/board` (or $BOARD_BIN) built with the front end in web/dist, and
// Chromium at /usr/bin/chromium (or $CHROMIUM_PATH). Screenshots: target/e2e/{a,b,readme}.png.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { eventually, freePort, launchBrowser, outDir, startBoard, tempDir, watch } from './lib.js';

const GRACE_MS = 1500;
const VIEWPORT = { width: 1280, height: 800 };
const BOARD_NAME = 'Launch plan';
let boardId; // set when A creates the board

let dir;
let port;
let server;
let browser;
const ctx = {};
const page = {};
const names = {};

function boardUrl() {
  return `${server.url}/#/b/${boardId}`;
}

async function cookieName(context) {
  const c = (await context.cookies()).find((c) => c.name === 'lr_name');
  assert.ok(c, 'the page load set lr_name');
  return decodeURIComponent(c.value);
}

async function openUser(tag, url = boardUrl()) {
  ctx[tag] = await browser.newContext({ viewport: VIEWPORT });
  page[tag] = await ctx[tag].newPage();
  watch(page[tag], tag);
  await page[tag].goto(url);
  names[tag] = await cookieName(ctx[tag]);
  return page[tag];
}

const card = (p, title) => p.getByTestId('card').filter({ hasText: title });
const inColumn = (p, column, title) => p.getByTestId(`column-${column}`).getByTestId('card').filter({ hasText: title });
const online = (p) => p.getByTestId('online');
const avatarOf = (p, name) => p.getByTestId('presence').locator(`[data-testid="avatar"][title="${name}"]`);

async function addCard(p, title) {
  await p.getByTestId('new-card-input').fill(title);
  await p.getByTestId('add-card').click();
}

async function textIs(locator, text, timeout = 10_000) {
  await eventually(async () => (await locator.textContent())?.trim() === text, {
    timeout,
    message: `text "${text}" (have "${await locator.textContent().catch(() => '?')}")`,
  });
}

/** The centre-left of a locator's box relative to the board: fractions of the board's size. */
async function relative(p, box) {
  const b = await p.getByTestId('board').boundingBox();
  return { x: (box.x - b.x) / b.width, y: (box.y - b.y) / b.height };
}

async function pointAt(p, fx, fy) {
  const b = await p.getByTestId('board').boundingBox();
  await p.mouse.move(b.x + b.width * fx, b.y + b.height * fy, { steps: 6 });
}

/** Runs `fn`; on failure saves a screenshot of every open page first. */
function step(name, fn) {
  test(name, async () => {
    try {
      await fn();
    } catch (e) {
      const slug = name.replace(/[^a-z0-9]+/gi, '-').toLowerCase();
      for (const [tag, p] of Object.entries(page)) {
        if (p && !p.isClosed()) await p.screenshot({ path: path.join(outDir, `fail-${slug}-${tag}.png`) }).catch(() => {});
      }
      throw e;
    }
  });
}

describe('board: two users', { timeout: 180_000 }, () => {
  before(async () => {
    dir = tempDir();
    port = await freePort();
    server = await startBoard({ dir, port, graceMs: GRACE_MS });
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  step('A creates a board; B sees it in the list and opens it', async () => {
    const a = await openUser('a', `${server.url}/`);
    const b = await openUser('b', `${server.url}/`);
    assert.ok(names.a && names.b);
    await b.getByTestId('empty').waitFor(); // a fresh database: no boards yet
    await a.getByTestId('new-board-input').fill(BOARD_NAME);
    await a.getByTestId('create-board').click();
    await a.getByTestId('board').waitFor();
    boardId = decodeURIComponent(new URL(a.url()).hash.replace(/^#\/b\//, ''));
    assert.match(boardId, /^launch-plan-[a-z0-9]+$/);
    await textIs(a.getByTestId('board-name'), BOARD_NAME);

    // B's list updates live; the link opens the same board.
    const link = b.locator(`[data-testid="board-link"][data-board-id="${boardId}"]`);
    await link.waitFor();
    // The list shows who is on each board right now (the room's lobby): A is.
    await textIs(link.getByTestId('board-here'), '1 here now');
    await link.click();
    await b.getByTestId('board').waitFor();
    await textIs(b.getByTestId('board-name'), BOARD_NAME);
  });

  step('both users are on the board and see each other', async () => {
    const { a, b } = page;
    for (const p of [a, b]) {
      await textIs(p.getByTestId('status'), 'Connected');
      await textIs(online(p), '2 online');
    }
    await avatarOf(a, names.b).first().waitFor();
    await avatarOf(b, names.a).first().waitFor();
  });

  step('A adds a card and B sees it', async () => {
    const { a, b } = page;
    await addCard(a, 'Write the e2e tests');
    await inColumn(b, 'todo', 'Write the e2e tests').waitFor();
    await inColumn(a, 'todo', 'Write the e2e tests').waitFor();
    await addCard(a, 'Ship the demo');
    await addCard(b, 'Draw the cursors');
    for (const p of [a, b]) {
      await eventually(async () => (await p.getByTestId('column-todo').getByTestId('card').count()) === 3, {
        message: 'three cards in todo',
      });
    }
  });

  step('A edits and moves a card and B sees it', async () => {
    const { a, b } = page;
    const c = card(a, 'Write the e2e tests');
    await c.hover();
    await c.getByTestId('edit-card').click();
    const input = a.getByTestId('edit-card-input');
    // While A edits, B sees who edits the card (A's awareness state), and not after.
    const editors = card(b, 'Write the e2e tests').getByTestId('card-editors');
    await editors.filter({ hasText: names.a }).waitFor();
    await input.fill('Write the browser tests');
    await input.press('Enter');
    await inColumn(b, 'todo', 'Write the browser tests').waitFor();
    await card(b, 'Write the browser tests').getByTestId('card-editors').waitFor({ state: 'detached' });
    assert.equal(await card(b, 'Write the e2e tests').count(), 0);

    // Keyboard: Alt+ArrowRight moves the focused card one column right.
    await card(a, 'Write the browser tests').focus();
    await a.keyboard.press('Alt+ArrowRight');
    await inColumn(b, 'doing', 'Write the browser tests').waitFor();

    // Drag and drop into "done".
    await card(a, 'Ship the demo').dragTo(a.getByTestId('column-done'));
    await inColumn(b, 'done', 'Ship the demo').waitFor();
    await inColumn(a, 'done', 'Ship the demo').waitFor();
    assert.equal(await b.getByTestId('column-todo').getByTestId('card').count(), 1);
  });

  step('a card is one tab stop, with its shortcuts shown while it has the focus', async () => {
    const { a } = page;
    const first = a.getByTestId('column-doing').getByTestId('card').first();
    await first.focus();
    await a.keyboard.press('Shift+Tab');
    await a.keyboard.press('Tab'); // keyboard focus: :focus-visible
    assert.equal(await first.evaluate((el) => el === document.activeElement), true);
    await first.getByTestId('card-keys').waitFor({ state: 'visible' });
    assert.match(await first.getByTestId('card-keys').textContent(), /Alt\+/);
    // Tab goes to the next card, not to the card's own buttons.
    await a.keyboard.press('Tab');
    const next = await a.evaluate(() => {
      const el = document.activeElement;
      return el?.getAttribute('data-testid');
    });
    assert.equal(next, 'card', 'the next tab stop is a card');
  });

  step('a move the server refuses shows at once, then rolls back with the error', async () => {
    const { a } = page;
    // A third user whose socket turns every moveCard into a refusal, 800 ms later.
    ctx.f = await browser.newContext({ viewport: VIEWPORT });
    page.f = await ctx.f.newPage();
    watch(page.f, 'f');
    const f = page.f;
    await f.routeWebSocket(/\/ws$/, (ws) => {
      const server = ws.connectToServer();
      ws.onMessage((message) => {
        let frame;
        try {
          frame = JSON.parse(String(message));
        } catch {
          frame = null;
        }
        if (frame?.rpc?.endsWith('/__action/moveCard') && frame.id) {
          setTimeout(() => {
            const data = { id: frame.id, ok: false, code: 'INTERNAL_ERROR', error: 'Forced failure' };
            ws.send(JSON.stringify({ topic: '__rpc', event: frame.id, data }));
          }, 800);
          return;
        }
        server.send(message);
      });
    });
    await f.goto(boardUrl());
    const title = 'Draw the cursors';
    await inColumn(f, 'todo', title).waitFor();
    await card(f, title).focus();
    await f.keyboard.press('Alt+ArrowRight');
    // Before any answer: already in "doing".
    await inColumn(f, 'doing', title).waitFor({ timeout: 700 });
    // Refused: back in "todo", with the error; nobody else ever saw it move.
    await f.getByTestId('error').filter({ hasText: 'Forced failure' }).first().waitFor();
    await inColumn(f, 'todo', title).waitFor();
    assert.equal(await inColumn(f, 'doing', title).count(), 0);
    assert.equal(await inColumn(a, 'todo', title).count(), 1);
    await ctx.f.close();
    delete page.f;
    await textIs(online(a), '2 online', GRACE_MS + 8000);
  });

  step('two users who picked the same colour are shown in two colours, the same on every page', async () => {
    const { a } = page;
    const users = [
      ['same-colour-1', 'Twin One'],
      ['same-colour-2', 'Twin Two'],
    ];
    const pages = [];
    for (const [id, name] of users) {
      const context = await browser.newContext({ viewport: VIEWPORT });
      await context.addCookies(
        [
          ['lr_user', id],
          ['lr_name', name],
          ['lr_color', '#5b5bd6'],
        ].map(([n, value]) => ({ name: n, value: encodeURIComponent(value), url: server.url })),
      );
      const p = await context.newPage();
      watch(p, id);
      await p.goto(boardUrl());
      pages.push(p);
    }
    const colourOf = (p, name) =>
      avatarOf(p, name)
        .first()
        .evaluate((el) => getComputedStyle(el).backgroundColor);
    const seen = [];
    for (const p of [...pages, a]) {
      await avatarOf(p, 'Twin One').first().waitFor();
      await avatarOf(p, 'Twin Two').first().waitFor();
      seen.push([await colourOf(p, 'Twin One'), await colourOf(p, 'Twin Two')]);
    }
    const [one, two] = seen[0];
    assert.notEqual(one, two, 'two colours');
    for (const pair of seen) assert.deepEqual(pair, [one, two], 'the same on every page');
    // Each twin's header shows them in the colour the board shows them in.
    for (const [i, p] of pages.entries()) {
      const header = () => p.getByTestId('me-avatar').evaluate((el) => getComputedStyle(el).backgroundColor);
      await eventually(async () => (await header()) === [one, two][i], { message: `${users[i][1]}'s header colour` });
    }
    for (const p of pages) await p.context().close();
    await textIs(online(a), '2 online', GRACE_MS + 8000);
  });

  step("B sees A's cursor where A points", async () => {
    const { a, b } = page;
    await pointAt(a, 0.62, 0.45);
    const cursor = b.getByTestId('cursor').filter({ hasText: names.a });
    await cursor.waitFor();
    assert.equal((await cursor.textContent()).trim(), names.a);
    const near = async (fx, fy) => {
      const box = await cursor.boundingBox();
      if (!box) return false;
      const r = await relative(b, box);
      return Math.abs(r.x - fx) < 0.05 && Math.abs(r.y - fy) < 0.08 ? r : false;
    };
    await eventually(() => near(0.62, 0.45), { message: "A's cursor near (0.62, 0.45) on B's board" });
    // It follows.
    await pointAt(a, 0.3, 0.7);
    await eventually(() => near(0.3, 0.7), { message: "A's cursor near (0.30, 0.70) on B's board" });
    // A does not see its own cursor.
    assert.equal(await a.getByTestId('cursor').filter({ hasText: names.a }).count(), 0);
    // The pointer leaves the board: the cursor goes (a null position), and comes back.
    const box = await a.getByTestId('board').boundingBox();
    await a.mouse.move(box.x + box.width / 2, Math.max(0, box.y - 30), { steps: 4 });
    await cursor.waitFor({ state: 'detached' });
    await pointAt(a, 0.3, 0.7);
    await cursor.waitFor();
  });

  step('validation errors are shown', async () => {
    const { a } = page;
    const before = await a.getByTestId('card').count();
    const message = a.getByTestId('error').filter({ hasText: 'Title must be 1-200 characters' });

    await a.getByTestId('new-card-input').fill('');
    await a.getByTestId('add-card').click();
    await message.first().waitFor();
    await a.getByRole('button', { name: 'Dismiss' }).first().click();
    await eventually(async () => (await message.count()) === 0, { message: 'the toast to go' });

    // Optimistic: the card shows before the server answers, then rolls back with the error.
    await a.evaluate(() => {
      window.__sawPending = false;
      new MutationObserver(() => {
        if (document.querySelector('[data-testid="card"][data-pending="true"]')) window.__sawPending = true;
      }).observe(document.body, { childList: true, subtree: true, attributes: true });
    });
    // The input stops at 200 characters and says so before submitting.
    const input = a.getByTestId('new-card-input');
    await input.fill('');
    await input.pressSequentially('y'.repeat(205), { delay: 0 });
    assert.equal((await input.inputValue()).length, 200, 'maxlength 200');
    await textIs(a.getByTestId('new-card-limit'), '0 characters left');
    // A forced failure: a script bypasses the limit, the server refuses the title.
    await input.evaluate((el, v) => {
      el.value = v;
      el.dispatchEvent(new Event('input', { bubbles: true }));
    }, 'x'.repeat(201));
    await a.getByTestId('add-card').click();
    await message.first().waitFor();
    assert.equal(await a.evaluate(() => window.__sawPending), true, 'shown at once, as pending');
    await eventually(async () => (await a.getByTestId('card').count()) === before, { message: 'rolled back' });
  });

  step('screenshots', async () => {
    const { a, b } = page;
    // A fuller board for the pictures.
    for (const title of ['Pick a colour palette', 'Record the demo video', 'Write the release notes']) {
      await addCard(b, title);
      await inColumn(a, 'todo', title).waitFor();
    }
    await card(b, 'Pick a colour palette').focus();
    await b.keyboard.press('Alt+ArrowRight');
    await b.keyboard.press('Alt+ArrowRight');
    await inColumn(a, 'done', 'Pick a colour palette').waitFor();
    await card(b, 'Record the demo video').focus();
    await b.keyboard.press('Alt+ArrowRight');
    await inColumn(a, 'doing', 'Record the demo video').waitFor();
    // Both point somewhere, so each page shows the other's cursor.
    await pointAt(a, 0.55, 0.35);
    await pointAt(b, 0.2, 0.62);
    await b.getByTestId('cursor').filter({ hasText: names.a }).waitFor();
    await a.getByTestId('cursor').filter({ hasText: names.b }).waitFor();
    await a.screenshot({ path: path.join(outDir, 'a.png') });
    await b.screenshot({ path: path.join(outDir, 'b.png') });

    // The README picture: a third person watching A and B work, both cursors visible.
    const c = await openUser('c');
    await textIs(online(c), '3 online');
    await pointAt(a, 0.58, 0.3);
    await pointAt(b, 0.24, 0.6);
    await c.getByTestId('cursor').filter({ hasText: names.a }).waitFor();
    await c.getByTestId('cursor').filter({ hasText: names.b }).waitFor();
    await c.mouse.move(0, 0);
    await c.waitForTimeout(300); // let the cursor transitions settle
    const area = await c.getByTestId('board').boundingBox();
    await c.screenshot({
      path: path.join(outDir, 'readme.png'),
      clip: { x: 0, y: 0, width: VIEWPORT.width, height: Math.min(VIEWPORT.height, Math.ceil(area.y + area.height + 24)) },
    });
    await ctx.c.close();
    delete page.c;
    await textIs(online(a), '2 online', GRACE_MS + 8000);
  });

  step('B leaves: A shows 1 online after the grace', async () => {
    const { a } = page;
    const left = Date.now();
    await ctx.b.close();
    delete page.b;
    await textIs(online(a), '1 online', GRACE_MS + 8000);
    const took = Date.now() - left;
    assert.ok(took >= GRACE_MS - 500, `B left after ${took} ms, before the ${GRACE_MS} ms grace`);
    assert.equal(await avatarOf(a, names.b).count(), 0);
  });

  step('cards persist across a reload and a server restart', async () => {
    const { a } = page;
    const expected = {
      todo: ['Draw the cursors', 'Write the release notes'],
      doing: ['Write the browser tests', 'Record the demo video'],
      done: ['Ship the demo', 'Pick a colour palette'],
    };
    const check = async () => {
      for (const [column, titles] of Object.entries(expected)) {
        await eventually(
          async () =>
            JSON.stringify(await a.getByTestId(`column-${column}`).getByTestId('card-title').allTextContents()) ===
            JSON.stringify(titles),
          { message: `${column} = ${titles}` },
        );
      }
    };
    await a.reload();
    await a.getByTestId('board').waitFor();
    await check();

    await server.stop();
    server = await startBoard({ dir, port, graceMs: GRACE_MS });
    await a.reload();
    await a.getByTestId('board').waitFor();
    await textIs(a.getByTestId('status'), 'Connected');
    await check();
  });

  step('the page recovers from a server restart under it without flashing empty', async () => {
    const { a } = page;
    const before = await a.getByTestId('card').count();
    assert.ok(before > 0);
    // From now on the page records the fewest cards it ever rendered.
    await a.evaluate(() => {
      const cards = () => document.querySelectorAll('[data-testid="card"]').length;
      window.__fewestCards = cards();
      new MutationObserver(() => {
        window.__fewestCards = Math.min(window.__fewestCards, cards());
      }).observe(document.body, { childList: true, subtree: true, characterData: true });
    });
    await server.stop();
    await eventually(async () => (await a.getByTestId('status').textContent())?.trim() !== 'Connected', {
      message: 'the page notices the server is gone',
    });
    // A card added offline shows at once as pending, and lands after the reconnect.
    await addCard(a, 'Added offline');
    await card(a, 'Added offline').getByTestId('card-pending').waitFor();
    assert.equal(await a.getByTestId('new-card-input').inputValue(), '', 'the input is free again');
    server = await startBoard({ dir, port, graceMs: GRACE_MS });
    // Honest status: "Back online" once caught up, then "Connected".
    await textIs(a.getByTestId('status'), 'Back online', 30_000);
    await textIs(a.getByTestId('status'), 'Connected', 10_000);
    await card(a, 'Added offline').getByTestId('card-pending').waitFor({ state: 'detached', timeout: 15_000 });
    await inColumn(a, 'todo', 'Added offline').waitFor();
    assert.equal(await card(a, 'Added offline').count(), 1, 'once, not twice');
    await addCard(a, 'After the restart');
    await inColumn(a, 'todo', 'After the restart').waitFor();
    const fewest = await a.evaluate(() => window.__fewestCards);
    assert.equal(fewest, before, 'the cards stayed on screen while the server restarted');
  });

  step('the same page switches boards in place: its stores follow the route', async () => {
    const { a } = page;
    const first = await a.getByTestId('card-title').allTextContents();
    assert.ok(first.length > 0);
    // Remember the Board page's heading: the page must not remount, its stores follow the prop.
    await a.evaluate(() => {
      window.__heading = document.querySelector('[data-testid="board-name"]');
    });
    await a.evaluate(() => {
      location.hash = '#/b/second-board';
    });
    await textIs(a.getByTestId('board-name'), 'second-board');
    // A link to a board that does not exist does not create one: the page offers to.
    await a.getByTestId('board-not-found').waitFor();
    assert.equal(await a.getByTestId('board').count(), 0);
    await a.getByTestId('create-missing-board').click();
    await a.getByTestId('column-todo').waitFor();
    await eventually(async () => (await a.getByTestId('card').count()) === 0, { message: 'no card of the first board' });
    await addCard(a, 'Only on the second board');
    await inColumn(a, 'todo', 'Only on the second board').waitFor();
    await textIs(online(a), '1 online');

    // On a phone (touch, no drag and drop): the move menu.
    const phone = await browser.newContext({ viewport: { width: 390, height: 760 }, hasTouch: true, isMobile: true });
    const t = await phone.newPage();
    watch(t, 'phone');
    await t.goto(`${server.url}/#/b/second-board`);
    const c = card(t, 'Only on the second board');
    await c.getByTestId('move-card').tap();
    await t.getByTestId('move-menu').waitFor();
    await t.getByTestId('move-to-done').tap();
    await inColumn(a, 'done', 'Only on the second board').waitFor();
    await inColumn(t, 'done', 'Only on the second board').waitFor();
    await phone.close();
    assert.ok(
      await a.evaluate(() => window.__heading === document.querySelector('[data-testid="board-name"]')),
      'the same Board component',
    );
    await a.evaluate((id) => {
      location.hash = `#/b/${id}`;
    }, boardId);
    await eventually(
      async () => JSON.stringify(await a.getByTestId('card-title').allTextContents()) === JSON.stringify(first),
      { message: `back on the first board: ${first}` },
    );
    assert.equal(await card(a, 'Only on the second board').count(), 0);
  });

  step('a guest (no cookies) is refused with a message', async () => {
    const context = await browser.newContext({ viewport: VIEWPORT });
    // A browser that keeps no cookies: drop the identity before the page's scripts run.
    await context.addInitScript(() => {
      for (const name of ['lr_user', 'lr_name', 'lr_color']) {
        document.cookie = `${name}=; Path=/; Max-Age=0`;
      }
    });
    const g = await context.newPage();
    page.guest = g;
    watch(g, 'guest');
    await g.goto(boardUrl());
    const error = g.getByTestId('error').filter({ hasText: 'No identity' });
    await error.first().waitFor();
    assert.equal(await g.getByTestId('board').count(), 0);
    assert.equal(await g.getByTestId('card').count(), 0);
    await g.screenshot({ path: path.join(outDir, 'guest.png') });
    await context.close();
    delete page.guest;
  });
});
