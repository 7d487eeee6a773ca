'use strict';
// Idle-sockets load generator (driven by bench/idle_sockets.py; see bench/README.md).
//
//   node idle.js '<config JSON>'    or    node idle.js @config.json   (10,000 tokens exceed argv)
//
// Opens `sockets` WebSockets (lean raw client), never more than `concurrency` of them
// connecting or authenticating at once: each sends the upgrade with `headers` (e.g.
// `Authorization: Bearer ${token}`), then `authFrames`, and counts as authenticated once it
// has received `readyFrames` frames (the server's `ready`). The next socket starts as soon as
// one is authenticated, so the rate is connect + authenticate at a fixed concurrency.
//
// When every socket is authenticated it prints one JSON line ({"phase":"idle", rate, latency
// percentiles}) and holds them all idle (answering pings) until its standard input closes;
// then it prints the final JSON line ({"phase":"done", sockets still open, lost, extra
// frames}) and exits. The driver reads the server's RSS in between.
const { performance } = require('perf_hooks');
const { log, makeFill, r2, latencySummary, CpuWindow, rawConnect } = require('./common');

const cfg = Object.assign({
  url: 'ws://127.0.0.1:8765/ws/auth',
  sockets: 10000,
  concurrency: 100,
  headers: {},
  authFrames: [],
  readyFrames: 1,
  vars: {},
  connectTimeoutS: 60,
  totalTimeoutS: 600,
  serverPid: 0,
  clkTck: 100,
  serverCpu: 0,
  generatorCpu: 1,
}, JSON.parse((process.argv[2] || '{}').startsWith('@')
  ? require('fs').readFileSync(process.argv[2].slice(1), 'utf8') : (process.argv[2] || '{}')));

const N = cfg.sockets;
const fill = makeFill(cfg.vars);
let finished = false;
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const die = (msg, code = 2) => {
  if (finished) return;
  finished = true;
  out({ error: msg });
  process.exit(code);
};
setTimeout(() => die(`only ${authenticated}/${N} sockets authenticated within ${cfg.totalTimeoutS}s`, 3),
  cfg.totalTimeoutS * 1000).unref();

const socks = new Array(N);
const frames = new Int32Array(N);
const startedAt = new Float64Array(N);
const lat = [];
let next = 0, authenticated = 0, lost = 0, extraFrames = 0, firstLoss = null;
let phase = 'connect';
const cpuWindow = new CpuWindow(cfg);
let t0 = 0;

function open(i) {
  const hdr = Object.fromEntries(Object.entries(cfg.headers).map(([k, v]) => [k, fill(v, { i })]));
  startedAt[i] = performance.now();
  socks[i] = rawConnect(cfg.url, hdr, (ws) => {
    for (const f of cfg.authFrames) ws.send(fill(f, { i }));
  }, () => onFrame(i), (e) => onFail(i, e), false, cfg.connectTimeoutS);
}

function onFrame(i) {
  const n = ++frames[i];
  if (n < cfg.readyFrames) return;
  if (n > cfg.readyFrames) { extraFrames++; return; }
  lat.push(performance.now() - startedAt[i]);
  authenticated++;
  if (next < N) open(next++);
  if (authenticated === N) idle();
}

function onFail(i, e) {
  if (phase === 'connect') return die(`socket ${i}: ${e.message}`);
  lost++;
  if (firstLoss === null) firstLoss = `socket ${i}: ${e.message}`;
}

function idle() {
  const seconds = (performance.now() - t0) / 1000;
  phase = 'idle';
  const cpu = cpuWindow.result(seconds * 1000);
  log(`${N} sockets authenticated in ${seconds.toFixed(2)}s; holding them idle`);
  out({
    phase: 'idle', url: cfg.url, sockets: N, concurrency: cfg.concurrency, seconds: r2(seconds),
    sockets_per_s: Math.round(N / seconds), latency_ms: latencySummary(lat), ...cpu,
  });
}

function finish() {
  if (finished) return;
  finished = true;
  out({ phase: 'done', sockets: N, still_open: N - lost, lost, first_loss: firstLoss, extra_frames: extraFrames });
  for (const ws of socks) if (ws) ws.terminate();
  setTimeout(() => process.exit(0), 50);
}

process.stdin.on('data', () => {});
process.stdin.on('end', () => (phase === 'idle' ? finish() : die('stdin closed before every socket was authenticated')));
process.on('SIGTERM', () => die('terminated', 4));

t0 = performance.now();
cpuWindow.start();
for (; next < Math.min(cfg.concurrency, N);) open(next++);
