// Congestion control: each subscriber gets the simulcast layer its own downlink carries.
//
//   cd interop/browser && npm ci && node --test test-congestion.mjs
//
// Per media backend (default io-uring only) it:
//   - starts the ringcast binary on ephemeral ports with one shard (harness.mjs)
//     and creates a room over gRPC-Web;
//   - opens pubsub-page.html in headless Chromium: a publisher sends its fake
//     camera (960x540, 20 fps) as three-layer simulcast (q/h/f, scaled down by
//     4/2/1; VP8 or H.264, one case each) and its microphone; two subscribe-only
//     pages join: 'clean', connected directly, and 'limited', whose downlink is
//     limited to RINGCAST_CC_LIMIT_BPS (default 400 kbit/s for VP8, 300 for
//     H.264): its own Chromium
//     runs in a network namespace joined by a veth pair whose egress a tc tbf
//     qdisc limits, with a 60 KB queue (harness.mjs startShapedNetns; Ringcast
//     offers candidates on both sides); where namespaces cannot be made (not
//     root), or with RINGCAST_CC_LINK=relay, its subscriber transport goes
//     through a UDP relay in this process with the same bottleneck instead
//     (startLossyRelay; the page rewrites Ringcast's candidates: ?relayPort=N);
//   - both negotiate transport-cc: Ringcast stamps transport-wide sequence
//     numbers on what it sends each, and estimates each one's downlink from its
//     feedback;
//   - waits (30 s) until 'limited' decodes a lower layer than the top while
//     'clean' decodes the top one (getStats() frameHeight), and reports the
//     limited page's decode rate and freezes meanwhile;
//   - lifts the bottleneck and waits (30 s) until 'limited' decodes the top
//     layer too; each step also checks what the subscribers' Events say
//     (SubscriptionQualityChanged: layers and estimate);
//   - both subscribers ask for VIDEO_QUALITY_LOW (UpdateSubscriptionSettings)
//     and decode the low layer; nobody needs h and f then, so the publisher is
//     told (TrackLayersWanted) and stops encoding them (setParameters, in
//     web/session.js), until 'clean' lifts its cap and decodes the top again;
//   - VP8 (published with scalabilityMode L1T3): 'clean' asks for 10 frames/s
//     at most (max_fps): Ringcast leaves out the top temporal layer and it
//     decodes about 10 frames/s of the top layer, and 20 again without the cap;
//   - /metrics: transport-wide feedback from the subscribers, estimate samples,
//     probes; leaves, closes the browser and stops the server (SIGTERM, exit 0).
// Every failure message carries each page's step log, states, stats, SDPs, the
// relay's counters and the server log tail.
//
// Environment:
//   RINGCAST_BIN            server binary (default ../../target/debug/ringcast)
//   RINGCAST_MEDIA_BACKEND  backends, comma-separated (default io-uring)
//   RINGCAST_TEST_LOG_LEVEL server --log-level (default info)
//   RINGCAST_CC_LIMIT_BPS   the limited subscriber's downlink (default 400000; H.264 300000)
//   RINGCAST_CC_CODECS      the publisher's video codecs, one case each, comma-separated
//                           (default VP8,H264: simulcast of either)
//   CHROMIUM_PATH           browser (default /usr/bin/chromium)
//   RINGCAST_TEST_KEEP_LOGS keep the server logs of passing cases too

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import {
  backendsFromEnv, candidates, closeCase, createRoom, fetchMetrics, fmt, inboundFrom, launchChromium, leaveAndStop,
  mintToken, openPubsubPage, pubsubDiagnostics, pubsubSnapshot, sleep, startLossyRelay, startPubsubPages,
  signTokensWith, startRingcast, startShapedNetns, startWebServer, sumMetric, waitForMedia, API_SECRET,
  BACKGROUND_TAB_ARGS, OFF_LOOPBACK_API_SECRET,
} from './harness.mjs';

