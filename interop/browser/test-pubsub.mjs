// Browser interop, media routing: headless Chromium opens N pages (default 3)
// in ONE room; each page publishes its fake camera + microphone and subscribes
// to everyone else through Ringcast (two peer connections per page, gRPC-Web
// signaling from the page itself: web/ringcast-client.js).
//
//   cd interop/browser && npm ci && node --test test-pubsub.mjs
//
// Per media backend (one test case each) it:
//   - starts the ringcast binary on ephemeral ports with one shard (harness.mjs);
//   - serves pubsub-page.html and launches Debian's /usr/bin/chromium (one
//     browser, N tabs);
//   - creates the room and, in every page at once: Join, Events, a subscriber
//     RTCPeerConnection negotiated by Subscribe -> setRemoteDescription ->
//     createAnswer -> SubscribeAnswer(offer_version) once after Join and again
//     on every SubscriberOfferReady (one negotiation at a time; a request while
//     busy redoes it afterwards), ontrack -> <video>/<audio>; then
//     getUserMedia, two sendonly transceivers, Publish, and waits for the
//     publisher transport;
//   - waits (30 s, and 5 s for the first video frame of each pair) until, in every page, the subscriber pc's getStats() shows
//     for every other participant an inbound-rtp video with framesDecoded > 0
//     and an inbound-rtp audio with packetsReceived > 0; then, 2 s later, that
//     both are still growing; checks packetsLost and the mean jitter-buffer
//     delay, and reports frame sizes;
//   - checks /metrics: ringcast_rtp_forwarded_total > 0, no srtp_auth_failed;
//   - leaves, closes the browser and stops the server (SIGTERM, exit 0).
// Every failure message carries each page's step log, states, stats, the
// latest subscriber offer/answer SDPs and the server log tail.
//
// Environment:
//   RINGCAST_BIN            server binary (default ../../target/debug/ringcast)
//   RINGCAST_MEDIA_BACKEND  backends, comma-separated (default io-uring,recvmmsg)
//   RINGCAST_PUBSUB_PAGES   participants (pages) in the room (default 3, at least 2)
//   RINGCAST_TEST_LOG_LEVEL server --log-level (default info; e.g.
//                           info,ringcast_sfu=debug,ringcast_datapath=debug,ringcast_control=debug)
//   CHROMIUM_PATH           browser (default /usr/bin/chromium)
//   RINGCAST_TEST_KEEP_LOGS keep the server logs of passing cases too
//   RINGCAST_PUBSUB_FIRST_FRAME_MS deadline for every first decoded video frame,
//                           counted from when all pages have published (default 5000)
//   RINGCAST_PUBSUB_OBSERVE_MS how long the streams must keep growing (default 2000)
//   RINGCAST_PUBSUB_DUMP_DIR   write every page's subscriber SDPs (all offers and
//                           answers), step log and final stats there
// Server logs go to $TMPDIR/ringcast-pubsub-<backend>-<pid>.log (path printed;
// removed when the case passes).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import {
  backendsFromEnv, describeDrops, fetchMetrics, launchChromium, mintToken, sleep, startRingcast,
  startWebServer, sumMetric, withTimeout, SERVER_STOP_TIMEOUT_MS,
} from './harness.mjs';

const BACKENDS = backendsFromEnv();
const PAGES = Math.max(2, Number(process.env.RINGCAST_PUBSUB_PAGES || 3));
const LOG_LEVEL = process.env.RINGCAST_TEST_LOG_LEVEL || 'info';

const PAGE_LOAD_TIMEOUT_MS = 15_000;
const GATHER_TIMEOUT_MS = 10_000;
const CONNECT_TIMEOUT_MS = 20_000;
const MEDIA_TIMEOUT_MS = 30_000;
// Each subscriber must decode each other participant's video this soon after all have published.
const FIRST_FRAME_MAX_MS = Number(process.env.RINGCAST_PUBSUB_FIRST_FRAME_MS || 5_000);
// How long to watch the streams grow (longer runs show bandwidth estimation, PLIs, NACKs).
const GROWTH_INTERVAL_MS = Number(process.env.RINGCAST_PUBSUB_OBSERVE_MS || 2_000);
const CASE_TIMEOUT_MS = 150_000 + GROWTH_INTERVAL_MS;
// Loopback: a handful of lost packets at start-up is tolerable, a steady loss is not.
const MAX_LOSS_FRACTION = 0.05;
const MAX_LOSS_ABSOLUTE = 10;
// Mean time a sample/frame spent in the jitter buffer.
const MAX_MEAN_JITTER_BUFFER_S = 1.0;
// The fake camera at a modest size: N pages encode one stream and decode N-1 on 2 cores.
const VIDEO_CONSTRAINTS = { width: 640, height: 360, frameRate: 20 };

