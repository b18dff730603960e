// Shared infrastructure for the browser interop tests (test-publish.mjs,
// test-pubsub.mjs, test-aiortc-chromium.mjs, test-loss-nack.mjs,
// test-upstream-loss.mjs, test-firefox.mjs): the ringcast server on ephemeral
// ports, a static web server for the test pages, tokens, rooms, /metrics
// parsing, Chromium's flags and Firefox ESR's prefs, driving pubsub-page.html
// tabs and reading their stats, and a lossy UDP relay for one transport.
// Facts about Chromium and Firefox on these machines: shared/PEERS.md.

import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import dgram from 'node:dgram';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

export const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(HERE, '..', '..');
const require = createRequire(import.meta.url);

export const RINGCAST_BIN = path.resolve(HERE, process.env.RINGCAST_BIN || '../../target/debug/ringcast');
export const CHROMIUM_PATH = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
export const FIREFOX_PATH = process.env.FIREFOX_PATH || '/usr/bin/firefox-esr';

export const API_KEY = 'devkey';
export const API_SECRET = 'devsecret-for-local-testing-only';
/** A secret for a server that listens beyond loopback, which refuses the development one. */
export const OFF_LOOPBACK_API_SECRET = 'interop-tests-off-loopback-secret';
let tokenSecret = API_SECRET;
/** The secret `mintToken` signs with from now on (the server's `--api-secret`). */
export function signTokensWith(secret) {
  tokenSecret = secret;
}

export const SERVER_START_TIMEOUT_MS = 15_000;
export const SERVER_STOP_TIMEOUT_MS = 5_000;

export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
  '--allow-loopback-in-peer-connection',
];

/** Backends to test: $RINGCAST_MEDIA_BACKEND (comma-separated) or `dflt`. */
export function backendsFromEnv(dflt = 'io-uring,recvmmsg') {
  return (process.env.RINGCAST_MEDIA_BACKEND || dflt).split(',').map((s) => s.trim()).filter(Boolean);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** An HS256 JWT in Ringcast's claim layout, signed with node's crypto. */
export function mintToken(identity, grants, ttlSecs = 600) {
  const now = Math.floor(Date.now() / 1000);
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const header = b64({ alg: 'HS256', typ: 'JWT' });
  const claims = b64({
    iss: API_KEY, sub: identity, nbf: now, exp: now + ttlSecs,
    grants: { room: '', admin: false, publish: false, subscribe: false, ...grants },
  });
  const sig = crypto.createHmac('sha256', tokenSecret).update(`${header}.${claims}`).digest('base64url');
  return `${header}.${claims}.${sig}`;
}

/** Prometheus text format -> [{ name, labels, value }]. */
export function parseMetrics(text) {
  const out = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    if (m[2]) for (const l of m[2].matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

export function sumMetric(samples, name, where = {}) {
  return samples
    .filter((s) => s.name === name && Object.entries(where).every(([k, v]) => s.labels[k] === v))
    .reduce((a, s) => a + s.value, 0);
}

/** `reason=value` for every non-zero ringcast_drops_total sample. */
export function describeDrops(samples) {
  return samples.filter((s) => s.name === 'ringcast_drops_total' && s.value > 0)
    .map((s) => `${s.labels.reason}=${s.value}`);
}

export async function fetchMetrics(httpUrl) {
  const res = await fetch(`${httpUrl}/metrics`, { signal: AbortSignal.timeout(3000) });
  assert.equal(res.status, 200, `GET /metrics answered ${res.status}`);
  return parseMetrics(await res.text());
}

/** Counters of the media router (upstream repair, retransmits, PLIs, layers, gating). */
export const MEDIA_COUNTERS = [
  'ringcast_nacks_sent_total', 'ringcast_packets_nacked_upstream_total', 'ringcast_rtx_unwrapped_total',
  'ringcast_rtx_padding_total', 'ringcast_rtp_duplicates_total', 'ringcast_rtp_unknown_stream_total',
  'ringcast_nacks_received_total', 'ringcast_retransmits_total', 'ringcast_retransmits_refused_total',
  'ringcast_plis_sent_total', 'ringcast_layer_switches_total', 'ringcast_rtp_gated_total',
];

/** `name=value` for each of `names` (without ringcast_ and _total), from /metrics now; '' if unreachable. */
export async function mediaCountersLine(httpUrl, names = MEDIA_COUNTERS) {
  const m = await fetchMetrics(httpUrl).catch(() => []);
  return names.map((n) => `${n.replace(/^ringcast_|_total$/g, '')}=${sumMetric(m, n)}`).join(' ');
}

// ---------------------------------------------------------------------------
// The ringcast server

/**
 * Starts the binary on ephemeral ports with one shard. Options:
 *   backend    --media-backend
 *   logLevel   --log-level (a tracing filter)
 *   logTag     part of the log file name
 * The returned object has grpcUrl, httpUrl, logPath, output(), tail(n), stop().
 */
export async function startRingcast({ backend, logLevel = 'info', logTag = 'interop', grpcAddr = '127.0.0.1:0', extraArgs = [] }) {
  if (!fs.existsSync(RINGCAST_BIN)) {
    throw new Error(`ringcast binary not found at ${RINGCAST_BIN} (build it, or set RINGCAST_BIN)`);
  }
  const logPath = path.join(os.tmpdir(), `ringcast-${logTag}-${backend}-${process.pid}.log`);
  const logFile = fs.createWriteStream(logPath);
  const args = [
    '--grpc-addr', grpcAddr, '--http-addr', '127.0.0.1:0',
    '--udp-port-base', '0', '--shards', '1', '--drain-grace-secs', '0',
    '--media-backend', backend, '--log-level', logLevel, '--log-format', 'text', ...extraArgs,
  ];
  const env = { ...process.env, NO_COLOR: '1' };
  delete env.RUST_LOG; // --log-level decides
  const child = spawn(RINGCAST_BIN, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const killOnExit = () => { try { child.kill('SIGKILL'); } catch (_) { /* gone */ } };
  process.on('exit', killOnExit);

  let output = '';
  const exited = new Promise((resolve) => {
    child.on('exit', (code, signal) => { process.off('exit', killOnExit); resolve({ code, signal }); });
  });
  const onData = (d) => { output += d.toString(); logFile.write(d); };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);

  const server = {
    child, logPath, exited, args,
    output: () => output.replace(/\x1b\[[0-9;]*m/g, ''),
    tail: (n = 40) => server.output().trimEnd().split('\n').slice(-n).join('\n'),
    exitResult: null,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        let timer;
        const r = await Promise.race([exited, new Promise((res) => { timer = setTimeout(() => res(null), SERVER_STOP_TIMEOUT_MS); })]);
        clearTimeout(timer);
        if (r === null) {
          child.kill('SIGKILL');
          server.exitResult = { ...(await exited), hung: true };
        } else {
          server.exitResult = r;
        }
      } else if (!server.exitResult) {
        server.exitResult = await exited;
      }
      if (!logFile.writableEnded) await new Promise((r) => logFile.end(r));
      return server.exitResult;
    },
  };

  const deadline = Date.now() + SERVER_START_TIMEOUT_MS;
  for (;;) {
    const text = server.output();
    const m = text.match(/gRPC-Web on (http:\/\/[0-9.:]+), HTTP \(health, metrics\) on (http:\/\/[0-9.:]+)/);
    if (m) {
      server.grpcUrl = m[1];
      server.httpUrl = m[2];
      break;
    }
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`ringcast exited during start-up (${child.exitCode ?? child.signalCode}):\n${server.tail()}`);
    }
    if (Date.now() > deadline) {
      await server.stop();
      throw new Error(`ringcast did not print its addresses within ${SERVER_START_TIMEOUT_MS} ms:\n${server.tail()}`);
    }
    await sleep(50);
  }
  return server;
}

