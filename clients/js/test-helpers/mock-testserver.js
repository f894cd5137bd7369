#!/usr/bin/env node
/**
 * A small JS stand-in for `liveroom-testserver` (contract.md), for developing the client when the
 * Rust binary is not built. Not used by `npm test` unless LIVEROOM_TESTSERVER points at this file
 * (the helper then runs it with node). Same CLI: `--bind 127.0.0.1:<port> [--grace-ms N]`, prints
 * `LISTENING http://127.0.0.1:<port>`.
 */
import http from 'node:http';
import { WebSocketServer } from 'ws';

const argv = process.argv.slice(2);
const opt = (name, dflt) => {
	const i = argv.indexOf(name);
	return i >= 0 ? argv[i + 1] : dflt;
};
const [host, port] = opt('--bind', '127.0.0.1:0').split(':');
const graceMs = Number(opt('--grace-ms', '5000'));

const MANIFEST = {
	version: 1,
	modules: {
		collab: {
			rooms: {
				board: { topicArgs: 1, args: ['boardId'], merge: 'crud', key: 'id', presence: true, cursors: true, actions: { addCard: { args: ['boardId', 'title'] }, editCard: { args: ['boardId', 'id', 'title'] }, deleteCard: { args: ['boardId', 'id'] }, fail: { args: ['boardId'] } } },
				pair: { topicArgs: 2, args: ['a', 'b'], merge: 'crud', key: 'id', presence: false, cursors: false, actions: { note: { args: ['a', 'b', 'text'] } } }
			},
			streams: {},
			rpcs: {}
		},
		test: {
			rooms: {},
			streams: { items: { merge: 'crud', key: 'id', args: [] }, feed: { merge: 'latest', max: 5, args: [] }, value: { merge: 'set', args: [] }, denied: { merge: 'crud', key: 'id', args: [] }, broken: { merge: 'crud', key: 'id', args: [] } },
			rpcs: { echo: { args: [] }, add: { args: ['a', 'b'] }, fail: { args: ['code', 'message'] }, publish: { args: ['topic', 'event', 'data'] }, slow: { args: ['ms'] } }
		}
	}
};

class LiveErr extends Error {
	constructor(code, message) {
		super(message);
		this.code = code;
	}
}

/** topic -> Set<conn> */
const subs = new Map();
let items = [];
const boards = new Map(); // boardId -> cards
const pairs = new Map();
let guestN = 0;
let nextId = 1;
/** T -> Map<identity, { count, data, leaveTimer }> */
const presence = new Map();
/** T -> Map<identity, {x,y,...}> */
const cursors = new Map();

function publish(topic, event, data) {
	for (const c of subs.get(topic) || []) c.send({ topic, event, data });
}
function subscribe(c, topic) {
	if (!subs.has(topic)) subs.set(topic, new Set());
	subs.get(topic).add(c);
	c.topics.add(topic);
}
function unsubscribe(c, topic) {
	subs.get(topic)?.delete(c);
	c.topics.delete(topic);
	if (c.dataRooms.has(topic)) {
		c.dataRooms.delete(topic);
		memberLeave(topic, c.identity);
	}
}

function memberJoin(T, c) {
	let roster = presence.get(T);
	if (!roster) presence.set(T, (roster = new Map()));
	const e = roster.get(c.identity);
	if (e) {
		e.count++;
		if (e.leaveTimer) {
			clearTimeout(e.leaveTimer);
			e.leaveTimer = null;
		}
		return;
	}
	const data = { name: c.user?.name ?? null };
	roster.set(c.identity, { count: 1, data, leaveTimer: null });
	publish(T + ':presence', 'join', { key: c.identity, data });
}
function memberLeave(T, identity) {
	const e = presence.get(T)?.get(identity);
	if (!e) return;
	if (--e.count > 0) return;
	e.leaveTimer = setTimeout(() => {
		presence.get(T).delete(identity);
		publish(T + ':presence', 'leave', { key: identity });
		if (cursors.get(T)?.delete(identity)) publish(T + ':cursors', 'remove', { key: identity });
	}, graceMs);
}

