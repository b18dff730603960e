// The Ringcast demo page (demo.html). One tab = one participant: it publishes
// its camera and microphone and shows a tile for everyone else in the room.
//
// Where the tokens come from:
// - `#admin=<admin token>` in the URL (the server prints such a URL at start-up
//   with its development credentials; a fragment never reaches any server):
//   the page calls RoomService.CreateRoom (room `?room=`, default `demo`) and
//   CreateAccessToken for a participant with publish and subscribe grants.
// - Otherwise one pastes a token: a participant token is used as it is, an
//   admin token as above.
// `?name=` sets the display name. The gRPC-Web calls go to this host, on the
// port that demo-config.json names.

import { RingcastRoomService, RingcastClient } from './ringcast-client.js';
import { RingcastSession } from './session.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const adminFromUrl = new URLSearchParams(location.hash.slice(1)).get('admin') || '';

let grpcUrl = null;
let session = null; // RingcastSession while in a room
let rooms = null; // RingcastRoomService when we have an admin token
let roomName = '';
let me = null; // our Participant
let leaveOnHide = null; // a keepalive Leave for when the tab closes
const tiles = new Map(); // identity -> { el, video, name, local }

// For tests and the console.
window.demo = { session: () => session, tiles, speakers: [], errors: [], quality: {} };

// ---------------------------------------------------------------------------
// Status and errors

function setStatus(text) { $('status').textContent = text; }

/** Shows an error; a RingcastError with its gRPC status code and message. */
function showError(e) {
  const text = e && e.codeName
    ? `${e.method || 'Ringcast'}: ${e.codeName} (code ${e.code}): ${e.grpcMessage || 'no message'}`
    : String((e && e.message) || e);
  window.demo.errors.push(text);
  $('error').textContent = text;
}
function clearError() { $('error').textContent = ''; }

function updateStatus() {
  if (!session || !me) return;
  const others = [...tiles.values()].filter((t) => !t.local).length;
  setStatus(`Room “${roomName}” as ${me.name || me.identity} · ${others} other${others === 1 ? '' : 's'} here · ` +
    `sending: ${session.pub ? session.pub.connectionState : me.canPublish ? 'no' : 'no (the token may not publish)'} · ` +
    `receiving: ${session.sub ? session.sub.connectionState : 'no'}`);
}

// ---------------------------------------------------------------------------
// Tiles

function addTile(identity, name, local = false) {
  let tile = tiles.get(identity);
  if (!tile) {
    const el = $('tile-template').content.firstElementChild.cloneNode(true);
    el.dataset.identity = identity;
    el.classList.add(local ? 'local' : 'remote');
    tile = { el, video: el.querySelector('video'), local, name: '', videoSid: null, sentSize: '' };
    if (local) tile.video.muted = true; // no echo of ourselves
    else resizes.observe(el);
    tiles.set(identity, tile);
    if (local) $('tiles').prepend(el); else $('tiles').append(el);
  }
  if (name || !tile.name) {
    tile.name = name || identity;
    part(tile, '.name').textContent = local ? `${tile.name} (you)` : tile.name;
  }
  updateStatus();
  return tile;
}

function part(tile, selector) { return tile.el.querySelector(selector); }

// Ringcast sends no simulcast layer larger than a tile needs: each remote tile's size in
// device pixels goes to UpdateSubscriptionSettings when it changes (at most every 250 ms).
const resizes = new ResizeObserver((entries) => {
  for (const e of entries) {
    const tile = tiles.get(e.target.dataset.identity);
    if (!tile) continue;
    clearTimeout(tile.resizeTimer);
    tile.resizeTimer = setTimeout(() => sendTileSize(tile), 250);
  }
});

function sendTileSize(tile) {
  if (!session || !tile.videoSid) return;
  const dpr = window.devicePixelRatio || 1;
  const width = Math.round(tile.el.clientWidth * dpr);
  const height = Math.round(tile.el.clientHeight * dpr);
  const key = `${tile.videoSid} ${width}x${height}`;
  if (!width || !height || key === tile.sentSize) return;
  tile.sentSize = key;
  session.client.updateSubscriptionSettings([tile.videoSid], { width, height })
    .then(() => session.step(`rendered size ${width}x${height} sent for ${tile.videoSid}`))
    .catch((e) => {
      tile.sentSize = ''; // e.g. not subscribed yet: tried again at the next change
      session.step(`UpdateSubscriptionSettings failed: ${e.message}`);
    });
}

