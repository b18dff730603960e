// Loss on the PUBLISHER's link: Ringcast NACKs the publisher for what it lost
// on the way in, unwraps the RTX repairs into the original stream, and its
// subscribers keep decoding.
//
//   cd interop/browser && npm ci && node --test test-upstream-loss.mjs
//
// Per media backend (default io-uring only) it:
//   - starts the ringcast binary on ephemeral ports with one shard (harness.mjs)
//     and creates a room over gRPC-Web;
//   - opens pubsub-page.html in headless Chromium for the publisher with
//     ?pubRelayPort=N: the page rewrites the candidates of Ringcast's publish
//     answer to a UDP relay in this process (harness.mjs startLossyRelay,
//     direction 'toServer'), after telling the relay Ringcast's address through
//     window.pubRelayTarget; the relay drops 5 % of the client -> server SRTP
//     (seeded PRNG; STUN, DTLS and SRTCP always pass, and nothing is dropped
//     server -> client), RTX included;
//   - the publisher sends its fake camera (960x540, 20 fps: Chromium sends only two
//     layers at 640x360) as SIMULCAST (three rids, q/h/f, scaled down by 4/2/1:
//     Chromium signals no SSRC for them, so Ringcast learns the RTX SSRCs from the
//     MID and repaired-rtp-stream-id header extensions) and its microphone; two
//     subscribe-only pages join, connected directly;
//   - waits (20 s) until both subscribers decode the video and receive the audio,
//     lets the layers settle (at most 4 s: until both subscribers decode the top
//     layer's frame size), then watches for 8 s in 2 s steps that each keeps
//     decoding at least MIN_STEP_FPS frames/s with few freezes, and checks that
//     each subscriber's packetsLost (what Ringcast could not repair upstream)
//     stays small next to what the relay dropped;
//   - /metrics: ringcast_nacks_sent_total and ringcast_rtx_unwrapped_total above
//     0 (plus ringcast_rtp_forwarded_total, no srtp_auth_failed); reports
//     ringcast_packets_nacked_upstream_total, ringcast_rtp_duplicates_total,
//     ringcast_rtp_unknown_stream_total, ringcast_rtx_padding_total, and how long
//     Ringcast takes to NACK a gap (relay.reactions: from the packet after a
//     dropped one to the next NACK-sized SRTCP datagram to the publisher);
//   - leaves, closes the browser and stops the server (SIGTERM, exit 0).
// Every failure message carries each page's step log, states, stats, the
// publisher's SDPs, the relay's counters, the upstream metrics and the server
// log tail.
//
// Environment:
//   RINGCAST_BIN            server binary (default ../../target/debug/ringcast)
//   RINGCAST_MEDIA_BACKEND  backends, comma-separated (default io-uring)
//   RINGCAST_TEST_LOG_LEVEL server --log-level (default info)
//   RINGCAST_UPLOSS_RATE    fraction of client -> server SRTP packets the relay drops (default 0.05)
//   RINGCAST_UPLOSS_SEED    the relay's PRNG seed (default 7)
//   RINGCAST_UPLOSS_SIMULCAST=0  publish one video encoding instead of three
//   RINGCAST_UPLOSS_OBSERVE_MS how long to watch the streams (default 8000)
//   RINGCAST_UPLOSS_MAX_NACK_MS  the median delay from a gap Ringcast can see (the packet
//                           after a dropped one reaches it) to its next NACK to the
//                           publisher (harness.mjs relay.reactions) must not exceed this
//                           (default 30; about 3 ms measured with a debug build)
//   CHROMIUM_PATH           browser (default /usr/bin/chromium)
//   RINGCAST_TEST_KEEP_LOGS keep the server logs of passing cases too
// Server logs go to $TMPDIR/ringcast-upstream-loss-<backend>-<pid>.log (path
// printed; removed when the case passes).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import {
  backendsFromEnv, checkForwardingMetrics, closeCase, createRoom, describeInbound, fmt, inboundFrom, inboundWindows,
  launchChromium, leaveAndStop, mediaCountersLine, mintToken, openPubsubPage, pubsubDiagnostics, pubsubSnapshot,
  sleep, startLossyRelay, startPubsubPages, startRingcast, startWebServer, streamProblems, sumMetric, waitForMedia,
  BACKGROUND_TAB_ARGS,
} from './harness.mjs';