const ROOMS = {
	'collab/board': {
		topicArgs: 1,
		topic: (a) => `board:${a[0]}`,
		init: (a) => boards.get(a[0]) || [],
		actions: {
			addCard(c, [b, title]) {
				const card = { id: String(nextId++), title };
				boards.set(b, [...(boards.get(b) || []), card]);
				publish(`board:${b}`, 'created', card);
				return card;
			},
			editCard(c, [b, id, title]) {
				const card = { id, title };
				boards.set(b, (boards.get(b) || []).map((x) => (x.id === id ? card : x)));
				publish(`board:${b}`, 'updated', card);
				return card;
			},
			deleteCard(c, [b, id]) {
				boards.set(b, (boards.get(b) || []).filter((x) => x.id !== id));
				publish(`board:${b}`, 'deleted', { id });
				return { id };
			},
			fail() {
				throw new LiveErr('BOOM', 'boom');
			}
		},
		presence: true,
		cursors: true
	},
	'collab/pair': {
		topicArgs: 2,
		topic: (a) => `pair:${a[0]}:${a[1]}`,
		init: (a) => pairs.get(`${a[0]}:${a[1]}`) || [],
		actions: {
			note(c, [a, b, text]) {
				const n = { id: String(nextId++), text, a, b };
				pairs.set(`${a}:${b}`, [...(pairs.get(`${a}:${b}`) || []), n]);
				publish(`pair:${a}:${b}`, 'created', n);
				return n;
			}
		}
	}
};

async function handle(c, call) {
	const path = call.rpc;
	const args = call.args;
	if (typeof path !== 'string' || !Array.isArray(args)) throw new LiveErr('INVALID_REQUEST', 'bad');
	const m = /^(.*)\/(__data|__presence|__cursors|__cursor|__action\/(\w+))$/.exec(path);
	if (m && ROOMS[m[1]]) {
		const room = ROOMS[m[1]];
		if (!c.user) throw new LiveErr('UNAUTHENTICATED', 'Login required');
		const T = room.topic(args.slice(0, room.topicArgs));
		if (m[2] === '__data') {
			subscribe(c, T);
			if (!c.dataRooms.has(T)) {
				c.dataRooms.add(T);
				memberJoin(T, c);
			}
			return { stream: { data: room.init(args), topic: T, merge: 'crud', key: 'id' } };
		}
		if (m[2] === '__presence') {
			subscribe(c, T + ':presence');
			const roster = [...(presence.get(T) || new Map())].map(([key, e]) => ({ key, data: e.data }));
			if (!roster.some((r) => r.key === c.identity)) roster.push({ key: c.identity, data: { name: c.user.name } });
			return { stream: { data: roster, topic: T + ':presence', merge: 'presence' } };
		}
		if (m[2] === '__cursors') {
			subscribe(c, T + ':cursors');
			return { stream: { data: [...(cursors.get(T) || new Map()).values()], topic: T + ':cursors', merge: 'cursor' } };
		}
		if (m[2] === '__cursor') {
			if (!c.topics.has(T)) return { result: null };
			const pos = { key: c.identity, ...args[room.topicArgs] };
			c.cursorLatest = { T, pos };
			if (!c.cursorTimer) {
				c.cursorTimer = setTimeout(() => {
					c.cursorTimer = null;
					const { T: t, pos: p } = c.cursorLatest;
					if (!cursors.has(t)) cursors.set(t, new Map());
					cursors.get(t).set(p.key, p);
					publish(t + ':cursors', 'update', p);
				}, 50);
			}
			return { result: null };
		}
		const action = room.actions[m[3]];
		if (!action) throw new LiveErr('NOT_FOUND', 'no action');
		return { result: action(c, args) };
	}
	switch (path) {
		case 'test/echo':
			return { result: args };
		case 'test/add':
			if (args.length !== 2 || !Number.isInteger(args[0]) || !Number.isInteger(args[1])) throw new LiveErr('INVALID_REQUEST', 'bad args');
			return { result: args[0] + args[1] };
		case 'test/fail':
			throw new LiveErr(args[0], args[1]);
		case 'test/publish': {
			const [topic, event, data] = args;
			if (topic === 'items') {
				if (event === 'created') items = [...items.filter((x) => x.id !== data.id), data];
				if (event === 'updated') items = items.map((x) => (x.id === data.id ? data : x));
				if (event === 'deleted') items = items.filter((x) => x.id !== data.id);
			}
			publish(topic, event, data);
			return { result: null };
		}
		case 'test/slow':
			await new Promise((r) => setTimeout(r, args[0]));
			return { result: args[0] };
		case 'test/items':
			subscribe(c, 'items');
			return { stream: { data: items, topic: 'items', merge: 'crud', key: 'id' } };
		case 'test/feed':
			subscribe(c, 'feed');
			return { stream: { data: [], topic: 'feed', merge: 'latest', max: 5 } };
		case 'test/value':
			subscribe(c, 'value');
			return { stream: { data: { n: 0 }, topic: 'value', merge: 'set' } };
		case 'test/denied':
			throw new LiveErr('FORBIDDEN', 'denied');
		case 'test/broken':
			throw new LiveErr('INTERNAL_ERROR', 'Internal error');
	}
	throw new LiveErr('NOT_FOUND', `no such path ${path}`);
}