// ---------------------------------------------------------------------------
// The static web server for the pages

/**
 * Serves `pages` ({ '/': 'publish-page.html', ... }, files in this folder) plus
 * ringcast-client.js, ringcast.proto and protobufjs' dist/protobuf.min.js on
 * http://127.0.0.1:<ephemeral port>/ (a secure origin for getUserMedia).
 */
export function startWebServer(pages, host = '127.0.0.1') {
  const html = 'text/html; charset=utf-8';
  const js = 'text/javascript; charset=utf-8';
  const files = {
    ...Object.fromEntries(Object.entries(pages).map(([url, f]) => [url, [path.join(HERE, f), html]])),
    '/ringcast-client.js': [path.join(REPO, 'web', 'ringcast-client.js'), js],
    '/session.js': [path.join(REPO, 'web', 'session.js'), js],
    '/ringcast.proto': [path.join(REPO, 'proto', 'proto', 'ringcast', 'v1', 'ringcast.proto'), 'text/plain; charset=utf-8'],
    '/protobuf.min.js': [path.join(path.dirname(require.resolve('protobufjs/package.json')), 'dist', 'protobuf.min.js'), js],
  };
  for (const [f] of Object.values(files)) {
    if (!fs.existsSync(f)) throw new Error(`missing file to serve: ${f}`);
  }
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    const entry = files[url.pathname];
    if (!entry) {
      res.writeHead(url.pathname === '/favicon.ico' ? 204 : 404);
      res.end();
      return;
    }
    res.writeHead(200, { 'content-type': entry[1], 'cache-control': 'no-store' });
    res.end(fs.readFileSync(entry[0]));
  });
  return new Promise((resolve, reject) => {
    server.on('error', reject);
    server.listen(0, host, () => {
      resolve({
        port: server.address().port,
        url: `http://127.0.0.1:${server.address().port}/`,
        close: () => new Promise((r) => { server.closeAllConnections?.(); server.close(() => r()); }),
      });
    });
  });
}

// ---------------------------------------------------------------------------
// Chromium

/**
 * Launches Chromium with a fresh profile (playwright's persistent context).
 * Returns { name: 'chromium', context, newPage(), close() }; newPage() hands
 * out the initial tab first; close() also removes the profile.
 */
export async function launchChromium({ extraArgs = [], executablePath = CHROMIUM_PATH } = {}) {
  const { chromium } = await import('playwright-core');
  const profileDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ringcast-chromium-'));
  let context;
  try {
    context = await withTimeout(chromium.launchPersistentContext(profileDir, {
      executablePath, headless: true, args: [...CHROMIUM_ARGS, ...extraArgs], timeout: 30_000,
    }), 35_000, 'launching chromium');
  } catch (e) {
    fs.rmSync(profileDir, { recursive: true, force: true });
    throw e;
  }
  let closed = false;
  let initialTaken = false;
  return {
    name: 'chromium',
    context,
    async newPage() {
      const initial = !initialTaken && context.pages()[0];
      initialTaken = true;
      return initial || context.newPage();
    },
    async close() {
      if (closed) return;
      closed = true;
      await withTimeout(context.close(), 15_000, 'closing chromium').catch(() => {});
      fs.rmSync(profileDir, { recursive: true, force: true });
    },
  };
}

/** Tabs opened by a test are all "background" but one: keep their timers and media running. */
export const BACKGROUND_TAB_ARGS = [
  '--disable-background-timer-throttling', '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows', '--autoplay-policy=no-user-gesture-required',
];