const BACKENDS = backendsFromEnv('io-uring');
const LOG_LEVEL = process.env.RINGCAST_TEST_LOG_LEVEL || 'info';
// Chromium's H.264 encoder sends the fake camera's 540p layer well under its target bitrate,
// near enough to 400 kbit/s that a link of that size sometimes carries it (the top layer
// then fits, and nothing is wrong): H.264 gets a narrower link, though not one as narrow as
// 200 kbit/s, which its low layer and the audio fill (it froze there once).
const limitFor = (codec) => Number(process.env.RINGCAST_CC_LIMIT_BPS || (codec === 'H264' ? 300_000 : 400_000));
const CODECS = (process.env.RINGCAST_CC_CODECS || 'VP8,H264').split(',').map((c) => c.trim()).filter(Boolean);
// netns: the limited subscriber's Chromium runs in a network namespace behind a tc tbf limit
// (falling back to the relay where namespaces cannot be made); relay: behind the UDP relay.
const LINK = process.env.RINGCAST_CC_LINK || 'netns';

const GATHER_TIMEOUT_MS = 10_000;
const CONNECT_TIMEOUT_MS = 20_000;
const MEDIA_TIMEOUT_MS = 20_000;
const ADAPT_TIMEOUT_MS = 30_000;
const RECOVER_TIMEOUT_MS = 30_000;
// Dynacast pauses a layer 3 s after nobody needs it.
const PAUSE_TIMEOUT_MS = 10_000;
const STEP_MS = 1_000;
const CASE_TIMEOUT_MS = 60_000 + MEDIA_TIMEOUT_MS + 2 * ADAPT_TIMEOUT_MS + 2 * RECOVER_TIMEOUT_MS + PAUSE_TIMEOUT_MS;
const VIDEO_CONSTRAINTS = { width: 960, height: 540, frameRate: 20 };
const ENCODINGS = [
  { rid: 'q', scaleResolutionDownBy: 4 }, { rid: 'h', scaleResolutionDownBy: 2 }, { rid: 'f' },
];
// VP8 with three temporal layers per simulcast layer, as LiveKit's and mediasoup's clients ask
// for it (Chromium's default is one).
const encodingsFor = (codec) => (codec === 'VP8' ? ENCODINGS.map((e) => ({ ...e, scalabilityMode: 'L1T3' })) : ENCODINGS);

const PUBLISHER = 'publisher';
const LIMITED = 'limited';
const CLEAN = 'clean';

