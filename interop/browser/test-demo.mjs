// Browser test of the demo page (issue 5): two tabs of the page that the
// ringcast binary serves (web/demo.html, demo.js, session.js) join one room and
// see and hear each other; then one leaves and the other's tile for it goes.
//
//   cd interop/browser && npm ci && node --test test-demo.mjs
//
// It:
//   - starts the ringcast binary on ephemeral ports (harness.mjs), checks that
//     its HTTP port serves the page, and reads the URL of the `Demo: ...
//     http://.../#admin=<token>` line it prints (or builds that URL with an
//     admin token minted here);
//   - opens the URL twice in headless Chromium (fake camera and microphone),
//     with ?room=<random>&name=alice / bob, and clicks Join in both: each page
//     creates the room and its own participant token over gRPC-Web with the
//     admin token, joins, publishes and subscribes (web/session.js);
//   - waits until each tab shows a tile named after the other, decodes the
//     other's video (framesDecoded > 0) and receives its audio (packets and
//     samples), and the tile's <video> plays with an audio track, unmuted;
//     2 s later, checks that both still grow;
//   - clicks Leave in bob's tab and waits until alice's tile for bob is gone;
//   - stops the server (SIGTERM, exit 0).
//
// Environment:
//   RINGCAST_BIN            server binary (default ../../target/debug/ringcast)
//   RINGCAST_MEDIA_BACKEND  media backend (first of the list; default auto)
//   RINGCAST_DEMO_STATIC=1  serve web/ from this test (plus a demo-config.json)
//                           instead of from the binary: for working on the page
//                           without rebuilding the binary that embeds it
//   CHROMIUM_PATH           browser (default /usr/bin/chromium)
//   RINGCAST_TEST_KEEP_LOGS keep the server log of a passing run too

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import {
  REPO, backendsFromEnv, launchChromium, mintToken, sleep, startRingcast, withTimeout, SERVER_STOP_TIMEOUT_MS,
} from './harness.mjs';

const BACKEND = backendsFromEnv('auto')[0];
const STATIC = process.env.RINGCAST_DEMO_STATIC === '1';
const NAMES = ['alice', 'bob'];
const JOIN_TIMEOUT_MS = 25_000;
const MEDIA_TIMEOUT_MS = 20_000;
const GROWTH_INTERVAL_MS = 2_000;
const LEAVE_TIMEOUT_MS = 5_000;

const EXTRA_CHROMIUM_ARGS = [
  // Two tabs, one in the background: keep its timers and media running.
  '--disable-background-timer-throttling', '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows',
];

/** The URL the server prints at start-up, if it prints one. */
async function demoLine(server, ms) {
  const deadline = Date.now() + ms;
  for (;;) {
    const m = server.output().match(/^Demo: .*?(http:\/\/\S+)/m);
    if (m) return m[1];
    if (Date.now() > deadline) return null;
    await sleep(50);
  }
}

/** web/ the way the binary serves it, plus demo-config.json (RINGCAST_DEMO_STATIC=1). */
function startStaticDemo(grpcPort) {
  const js = 'text/javascript; charset=utf-8';
  const files = {
    '/': ['web/demo.html', 'text/html; charset=utf-8'],
    '/demo.js': ['web/demo.js', js],
    '/session.js': ['web/session.js', js],
    '/ringcast-client.js': ['web/ringcast-client.js', js],
    '/protobuf.min.js': ['web/vendor/protobuf.min.js', js],
    '/ringcast.proto': ['proto/proto/ringcast/v1/ringcast.proto', 'text/plain; charset=utf-8'],
  };
  const server = http.createServer((req, res) => {
    const { pathname } = new URL(req.url, 'http://x');
    if (pathname === '/demo-config.json') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ grpcPort }));
      return;
    }
    const entry = files[pathname];
    if (!entry) { res.writeHead(404); res.end(); return; }
    res.writeHead(200, { 'content-type': entry[1], 'cache-control': 'no-store' });
    res.end(fs.readFileSync(path.join(REPO, entry[0])));
  });
  return new Promise((resolve, reject) => {
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => resolve({
      url: `http://127.0.0.1:${server.address().port}/`,
      close: () => new Promise((r) => { server.closeAllConnections?.(); server.close(() => r()); }),
    }));
  });
}

