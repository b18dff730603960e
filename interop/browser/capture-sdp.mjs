#!/usr/bin/env node
// Capture real SDP from headless Chromium (playwright-core) and Firefox ESR
// (puppeteer-core over WebDriver BiDi) as fixtures for the Ringcast SDP
// parser/negotiator.
//
// Usage (from the repo root):
//   node interop/browser/capture-sdp.mjs [outDir] [--only=chromium|firefox]
//
// Default outDir: control/tests/fixtures/sdp (relative to the repo root).
// Files written, per browser (<b> = chromium<major> / firefox<major>):
//   <b>-publish-offer.sdp             audio + video sendonly, 3-layer rid simulcast
//   <b>-publish-offer-datachannel.sdp audio + video sendonly + data channel
//   <b>-publish-offer-maxbundle.sdp   as publish-offer, with bundlePolicy 'max-bundle'
//   <b>-subscribe-answer.sdp          answer to SERVER_OFFER (ice-lite, recv side)
// The SDP strings are written byte-for-byte as the browser produced them (CRLF).
//
// Facts about running the browsers on this machine: /work/shared/PEERS.md.
// Needs: apt-get install -y chromium firefox-esr;
//        PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 PUPPETEER_SKIP_DOWNLOAD=1 npm install

import http from 'node:http';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import puppeteer from 'puppeteer-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..');
const args = process.argv.slice(2);
const only = (args.find((a) => a.startsWith('--only=')) || '').slice('--only='.length);
const OUT_DIR = path.resolve(args.find((a) => !a.startsWith('--')) || path.join(REPO, 'control/tests/fixtures/sdp'));

const CHROMIUM_PATH = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const FIREFOX_PATH = process.env.FIREFOX_PATH || '/usr/bin/firefox-esr';
const GATHER_TIMEOUT_MS = 10_000;  // per capture, inside the page
const BROWSER_TIMEOUT_MS = 90_000; // per browser, everything included
const OVERALL_TIMEOUT_MS = 240_000; // hard stop for the whole script

// Syntactically valid placeholder: sha-256 of "ringcast-sdp-fixture".
const FINGERPRINT =
  'CD:C1:12:D7:E3:BC:82:47:36:0D:88:BE:4A:C0:62:46:3C:C6:6F:6C:5E:A9:8D:4F:D1:01:1B:5E:00:06:DD:27';

// The offer our SFU will send to a subscriber (ice-lite).
const SERVER_OFFER = [
  'v=0',
  'o=- 4611731400430051336 2 IN IP4 127.0.0.1',
  's=-',
  't=0 0',
  'a=ice-lite',
  'a=group:BUNDLE 0 1',
  'a=msid-semantic: WMS *',
  'm=audio 40000 UDP/TLS/RTP/SAVPF 111',
  'c=IN IP4 127.0.0.1',
  'a=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host',
  'a=ice-ufrag:rcAbCdEf',
  'a=ice-pwd:rcPwd0123456789abcdefABCD',
  `a=fingerprint:sha-256 ${FINGERPRINT}`,
  'a=setup:actpass',
  'a=mid:0',
  'a=sendonly',
  'a=msid:pub1 aud1',
  'a=rtcp-mux',
  'a=rtpmap:111 opus/48000/2',
  'a=fmtp:111 minptime=10;useinbandfec=1',
  'a=rtcp-fb:111 transport-cc',
  'a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level',
  'a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01',
  'a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid',
  'a=ssrc:1111 cname:ringcast',
  'a=ssrc:1111 msid:pub1 aud1',
  'm=video 40000 UDP/TLS/RTP/SAVPF 96 97',
  'c=IN IP4 127.0.0.1',
  'a=ice-ufrag:rcAbCdEf',
  'a=ice-pwd:rcPwd0123456789abcdefABCD',
  `a=fingerprint:sha-256 ${FINGERPRINT}`,
  'a=setup:actpass',
  'a=mid:1',
  'a=sendonly',
  'a=msid:pub1 vid1',
  'a=rtcp-mux',
  'a=rtcp-rsize',
  'a=rtpmap:96 VP8/90000',
  'a=rtcp-fb:96 goog-remb',
  'a=rtcp-fb:96 transport-cc',
  'a=rtcp-fb:96 ccm fir',
  'a=rtcp-fb:96 nack',
  'a=rtcp-fb:96 nack pli',
  'a=rtpmap:97 rtx/90000',
  'a=fmtp:97 apt=96',
  'a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01',
  'a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid',
  'a=ssrc-group:FID 2222 3333',
  'a=ssrc:2222 cname:ringcast',
  'a=ssrc:2222 msid:pub1 vid1',
  'a=ssrc:3333 cname:ringcast',
  'a=ssrc:3333 msid:pub1 vid1',
].join('\r\n') + '\r\n';

