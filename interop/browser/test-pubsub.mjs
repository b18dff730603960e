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
//   - checks that the subscribers sent transport-wide feedback (transport-cc)
//     and that their estimates were sampled;
//   - checks that Chromium took Ringcast's rewritten RTCP sender reports (for
//     lip sync): waits (at most 10 s: Chromium's audio senders report every
//     ~5 s) until every inbound-rtp stream of every page has its
//     remote-outbound-rtp entry (inbound remoteId <-> remote-outbound localId)
//     with reportsSent > 0, whose packetsSent is close to the inbound
//     packetsReceived: not above packetsReceived + packetsLost + 5, and not
//     below what the stream's packet rate allows since that report arrived;
//   - checks /metrics: ringcast_rtp_forwarded_total > 0, no srtp_auth_failed,
//     ringcast_sender_reports_sent_total > 0, and a ringcast_subscriber_rtt_seconds
//     summary (RTT from the subscribers' receiver reports) with a count > 0;
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
import path from 'node:path';
import {
  backendsFromEnv, checkForwardingMetrics, closeCase, createRoom, describeInbound, dumpPubsubPages, fmt, inboundFrom,
  launchChromium, leaveAndStop, mintToken, openPubsubPage, pubsubDiagnostics, pubsubSnapshot, sleep, startPubsubPages,
  startRingcast, startWebServer, streamProblems, sumMetric, waitForMedia, BACKGROUND_TAB_ARGS,
} from './harness.mjs';

const BACKENDS = backendsFromEnv();
const PAGES = Math.max(2, Number(process.env.RINGCAST_PUBSUB_PAGES || 3));
const LOG_LEVEL = process.env.RINGCAST_TEST_LOG_LEVEL || 'info';

const GATHER_TIMEOUT_MS = 10_000;
const CONNECT_TIMEOUT_MS = 20_000;
const MEDIA_TIMEOUT_MS = 30_000;
// Each subscriber must decode each other participant's video this soon after all have published.
const FIRST_FRAME_MAX_MS = Number(process.env.RINGCAST_PUBSUB_FIRST_FRAME_MS || 5_000);
// How long to watch the streams grow (longer runs show bandwidth estimation, PLIs, NACKs).
const GROWTH_INTERVAL_MS = Number(process.env.RINGCAST_PUBSUB_OBSERVE_MS || 2_000);
// Sender reports: Chromium's publisher sends one every ~1 s (video) or ~5 s (audio,
// randomized 0.5x..1.5x); Ringcast rewrites each for every subscriber.
const SR_TIMEOUT_MS = 10_000;
const CASE_TIMEOUT_MS = 150_000 + GROWTH_INTERVAL_MS + SR_TIMEOUT_MS;
// Loopback: a handful of lost packets at start-up is tolerable, a steady loss is not
// (streamProblems: at most max(10, 5 %) lost, mean jitter-buffer delay under 1 s).
// The fake camera at a modest size: N pages encode one stream and decode N-1 on 2 cores.
const VIDEO_CONSTRAINTS = { width: 640, height: 360, frameRate: 20 };

/**
 * Problems with what inbound-rtp `b` (a: the same stream, earlier) says about the
 * latest sender report for it (session.js stats(): remoteOutbound). Also returns
 * a one-line description.
 */
