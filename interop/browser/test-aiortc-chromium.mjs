// Interop between two independent WebRTC stacks through Ringcast: aiortc
// (Python) publishes, headless Chromium subscribes.
//
//   cd interop/browser && npm ci && node --test test-aiortc-chromium.mjs
//
// Per media backend (default io-uring only) it:
//   - starts the ringcast binary on ephemeral ports with one shard (harness.mjs)
//     and creates a room over gRPC-Web;
//   - spawns ../python/aiortc_publisher.py with the repo's venv Python: it Joins
//     with a publish-only token over gRPC, publishes a VP8 moving test pattern
//     (320x240, 30 fps) and an Opus sine tone, and reports JSON lines on stdout
//     until its stdin is closed;
//   - once aiortc's transport is connected, opens pubsub-page.html in Chromium
//     as a subscribe-only participant (Join, Events, subscriber pc negotiated by
//     Subscribe/SubscribeAnswer; no getUserMedia, no publisher pc);
//   - waits (20 s) until the page's subscriber pc decodes aiortc's video and
//     receives its audio, then checks over 2 s that both keep growing, that the
//     decoded frame size is what aiortc sends, the codecs (VP8, Opus), small
//     packetsLost and jitter-buffer delay, and that the <video> element shows a
//     moving picture (16x12 thumbnails 0.5 s apart differ, and are not flat);
//   - checks /metrics (ringcast_rtp_forwarded_total > 0, no srtp_auth_failed);
//   - closes aiortc's stdin (it must close its pc, Leave and exit 0), leaves,
//     closes the browser and stops the server (SIGTERM, exit 0).
// On failure every process is killed, and the message carries the page's step
// log and stats, aiortc's output and the server log tail.
//
// Environment:
//   RINGCAST_BIN            server binary (default ../../target/debug/ringcast)
//   RINGCAST_MEDIA_BACKEND  backends, comma-separated (default io-uring)
//   RINGCAST_PYTHON         Python with aiortc, grpcio, PyJWT (default ../../.venv/bin/python)
//   RINGCAST_TEST_LOG_LEVEL server --log-level (default info)
//   CHROMIUM_PATH           browser (default /usr/bin/chromium)
//   RINGCAST_TEST_KEEP_LOGS keep the server logs of passing cases too
// Server logs go to $TMPDIR/ringcast-aiortc-chromium-<backend>-<pid>.log (path
// printed; removed when the case passes).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import {
  backendsFromEnv, checkForwardingMetrics, closeCase, createRoom, describeInbound, inboundFrom, launchChromium,
  leaveAndStop, mintToken, openPubsubPage, pubsubDiagnostics, pubsubSnapshot, sleep, startPubsubPages,
  startRingcast, startWebServer, streamProblems, waitForMedia, REPO,
} from './harness.mjs';

const BACKENDS = backendsFromEnv('io-uring');
const LOG_LEVEL = process.env.RINGCAST_TEST_LOG_LEVEL || 'info';
const PYTHON = process.env.RINGCAST_PYTHON || path.join(REPO, '.venv', 'bin', 'python');
const PUBLISHER_SCRIPT = path.join(REPO, 'interop', 'python', 'aiortc_publisher.py');

const VIDEO = { width: 320, height: 240, fps: 30 };
const PUBLISHER_IDENTITY = 'aiortc-pub';
const SUBSCRIBER_IDENTITY = 'chromium-sub';
// aiortc: generating the gRPC stubs, ICE gathering, Publish, ICE + DTLS.
const PUBLISHER_CONNECT_TIMEOUT_MS = 40_000;
const PUBLISHER_EXIT_TIMEOUT_MS = 10_000;
const GATHER_TIMEOUT_MS = 10_000;
const CONNECT_TIMEOUT_MS = 20_000;
const MEDIA_TIMEOUT_MS = 20_000;
const GROWTH_INTERVAL_MS = 2_000;
// The decoded picture, from 16x12 thumbnails of the <video> taken this far apart: aiortc's
// gradient spans most grey levels, and it scrolls by 3 levels a frame.
const THUMBNAIL_GAP_MS = 500;
const MIN_THUMBNAIL_SPREAD = 64;
const MIN_THUMBNAIL_CHANGE = 4;
const CASE_TIMEOUT_MS = 150_000;

/**
 * Spawns aiortc_publisher.py. Returns { events, waitFor(event, ms), last(event),
 * describe(), stop() }: stop() closes its stdin and waits for it to exit, then
 * SIGTERM, then SIGKILL; it resolves to { code, signal, how }.
 */
