// Browser interop across two independent WebRTC stacks: one Firefox ESR page
// (puppeteer-core over WebDriver BiDi) and one Chromium page (playwright-core)
// in ONE room, each publishing its fake camera + microphone and subscribing to
// the other through Ringcast (pubsub-page.html and web/session.js in both).
//
//   cd interop/browser && npm ci && node --test test-firefox.mjs
//
// Per media backend (io-uring by default) and per Firefox bundlePolicy, one test
// case each:
//   - balanced (Firefox's default), subscriber transport-cc ON: Firefox answers
//     Ringcast's subscriber offer with the transport-wide-cc extension, so its
//     transport-cc feedback drives Ringcast's estimate of its downlink;
//   - max-bundle (the video m-line of its publish offer is bundle-only on port
//     0), subscriber transport-cc OFF: the page is opened with
//     ?noTransportCc=1, which strips the transport-wide-cc a=extmap lines and
//     the a=rtcp-fb:* transport-cc lines from every subscriber offer before
//     setRemoteDescription, so Firefox answers without them and Ringcast falls
//     back to Firefox's REMB (goog-remb) for that subscriber.
// Each case:
//   - starts the ringcast binary on ephemeral ports with one shard, serves
//     pubsub-page.html, and launches Debian's /usr/bin/firefox-esr (headless,
//     a fresh profile with the prefs of shared/PEERS.md: harness.mjs
//     FIREFOX_PREFS) and /usr/bin/chromium;
//   - joins both pages at once; Firefox publishes its video as SIMULCAST (three
//     rids q/h/f scaled down by 4/2/1: Firefox signals them with a=rid AND
//     a=ssrc lines for every layer and its RTX, in FID groups), Chromium a
//     single layer; checks the rids (and with max-bundle, a=bundle-only) in
//     Firefox's publish offer;
//   - waits until each page's subscriber pc decodes the other's video and
//     receives its audio (getStats), then checks, 2 s later, that both still
//     grow (framesDecoded, packetsReceived), that frame sizes are reported,
//     and that little was lost (harness.mjs streamProblems); with simulcast,
//     that Firefox encodes at least two layers and Chromium decodes the best one;
//   - checks Firefox's subscriber answers: with transport-cc on, the latest has
//     the transport-wide-cc extension; with it off, none has it (nor
//     rtcp-fb transport-cc) although Ringcast's offer had it, and the
//     SubscriptionQualityChanged events Firefox gets carry a positive
//     estimate (from its REMB: nothing else measures its downlink);
//   - checks /metrics: ringcast_rtp_forwarded_total > 0, no srtp_auth_failed;
//   - leaves, closes both browsers and stops the server (SIGTERM, exit 0).
// Every failure message carries both pages' step logs, states, stats, the
// publish and latest subscriber SDPs, and the server log tail.
//
// Environment:
//   RINGCAST_BIN            server binary (default ../../target/debug/ringcast)
//   RINGCAST_MEDIA_BACKEND  backends, comma-separated (default io-uring)
//   RINGCAST_FIREFOX_SIMULCAST=0  Firefox publishes a single video layer
//   RINGCAST_FIREFOX_BUNDLE_POLICY Firefox's bundlePolicy, one case each, comma-separated
//                           (default balanced,max-bundle)
//   RINGCAST_TEST_LOG_LEVEL server --log-level (default info)
//   FIREFOX_PATH, CHROMIUM_PATH   browsers (default /usr/bin/firefox-esr, /usr/bin/chromium)
//   RINGCAST_TEST_KEEP_LOGS keep the server logs of passing cases too
//   RINGCAST_FIREFOX_DUMP_DIR  write both pages' SDPs (publish, every subscriber
//                           offer and answer), step logs and stats there
// Server logs go to $TMPDIR/ringcast-firefox-<bundlePolicy>-<backend>-<pid>.log (path printed;
// removed when the case passes).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import path from 'node:path';
import {
  backendsFromEnv, checkForwardingMetrics, closeCase, createRoom, describeInbound, dumpPubsubPages, fmt, inboundFrom,
  launchChromium, launchFirefox, leaveAndStop, mediaCountersLine, mintToken, openPubsubPage, pubsubDiagnostics,
  pubsubSnapshot, sleep, startPubsubPages, startRingcast, startWebServer, streamProblems, waitForMedia,
} from './harness.mjs';