// ---------------------------------------------------------------------------
// Firefox ESR

/**
 * Firefox's prefs for WebRTC on loopback with fake devices (shared/PEERS.md):
 * without media.navigator.permission.fake it offers only default-route
 * candidates (none on loopback).
 */
export const FIREFOX_PREFS = {
  'media.navigator.streams.fake': true,
  'media.navigator.permission.disabled': true,
  'media.navigator.permission.fake': true,
  'media.peerconnection.ice.loopback': true,
  'media.peerconnection.ice.obfuscate_host_addresses': false,
};

/**
 * Launches Debian's Firefox ESR headless, driven by puppeteer-core over WebDriver
 * BiDi, with a fresh profile (a temporary one puppeteer fills with FIREFOX_PREFS
 * plus `prefs`, and removes on close). Returns { name: 'firefox', browser,
 * newPage(), close() }, like launchChromium.
 */
export async function launchFirefox({ prefs = {} } = {}) {
  const { default: puppeteer } = await import('puppeteer-core');
  const browser = await withTimeout(puppeteer.launch({
    browser: 'firefox', executablePath: FIREFOX_PATH, headless: true, timeout: 30_000,
    extraPrefsFirefox: { ...FIREFOX_PREFS, ...prefs },
  }), 35_000, 'launching firefox');
  let closed = false;
  return {
    name: 'firefox',
    browser,
    newPage: () => browser.newPage(),
    async close() {
      if (closed) return;
      closed = true;
      await withTimeout(browser.close(), 15_000, 'closing firefox').catch(() => {
        try { browser.process()?.kill('SIGKILL'); } catch (_) { /* gone */ }
      });
    },
  };
}

// ---------------------------------------------------------------------------
// Rooms, over gRPC-Web from node

// CreateRoomRequest { name = 1; max_participants = 2 } by hand, so that the
// driver needs no protobuf schema (the pages use protobuf.js).
function encodeCreateRoom(name, maxParticipants) {
  const n = Buffer.from(name);
  assert.ok(n.length < 128 && maxParticipants < 128);
  return Buffer.concat([Buffer.from([0x0a, n.length]), n, Buffer.from([0x10, maxParticipants])]);
}

function grpcWebFrame(payload) {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(payload.length, 1);
  return Buffer.concat([head, payload]);
}

/** RoomService.CreateRoom over gRPC-Web, with an admin token minted here; fails the test on an error. */
export async function createRoom(grpcUrl, name, maxParticipants) {
  const admin = mintToken('interop-backend', { admin: true });
  const res = await fetch(`${grpcUrl}/ringcast.v1.RoomService/CreateRoom`, {
    method: 'POST', body: grpcWebFrame(encodeCreateRoom(name, maxParticipants)),
    headers: { 'content-type': 'application/grpc-web+proto', 'x-grpc-web': '1', authorization: `Bearer ${admin}` },
    signal: AbortSignal.timeout(5000),
  });
  const body = Buffer.from(await res.arrayBuffer()).toString('latin1');
  const status = res.headers.get('grpc-status') ?? body.match(/grpc-status:\s*(\d+)/)?.[1];
  assert.ok(res.status === 200 && status === '0', `CreateRoom over gRPC-Web: HTTP ${res.status}, ` +
    `grpc-status ${status} ${res.headers.get('grpc-message') ?? body.match(/grpc-message:\s*(.*)/)?.[1] ?? ''}`);
}

// ---------------------------------------------------------------------------
// pubsub-page.html: one participant per tab

export const PAGE_LOAD_TIMEOUT_MS = 15_000;

export const fmt = (x, d = 1) => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(d) : String(x));

/** In one page's pubsubStats(): the inbound-rtp entries that carry `publisher`'s track of `kind`. */
export function inboundFrom(stats, publisher, kind) {
  return (stats?.inbound || []).filter((s) => s.publisher === publisher && s.kind === kind);
}

/**
 * For each of `subscribers` (pages, as startPubsubPages returns them, indexed like
 * `first`/`last` by their place in `pages`) and each kind: the inbound-rtp entry from
 * `publisher` at the start (`a`) and end (`b`) of a window, with a `key` naming it. An entry
 * that disappeared is a problem pushed to `problems`, and is skipped.
 */
export function inboundWindows({ pages, subscribers, first, last, publisher, problems }) {
  const out = [];
  for (const p of subscribers) {
    const i = pages.indexOf(p);
    for (const kind of ['video', 'audio']) {
      const [a] = inboundFrom(first[i], publisher, kind);
      const [b] = inboundFrom(last[i], publisher, kind);
      if (!a || !b) {
        problems.push(`${p.identity} ${kind}: the inbound-rtp entry disappeared`);
        continue;
      }
      out.push({ p, kind, a, b, key: `${p.identity} <- ${publisher} ${kind}` });
    }
  }
  return out;
}

/** One inbound-rtp entry of pubsubStats(), on one line. */
export function describeInbound(s) {
  const jb = s.jitterBufferEmittedCount ? s.jitterBufferDelay / s.jitterBufferEmittedCount : NaN;
  const common = `mid=${s.mid} ${s.codec} ssrc=${s.ssrc} pkts=${s.packetsReceived} lost=${s.packetsLost} ` +
    `jitter=${fmt(s.jitter * 1000)}ms jb=${fmt(jb * 1000)}ms nack=${s.nackCount}` +
    `${s.rtxSsrc ? ` rtx=${s.rtxSsrc} retransmitted=${s.retransmittedPacketsReceived}` : ''}`;
  if (s.kind === 'video') {
    return `${common} decoded=${s.framesDecoded} (key ${s.keyFramesDecoded}) dropped=${s.framesDropped} ` +
      `${s.frameWidth}x${s.frameHeight} @${fmt(s.framesPerSecond, 0)}fps pli=${s.pliCount} ` +
      `freezes=${s.freezeCount} ${s.decoderImplementation || ''}`;
  }
  return `${common} samples=${s.totalSamplesReceived} concealed=${s.concealedSamples}`;
}