function startAiortcPublisher({ grpcAddr, token }) {
  if (!fs.existsSync(PYTHON)) throw new Error(`no Python at ${PYTHON} (create the venv, or set RINGCAST_PYTHON)`);
  const args = [PUBLISHER_SCRIPT, '--grpc-addr', grpcAddr, '--token', token,
    '--width', String(VIDEO.width), '--height', String(VIDEO.height), '--fps', String(VIDEO.fps)];
  const child = spawn(PYTHON, args, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, PYTHONUNBUFFERED: '1' } });
  const killOnExit = () => { try { child.kill('SIGKILL'); } catch (_) { /* gone */ } };
  process.on('exit', killOnExit);
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => {
    process.off('exit', killOnExit);
    resolve({ code, signal });
  }));
  child.stdin.on('error', () => {}); // EPIPE if it already exited
  const pub = { child, events: [], stderr: '', exit: null };
  exited.then((r) => { pub.exit = r; });
  let partial = '';
  child.stdout.on('data', (d) => {
    const lines = (partial + d.toString()).split('\n');
    partial = lines.pop();
    for (const line of lines.filter(Boolean)) {
      try { pub.events.push(JSON.parse(line)); } catch (_) { pub.events.push({ event: 'unparsed', line }); }
    }
  });
  child.stderr.on('data', (d) => { pub.stderr += d.toString(); });
  pub.last = (event) => pub.events.filter((e) => e.event === event).at(-1);
  pub.describe = () => {
    const brief = pub.events.map((e) => (e.event === 'published' ? { ...e, offer: '(below)', answer: '(below)' } : e));
    const published = pub.last('published');
    return `exit: ${JSON.stringify(pub.exit)}\nevents:\n  ${brief.slice(-15).map((e) => JSON.stringify(e)).join('\n  ')}\n` +
      `stderr (tail):\n${pub.stderr.trimEnd().split('\n').slice(-30).join('\n')}\n` +
      `${published ? `publisher offer (aiortc):\n${published.offer}\nanswer (Ringcast):\n${published.answer}\n` : ''}`;
  };
  pub.waitFor = async (event, ms) => {
    const deadline = Date.now() + ms;
    for (;;) {
      const found = pub.last(event);
      if (found) return found;
      const err = pub.last('error');
      if (err) throw new Error(`aiortc publisher failed: ${err.message}`);
      if (pub.exit) throw new Error(`aiortc publisher exited (${JSON.stringify(pub.exit)}) before '${event}'`);
      if (Date.now() > deadline) throw new Error(`aiortc publisher: no '${event}' within ${ms} ms`);
      await sleep(100);
    }
  };
  pub.stop = async () => {
    const within = (ms) => {
      let timer;
      return Promise.race([exited, new Promise((r) => { timer = setTimeout(() => r(null), ms); })])
        .finally(() => clearTimeout(timer));
    };
    if (pub.exit) return { ...pub.exit, how: 'already exited' };
    child.stdin.end();
    let r = await within(PUBLISHER_EXIT_TIMEOUT_MS);
    if (r) return { ...r, how: 'stdin closed' };
    child.kill('SIGTERM');
    r = await within(5_000);
    if (r) return { ...r, how: 'SIGTERM' };
    child.kill('SIGKILL');
    return { ...(await exited), how: 'SIGKILL' };
  };
  return pub;
}

