// One participant's media session with Ringcast, in a browser: Join, the Events
// stream, the subscriber transport (Ringcast offers, we answer, one negotiation
// at a time) and the publisher transport (we offer, Ringcast answers).
// Used by the demo page (demo.js) and the interop test page
// (interop/browser/pubsub-page.html).
//
//   import { RingcastSession } from './session.js';
//   const s = new RingcastSession(grpcUrl, participantToken);
//   s.addEventListener('event', (e) => console.log(e.detail));  // every Events message
//   s.addEventListener('negotiated', () => ...);  // a subscriber offer was answered
//   await s.join('Alice');
//   await s.publish(await navigator.mediaDevices.getUserMedia({ audio: true, video: true }));
//   ...
//   await s.leave();
//
// Events dispatched (CustomEvent, payload in `detail`):
//   'event'       an Events message, after the session has noted its tracks
//   'track'       the subscriber pc's RTCTrackEvent
//   'negotiated'  a subscriber negotiation finished: { version, midToTrackSid, ... }
//   'statechange' a pc's connection state changed: { role: 'pub' | 'sub', state }
//   'error'       a failure outside an awaited call: { message, error }
//   'ended'       the Events stream ended: { error } (null if it closed normally)

import { RingcastClient } from './ringcast-client.js';

/** `promise`, or a rejection after `ms` milliseconds. */
export function bounded(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms); }),
  ]).finally(() => clearTimeout(timer));
}

/** Resolves when `pc` has gathered its candidates. */
export function waitGathering(pc, ms) {
  return bounded(new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') return resolve();
    const check = () => { if (pc.iceGatheringState === 'complete') resolve(); };
    pc.addEventListener('icegatheringstatechange', check);
    pc.addEventListener('icecandidate', (e) => { if (!e.candidate) check(); });
  }), ms, 'ICE gathering');
}

/** Resolves when `pc` is connected; rejects if it fails or closes first. */
export function waitConnected(pc, ms, name) {
  return bounded(new Promise((resolve, reject) => {
    const check = () => {
      if (pc.connectionState === 'connected') resolve();
      else if (pc.connectionState === 'failed' || pc.connectionState === 'closed') {
        reject(new Error(`${name}: connectionState became '${pc.connectionState}' (ice=${pc.iceConnectionState})`));
      }
    };
    pc.addEventListener('connectionstatechange', check);
    check();
  }), ms, `${name}: waiting for connectionState 'connected' (last: ${pc.connectionState}/${pc.iceConnectionState})`);
}

export class RingcastSession extends EventTarget {
  /**
   * @param {string} grpcUrl Ringcast's gRPC-Web address, e.g. 'http://127.0.0.1:50051'
   * @param {string} token the participant's access token
   * @param {object} [clientOptions] passed to RingcastClient
   */
  constructor(grpcUrl, token, clientOptions = {}) {
    super();
    this.client = new RingcastClient(grpcUrl, token, clientOptions);
    this.t0 = performance.now();
    this.log = []; // timestamped steps, for diagnostics
    this.errors = []; // failures outside the awaited calls (renegotiation, events)
    this.joined = null; // the JoinResponse
    this.events = []; // the Events stream, in order
    this.eventsError = null;
    this.eventsEnded = false;
    this.eventsAbort = new AbortController();
    this.tracks = {}; // track sid -> { publisher, kind, name, mimeType, muted }
    this.stream = null; // the published MediaStream
    this.pub = null; // publisher RTCPeerConnection
    this.sub = null; // subscriber RTCPeerConnection
    this.publishOffer = null;
    this.publishAnswer = null;
    this.published = []; // TrackInfo of our own tracks
    // Subscriber negotiation
    this.negotiations = []; // { version, reason, offerSdp, answerSdp, midToTrackSid, rejected, error, ms }
    this.midToTrackSid = {}; // from the latest answered offer
    this.quality = {}; // trackSid -> the latest SubscriptionQualityChanged
    this.layersWanted = {}; // trackSid -> the latest TrackLayersWanted layers applied
    this.answeredVersion = null;
    this.highestAnnounced = 0; // highest SubscriberOfferReady version seen
    this.busy = false;
    this.again = false;
    this.ontrack = []; // { mid, kind, trackId, streams }
    this.closed = false;
    // Optional: (sdp) => sdp, applied to every subscriber offer before
    // setRemoteDescription (tests use it to send media through a relay).
    this.offerFilter = null;
    // Optional: (sdp) => sdp (or a Promise of it), applied to Ringcast's publish
    // answer before setRemoteDescription (the same, for the publisher transport).
    // publishAnswer keeps the answer as Ringcast sent it.
    this.answerFilter = null;
    // The RTCConfiguration of both peer connections (e.g. { bundlePolicy: 'max-bundle' }),
    // read when each is created: set it before join() and publish().
    this.rtcConfig = {};
  }