// ---------------------------------------------------------------------------
// The page. Everything runs in the browser; the capture functions return
// { sdp, gathering, candidates, error? } so the driver stays browser-agnostic.
const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>ringcast sdp capture</title></head>
<body><p>ringcast sdp capture</p>
<script>
const GATHER_TIMEOUT_MS = ${GATHER_TIMEOUT_MS};

function waitGathering(pc) {
  return new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') return resolve('complete');
    const timer = setTimeout(() => resolve('timeout:' + pc.iceGatheringState), GATHER_TIMEOUT_MS);
    const check = () => {
      if (pc.iceGatheringState === 'complete') { clearTimeout(timer); resolve('complete'); }
    };
    pc.addEventListener('icegatheringstatechange', check);
    pc.addEventListener('icecandidate', (e) => { if (!e.candidate) check(); });
  });
}

function finish(pc, stream, gathering) {
  const sdp = pc.localDescription ? pc.localDescription.sdp : null;
  const candidates = sdp ? sdp.split('\\r\\n').filter((l) => l.startsWith('a=candidate:')).length : 0;
  try { pc.close(); } catch (_) {}
  if (stream) stream.getTracks().forEach((t) => t.stop());
  return { sdp, gathering, candidates };
}

// mode: 'simulcast' | 'datachannel'; bundlePolicy: undefined (browser default,
// 'balanced') or 'max-bundle'.
window.capturePublishOffer = async (mode, bundlePolicy) => {
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: true, video: { width: 1280, height: 720 },
  });
  const pc = new RTCPeerConnection(bundlePolicy ? { bundlePolicy } : {});
  const audioTrack = stream.getAudioTracks()[0];
  const videoTrack = stream.getVideoTracks()[0];
  pc.addTransceiver(audioTrack, { direction: 'sendonly' });
  if (mode === 'simulcast') {
    pc.addTransceiver(videoTrack, {
      direction: 'sendonly',
      sendEncodings: [
        { rid: 'q', scaleResolutionDownBy: 4 },
        { rid: 'h', scaleResolutionDownBy: 2 },
        { rid: 'f' },
      ],
    });
  } else {
    pc.addTransceiver(videoTrack, { direction: 'sendonly' });
    pc.createDataChannel('chat');
  }
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  const gathering = await waitGathering(pc);
  return finish(pc, stream, gathering);
};