const BACKENDS = backendsFromEnv('io-uring');
const LOG_LEVEL = process.env.RINGCAST_TEST_LOG_LEVEL || 'info';
const SIMULCAST = process.env.RINGCAST_FIREFOX_SIMULCAST !== '0';
// Firefox's bundlePolicy, one case each: 'balanced' (its default, as on the demo page) and
// 'max-bundle', whose publish offer has the video m-line on port 0 with a=bundle-only.
const BUNDLE_POLICIES = (process.env.RINGCAST_FIREFOX_BUNDLE_POLICY || 'balanced,max-bundle').split(',')
  .map((s) => s.trim()).filter(Boolean);
// Whether Firefox's subscriber keeps transport-cc, per case: off with max-bundle (its page strips
// transport-cc from Ringcast's subscriber offers, ?noTransportCc=1), on otherwise.
const transportCcFor = (bundlePolicy) => bundlePolicy !== 'max-bundle';
const TRANSPORT_WIDE_CC = 'http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01';
const hasTransportWideCc = (sdp) => (sdp || '').split('\r\n')
  .some((l) => l.startsWith('a=extmap:') && l.split(' ')[1] === TRANSPORT_WIDE_CC);
const hasTransportCcFeedback = (sdp) => /^a=rtcp-fb:\S+ transport-cc\r?$/m.test(sdp || '');

const GATHER_TIMEOUT_MS = 10_000;
const CONNECT_TIMEOUT_MS = 15_000;
const MEDIA_TIMEOUT_MS = 15_000;
const GROWTH_INTERVAL_MS = 2_000;
const ESTIMATE_TIMEOUT_MS = 10_000; // until Firefox's quality events carry an estimate
const CASE_TIMEOUT_MS = 90_000;
const VIDEO_CONSTRAINTS = { width: 640, height: 360, frameRate: 20 };
const ENCODINGS = [
  { rid: 'q', scaleResolutionDownBy: 4 }, { rid: 'h', scaleResolutionDownBy: 2 }, { rid: 'f' },
];