/** "layer 2/3 → 3 · 1.4 Mbit/s": what the tile's video is sent, from Events. */
function showQuality(q) {
  window.demo.quality[q.trackSid] = q;
  const tile = [...tiles.values()].find((t) => t.videoSid === q.trackSid);
  if (!tile) return;
  const parts = [];
  if (q.layers > 1) {
    const now = q.currentLayer < 0 ? '–' : String(q.currentLayer + 1);
    parts.push(`layer ${now}/${q.layers}${q.targetLayer !== q.currentLayer ? ` → ${q.targetLayer + 1}` : ''}`);
  }
  if (q.temporalLayers > 1) {
    const t = q.temporalLayersSent || q.temporalLayers;
    parts.push(`${t}/${q.temporalLayers} frame rate layers`);
  }
  if (q.estimateBps > 0) parts.push(`${(q.estimateBps / 1e6).toFixed(q.estimateBps < 1e6 ? 2 : 1)} Mbit/s`);
  part(tile, '.quality').textContent = parts.join(' · ');
}

function removeTile(identity) {
  const tile = tiles.get(identity);
  if (!tile) return;
  resizes.unobserve(tile.el);
  clearTimeout(tile.resizeTimer);
  tile.video.srcObject = null;
  tile.el.remove();
  tiles.delete(identity);
  updateStatus();
}

/** Shows `tracks` in the tile, restarting playback only when they change. */
function setTileTracks(tile, tracks) {
  const current = tile.video.srcObject ? tile.video.srcObject.getTracks() : [];
  const same = current.length === tracks.length && tracks.every((t) => current.includes(t));
  if (!same) {
    tile.video.srcObject = tracks.length ? new MediaStream(tracks) : null;
    if (tracks.length) playTile(tile);
  }
  tile.el.classList.toggle('novideo', !tracks.some((t) => t.kind === 'video'));
}

function playTile(tile) {
  tile.video.play().catch((e) => {
    if (e.name !== 'NotAllowedError') return; // AbortError: replaced by a newer srcObject
    // The browser wants a gesture before it plays sound.
    setStatus('Click anywhere to hear the others.');
    document.addEventListener('click', () => { for (const t of tiles.values()) t.video.play().catch(() => {}); updateStatus(); },
      { once: true });
  });
}

function setBadges(tile, { micOff, camOff }) {
  part(tile, '.badges').textContent = [micOff && 'mic off', camOff && 'camera off'].filter(Boolean).join(' · ');
}

/** Puts every received track in its publisher's tile; called whenever something changes. */
function reconcile() {
  if (!session || !me) return;
  const byPublisher = new Map();
  for (const r of session.receiving()) {
    if (!byPublisher.has(r.publisher)) byPublisher.set(r.publisher, []);
    byPublisher.get(r.publisher).push(r);
  }
  for (const [identity, tile] of tiles) {
    if (tile.local) continue;
    const list = byPublisher.get(identity) || [];
    setTileTracks(tile, list.map((r) => r.track));
    const videoSid = list.find((r) => r.kind === 'TRACK_KIND_VIDEO')?.sid || null;
    if (videoSid !== tile.videoSid) {
      tile.videoSid = videoSid;
      part(tile, '.quality').textContent = '';
      if (session.quality[videoSid]) showQuality(session.quality[videoSid]);
      sendTileSize(tile);
    }
    setBadges(tile, {
      micOff: list.some((r) => r.kind === 'TRACK_KIND_AUDIO' && r.muted),
      camOff: list.some((r) => r.kind === 'TRACK_KIND_VIDEO' && r.muted),
    });
  }
}

function highlightSpeakers(speakers) {
  window.demo.speakers = speakers;
  const loudest = speakers.length ? speakers[0].identity : null;
  for (const [identity, tile] of tiles) {
    tile.el.classList.toggle('speaking', speakers.some((s) => s.identity === identity && s.level > 0));
    tile.el.classList.toggle('loudest', identity === loudest);
  }
}