async function runCase(t, backend, codec) {
  const began = Date.now();
  const note = (s) => t.diagnostic(`[${backend} ${codec}] ${s}`);
  let server;
  let relay;
  let link;
  let web;
  let browser;
  let nsBrowser;
  const pages = [];
  let passed = false;
  try {
    const LIMIT_BPS = limitFor(codec);
    link = LINK === 'netns' ? startShapedNetns({ rateBps: LIMIT_BPS }) : null;
    signTokensWith(link ? OFF_LOOPBACK_API_SECRET : API_SECRET);
    if (LINK === 'netns' && !link) note(`no network namespace (${startShapedNetns.why}): the limited subscriber goes through the relay`);
    // With a namespace: candidates and gRPC-Web on its side of the pair too.
    server = await startRingcast({
      backend, logLevel: LOG_LEVEL, logTag: 'congestion',
      grpcAddr: link ? '0.0.0.0:0' : '127.0.0.1:0',
      // Off loopback the development secret is refused: a test secret, the tokens signed with it.
      extraArgs: link ? ['--public-ip', `127.0.0.1,${link.hostIp}`, '--api-secret', OFF_LOOPBACK_API_SECRET] : [],
    });
    const grpcUrl = server.grpcUrl.replace('0.0.0.0', '127.0.0.1');
    note(`ringcast ${grpcUrl} (gRPC-Web), ${server.httpUrl} (metrics); log: ${server.logPath} ` +
      '(kept if the case fails)');
    const room = `congestion-${backend}-${crypto.randomBytes(4).toString('hex')}`;
    await createRoom(grpcUrl, room, 8);
    if (!link) relay = await startLossyRelay({ lossRate: 0, seed: 1, rateBps: LIMIT_BPS });
    const shaper = link || relay;
    web = await startWebServer({ '/': 'pubsub-page.html' }, link ? '0.0.0.0' : '127.0.0.1');
    browser = await launchChromium({ extraArgs: BACKGROUND_TAB_ARGS });
    if (link) nsBrowser = await launchChromium({ extraArgs: BACKGROUND_TAB_ARGS, executablePath: link.chromium() });

    const pub = await openPubsubPage(browser, web.url, PUBLISHER);
    const limited = link
      ? await openPubsubPage(nsBrowser, `http://${link.hostIp}:${web.port}/`, LIMITED)
      : await openPubsubPage(browser, web.url, LIMITED, `?relayPort=${relay.port}`);
    const clean = await openPubsubPage(browser, web.url, CLEAN);
    pages.push(pub, limited, clean);
    const subscribers = [limited, clean];
    const diagnostics = async (opts) => `${await pubsubDiagnostics(pages, server, opts)}\n\n${shaper.describe()}`;
    const timeouts = { gatherTimeoutMs: GATHER_TIMEOUT_MS, connectTimeoutMs: CONNECT_TIMEOUT_MS, diagnostics };

    const [published] = await startPubsubPages([pub], grpcUrl, () => ({
      token: mintToken(PUBLISHER, { room, publish: true, subscribe: true }), video: VIDEO_CONSTRAINTS,
      videoEncodings: encodingsFor(codec), videoCodec: `video/${codec}`,
    }), timeouts);
    assert.deepEqual(published.rejected, [], `${PUBLISHER}: Publish rejected m-lines`);
    assert.equal(published.tracks.find((x) => x.kind === 'TRACK_KIND_VIDEO')?.mimeType.toLowerCase(),
      `video/${codec}`.toLowerCase(), `${PUBLISHER}: the video codec negotiated`);
    const { answer } = await pub.page.evaluate(() => window.pubsubPublisherSdps());
    const media = candidates(answer).find((c) => c.address === '127.0.0.1');
    assert.ok(media, `no 127.0.0.1 candidate in Ringcast's publisher answer:\n${answer}`);
    if (relay) relay.target = media;
    note(`${PUBLISHER} published ${published.tracks.map((x) => `${x.mimeType} ${x.sid}`).join(', ')} (simulcast ` +
      `${ENCODINGS.map((e) => e.rid).join('/')}); ${LIMITED} behind ${link ? `a tc tbf limit in netns ${link.ns} ` +
      `(${link.nsIp})` : `the relay 127.0.0.1:${relay.port} -> ${media.address}:${media.port}`} at ${LIMIT_BPS} bit/s`);

    await startPubsubPages(subscribers, grpcUrl, (p) => ({
      token: mintToken(p.identity, { room, subscribe: true }), publish: false,
      // From the namespace, Ringcast is at this side's address of the pair.
      ...(link && p === limited ? { grpcUrl: server.grpcUrl.replace('0.0.0.0', link.hostIp) } : {}),
    }), timeouts);
    const expectations = subscribers.flatMap((page) => ['video', 'audio'].map((kind) => ({ page, publisher: PUBLISHER, kind })));
    const { ms } = await waitForMedia(pages, expectations, { timeoutMs: MEDIA_TIMEOUT_MS, diagnostics });
    note(`both subscribers decode video and receive audio ${ms} ms after joining`);
    const [latest] = await limited.page.evaluate(() => window.pubsubSdps(1));
    for (const sdp of [latest?.offer, latest?.answer]) {
      assert.match(sdp || '', /transport-wide-cc-extensions-01/, `the limited subscriber did not negotiate transport-cc:\n${sdp}`);
    }

    // Each step: the layer (frame height) each subscriber decodes, and the publisher's layers.
    // The same layer: H.264 decodes a 135-line layer as 134 lines (its 2-line chroma grid).
    const near = (a, b) => a > 0 && Math.abs(a - b) <= 2;
    const heightOf = (snap, p) => inboundFrom(snap[pages.indexOf(p)], PUBLISHER, 'video')[0]?.frameHeight || 0;
    const topOf = (snap) => Math.max(0, ...snap[0].outbound.filter((s) => s.kind === 'video').map((s) => s.frameHeight || 0));
    const describe = (snap) => `publisher layers ${snap[0].outbound.filter((s) => s.kind === 'video')
      .map((s) => `${s.rid} ${s.frameHeight ?? '-'}p ${fmt((s.targetBitrate || 0) / 1000, 0)}kbps`).join(', ')}; ` +
      `${LIMITED} ${heightOf(snap, limited)}p, ${CLEAN} ${heightOf(snap, clean)}p`;
    // `extra` adds to each snapshot before `ok` judges it.
    const waitFor = async (what, timeoutMs, ok, extra = null) => {
      const t0 = Date.now();
      let snap;
      for (;;) {
        snap = await pubsubSnapshot(pages);
        if (extra) await extra(snap);
        if (process.env.RINGCAST_TEST_VERBOSE) note(`${what}: ${Date.now() - t0} ms: ${describe(snap)}`);
        if (ok(snap)) return { snap, ms: Date.now() - t0 };
        if (Date.now() - t0 > timeoutMs) {
          assert.fail(`${what} within ${timeoutMs} ms: ${describe(snap)}\n${await diagnostics()}`);
        }
        await sleep(STEP_MS);
      }
    };

    // Under the limit: the limited subscriber on a lower layer, the clean one on the top.
    const adapted = await waitFor(`${LIMITED} below the top layer and ${CLEAN} on it`, ADAPT_TIMEOUT_MS, (snap) => {
      const top = topOf(snap);
      return top >= VIDEO_CONSTRAINTS.height && near(heightOf(snap, clean), top) && heightOf(snap, limited) > 0 &&
        !near(heightOf(snap, limited), top);
    });
    note(`adapted ${adapted.ms} ms after media: ${describe(adapted.snap)}`);
    // It keeps decoding there (a few seconds, no frozen picture).
    await sleep(3 * STEP_MS);
    const held = await pubsubSnapshot(pages);
    const [a] = inboundFrom(adapted.snap[1], PUBLISHER, 'video');
    const [b] = inboundFrom(held[1], PUBLISHER, 'video');
    const fps = (b.framesDecoded - a.framesDecoded) / ((held[1].at - adapted.snap[1].at) / 1000);
    note(`${LIMITED} held: ${describe(held)}; ${fmt(fps)} frames/s decoded, freezes ${b.freezeCount}, ` +
      `packetsLost ${b.packetsLost}; ${shaper.describe()}`);
    assert.ok(!near(heightOf(held, limited), topOf(held)), `${LIMITED} went back up under the limit: ${describe(held)}`);
    // Events told each subscriber its layers and estimate (SubscriptionQualityChanged).
    const quality = (p) => p.page.evaluate(() => Object.values(window.ringcast.quality).find((q) => q.layers > 1));
    const [qLimited, qClean] = [await quality(limited), await quality(clean)];
    note(`Events: ${LIMITED} ${JSON.stringify(qLimited)}, ${CLEAN} ${JSON.stringify(qClean)}`);
    // What it is sent now, as its decoded height said; its target may already be moving up
    // on a probe that a token bucket's burst let through faster than the link's rate.
    assert.ok(qLimited && qLimited.currentLayer < qLimited.layers - 1 && qLimited.estimateBps > 0 &&
      qLimited.estimateBps < 1_000_000, `${LIMITED}: the layer and estimate its Events report`);
    assert.ok(qClean && qClean.targetLayer === qClean.layers - 1, `${CLEAN}: the layer its Events report`);
    assert.ok(fps >= 5, `${LIMITED} decodes ${fmt(fps)} frames/s under the limit\n${await diagnostics()}`);

    // The limit lifted: back to the top.
    shaper.setRate(null);
    const recovered = await waitFor(`${LIMITED} back on the top layer once the limit was lifted`, RECOVER_TIMEOUT_MS,
      (snap) => topOf(snap) > 0 && near(heightOf(snap, limited), topOf(snap)));
    note(`recovered ${recovered.ms} ms after the limit was lifted: ${describe(recovered.snap)}`);
    const qRecovered = await quality(limited);
    note(`Events: ${LIMITED} ${JSON.stringify(qRecovered)}`);
    assert.equal(qRecovered?.targetLayer, qRecovered?.layers - 1, `${LIMITED}: the top layer in its Events`);

    // Settings: both subscribers ask for the low layer at most (UpdateSubscriptionSettings),
    // and get it; nobody needs h and f then, so the publisher is told to stop encoding them
    // (TrackLayersWanted, applied with setParameters), and to resume f when one needs it.
    const video = inboundFrom(recovered.snap[1], PUBLISHER, 'video')[0].trackSid;
    const settle = (p, maxQuality) => p.page.evaluate(([sid, q]) =>
      window.ringcast.client.updateSubscriptionSettings([sid], { maxQuality: q }), [video, maxQuality]);
    await Promise.all([settle(limited, 'VIDEO_QUALITY_LOW'), settle(clean, 'VIDEO_QUALITY_LOW')]);
    const lowest = Math.min(...recovered.snap[0].outbound.filter((s) => s.kind === 'video').map((s) => s.frameHeight || 1e9));
    const capped = await waitFor('both subscribers on the low layer they asked for', ADAPT_TIMEOUT_MS,
      (snap) => near(heightOf(snap, limited), lowest) && near(heightOf(snap, clean), lowest));
    note(`both on ${lowest}p ${capped.ms} ms after asking for VIDEO_QUALITY_LOW`);
    const encoded = (snap, rid) => snap[0].outbound.find((s) => s.kind === 'video' && s.rid === rid)?.framesEncoded || 0;
    const paused = await waitFor('the publisher told to stop h and f, and stopping them', PAUSE_TIMEOUT_MS, (snap) => {
      const wanted = snap.layersWanted;
      return wanted && wanted.filter((l) => !l.active).map((l) => l.rid).sort().join() === 'f,h' &&
        snap[0].outbound.filter((s) => s.kind === 'video' && (s.rid === 'h' || s.rid === 'f')).every((s) => s.active === false);
    }, async (snap) => { snap.layersWanted = await pub.page.evaluate((sid) => window.ringcast.layersWanted[sid], video); });
    const before = paused.snap;
    await sleep(2 * STEP_MS);
    const after = await pubsubSnapshot(pages);
    note(`paused ${paused.ms} ms after both settled: frames encoded h ${encoded(before, 'h')} -> ${encoded(after, 'h')}, ` +
      `f ${encoded(before, 'f')} -> ${encoded(after, 'f')}, q ${encoded(before, 'q')} -> ${encoded(after, 'q')}`);
    assert.ok(encoded(after, 'f') === encoded(before, 'f') && encoded(after, 'h') === encoded(before, 'h'),
      'h and f are still encoded');
    assert.ok(encoded(after, 'q') > encoded(before, 'q'), 'q stopped too');
    await settle(clean, 'VIDEO_QUALITY_UNSPECIFIED');
    const resumed = await waitFor(`${CLEAN} on the top layer again once it lifted its cap`, RECOVER_TIMEOUT_MS,
      (snap) => near(heightOf(snap, clean), topOf(recovered.snap)) && near(heightOf(snap, limited), lowest));
    note(`resumed: ${CLEAN} decodes ${heightOf(resumed.snap, clean)}p ${resumed.ms} ms after lifting its cap`);

    // A frame rate cap (max_fps): the VP8 publisher encodes three temporal layers (L1T3: 5, 10
    // and 20 frames/s of the 20 fps camera), so at 10 the top temporal layer is not sent, and
    // at no cap it is again; the spatial layer stays the top.
    if (codec === 'VP8') {
      const decodedRate = async (p, ms) => {
        const at = async () => inboundFrom((await pubsubSnapshot([p]))[0], PUBLISHER, 'video')[0];
        const [a, t0] = [await at(), Date.now()];
        await sleep(ms);
        const b = await at();
        return { fps: (b.framesDecoded - a.framesDecoded) / ((Date.now() - t0) / 1000), height: b.frameHeight };
      };
      const capFps = (maxFps) => clean.page.evaluate(([sid, f]) =>
        window.ringcast.client.updateSubscriptionSettings([sid], { maxFps: f }), [video, maxFps]);
      const skippedBefore = sumMetric(await fetchMetrics(server.httpUrl), 'ringcast_temporal_skipped_total');
      await capFps(10);
      await sleep(2 * STEP_MS);
      const capped10 = await decodedRate(clean, 4 * STEP_MS);
      const skipped = sumMetric(await fetchMetrics(server.httpUrl), 'ringcast_temporal_skipped_total') - skippedBefore;
      const qCapped = await quality(clean);
      await capFps(0);
      await sleep(2 * STEP_MS);
      const uncapped = await decodedRate(clean, 4 * STEP_MS);
      note(`max_fps 10: ${CLEAN} decodes ${fmt(capped10.fps)} frames/s at ${capped10.height}p (${skipped} packets of ` +
        `higher temporal layers not sent); no cap: ${fmt(uncapped.fps)} frames/s at ${uncapped.height}p`);
      note(`Events at max_fps 10: ${CLEAN} ${JSON.stringify(qCapped)}`);
      assert.ok(skipped > 0, 'no temporal layer packets were left out: does the publisher send TIDs?');
      assert.ok(qCapped?.temporalLayersSent === 2 && qCapped?.temporalLayers === 3,
        `${CLEAN}: 2 of 3 temporal layers sent, in its Events at max_fps 10`);
      assert.ok(capped10.fps <= 13 && capped10.fps >= 5, `${CLEAN} at max_fps 10 decodes ${fmt(capped10.fps)} frames/s`);
      assert.ok(uncapped.fps >= 15, `${CLEAN} without a cap decodes ${fmt(uncapped.fps)} frames/s`);
      assert.ok(near(capped10.height, topOf(resumed.snap)), `${CLEAN} left the top layer under a frame rate cap`);
    }

    const samples = await fetchMetrics(server.httpUrl);
    const fbIn = sumMetric(samples, 'ringcast_twcc_feedback_received_total');
    const probes = sumMetric(samples, 'ringcast_probe_packets_total');
    const switches = sumMetric(samples, 'ringcast_layer_switches_total');
    const remb = samples.filter((x) => x.name === 'ringcast_publisher_remb_bps' && x.labels.quantile)
      .map((x) => `p${Number(x.labels.quantile) * 100} ${fmt(x.value / 1000, 0)}k`).join(' ');
    note(`metrics: ${fbIn} transport-wide feedback messages from subscribers, ${probes} probe packets, ` +
      `${switches} layer switches; REMB to the publisher ${remb || '-'}`);
    assert.ok(fbIn > 0, 'no transport-wide feedback from the subscribers');

    await leaveAndStop(pages, [browser, nsBrowser].filter(Boolean), server, note);
    browser = null;
    nsBrowser = null;
    note(`case took ${Date.now() - began} ms`);
    passed = true;
  } finally {
    if (relay) relay.close();
    await closeCase({ browser: [browser, nsBrowser], web, server, passed });
    if (link) link.close();
    signTokensWith(API_SECRET);
  }
}

for (const backend of BACKENDS) {
  for (const codec of CODECS) {
    test(`${codec} simulcast: a subscriber behind ${limitFor(codec) / 1000} kbit/s gets a lower layer, the other the top, ` +
      `it recovers when the limit lifts, and layers nobody asks for pause (media backend ${backend})`,
    { timeout: CASE_TIMEOUT_MS }, (t) => runCase(t, backend, codec));
  }
}