const BACKENDS = backendsFromEnv('io-uring');
const LOG_LEVEL = process.env.RINGCAST_TEST_LOG_LEVEL || 'info';
const LOSS_RATE = Number(process.env.RINGCAST_UPLOSS_RATE || 0.05);
const SEED = Number(process.env.RINGCAST_UPLOSS_SEED || 7);
const SIMULCAST = process.env.RINGCAST_UPLOSS_SIMULCAST !== '0';
const OBSERVE_MS = Number(process.env.RINGCAST_UPLOSS_OBSERVE_MS || 8_000);
const STEP_MS = 2_000;
const SETTLE_MS = 4_000;
const MAX_NACK_MS = Number(process.env.RINGCAST_UPLOSS_MAX_NACK_MS || 30);

const GATHER_TIMEOUT_MS = 10_000;
const CONNECT_TIMEOUT_MS = 20_000;
const MEDIA_TIMEOUT_MS = 20_000;
const CASE_TIMEOUT_MS = 120_000 + OBSERVE_MS;
const VIDEO_CONSTRAINTS = { width: 960, height: 540, frameRate: 20 };
const ENCODINGS = [
  { rid: 'q', scaleResolutionDownBy: 4 }, { rid: 'h', scaleResolutionDownBy: 2 }, { rid: 'f' },
];

const PUBLISHER = 'publisher';
const SUBSCRIBERS = ['sub-1', 'sub-2'];

// Each subscriber, in every 2 s step: at least this many frames/s decoded (the camera: 20),
// and over the whole observation at least MIN_MEAN_FPS, with at most MAX_FREEZES freezes
// (Chromium: a frame gap above max(3x the mean, mean + 150 ms)). Without loss they decode
// 20 frames/s without a freeze; with it, frames wait for repairs longer than the
// receivers' (loopback-sized) jitter buffers, some are dropped, and a freeze can happen:
// 0 or 1 in 8 s once Ringcast NACKs a gap as soon as it sees it (before that fix, when the
// first NACK waited for the shard's next timer, 1 to 3).
const MIN_STEP_FPS = 10;
const MIN_MEAN_FPS = 12;
const MAX_FREEZES = 3;
// Each subscriber's video packetsLost over the whole run (Ringcast forwards the repaired
// packets late, so only what it could not repair upstream stays lost): at most
// MAX_UNRECOVERED_ABSOLUTE + MAX_UNRECOVERED_FRACTION x the packets the relay dropped
// on the video layers.
const MAX_UNRECOVERED_FRACTION = 0.25;
const MAX_UNRECOVERED_ABSOLUTE = 5;

/** Payload types of an SDP: { byName: { 'VP8/90000': [pt...] }, rtx: { pt: apt } }. */
function payloadTypes(sdp) {
  const byName = {};
  const rtx = {};
  for (const l of (sdp || '').split(/\r?\n/)) {
    let m = l.match(/^a=rtpmap:(\d+) ([^ ]+)/);
    if (m) (byName[m[2]] ||= []).push(Number(m[1]));
    m = l.match(/^a=fmtp:(\d+) apt=(\d+)/);
    if (m) rtx[m[1]] = Number(m[2]);
  }
  return { byName, rtx };
}

