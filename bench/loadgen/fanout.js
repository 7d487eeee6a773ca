'use strict';
// WebSocket fan-out load generator (driven by bench/fanout.py; see bench/README.md).
//
//   node fanout.js '<config JSON>'       result JSON on stdout (one line), progress on stderr
//
// Phases: open `clients` room sockets (bounded connect concurrency), send each its join frames
// and wait for `joinReplies` frames per socket (any type); open `window` extra trigger sockets
// (never counted) and send their join frames; settle; then send trigger frames, keeping at most
// `window` broadcasts in flight, until `warmup + broadcasts` were sent or `durationS` elapsed.
// Broadcast k is triggered over trigger socket k % window, so no socket ever has a second
// trigger queued behind the one being served (a server may read a socket's queued frames inline
// and starve its event loop: Tornado does); the server is kept busy by the other socket(s).
// Trigger k+1 is only sent once broadcast k has started arriving, so a single-threaded server
// has already read trigger k and cannot reorder them. Frames are NOT parsed: the k-th frame a room socket receives after the
// settle is broadcast k (the server sends in trigger order, each socket is FIFO). Socket 0 alone
// parses `"seq":<n>` to check that attribution. Latency of broadcast k = trigger sent -> its
// `clients`-th delivery. Throughput = frames received between the end of warm-up and the end of
// the last broadcast / that time.
const { performance } = require('perf_hooks');
const WebSocket = require('ws');
const { log, makeFill, r2, latencySummary, CpuWindow, rawConnect } = require('./common');

const cfg = Object.assign({
  url: 'ws://127.0.0.1:8765/ws',
  clients: 1000,
  headers: {},            // upgrade headers; values may use ${var}
  triggerHeaders: null,   // upgrade headers of the trigger sockets (default: headers)
  joinFrames: ['{"type":"bench-join"}'],
  joinReplies: 1,         // frames each room socket must receive before measuring (any type)
  triggerJoinFrames: [],
  triggerJoinReplies: 0,
  triggerFrame: '{"type":"bench-broadcast","data":{"seq":${seq},"text":"${pad}"}}',
  vars: {},               // extra ${var}s (e.g. token from the target's setup()); an array var
                          // gives socket i its element i % length (e.g. one token per account)
  padBytes: 48,
  broadcasts: 200,
  warmup: 10,
  durationS: 20,
  window: 2,
  connectConcurrency: 100,
  connectTimeoutS: 60,
  settleMs: 300,
  drainTimeoutS: 10,
  serverPid: 0,
  clkTck: 100,
  client: 'raw',          // 'raw': lean hand-rolled frame counter; 'ws': the ws library's client
  serverCpu: 0,
  generatorCpu: 1,
}, JSON.parse(process.argv[2] || '{}'));

const N = cfg.clients;
let finished = false;
const TOTAL = cfg.warmup + cfg.broadcasts;
const baseVars = Object.assign({ pad: 'x'.repeat(cfg.padBytes) }, cfg.vars);
const fill = makeFill(baseVars);
const die = (msg, code = 2) => {
  if (finished) return;
  finished = true;
  process.stdout.write(JSON.stringify({ error: msg }) + '\n');
  process.exit(code);
};

// Hard stop whatever happens.
const hardLimitS = cfg.connectTimeoutS + cfg.durationS + cfg.drainTimeoutS + 30;
setTimeout(() => die(`hard time limit ${hardLimitS}s reached`, 3), hardLimitS * 1000).unref();

// ---- state ----------------------------------------------------------------------------------
const socks = new Array(N);
const cnt = new Int32Array(N);        // frames received per socket (join phase, then broadcasts)
const deliv = new Int32Array(TOTAL);  // deliveries per broadcast
const sendT = new Float64Array(TOTAL);
const doneT = new Float64Array(TOTAL);
let measuring = false, counting = false;
let joined = 0, sent = 0, completed = 0, counted = 0, extra = 0;
let seqErrors = 0, sampleBytes = 0, sampleFrames = 0;
const cpuWindow = new CpuWindow(cfg);
let t0 = 0, t1 = 0, deadline = Infinity, lastProgress = 0;
const triggers = [];
const tStart = performance.now();

const wsOpts = {
  perMessageDeflate: false,
  skipUTF8Validation: true,
  maxPayload: 1 << 20,
  handshakeTimeout: cfg.connectTimeoutS * 1000,
};

function onRoomFrame(i, data) {
  if (!measuring) {
    if (++cnt[i] === cfg.joinReplies) {
      joined++;
      if (joined === N) onAllJoined();
    }
    return;
  }
  const k = cnt[i]++;
  if (k >= sent) { extra++; return; }
  if (counting) counted++;
  if (i === 0) {
    sampleFrames++; sampleBytes += data.length;
    const m = /"seq":\s*(\d+)/.exec(data.toString());
    if (!m || Number(m[1]) !== k) seqErrors++;
  }
  const d = ++deliv[k];
  if (d === N) onComplete(k);
  else if (d === 1 && k === sent - 1) pump(performance.now());
}

function onComplete(k) {
  const now = performance.now();
  doneT[k] = now;
  completed++;
  lastProgress = now;
  if (k === cfg.warmup - 1) startCounting(now);
  pump(now);
}

function startCounting(now) {
  t0 = now;
  counting = true;
  cpuWindow.start();
  deadline = now + cfg.durationS * 1000;
}

