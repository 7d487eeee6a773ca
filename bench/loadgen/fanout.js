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
const fs = require('fs');
const { performance } = require('perf_hooks');
const net = require('net');
const crypto = require('crypto');
const WebSocket = require('ws');

const cfg = Object.assign({
  url: 'ws://127.0.0.1:8765/ws',
  clients: 1000,
  headers: {},            // upgrade headers; values may use ${var}
  joinFrames: ['{"type":"bench-join"}'],
  joinReplies: 1,         // frames each room socket must receive before measuring (any type)
  triggerJoinFrames: [],
  triggerJoinReplies: 0,
  triggerFrame: '{"type":"bench-broadcast","data":{"seq":${seq},"text":"${pad}"}}',
  vars: {},               // extra ${var}s (e.g. token from the target's setup())
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
const fill = (tpl, extra) => tpl.replace(/\$\{(\w+)\}/g, (m, k) => {
  const v = k in extra ? extra[k] : baseVars[k];
  if (v === undefined) throw new Error(`template variable \${${k}} not set in: ${tpl}`);
  return String(v);
});
const log = (...a) => process.stderr.write(`loadgen: ${a.join(' ')}\n`);
const die = (msg, code = 2) => {
  if (finished) return;
  finished = true;
  process.stdout.write(JSON.stringify({ error: msg }) + '\n');
  process.exit(code);
};

// Hard stop whatever happens.
const hardLimitS = cfg.connectTimeoutS + cfg.durationS + cfg.drainTimeoutS + 30;
setTimeout(() => die(`hard time limit ${hardLimitS}s reached`, 3), hardLimitS * 1000).unref();

function serverTicks() {
  if (!cfg.serverPid) return null;
  try {
    const s = fs.readFileSync(`/proc/${cfg.serverPid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return [Number(f[11]), Number(f[12])]; // utime, stime (fields 14, 15)
  } catch (e) { return null; }
}
function cpuBusy() { // busy ticks per CPU from /proc/stat: user nice system irq softirq steal
  try {
    const out = {};
    for (const ln of fs.readFileSync('/proc/stat', 'utf8').split('\n')) {
      const m = /^cpu(\d+) (.*)/.exec(ln);
      if (!m) continue;
      const f = m[2].trim().split(/\s+/).map(Number);
      out[m[1]] = f[0] + f[1] + f[2] + f[5] + f[6] + f[7];
    }
    return out;
  } catch (e) { return null; }
}
function serverRssKiB() {
  if (!cfg.serverPid) return null;
  try {
    const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${cfg.serverPid}/status`, 'utf8'));
    return m ? Number(m[1]) : null;
  } catch (e) { return null; }
}

// ---- state ----------------------------------------------------------------------------------
const socks = new Array(N);
const cnt = new Int32Array(N);        // frames received per socket (join phase, then broadcasts)
const deliv = new Int32Array(TOTAL);  // deliveries per broadcast
const sendT = new Float64Array(TOTAL);
const doneT = new Float64Array(TOTAL);
let measuring = false, counting = false;
let joined = 0, sent = 0, completed = 0, counted = 0, extra = 0;
let seqErrors = 0, sampleBytes = 0, sampleFrames = 0;
let busy0 = null;
let t0 = 0, t1 = 0, deadline = Infinity, cpu0 = null, ticks0 = null, lastProgress = 0;
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
  cpu0 = process.cpuUsage();
  ticks0 = serverTicks();
  busy0 = cpuBusy();
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
  if (cfg.client === 'raw') return rawConnect(url, headers, onOpen, onFrame, onFail, wantPayload);
  const ws = new WebSocket(url, Object.assign({ headers }, wsOpts));
  ws.on('open', () => onOpen(ws));
  ws.on('message', onFrame);
  ws.on('error', (e) => onFail(e));
  ws.on('close', (code) => { if (!finished) onFail(new Error(`closed by server, code ${code}`)); });
  return ws;
}