function senderReportCheck(key, a, b) {
  const ro = b.remoteOutbound;
  if (!ro) return { problems: [`${key}: no remote-outbound-rtp entry (no sender report accepted for SSRC ${b.ssrc})`], text: 'no SR' };
  const problems = [];
  if (!ro.linked) problems.push(`${key}: inbound-rtp and remote-outbound-rtp ${ro.id} do not name each other (remoteId/localId)`);
  if (!(ro.reportsSent > 0)) problems.push(`${key}: remote-outbound-rtp reportsSent ${ro.reportsSent}`);
  // The report counts what Ringcast had sent when it went out; the receiver has got more
  // since, at about the stream's rate. `age`: the report's arrival, to this snapshot.
  const age = (b.timestamp - ro.timestamp) / 1000;
  const rate = (b.packetsReceived - a.packetsReceived) / ((b.timestamp - a.timestamp) / 1000);
  const behind = b.packetsReceived - ro.packetsSent;
  const maxBehind = Math.round(rate * (Math.min(Math.max(age, 0), 10) + 0.5) + 10);
  const maxAhead = Math.max(b.packetsLost, 0) + 5;
  const text = `SR x${ro.reportsSent}: packetsSent ${ro.packetsSent} vs packetsReceived ${b.packetsReceived} ` +
    `(lost ${b.packetsLost}), latest ${fmt(age)} s old at ${fmt(rate, 0)} pkt/s`;
  if (!Number.isFinite(ro.packetsSent) || behind > maxBehind || -behind > maxAhead) {
    problems.push(`${key}: ${text}: packetsSent should be within [${b.packetsReceived - maxBehind}, ` +
      `${b.packetsReceived + maxAhead}]`);
  }
  return { problems, text };
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
    browser = await launchChromium({ extraArgs: BACKGROUND_TAB_ARGS });
    for (let i = 0; i < PAGES; i++) pages.push(await openPubsubPage(browser, web.url, `page-${i}`));

    // Everything a failure message needs: per page, the steps, states, stats and SDPs.
    const diagnostics = (opts) => pubsubDiagnostics(pages, server, opts);

    // The room (admin token minted here with node's crypto), then all pages at once.
    const room = `pubsub-${backend}-${crypto.randomBytes(4).toString('hex')}`;
    await createRoom(server.grpcUrl, room, PAGES + 1);

    const tStart = Date.now();
    const results = await startPubsubPages(pages, server.grpcUrl, (p) => ({
      token: mintToken(p.identity, { room, publish: true, subscribe: true }),
      video: VIDEO_CONSTRAINTS,
    }), { gatherTimeoutMs: GATHER_TIMEOUT_MS, connectTimeoutMs: CONNECT_TIMEOUT_MS, diagnostics });
    const ua = results[0].userAgent.match(/Chrom(?:e|ium)\/[0-9.]+/)?.[0];
    note(`${ua}: ${PAGES} pages joined room ${room} and published in ${Date.now() - tStart} ms`);
    for (const [i, r] of results.entries()) {
      assert.deepEqual(r.rejected, [], `${pages[i].identity}: Publish rejected m-lines`);
      note(`${pages[i].identity} published ${r.tracks.map((tr) => `${tr.kind.replace('TRACK_KIND_', '').toLowerCase()} ` +
        `${tr.mimeType} ${tr.sid}`).join(', ')}`);
    }

    // Media: every page must decode video and receive audio from every other page.
    const others = (p) => pages.filter((o) => o !== p).map((o) => o.identity);
    const expectations = pages.flatMap((p) => others(p).flatMap((o) =>
      ['video', 'audio'].map((kind) => ({ page: p, publisher: o, kind }))));
    const { stats: first, firstSeen, ms: mediaMs } = await waitForMedia(pages, expectations,
      { timeoutMs: MEDIA_TIMEOUT_MS, diagnostics });
    note(`every page decodes video and receives audio from every other page ${mediaMs} ms after publishing; ` +
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
    const second = await pubsubSnapshot(pages);
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
          problems.push(...streamProblems(`${p.identity} <- ${o} ${kind}`, a, b));
        }
      }
    });
    if (process.env.RINGCAST_PUBSUB_DUMP_DIR) {
      note(`SDPs, states and stats written to ${await dumpPubsubPages(pages, second,
        path.join(process.env.RINGCAST_PUBSUB_DUMP_DIR, backend))}`);
    }
    if (problems.length) assert.fail(`media problems:\n  ${problems.join('\n  ')}\n${await diagnostics()}`);

    // Sender reports: every inbound stream of every page must have one, linked to it.
    const srBegan = Date.now();
    let srPrev = second;
    for (;;) {
      await sleep(500); // also past Chromium's getStats() cache
      const cur = await pubsubSnapshot(pages);
      const results = [];
      pages.forEach((p, i) => {
        for (const b of cur[i].inbound) {
          const a = srPrev[i].inbound.find((x) => x.ssrc === b.ssrc && x.mid === b.mid);
          const key = `${p.identity} <- ${b.publisher} ${b.kind} (ssrc ${b.ssrc})`;
          results.push({ key, ...(a && a.timestamp < b.timestamp ? senderReportCheck(key, a, b)
            : { problems: [`${key}: not in the previous snapshot (or no newer stats)`], text: '-' }) });
        }
      });
      const problemsSr = results.flatMap((r) => r.problems);
      const waited = Date.now() - srBegan;
      if (!problemsSr.length || waited > SR_TIMEOUT_MS) {
        note(`sender reports, ${waited} ms after the media checks:`);
        for (const r of results) note(`  ${r.key}: ${r.text}`);
        if (problemsSr.length) {
          assert.fail(`Chromium has not taken Ringcast's sender reports:\n  ${problemsSr.join('\n  ')}\n${await diagnostics()}`);
        }
        break;
      }
      if (srPrev === second) note(`sender reports: waiting for ${problemsSr.length} stream(s): ${problemsSr.join('; ')}`);
      srPrev = cur;
    }

    // The server's view.
    const samples = await checkForwardingMetrics(server, backend, note, diagnostics);
    const srSent = sumMetric(samples, 'ringcast_sender_reports_sent_total');
    const rttCount = sumMetric(samples, 'ringcast_subscriber_rtt_seconds_count');
    const rttSum = sumMetric(samples, 'ringcast_subscriber_rtt_seconds_sum');
    const quantiles = samples.filter((x) => x.name === 'ringcast_subscriber_rtt_seconds' && x.labels.quantile)
      .map((x) => `p${Number(x.labels.quantile) * 100}=${fmt(x.value * 1000, 2)}ms`);
    const lossCount = sumMetric(samples, 'ringcast_subscriber_loss_ratio_count');
    note(`metrics: ${srSent} sender reports sent; subscriber RTT: ${rttCount} samples, mean ` +
      `${fmt(rttCount ? (rttSum / rttCount) * 1000 : NaN, 2)} ms, ${quantiles.join(' ') || 'no quantiles'}; ` +
      `subscriber loss ratio: ${lossCount} samples, sum ${fmt(sumMetric(samples, 'ringcast_subscriber_loss_ratio_sum'), 3)}`);
    assert.ok(srSent > 0, `ringcast_sender_reports_sent_total is ${srSent}\n${await diagnostics()}`);
    assert.ok(samples.some((x) => x.name === 'ringcast_subscriber_rtt_seconds_count'),
      `/metrics has no ringcast_subscriber_rtt_seconds summary: ${samples.filter((x) => x.name.startsWith('ringcast_subscriber'))
        .map((x) => `${x.name}${JSON.stringify(x.labels)}=${x.value}`).join(' ') || 'no ringcast_subscriber_* sample'}`);
    assert.ok(rttCount > 0, `ringcast_subscriber_rtt_seconds_count is ${rttCount}\n${await diagnostics()}`);
    // Subscribers negotiated transport-cc: Chromium feeds back Ringcast's transport-wide
    // sequence numbers, which drive each subscriber's estimate.
    const fbIn = sumMetric(samples, 'ringcast_twcc_feedback_received_total');
    const estCount = sumMetric(samples, 'ringcast_subscriber_estimate_bps_count');
    const estSum = sumMetric(samples, 'ringcast_subscriber_estimate_bps_sum');
    note(`transport-cc: ${fbIn} feedback messages from subscribers; estimate: ${estCount} samples, mean ` +
      `${fmt(estCount ? estSum / estCount / 1000 : NaN, 0)} kbit/s`);
    assert.ok(fbIn > 0, `no transport-wide feedback from subscribers\n${await diagnostics()}`);
    assert.ok(estCount > 0, `no subscriber estimate samples\n${await diagnostics()}`);
    const renegs = await Promise.all(pages.map((p) => p.page.evaluate(() => window.pubsubState())));
    note(`subscriber negotiations: ${renegs.map((s) => `${s.identity} ${s.negotiations.length} ` +
      `(answered v${s.answeredVersion}${s.errors.length ? `, errors: ${s.errors.join('; ')}` : ''})`).join(', ')}`);

    await leaveAndStop(pages, browser, server, note);
    note(`case took ${Date.now() - began} ms`);
    passed = true;
  } finally {
    await closeCase({ browser, web, server, passed });
  }
}

for (const backend of BACKENDS) {
  test(`${PAGES} Chromium pages publish and subscribe to each other in one room (media backend ${backend})`,
    { timeout: CASE_TIMEOUT_MS }, (t) => runCase(t, backend));
}