const EXTRA_CHROMIUM_ARGS = [
  // Tabs opened by the test are all "background" but one: keep their timers and media running.
  '--disable-background-timer-throttling', '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows', '--autoplay-policy=no-user-gesture-required',
];

const fmt = (x, d = 1) => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(d) : String(x));

/** In one page's stats: the inbound-rtp entries that carry `publisher`'s track of `kind`. */
function inboundFrom(stats, publisher, kind) {
  return (stats?.inbound || []).filter((s) => s.publisher === publisher && s.kind === kind);
}

function describeInbound(s) {
  const jb = s.jitterBufferEmittedCount ? s.jitterBufferDelay / s.jitterBufferEmittedCount : NaN;
  const common = `mid=${s.mid} ${s.codec} ssrc=${s.ssrc} pkts=${s.packetsReceived} lost=${s.packetsLost} ` +
    `jitter=${fmt(s.jitter * 1000)}ms jb=${fmt(jb * 1000)}ms nack=${s.nackCount}`;
  if (s.kind === 'video') {
    return `${common} decoded=${s.framesDecoded} (key ${s.keyFramesDecoded}) dropped=${s.framesDropped} ` +
      `${s.frameWidth}x${s.frameHeight} @${fmt(s.framesPerSecond, 0)}fps pli=${s.pliCount} ${s.decoderImplementation || ''}`;
  }
  return `${common} samples=${s.totalSamplesReceived} concealed=${s.concealedSamples}`;
}

