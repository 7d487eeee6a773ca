'use strict';
// WebSocket round-trip load generator (driven by bench/roundtrip.py; see bench/README.md).
//
//   node roundtrip.js '<config JSON>'    result JSON on stdout (one line), progress on stderr
//
// Opens `clients` sockets (lean raw client), sends each its join frames and waits for
// `joinReplies` frames per socket. Then every client sends `frame` (with "id":"r<i>-<n>") and
// sends its next one when the reply carrying that id arrives (`ack`, or `error`, counted
// apart); other frames (a broadcast of the client's own message) are counted and skipped.
// A warm-up of `warmupS` seconds is not measured; then `durationS` seconds (or `maxPerClient`
// round trips per client) are. After that no client sends again, and the generator waits
// (at most `drainTimeoutS`) for every reply still due, so `acks_total` is every message the
// server acknowledged: the driver compares it with the rows stored.
const { performance } = require('perf_hooks');
const { log, makeFill, r2, latencySummary, CpuWindow, rawConnect } = require('./common');

const cfg = Object.assign({
  url: 'ws://127.0.0.1:8765/ws',
  clients: 64,
  headers: {},
  joinFrames: [],
  joinReplies: 0,
  frame: '{"type":"bench-echo","id":"${id}","data":{"text":"${pad}"}}',
  vars: {},
  padBytes: 48,
  warmupS: 3,
  durationS: 10,
  maxPerClient: 1000000,
  connectTimeoutS: 60,
  drainTimeoutS: 10,
  serverPid: 0,
  clkTck: 100,
  serverCpu: 0,
  generatorCpu: 1,
}, JSON.parse(process.argv[2] || '{}'));

const N = cfg.clients;
const fill = makeFill(Object.assign({ pad: 'x'.repeat(cfg.padBytes) }, cfg.vars));
let finished = false;
const die = (msg, code = 2) => {
  if (finished) return;
  finished = true;
  process.stdout.write(JSON.stringify({ error: msg }) + '\n');
  process.exit(code);
};
const hardLimitS = cfg.connectTimeoutS + cfg.warmupS + cfg.durationS + cfg.drainTimeoutS + 30;
setTimeout(() => die(`hard time limit ${hardLimitS}s reached`, 3), hardLimitS * 1000).unref();

const socks = new Array(N);
const joinedFrames = new Int32Array(N);
const sentN = new Int32Array(N);       // messages sent per client
const pendingId = new Array(N).fill(null);
const pendingT = new Float64Array(N);
const lat = [];
let phase = 'join';                   // join -> warmup -> measure -> drain
let joined = 0, outstanding = 0;
let acksTotal = 0, acksMeasured = 0, errors = 0, otherFrames = 0, firstError = null;
let tMeasure = 0, tEnd = 0;
const cpuWindow = new CpuWindow(cfg);
let cpu = null;                      // the measured interval's CPU figures

function sendNext(i) {
  if (phase === 'drain' || sentN[i] >= cfg.maxPerClient) return;
  const id = `r${i}-${sentN[i]++}`;
  pendingId[i] = id;
  pendingT[i] = performance.now();
  outstanding++;
  socks[i].send(fill(cfg.frame, { i, id, seq: sentN[i] - 1 }));
}

function onFrame(i, data) {
  if (phase === 'join') {
    if (++joinedFrames[i] === cfg.joinReplies && ++joined === N) start();
    return;
  }
  const id = pendingId[i];
  const text = data.toString();
  // Cheap pre-check before parsing: replies carry our id; broadcasts carry other ids.
  if (id === null || text.indexOf(`"${id}"`) < 0) { otherFrames++; return; }
  const msg = JSON.parse(text);
  if (msg.id !== id) { otherFrames++; return; }
  const now = performance.now();
  pendingId[i] = null;
  outstanding--;
  if (msg.type === 'ack') {
    acksTotal++;
    if (phase === 'measure') { acksMeasured++; lat.push(now - pendingT[i]); }
  } else {
    errors++;
    if (firstError === null) firstError = text.slice(0, 300);
  }
  if (phase === 'drain') { if (outstanding === 0) finish('done'); return; }
  sendNext(i);
}

function start() {
  log(`${N} clients joined; warm-up ${cfg.warmupS}s, then ${cfg.durationS}s measured`);
  phase = 'warmup';
  for (let i = 0; i < N; i++) sendNext(i);
  setTimeout(() => {
    phase = 'measure';
    tMeasure = performance.now();
    cpuWindow.start();
    setTimeout(() => {
      tEnd = performance.now();
      phase = 'drain';
      cpu = cpuWindow.result(tEnd - tMeasure);
      if (outstanding === 0) finish('done');
      setTimeout(() => finish(`drain timeout: ${outstanding} replies missing`), cfg.drainTimeoutS * 1000).unref();
    }, cfg.durationS * 1000);
  }, cfg.warmupS * 1000);
}

function finish(reason) {
  if (finished) return;
  finished = true;
  const seconds = (tEnd - tMeasure) / 1000;
  const sent = sentN.reduce((a, b) => a + b, 0);
  const res = {
    reason,
    url: cfg.url,
    clients: N,
    seconds: r2(seconds),
    messages_sent: sent,
    acks_total: acksTotal,
    acks_measured: acksMeasured,
    errors,
    first_error: firstError,
    replies_missing: outstanding,
    other_frames: otherFrames,
    acks_per_s: seconds > 0 ? Math.round(acksMeasured / seconds) : null,
    latency_ms: latencySummary(lat),
    ...cpu,
  };
  process.stdout.write(JSON.stringify(res) + '\n');
  for (const ws of socks) if (ws) ws.terminate();
  setTimeout(() => process.exit(0), 50);
}

for (let i = 0; i < N; i++) {
  const hdr = Object.fromEntries(Object.entries(cfg.headers).map(([k, v]) => [k, fill(v, { i })]));
  socks[i] = rawConnect(cfg.url, hdr, (ws) => {
    for (const f of cfg.joinFrames) ws.send(fill(f, { i }));
    if (cfg.joinReplies === 0 && ++joined === N) start();
  }, (data) => onFrame(i, data), (e) => die(`client ${i}: ${e.message}`), true, cfg.connectTimeoutS);
}
setTimeout(() => { if (joined < N) die(`only ${joined}/${N} clients joined within ${cfg.connectTimeoutS}s`); },
  cfg.connectTimeoutS * 1000).unref();
process.on('SIGTERM', () => die('terminated', 4));
