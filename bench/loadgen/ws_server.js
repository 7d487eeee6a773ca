'use strict';
// Node + ws reference: the same protocol as bench/bare_server.py, written the way a Node user
// would (JSON.stringify once per broadcast, ws.send per socket, no compression).
//   node ws_server.js --port 8766            (BENCH_JWT_SECRET=… for /ws/auth)
//
// /ws: fan-out (fanout.py: bench-join, bench-broadcast) and the round trip (roundtrip.py:
// bench-echo answered with an `ack` carrying the frame's id and data, exactly as
// bare_server.py answers it). /ws/auth (bench/idle_sockets.py): the upgrade
// must carry `Authorization: Bearer <JWT>`, an HS256 access token checked the simplest Node way
// (node's crypto HMAC, exp, iss, typ; no JWT library), refused with HTTP 401 otherwise; the
// socket is then indexed by its user, gets {"type":"ready","data":{"userId":…}} and stays idle.
const crypto = require('crypto');
const WebSocket = require('ws');
const argv = process.argv;
const port = Number(argv[argv.indexOf('--port') + 1] || process.env.PORT || 8766);
const secret = process.env.BENCH_JWT_SECRET || '';
const room = new Set();
const socketsByUser = new Map();
const JOINED = '{"type":"bench-joined"}';
const HS256_HEADER = { alg: 'HS256', typ: 'JWT' };

// The claims of a valid HS256 access token, or null.
function verifyAccessToken(token) {
  const parts = token.split('.');
  if (parts.length !== 3 || !secret) return null;
  try {
    const header = JSON.parse(Buffer.from(parts[0], 'base64url'));
    if (header.alg !== HS256_HEADER.alg) return null;
    const expected = crypto.createHmac('sha256', secret).update(`${parts[0]}.${parts[1]}`).digest();
    const given = Buffer.from(parts[2], 'base64url');
    if (given.length !== expected.length || !crypto.timingSafeEqual(given, expected)) return null;
    const claims = JSON.parse(Buffer.from(parts[1], 'base64url'));
    if (claims.typ !== 'access' || claims.iss !== 'vachat' || typeof claims.sub !== 'string') return null;
    if (typeof claims.exp !== 'number' || claims.exp <= Date.now() / 1000) return null;
    return claims;
  } catch (e) { return null; }
}

function verifyClient(info, done) {
  if (!info.req.url.startsWith('/ws/auth')) return done(true);
  const [scheme, token] = (info.req.headers.authorization || '').split(' ');
  const claims = scheme && scheme.toLowerCase() === 'bearer' && token ? verifyAccessToken(token) : null;
  if (!claims) return done(false, 401, 'Unauthorized');
  info.req.userId = claims.sub;
  return done(true);
}

const wss = new WebSocket.WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false, verifyClient });
wss.on('connection', (ws, req) => {
  ws.on('error', () => {});
  const path = req.url.split('?')[0];
  if (path === '/ws/auth') {
    const userId = req.userId;
    let sockets = socketsByUser.get(userId);
    if (!sockets) socketsByUser.set(userId, (sockets = new Set()));
    sockets.add(ws);
    ws.on('close', () => { sockets.delete(ws); if (!sockets.size) socketsByUser.delete(userId); });
    ws.send(JSON.stringify({ type: 'ready', data: { userId } }));
    return;
  }
  if (path !== '/ws') { ws.close(1008, 'unknown path'); return; }
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
});
wss.on('listening', () => process.stderr.write(`ws_server: listening on ws://127.0.0.1:${port}/ws pid=${process.pid}\n`));
process.on('SIGTERM', () => process.exit(0));
