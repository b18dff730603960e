// Shared infrastructure for the browser interop tests (test-publish.mjs,
// test-pubsub.mjs): the ringcast server on ephemeral ports, a static web
// server for the test pages, tokens, /metrics parsing and Chromium's flags.
// Facts about Chromium on these machines: shared/PEERS.md.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
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

export const API_KEY = 'devkey';
export const API_SECRET = 'devsecret-for-local-testing-only';

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
  const sig = crypto.createHmac('sha256', API_SECRET).update(`${header}.${claims}`).digest('base64url');
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

// ---------------------------------------------------------------------------
// The ringcast server

/**
 * Starts the binary on ephemeral ports with one shard. Options:
 *   backend    --media-backend
 *   logLevel   --log-level (a tracing filter)
 *   logTag     part of the log file name
 * The returned object has grpcUrl, httpUrl, logPath, output(), tail(n), stop().
 */
export async function startRingcast({ backend, logLevel = 'info', logTag = 'interop' }) {
  if (!fs.existsSync(RINGCAST_BIN)) {
    throw new Error(`ringcast binary not found at ${RINGCAST_BIN} (build it, or set RINGCAST_BIN)`);
  }
  const logPath = path.join(os.tmpdir(), `ringcast-${logTag}-${backend}-${process.pid}.log`);
  const logFile = fs.createWriteStream(logPath);
  const args = [
    '--grpc-addr', '127.0.0.1:0', '--http-addr', '127.0.0.1:0',
    '--udp-port-base', '0', '--shards', '1', '--drain-grace-secs', '0',
    '--media-backend', backend, '--log-level', logLevel, '--log-format', 'text',
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
export function startWebServer(pages) {
  const html = 'text/html; charset=utf-8';
  const js = 'text/javascript; charset=utf-8';
  const files = {
    ...Object.fromEntries(Object.entries(pages).map(([url, f]) => [url, [path.join(HERE, f), html]])),
    '/ringcast-client.js': [path.join(REPO, 'web', 'ringcast-client.js'), js],
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
    server.listen(0, '127.0.0.1', () => {
      resolve({
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
 * Returns { context, close() }; close() also removes the profile.
 */
export async function launchChromium({ extraArgs = [] } = {}) {
  const { chromium } = await import('playwright-core');
  const profileDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ringcast-chromium-'));
  let context;
  try {
    context = await withTimeout(chromium.launchPersistentContext(profileDir, {
      executablePath: CHROMIUM_PATH, headless: true, args: [...CHROMIUM_ARGS, ...extraArgs], timeout: 30_000,
    }), 35_000, 'launching chromium');
  } catch (e) {
    fs.rmSync(profileDir, { recursive: true, force: true });
    throw e;
  }
  let closed = false;
  return {
    context,
    async close() {
      if (closed) return;
      closed = true;
      await withTimeout(context.close(), 15_000, 'closing chromium').catch(() => {});
      fs.rmSync(profileDir, { recursive: true, force: true });
    },
  };
}
