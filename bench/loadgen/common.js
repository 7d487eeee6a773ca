'use strict';
// What the load generators (fanout.js, roundtrip.js) share: ${var} templates, the lean raw
// WebSocket client, CPU accounting of the server, the generator and their two cores from
// /proc, and latency percentiles.
const fs = require('fs');
const net = require('net');
const crypto = require('crypto');

const log = (...a) => process.stderr.write(`loadgen: ${a.join(' ')}\n`);

// `${name}` from `extra`, else `base`; an array value gives socket `extra.i` its element
// i % length (e.g. one token per account, sockets taking them in turn).
function makeFill(base) {
  return (tpl, extra) => tpl.replace(/\$\{(\w+)\}/g, (m, k) => {
    let v = k in extra ? extra[k] : base[k];
    if (Array.isArray(v)) v = v[(extra.i || 0) % v.length];
    if (v === undefined) throw new Error(`template variable \${${k}} not set in: ${tpl}`);
    return String(v);
  });
}

const r2 = (x) => (x === null || x === undefined ? null : Math.round(x * 100) / 100);

function pct(sorted, q) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

// {p50, p90, p99, max, mean} in ms of unsorted latencies (sorted in place).
function latencySummary(lat) {
  lat.sort((a, b) => a - b);
  return {
    p50: r2(pct(lat, 0.5)), p90: r2(pct(lat, 0.9)), p99: r2(pct(lat, 0.99)),
    max: r2(lat.length ? lat[lat.length - 1] : null),
    mean: r2(lat.length ? lat.reduce((a, b) => a + b, 0) / lat.length : null),
  };
}

function procTicks(pid) { // [utime, stime] of pid (fields 14, 15 of /proc/<pid>/stat)
  if (!pid) return null;
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return [Number(f[11]), Number(f[12])];
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
function rssKiB(pid) {
  if (!pid) return null;
  try {
    const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : null;
  } catch (e) { return null; }
}

// PostgreSQL's processes now, pid -> {ticks: utime + stime, ours: serves database `name`}. Its
// processes are named `postgres` (comm); a backend's command line names its database
// ("postgres: user database host(port) state"); the others (WAL writer, checkpointer, ...)
// serve every database, so their share may be other people's work on a shared machine.
function postgresTicks(name) {
  const out = new Map();
  let pids;
  try { pids = fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d)); } catch (e) { return out; }
  for (const pid of pids) {
    try {
      if (fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim() !== 'postgres') continue;
      const words = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split(/[\s\0]+/);
      const t = procTicks(pid);
      if (t) out.set(pid, { ticks: t[0] + t[1], ours: words.includes(name) });
    } catch (e) { /* gone meanwhile */ }
  }
  return out;
}

// CPU over a measured interval: start() at its beginning, result(wallMs) at its end gives the
// server's and the generator's CPU in % of one core and what else kept their cores busy; with
// cfg.postgresDatabase, also PostgreSQL's (it shares the two cores with the server and the
// generator): its backends serving that database, and all of its processes.
class CpuWindow {
  constructor(cfg) { this.cfg = cfg; }
  start() {
    this.cpu0 = process.cpuUsage();
    this.ticks0 = procTicks(this.cfg.serverPid);
    this.busy0 = cpuBusy();
    this.pg0 = this.cfg.postgresDatabase ? postgresTicks(this.cfg.postgresDatabase) : null;
  }
  postgres(wallUs) {
    if (!this.pg0 || !(wallUs > 0)) return {};
    const pg1 = postgresTicks(this.cfg.postgresDatabase);
    let ours = 0, all = 0;
    for (const [pid, now] of pg1) { // a process started meanwhile counts from zero
      const spent = now.ticks - (this.pg0.has(pid) ? this.pg0.get(pid).ticks : 0);
      all += spent;
      if (now.ours || (this.pg0.has(pid) && this.pg0.get(pid).ours)) ours += spent;
    }
    const asPct = (ticks) => r2((100 * ticks / this.cfg.clkTck) / (wallUs / 1e6));
    return { postgres_backends_cpu_pct: asPct(ours), postgres_all_cpu_pct: asPct(all) };
  }
  result(wallMs) {
    const { cfg } = this;
    const wallUs = wallMs * 1000;
    const cpu = this.cpu0 ? process.cpuUsage(this.cpu0) : { user: 0, system: 0 };
    const ticks1 = procTicks(cfg.serverPid);
    const t0 = this.ticks0;
    const srvPct = (j) => (t0 && ticks1 && wallUs > 0 ? r2((100 * (ticks1[j] - t0[j]) / cfg.clkTck) / (wallUs / 1e6)) : null);
    const busy1 = cpuBusy();
    const b0 = this.busy0;
    const cpuPct = (c) => (b0 && busy1 && c in b0 && wallUs > 0 ? (100 * (busy1[c] - b0[c]) / cfg.clkTck) / (wallUs / 1e6) : null);
    const genCpu = wallUs > 0 ? (100 * (cpu.user + cpu.system)) / wallUs : null;
    const other = (c, own) => (cpuPct(c) === null || own === null ? null : r2(Math.max(0, cpuPct(c) - own)));
    const srv = srvPct(0) === null ? null : srvPct(0) + srvPct(1);
    return {
      generator_cpu_pct: r2(genCpu),
      generator_saturated: genCpu !== null && genCpu >= 90,
      generator_cpu_user_pct: r2(wallUs > 0 ? 100 * cpu.user / wallUs : null),
      generator_cpu_sys_pct: r2(wallUs > 0 ? 100 * cpu.system / wallUs : null),
      server_cpu_pct: r2(srv),
      server_cpu_user_pct: srvPct(0),
      server_cpu_sys_pct: srvPct(1),
      server_rss_kib: rssKiB(cfg.serverPid),
      // busy time on the two CPUs not due to the server / the generator (other processes, IRQs)
      other_cpu_pct_server_core: other(String(cfg.serverCpu), srv),
      other_cpu_pct_generator_core: other(String(cfg.generatorCpu), genCpu),
      ...this.postgres(wallUs),
    };
  }
}

// Lean client: HTTP upgrade by hand, then count messages by reading frame headers and skipping
// payloads. Payload bytes are only gathered for sockets that ask (socket 0's seq check) and for
// control frames (ping -> pong, close). Server frames are unmasked, no extensions are offered.
function rawConnect(url, headers, onOpen, onMessage, onFail, wantPayload, connectTimeoutS = 60) {
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
  const t = setTimeout(() => { if (!open) fail('handshake timeout'); }, connectTimeoutS * 1000);
  t.unref();
  return api;
}

module.exports = { log, makeFill, r2, pct, latencySummary, CpuWindow, rawConnect };