// Lean client: HTTP upgrade by hand, then count messages by reading frame headers and skipping
// payloads. Payload bytes are only gathered for sockets that ask (socket 0's seq check) and for
// control frames (ping -> pong, close). Server frames are unmasked, no extensions are offered.
function rawConnect(url, headers, onOpen, onMessage, onFail, wantPayload) {
  const u = new URL(url);
  const sock = net.connect({ host: u.hostname, port: Number(u.port) || 80 });
  sock.setNoDelay(true);
  let open = false, closed = false, head = '', hdrBuf = null;
  let remaining = 0, op = 0, fin = 0, msgOp = 0, parts = null, msgParts = null;
  const api = {
    send(str) { sendFrame(0x1, Buffer.from(str)); },
    terminate() { closed = true; sock.destroy(); },
  };
  function sendFrame(opcode, payload) {
    const n = payload.length;
    const h = n < 126 ? 2 : n < 65536 ? 4 : 10;
    const f = Buffer.allocUnsafe(h + 4 + n);
    f[0] = 0x80 | opcode;
    if (h === 2) f[1] = 0x80 | n;
    else if (h === 4) { f[1] = 0x80 | 126; f.writeUInt16BE(n, 2); }
    else { f[1] = 0x80 | 127; f.writeBigUInt64BE(BigInt(n), 2); }
    const mask = crypto.randomBytes(4);
    mask.copy(f, h);
    for (let j = 0; j < n; j++) f[h + 4 + j] = payload[j] ^ mask[j & 3];
    sock.write(f);
  }
  function fail(msg) {
    if (closed) return;
    closed = true;
    sock.destroy();
    onFail(new Error(msg));
  }
  function endFrame() {
    if (op >= 8) {
      const body = parts.length === 1 ? parts[0] : Buffer.concat(parts);
      if (op === 9) sendFrame(0xA, body);
      else if (op === 8) fail(`closed by server, code ${body.length >= 2 ? body.readUInt16BE(0) : 1005}`);
      return;
    }
    if (msgParts && parts) for (const b of parts) msgParts.push(b);
    if (!fin) return;
    let data = null;
    if (msgParts) data = msgParts.length === 1 ? msgParts[0] : Buffer.concat(msgParts);
    msgParts = wantPayload ? [] : null;
    onMessage(data, msgOp);
  }
  function frames(chunk) {
    if (hdrBuf) { chunk = Buffer.concat([hdrBuf, chunk]); hdrBuf = null; }
    const len = chunk.length;
    let off = 0;
    while (off < len) {
      if (remaining > 0) {
        const take = Math.min(remaining, len - off);
        if (parts) parts.push(chunk.subarray(off, off + take));
        off += take;
        remaining -= take;
        if (remaining === 0) endFrame();
        continue;
      }
      const b0 = chunk[off];
      let plen = len - off >= 2 ? chunk[off + 1] & 0x7f : 0;
      const hl = plen === 126 ? 4 : plen === 127 ? 10 : 2;
      if (len - off < hl) { hdrBuf = Buffer.from(chunk.subarray(off)); return; }
      if (chunk[off + 1] & 0x80) return fail('masked frame from server');
      if (plen === 126) plen = chunk.readUInt16BE(off + 2);
      else if (plen === 127) plen = Number(chunk.readBigUInt64BE(off + 2));
      fin = b0 & 0x80;
      op = b0 & 0x0f;
      if (op === 1 || op === 2) msgOp = op;
      parts = (wantPayload || op >= 8) ? [] : null;
      off += hl;
      remaining = plen;
      if (remaining === 0) endFrame();
    }
  }
  sock.on('connect', () => {
    let req = `GET ${u.pathname}${u.search} HTTP/1.1\r\nHost: ${u.host}\r\nUpgrade: websocket\r\n` +
      `Connection: Upgrade\r\nSec-WebSocket-Key: ${crypto.randomBytes(16).toString('base64')}\r\n` +
      'Sec-WebSocket-Version: 13\r\n';
    for (const [k, v] of Object.entries(headers)) req += `${k}: ${v}\r\n`;
    sock.write(req + '\r\n');
  });
  sock.on('data', (chunk) => {
    if (open) return frames(chunk);
    head += chunk.toString('latin1');
    const end = head.indexOf('\r\n\r\n');
    if (end < 0) { if (head.length > 16384) fail('oversized handshake response'); return; }
    if (!/^HTTP\/1\.1 101/.test(head)) return fail(`upgrade refused: ${head.split('\r\n')[0]}`);
    open = true;
    msgParts = wantPayload ? [] : null;
    const rest = Buffer.from(head.slice(end + 4), 'latin1');
    head = '';
    onOpen(api);
    if (rest.length) frames(rest);
  });
  sock.on('error', (e) => fail(e.message));
  sock.on('close', () => fail('connection closed'));
  const t = setTimeout(() => { if (!open) fail('handshake timeout'); }, cfg.connectTimeoutS * 1000);
  t.unref();
  return api;
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
    const hdr = Object.fromEntries(Object.entries(cfg.headers).map(([k, v]) => [k, fill(v, { i })]));
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

function genCpuPct(cpu, wallUs) {
  return wallUs > 0 ? (100 * (cpu.user + cpu.system)) / wallUs : null;
}
function pct(sorted, q) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}
const r2 = (x) => (x === null ? null : Math.round(x * 100) / 100);