async function reply(c, call) {
	try {
		const r = await handle(c, call);
		if (r.stream) return { id: call.id, ok: true, ...r.stream };
		return { id: call.id, ok: true, data: r.result };
	} catch (e) {
		return { id: call.id, ok: false, code: e.code || 'INTERNAL_ERROR', error: e.message };
	}
}

const server = http.createServer((req, res) => {
	if (req.url === '/__live/manifest.json') {
		res.setHeader('content-type', 'application/json');
		res.end(JSON.stringify(MANIFEST));
	} else if (req.url === '/healthz') res.end('ok');
	else {
		res.statusCode = 404;
		res.end();
	}
});
const wss = new WebSocketServer({ server, path: '/ws' });
wss.on('connection', (ws, req) => {
	const q = new URL(req.url, 'http://x').searchParams;
	if (q.get('reject') === '401') return ws.close(4401);
	if (q.get('reject') === '403') return ws.close(4403);
	const user = q.get('user') ? { id: q.get('user'), name: q.get('name') } : null;
	const c = { ws, user, identity: user ? user.id : `__guest_${++guestN}`, topics: new Set(), dataRooms: new Set(), send: (m) => ws.readyState === 1 && ws.send(JSON.stringify(m)) };
	// Strictly ordered processing per socket.
	let chain = Promise.resolve();
	ws.on('message', (raw) => {
		chain = chain.then(async () => {
			let f;
			try {
				f = JSON.parse(String(raw));
			} catch {
				return;
			}
			if (f.type === 'unsubscribe') return unsubscribe(c, f.topic);
			if (f.type) return;
			if (Array.isArray(f.batch)) {
				const replies = await Promise.all(f.batch.map((call) => reply(c, call)));
				c.send({ topic: '__rpc', event: '__batch', data: { batch: replies } });
				return;
			}
			if (f.id === undefined) {
				await reply(c, f);
				return;
			}
			const r = reply(c, f); // do not block the socket on slow calls
			r.then((data) => c.send({ topic: '__rpc', event: f.id, data }));
		});
	});
	ws.on('close', () => {
		for (const t of [...c.topics]) unsubscribe(c, t);
	});
});
server.listen(Number(port), host, () => {
	console.log(`LISTENING http://127.0.0.1:${server.address().port}`);
});