async function runCase(t, backend) {
  const began = Date.now();
  const note = (s) => t.diagnostic(`[${backend}] ${s}`);
  let server;
  let web;
  let browser;
  const pages = []; // { identity, page, console: [] }
  let passed = false;
  try {
    server = await startRingcast({ backend, logLevel: LOG_LEVEL, logTag: 'pubsub' });
    note(`ringcast ${server.grpcUrl} (gRPC-Web), ${server.httpUrl} (metrics); log: ${server.logPath} ` +
      '(kept if the case fails)');
    web = await startWebServer({ '/': 'pubsub-page.html' });
    browser = await launchChromium({ extraArgs: EXTRA_CHROMIUM_ARGS });

    for (let i = 0; i < PAGES; i++) {
      const page = i === 0 && browser.context.pages()[0] ? browser.context.pages()[0] : await browser.context.newPage();
      const p = { identity: `page-${i}`, page, console: [] };
      page.on('console', (m) => p.console.push(`console.${m.type()}: ${m.text()}`));
      page.on('pageerror', (e) => p.console.push(`pageerror: ${e.message}`));
      await page.goto(web.url, { timeout: PAGE_LOAD_TIMEOUT_MS });
      await page.waitForFunction(() => window.ringcastReady === true, null, { timeout: PAGE_LOAD_TIMEOUT_MS });
      pages.push(p);
    }

    // Everything a failure message needs: per page, the steps, states, stats and SDPs.
    const diagnostics = async ({ sdps = true } = {}) => {
      let out = '';
      for (const p of pages) {
        const st = await withTimeout(p.page.evaluate(() => window.pubsubState()), 5000, 'state')
          .catch((e) => ({ error: e.message }));
        const stats = await withTimeout(p.page.evaluate(() => window.pubsubStats()), 5000, 'stats')
          .catch((e) => ({ error: e.message }));
        out += `\n===== ${p.identity}\nsteps:\n  ${(st.log || []).join('\n  ')}\n`;
        const { log, ...rest } = st;
        out += `state: ${JSON.stringify(rest)}\nstats: ${JSON.stringify(stats)}\n`;
        if (p.console.length) out += `console:\n  ${p.console.slice(-20).join('\n  ')}\n`;
        if (sdps) {
          const s = await withTimeout(p.page.evaluate(() => window.pubsubSdps(1)), 5000, 'sdps').catch(() => []);
          for (const x of s) {
            out += `subscriber offer v${x.version} (Ringcast):\n${x.offer}\nanswer (Chromium):\n${x.answer}\n` +
              `${x.error ? `error: ${x.error}\n` : ''}`;
          }
        }
      }
      const metrics = await fetchMetrics(server.httpUrl).catch(() => []);
      const relevant = metrics.filter((s) => s.value > 0 &&
        /forwarded|srtp|drops|transports|dtls_handshakes|packets_(in|out)/.test(s.name))
        .map((s) => `${s.name}${Object.keys(s.labels).length ? JSON.stringify(s.labels) : ''}=${s.value}`);
      return `${out}\nmetrics: ${relevant.join(' ')}\nserver log tail (${server.logPath}):\n${server.tail(80)}`;
    };

    // The room (admin token minted here with node's crypto), then all pages at once.
    const room = `pubsub-${backend}-${crypto.randomBytes(4).toString('hex')}`;
    const admin = mintToken('interop-backend', { admin: true });
    const created = await fetch(`${server.grpcUrl}/ringcast.v1.RoomService/CreateRoom`, {
      method: 'POST', body: grpcWebFrame(encodeCreateRoom(room, PAGES + 1)),
      headers: { 'content-type': 'application/grpc-web+proto', 'x-grpc-web': '1', authorization: `Bearer ${admin}` },
      signal: AbortSignal.timeout(5000),
    });
    const body = Buffer.from(await created.arrayBuffer()).toString('latin1');
    const status = created.headers.get('grpc-status') ?? body.match(/grpc-status:\s*(\d+)/)?.[1];
    assert.ok(created.status === 200 && status === '0', `CreateRoom over gRPC-Web: HTTP ${created.status}, ` +
      `grpc-status ${status} ${created.headers.get('grpc-message') ?? body.match(/grpc-message:\s*(.*)/)?.[1] ?? ''}`);

    const tStart = Date.now();
    const results = await Promise.allSettled(pages.map((p) => withTimeout(p.page.evaluate((c) => window.pubsubStart(c), {
      grpcUrl: server.grpcUrl,
      token: mintToken(p.identity, { room, publish: true, subscribe: true }),
      identity: p.identity,
      connectTimeoutMs: CONNECT_TIMEOUT_MS,
      gatherTimeoutMs: GATHER_TIMEOUT_MS,
      video: VIDEO_CONSTRAINTS,
    }), GATHER_TIMEOUT_MS + CONNECT_TIMEOUT_MS + 15_000, `${p.identity}: join + publish`)));
    const failed = results.map((r, i) => (r.status === 'rejected' ? `${pages[i].identity}: ${r.reason.message}` : null))
      .filter(Boolean);
    if (failed.length) assert.fail(`publishing failed:\n${failed.join('\n')}\n${await diagnostics()}`);
    const ua = results[0].value.userAgent.match(/Chrom(?:e|ium)\/[0-9.]+/)?.[0];
    note(`${ua}: ${PAGES} pages joined room ${room} and published in ${Date.now() - tStart} ms`);
    for (const [i, r] of results.entries()) {
      assert.deepEqual(r.value.rejected, [], `${pages[i].identity}: Publish rejected m-lines`);
      note(`${pages[i].identity} published ${r.value.tracks.map((tr) => `${tr.kind.replace('TRACK_KIND_', '').toLowerCase()} ` +
        `${tr.mimeType} ${tr.sid}`).join(', ')}`);
    }

    // Media: every page must decode video and receive audio from every other page.
    const others = (p) => pages.filter((o) => o !== p).map((o) => o.identity);
    const snapshot = async () => Promise.all(pages.map((p) =>
      withTimeout(p.page.evaluate(() => window.pubsubStats()), 5000, `${p.identity}: getStats`)));
    // Per (subscriber, publisher, kind): missing media, and when it first showed up.
    const firstSeen = new Map();
    const missing = (statsList, elapsed) => {
      const out = [];
      pages.forEach((p, i) => {
        for (const o of others(p)) {
          const v = inboundFrom(statsList[i], o, 'video');
          const a = inboundFrom(statsList[i], o, 'audio');
          const check = (kind, list, ok, what) => {
            const key = `${p.identity} <- ${o} ${kind}`;
            if (ok) {
              if (!firstSeen.has(key)) firstSeen.set(key, elapsed);
            } else {
              out.push(`${key}: ${what} (${list.length ? list.map(describeInbound).join('; ') : 'no inbound-rtp'})`);
            }
          };
          check('video', v, v.some((s) => s.framesDecoded > 0), 'no decoded frame');
          check('audio', a, a.some((s) => s.packetsReceived > 0), 'no packet');
        }
      });
      return out;
    };
    const tMedia = Date.now();
    let first;
    for (;;) {
      const elapsed = Date.now() - tMedia;
      first = await snapshot();
      const m = missing(first, elapsed);
      if (!m.length) break;
      if (elapsed > MEDIA_TIMEOUT_MS) {
        assert.fail(`after ${MEDIA_TIMEOUT_MS} ms, media is missing:\n  ${m.join('\n  ')}\n${await diagnostics()}`);
      }
      await sleep(250);
    }
    note(`every page decodes video and receives audio from every other page ${Date.now() - tMedia} ms after publishing; ` +
      `first seen (ms): ${[...firstSeen].map(([k, v]) => `${k} ${v}`).join(', ')}`);
    // Keyframe gating plus the PLI sent when a subscriber is added: on loopback the
    // first frame takes well under a second. A late one means that a subscriber
    // waited for a keyframe the publisher was never asked for.
    const late = [...firstSeen].filter(([k, v]) => k.endsWith('video') && v > FIRST_FRAME_MAX_MS);
    if (late.length) {
      assert.fail(`video took longer than ${FIRST_FRAME_MAX_MS} ms to decode: ` +
        `${late.map(([k, v]) => `${k} after ${v} ms`).join(', ')}\n` +
        `current stats:\n  ${pages.flatMap((p, i) => first[i].inbound.map((x) => `${p.identity} <- ${x.publisher} ${x.kind}: ${describeInbound(x)}`)).join('\n  ')}\n` +
        `${await diagnostics({ sdps: false })}`);
    }

    await sleep(GROWTH_INTERVAL_MS);
    const second = await snapshot();
    const problems = [];
    pages.forEach((p, i) => {
      const v = second[i].outbound.find((s) => s.kind === 'video') || {};
      note(`${p.identity} publisher: video ${v.codec} ${v.frameWidth}x${v.frameHeight} @${fmt(v.framesPerSecond, 0)}fps ` +
        `encoded=${v.framesEncoded} (key ${v.keyFramesEncoded}) pli=${v.pliCount} nack=${v.nackCount} ` +
        `target=${fmt((v.targetBitrate || 0) / 1000, 0)}kbps limited by ${v.qualityLimitationReason} ` +
        `${JSON.stringify(v.qualityLimitationDurations)} bwe=${fmt((second[i].pub?.availableOutgoingBitrate || 0) / 1000, 0)}kbps`);
      note(`${p.identity} subscriber: ${second[i].sub.connectionState}, ` +
        `srtp=${second[i].sub.transport?.srtpCipher} pair=${second[i].sub.transport?.pair?.local} -> ` +
        `${second[i].sub.transport?.pair?.remote}`);
      for (const o of others(p)) {
        for (const kind of ['video', 'audio']) {
          const [a] = inboundFrom(first[i], o, kind);
          const [b] = inboundFrom(second[i], o, kind);
          if (!a || !b) {
            problems.push(`${p.identity} <- ${o} ${kind}: the inbound-rtp entry disappeared`);
            continue;
          }
          note(`  ${p.identity} <- ${o} ${kind}: ${describeInbound(b)}`);
          const grew = kind === 'video' ? b.framesDecoded - a.framesDecoded : b.packetsReceived - a.packetsReceived;
          if (!(grew > 0)) problems.push(`${p.identity} <- ${o} ${kind}: not growing over ${GROWTH_INTERVAL_MS} ms`);
          const lostMax = Math.max(MAX_LOSS_ABSOLUTE, MAX_LOSS_FRACTION * b.packetsReceived);
          if (b.packetsLost > lostMax) {
            problems.push(`${p.identity} <- ${o} ${kind}: packetsLost ${b.packetsLost} of ${b.packetsReceived} (max ${fmt(lostMax, 0)})`);
          }
          if (b.jitterBufferEmittedCount > 0) {
            const jb = b.jitterBufferDelay / b.jitterBufferEmittedCount;
            if (!(jb < MAX_MEAN_JITTER_BUFFER_S)) {
              problems.push(`${p.identity} <- ${o} ${kind}: mean jitter-buffer delay ${fmt(jb * 1000)} ms`);
            }
          } else if (kind === 'video' || b.packetsReceived > 50) {
            problems.push(`${p.identity} <- ${o} ${kind}: jitterBufferEmittedCount is 0`);
          }
        }
      }
    });
    if (process.env.RINGCAST_PUBSUB_DUMP_DIR) {
      const dir = path.join(process.env.RINGCAST_PUBSUB_DUMP_DIR, backend);
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
        fs.writeFileSync(path.join(dir, `${p.identity}-stats.json`), JSON.stringify(second[i], null, 1));
      }
      note(`SDPs, states and stats written to ${dir}`);
    }
    if (problems.length) assert.fail(`media problems:\n  ${problems.join('\n  ')}\n${await diagnostics()}`);

    // The server's view.
    const samples = await fetchMetrics(server.httpUrl);
    const forwarded = sumMetric(samples, 'ringcast_rtp_forwarded_total');
    const drops = describeDrops(samples);
    note(`metrics: ${forwarded} RTP packets forwarded, ` +
      `${sumMetric(samples, 'ringcast_srtp_packets_in_total', { kind: 'rtp' })} RTP + ` +
      `${sumMetric(samples, 'ringcast_srtp_packets_in_total', { kind: 'rtcp' })} RTCP decrypted, ` +
      `${sumMetric(samples, 'ringcast_transports_connected_total')} transports connected; drops: ${drops.join(', ') || 'none'}`);
    assert.ok(forwarded > 0, `ringcast_rtp_forwarded_total is ${forwarded}\n${await diagnostics()}`);
    assert.equal(sumMetric(samples, 'ringcast_drops_total', { reason: 'srtp_auth_failed' }), 0,
      `SRTP authentication failures: ${drops.join(', ')}\n${await diagnostics()}`);
    if (backend !== 'auto') {
      const backends = samples.filter((s) => s.name === 'ringcast_datapath_backend' && s.value > 0).map((s) => s.labels.backend);
      assert.deepEqual(backends, [backend.replace('-', '_')], `datapath backend metric: ${JSON.stringify(backends)}`);
    }
    const renegs = await Promise.all(pages.map((p) => p.page.evaluate(() => window.pubsubState())));
    note(`subscriber negotiations: ${renegs.map((s) => `${s.identity} ${s.negotiations.length} ` +
      `(answered v${s.answeredVersion}${s.errors.length ? `, errors: ${s.errors.join('; ')}` : ''})`).join(', ')}`);

    for (const p of pages) await withTimeout(p.page.evaluate(() => window.pubsubLeave()), 10_000, `${p.identity}: leave`);
    await browser.close();
    const exit = await server.stop();
    assert.ok(!exit.hung, `ringcast did not exit within ${SERVER_STOP_TIMEOUT_MS} ms of SIGTERM`);
    assert.equal(exit.code, 0, `ringcast exited with ${JSON.stringify(exit)} after SIGTERM:\n${server.tail()}`);
    const warnings = server.output().split('\n').filter((l) => /\b(WARN|ERROR)\b/.test(l));
    if (warnings.length) note(`server warnings/errors:\n${warnings.slice(-20).join('\n')}`);
    note(`case took ${Date.now() - began} ms`);
    passed = true;
  } finally {
    if (browser) await browser.close();
    if (web) await web.close();
    if (server) {
      await server.stop();
      if (passed && !process.env.RINGCAST_TEST_KEEP_LOGS) fs.rmSync(server.logPath, { force: true });
    }
  }
}

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

for (const backend of BACKENDS) {
  test(`${PAGES} Chromium pages publish and subscribe to each other in one room (media backend ${backend})`,
    { timeout: CASE_TIMEOUT_MS }, (t) => runCase(t, backend));
}
