// Loss on one subscriber's link: Ringcast's NACK retransmissions keep that
// subscriber decoding, and the other subscribers are unaffected.
//
//   cd interop/browser && npm ci && node --test test-loss-nack.mjs
//
// Per media backend (default io-uring only) it:
//   - starts the ringcast binary on ephemeral ports with one shard (harness.mjs)
//     and creates a room over gRPC-Web;
//   - opens pubsub-page.html in headless Chromium: one page publishes its fake
//     camera (640x360, 20 fps) and microphone; then three subscribe-only pages
//     join: 'lossy', whose subscriber transport goes through a UDP relay in this
//     process (harness.mjs startLossyRelay; the page rewrites the candidates of
//     Ringcast's subscriber offer to the relay: ?relayPort=N), and two 'clean'
//     ones connected directly;
//   - the relay forwards everything client -> server, and server -> client
//     drops 5 % of the SRTP packets (seeded PRNG, so a run is repeatable;
//     STUN, DTLS and SRTCP always pass), counting the drops per SSRC;
//   - waits (20 s) until every subscriber decodes the video and receives the
//     audio, then watches for 10 s, in 2 s steps, that every subscriber's video
//     keeps decoding, and checks:
//       lossy: the relay dropped video packets, the page sent NACKs
//         (inbound-rtp nackCount), repairs came through the relay (a dropped
//         sequence number again on the media SSRC, or packets on the RTX SSRC),
//         few of the dropped packets stay unrecovered (packetsLost, minus
//         retransmittedPacketsReceived when RTX is negotiated: Chromium counts a
//         packet repaired by RTX as lost on the media SSRC), few freezes;
//       clean: (almost) no loss, no freeze;
//       /metrics: ringcast_nacks_received_total and ringcast_retransmits_total
//         above 0, ringcast_rtp_forwarded_total above 0, no srtp_auth_failed;
//     either way of repairing passes (a plain retransmission on the original
//     SSRC, or RTX): the checks read NACKs, frames, loss and repairs of both kinds;
//   - leaves, closes the browser and stops the server (SIGTERM, exit 0).
// Every failure message carries each page's step log, states, stats, the
// latest subscriber SDPs, the relay's counters and the server log tail.
//
// Environment:
//   RINGCAST_BIN            server binary (default ../../target/debug/ringcast)
//   RINGCAST_MEDIA_BACKEND  backends, comma-separated (default io-uring)
//   RINGCAST_TEST_LOG_LEVEL server --log-level (default info)
//   RINGCAST_LOSS_RATE      fraction of server -> client SRTP packets the relay drops (default 0.05)
//   RINGCAST_LOSS_SEED      the relay's PRNG seed (default 5)
//   RINGCAST_LOSS_OBSERVE_MS how long to watch the streams (default 10000)
//   RINGCAST_LOSS_NO_RTX=1  the lossy page removes RTX from the subscriber offers it
//                           applies (pubsub-page.html ?noRtx=1): Ringcast must repair
//                           with plain retransmissions (default: whatever is negotiated)
//   CHROMIUM_PATH           browser (default /usr/bin/chromium)
//   RINGCAST_TEST_KEEP_LOGS keep the server logs of passing cases too
// Server logs go to $TMPDIR/ringcast-loss-nack-<backend>-<pid>.log (path
// printed; removed when the case passes).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import {
  backendsFromEnv, candidates, checkForwardingMetrics, closeCase, createRoom, describeInbound, fmt, inboundFrom, inboundWindows, launchChromium,
  leaveAndStop, mintToken, openPubsubPage, pubsubDiagnostics, pubsubSnapshot, sleep, startLossyRelay,
  startPubsubPages, startRingcast, startWebServer, streamProblems, sumMetric, waitForMedia,
  BACKGROUND_TAB_ARGS,
} from './harness.mjs';