  step(what) {
    this.log.push(`${(performance.now() - this.t0).toFixed(0).padStart(6)} ms ${what}`);
  }

  emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }

  fail(message, error) {
    this.step(message);
    this.errors.push(message);
    this.emit('error', { message, error });
  }

  noteTrack(info) {
    this.tracks[info.sid] = {
      publisher: info.publisherIdentity, kind: info.kind, name: info.name, mimeType: info.mimeType, muted: info.muted,
    };
  }

  /**
   * What the subscriber pc receives now: [{ sid, publisher, kind, muted, transceiver, track }]
   * for every m-line of the latest answered offer that carries a published track.
   */
  receiving() {
    const out = [];
    if (!this.sub) return out;
    for (const t of this.sub.getTransceivers()) {
      const sid = t.mid !== null && this.midToTrackSid[t.mid];
      const info = sid && this.tracks[sid];
      if (!info || info.unpublished) continue;
      if (t.currentDirection !== 'recvonly' && t.currentDirection !== 'sendrecv') continue;
      out.push({ sid, ...info, transceiver: t, track: t.receiver.track });
    }
    return out;
  }

  /**
   * Enters the room, opens the Events stream and starts the subscriber
   * transport (an initial Subscribe, then one per SubscriberOfferReady).
   * Resolves to the JoinResponse { room, participant, others, candidates }.
   */
  async join(name = '') {
    const joined = await this.client.join(name);
    this.joined = joined;
    this.identity = joined.participant.identity;
    this.step(`joined as ${joined.participant.identity} (${joined.participant.sid}) in ${joined.room.name}; ` +
      `others: ${joined.others.map((o) => o.identity).join(',') || 'none'}`);
    for (const o of joined.others) for (const t of o.tracks || []) this.noteTrack(t);
    this.consumeEvents();

    const sub = new RTCPeerConnection(this.rtcConfig);
    this.sub = sub;
    this.watchStates(sub, 'sub');
    sub.addEventListener('track', (ev) => {
      const mid = ev.transceiver && ev.transceiver.mid;
      const streams = ev.streams.map((s) => s.id);
      this.ontrack.push({ mid, kind: ev.track.kind, trackId: ev.track.id, streams });
      this.step(`ontrack mid=${mid} ${ev.track.kind} track=${ev.track.id} streams=${streams.join(',')}`);
      this.emit('track', ev);
    });
    this.renegotiate('initial');
    return joined;
  }

  /**
   * Publishes `stream`'s first audio and first video track on sendonly
   * transceivers and waits until the publisher transport is connected.
   * `videoEncodings`, if given, are the video transceiver's sendEncodings
   * (e.g. three rids for simulcast); `videoCodec` (e.g. 'video/H264') is put first in its
   * codec preferences.
   * Resolves to the PublishResponse { sdpAnswer, tracks, rejected }.
   */
  async publish(stream, { gatherTimeoutMs = 10_000, connectTimeoutMs = 20_000, names = {}, videoEncodings = null, videoCodec = null } = {}) {
    this.stream = stream;
    const pc = new RTCPeerConnection(this.rtcConfig);
    this.pub = pc;
    this.watchStates(pc, 'pub');
    const sending = [stream.getAudioTracks()[0], stream.getVideoTracks()[0]].filter(Boolean)
      .map((track) => pc.addTransceiver(track, {
        direction: 'sendonly', streams: [stream],
        ...(track.kind === 'video' && videoEncodings ? { sendEncodings: videoEncodings } : {}),
      }));
    if (videoCodec) {
      // That codec first (e.g. 'video/H264'), then the others (and RTX) as the browser orders them.
      const t = sending.find((x) => x.sender.track.kind === 'video');
      const codecs = RTCRtpSender.getCapabilities('video').codecs;
      const first = codecs.filter((c) => c.mimeType.toLowerCase() === videoCodec.toLowerCase());
      if (!first.length) throw new Error(`this browser cannot send ${videoCodec}`);
      if (t) t.setCodecPreferences([...first, ...codecs.filter((c) => !first.includes(c))]);
    }
    await pc.setLocalDescription(await pc.createOffer());
    const trackNames = {}; // by mid, which setLocalDescription has just assigned
    const trackSources = {};
    for (const t of sending) {
      const kind = t.sender.track.kind;
      trackNames[t.mid] = names[kind] || (kind === 'audio' ? 'microphone' : 'camera');
      trackSources[t.mid] = kind === 'audio' ? 'TRACK_SOURCE_MICROPHONE' : 'TRACK_SOURCE_CAMERA';
    }
    // Ringcast is ICE-lite and learns our address from our checks; candidates
    // in the offer are still welcome.
    await waitGathering(pc, gatherTimeoutMs);
    this.publishOffer = pc.localDescription.sdp;
    const published = await this.client.publish(pc.localDescription.sdp, trackNames, undefined, trackSources);
    this.step(`publish answered: ${published.tracks.map((t) => `${t.sid} ${t.kind} ${t.mimeType}`).join(', ')}; ` +
      `${published.rejected.length} rejected`);
    this.published = published.tracks;
    for (const t of published.tracks) this.noteTrack({ ...t, publisherIdentity: t.publisherIdentity || this.identity });
    this.publishAnswer = published.sdpAnswer;
    const answer = this.answerFilter ? await this.answerFilter(published.sdpAnswer) : published.sdpAnswer;
    await pc.setRemoteDescription({ type: 'answer', sdp: answer });
    await waitConnected(pc, connectTimeoutMs, 'publisher');
    this.step('publisher connected');
    return published;
  }

  /** Our published track of `kind` ('audio' | 'video'): { sid, track } or null. */
  publishedTrack(kind) {
    const info = this.published.find((t) => t.kind === `TRACK_KIND_${kind.toUpperCase()}`);
    const track = this.stream && (kind === 'audio' ? this.stream.getAudioTracks() : this.stream.getVideoTracks())[0];
    return info && track ? { sid: info.sid, track } : null;
  }

  /** Leaves the room (best effort) and closes everything. */
  async leave() {
    if (this.closed) return;
    this.closed = true;
    try {
      await bounded(this.client.leave(), 5000, 'Leave');
      this.step('left');
    } finally {
      this.close();
    }
  }

  /** Closes the peer connections and the Events stream, and stops the local tracks. */
  close() {
    this.closed = true;
    this.eventsAbort.abort();
    if (this.pub) this.pub.close();
    if (this.sub) this.sub.close();
    if (this.stream) this.stream.getTracks().forEach((t) => t.stop());
  }

  watchStates(pc, role) {
    pc.addEventListener('connectionstatechange', () => {
      this.step(`${role} connectionState=${pc.connectionState}`);
      this.emit('statechange', { role, state: pc.connectionState });
    });
    pc.addEventListener('iceconnectionstatechange', () => this.step(`${role} iceConnectionState=${pc.iceConnectionState}`));
    pc.addEventListener('signalingstatechange', () => this.step(`${role} signalingState=${pc.signalingState}`));
  }

  /**
   * Dynacast: stops encoding the layers of a published track that no subscriber needs, and
   * resumes them when one does (RTCRtpSender.setParameters, encodings matched by rid, or the
   * only one without simulcast).
   */
  async applyLayersWanted({ trackSid, layers }) {
    const info = (this.published || []).find((t) => t.sid === trackSid);
    const t = info && this.pub && this.pub.getTransceivers().find((x) => x.mid === info.mid);
    if (!t) return;
    const params = t.sender.getParameters();
    let changed = false;
    for (const [i, e] of (params.encodings || []).entries()) {
      const want = layers.find((l) => (l.rid || '') === (e.rid || '')) || (params.encodings.length === 1 ? layers[0] : null);
      if (want && e.active !== want.active) {
        e.active = want.active;
        changed = true;
      }
      if (!want) this.step(`trackLayersWanted: encoding ${i} (${e.rid || 'no rid'}) not named`);
    }
    if (changed) await t.sender.setParameters(params);
    this.layersWanted[trackSid] = layers;
  }

  async consumeEvents() {
    let error = null;
    try {
      for await (const ev of this.client.events({ signal: this.eventsAbort.signal })) {
        this.events.push(ev);
        const body = ev[ev.event] || {};
        switch (ev.event) {
          case 'subscriberOfferReady':
            this.step(`event subscriberOfferReady v${body.offerVersion}`);
            this.highestAnnounced = Math.max(this.highestAnnounced, body.offerVersion);
            this.renegotiate(`SubscriberOfferReady v${body.offerVersion}`);
            break;
          case 'trackPublished':
            this.step(`event trackPublished ${body.track.sid} ${body.track.kind} from ${body.track.publisherIdentity}`);
            this.noteTrack(body.track);
            break;
          case 'trackMuted':
            this.step(`event trackMuted ${body.trackSid} ${body.muted}`);
            if (this.tracks[body.trackSid]) this.tracks[body.trackSid].muted = body.muted;
            break;
          case 'trackUnpublished':
            this.step(`event trackUnpublished ${body.trackSid} from ${body.publisherIdentity}`);
            if (this.tracks[body.trackSid]) this.tracks[body.trackSid].unpublished = true;
            break;
          case 'participantLeft':
            this.step(`event participantLeft ${body.identity} ${body.reason}`);
            for (const t of Object.values(this.tracks)) if (t.publisher === body.identity) t.unpublished = true;
            break;
          case 'transportState':
            this.step(`event transportState ${body.role} ${body.state}${body.reason ? ` (${body.reason})` : ''}`);
            break;
          case 'participantJoined':
            this.step(`event participantJoined ${body.participant.identity}`);
            for (const t of body.participant.tracks || []) this.noteTrack(t);
            break;
          case 'activeSpeakers':
            break; // frequent: not logged
          case 'subscriptionQuality':
            this.quality[body.trackSid] = body; // frequent: not logged
            break;
          case 'trackLayersWanted':
            this.step(`event trackLayersWanted ${body.trackSid} ${body.layers.map((l) => `${l.rid || '-'}:${l.active ? 'on' : 'off'}`).join(' ')}`);
            this.applyLayersWanted(body).catch((e) => this.step(`setParameters failed: ${e.name}: ${e.message}`));
            break;
          default:
            this.step(`event ${ev.event} ${JSON.stringify(body)}`);
        }
        this.emit('event', ev);
      }
    } catch (e) {
      if (!this.closed) {
        error = e;
        this.eventsError = `${e.name}: ${e.message}`;
        this.step(`events stream failed: ${this.eventsError}`);
      }
    } finally {
      this.eventsEnded = true;
      this.emit('ended', { error });
    }
  }

  // One subscriber negotiation at a time; a request while busy redoes it afterwards.
  renegotiate(reason) {
    this.reason = reason; // the latest request, for the step log
    if (this.busy) {
      this.again = true;
      this.step(`renegotiation requested while busy (${reason}): queued`);
      return;
    }
    this.busy = true;
    (async () => {
      try {
        do {
          this.again = false;
          if (this.closed) break;
          try {
            await this.negotiateOnce(this.reason);
          } catch (e) {
            if (this.closed) break;
            this.fail(`subscriber negotiation failed: ${e.name}: ${e.message}`, e);
            // An outdated answer: the server has a newer offer, so fetch it.
            if (e.code === 9 && this.negotiations.length < 50) this.again = true;
          }
        } while (this.again);
      } finally {
        this.busy = false;
      }
    })();
  }

  async negotiateOnce(reason) {
    const began = performance.now();
    const pc = this.sub;
    const offer = await this.client.subscribe();
    if (offer.offerVersion === this.answeredVersion) {
      this.step(`Subscribe returned v${offer.offerVersion} again (${reason}): already answered`);
      return;
    }
    const rec = {
      version: offer.offerVersion, reason, offerSdp: offer.sdpOffer, answerSdp: null,
      midToTrackSid: offer.midToTrackSid, rejected: null, error: null, ms: null,
    };
    this.negotiations.push(rec);
    this.step(`Subscribe v${offer.offerVersion} (${reason}): ${offer.sdpOffer.split('\r\n').filter((l) => l.startsWith('m=')).length} m-lines, ` +
      `mids->tracks ${JSON.stringify(offer.midToTrackSid)}`);
    try {
      const remoteSdp = this.offerFilter ? this.offerFilter(offer.sdpOffer) : offer.sdpOffer;
      await pc.setRemoteDescription({ type: 'offer', sdp: remoteSdp });
      const answer = await pc.createAnswer();
      await pc.setLocalDescription(answer);
      // The answer needs no candidates (Ringcast is ICE-lite); include them when
      // gathering finishes quickly. An offer without m-lines gives the pc
      // nothing to gather for: it stays 'new'.
      if (pc.getTransceivers().length > 0) {
        await waitGathering(pc, 3000).catch(() => this.step(`sub: ICE gathering still '${pc.iceGatheringState}' after 3 s; answering anyway`));
      }
      rec.answerSdp = pc.localDescription.sdp;
      const res = await this.client.subscribeAnswer(rec.answerSdp, offer.offerVersion);
      rec.rejected = res.rejected;
      this.answeredVersion = offer.offerVersion;
      this.midToTrackSid = offer.midToTrackSid;
      rec.ms = Math.round(performance.now() - began);
      this.step(`SubscribeAnswer v${offer.offerVersion} accepted (${res.rejected.length} rejected) in ${rec.ms} ms`);
    } catch (e) {
      rec.error = `${e.name}: ${e.message}`;
      throw e;
    }
    this.emit('negotiated', rec);
  }

  /**
   * A summary of getStats(): the subscriber pc's inbound-rtp per mid (with the
   * publishing participant, and in `remoteOutbound` what the latest RTCP sender
   * report about that stream said: the remote-outbound-rtp entry linked to it,
   * or null), the publisher pc's outbound-rtp, and both transports.
   */
  async stats() {
    const out = { at: Date.now(), inbound: [], outbound: [], sub: null, pub: null };
    if (this.sub) {
      const report = await this.sub.getStats();
      const byId = new Map();
      report.forEach((s) => byId.set(s.id, s));
      report.forEach((s) => {
        if (s.type !== 'inbound-rtp') return;
        const codec = s.codecId && byId.get(s.codecId);
        const sid = this.midToTrackSid[s.mid];
        const info = (sid && this.tracks[sid]) || {};
        out.inbound.push({
          mid: s.mid, kind: s.kind, ssrc: s.ssrc, trackSid: sid, publisher: info.publisher, timestamp: s.timestamp,
          codec: codec ? `${codec.mimeType}/${codec.payloadType}` : undefined,
          packetsReceived: s.packetsReceived, packetsLost: s.packetsLost, bytesReceived: s.bytesReceived,
          jitter: s.jitter, jitterBufferDelay: s.jitterBufferDelay, jitterBufferEmittedCount: s.jitterBufferEmittedCount,
          framesReceived: s.framesReceived, framesDecoded: s.framesDecoded, keyFramesDecoded: s.keyFramesDecoded,
          framesDropped: s.framesDropped, frameWidth: s.frameWidth, frameHeight: s.frameHeight,
          framesPerSecond: s.framesPerSecond, decoderImplementation: s.decoderImplementation,
          totalSamplesReceived: s.totalSamplesReceived, concealedSamples: s.concealedSamples, audioLevel: s.audioLevel,
          nackCount: s.nackCount, pliCount: s.pliCount, firCount: s.firCount,
          freezeCount: s.freezeCount, totalFreezesDuration: s.totalFreezesDuration,
          retransmittedPacketsReceived: s.retransmittedPacketsReceived, rtxSsrc: s.rtxSsrc,
          headerBytesReceived: s.headerBytesReceived, lastPacketReceivedTimestamp: s.lastPacketReceivedTimestamp,
          remoteOutbound: remoteOutboundInfo(s, byId, report),
        });
      });
      out.sub = {
        connectionState: this.sub.connectionState, iceConnectionState: this.sub.iceConnectionState,
        signalingState: this.sub.signalingState, transport: transportInfo(byId, report),
      };
    }
    if (this.pub) {
      const report = await this.pub.getStats();
      const byId = new Map();
      report.forEach((s) => byId.set(s.id, s));
      let bwe;
      report.forEach((s) => {
        if (s.type === 'candidate-pair' && s.nominated) bwe = s.availableOutgoingBitrate;
        if (s.type !== 'outbound-rtp') return;
        const codec = s.codecId && byId.get(s.codecId);
        out.outbound.push({
          mid: s.mid, kind: s.kind, ssrc: s.ssrc, rid: s.rid, codec: codec ? codec.mimeType : undefined,
          packetsSent: s.packetsSent, framesEncoded: s.framesEncoded, keyFramesEncoded: s.keyFramesEncoded,
          frameWidth: s.frameWidth, frameHeight: s.frameHeight, framesPerSecond: s.framesPerSecond,
          targetBitrate: s.targetBitrate, qualityLimitationReason: s.qualityLimitationReason,
          qualityLimitationDurations: s.qualityLimitationDurations,
          nackCount: s.nackCount, pliCount: s.pliCount, firCount: s.firCount,
          retransmittedPacketsSent: s.retransmittedPacketsSent, active: s.active,
        });
      });
      out.pub = {
        connectionState: this.pub.connectionState, iceConnectionState: this.pub.iceConnectionState,
        availableOutgoingBitrate: bwe, transport: transportInfo(byId, report),
      };
    }
    return out;
  }
}