/** In a tab: what it receives from `publisher`, from getStats() and from the tile's <video>. */
function receivedFrom(publisher) {
  return (async () => {
    const s = window.demo.session();
    if (!s) return { error: 'not in a room' };
    const stats = await s.stats();
    const pick = (kind) => stats.inbound.filter((x) => x.publisher === publisher && x.kind === kind)
      .sort((a, b) => (b.packetsReceived || 0) - (a.packetsReceived || 0))[0] || null;
    const tile = document.querySelector(`.tile.remote[data-identity="${CSS.escape(publisher)}"]`);
    const v = tile && tile.querySelector('video');
    return {
      video: pick('video'),
      audio: pick('audio'),
      element: v && {
        paused: v.paused, muted: v.muted, readyState: v.readyState, width: v.videoWidth, height: v.videoHeight,
        tracks: v.srcObject ? v.srcObject.getTracks().map((t) => `${t.kind}:${t.readyState}`) : [],
      },
    };
  })();
}

test(`two tabs of the demo page see and hear each other (media backend ${BACKEND})`, { timeout: 90_000 }, async (t) => {
  const began = Date.now();
  const note = (s) => t.diagnostic(s);
  let server;
  let web;
  let browser;
  const tabs = []; // { name, page, console: [], identity }
  let passed = false;
  try {
    server = await startRingcast({ backend: BACKEND, logTag: 'demo' });
    note(`ringcast ${server.grpcUrl} (gRPC-Web), ${server.httpUrl} (HTTP); log: ${server.logPath} (kept if the test fails)`);
    const grpcPort = Number(new URL(server.grpcUrl).port);

    let base;
    if (STATIC) {
      web = await startStaticDemo(grpcPort);
      base = `${web.url}#admin=${mintToken('demo-admin', { admin: true })}`;
      note(`RINGCAST_DEMO_STATIC=1: the page comes from web/ through ${web.url}`);
    } else {
      const res = await fetch(`${server.httpUrl}/demo-config.json`, { signal: AbortSignal.timeout(3000) });
      assert.equal(res.status, 200, `GET ${server.httpUrl}/demo-config.json answered ${res.status}: this binary does ` +
        'not serve the demo page (rebuild it, or set RINGCAST_DEMO_STATIC=1 to serve web/ from the test)');
      assert.equal((await res.json()).grpcPort, grpcPort, 'demo-config.json names the gRPC port');
      const printed = await demoLine(server, 3000);
      if (printed) {
        base = printed;
        assert.equal(new URL(base).origin, server.httpUrl, 'the Demo URL is on the HTTP address');
        note(`the server printed the demo URL ${base.replace(/#admin=.*/, '#admin=…')}`);
      } else {
        base = `${server.httpUrl}/#admin=${mintToken('demo-admin', { admin: true })}`;
        note('the server printed no "Demo:" line: built the URL with an admin token minted here');
      }
      for (const [p, type] of [['/', 'text/html'], ['/demo.js', 'javascript'], ['/session.js', 'javascript'],
        ['/ringcast-client.js', 'javascript'], ['/protobuf.min.js', 'javascript'], ['/ringcast.proto', 'text/plain']]) {
        const r = await fetch(`${server.httpUrl}${p}`, { signal: AbortSignal.timeout(3000) });
        assert.equal(r.status, 200, `GET ${p}`);
        assert.match(r.headers.get('content-type') || '', new RegExp(type), `GET ${p}: content-type`);
        const local = p === '/' ? 'web/demo.html' : p === '/protobuf.min.js' ? 'web/vendor/protobuf.min.js'
          : p === '/ringcast.proto' ? 'proto/proto/ringcast/v1/ringcast.proto' : `web${p}`;
        if ((await r.text()) !== fs.readFileSync(path.join(REPO, local), 'utf8')) {
          note(`warning: GET ${p} differs from ${local}: the binary embeds an older copy (rebuild it)`);
        }
      }
    }

    browser = await launchChromium({ extraArgs: EXTRA_CHROMIUM_ARGS });
    const room = `demo-${crypto.randomBytes(4).toString('hex')}`;
    for (const [i, name] of NAMES.entries()) {
      const page = i === 0 && browser.context.pages()[0] ? browser.context.pages()[0] : await browser.context.newPage();
      const tab = { name, page, console: [] };
      page.on('console', (m) => tab.console.push(`console.${m.type()}: ${m.text()}`));
      page.on('pageerror', (e) => tab.console.push(`pageerror: ${e.message}`));
      const url = new URL(base);
      url.searchParams.set('room', room);
      url.searchParams.set('name', name);
      await page.goto(url.href, { timeout: 15_000 });
      tabs.push(tab);
    }

    const diagnostics = async () => {
      let out = '';
      for (const tab of tabs) {
        const st = await withTimeout(tab.page.evaluate(() => ({
          status: document.getElementById('status').textContent,
          error: document.getElementById('error').textContent,
          errors: window.demo?.errors,
          tiles: [...document.querySelectorAll('.tile')].map((e) => `${e.dataset.identity} "${e.textContent.trim()}" ${e.className}`),
          log: window.demo?.session()?.log,
          events: window.demo?.session()?.events.map((e) => e.event),
        })), 5000, 'page state').catch((e) => ({ error: e.message }));
        out += `\n===== ${tab.name} (${tab.identity})\nstatus: ${st.status}\nerror: ${st.error}\n` +
          `errors: ${JSON.stringify(st.errors)}\ntiles: ${JSON.stringify(st.tiles)}\nevents: ${JSON.stringify(st.events)}\n` +
          `steps:\n  ${(st.log || []).join('\n  ')}\n`;
        if (tab.console.length) out += `console:\n  ${tab.console.slice(-20).join('\n  ')}\n`;
      }
      return `${out}\nserver log tail (${server.logPath}):\n${server.tail(60)}`;
    };
    const failWith = async (msg) => assert.fail(`${msg}\n${await diagnostics()}`);

    // Join in both tabs at once, by clicking, as a person would.
    const tJoin = Date.now();
    const joined = await Promise.allSettled(tabs.map(async (tab) => {
      await tab.page.locator('#join').click({ timeout: 10_000 });
      await tab.page.waitForFunction(() => window.demo.session()?.pub?.connectionState === 'connected', null,
        { timeout: JOIN_TIMEOUT_MS });
      tab.identity = await tab.page.evaluate(() => window.demo.session().identity);
    }));
    const failed = joined.map((r, i) => (r.status === 'rejected' ? `${tabs[i].name}: ${r.reason.message}` : null)).filter(Boolean);
    if (failed.length) await failWith(`joining and publishing failed:\n${failed.join('\n')}`);
    note(`both tabs joined room ${room} and publish (${Date.now() - tJoin} ms): ${tabs.map((x) => x.identity).join(', ')}`);
    for (const tab of tabs) {
      const published = await tab.page.evaluate(() => window.demo.session().published.map((x) => `${x.kind} ${x.name}`).sort());
      assert.deepEqual(published, ['TRACK_KIND_AUDIO microphone', 'TRACK_KIND_VIDEO camera'], `${tab.name}: published tracks`);
    }

    const [alice, bob] = tabs;
    const pairs = [[alice, bob], [bob, alice]];
    // A tile named after the other.
    for (const [tab, other] of pairs) {
      await tab.page.locator('.tile.remote', { hasText: other.name }).waitFor({ state: 'visible', timeout: 10_000 })
        .catch(() => failWith(`${tab.name}: no visible tile named ${other.name}`));
    }

    // Media: each tab decodes the other's video and receives its audio.
    const tMedia = Date.now();
    const snapshot = () => Promise.all(pairs.map(([tab, other]) =>
      withTimeout(tab.page.evaluate(receivedFrom, other.identity), 5000, `${tab.name}: stats`)));
    const problems = (snap) => snap.flatMap((r, i) => {
      const [tab, other] = pairs[i];
      const what = `${tab.name} <- ${other.name}`;
      const out = [];
      if (!(r.video?.framesDecoded > 0)) out.push(`${what}: no decoded video frame (${JSON.stringify(r.video)})`);
      if (!(r.audio?.packetsReceived > 0 && r.audio?.totalSamplesReceived > 0)) out.push(`${what}: no audio (${JSON.stringify(r.audio)})`);
      const e = r.element;
      if (!e || e.paused || e.muted || e.readyState < 2 || !(e.width > 0) ||
          !e.tracks.includes('audio:live') || !e.tracks.includes('video:live')) {
        out.push(`${what}: the tile's <video> does not play both tracks (${JSON.stringify(e)})`);
      }
      return out;
    });
    let first;
    for (;;) {
      first = await snapshot();
      const p = problems(first);
      if (!p.length) break;
      if (Date.now() - tMedia > MEDIA_TIMEOUT_MS) await failWith(`after ${MEDIA_TIMEOUT_MS} ms:\n  ${p.join('\n  ')}`);
      await sleep(250);
    }
    note(`each tab sees and hears the other ${Date.now() - tMedia} ms after both published`);
    await sleep(GROWTH_INTERVAL_MS);
    const second = await snapshot();
    const stalled = [];
    second.forEach((b, i) => {
      const a = first[i];
      const [tab, other] = pairs[i];
      note(`${tab.name} <- ${other.name}: video ${b.video.codec} ${b.element.width}x${b.element.height} ` +
        `frames ${a.video.framesDecoded} -> ${b.video.framesDecoded}, audio ${b.audio.codec} packets ` +
        `${a.audio.packetsReceived} -> ${b.audio.packetsReceived}, samples ${a.audio.totalSamplesReceived} -> ${b.audio.totalSamplesReceived}`);
      if (!(b.video.framesDecoded > a.video.framesDecoded)) stalled.push(`${tab.name} <- ${other.name}: video stalled`);
      if (!(b.audio.totalSamplesReceived > a.audio.totalSamplesReceived)) stalled.push(`${tab.name} <- ${other.name}: audio stalled`);
    });
    if (stalled.length) await failWith(`media stopped growing over ${GROWTH_INTERVAL_MS} ms: ${stalled.join(', ')}`);
    const speakers = await Promise.all(tabs.map((tab) => tab.page.evaluate(() =>
      window.demo.session().events.filter((e) => e.event === 'activeSpeakers').length)));
    note(`ActiveSpeakersChanged events: ${tabs.map((tab, i) => `${tab.name} ${speakers[i]}`).join(', ')}`);
    // The latest one, if any, is shown: the loudest speaker's tile is highlighted.
    for (const tab of tabs) {
      const shown = await tab.page.evaluate(() => {
        const [loudest] = window.demo.speakers;
        const tile = loudest && document.querySelector(`.tile[data-identity="${CSS.escape(loudest.identity)}"]`);
        return { loudest, highlighted: [...document.querySelectorAll('.tile.loudest')].map((e) => e.dataset.identity), tile: !!tile };
      });
      if (shown.loudest) {
        note(`${tab.name}: loudest speaker ${shown.loudest.identity} (level ${shown.loudest.level.toFixed(2)})`);
        assert.deepEqual(shown.highlighted, [shown.loudest.identity], `${tab.name}: the highlighted tile`);
      } else {
        assert.deepEqual(shown.highlighted, [], `${tab.name}: no speaker, no highlighted tile`);
      }
    }

    // Each tile shows what its video is sent (SubscriptionQualityChanged: one layer here, and
    // the subscriber's downlink estimate), and the page told Ringcast the tile's size.
    for (const [tab, other] of pairs) {
      const shown = await tab.page.waitForFunction((publisher) => {
        const s = window.demo.session();
        const tile = window.demo.tiles.get(publisher);
        const q = tile && window.demo.quality[tile.videoSid];
        const sized = s.log.find((l) => l.includes(`rendered size`) && l.includes(tile.videoSid));
        const text = tile && tile.el.querySelector('.quality').textContent;
        return q && sized && /Mbit\/s/.test(text) ? { q, sized, text } : null;
      }, other.identity, { timeout: 10_000 }).then((h) => h.jsonValue())
        .catch(() => failWith(`${tab.name}: no subscription quality shown on ${other.name}'s tile, or no size sent`));
      note(`${tab.name}'s tile for ${other.name}: "${shown.text}" (${JSON.stringify(shown.q)}); ${shown.sized.trim()}`);
      assert.equal(shown.q.layers, 1, 'no simulcast in the demo');
      assert.equal(shown.q.currentLayer, 0);
      assert.ok(shown.q.estimateBps > 0, 'Chromium sends transport-cc feedback: an estimate');
    }

    // Bob leaves: alice's tile for him goes, and bob's tab is back at the join form.
    const tLeave = Date.now();
    await bob.page.locator('#leave').click({ timeout: 5000 });
    await alice.page.locator(`.tile.remote[data-identity="${bob.identity}"]`).waitFor({ state: 'detached', timeout: LEAVE_TIMEOUT_MS })
      .catch(() => failWith(`alice still shows bob's tile ${LEAVE_TIMEOUT_MS} ms after bob clicked Leave`));
    note(`alice's tile for bob went ${Date.now() - tLeave} ms after bob clicked Leave`);
    await bob.page.locator('#join').waitFor({ state: 'visible', timeout: 5000 });
    assert.equal(await bob.page.locator('.tile').count(), 0, 'bob has no tiles left');
    const errors = await Promise.all(tabs.map((tab) => tab.page.evaluate(() => window.demo.errors)));
    assert.deepEqual(errors, [[], []], 'errors shown by the pages');

    await browser.close();
    const exit = await server.stop();
    assert.ok(!exit.hung, `ringcast did not exit within ${SERVER_STOP_TIMEOUT_MS} ms of SIGTERM`);
    assert.equal(exit.code, 0, `ringcast exited with ${JSON.stringify(exit)} after SIGTERM:\n${server.tail()}`);
    note(`test took ${Date.now() - began} ms`);
    passed = true;
  } finally {
    if (browser) await browser.close();
    if (web) await web.close();
    if (server) {
      await server.stop();
      if (passed && !process.env.RINGCAST_TEST_KEEP_LOGS) fs.rmSync(server.logPath, { force: true });
    }
  }
});