window.captureSubscribeAnswer = async (serverOffer) => {
  // Receive-only: the fake track is opened only so the browser lists loopback
  // interfaces (see PEERS.md); it is never added to the connection.
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
  const pc = new RTCPeerConnection();
  try {
    await pc.setRemoteDescription({ type: 'offer', sdp: serverOffer });
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
  } catch (e) {
    const r = finish(pc, stream, 'n/a');
    r.error = String(e && e.name) + ': ' + String(e && e.message);
    return r;
  }
  const gathering = await waitGathering(pc);
  return finish(pc, stream, gathering);
};
</script></body></html>`;

function startServer() {
  return new Promise((resolve) => {
    const server = http.createServer((req, res) => {
      if (req.url === '/' || req.url.startsWith('/?')) {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
        res.end(PAGE);
      } else {
        res.writeHead(404);
        res.end();
      }
    });
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms); }),
  ]).finally(() => clearTimeout(timer));
}

function save(name, result) {
  if (result.error || !result.sdp) {
    throw new Error(`${name}: ${result.error || 'no local description'}`);
  }
  const file = path.join(OUT_DIR, name);
  fs.writeFileSync(file, result.sdp); // bytes exactly as produced (CRLF kept)
  const warn = result.gathering === 'complete' ? '' : `  WARNING gathering=${result.gathering}`;
  console.log(`  wrote ${path.relative(process.cwd(), file)} (${Buffer.byteLength(result.sdp)} bytes, ` +
    `${result.candidates} candidates)${warn}`);
  if (result.candidates === 0) console.log(`  WARNING ${name}: no a=candidate lines`);
}

// `evaluate(fn, arg)` works the same on playwright and puppeteer pages (playwright
// accepts a single argument only, so pass several as an array).
async function captureAll(prefix, page) {
  const failures = [];
  const steps = [
    [`${prefix}-publish-offer.sdp`, () => page.evaluate((m) => window.capturePublishOffer(m), 'simulcast')],
    [`${prefix}-publish-offer-datachannel.sdp`, () => page.evaluate((m) => window.capturePublishOffer(m), 'datachannel')],
    [`${prefix}-publish-offer-maxbundle.sdp`, () => page.evaluate(([m, b]) => window.capturePublishOffer(m, b), ['simulcast', 'max-bundle'])],
    [`${prefix}-subscribe-answer.sdp`, () => page.evaluate((o) => window.captureSubscribeAnswer(o), SERVER_OFFER)],
  ];
  for (const [name, run] of steps) {
    try {
      save(name, await withTimeout(run(), GATHER_TIMEOUT_MS + 15_000, name));
    } catch (e) {
      console.error(`  FAILED ${e.message}`);
      failures.push(name);
    }
  }
  return failures;
}

function majorFromUA(ua, re) {
  const m = ua.match(re);
  if (!m) throw new Error(`cannot find browser version in user agent: ${ua}`);
  return m[1];
}

async function runChromium(url) {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'ringcast-chromium-'));
  let context;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM_PATH,
      headless: true,
      args: [
        '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
        '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
        '--allow-loopback-in-peer-connection',
      ],
    });
    const page = context.pages()[0] || (await context.newPage());
    await page.goto(url);
    const ua = await page.evaluate(() => navigator.userAgent);
    const major = majorFromUA(ua, /Chrom(?:e|ium)\/(\d+)/);
    console.log(`chromium: ${ua}`);
    return await captureAll(`chromium${major}`, page);
  } finally {
    if (context) await context.close().catch(() => {});
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

async function runFirefox(url) {
  let browser;
  try {
    browser = await puppeteer.launch({
      browser: 'firefox',
      executablePath: FIREFOX_PATH,
      headless: true,
      extraPrefsFirefox: {
        'media.navigator.streams.fake': true,
        'media.navigator.permission.disabled': true,
        'media.navigator.permission.fake': true,
        'media.peerconnection.ice.loopback': true,
        'media.peerconnection.ice.obfuscate_host_addresses': false,
      },
    });
    const page = await browser.newPage();
    await page.goto(url);
    const ua = await page.evaluate(() => navigator.userAgent);
    const major = majorFromUA(ua, /Firefox\/(\d+)/);
    console.log(`firefox: ${ua} (${await browser.version()})`);
    return await captureAll(`firefox${major}`, page);
  } finally {
    if (browser) await browser.close().catch(() => {});
  }
}

async function main() {
  fs.mkdirSync(OUT_DIR, { recursive: true });
  const server = await startServer();
  const url = `http://127.0.0.1:${server.address().port}/`;
  console.log(`serving capture page on ${url}; writing to ${OUT_DIR}`);
  const failures = [];
  const runners = [['chromium', runChromium], ['firefox', runFirefox]]
    .filter(([name]) => !only || only === name);
  for (const [name, run] of runners) {
    try {
      failures.push(...(await withTimeout(run(url), BROWSER_TIMEOUT_MS, name)));
    } catch (e) {
      console.error(`FAILED ${name}: ${e.stack || e.message}`);
      failures.push(name);
    }
  }
  server.close();
  if (failures.length) {
    console.error(`failures: ${failures.join(', ')}`);
    return 1;
  }
  console.log('all captures done');
  return 0;
}

const hardStop = setTimeout(() => {
  console.error(`hard timeout after ${OVERALL_TIMEOUT_MS} ms`);
  process.exit(2);
}, OVERALL_TIMEOUT_MS);

main().then(
  (code) => { clearTimeout(hardStop); process.exit(code); },
  (e) => { console.error(e); process.exit(1); },
);