// The remote-outbound-rtp entry (from the sender's RTCP sender reports) of
// inbound-rtp `s`: found by s.remoteId, else by its localId; `linked` says
// whether both links agree (s.remoteId names it and its localId names s).
function remoteOutboundInfo(s, byId, report) {
  let r = s.remoteId && byId.get(s.remoteId);
  if (!r || r.type !== 'remote-outbound-rtp') {
    r = null;
    report.forEach((x) => { if (x.type === 'remote-outbound-rtp' && x.localId === s.id) r = x; });
  }
  if (!r) return null;
  return {
    id: r.id, ssrc: r.ssrc, linked: s.remoteId === r.id && r.localId === s.id,
    packetsSent: r.packetsSent, bytesSent: r.bytesSent, reportsSent: r.reportsSent,
    remoteTimestamp: r.remoteTimestamp, timestamp: r.timestamp,
    roundTripTimeMeasurements: r.roundTripTimeMeasurements,
  };
}

function pairInfo(byId, transport) {
  if (!transport || !transport.selectedCandidatePairId) return null;
  const p = byId.get(transport.selectedCandidatePairId);
  if (!p) return null;
  const l = byId.get(p.localCandidateId);
  const r = byId.get(p.remoteCandidateId);
  return {
    state: p.state, nominated: p.nominated,
    local: l && `${l.address}:${l.port}`, remote: r && `${r.address}:${r.port}`,
    requestsSent: p.requestsSent, responsesReceived: p.responsesReceived,
    packetsReceived: p.packetsReceived, bytesReceived: p.bytesReceived,
  };
}

function transportInfo(byId, report) {
  let t = null;
  report.forEach((s) => {
    if (s.type === 'transport') {
      t = {
        dtlsState: s.dtlsState, iceState: s.iceState, srtpCipher: s.srtpCipher, tlsVersion: s.tlsVersion,
        dtlsRole: s.dtlsRole, packetsReceived: s.packetsReceived, bytesReceived: s.bytesReceived,
        selectedCandidatePairId: s.selectedCandidatePairId,
      };
    }
  });
  if (t) t.pair = pairInfo(byId, t);
  return t;
}
