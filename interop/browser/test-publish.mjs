// Browser interop: headless Chromium publishes its fake camera + microphone to
// Ringcast through a page that speaks gRPC-Web directly (web/ringcast-client.js).
//
//   cd interop/browser && npm ci && node --test test-publish.mjs
//
// Per media backend (one test case each) it:
//   - starts the ringcast binary on ephemeral ports (--grpc-addr/--http-addr
//     127.0.0.1:0, addresses read from its start-up banner; --udp-port-base 0
//     --shards 1 --drain-grace-secs 0 --media-backend <backend>);
//   - serves publish-page.html, ringcast-client.js, ringcast.proto and
//     protobufjs' dist/protobuf.min.js on http://127.0.0.1:<ephemeral port>;
//   - launches Debian's /usr/bin/chromium through playwright-core with the
//     flags from shared/PEERS.md;
//   - in the page: CreateRoom (admin token), Join, getUserMedia, two sendonly
//     transceivers, offer, full ICE gathering, Publish, answer, and waits for
//     connectionState 'connected' (20 s);
//   - polls /metrics (20 s) until >= 100 decrypted SRTP packets and >= 1
//     connected transport; asserts no srtp_auth_failed drops; checks the page's
//     outbound-rtp packetsSent for audio and video; reports the SRTP profile;
//   - checks transport-cc was negotiated and Ringcast's transport-wide feedback
//     drives Chromium's send-side estimate: >= 20 feedback messages sent, and the
//     selected pair's availableOutgoingBitrate reaches 500 kbit/s (20 s; without
//     feedback Chromium would lower it by a fifth every second);
//   - checks the Events stream (server streaming over gRPC-Web) reported the
//     publisher transport CONNECTED, leaves, and stops the server (SIGTERM, exit 0).
//
// Environment:
//   RINGCAST_BIN            server binary (default ../../target/debug/ringcast)
//   RINGCAST_MEDIA_BACKEND  backends to test, comma-separated: auto, io-uring,
//                           recvmmsg (default: two cases, io-uring and recvmmsg)
//   RINGCAST_TEST_LOG_LEVEL server --log-level (default info; e.g. debug)
//   RINGCAST_SRTP_PROFILES  passed through to the server, e.g. AES_CM_128_HMAC_SHA1_80
//                           to make it the only profile Ringcast accepts
//   CHROMIUM_PATH           browser (default /usr/bin/chromium)
//   RINGCAST_TEST_KEEP_LOGS keep the server logs of passing cases too
// Server logs go to $TMPDIR/ringcast-interop-<backend>-<pid>.log (path printed;
// removed when the case passes).
//
// Shared server/browser/metrics helpers: harness.mjs.
// Needs: apt-get install -y chromium; PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci.
// Facts about Chromium on these machines: shared/PEERS.md.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import {
  backendsFromEnv, closeCase, describeDrops, fetchMetrics, launchChromium, mintToken, sleep, startRingcast,
  startWebServer, stopServerChecked, sumMetric, withTimeout,
} from './harness.mjs';

const BACKENDS = backendsFromEnv();
const LOG_LEVEL = process.env.RINGCAST_TEST_LOG_LEVEL || 'info';

const PAGE_LOAD_TIMEOUT_MS = 15_000;
const GATHER_TIMEOUT_MS = 10_000;
const CONNECT_TIMEOUT_MS = 20_000;
const METRICS_TIMEOUT_MS = 20_000;
const EVENT_TIMEOUT_MS = 5_000;
const MIN_RTP_PACKETS = 100;
const ESTIMATE_TIMEOUT_MS = 20_000;
const MIN_TWCC_FEEDBACK = 20;
const MIN_ESTIMATE_BPS = 500_000;
const CASE_TIMEOUT_MS = 120_000;

// ---------------------------------------------------------------------------
// One case

