'use strict';
// Node + ws reference: the same protocol as bench/bare_server.py, written the way a Node user
// would (JSON.stringify once per broadcast, ws.send per socket, no compression). Used by
// fanout.py (bench-join, bench-broadcast) and roundtrip.py (bench-echo answered with an `ack`
// carrying the frame's id and data, exactly as bare_server.py answers it).
//   node ws_server.js --port 8766
const WebSocket = require('ws');
const argv = process.argv;
const port = Number(argv[argv.indexOf('--port') + 1] || process.env.PORT || 8766);
const room = new Set();
const JOINED = '{"type":"bench-joined"}';
const wss = new WebSocket.WebSocketServer({ host: '127.0.0.1', port, path: '/ws', perMessageDeflate: false });
wss.on('connection', (ws) => {
  ws.on('message', (data) => {
    const msg = JSON.parse(data);
    if (msg.type === 'bench-broadcast') {
      const payload = JSON.stringify({ type: 'bench-message', data: msg.data });
      for (const c of room) c.send(payload);
    } else if (msg.type === 'bench-echo') {
      ws.send(JSON.stringify({ type: 'ack', id: msg.id, data: msg.data }));
    } else if (msg.type === 'bench-join') {
      room.add(ws);
      ws.send(JOINED);
    }
  });
  ws.on('close', () => room.delete(ws));
  ws.on('error', () => {});
});
wss.on('listening', () => process.stderr.write(`ws_server: listening on ws://127.0.0.1:${port}/ws pid=${process.pid}\n`));
process.on('SIGTERM', () => process.exit(0));