const BACKENDS = backendsFromEnv('io-uring');
const LOG_LEVEL = process.env.RINGCAST_TEST_LOG_LEVEL || 'info';
const LOSS_RATE = Number(process.env.RINGCAST_LOSS_RATE || 0.05);
const SEED = Number(process.env.RINGCAST_LOSS_SEED || 5);
const OBSERVE_MS = Number(process.env.RINGCAST_LOSS_OBSERVE_MS || 10_000);
const STEP_MS = 2_000;
// Take RTX out of the lossy page's subscriber offers, so that repairs must be plain retransmissions.
const NO_RTX = process.env.RINGCAST_LOSS_NO_RTX === '1';

const GATHER_TIMEOUT_MS = 10_000;
const CONNECT_TIMEOUT_MS = 20_000;
const MEDIA_TIMEOUT_MS = 20_000;
const CASE_TIMEOUT_MS = 150_000 + OBSERVE_MS;
const VIDEO_CONSTRAINTS = { width: 640, height: 360, frameRate: 20 };

const PUBLISHER = 'publisher';
const LOSSY = 'lossy';
const CLEAN = ['clean-1', 'clean-2'];

// The lossy subscriber's video: at most this many of the dropped packets may stay unrecovered.
const MAX_UNRECOVERED_FRACTION = 0.25;
const MAX_UNRECOVERED_ABSOLUTE = 5;
// Freezes (Chromium: a frame gap above max(3x the mean, mean + 150 ms)).
const MAX_FREEZES_LOSSY = 3;
const MAX_FREEZES_CLEAN = 1;
// The clean subscribers: loopback, no shaping.
const CLEAN_LIMITS = { maxLostFraction: 0.01, maxLostAbsolute: 3 };

