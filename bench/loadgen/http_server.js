'use strict';
// Node `http` reference for the conversation list (bench/restlist.py): what a Node user writes
// by hand, the counterpart of bench/bare_server.py's /api/bench/items. One JSON GET answering
// the success envelope around 20 conversation-like items built at start-up (the same shape
// and about the same length as bare_server.py's), JSON.stringify per request; no auth, no
// validation, no database. Built-in modules only.
//   node http_server.js --port 8767
const http = require('http');
const crypto = require('crypto');
const argv = process.argv;
const port = Number(argv[argv.indexOf('--port') + 1] || process.env.PORT || 8767);
const PATH = '/api/bench/items';

function item(n) {
  const ident = () => crypto.randomBytes(13).toString('hex').slice(0, 26);
  // bare_server.py's stamps: isoformat() of a naive datetime (no fraction) plus "Z"
  const stamp = new Date(Date.UTC(2026, 10, 1) + n * 60000).toISOString().replace('.000Z', 'Z');
  const cid = ident(), owner = ident(), mid = ident();
  return {
    id: cid, ownerId: owner, title: `Conversation ${n}`, description: '', isPublic: false,
    isArchived: false, tags: [], metadata: {}, currentMessageId: mid, messageCount: 1,
    lastMessage: {
      id: mid, conversationId: cid, userId: owner, role: 'user', type: 'text',
      content: `Hello number ${n}`, parentId: null, metadata: {}, clientMessageId: null,
      isEdited: false, editedAt: null, files: [], createdAt: stamp, updatedAt: stamp,
    },
    createdAt: stamp, updatedAt: stamp,
  };
}

const ITEMS = Array.from({ length: 20 }, (_, n) => item(n));

const server = http.createServer((req, res) => {
  if (req.method !== 'GET' || req.url !== PATH) {
    res.writeHead(404, { 'Content-Type': 'application/json; charset=UTF-8' });
    res.end('{"success":false}');
    return;
  }
  const body = JSON.stringify({ success: true, data: ITEMS,
                                pagination: { page: 1, limit: 20, total: 20, totalPages: 1 } });
  res.writeHead(200, { 'Content-Type': 'application/json; charset=UTF-8',
                       'Content-Length': Buffer.byteLength(body) });
  res.end(body);
});
server.keepAliveTimeout = 60000;
server.listen(port, '127.0.0.1', () =>
  process.stderr.write(`http_server: listening on http://127.0.0.1:${port}${PATH} pid=${process.pid}\n`));
process.on('SIGTERM', () => process.exit(0));
