// A room end to end: two users on two connections (grace 300 ms).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { get } from '../src/index.js';
import { startServer, clientFor } from '../test-helpers/server.js';
import { waitFor } from '../test-helpers/wait.js';

/** @type {import('../test-helpers/server.js').TestServer} */ let server;
/** @type {any} */ let alice;
/** @type {any} */ let bob;
const BOARD = 'room-e2e';
const ROOM = { topicArgs: 1, presence: true, cursors: true, actions: ['addCard', 'editCard', 'deleteCard', 'fail'] };

before(async () => {
	server = await startServer({ graceMs: 300 });
	alice = clientFor(server, 'user=alice&name=Alice');
	bob = clientFor(server, 'user=bob&name=Bob');
});
after(async () => {
	alice?.close();
	bob?.close();
	await server?.stop();
});

const keys = (/** @type {any[]} */ v) => (Array.isArray(v) ? v.map((p) => p.key).sort() : []);

test('cards, presence, cursors and leave between two users', async () => {
	const a = alice.room('collab/board', ROOM);
	const b = bob.room('collab/board', ROOM);
	assert.equal(a.data(BOARD), a.data(BOARD), 'same args, same store');

	const aSubs = [a.data(BOARD), a.presence(BOARD), a.cursors(BOARD)].map((s) => s.subscribe(() => {}));
	const bSubs = [b.data(BOARD), b.presence(BOARD), b.cursors(BOARD)].map((s) => s.subscribe(() => {}));
	await waitFor(a.data(BOARD), Array.isArray, { label: 'alice data' });
	await waitFor(b.data(BOARD), Array.isArray, { label: 'bob data' });

	// Presence shows both, with the presence data from the user.
	const roster = await waitFor(a.presence(BOARD), (v) => keys(v).join() === 'alice,bob', { label: 'alice sees both' });
	assert.deepEqual(roster.find((/** @type {any} */ p) => p.key === 'bob').data, { name: 'Bob' });
	await waitFor(b.presence(BOARD), (v) => keys(v).join() === 'alice,bob', { label: 'bob sees both' });

	// A card added by Alice appears at Bob's; edit and delete follow.
	const card = await a.addCard(BOARD, 'New card');
	assert.equal(card.title, 'New card');
	assert.ok(card.id !== undefined);
	await waitFor(b.data(BOARD), (v) => v.some((/** @type {any} */ x) => x.id === card.id && x.title === 'New card'), { label: 'bob gets card' });
	await b.editCard(BOARD, card.id, 'Renamed');
	await waitFor(a.data(BOARD), (v) => v.some((/** @type {any} */ x) => x.id === card.id && x.title === 'Renamed'), { label: 'alice gets edit' });
	await a.deleteCard(BOARD, card.id);
	await waitFor(b.data(BOARD), (v) => !v.some((/** @type {any} */ x) => x.id === card.id), { label: 'bob gets delete' });

	// Action errors are typed.
	await assert.rejects(a.fail(BOARD), (e) => /** @type {any} */ (e).code === 'BOOM');

	// Cursors move (coalesced, latest wins).
	a.moveCursor(BOARD, { x: 1, y: 1 });
	a.moveCursor(BOARD, { x: 10, y: 20 });
	const cur = await waitFor(b.cursors(BOARD), (v) => v.some((/** @type {any} */ c) => c.key === 'alice' && c.x === 10), { label: 'bob sees cursor' });
	assert.deepEqual(cur.find((/** @type {any} */ c) => c.key === 'alice'), { key: 'alice', x: 10, y: 20 });
	b.moveCursor(BOARD, { x: 5, y: 6 });
	await waitFor(a.cursors(BOARD), (v) => v.some((/** @type {any} */ c) => c.key === 'bob' && c.x === 5), { label: 'alice sees bob cursor' });

	// Bob leaves: after the grace, Alice sees him gone from presence and cursors.
	const left = Date.now();
	bSubs.forEach((u) => u());
	await waitFor(a.presence(BOARD), (v) => keys(v).join() === 'alice', { label: 'bob left', timeout: 5000 });
	assert.ok(Date.now() - left >= 250, `leave only after the grace (${Date.now() - left} ms)`);
	await waitFor(a.cursors(BOARD), (v) => !v.some((/** @type {any} */ c) => c.key === 'bob'), { label: 'bob cursor removed' });
	aSubs.forEach((u) => u());
});

test('a new subscription inside the grace cancels the leave (no flicker)', async () => {
	const a = alice.room('collab/board', ROOM);
	const b = bob.room('collab/board', ROOM);
	const board = 'room-grace';
	const ua = [a.data(board), a.presence(board)].map((s) => s.subscribe(() => {}));
	let ub = b.data(board).subscribe(() => {});
	await waitFor(a.presence(board), (v) => keys(v).join() === 'alice,bob');
	// bob's join may still be in the server's 50 ms announcement window (an upsert of what the
	// roster already shows): let it land before watching for flicker.
	await new Promise((r) => setTimeout(r, 150));
	/** @type {string[]} */
	const seen = [];
	const ur = a.presence(board).subscribe((v) => seen.push(keys(v).join()));
	ub();
	ub = b.data(board).subscribe(() => {}); // immediate re-subscribe, like a component remount
	await waitFor(b.data(board), Array.isArray);
	// Proving an absence needs a bounded wait: the grace is 300 ms, a leave would have arrived by now.
	await new Promise((r) => setTimeout(r, 600));
	assert.deepEqual(seen, ['alice,bob'], 'no leave, no second join');
	assert.equal(keys(get(a.presence(board))).join(), 'alice,bob');
	ub();
	ua.forEach((u) => u());
	ur();
});