/**
 * Opens pubsub-page.html at `url` (plus `query`, e.g. '?relayPort=40001') in a
 * new tab of `browser` (launchChromium or launchFirefox: playwright and
 * puppeteer pages share evaluate, goto, and the console and pageerror events)
 * for participant `identity`. Returns { identity, browser: its name, page,
 * console } where console collects the page's console lines and errors.
 */
export async function openPubsubPage(browser, url, identity, query = '') {
  const page = await browser.newPage();
  const p = { identity, browser: browser.name, page, console: [] };
  page.on('console', (m) => p.console.push(`console.${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => p.console.push(`pageerror: ${e.message}`));
  await page.goto(`${url}${query}`, { timeout: PAGE_LOAD_TIMEOUT_MS });
  // Polled with evaluate: waitForFunction takes its arguments in a different order in each library.
  const deadline = Date.now() + PAGE_LOAD_TIMEOUT_MS;
  while (!(await page.evaluate(() => window.ringcastReady === true))) {
    if (Date.now() > deadline) {
      throw new Error(`${identity}: pubsub-page.html not ready after ${PAGE_LOAD_TIMEOUT_MS} ms\n  ${p.console.join('\n  ')}`);
    }
    await sleep(50);
  }
  return p;
}

/**
 * window.pubsubStart in each of `pages` at once; `configFor(p)` gives the rest
 * of each page's settings (token, publish, video...). On any failure, fails
 * with every message plus `diagnostics()`. Returns the pages' results, in order.
 */
export async function startPubsubPages(pages, grpcUrl, configFor, { gatherTimeoutMs, connectTimeoutMs, diagnostics }) {
  const results = await Promise.allSettled(pages.map((p) => withTimeout(p.page.evaluate((c) => window.pubsubStart(c), {
    grpcUrl, identity: p.identity, connectTimeoutMs, gatherTimeoutMs, ...configFor(p),
  }), gatherTimeoutMs + connectTimeoutMs + 15_000, `${p.identity}: join + publish`)));
  const failed = results.map((r, i) => (r.status === 'rejected' ? `${pages[i].identity}: ${r.reason.message}` : null))
    .filter(Boolean);
  if (failed.length) assert.fail(`joining/publishing failed:\n${failed.join('\n')}\n${await diagnostics()}`);
  return results.map((r) => r.value);
}

/** window.pubsubStats() of every page (each bounded to 5 s). */
export function pubsubSnapshot(pages) {
  return Promise.all(pages.map((p) =>
    withTimeout(p.page.evaluate(() => window.pubsubStats()), 5000, `${p.identity}: getStats`)));
}

/**
 * Everything a failure message needs: per page its steps, states, stats,
 * console, (with sdps) the latest subscriber offer and answer and (with
 * publisherSdps) the publish offer and answer; then the relevant /metrics
 * samples and the server log tail.
 */
export async function pubsubDiagnostics(pages, server, { sdps = true, publisherSdps = false } = {}) {
  let out = '';
  for (const p of pages) {
    const who = p.browser === 'firefox' ? 'Firefox' : 'Chromium';
    const st = await withTimeout(p.page.evaluate(() => window.pubsubState()), 5000, 'state')
      .catch((e) => ({ error: e.message }));
    const stats = await withTimeout(p.page.evaluate(() => window.pubsubStats()), 5000, 'stats')
      .catch((e) => ({ error: e.message }));
    out += `\n===== ${p.identity} (${who})\nsteps:\n  ${(st.log || []).join('\n  ')}\n`;
    const { log, ...rest } = st;
    out += `state: ${JSON.stringify(rest)}\nstats: ${JSON.stringify(stats)}\n`;
    if (p.console.length) out += `console:\n  ${p.console.slice(-20).join('\n  ')}\n`;
    if (publisherSdps) {
      const x = await withTimeout(p.page.evaluate(() => window.pubsubPublisherSdps()), 5000, 'publisher sdps')
        .catch(() => ({}));
      if (x.offer) out += `publish offer (${who}):\n${x.offer}\npublish answer (Ringcast):\n${x.answer}\n`;
    }
    if (sdps) {
      const s = await withTimeout(p.page.evaluate(() => window.pubsubSdps(1)), 5000, 'sdps').catch(() => []);
      for (const x of s) {
        out += `subscriber offer v${x.version} (Ringcast):\n${x.offer}\nanswer (${who}):\n${x.answer}\n` +
          `${x.error ? `error: ${x.error}\n` : ''}`;
      }
    }
  }
  const metrics = await fetchMetrics(server.httpUrl).catch(() => []);
  const relevant = metrics.filter((s) => s.value > 0 &&
    /forwarded|srtp|drops|transports|dtls_handshakes|packets_(in|out)|nacks|retransmits|plis/.test(s.name))
    .map((s) => `${s.name}${Object.keys(s.labels).length ? JSON.stringify(s.labels) : ''}=${s.value}`);
  return `${out}\nmetrics: ${relevant.join(' ')}\nserver log tail (${server.logPath}):\n${server.tail(80)}`;
}

/**
 * Writes every page's SDPs (the publish offer and answer, every subscriber
 * offer and answer), its pubsubState() and its entry of `stats` (a
 * pubsubSnapshot) into `dir` as <identity>-*.sdp/.json. Returns `dir`.
 */
export async function dumpPubsubPages(pages, stats, dir) {
  fs.mkdirSync(dir, { recursive: true });
  for (const [i, p] of pages.entries()) {
    const sdps = await p.page.evaluate(() => window.pubsubSdps(1000));
    const st = await p.page.evaluate(() => window.pubsubState());
    for (const x of sdps) {
      fs.writeFileSync(path.join(dir, `${p.identity}-v${x.version}-offer.sdp`), x.offer || '');
      fs.writeFileSync(path.join(dir, `${p.identity}-v${x.version}-answer.sdp`), x.answer || '');
    }
    const pub = await p.page.evaluate(() => window.pubsubPublisherSdps());
    fs.writeFileSync(path.join(dir, `${p.identity}-publish-offer.sdp`), pub.offer || '');
    fs.writeFileSync(path.join(dir, `${p.identity}-publish-answer.sdp`), pub.answer || '');
    fs.writeFileSync(path.join(dir, `${p.identity}-state.json`), JSON.stringify(st, null, 1));
    fs.writeFileSync(path.join(dir, `${p.identity}-stats.json`), JSON.stringify(stats[i], null, 1));
  }
  return dir;
}

/**
 * Polls pubsubSnapshot(pages) every 250 ms until, for every expectation
 * { page, publisher, kind } (page: an element of `pages`), the page's
 * subscriber pc has an inbound-rtp of that publisher's track with a decoded
 * frame (video) or a packet (audio). Fails after `timeoutMs` with what is
 * missing plus `diagnostics()`. Returns { stats, firstSeen, ms }: the last
 * snapshot, and per expectation ('<page> <- <publisher> <kind>') the ms after
 * the call when it was first met.
 */
export async function waitForMedia(pages, expectations, { timeoutMs, diagnostics }) {
  const firstSeen = new Map();
  const began = Date.now();
  for (;;) {
    const elapsed = Date.now() - began;
    const stats = await pubsubSnapshot(pages);
    const missing = [];
    for (const { page, publisher, kind } of expectations) {
      const list = inboundFrom(stats[pages.indexOf(page)], publisher, kind);
      const key = `${page.identity} <- ${publisher} ${kind}`;
      const ok = kind === 'video' ? list.some((s) => s.framesDecoded > 0) : list.some((s) => s.packetsReceived > 0);
      if (ok) {
        if (!firstSeen.has(key)) firstSeen.set(key, elapsed);
      } else {
        missing.push(`${key}: ${kind === 'video' ? 'no decoded frame' : 'no packet'} ` +
          `(${list.length ? list.map(describeInbound).join('; ') : 'no inbound-rtp'})`);
      }
    }
    if (!missing.length) return { stats, firstSeen, ms: elapsed };
    if (elapsed > timeoutMs) {
      assert.fail(`after ${timeoutMs} ms, media is missing:\n  ${missing.join('\n  ')}\n${await diagnostics()}`);
    }
    await sleep(250);
  }
}

/**
 * Problems of one stream between two snapshots `a` and `b` of its inbound-rtp:
 * not growing (video framesDecoded, audio packetsReceived), packetsLost above
 * max(maxLostAbsolute, maxLostFraction * packetsReceived) (skipped when
 * maxLostFraction is null), mean jitter-buffer delay at or above maxJitterBufferS.
 */
export function streamProblems(key, a, b, { maxLostFraction = 0.05, maxLostAbsolute = 10, maxJitterBufferS = 1.0 } = {}) {
  const problems = [];
  const grew = b.kind === 'video' ? b.framesDecoded - a.framesDecoded : b.packetsReceived - a.packetsReceived;
  if (!(grew > 0)) problems.push(`${key}: not growing (${describeInbound(a)} -> ${describeInbound(b)})`);
  if (maxLostFraction !== null) {
    const lostMax = Math.max(maxLostAbsolute, maxLostFraction * b.packetsReceived);
    if (b.packetsLost > lostMax) {
      problems.push(`${key}: packetsLost ${b.packetsLost} of ${b.packetsReceived} (max ${fmt(lostMax, 0)})`);
    }
  }
  if (b.jitterBufferEmittedCount > 0) {
    const jb = b.jitterBufferDelay / b.jitterBufferEmittedCount;
    if (!(jb < maxJitterBufferS)) problems.push(`${key}: mean jitter-buffer delay ${fmt(jb * 1000)} ms`);
  } else if (b.kind === 'video' || b.packetsReceived > 50) {
    problems.push(`${key}: jitterBufferEmittedCount is 0`);
  }
  return problems;
}

/** Stops the server, which must exit 0 on SIGTERM in time; notes its last warnings/errors. */
export async function stopServerChecked(server, note) {
  const exit = await server.stop();
  assert.ok(!exit.hung, `ringcast did not exit within ${SERVER_STOP_TIMEOUT_MS} ms of SIGTERM`);
  assert.equal(exit.code, 0, `ringcast exited with ${JSON.stringify(exit)} after SIGTERM:\n${server.tail()}`);
  const warnings = server.output().split('\n').filter((l) => /\b(WARN|ERROR)\b/.test(l));
  if (warnings.length) note(`server warnings/errors:\n${warnings.slice(-20).join('\n')}`);
}

/**
 * The end of a passing case: every page leaves, the browser (or each of an
 * array of browsers) closes, the server stops (stopServerChecked).
 */
export async function leaveAndStop(pages, browser, server, note) {
  for (const p of pages) await withTimeout(p.page.evaluate(() => window.pubsubLeave()), 10_000, `${p.identity}: leave`);
  for (const b of [browser].flat()) await b.close();
  await stopServerChecked(server, note);
}

/**
 * A case's `finally`: closes whatever it opened (each may be undefined;
 * `browser` may be an array) and removes the server log if the case passed
 * (unless $RINGCAST_TEST_KEEP_LOGS).
 */
export async function closeCase({ browser, web, server, passed }) {
  for (const b of [browser].flat()) if (b) await b.close();
  if (web) await web.close();
  if (server) {
    await server.stop();
    if (passed && !process.env.RINGCAST_TEST_KEEP_LOGS) fs.rmSync(server.logPath, { force: true });
  }
}

/**
 * The server's view after media flowed: notes the forwarding counters and
 * asserts ringcast_rtp_forwarded_total > 0, no SRTP authentication failure
 * and (unless `backend` is auto) the datapath backend gauge. Returns the samples.
 */
export async function checkForwardingMetrics(server, backend, note, diagnostics) {
  const samples = await fetchMetrics(server.httpUrl);
  const forwarded = sumMetric(samples, 'ringcast_rtp_forwarded_total');
  const drops = describeDrops(samples);
  note(`metrics: ${forwarded} RTP packets forwarded, ` +
    `${sumMetric(samples, 'ringcast_srtp_packets_in_total', { kind: 'rtp' })} RTP + ` +
    `${sumMetric(samples, 'ringcast_srtp_packets_in_total', { kind: 'rtcp' })} RTCP decrypted, ` +
    `${sumMetric(samples, 'ringcast_transports_connected_total')} transports connected, ` +
    `${sumMetric(samples, 'ringcast_nacks_received_total')} NACKs received, ` +
    `${sumMetric(samples, 'ringcast_retransmits_total')} retransmits (${sumMetric(samples, 'ringcast_retransmits_refused_total')} refused), ` +
    `${sumMetric(samples, 'ringcast_plis_sent_total')} PLIs sent; drops: ${drops.join(', ') || 'none'}`);
  assert.ok(forwarded > 0, `ringcast_rtp_forwarded_total is ${forwarded}\n${await diagnostics()}`);
  assert.equal(sumMetric(samples, 'ringcast_drops_total', { reason: 'srtp_auth_failed' }), 0,
    `SRTP authentication failures: ${drops.join(', ')}\n${await diagnostics()}`);
  if (backend !== 'auto') {
    const backends = samples.filter((s) => s.name === 'ringcast_datapath_backend' && s.value > 0).map((s) => s.labels.backend);
    assert.deepEqual(backends, [backend.replace('-', '_')], `datapath backend metric: ${JSON.stringify(backends)}`);
  }
  return samples;
}

// ---------------------------------------------------------------------------
// A lossy UDP relay in front of one transport (test-loss-nack.mjs, test-upstream-loss.mjs)

/** mulberry32: a small PRNG in [0, 1) whose sequence depends only on `seed`. */
export function seededRandom(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** address:port of every a=candidate line of `sdp` (a relay's target is the server's). */
export function candidates(sdp) {
  return (sdp || '').split(/\r?\n/).filter((l) => l.startsWith('a=candidate:'))
    .map((l) => l.split(' ')).map((f) => ({ address: f[4], port: Number(f[5]) }));
}

/** RFC 7983 demultiplexing by the first byte, plus RTP vs RTCP by the second (RFC 5761). */
export function classifyDatagram(msg) {
  if (msg.length < 2) return 'other';
  const b0 = msg[0];
  if (b0 <= 3) return 'stun';
  if (b0 >= 20 && b0 <= 63) return 'dtls';
  if (b0 >= 128 && b0 <= 191) return msg[1] >= 192 && msg[1] <= 223 ? 'rtcp' : 'rtp';
  return 'other';
}

/**
 * A UDP relay on 127.0.0.1:<ephemeral port> in front of Ringcast's media port
 * (`relay.target = { address, port }`, to be set before the first client
 * datagram). A page opened with ?relayPort=<relay.port> sends its subscriber
 * transport here, one opened with ?pubRelayPort=<relay.port> its publisher
 * transport.
 *   - every datagram is forwarded, client -> server from one upstream socket per
 *     client address, so Ringcast sees one stable address per client candidate;
 *   - but in the lossy `direction` ('toClient', the default, or 'toServer'),
 *     SRTP is dropped with probability `lossRate`, drawn from a PRNG seeded
 *     with `seed` (the same seed drops the same positions in the packet
 *     sequence); STUN, DTLS and SRTCP always pass;
 *   - with `rateBps`, everything in that direction also crosses a bottleneck: a
 *     drop-tail queue of `queueBytes` drained at `rateBps` (relay.setRate(bps)
 *     changes it, null lifts it).
 * relay.stats counts datagrams per direction and kind ({ toServer: { stun: n,
 * ... }, toClient: {...}, dropped: {...} }). relay.streams maps every SSRC sent
 * in the lossy direction (RTP headers are not encrypted) to { pt, forwarded,
 * dropped, redelivered }: redelivered counts dropped sequence numbers that came
 * through later on the same SSRC (plain retransmissions; RTX ones arrive on
 * their own SSRC, whose `forwarded` counts them).
 * relay.reactions (ms, one per drop) time the receiver's reaction to a drop:
 * from the first packet of the same SSRC after it (when the receiver can see
 * the gap) to the next SRTCP datagram of at most `feedbackMaxBytes` in the
 * other direction. SRTCP is encrypted, but a lone NACK or PLI is small (a
 * one-item NACK is 36 bytes with AES-GCM) while a receiver report with REMB is
 * not (Ringcast sends NACKs alone: this fits its feedback to a publisher).
 * relay.rtcpSizes counts those datagrams by size. relay.describe() summarises both.
 * Resolves once bound; relay.close() closes every socket.
 */
export function startLossyRelay({
  lossRate = 0.05, seed = 1, direction = 'toClient', feedbackMaxBytes = 64, rateBps = null, queueBytes = 60_000,
} = {}) {
  assert.ok(direction === 'toClient' || direction === 'toServer', `relay direction ${direction}`);
  const random = seededRandom(seed);
  const relay = {
    port: null, target: null, lossRate, seed, direction, clients: new Map(), streams: new Map(),
    stats: { toServer: {}, toClient: {}, dropped: {}, queueDropped: 0, noTarget: 0, errors: [] },
    reactions: [], rtcpSizes: {}, rateBps, queueBytes,
  };
  // The bottleneck (`rateBps`, null: none) in the lossy direction: a drop-tail queue of at
  // most `queueBytes` drained at the rate, as a rate-limited link would (tc tbf).
  const queue = [];
  let queued = 0;
  let nextFree = 0;
  let draining = null;
  const drain = () => {
    draining = null;
    const now = performance.now();
    while (queue.length && (relay.rateBps === null || nextFree <= now + 1)) {
      const { send, len } = queue.shift();
      queued -= len;
      if (relay.rateBps !== null) nextFree = Math.max(nextFree, now) + (len * 8 * 1000) / relay.rateBps;
      send();
    }
    if (queue.length) draining = setTimeout(drain, Math.max(1, nextFree - now));
  };
  const limited = (len, send) => {
    if (relay.rateBps === null && !queue.length) return send();
    if (queued + len > relay.queueBytes) { relay.stats.queueDropped += 1; return undefined; }
    queue.push({ send, len });
    queued += len;
    if (!draining) drain();
    return undefined;
  };
  /** Changes the bottleneck's rate (bits/s; null lifts it: the queue drains at once). */
  relay.setRate = (bps) => { relay.rateBps = bps; if (draining) { clearTimeout(draining); } drain(); };
  const gapsSeen = []; // performance.now() of each packet that followed a drop, awaiting a reaction
  // An RTCP datagram against the lossy direction: if feedback-sized, every gap seen so far got its reaction.
  const react = (kind, len) => {
    if (kind !== 'rtcp') return;
    relay.rtcpSizes[len] = (relay.rtcpSizes[len] || 0) + 1;
    if (len > feedbackMaxBytes || !gapsSeen.length) return;
    const now = performance.now();
    for (const t of gapsSeen) relay.reactions.push(now - t);
    gapsSeen.length = 0;
  };
  const count = (bucket, kind) => { bucket[kind] = (bucket[kind] || 0) + 1; };
  // Counts `msg` (of `kind`) in relay.streams; false if it is to be dropped.
  const pass = (msg, kind) => {
    if (kind !== 'rtp' || msg.length < 12) return true;
    const ssrc = msg.readUInt32BE(8);
    const seq = msg.readUInt16BE(2);
    let st = relay.streams.get(ssrc);
    if (!st) {
      relay.streams.set(ssrc, st = { pt: msg[1] & 0x7f, forwarded: 0, dropped: 0, redelivered: 0, droppedSeqs: new Set(), gap: 0 });
    }
    if (random() < lossRate) {
      count(relay.stats.dropped, kind);
      st.dropped += 1;
      st.droppedSeqs.add(seq);
      st.gap += 1;
      return false;
    }
    const now = performance.now();
    for (; st.gap > 0; st.gap -= 1) gapsSeen.push(now);
    st.forwarded += 1;
    if (st.droppedSeqs.delete(seq)) st.redelivered += 1;
    return true;
  };
  const front = dgram.createSocket('udp4');
  const noteError = (e) => { if (relay.stats.errors.length < 20) relay.stats.errors.push(e.message); };
  front.on('error', noteError);
  front.on('message', (msg, rinfo) => {
    if (!relay.target) { relay.stats.noTarget += 1; return; }
    const key = `${rinfo.address}:${rinfo.port}`;
    let up = relay.clients.get(key);
    if (!up) {
      up = dgram.createSocket('udp4');
      up.on('error', noteError);
      up.on('message', (back) => {
        const kind = classifyDatagram(back);
        if (direction === 'toClient' && !pass(back, kind)) return;
        if (direction === 'toServer') react(kind, back.length);
        const send = () => { count(relay.stats.toClient, kind); front.send(back, rinfo.port, rinfo.address); };
        if (direction === 'toClient') limited(back.length, send); else send();
      });
      up.bind(0, '127.0.0.1');
      relay.clients.set(key, up);
    }
    const kind = classifyDatagram(msg);
    if (direction === 'toServer' && !pass(msg, kind)) return;
    if (direction === 'toClient') react(kind, msg.length);
    const send = () => { count(relay.stats.toServer, kind); up.send(msg, relay.target.port, relay.target.address); };
    if (direction === 'toServer') limited(msg.length, send); else send();
  });
  relay.close = () => {
    if (draining) clearTimeout(draining);
    for (const s of [front, ...relay.clients.values()]) {
      try { s.close(); } catch (_) { /* already closed */ }
    }
  };
  relay.describeReactions = () => {
    const r = [...relay.reactions].sort((a, b) => a - b);
    const sizes = `SRTCP ${direction === 'toServer' ? 'to the client' : 'to the server'} by size (bytes: count) ` +
      `${Object.entries(relay.rtcpSizes).map(([k, v]) => `${k}:${v}`).join(' ')}`;
    if (!r.length) return `no reaction to a drop timed; ${sizes}`;
    const q = (f) => r[Math.min(r.length - 1, Math.floor(f * r.length))].toFixed(1);
    return `first SRTCP of at most ${feedbackMaxBytes} bytes (NACK/PLI) ${direction === 'toServer' ? 'to the client' : 'to the server'} ` +
      `after a gap could be seen (${r.length} drops): median ${q(0.5)} ms, p90 ${q(0.9)} ms, max ${r.at(-1).toFixed(1)} ms; ${sizes}`;
  };
  relay.describe = () => `relay 127.0.0.1:${relay.port} -> ${relay.target ? `${relay.target.address}:${relay.target.port}` : '(no target)'}, ` +
    `${relay.clients.size} client address(es), loss ${lossRate} ${direction} seed ${seed}` +
    `${relay.rateBps !== null || relay.stats.queueDropped ? `, bottleneck ${relay.rateBps === null ? 'lifted' : `${relay.rateBps} bit/s`} ` +
      `(${relay.queueBytes} B queue, ${relay.stats.queueDropped} dropped at the tail)` : ''}: to server ${JSON.stringify(relay.stats.toServer)}, ` +
    `to client ${JSON.stringify(relay.stats.toClient)}, dropped ${JSON.stringify(relay.stats.dropped)}; RTP by SSRC: ` +
    `${[...relay.streams].map(([ssrc, x]) => `${ssrc} (pt ${x.pt}) forwarded ${x.forwarded} dropped ${x.dropped} redelivered ${x.redelivered}`).join(', ')}` +
    `; ${relay.describeReactions()}` +
    `${relay.stats.noTarget ? `, ${relay.stats.noTarget} before a target was set` : ''}` +
    `${relay.stats.errors.length ? `, errors: ${relay.stats.errors.join('; ')}` : ''}`;
  return new Promise((resolve, reject) => {
    front.once('error', reject);
    front.bind(0, '127.0.0.1', () => {
      front.off('error', reject);
      relay.port = front.address().port;
      resolve(relay);
    });
  });
}

/**
 * A network namespace joined to this one by a veth pair, whose downlink (this side's egress)
 * a tc tbf qdisc limits to `rateBps` with a `queueBytes` queue: what a client in it receives
 * goes through a real kernel rate limit. Returns null where namespaces cannot be made (not
 * root, no iproute2), with the reason in `startShapedNetns.why`.
 *   link.hostIp / link.nsIp    this side's and the namespace's address (10.201.N.1 / .2)
 *   link.chromium()            a Chromium executable that runs inside the namespace
 *   link.setRate(bps | null)   changes or lifts the limit
 *   link.describe()            the qdisc's counters (sent, dropped, overlimits)
 *   link.close()               removes the namespace and the pair
 */
export function startShapedNetns({ rateBps, queueBytes = 60_000 }) {
  const n = (process.pid + Math.floor(Math.random() * 1000)) % 250;
  const ns = `ringcast-cc-${process.pid}-${n}`;
  const host = `rcc${n}h`;
  const peer = `rcc${n}n`;
  const hostIp = `10.201.${n}.1`;
  const nsIp = `10.201.${n}.2`;
  const run = (cmd, args) => execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
  const cleanup = () => {
    try { run('ip', ['link', 'del', host]); } catch (_) { /* gone */ }
    try { run('ip', ['netns', 'del', ns]); } catch (_) { /* gone */ }
  };
  try {
    if (process.getuid?.() !== 0) throw new Error('not root');
    run('ip', ['netns', 'add', ns]);
    run('ip', ['link', 'add', host, 'type', 'veth', 'peer', 'name', peer]);
    run('ip', ['link', 'set', peer, 'netns', ns]);
    // No IPv6 link-local addresses: one appearing a second later (after DAD) is a network
    // change to Chromium, which fails the requests under way with ERR_NETWORK_CHANGED.
    run('ip', ['link', 'set', 'dev', host, 'addrgenmode', 'none']);
    run('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', 'dev', peer, 'addrgenmode', 'none']);
    run('ip', ['addr', 'add', `${hostIp}/30`, 'dev', host]);
    run('ip', ['link', 'set', host, 'up']);
    run('ip', ['netns', 'exec', ns, 'ip', 'addr', 'add', `${nsIp}/30`, 'dev', peer]);
    run('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', peer, 'up']);
    run('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']);
  } catch (e) {
    cleanup();
    startShapedNetns.why = `${e.message}`.split('\n')[0];
    return null;
  }
  const wrapper = path.join(os.tmpdir(), `${ns}-chromium.sh`);
  fs.writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${ns} ${CHROMIUM_PATH} "$@"\n`, { mode: 0o755 });
  const link = {
    ns, host, hostIp, nsIp, rateBps: null,
    chromium: () => wrapper,
    setRate(bps) {
      link.rateBps = bps;
      if (bps == null) {
        try { run('tc', ['qdisc', 'del', 'dev', host, 'root']); } catch (_) { /* none */ }
      } else {
        // burst: one packet at a time beyond the rate; limit: the queue, drop-tail.
        run('tc', ['qdisc', 'replace', 'dev', host, 'root', 'tbf', 'rate', `${bps}bit`, 'burst', '3000',
          'limit', String(queueBytes)]);
      }
    },
    describe() {
      let qdisc = '';
      try { qdisc = run('tc', ['-s', 'qdisc', 'show', 'dev', host]).replace(/\s+/g, ' ').trim(); } catch (e) { qdisc = e.message; }
      return `netns ${ns} (${nsIp}) behind ${host} (${hostIp}), ${link.rateBps ? `tbf ${link.rateBps} bit/s, ` +
        `${queueBytes} B queue` : 'no limit'}: ${qdisc}`;
    },
    close() {
      cleanup();
      fs.rmSync(wrapper, { force: true });
    },
  };
  process.on('exit', cleanup);
  link.setRate(rateBps);
  return link;
}