async function runCase(t, backend) {
  const began = Date.now();
  const note = (s) => t.diagnostic(`[${backend}] ${s}`);
  let server;
  let relay; // startLossyRelay, in front of the publisher transport
  let web;
  let browser;
  const pages = [];
  let passed = false;
  try {
    server = await startRingcast({ backend, logLevel: LOG_LEVEL, logTag: 'upstream-loss' });
    note(`ringcast ${server.grpcUrl} (gRPC-Web), ${server.httpUrl} (metrics); log: ${server.logPath} ` +
      '(kept if the case fails)');
    const room = `upstream-loss-${backend}-${crypto.randomBytes(4).toString('hex')}`;
    await createRoom(server.grpcUrl, room, 8);
    relay = await startLossyRelay({ lossRate: LOSS_RATE, seed: SEED, direction: 'toServer' });
    web = await startWebServer({ '/': 'pubsub-page.html' });
    browser = await launchChromium({ extraArgs: BACKGROUND_TAB_ARGS });

    const pub = await openPubsubPage(browser, web.url, PUBLISHER, `?pubRelayPort=${relay.port}`);
    // The page calls this with Ringcast's address from the publish answer before it applies
    // the rewritten answer, so the relay forwards from the first connectivity check.
    await pub.page.exposeFunction('pubRelayTarget', (addr) => {
      const i = addr.lastIndexOf(':');
      relay.target = { address: addr.slice(0, i), port: Number(addr.slice(i + 1)) };
    });
    const subs = [];
    for (const id of SUBSCRIBERS) subs.push(await openPubsubPage(browser, web.url, id));
    pages.push(pub, ...subs);

    const diagnostics = async (opts) => `${await pubsubDiagnostics(pages, server, { publisherSdps: true, ...opts })}\n\n` +
      `media counters: ${await mediaCountersLine(server.httpUrl)}\n${relay.describe()}`;
    const timeouts = { gatherTimeoutMs: GATHER_TIMEOUT_MS, connectTimeoutMs: CONNECT_TIMEOUT_MS, diagnostics };

    const [published] = await startPubsubPages([pub], server.grpcUrl, () => ({
      token: mintToken(PUBLISHER, { room, publish: true, subscribe: true }), video: VIDEO_CONSTRAINTS,
      videoEncodings: SIMULCAST ? ENCODINGS : null,
    }), timeouts);
    assert.deepEqual(published.rejected, [], `${PUBLISHER}: Publish rejected m-lines`);
    const pubState = await pub.page.evaluate(() => window.pubsubState());
    assert.ok(relay.target && pubState.pubRelayedFrom.includes(`${relay.target.address}:${relay.target.port}`),
      `the publisher transport does not go through the relay (target ${JSON.stringify(relay.target)}, ` +
      `answer candidates ${JSON.stringify(pubState.pubRelayedFrom)})\n${await diagnostics()}`);
    const { offer } = await pub.page.evaluate(() => window.pubsubPublisherSdps());
    const pts = payloadTypes(offer);
    const rids = (offer.match(/^a=rid:\S+ send/mg) || []).map((l) => l.split(/[: ]/)[1]);
    note(`${PUBLISHER} published ${published.tracks.map((x) => `${x.mimeType} ${x.sid}`).join(', ')}` +
      `${SIMULCAST ? ` with rids ${rids.join(',')} (${offer.includes('a=ssrc-group:FID') ? 'FID groups' : 'no SSRC'} signalled)` : ''}; ` +
      `relay 127.0.0.1:${relay.port} -> ${relay.target.address}:${relay.target.port}, ${LOSS_RATE * 100} % loss ` +
      `client -> server, seed ${SEED}`);
    if (SIMULCAST) assert.deepEqual(rids, ENCODINGS.map((e) => e.rid), `rids in the publish offer:\n${offer}`);

    await startPubsubPages(subs, server.grpcUrl, (p) => ({
      token: mintToken(p.identity, { room, subscribe: true }), publish: false,
    }), timeouts);
    const expectations = subs.flatMap((page) => ['video', 'audio'].map((kind) => ({ page, publisher: PUBLISHER, kind })));
    const { firstSeen, ms } = await waitForMedia(pages, expectations, { timeoutMs: MEDIA_TIMEOUT_MS, diagnostics });
    note(`every subscriber decodes video and receives audio ${ms} ms after joining; first seen (ms): ` +
      `${[...firstSeen].map(([k, v]) => `${k} ${v}`).join(', ')}`);

    // Let the layers settle: the publisher's bandwidth estimate ramps up until every
    // layer is encoded, and the subscribers move up to the best layer that flows.
    const settleBegan = Date.now();
    let snap;
    for (;;) {
      snap = await pubsubSnapshot(pages);
      const layers = snap[0].outbound.filter((s) => s.kind === 'video' && s.frameHeight > 0);
      const top = Math.max(0, ...layers.map((s) => s.frameHeight));
      const heights = subs.map((p) => inboundFrom(snap[pages.indexOf(p)], PUBLISHER, 'video')[0]?.frameHeight);
      const settled = layers.length === (SIMULCAST ? ENCODINGS.length : 1) && heights.every((h) => h === top);
      if (settled || Date.now() - settleBegan > SETTLE_MS) {
        note(`${settled ? 'settled' : 'NOT settled'} after ${Date.now() - settleBegan} ms: the publisher encodes ` +
          `${layers.map((s) => `${s.rid || ''} ${s.frameWidth}x${s.frameHeight}`).join(', ')}; the subscribers decode ` +
          `${heights.join(', ')} px high`);
        break;
      }
      await sleep(250);
    }

    // Watch the streams in steps: every subscriber keeps decoding at a steady rate.
    const snapshots = [snap];
    const problems = [];
    const stepFps = Object.fromEntries(SUBSCRIBERS.map((id) => [id, []]));
    for (let elapsed = 0; elapsed < OBSERVE_MS; elapsed += STEP_MS) {
      await sleep(STEP_MS);
      const cur = await pubsubSnapshot(pages);
      const prev = snapshots.at(-1);
      snapshots.push(cur);
      const dt = (cur[0].at - prev[0].at) / 1000;
      note(`${elapsed + STEP_MS} ms: publisher bwe ${fmt((cur[0].pub?.availableOutgoingBitrate || 0) / 1000, 0)}kbps, ` +
        `${cur[0].outbound.filter((o) => o.kind === 'video').map((o) => {
          const a = prev[0].outbound.find((x) => x.ssrc === o.ssrc) || {};
          return `${o.rid || 'video'} ${o.frameHeight ?? '-'}p ${fmt(((o.framesEncoded || 0) - (a.framesEncoded || 0)) / dt, 0)}fps ` +
            `+${(o.keyFramesEncoded || 0) - (a.keyFramesEncoded || 0)}key ${fmt((o.targetBitrate || 0) / 1000, 0)}kbps`;
        }).join(', ')}; subscribers ${subs.map((p) => {
          const i = pages.indexOf(p);
          const [a] = inboundFrom(prev[i], PUBLISHER, 'video');
          const [b] = inboundFrom(cur[i], PUBLISHER, 'video');
          return a && b ? `${b.frameHeight}p +${b.keyFramesDecoded - a.keyFramesDecoded}key lost ${b.packetsLost} freezes ${b.freezeCount}` : '-';
        }).join(', ')}`);
      for (const p of subs) {
        const i = pages.indexOf(p);
        const [a] = inboundFrom(prev[i], PUBLISHER, 'video');
        const [b] = inboundFrom(cur[i], PUBLISHER, 'video');
        const fps = a && b ? (b.framesDecoded - a.framesDecoded) / ((cur[i].at - prev[i].at) / 1000) : NaN;
        stepFps[p.identity].push(fps);
        if (!(fps >= MIN_STEP_FPS)) {
          problems.push(`${p.identity}: ${fmt(fps)} frames/s decoded between ${elapsed} and ${elapsed + STEP_MS} ms ` +
            `(min ${MIN_STEP_FPS}; ${a ? describeInbound(a) : '-'} -> ${b ? describeInbound(b) : '-'})`);
        }
      }
    }
    const [first, last] = [snapshots[0], snapshots.at(-1)];
    const seconds = (last[0].at - first[0].at) / 1000;

    // The publisher's side, per layer, and what the relay did to each of its SSRCs.
    const vp8 = pts.byName['VP8/90000'] || [];
    const rtxOf = (pt) => Object.entries(pts.rtx).filter(([, apt]) => apt === pt).map(([r]) => Number(r));
    const videoPts = new Set(vp8);
    const videoRtxPts = new Set(vp8.flatMap(rtxOf));
    const relayed = (f) => [...relay.streams.values()].filter((x) => f(x.pt))
      .reduce((acc, x) => ({ forwarded: acc.forwarded + x.forwarded, dropped: acc.dropped + x.dropped,
        redelivered: acc.redelivered + x.redelivered }), { forwarded: 0, dropped: 0, redelivered: 0 });
    const video = relayed((pt) => videoPts.has(pt));
    const videoRtx = relayed((pt) => videoRtxPts.has(pt));
    const other = relayed((pt) => !videoPts.has(pt) && !videoRtxPts.has(pt));
    for (const o of last[0].outbound.filter((s) => s.kind === 'video')) {
      const r = relay.streams.get(o.ssrc);
      note(`${PUBLISHER} video${o.rid ? ` rid ${o.rid}` : ''} ssrc ${o.ssrc}: ${o.frameWidth}x${o.frameHeight} ` +
        `@${fmt(o.framesPerSecond, 0)}fps sent=${o.packetsSent} encoded=${o.framesEncoded} (key ${o.keyFramesEncoded}) ` +
        `nack=${o.nackCount} pli=${o.pliCount} retransmitted=${o.retransmittedPacketsSent} ` +
        `target=${fmt((o.targetBitrate || 0) / 1000, 0)}kbps limited by ${o.qualityLimitationReason}; relay: ` +
        `${r ? `forwarded ${r.forwarded}, dropped ${r.dropped}` : 'never seen'}`);
    }
    note(`relay, client -> server: video ${video.dropped} of ${video.dropped + video.forwarded} dropped ` +
      `(${video.redelivered} dropped sequence numbers came again on their own SSRC), video RTX ${videoRtx.dropped} of ` +
      `${videoRtx.dropped + videoRtx.forwarded} dropped, other (audio) ${other.dropped} of ${other.dropped + other.forwarded}; ` +
      `bwe ${fmt((last[0].pub?.availableOutgoingBitrate || 0) / 1000, 0)}kbps; Ringcast's reaction: ${relay.describeReactions()}`);

    const results = {};
    for (const { p, kind, a, b, key } of inboundWindows({ pages, subscribers: subs, first, last, publisher: PUBLISHER, problems })) {
      results[`${p.identity} ${kind}`] = b;
      // Loss is checked below for video; audio is reported (Opus is not NACKed here).
      problems.push(...streamProblems(key, a, b, { maxLostFraction: null }));
      note(`  ${key}: ${describeInbound(b)}${kind === 'video' ? `; ${fmt((b.framesDecoded - a.framesDecoded) / seconds)} ` +
        `frames/s over the last ${fmt(seconds)} s (per step: ${stepFps[p.identity].map((x) => fmt(x)).join(', ')})` : ''}`);
      if (kind !== 'video') continue;
      const maxLost = MAX_UNRECOVERED_ABSOLUTE + MAX_UNRECOVERED_FRACTION * video.dropped;
      if (b.packetsLost > maxLost) {
        problems.push(`${key}: packetsLost ${b.packetsLost} (max ${fmt(maxLost, 0)}) while the relay dropped ` +
          `${video.dropped} video packets upstream: Ringcast did not repair them`);
      }
      const freezes = b.freezeCount - a.freezeCount;
      if (freezes > MAX_FREEZES) {
        problems.push(`${key}: ${freezes} freezes in ${fmt(seconds)} s (max ${MAX_FREEZES}), ` +
          `${fmt((b.totalFreezesDuration - a.totalFreezesDuration) * 1000, 0)} ms in all`);
      }
      const fps = (b.framesDecoded - a.framesDecoded) / seconds;
      if (!(fps >= MIN_MEAN_FPS)) problems.push(`${key}: ${fmt(fps)} frames/s decoded over ${fmt(seconds)} s (min ${MIN_MEAN_FPS})`);
    }
    if (!(video.dropped > 0)) problems.push(`the relay dropped no video packet (${relay.describe()})`);
    if (problems.length) assert.fail(`media problems:\n  ${problems.join('\n  ')}\n${await diagnostics()}`);

    const samples = await checkForwardingMetrics(server, backend, note, diagnostics);
    const nacksSent = sumMetric(samples, 'ringcast_nacks_sent_total');
    const nackedUpstream = sumMetric(samples, 'ringcast_packets_nacked_upstream_total');
    const unwrapped = sumMetric(samples, 'ringcast_rtx_unwrapped_total');
    const duplicates = sumMetric(samples, 'ringcast_rtp_duplicates_total');
    const retransmittedByPublisher = last[0].outbound.filter((o) => o.kind === 'video')
      .reduce((acc, o) => acc + (o.retransmittedPacketsSent || 0), 0);
    note(`summary: relay dropped ${video.dropped} video + ${videoRtx.dropped} video RTX + ${other.dropped} audio packets ` +
      `(${other.redelivered} audio ones came again); publisher retransmitted ${retransmittedByPublisher} video packets; ` +
      `server ${nacksSent} NACKs sent for ${nackedUpstream} packets, ${unwrapped} RTX unwrapped, ` +
      `${duplicates} duplicates (RTX unwrapped - duplicates: ${unwrapped - duplicates}; Chromium's bandwidth probes ` +
      're-send old packets on RTX), ' +
      `${sumMetric(samples, 'ringcast_rtx_padding_total')} RTX padding, ` +
      `${sumMetric(samples, 'ringcast_rtp_unknown_stream_total')} unknown-stream packets; subscribers: ` +
      `${SUBSCRIBERS.map((id) => {
        const v = results[`${id} video`];
        const au = results[`${id} audio`];
        return `${id} video packetsLost ${v?.packetsLost} nack ${v?.nackCount} freezes ${v?.freezeCount} ` +
          `${v?.frameWidth}x${v?.frameHeight} ${fmt(Math.min(...stepFps[id]))}..${fmt(Math.max(...stepFps[id]))} fps, ` +
          `audio packetsLost ${au?.packetsLost}`;
      }).join('; ')}`);
    assert.ok(nacksSent > 0, `ringcast_nacks_sent_total is ${nacksSent} although the relay dropped ` +
      `${video.dropped} video packets\n${await diagnostics()}`);
    assert.ok(unwrapped > 0, `ringcast_rtx_unwrapped_total is ${unwrapped} after ${nacksSent} NACKs ` +
      `(${nackedUpstream} packets) sent and ${videoRtx.forwarded} video RTX packets relayed to Ringcast\n${await diagnostics()}`);
    const reactions = [...relay.reactions].sort((x, y) => x - y);
    const median = reactions.length ? reactions[Math.floor(reactions.length / 2)] : NaN;
    assert.ok(median <= MAX_NACK_MS, `Ringcast NACKs upstream loss late: ${relay.describeReactions()} ` +
      `(RINGCAST_UPLOSS_MAX_NACK_MS=${MAX_NACK_MS})`);
    // Every unwrapped RTX packet that was not a duplicate filled a hole.
    assert.ok(unwrapped - duplicates > 0, `ringcast_rtx_unwrapped_total ${unwrapped} but ringcast_rtp_duplicates_total ` +
      `${duplicates}: no RTX packet repaired a loss\n${await diagnostics()}`);

    await leaveAndStop(pages, browser, server, note);
    note(`case took ${Date.now() - began} ms`);
    passed = true;
  } finally {
    await closeCase({ browser, web, server, passed });
    if (relay) relay.close();
  }
}

for (const backend of BACKENDS) {
  test(`a ${SIMULCAST ? 'simulcast ' : ''}publisher behind ${LOSS_RATE * 100} % upstream loss: Ringcast NACKs it, ` +
    `unwraps its RTX, and the subscribers keep decoding (media backend ${backend})`,
  { timeout: CASE_TIMEOUT_MS }, (t) => runCase(t, backend));
}
