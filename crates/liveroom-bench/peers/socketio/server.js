// The Socket.IO 4 peer of the benchmark (see BENCHMARKS.md, "Peers"): the same jobs as the
// raw-limit server, done the way a Socket.IO app would do them, with its rooms.
//
//   join(room, ack)          the socket joins the room; ack() once it is in
//   pub(room, payload, ack)  io.to(room).emit('created', payload), then ack()
//   echo(payload, ack)       ack(payload): an RPC-like acknowledgement round trip
//
// Loopback only. Prints `LISTENING http://<addr>` once it listens, like the other servers.
'use strict';
const http = require('node:http');
const { Server } = require('socket.io');

const port = Number(process.argv[process.argv.indexOf('--port') + 1] || 0);
const httpServer = http.createServer();
const io = new Server(httpServer, {
  transports: ['websocket'],
  serveClient: false,
  // The defaults; written out because the figures depend on them.
  perMessageDeflate: false,
  pingInterval: 25000,
  pingTimeout: 20000,
  maxHttpBufferSize: 1e6,
});

io.on('connection', (socket) => {
  socket.on('join', (room, ack) => {
    socket.join(String(room));
    if (typeof ack === 'function') ack();
  });
  socket.on('pub', (room, payload, ack) => {
    io.to(String(room)).emit('created', payload);
    if (typeof ack === 'function') ack();
  });
  socket.on('echo', (payload, ack) => {
    if (typeof ack === 'function') ack(payload);
  });
});

httpServer.listen(port, '127.0.0.1', () => {
  const a = httpServer.address();
  console.log(`LISTENING http://${a.address}:${a.port}`);
});
process.on('SIGTERM', () => process.exit(0));