function pump(now) {
  // Next trigger only once the previous broadcast has started arriving (so the server has read
  // its trigger: broadcasts cannot be reordered) and fewer than `window` are in flight.
  while (sent < TOTAL && sent - completed < cfg.window && now < deadline && (sent === 0 || deliv[sent - 1] > 0)) {
    sendT[sent] = performance.now();
    triggers[sent % triggers.length].send(fill(cfg.triggerFrame, { seq: sent }));
    sent++;
  }
  if (completed === sent && (sent === TOTAL || now >= deadline)) finish('done');
}

// ---- phases ---------------------------------------------------------------------------------
function connect(url, headers, onOpen, onFrame, onFail, wantPayload) {
  if (cfg.client === 'raw') return rawConnect(url, headers, onOpen, onFrame, onFail, wantPayload, cfg.connectTimeoutS);
  const ws = new WebSocket(url, Object.assign({ headers }, wsOpts));
  ws.on('open', () => onOpen(ws));
  ws.on('message', onFrame);
  ws.on('error', (e) => onFail(e));
  ws.on('close', (code) => { if (!finished) onFail(new Error(`closed by server, code ${code}`)); });
  return ws;
}

function openRoom() {
  let next = 0, open = 0;
  const hdr = (i) => Object.fromEntries(Object.entries(cfg.headers).map(([k, v]) => [k, fill(v, { i })]));
  const launch = () => {
    while (next < N && next - open < cfg.connectConcurrency) {
      const i = next++;
      socks[i] = connect(cfg.url, hdr(i), (ws) => {
        open++;
        for (const f of cfg.joinFrames) ws.send(fill(f, { i }));
        if (cfg.joinReplies === 0) { joined++; if (joined === N) onAllJoined(); }
        launch();
      }, (data) => onRoomFrame(i, data), (e) => die(`room socket ${i}: ${e.message}`), i === 0);
    }
  };
  launch();
  setTimeout(() => {
    if (joined < N) die(`only ${joined}/${N} sockets joined (${open} open) within ${cfg.connectTimeoutS}s`);
  }, cfg.connectTimeoutS * 1000).unref();
}

let tJoined = 0;
function onAllJoined() {
  tJoined = performance.now();
  log(`${N} sockets joined in ${(tJoined - tStart).toFixed(0)} ms`);
  const T = Math.max(1, cfg.window);
  let ready = 0;
  const oneReady = () => { if (++ready === T) setTimeout(startMeasuring, cfg.settleMs); };
  for (let j = 0; j < T; j++) {
    const i = N + j;
    let replies = 0;
    const hdr = Object.fromEntries(Object.entries(cfg.triggerHeaders || cfg.headers).map(([k, v]) => [k, fill(v, { i })]));
    triggers.push(connect(cfg.url, hdr, (ws) => {
      for (const f of cfg.triggerJoinFrames) ws.send(fill(f, { i }));
      if (cfg.triggerJoinReplies === 0) oneReady();
    }, () => { if (++replies === cfg.triggerJoinReplies) oneReady(); },
    (e) => die(`trigger socket ${j}: ${e.message}`)));
  }
}

function startMeasuring() {
  cnt.fill(0);
  measuring = true;
  const now = performance.now();
  lastProgress = now;
  if (cfg.warmup === 0) startCounting(now);
  log(`measuring: ${cfg.warmup} warm-up + up to ${cfg.broadcasts} broadcasts, window ${cfg.window}, ` +
      `max ${cfg.durationS}s`);
  const watchdog = setInterval(() => {
    if (performance.now() - lastProgress > cfg.drainTimeoutS * 1000) {
      clearInterval(watchdog);
      finish(`stalled: no broadcast completed for ${cfg.drainTimeoutS}s`);
    }
  }, 250);
  watchdog.unref();
  pump(now);
}

function finish(reason) {
  if (finished) return;
  finished = true;
  const now = performance.now();
  t1 = completed > cfg.warmup ? doneT[completed - 1] : now;
  const wallUs = (t1 - t0) * 1000;
  const lat = [];
  for (let k = cfg.warmup; k < completed; k++) lat.push(doneT[k] - sendT[k]);
  const measured = Math.max(0, completed - cfg.warmup);
  const missing = [];
  for (let k = completed; k < sent; k++) missing.push(N - deliv[k]);
  const res = {
    reason,
    url: cfg.url,
    client: cfg.client,
    clients: N,
    window: cfg.window,
    warmup: cfg.warmup,
    broadcasts_measured: measured,
    broadcasts_sent: sent,
    broadcasts_incomplete: sent - completed,
    frames_missing: missing.reduce((a, b) => a + b, 0),
    frames_counted: counted,
    seconds: r2((t1 - t0) / 1000),
    frames_per_s: wallUs > 0 ? Math.round(counted / (wallUs / 1e6)) : null,
    latency_ms: latencySummary(lat),
    ...cpuWindow.result(t1 - t0),
    frame_bytes: sampleFrames ? Math.round(sampleBytes / sampleFrames) : null,
    seq_errors_socket0: seqErrors,
    extra_frames: extra,
    connect_join_ms: Math.round(tJoined - tStart),
  };
  process.stdout.write(JSON.stringify(res) + '\n');
  for (const ws of socks) if (ws) ws.terminate();
  for (const ws of triggers) ws.terminate();
  setTimeout(() => process.exit(0), 50);
}

process.on('SIGTERM', () => die('terminated', 4));
openRoom();