// ---------------------------------------------------------------------------
// Joining and leaving

function jwtClaims(token) {
  try {
    return JSON.parse(atob(token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')));
  } catch (_) {
    return null;
  }
}

function randomSuffix() {
  return Array.from(crypto.getRandomValues(new Uint8Array(3)), (b) => b.toString(16).padStart(2, '0')).join('');
}

/** A participant token: the pasted one, or one minted with an admin token. */
async function participantToken(name) {
  name = name || `guest-${randomSuffix().slice(0, 4)}`; // used with an admin token only
  const pasted = $('token').value.trim();
  const admin = adminFromUrl || (jwtClaims(pasted)?.grants?.admin ? pasted : '');
  if (!admin) {
    if (!pasted) throw new Error('Paste an access token first.');
    if (!jwtClaims(pasted)) throw new Error('That is not a JWT (three base64url parts separated by dots).');
    rooms = null;
    return pasted;
  }
  rooms = new RingcastRoomService(grpcUrl, admin);
  roomName = $('room').value.trim();
  setStatus(`Creating room “${roomName}”…`);
  try {
    await rooms.createRoom({ name: roomName });
  } catch (e) {
    if (e.code !== 6) throw e; // ALREADY_EXISTS (with other settings) is fine: we only join it
  }
  // Identities are unique in a room: a second Join with the same one replaces the first.
  const slug = name.replace(/[^A-Za-z0-9_.@:-]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 40) || 'guest';
  const { token } = await rooms.createAccessToken({
    room: roomName, identity: `${slug}-${randomSuffix()}`, name, canPublish: true, canSubscribe: true,
  });
  return token;
}

/** Camera and microphone, or whichever of them works; null if none does. */
async function localMedia() {
  if (!navigator.mediaDevices) {
    showError('This page is not a secure context (use http://127.0.0.1 or https): no camera or microphone.');
    return null;
  }
  let last;
  for (const constraints of [{ audio: true, video: true }, { audio: true }, { video: true }]) {
    try {
      return await navigator.mediaDevices.getUserMedia(constraints);
    } catch (e) {
      last = e;
    }
  }
  showError(`No camera or microphone (${last.name}: ${last.message}). You can still watch and listen.`);
  return null;
}

async function join(event) {
  event.preventDefault();
  clearError();
  $('join').disabled = true;
  let s = null;
  try {
    const name = $('name').value.trim();
    const token = await participantToken(name);
    s = new RingcastSession(grpcUrl, token);
    session = s;
    // Only the current session's news count: after Leave, the old one's stream ends too.
    const on = (type, fn) => s.addEventListener(type, (e) => { if (session === s) fn(e.detail); });
    on('event', onEvent);
    on('negotiated', reconcile);
    on('statechange', updateStatus);
    on('error', (d) => showError(d.error || d.message));
    on('ended', (d) => ended(d.error || 'The server closed the event stream.'));
    leaveOnHide = new RingcastClient(grpcUrl, token, { fetch: (url, init) => fetch(url, { ...init, keepalive: true }) });

    setStatus('Joining…');
    const joined = await s.join(name);
    me = joined.participant;
    roomName = joined.room.name;
    $('join-form').hidden = true;
    $('call').hidden = false;
    addTile(me.identity, me.name || name, true);
    for (const o of joined.others) addTile(o.identity, o.name);
    reconcile();

    if (me.canPublish) {
      setStatus('Starting the camera and microphone…');
      const stream = await localMedia();
      if (stream && session !== s) stream.getTracks().forEach((t) => t.stop()); // left meanwhile
      if (stream && session === s) {
        const local = tiles.get(me.identity);
        local.video.srcObject = stream;
        local.el.classList.toggle('novideo', !stream.getVideoTracks().length);
        playTile(local);
        setStatus('Publishing…');
        await s.publish(stream);
        $('mute-mic').disabled = !stream.getAudioTracks().length;
        $('mute-cam').disabled = !stream.getVideoTracks().length;
      }
    }
    updateStatus();
  } catch (e) {
    if (s === null || session === s) { // not after Leave
      showError(e);
      teardown();
      setStatus('Not connected.');
    }
  } finally {
    $('join').disabled = false;
  }
}

function onEvent(ev) {
  const body = ev[ev.event] || {};
  switch (ev.event) {
    case 'participantJoined':
      addTile(body.participant.identity, body.participant.name);
      break;
    case 'participantLeft':
      if (body.identity === me?.identity) {
        ended(`You were disconnected (${body.reason.replace('LEAVE_REASON_', '').toLowerCase().replace(/_/g, ' ')}).`);
        return;
      }
      removeTile(body.identity);
      break;
    case 'activeSpeakers':
      highlightSpeakers(body.speakers || []);
      return;
    case 'subscriptionQuality':
      showQuality(body);
      return;
    case 'error':
      showError({ codeName: `error ${body.code}`, code: body.code, grpcMessage: body.message, method: 'Ringcast' });
      break;
    default:
  }
  reconcile();
  updateStatus();
}

async function toggleMute(kind, button) {
  const published = session && session.publishedTrack(kind);
  if (!published) return;
  const muted = published.track.enabled; // enabled now: this click mutes
  published.track.enabled = !muted;
  button.setAttribute('aria-pressed', String(muted));
  button.textContent = `${muted ? 'Unmute' : 'Mute'} ${kind === 'audio' ? 'mic' : 'camera'}`;
  const local = tiles.get(me.identity);
  setBadges(local, { micOff: !session.publishedTrack('audio')?.track.enabled, camOff: !session.publishedTrack('video')?.track.enabled });
  // With an admin token, also stop the forwarding, so that the others see the mute.
  if (rooms) await rooms.mutePublishedTrack(roomName, me.identity, published.sid, muted).catch(showError);
}

async function leave() {
  const left = session && session.leave(); // sends Leave, then closes the session
  teardown();
  setStatus('You left the room.');
  if (left) await left.catch(showError);
}

function ended(why) {
  teardown();
  showError(why);
  setStatus('Not connected.');
}

/** Back to the join form. */
function teardown() {
  if (session) session.close();
  session = null;
  leaveOnHide = null;
  me = null;
  for (const identity of [...tiles.keys()]) removeTile(identity);
  for (const [id, label] of [['mute-mic', 'Mute mic'], ['mute-cam', 'Mute camera']]) {
    Object.assign($(id), { disabled: true, textContent: label });
    $(id).setAttribute('aria-pressed', 'false');
  }
  $('call').hidden = true;
  $('join-form').hidden = false;
}

// ---------------------------------------------------------------------------
// Start-up

async function init() {
  // With a pasted participant token, an empty name keeps the token's.
  $('name').value = params.get('name') || (adminFromUrl ? `guest-${randomSuffix().slice(0, 4)}` : '');
  $('room').value = params.get('room') || 'demo';
  $('token-field').hidden = Boolean(adminFromUrl);
  // The room field is for admin tokens; a participant token names its room.
  const roomFieldNeeded = () => { $('room-field').hidden = !adminFromUrl && !jwtClaims($('token').value.trim())?.grants?.admin; };
  $('token').addEventListener('input', roomFieldNeeded);
  roomFieldNeeded();
  $('join-form').addEventListener('submit', join);
  $('leave').addEventListener('click', leave);
  $('mute-mic').addEventListener('click', (e) => toggleMute('audio', e.currentTarget));
  $('mute-cam').addEventListener('click', (e) => toggleMute('video', e.currentTarget));
  // Closing the tab: tell the server at once instead of letting the transports time out.
  addEventListener('pagehide', () => { if (leaveOnHide) leaveOnHide.leave().catch(() => {}); });

  try {
    const res = await fetch('demo-config.json', { cache: 'no-store' });
    if (!res.ok) throw new Error(`demo-config.json: HTTP ${res.status}`);
    const { grpcPort } = await res.json();
    grpcUrl = `${location.protocol}//${location.hostname}:${grpcPort}`;
  } catch (e) {
    showError(`Cannot find the gRPC-Web address: ${e.message}`);
    setStatus('Not connected.');
    return;
  }
  $('join-form').hidden = false;
  setStatus(adminFromUrl ? 'Choose a name and join.' : 'Paste an access token, or open the “Demo:” URL the server prints.');
}

init();