test('two room args (collab/pair): note reaches the other user', async () => {
	const a = alice.room('collab/pair', { topicArgs: 2, actions: ['note'] });
	const b = bob.room('collab/pair', { topicArgs: 2, actions: ['note'] });
	const ua = a.data('x', 'y').subscribe(() => {});
	const ub = b.data('x', 'y').subscribe(() => {});
	await waitFor(b.data('x', 'y'), Array.isArray);
	await waitFor(a.data('x', 'y'), Array.isArray);
	const note = await a.note('x', 'y', 'hello');
	assert.equal(note.text, 'hello');
	await waitFor(b.data('x', 'y'), (v) => v.some((/** @type {any} */ n) => n.text === 'hello'));
	ua();
	ub();
});

test('awareness: presence.update reaches the other user, presence.count counts, a null cursor goes away', async () => {
	const a = alice.room('collab/board', ROOM);
	const b = bob.room('collab/board', ROOM);
	const board = 'aware-1';
	const subs = [a.data(board), a.presence(board), b.data(board), b.presence(board), b.cursors(board)].map((s) => s.subscribe(() => {}));
	await waitFor(b.presence(board), (v) => keys(v).join() === 'alice,bob', { label: 'bob sees both' });
	// The count follows the roster.
	const count = b.presence.count(board);
	assert.equal(count, b.presence(board).count, 'the same store');
	await waitFor(count, (n) => n === 2, { label: 'two counted' });

	// Coalesced per frame, latest wins; the server's fields win over the client's.
	a.presence.update(board, { editing: 'first' });
	a.presence.update(board, { editing: 'card-9', name: 'Eve' });
	const seen = await waitFor(b.presence(board), (v) => v?.find((/** @type {any} */ p) => p.key === 'alice')?.data.editing === 'card-9', { label: 'bob sees alice editing' });
	assert.equal(seen.find((/** @type {any} */ p) => p.key === 'alice').data.name, 'Alice');
	// The server drops a socket's state with the socket; after a reconnect the client says it again.
	const editing = (/** @type {any} */ v) => v?.find((/** @type {any} */ p) => p.key === 'alice')?.data.editing;
	alice.connection.reconnect();
	await waitFor(a.data(board).status, (s) => s === 'refreshing', { label: 'alice refetches' });
	await waitFor(a.data(board).status, (s) => s === 'ready', { label: 'alice is back' });
	// A late joiner reads the server's roster: the state is there again (without the resend it
	// would have gone with alice's old socket).
	const carol = clientFor(server, 'user=carol&name=Carol');
	try {
		const c = carol.room('collab/board', ROOM);
		const uc = c.presence(board).subscribe(() => {});
		await waitFor(c.presence(board), (v) => editing(v) === 'card-9', { label: 'said again after the reconnect' });
		uc();
	} finally {
		carol.close();
	}
	a.presence.update(board, null);
	await waitFor(b.presence(board), (v) => editing(v) === undefined, { label: 'cleared' });

	// A null position removes alice's cursor for bob.
	a.moveCursor(board, { x: 3, y: 4 });
	await waitFor(b.cursors(board), (v) => keys(v).includes('alice'), { label: 'cursor shown' });
	a.moveCursor(board, null);
	await waitFor(b.cursors(board), (v) => !keys(v).includes('alice'), { label: 'cursor removed' });
	subs.forEach((u) => u());
});

test('lobby: the open rooms with their counts, opened by the first member, closed after the last leaves', async () => {
	const a = alice.room('collab/board', { ...ROOM, lobby: true });
	const b = bob.room('collab/board', { ...ROOM, lobby: true });
	const board = 'lobby-js';
	const lobby = a.lobby();
	const unLobby = lobby.subscribe(() => {});
	await waitFor(lobby, Array.isArray, { label: 'lobby loads' });
	const entry = (/** @type {any} */ v) => (Array.isArray(v) ? v.find((e) => e.room === `board:${board}`) : undefined);
	const unA = a.data(board).subscribe(() => {});
	const first = await waitFor(lobby, (v) => entry(v)?.count === 1, { label: 'opened with 1' });
	assert.deepEqual(entry(first).args, [board]);
	assert.deepEqual(entry(first).meta, { title: `Board ${board}` });
	const unB = b.data(board).subscribe(() => {});
	await waitFor(lobby, (v) => entry(v)?.count === 2, { label: '2 members' });
	unB();
	await waitFor(lobby, (v) => entry(v)?.count === 1, { label: 'bob left after the grace' });
	unA();
	await waitFor(lobby, (v) => Array.isArray(v) && entry(v) === undefined, { label: 'closed' });
	unLobby();
});