async function runCase(t, backend) {
  const began = Date.now();
  const note = (s) => t.diagnostic(`[${backend}] ${s}`);
  let server;
  let web;
  let browser;
  const consoleLines = [];
  let passed = false;
  try {
    server = await startRingcast({ backend, logLevel: LOG_LEVEL });
    note(`ringcast ${server.grpcUrl} (gRPC-Web), ${server.httpUrl} (metrics); log: ${server.logPath} ` +
      '(kept if the case fails)');
    web = await startWebServer({ '/': 'publish-page.html' });

    browser = await launchChromium();
    const page = browser.context.pages()[0] || (await browser.context.newPage());
    page.on('console', (m) => consoleLines.push(`console.${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));
    await page.goto(web.url, { timeout: PAGE_LOAD_TIMEOUT_MS });
    await page.waitForFunction(() => window.ringcastReady === true, null, { timeout: PAGE_LOAD_TIMEOUT_MS });

    // Tokens are minted here (node crypto HMAC) and handed to the page.
    const room = `interop-${backend}-${crypto.randomBytes(4).toString('hex')}`;
    const identity = 'chromium-publisher';
    const cfg = {
      grpcUrl: server.grpcUrl,
      adminToken: mintToken('interop-backend', { admin: true }),
      token: mintToken(identity, { room, publish: true, subscribe: true }),
      room,
      connectTimeoutMs: CONNECT_TIMEOUT_MS,
      gatherTimeoutMs: GATHER_TIMEOUT_MS,
    };

    const diagnostics = async () => {
      const st = await page.evaluate(() => window.ringcastState()).catch((e) => ({ error: e.message }));
      const stats = await page.evaluate(() => window.ringcastStats()).catch(() => null);
      return `page state: ${JSON.stringify(st, null, 1)}\npage stats: ${JSON.stringify(stats)}\n` +
        `page console:\n${consoleLines.join('\n')}\nserver log tail (${server.logPath}):\n${server.tail(60)}`;
    };

    // gRPC errors as the page sees them.
    const errs = await withTimeout(page.evaluate((c) => window.ringcastErrorChecks(c), cfg), 15_000, 'error checks');
    assert.equal(errs.badToken.code, 16, `a bad token must give UNAUTHENTICATED: ${JSON.stringify(errs.badToken)}`);
    assert.equal(errs.unknownRoom.code, 5, `an unknown room must give NOT_FOUND: ${JSON.stringify(errs.unknownRoom)}`);
    assert.ok(errs.unknownRoom.message.includes('no-such-room'), `grpc-message: ${JSON.stringify(errs.unknownRoom)}`);

    const tPublish = Date.now();
    let pub;
    try {
      pub = await withTimeout(page.evaluate((c) => window.ringcastPublish(c), cfg),
        GATHER_TIMEOUT_MS + CONNECT_TIMEOUT_MS + 15_000, 'publish in the page');
    } catch (e) {
      throw new Error(`publishing from Chromium failed: ${e.message}\n${await diagnostics()}`);
    }
    note(`${pub.userAgent.match(/Chrom(?:e|ium)\/[0-9.]+/)?.[0]}: connected ${Date.now() - tPublish} ms after ` +
      `starting (room ${pub.room.name} ${pub.room.sid}, shard ${pub.room.shard})`);
    note(`server candidates: ${pub.serverCandidates.join(' | ')}`);
    note(`tracks: ${pub.tracks.map((tr) => `${tr.kind} ${tr.mimeType} mid=${tr.mid} name=${tr.name}`).join(', ')}`);

    // Signaling results.
    assert.ok(pub.serverCandidates.length >= 1, 'Join returned no server candidate');
    for (const c of pub.serverCandidates) {
      const port = Number(c.split(/\s+/)[5]);
      assert.ok(port > 0, `server candidate has no real port: ${c}`);
    }
    assert.deepEqual(pub.rejected, [], 'Publish rejected m-lines');
    assert.deepEqual(pub.tracks.map((tr) => tr.kind).sort(), ['TRACK_KIND_AUDIO', 'TRACK_KIND_VIDEO']);
    const byKind = Object.fromEntries(pub.tracks.map((tr) => [tr.kind, tr]));
    assert.equal(byKind.TRACK_KIND_AUDIO.name, 'microphone');
    assert.equal(byKind.TRACK_KIND_VIDEO.name, 'camera');
    assert.equal(byKind.TRACK_KIND_AUDIO.mid, pub.mids.audio);
    assert.equal(byKind.TRACK_KIND_VIDEO.mid, pub.mids.video);
    assert.match(pub.answerSdp, /a=ice-lite/);

    // Media: the shards must authenticate and decrypt Chromium's SRTP.
    const tMedia = Date.now();
    let samples = [];
    let rtp = 0;
    let connected = 0;
    for (;;) {
      samples = await fetchMetrics(server.httpUrl);
      rtp = sumMetric(samples, 'ringcast_srtp_packets_in_total', { kind: 'rtp' });
      connected = sumMetric(samples, 'ringcast_transports_connected_total');
      if (rtp >= MIN_RTP_PACKETS && connected >= 1) break;
      if (Date.now() - tMedia > METRICS_TIMEOUT_MS) {
        const relevant = samples.filter((s) => /srtp|transports|drops|dtls|stun|packets_in/.test(s.name));
        assert.fail(`after ${METRICS_TIMEOUT_MS} ms: ${rtp} decrypted RTP packets (want >= ${MIN_RTP_PACKETS}), ` +
          `${connected} connected transports (want >= 1)\nmetrics: ${JSON.stringify(relevant)}\n${await diagnostics()}`);
      }
      await sleep(250);
    }
    const rtcp = sumMetric(samples, 'ringcast_srtp_packets_in_total', { kind: 'rtcp' });
    note(`metrics after ${Date.now() - tMedia} ms: ${rtp} RTP + ${rtcp} RTCP packets decrypted, ` +
      `${connected} transport(s) connected`);

    const profiles = samples.filter((s) => s.name === 'ringcast_transports_connected_total' && s.value > 0)
      .map((s) => s.labels.srtp_profile);
    assert.equal(profiles.length, 1, `expected one SRTP profile label, got ${JSON.stringify(profiles)}`);
    const drops = describeDrops(samples);
    note(`drops: ${drops.length ? drops.join(', ') : 'none'}`);
    assert.equal(sumMetric(samples, 'ringcast_drops_total', { reason: 'srtp_auth_failed' }), 0,
      `SRTP authentication failures: ${drops.join(', ')}`);
    const backends = samples.filter((s) => s.name === 'ringcast_datapath_backend' && s.value > 0)
      .map((s) => s.labels.backend);
    if (backend !== 'auto') {
      assert.deepEqual(backends, [backend.replace('-', '_')], `datapath backend metric: ${JSON.stringify(backends)}`);
    }

    // The sender's view.
    const stats = await withTimeout(page.evaluate(() => window.ringcastStats()), 10_000, 'getStats');
    const audio = stats.outbound.audio;
    const video = stats.outbound.video;
    assert.ok(audio && audio.packetsSent > 0, `no audio outbound-rtp packets: ${JSON.stringify(stats.outbound)}`);
    assert.ok(video && video.packetsSent > 0, `no video outbound-rtp packets: ${JSON.stringify(stats.outbound)}`);
    note(`Chromium sent audio ${audio.packetsSent} pkts (${audio.codec}), video ${video.packetsSent} pkts (${video.codec})`);
    const tr = stats.transport || {};
    note(`SRTP profile: ${profiles[0]} (server metric); Chromium transport: srtpCipher=${tr.srtpCipher} ` +
      `tlsVersion=${tr.tlsVersion} dtlsCipher=${tr.dtlsCipher} dtlsRole=${tr.dtlsRole}`);
    if (stats.candidatePair) {
      note(`selected pair: ${stats.candidatePair.local} -> ${stats.candidatePair.remote} ` +
        `(nominated=${stats.candidatePair.nominated})`);
    }
    if (tr.srtpCipher) {
      const norm = (s) => s.replace(/^AES_CM_128_HMAC_SHA1_80$/, 'AES128_CM_HMAC_SHA1_80').replace(/^SRTP_/, '');
      assert.equal(norm(tr.srtpCipher), norm(profiles[0]), 'Chromium and Ringcast disagree on the SRTP profile');
    }

    // Transport-wide congestion control: negotiated, fed back, and followed.
    assert.match(pub.answerSdp, /a=rtcp-fb:\d+ transport-cc/, 'the answer lacks transport-cc');
    assert.match(pub.answerSdp, /a=extmap:\d+ http:\/\/www\.ietf\.org\/id\/draft-holmer-rmcat-transport-wide-cc-extensions-01/,
      'the answer lacks the transport-wide sequence number extension');
    const tEstimate = Date.now();
    let feedback = 0;
    let estimate = 0;
    for (;;) {
      feedback = sumMetric(await fetchMetrics(server.httpUrl), 'ringcast_twcc_feedback_sent_total');
      const s = await page.evaluate(() => window.ringcastStats());
      estimate = s.candidatePair?.availableOutgoingBitrate || 0;
      if (feedback >= MIN_TWCC_FEEDBACK && estimate >= MIN_ESTIMATE_BPS) break;
      if (Date.now() - tEstimate > ESTIMATE_TIMEOUT_MS) {
        assert.fail(`after ${ESTIMATE_TIMEOUT_MS} ms: ${feedback} transport-wide feedback messages sent ` +
          `(want >= ${MIN_TWCC_FEEDBACK}), Chromium's availableOutgoingBitrate ${estimate} bit/s ` +
          `(want >= ${MIN_ESTIMATE_BPS})\n${await diagnostics()}`);
      }
      await sleep(500);
    }
    note(`transport-cc: ${feedback} feedback messages sent; Chromium's estimate ${Math.round(estimate / 1000)} kbit/s ` +
      `${Date.now() - tEstimate} ms after media flowed`);

    // Server streaming: the Events stream must have said the publisher transport is up.
    const tEvent = Date.now();
    let st;
    for (;;) {
      st = await page.evaluate(() => window.ringcastState());
      const up = st.events.some((e) => e.event === 'transportState' &&
        e.transportState.role === 'TRANSPORT_ROLE_PUBLISHER' && e.transportState.state === 'TRANSPORT_STATE_CONNECTED');
      if (up) break;
      if (Date.now() - tEvent > EVENT_TIMEOUT_MS) {
        assert.fail(`the Events stream did not report the publisher transport CONNECTED within ${EVENT_TIMEOUT_MS} ms ` +
          `after media flowed; events: ${JSON.stringify(st.events)}; stream error: ${st.eventsError}`);
      }
      await sleep(100);
    }
    note(`events: ${st.events.map((e) => e.event === 'transportState'
      ? `transportState(${e.transportState.role}, ${e.transportState.state})` : e.event).join(', ')}`);
    assert.equal(st.eventsError, null, `the Events stream failed: ${st.eventsError}`);

    const left = await withTimeout(page.evaluate(() => window.ringcastLeave()), 10_000, 'leave');
    note(`left; Events stream ${left.endedByServer ? 'ended by the server' : 'still open after 2 s (cancelled)'}` +
      `${left.eventsError ? ` with ${left.eventsError}` : ''}`);

    await browser.close();
    await stopServerChecked(server, note);
    note(`case took ${Date.now() - began} ms`);
    passed = true;
  } finally {
    await closeCase({ browser, web, server, passed });
  }
}

for (const backend of BACKENDS) {
  test(`Chromium publishes camera + microphone over gRPC-Web (media backend ${backend})`,
    { timeout: CASE_TIMEOUT_MS }, (t) => runCase(t, backend));
}