function finish(reason) {
  if (finished) return;
  finished = true;
  const now = performance.now();
  t1 = completed > cfg.warmup ? doneT[completed - 1] : now;
  const wallUs = (t1 - t0) * 1000;
  const cpu = cpu0 ? process.cpuUsage(cpu0) : { user: 0, system: 0 };
  const ticks1 = serverTicks();
  const srvPct = (j) => (ticks0 && ticks1 && wallUs > 0
    ? r2((100 * (ticks1[j] - ticks0[j]) / cfg.clkTck) / (wallUs / 1e6)) : null);
  const busy1 = cpuBusy();
  const cpuPct = (c) => (busy0 && busy1 && c in busy0 && wallUs > 0
    ? (100 * (busy1[c] - busy0[c]) / cfg.clkTck) / (wallUs / 1e6) : null);
  const genCpu = genCpuPct(cpu, wallUs);
  const other = (c, own) => (cpuPct(c) === null || own === null ? null : r2(Math.max(0, cpuPct(c) - own)));
  const lat = [];
  for (let k = cfg.warmup; k < completed; k++) lat.push(doneT[k] - sendT[k]);
  lat.sort((a, b) => a - b);
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
    broadcasts_incomplete: sent - completed,
    frames_missing: missing.reduce((a, b) => a + b, 0),
    frames_counted: counted,
    seconds: r2((t1 - t0) / 1000),
    frames_per_s: wallUs > 0 ? Math.round(counted / (wallUs / 1e6)) : null,
    latency_ms: {
      p50: r2(pct(lat, 0.5)), p90: r2(pct(lat, 0.9)), p99: r2(pct(lat, 0.99)),
      max: r2(lat.length ? lat[lat.length - 1] : null),
      mean: r2(lat.length ? lat.reduce((a, b) => a + b, 0) / lat.length : null),
    },
    generator_cpu_pct: r2(genCpu),
    generator_saturated: genCpu !== null && genCpu >= 90,
    generator_cpu_user_pct: r2(wallUs > 0 ? 100 * cpu.user / wallUs : null),
    generator_cpu_sys_pct: r2(wallUs > 0 ? 100 * cpu.system / wallUs : null),
    server_cpu_pct: srvPct(0) === null ? null : r2(srvPct(0) + srvPct(1)),
    server_cpu_user_pct: srvPct(0),
    server_cpu_sys_pct: srvPct(1),
    server_rss_kib: serverRssKiB(),
    // busy time on the two CPUs not due to the server / the generator (other processes, IRQs)
    other_cpu_pct_server_core: other(String(cfg.serverCpu), srvPct(0) === null ? null : srvPct(0) + srvPct(1)),
    other_cpu_pct_generator_core: other(String(cfg.generatorCpu), genCpu),
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