async function runCase(t, backend) {
  const began = Date.now();
  const note = (s) => t.diagnostic(`[${backend}] ${s}`);
  let server;
  let publisher; // aiortc_publisher.py
  let web;
  let browser;
  const pages = [];
  let passed = false;
  try {
    server = await startRingcast({ backend, logLevel: LOG_LEVEL, logTag: 'aiortc-chromium' });
    note(`ringcast ${server.grpcUrl} (gRPC + gRPC-Web), ${server.httpUrl} (metrics); log: ${server.logPath} ` +
      '(kept if the case fails)');
    const room = `aiortc-chromium-${backend}-${crypto.randomBytes(4).toString('hex')}`;
    await createRoom(server.grpcUrl, room, 4);

    const publisherFailed = async (e) => assert.fail(`${e.message}\naiortc publisher:\n${publisher.describe()}\n` +
      `server log tail (${server.logPath}):\n${server.tail(60)}`);
    publisher = startAiortcPublisher({
      grpcAddr: new URL(server.grpcUrl).host,
      token: mintToken(PUBLISHER_IDENTITY, { room, publish: true }),
    });
    const connected = await publisher.waitFor('connected', PUBLISHER_CONNECT_TIMEOUT_MS).catch(publisherFailed);
    const published = publisher.last('published');
    assert.deepEqual(published.rejected, [], `aiortc's m-lines were rejected\n${publisher.describe()}`);
    note(`aiortc published ${published.tracks.map((x) => `${x.kind} ${x.mime_type} ${x.sid}`).join(', ')}; ` +
      `connected ${connected.after_s} s after it started`);
    assert.deepEqual(published.tracks.map((x) => x.mime_type.toLowerCase()).sort(), ['audio/opus', 'video/vp8'],
      `published tracks\n${publisher.describe()}`);

    web = await startWebServer({ '/': 'pubsub-page.html' });
    browser = await launchChromium();
    pages.push(await openPubsubPage(browser, web.url, SUBSCRIBER_IDENTITY));
    const [sub] = pages;
    const diagnostics = async (opts) => `${await pubsubDiagnostics(pages, server, opts)}\n\n` +
      `aiortc publisher:\n${publisher.describe()}`;
    const [started] = await startPubsubPages(pages, server.grpcUrl, () => ({
      token: mintToken(SUBSCRIBER_IDENTITY, { room, subscribe: true }), publish: false,
    }), { gatherTimeoutMs: GATHER_TIMEOUT_MS, connectTimeoutMs: CONNECT_TIMEOUT_MS, diagnostics });
    note(`${started.userAgent.match(/Chrom(?:e|ium)\/[0-9.]+/)?.[0]} joined as a subscriber`);

    const expectations = ['video', 'audio'].map((kind) => ({ page: sub, publisher: PUBLISHER_IDENTITY, kind }));
    const { stats: [first], ms } = await waitForMedia(pages, expectations, { timeoutMs: MEDIA_TIMEOUT_MS, diagnostics });
    note(`Chromium decodes aiortc's video and receives its audio ${ms} ms after joining`);
    await sleep(GROWTH_INTERVAL_MS);
    const [second] = await pubsubSnapshot(pages);

    const problems = [];
    for (const kind of ['video', 'audio']) {
      const [a] = inboundFrom(first, PUBLISHER_IDENTITY, kind);
      const [b] = inboundFrom(second, PUBLISHER_IDENTITY, kind);
      if (!a || !b) {
        problems.push(`${kind}: the inbound-rtp entry disappeared`);
        continue;
      }
      note(`  ${SUBSCRIBER_IDENTITY} <- ${PUBLISHER_IDENTITY} ${kind}: ${describeInbound(b)}`);
      problems.push(...streamProblems(`${SUBSCRIBER_IDENTITY} <- ${PUBLISHER_IDENTITY} ${kind}`, a, b));
      const mime = kind === 'video' ? 'video/VP8' : 'audio/opus';
      if (!b.codec?.toLowerCase().startsWith(`${mime.toLowerCase()}/`)) problems.push(`${kind}: codec ${b.codec}, wanted ${mime}`);
      if (kind === 'video') {
        if (b.frameWidth !== VIDEO.width || b.frameHeight !== VIDEO.height) {
          problems.push(`video: decoded ${b.frameWidth}x${b.frameHeight}, aiortc sends ${VIDEO.width}x${VIDEO.height}`);
        }
        const fps = ((b.framesDecoded - a.framesDecoded) * 1000) / (second.at - first.at);
        note(`  video: ${fps.toFixed(1)} frames/s decoded over the last ${second.at - first.at} ms`);
      }
    }
    // What the <video> shows: aiortc's moving pattern (a gradient, so not flat), changing over time.
    const [v] = inboundFrom(second, PUBLISHER_IDENTITY, 'video');
    const thumbs = [];
    for (let i = 0; i < 2 && v; i++) {
      if (i) await sleep(THUMBNAIL_GAP_MS);
      thumbs.push(await sub.page.evaluate((mid) => window.pubsubThumbnail(mid), v.mid));
    }
    if (thumbs.length === 2 && thumbs.every(Boolean)) {
      const [x, y] = thumbs;
      const spread = Math.max(...x.pixels) - Math.min(...x.pixels);
      const changed = x.pixels.reduce((acc, p, i) => acc + Math.abs(p - y.pixels[i]), 0) / x.pixels.length;
      note(`  video element: ${x.width}x${x.height}, thumbnail spread ${spread}, mean change ${changed.toFixed(1)} ` +
        `over ${THUMBNAIL_GAP_MS} ms (currentTime ${x.currentTime.toFixed(2)} -> ${y.currentTime.toFixed(2)} s)`);
      if (x.width !== VIDEO.width || x.height !== VIDEO.height) problems.push(`<video> is ${x.width}x${x.height}`);
      if (!(spread >= MIN_THUMBNAIL_SPREAD)) problems.push(`<video> shows a flat picture (spread ${spread}): ${x.pixels}`);
      if (!(changed >= MIN_THUMBNAIL_CHANGE)) {
        problems.push(`<video> picture does not move: mean change ${changed.toFixed(1)} over ${THUMBNAIL_GAP_MS} ms`);
      }
    } else {
      problems.push(`<video> shows nothing: thumbnails ${JSON.stringify(thumbs)}`);
    }

    const sent = publisher.last('stats');
    note(`aiortc sent (last report, at ${sent?.at_s} s): video ${sent?.video?.packetsSent} packets, ` +
      `audio ${sent?.audio?.packetsSent} packets`);
    if (problems.length) assert.fail(`media problems:\n  ${problems.join('\n  ')}\n${await diagnostics()}`);

    await checkForwardingMetrics(server, backend, note, diagnostics);

    const stopped = await publisher.stop();
    assert.ok(stopped.code === 0 && stopped.how === 'stdin closed' && publisher.last('closed'),
      `the aiortc publisher did not exit 0 when its stdin closed: ${JSON.stringify(stopped)}\n${publisher.describe()}`);
    await leaveAndStop(pages, browser, server, note);
    note(`case took ${Date.now() - began} ms`);
    passed = true;
  } finally {
    if (publisher) await publisher.stop();
    await closeCase({ browser, web, server, passed });
  }
}

for (const backend of BACKENDS) {
  test(`aiortc publishes, Chromium subscribes through Ringcast (media backend ${backend})`,
    { timeout: CASE_TIMEOUT_MS }, (t) => runCase(t, backend));
}