async function runCase(t, backend, bundlePolicy) {
  const began = Date.now();
  const transportCc = transportCcFor(bundlePolicy);
  const note = (s) => t.diagnostic(`[${bundlePolicy}, transport-cc ${transportCc ? 'on' : 'off'}, ${backend}] ${s}`);
  let server;
  let web;
  const browsers = [];
  const pages = []; // { identity, browser, page, console: [] }
  let passed = false;
  try {
    server = await startRingcast({ backend, logLevel: LOG_LEVEL, logTag: `firefox-${bundlePolicy}` });
    note(`ringcast ${server.grpcUrl} (gRPC-Web), ${server.httpUrl} (metrics); log: ${server.logPath} ` +
      '(kept if the case fails)');
    web = await startWebServer({ '/': 'pubsub-page.html' });
    const launched = await Promise.allSettled([launchFirefox(), launchChromium()]);
    for (const r of launched) if (r.status === 'fulfilled') browsers.push(r.value);
    for (const r of launched) if (r.status === 'rejected') throw r.reason;
    const [firefox, chromium] = browsers;
    pages.push(await openPubsubPage(firefox, web.url, 'firefox', transportCc ? '' : '?noTransportCc=1'),
      await openPubsubPage(chromium, web.url, 'chromium'));
    const [ff, cr] = pages;
    const diagnostics = (opts) => pubsubDiagnostics(pages, server, { publisherSdps: true, ...opts });

    const room = `firefox-${bundlePolicy}-${backend}-${crypto.randomBytes(4).toString('hex')}`;
    await createRoom(server.grpcUrl, room, 4);
    const tStart = Date.now();
    const results = await startPubsubPages(pages, server.grpcUrl, (p) => ({
      token: mintToken(p.identity, { room, publish: true, subscribe: true }),
      video: VIDEO_CONSTRAINTS,
      videoEncodings: p === ff && SIMULCAST ? ENCODINGS : null,
      rtcConfig: p === ff ? { bundlePolicy } : {},
    }), { gatherTimeoutMs: GATHER_TIMEOUT_MS, connectTimeoutMs: CONNECT_TIMEOUT_MS, diagnostics });
    const ua = (r) => r.userAgent.match(/(?:Firefox|Chrom(?:e|ium))\/[0-9.]+/)?.[0];
    note(`${ua(results[0])} and ${ua(results[1])} joined room ${room} and published in ${Date.now() - tStart} ms`);
    for (const [i, r] of results.entries()) {
      assert.deepEqual(r.rejected, [], `${pages[i].identity}: Publish rejected m-lines\n${await diagnostics()}`);
      note(`${pages[i].identity} published ${r.tracks.map((tr) => `${tr.kind.replace('TRACK_KIND_', '').toLowerCase()} ` +
        `${tr.mimeType} ${tr.sid}`).join(', ')}`);
    }
    const { offer } = await ff.page.evaluate(() => window.pubsubPublisherSdps());
    const rids = (offer.match(/^a=rid:\S+ send/mg) || []).map((l) => l.split(/[: ]/)[1]);
    const fid = (offer.match(/^a=ssrc-group:FID .*/mg) || []);
    note(`Firefox's publish offer: ${(offer.match(/^m=.*/mg) || []).join(' | ')}; ` +
      `${offer.includes('a=bundle-only') ? 'bundle-only m-lines, ' : ''}rids ${rids.join(',') || 'none'}, ` +
      `${new Set((offer.match(/^a=ssrc:(\d+)/mg) || [])).size} SSRCs, ${fid.length} FID groups`);
    if (bundlePolicy === 'max-bundle') {
      assert.match(offer, /^m=video 0 [^]*^a=bundle-only/m,
        `Firefox's max-bundle offer has no bundle-only video m-line:\n${offer}`);
    }
    if (SIMULCAST) {
      assert.deepEqual(rids, ENCODINGS.map((e) => e.rid), `rids in Firefox's publish offer:\n${offer}`);
    }

    // Media both ways.
    const expectations = [{ page: ff, publisher: cr.identity }, { page: cr, publisher: ff.identity }]
      .flatMap((e) => ['video', 'audio'].map((kind) => ({ ...e, kind })));
    const { stats: first, firstSeen, ms: mediaMs } = await waitForMedia(pages, expectations,
      { timeoutMs: MEDIA_TIMEOUT_MS, diagnostics });
    note(`each page decodes the other's video and receives its audio ${mediaMs} ms after publishing; ` +
      `first seen (ms): ${[...firstSeen].map(([k, v]) => `${k} ${v}`).join(', ')}`);

    await sleep(GROWTH_INTERVAL_MS);
    const second = await pubsubSnapshot(pages);
    const problems = [];
    for (const { page, publisher, kind } of expectations) {
      const i = pages.indexOf(page);
      const key = `${page.identity} <- ${publisher} ${kind}`;
      const [a] = inboundFrom(first[i], publisher, kind);
      const [b] = inboundFrom(second[i], publisher, kind);
      if (!a || !b) {
        problems.push(`${key}: the inbound-rtp entry disappeared`);
        continue;
      }
      note(`  ${key}: ${describeInbound(b)}`);
      problems.push(...streamProblems(key, a, b));
      if (kind === 'video' && !(b.frameWidth > 0 && b.frameHeight > 0)) {
        problems.push(`${key}: no frame size reported (${b.frameWidth}x${b.frameHeight})`);
      }
    }
    pages.forEach((p, i) => {
      const layers = second[i].outbound.filter((s) => s.kind === 'video');
      note(`${p.identity} publisher: ${layers.map((v) => `${v.rid ? `rid ${v.rid} ` : ''}${v.codec} ` +
        `${v.frameWidth}x${v.frameHeight} @${fmt(v.framesPerSecond, 0)}fps encoded=${v.framesEncoded} ` +
        `sent=${v.packetsSent}`).join('; ')}; subscriber ${second[i].sub?.connectionState} ` +
        `${second[i].sub?.transport?.srtpCipher} DTLS ${second[i].sub?.transport?.tlsVersion}`);
    });
    if (SIMULCAST) {
      // Every layer Firefox encodes reaches Ringcast; Chromium gets the best one that flows.
      const encoding = (snap) => snap[0].outbound.filter((s) => s.kind === 'video' && s.rid && s.frameHeight > 0);
      const grew = encoding(second).filter((b) => b.framesEncoded >
        (encoding(first).find((a) => a.rid === b.rid)?.framesEncoded ?? 0));
      const top = Math.max(0, ...grew.map((s) => s.frameHeight));
      const [got] = inboundFrom(second[1], ff.identity, 'video');
      if (grew.length < 2) {
        problems.push(`Firefox encodes ${grew.length} simulcast layer(s) (${grew.map((s) => s.rid).join(',')})`);
      }
      if (got && got.frameHeight !== top) {
        problems.push(`chromium <- firefox video: ${got.frameWidth}x${got.frameHeight}, but Firefox's best layer ` +
          `is ${top} high (${grew.map((s) => `${s.rid} ${s.frameWidth}x${s.frameHeight}`).join(', ')})`);
      }
    }
    note(`media counters: ${await mediaCountersLine(server.httpUrl)}`);
    if (process.env.RINGCAST_FIREFOX_DUMP_DIR) {
      note(`SDPs, states and stats written to ${await dumpPubsubPages(pages, second,
        path.join(process.env.RINGCAST_FIREFOX_DUMP_DIR, `${bundlePolicy}-${backend}`))}`);
    }
    if (problems.length) assert.fail(`media problems:\n  ${problems.join('\n  ')}\n${await diagnostics()}`);

    // Firefox's subscriber answers: transport-cc as the case wants it.
    const negotiated = (await ff.page.evaluate(() => window.pubsubSdps(1000))).filter((x) => x.answer);
    const latest = negotiated[negotiated.length - 1];
    assert.ok(latest, `Firefox answered no subscriber offer\n${await diagnostics()}`);
    assert.ok(hasTransportWideCc(latest.offer), `Ringcast's subscriber offer v${latest.version} to Firefox has no ` +
      `transport-wide-cc extension\n${latest.offer}`);
    if (transportCc) {
      assert.ok(hasTransportWideCc(latest.answer) && hasTransportCcFeedback(latest.answer),
        `transport-cc on: Firefox's latest subscriber answer (v${latest.version}) lacks the transport-wide-cc ` +
        `extension or rtcp-fb transport-cc\n${await diagnostics()}`);
    } else {
      for (const x of negotiated) {
        assert.ok(!hasTransportWideCc(x.answer) && !hasTransportCcFeedback(x.answer),
          `transport-cc off: Firefox's subscriber answer v${x.version} still has transport-cc\n${x.answer}\n` +
          `${await diagnostics()}`);
      }
      assert.match(latest.answer, /^a=rtcp-fb:\S+ goog-remb\r?$/m,
        `transport-cc off: Firefox's subscriber answer v${latest.version} has no goog-remb either\n${latest.answer}`);
    }
    note(`Firefox's subscriber answer v${latest.version} (latest of ${negotiated.length} answered): transport-wide-cc ` +
      `${hasTransportWideCc(latest.answer) ? 'yes' : 'no'}, rtcp-fb transport-cc ` +
      `${hasTransportCcFeedback(latest.answer) ? 'yes' : 'no'}, goog-remb ` +
      `${/^a=rtcp-fb:\S+ goog-remb\r?$/m.test(latest.answer) ? 'yes' : 'no'}`);

    // The estimate Ringcast reports to Firefox for its video subscription (SubscriptionQualityChanged):
    // with transport-cc off it can only come from Firefox's REMB.
    const videoQuality = () => ff.page.evaluate(() => {
      const sid = Object.entries(window.ringcast.tracks).find(([, i]) => i.kind === 'TRACK_KIND_VIDEO' &&
        i.publisher !== window.ringcast.identity)?.[0];
      return (sid && window.ringcast.quality[sid]) || null;
    });
    let q = await videoQuality();
    const estimateDeadline = Date.now() + ESTIMATE_TIMEOUT_MS;
    while (!(q && q.estimateBps > 0) && Date.now() < estimateDeadline) {
      await sleep(250);
      q = await videoQuality();
    }
    note(`Firefox's video subscription: ${q ? `layer ${q.currentLayer}/${q.targetLayer} of ${q.layers}, ` +
      `estimate ${fmt(q.estimateBps / 1000, 0)} kbps` : 'no subscriptionQuality event'}`);
    assert.ok(q && q.estimateBps > 0, `transport-cc ${transportCc ? 'on' : 'off'}: no subscriptionQuality ` +
      `event with an estimate for Firefox's video subscription within ${ESTIMATE_TIMEOUT_MS} ms ` +
      `(latest: ${JSON.stringify(q)})\n${await diagnostics()}`);

    await checkForwardingMetrics(server, backend, note, diagnostics);
    await leaveAndStop(pages, browsers, server, note);
    note(`case took ${Date.now() - began} ms`);
    passed = true;
  } finally {
    await closeCase({ browser: browsers, web, server, passed });
  }
}

for (const backend of BACKENDS) {
  for (const bundlePolicy of BUNDLE_POLICIES) {
    const cc = transportCcFor(bundlePolicy) ? 'on' : 'off (REMB)';
    test(`a Firefox ESR page (${SIMULCAST ? 'simulcast, ' : ''}bundlePolicy ${bundlePolicy}, subscriber transport-cc ` +
      `${cc}) and a Chromium page ` +
      `publish and subscribe to each other (media backend ${backend})`, { timeout: CASE_TIMEOUT_MS },
    (t) => runCase(t, backend, bundlePolicy));
  }
}