async function runCase(t, backend) {
  const began = Date.now();
  const note = (s) => t.diagnostic(`[${backend}] ${s}`);
  let server;
  let relay; // startLossyRelay
  let web;
  let browser;
  const pages = [];
  let passed = false;
  try {
    server = await startRingcast({ backend, logLevel: LOG_LEVEL, logTag: 'loss-nack' });
    note(`ringcast ${server.grpcUrl} (gRPC-Web), ${server.httpUrl} (metrics); log: ${server.logPath} ` +
      '(kept if the case fails)');
    const room = `loss-nack-${backend}-${crypto.randomBytes(4).toString('hex')}`;
    await createRoom(server.grpcUrl, room, 8);
    relay = await startLossyRelay({ lossRate: LOSS_RATE, seed: SEED });
    web = await startWebServer({ '/': 'pubsub-page.html' });
    browser = await launchChromium({ extraArgs: BACKGROUND_TAB_ARGS });

    const pub = await openPubsubPage(browser, web.url, PUBLISHER);
    const lossy = await openPubsubPage(browser, web.url, LOSSY, `?relayPort=${relay.port}${NO_RTX ? '&noRtx=1' : ''}`);
    const clean = [];
    for (const id of CLEAN) clean.push(await openPubsubPage(browser, web.url, id));
    pages.push(pub, lossy, ...clean);
    const subscribers = [lossy, ...clean];
    const diagnostics = async (opts) => `${await pubsubDiagnostics(pages, server, opts)}\n\n${relay.describe()}`;
    const timeouts = { gatherTimeoutMs: GATHER_TIMEOUT_MS, connectTimeoutMs: CONNECT_TIMEOUT_MS, diagnostics };

    // The publisher first: its answer carries the shard's media address, the relay's target.
    const [published] = await startPubsubPages([pub], server.grpcUrl, () => ({
      token: mintToken(PUBLISHER, { room, publish: true, subscribe: true }), video: VIDEO_CONSTRAINTS,
    }), timeouts);
    assert.deepEqual(published.rejected, [], `${PUBLISHER}: Publish rejected m-lines`);
    const { answer } = await pub.page.evaluate(() => window.pubsubPublisherSdps());
    const media = candidates(answer).find((c) => c.address === '127.0.0.1');
    assert.ok(media, `no 127.0.0.1 candidate in Ringcast's publisher answer:\n${answer}`);
    relay.target = media;
    note(`${PUBLISHER} published ${published.tracks.map((x) => `${x.mimeType} ${x.sid}`).join(', ')}; ` +
      `relay 127.0.0.1:${relay.port} -> ${media.address}:${media.port}, loss ${LOSS_RATE}, seed ${SEED}` +
      `${NO_RTX ? ', RTX removed from the lossy page\'s offers' : ''}`);

    await startPubsubPages(subscribers, server.grpcUrl, (p) => ({
      token: mintToken(p.identity, { room, subscribe: true }), publish: false,
    }), timeouts);
    const expectations = subscribers.flatMap((page) => ['video', 'audio'].map((kind) => ({ page, publisher: PUBLISHER, kind })));
    const { firstSeen, ms } = await waitForMedia(pages, expectations, { timeoutMs: MEDIA_TIMEOUT_MS, diagnostics });
    note(`every subscriber decodes video and receives audio ${ms} ms after joining; first seen (ms): ` +
      `${[...firstSeen].map(([k, v]) => `${k} ${v}`).join(', ')}`);

    // The lossy page really goes through the relay, and only its subscriber transport does.
    const lossyState = await lossy.page.evaluate(() => window.pubsubState());
    assert.deepEqual(lossyState.relayedFrom, [`${media.address}:${media.port}`],
      `${LOSSY}: the subscriber offers' candidates are not the publisher's media address\n${await diagnostics()}`);

    // Watch the streams in steps: every subscriber's video keeps decoding in every step.
    const snapshots = [await pubsubSnapshot(pages)];
    const problems = [];
    for (let elapsed = 0; elapsed < OBSERVE_MS; elapsed += STEP_MS) {
      await sleep(STEP_MS);
      const cur = await pubsubSnapshot(pages);
      const prev = snapshots.at(-1);
      snapshots.push(cur);
      for (const p of subscribers) {
        const i = pages.indexOf(p);
        const [a] = inboundFrom(prev[i], PUBLISHER, 'video');
        const [b] = inboundFrom(cur[i], PUBLISHER, 'video');
        if (!(b && a && b.framesDecoded > a.framesDecoded)) {
          problems.push(`${p.identity}: no video frame decoded between ${elapsed} and ${elapsed + STEP_MS} ms ` +
            `(${a ? describeInbound(a) : '-'} -> ${b ? describeInbound(b) : '-'})`);
        }
      }
    }
    const [first, last] = [snapshots[0], snapshots.at(-1)];
    const seconds = (last[0].at - first[0].at) / 1000;

    const pubVideo = last[0].outbound.find((s) => s.kind === 'video') || {};
    note(`${PUBLISHER}: video ${pubVideo.codec} ${pubVideo.frameWidth}x${pubVideo.frameHeight} ` +
      `@${fmt(pubVideo.framesPerSecond, 0)}fps encoded=${pubVideo.framesEncoded} nack=${pubVideo.nackCount} ` +
      `pli=${pubVideo.pliCount} retransmitted=${pubVideo.retransmittedPacketsSent}`);
    const results = {};
    for (const { p, kind, a, b, key } of inboundWindows({ pages, subscribers, first, last, publisher: PUBLISHER, problems })) {
      const dropped = relay.streams.get(b.ssrc)?.dropped || 0;
      const fps = kind === 'video' ? (b.framesDecoded - a.framesDecoded) / seconds : NaN;
      results[`${p.identity} ${kind}`] = { b, dropped, fps };
      note(`  ${key}: ${describeInbound(b)}${p === lossy ? `; relay dropped ${dropped}` : ''}` +
        `${kind === 'video' ? `; ${fmt(fps)} frames/s decoded over the last ${fmt(seconds)} s` : ''}`);
      if (p === lossy) {
        // Loss is checked below, for video (audio is reported: Chromium NACKs Opus too, but
        // NetEq may give up on a late repair).
        problems.push(...streamProblems(key, a, b, { maxLostFraction: null }));
      } else {
        problems.push(...streamProblems(key, a, b, CLEAN_LIMITS));
        if (kind === 'video' && b.freezeCount > MAX_FREEZES_CLEAN) {
          problems.push(`${key}: ${b.freezeCount} freezes (max ${MAX_FREEZES_CLEAN})`);
        }
      }
    }

    const lv = results[`${LOSSY} video`];
    if (lv) {
      const { b, dropped } = lv;
      // Repairs the relay let through: dropped sequence numbers that came again on the
      // media SSRC (plain retransmissions), and packets on the RTX SSRC, if there is one.
      lv.plainRepairs = relay.streams.get(b.ssrc)?.redelivered || 0;
      lv.rtxRepairs = (b.rtxSsrc && relay.streams.get(b.rtxSsrc)?.forwarded) || 0;
      // Chromium counts a packet repaired by RTX as lost on the media SSRC (only packets that
      // are not "recovered" reach its receive statistics) and as retransmittedPacketsReceived;
      // a plain retransmission on the media SSRC just makes it received.
      lv.unrecovered = Math.max(0, b.packetsLost - (b.rtxSsrc ? b.retransmittedPacketsReceived || 0 : 0));
      const maxLost = MAX_UNRECOVERED_ABSOLUTE + MAX_UNRECOVERED_FRACTION * dropped;
      if (!(dropped > 0)) problems.push(`${LOSSY} video: the relay dropped no packet of SSRC ${b.ssrc}`);
      if (!(b.nackCount > 0)) problems.push(`${LOSSY} video: nackCount ${b.nackCount} although ${dropped} packets were dropped`);
      if (!(lv.plainRepairs + lv.rtxRepairs > 0)) {
        problems.push(`${LOSSY} video: no retransmission reached the relay (SSRC ${b.ssrc}, RTX SSRC ${b.rtxSsrc})`);
      }
      if (lv.unrecovered > maxLost) {
        problems.push(`${LOSSY} video: ${lv.unrecovered} of ${dropped} dropped packets stay lost (packetsLost ` +
          `${b.packetsLost}, retransmittedPacketsReceived ${b.retransmittedPacketsReceived}, RTX SSRC ${b.rtxSsrc}): ` +
          `NACKs did not recover them (max ${fmt(maxLost, 0)})`);
      }
      if (b.freezeCount > MAX_FREEZES_LOSSY) problems.push(`${LOSSY} video: ${b.freezeCount} freezes (max ${MAX_FREEZES_LOSSY})`);
    }
    note(relay.describe());
    if (problems.length) assert.fail(`media problems:\n  ${problems.join('\n  ')}\n${await diagnostics()}`);

    const samples = await checkForwardingMetrics(server, backend, note, diagnostics);
    const nacks = sumMetric(samples, 'ringcast_nacks_received_total');
    const retransmits = sumMetric(samples, 'ringcast_retransmits_total');
    const la = results[`${LOSSY} audio`];
    note(`summary: dropped video ${lv.dropped}, audio ${la?.dropped}; lossy video nackCount ${lv.b.nackCount}, ` +
      `repairs through the relay ${lv.plainRepairs} plain + ${lv.rtxRepairs} RTX, packetsLost ${lv.b.packetsLost}, ` +
      `retransmittedPacketsReceived ${lv.b.retransmittedPacketsReceived}, unrecovered ${lv.unrecovered} ` +
      `(audio: ${la?.b.packetsLost} lost, ${la?.b.nackCount} NACKed), freezes ${lv.b.freezeCount}, pli ${lv.b.pliCount}, ` +
      `${fmt(lv.fps)} fps (clean: ${CLEAN.map((id) => fmt(results[`${id} video`]?.fps)).join(', ')} fps); ` +
      `server: ${nacks} NACKs received, ${retransmits} retransmits`);
    assert.ok(nacks > 0, `ringcast_nacks_received_total is ${nacks}\n${await diagnostics()}`);
    assert.ok(retransmits > 0, `ringcast_retransmits_total is ${retransmits} after ${nacks} NACKs\n${await diagnostics()}`);

    await leaveAndStop(pages, browser, server, note);
    note(`case took ${Date.now() - began} ms`);
    passed = true;
  } finally {
    await closeCase({ browser, web, server, passed });
    if (relay) relay.close();
  }
}

for (const backend of BACKENDS) {
  test(`one subscriber behind ${LOSS_RATE * 100} % loss keeps decoding through NACKs, the others are unaffected ` +
    `(media backend ${backend})`, { timeout: CASE_TIMEOUT_MS }, (t) => runCase(t, backend));
}
