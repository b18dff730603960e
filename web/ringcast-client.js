// Ringcast browser client: gRPC-Web over `fetch`, no generated code.
//
// The only dependency is protobuf.js (npm `protobufjs`), used as a runtime
// reflection library: the page loads `protobuf.min.js` (which defines the
// global `protobuf`), and this module fetches `ringcast.proto` and parses it
// with `protobuf.parse`. Both can be overridden with `configure()` or per
// client through the constructor options.
//
//   <script src="/protobuf.min.js"></script>
//   <script type="module">
//     import { RingcastClient } from '/ringcast-client.js';
//     const client = new RingcastClient('http://127.0.0.1:50051', participantToken);
//     const { room, participant } = await client.join();
//     const { sdpAnswer } = await client.publish(pc.localDescription.sdp, { '0': 'mic' });
//     for await (const ev of client.events()) console.log(ev.event, ev[ev.event]);
//   </script>
//
// Wire format (https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-WEB.md):
// every message is framed as 1 flag byte + 4-byte big-endian length + payload;
// flag 0x80 marks the trailer frame, whose payload is HTTP/1-style header lines
// (grpc-status, grpc-message). A "trailers-only" error comes with grpc-status in
// the response headers and an empty body.
//
// Messages are plain objects with camelCase field names (protobuf.js
// `toObject` with enums as strings such as 'TRACK_KIND_AUDIO', 64-bit
// integers as Numbers, default values filled in and, for oneofs, a field
// naming the case: an Event looks like { event: 'trackPublished',
// trackPublished: { track: {...} } }).

const PACKAGE = 'ringcast.v1';
const CONTENT_TYPE = 'application/grpc-web+proto';

/** gRPC status code names, by number. */
export const StatusCode = Object.freeze({
  OK: 0, CANCELLED: 1, UNKNOWN: 2, INVALID_ARGUMENT: 3, DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5, ALREADY_EXISTS: 6, PERMISSION_DENIED: 7, RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9, ABORTED: 10, OUT_OF_RANGE: 11, UNIMPLEMENTED: 12,
  INTERNAL: 13, UNAVAILABLE: 14, DATA_LOSS: 15, UNAUTHENTICATED: 16,
});
const CODE_NAMES = Object.fromEntries(Object.entries(StatusCode).map(([k, v]) => [v, k]));

/** A failed call: `code` is the gRPC status number, `codeName` its name. */
export class RingcastError extends Error {
  constructor(code, grpcMessage, method) {
    const codeName = CODE_NAMES[code] || `CODE_${code}`;
    super(`${method ? method + ': ' : ''}${codeName} (${code}): ${grpcMessage || ''}`);
    this.name = 'RingcastError';
    this.code = code;
    this.codeName = codeName;
    this.grpcMessage = grpcMessage || '';
    this.method = method || '';
  }
}

// HTTP status -> gRPC code, for responses that carry no grpc-status at all
// (a proxy error page, a 404 from something that is not Ringcast...).
function codeFromHttpStatus(status) {
  switch (status) {
    case 400: return StatusCode.INTERNAL;
    case 401: return StatusCode.UNAUTHENTICATED;
    case 403: return StatusCode.PERMISSION_DENIED;
    case 404: return StatusCode.UNIMPLEMENTED;
    case 429: case 502: case 503: case 504: return StatusCode.UNAVAILABLE;
    default: return StatusCode.UNKNOWN;
  }
}

// ---------------------------------------------------------------------------
// Schema loading

const defaults = {
  protobuf: undefined, // protobuf.js namespace; default: globalThis.protobuf
  protoUrl: undefined, // default: 'ringcast.proto' next to this module
  protoText: undefined, // the .proto source itself, instead of fetching protoUrl
  root: undefined, // an already parsed protobuf.js Root
};
const schemaCache = new Map(); // key -> Promise<Root>

/**
 * Sets module-wide defaults for every client created afterwards:
 * { protobuf, protoUrl, protoText, root }.
 */
export function configure(options = {}) {
  Object.assign(defaults, options);
}

/** Parses the Ringcast schema (cached). Returns a protobuf.js Root. */
export async function loadSchema(options = {}) {
  const opts = { ...defaults, ...options };
  if (opts.root) return opts.root;
  const pb = opts.protobuf || globalThis.protobuf;
  if (!pb || typeof pb.parse !== 'function') {
    throw new Error('ringcast-client: protobuf.js is not loaded (load protobuf.min.js first, ' +
      'or pass { protobuf } to configure())');
  }
  let key;
  let getText;
  if (opts.protoText) {
    key = 'text:' + opts.protoText;
    getText = async () => opts.protoText;
  } else {
    const url = String(opts.protoUrl || new URL('ringcast.proto', import.meta.url));
    key = 'url:' + url;
    getText = async () => {
      const res = await fetch(url);
      if (!res.ok) throw new Error(`ringcast-client: cannot load ${url}: HTTP ${res.status}`);
      return res.text();
    };
  }
  if (!schemaCache.has(key)) {
    const p = getText().then((text) => pb.parse(text, { keepCase: false }).root.resolveAll());
    p.catch(() => schemaCache.delete(key));
    schemaCache.set(key, p);
  }
  return schemaCache.get(key);
}

const TO_OBJECT = { longs: Number, enums: String, bytes: String, defaults: true, arrays: true, objects: true, oneofs: true };

function methodInfo(root, service, method) {
  const svc = root.lookupService(`${PACKAGE}.${service}`);
  const m = svc.methods[method];
  if (!m) throw new Error(`ringcast-client: no method ${service}.${method}`);
  m.resolve();
  return { req: m.resolvedRequestType, res: m.resolvedResponseType, path: `/${PACKAGE}.${service}/${method}` };
}

// ---------------------------------------------------------------------------
// Framing

function frame(payload) {
  const out = new Uint8Array(5 + payload.length);
  out[0] = 0;
  new DataView(out.buffer).setUint32(1, payload.length, false);
  out.set(payload, 5);
  return out;
}

function parseTrailers(bytes) {
  const text = new TextDecoder().decode(bytes);
  const map = {};
  for (const line of text.split(/\r?\n/)) {
    const i = line.indexOf(':');
    if (i <= 0) continue;
    map[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  return map;
}

function decodeGrpcMessage(s) {
  if (!s) return '';
  try { return decodeURIComponent(s); } catch (_) { return s; }
}

// Incremental frame parser: push() byte chunks, take frames out of next().
class FrameReader {
  constructor() { this.buf = new Uint8Array(0); }
  push(chunk) {
    if (!chunk || chunk.length === 0) return;
    if (this.buf.length === 0) { this.buf = chunk; return; }
    const b = new Uint8Array(this.buf.length + chunk.length);
    b.set(this.buf, 0);
    b.set(chunk, this.buf.length);
    this.buf = b;
  }
  /** Returns { flag, payload } or null if no complete frame is buffered. */
  next() {
    if (this.buf.length < 5) return null;
    const len = new DataView(this.buf.buffer, this.buf.byteOffset, 5).getUint32(1, false);
    if (this.buf.length < 5 + len) return null;
    const flag = this.buf[0];
    const payload = this.buf.slice(5, 5 + len);
    this.buf = this.buf.subarray(5 + len);
    return { flag, payload };
  }
  get pending() { return this.buf.length; }
}

// ---------------------------------------------------------------------------
// The transport shared by both services.

class GrpcWebChannel {
  /**
   * @param {string} baseUrl e.g. 'http://127.0.0.1:50051'
   * @param {string} token a Ringcast JWT (sent as `authorization: Bearer`)
   * @param {object} [options] { protobuf, protoUrl, protoText, root, timeoutMs, fetch }
   */
  constructor(baseUrl, token, options = {}) {
    this.baseUrl = String(baseUrl).replace(/\/+$/, '');
    this.token = token;
    this.options = options;
    this.timeoutMs = options.timeoutMs ?? 15000; // per unary call; 0 = none
    this.fetch = options.fetch || globalThis.fetch.bind(globalThis);
  }

  /** Replaces the token used by later calls (e.g. after a refresh). */
  setToken(token) { this.token = token; }

  async _start(service, method, request, signal) {
    const root = await loadSchema(this.options);
    const info = methodInfo(root, service, method);
    const body = frame(info.req.encode(info.req.fromObject(request || {})).finish());
    const headers = {
      'content-type': CONTENT_TYPE,
      accept: CONTENT_TYPE,
      'x-grpc-web': '1',
    };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    let res;
    try {
      res = await this.fetch(this.baseUrl + info.path, { method: 'POST', headers, body, signal, cache: 'no-store' });
    } catch (e) {
      if (signal && signal.aborted) throw abortError(signal, `${service}.${method}`);
      throw new RingcastError(StatusCode.UNAVAILABLE, `fetch failed: ${e && e.message}`, `${service}.${method}`);
    }
    const name = `${service}.${method}`;
    // Trailers-only response: the status is in the headers.
    const hdrStatus = res.headers.get('grpc-status');
    if (hdrStatus !== null && Number(hdrStatus) !== 0) {
      cancelBody(res);
      throw new RingcastError(Number(hdrStatus), decodeGrpcMessage(res.headers.get('grpc-message')), name);
    }
    if (!res.ok) {
      cancelBody(res);
      throw new RingcastError(codeFromHttpStatus(res.status), `HTTP ${res.status} ${res.statusText}`, name);
    }
    const ct = res.headers.get('content-type') || '';
    if (!ct.startsWith('application/grpc-web')) {
      cancelBody(res);
      throw new RingcastError(StatusCode.UNKNOWN, `unexpected content-type '${ct}'`, name);
    }
    if (ct.startsWith('application/grpc-web-text')) {
      cancelBody(res);
      throw new RingcastError(StatusCode.UNIMPLEMENTED, 'grpc-web-text responses are not supported', name);
    }
    return { res, info, name, hdrStatus };
  }

  // Reads frames from the body; yields decoded messages; returns when the
  // trailer frame (or the end of a trailers-only response) has been seen.
  async *_frames(res, info, name, hdrStatus) {
    const reader = new FrameReader();
    let trailers = null;
    const body = res.body;
    if (body && body.getReader) {
      const r = body.getReader();
      try {
        for (;;) {
          const { done, value } = await r.read();
          if (done) break;
          reader.push(value);
          for (let f = reader.next(); f; f = reader.next()) {
            if (f.flag & 0x80) { trailers = parseTrailers(f.payload); break; }
            if (f.flag & 0x01) throw new RingcastError(StatusCode.UNIMPLEMENTED, 'compressed messages are not supported', name);
            yield info.res.toObject(info.res.decode(f.payload), TO_OBJECT);
          }
          if (trailers) break;
        }
      } finally {
        r.cancel().catch(() => {});
      }
    } else {
      // No streaming body (old engines): read it whole.
      reader.push(new Uint8Array(await res.arrayBuffer()));
      for (let f = reader.next(); f; f = reader.next()) {
        if (f.flag & 0x80) { trailers = parseTrailers(f.payload); break; }
        if (f.flag & 0x01) throw new RingcastError(StatusCode.UNIMPLEMENTED, 'compressed messages are not supported', name);
        yield info.res.toObject(info.res.decode(f.payload), TO_OBJECT);
      }
    }
    let status;
    let message;
    if (trailers && trailers['grpc-status'] !== undefined) {
      status = Number(trailers['grpc-status']);
      message = decodeGrpcMessage(trailers['grpc-message']);
    } else if (hdrStatus !== null) {
      status = Number(hdrStatus);
      message = decodeGrpcMessage(res.headers.get('grpc-message'));
    } else {
      throw new RingcastError(StatusCode.INTERNAL,
        reader.pending ? 'truncated response' : 'response ended without trailers', name);
    }
    if (status !== StatusCode.OK) throw new RingcastError(status, message, name);
  }

  /** A unary call: resolves to the response object, or throws RingcastError. */
  async unary(service, method, request = {}, { signal, timeoutMs } = {}) {
    const t = timeoutMs ?? this.timeoutMs;
    const ctl = new AbortController();
    const timer = t > 0 ? setTimeout(() => ctl.abort(new RingcastError(StatusCode.DEADLINE_EXCEEDED,
      `no answer within ${t} ms`, `${service}.${method}`)), t) : null;
    const onAbort = () => ctl.abort(signal.reason);
    if (signal) {
      if (signal.aborted) onAbort(); else signal.addEventListener('abort', onAbort, { once: true });
    }
    try {
      const { res, info, name, hdrStatus } = await this._start(service, method, request, ctl.signal);
      let msg;
      try {
        for await (const m of this._frames(res, info, name, hdrStatus)) {
          if (msg !== undefined) throw new RingcastError(StatusCode.INTERNAL, 'more than one message in a unary response', name);
          msg = m;
        }
      } catch (e) {
        if (ctl.signal.aborted && !(e instanceof RingcastError)) throw abortError(ctl.signal, name);
        throw e;
      }
      if (msg === undefined) throw new RingcastError(StatusCode.INTERNAL, 'no message in a unary response', name);
      return msg;
    } finally {
      if (timer) clearTimeout(timer);
      if (signal) signal.removeEventListener('abort', onAbort);
    }
  }

  /**
   * A server-streaming call: an async iterator of response objects. It ends when
   * the server closes the stream with OK and throws RingcastError otherwise.
   * Leaving a `for await` loop (break/return/throw) cancels the call.
   */
  async *serverStream(service, method, request = {}, { signal } = {}) {
    const ctl = new AbortController();
    const onAbort = () => ctl.abort(signal.reason);
    if (signal) {
      if (signal.aborted) onAbort(); else signal.addEventListener('abort', onAbort, { once: true });
    }
    try {
      const { res, info, name, hdrStatus } = await this._start(service, method, request, ctl.signal);
      try {
        yield* this._frames(res, info, name, hdrStatus);
      } catch (e) {
        if (ctl.signal.aborted && !(e instanceof RingcastError)) throw abortError(ctl.signal, name);
        throw e;
      }
    } finally {
      ctl.abort(); // no-op if the stream finished; cancels the request otherwise
      if (signal) signal.removeEventListener('abort', onAbort);
    }
  }
}

function cancelBody(res) {
  try { if (res.body) res.body.cancel().catch(() => {}); } catch (_) { /* ignore */ }
}

function abortError(signal, name) {
  const r = signal.reason;
  if (r instanceof RingcastError) return r;
  return new RingcastError(StatusCode.CANCELLED, (r && r.message) || 'cancelled', name);
}

// ---------------------------------------------------------------------------
// Public API

/** One participant's Signaling client. */
export class RingcastClient {
  /**
   * @param {string} baseUrl Ringcast's gRPC-Web address, e.g. 'http://127.0.0.1:50051'
   * @param {string} token the participant's access token (grants.room set)
   * @param {object} [options] { protobuf, protoUrl, protoText, root, timeoutMs, fetch }
   */
  constructor(baseUrl, token, options = {}) {
    this.channel = new GrpcWebChannel(baseUrl, token, options);
  }

  setToken(token) { this.channel.setToken(token); }

  /** Low-level: any Signaling unary method by name. */
  call(method, request = {}, callOptions) {
    return this.channel.unary('Signaling', method, request, callOptions);
  }

  /** Enters the room. Resolves to { room, participant, others, candidates }. */
  join(name = '', callOptions) {
    return this.call('Join', { name }, callOptions);
  }

  /**
   * Sends the publisher transport's offer. `trackNames` maps mids to names, `trackSources`
   * mids to 'TRACK_SOURCE_CAMERA', 'TRACK_SOURCE_SCREEN_SHARE', ...
   * Resolves to { sdpAnswer, tracks, rejected }.
   */
  publish(sdpOffer, trackNames = {}, callOptions, trackSources = {}) {
    return this.call('Publish', { sdpOffer, trackNames: trackNames || {}, trackSources: trackSources || {} }, callOptions);
  }

  /**
   * What this participant asks of its subscriptions to `trackSids`:
   * { maxQuality: 'VIDEO_QUALITY_LOW' | ..., width, height, priority }.
   */
  updateSubscriptionSettings(trackSids, settings, callOptions) {
    return this.call('UpdateSubscriptionSettings', { trackSids, settings }, callOptions);
  }

  /** Ringcast's subscriber offer. Resolves to { sdpOffer, offerVersion, midToTrackSid }. */
  subscribe(callOptions) {
    return this.call('Subscribe', {}, callOptions);
  }

  /** Answers the subscriber offer `version`. Resolves to { rejected }. */
  subscribeAnswer(sdpAnswer, offerVersion, callOptions) {
    return this.call('SubscribeAnswer', { sdpAnswer, offerVersion }, callOptions);
  }

  /**
   * ICE restart. role: 'TRANSPORT_ROLE_PUBLISHER' (with the client's new offer)
   * or 'TRANSPORT_ROLE_SUBSCRIBER'. Resolves to { sdp, offerVersion }.
   */
  iceRestart(role, sdpOffer = '', callOptions) {
    return this.call('IceRestart', { role, sdpOffer }, callOptions);
  }

  /** Leaves the room. */
  leave(callOptions) {
    return this.call('Leave', {}, callOptions);
  }

  /**
   * The Events stream: an async iterator of Event objects
   * ({ event: 'participantJoined' | 'trackPublished' | ..., [event]: {...} }).
   * Pass { signal } to cancel it from outside; breaking out of the loop also cancels it.
   */
  events(options = {}) {
    return this.channel.serverStream('Signaling', 'Events', {}, options);
  }
}

/** RoomService, for backends and tests; needs an admin token. */
export class RingcastRoomService {
  constructor(baseUrl, adminToken, options = {}) {
    this.channel = new GrpcWebChannel(baseUrl, adminToken, options);
  }

  call(method, request = {}, callOptions) {
    return this.channel.unary('RoomService', method, request, callOptions);
  }

  /** { name, maxParticipants, emptyTimeoutSecs, metadata } -> Room */
  createRoom(request, callOptions) {
    return this.call('CreateRoom', typeof request === 'string' ? { name: request } : request, callOptions);
  }
  getRoom(name, callOptions) { return this.call('GetRoom', { name }, callOptions); }
  listRooms(names = [], callOptions) { return this.call('ListRooms', { names }, callOptions); }
  deleteRoom(name, callOptions) { return this.call('DeleteRoom', { name }, callOptions); }
  listParticipants(room, callOptions) { return this.call('ListParticipants', { room }, callOptions); }
  removeParticipant(room, identity, callOptions) {
    return this.call('RemoveParticipant', { room, identity }, callOptions);
  }
  mutePublishedTrack(room, identity, trackSid, muted, callOptions) {
    return this.call('MutePublishedTrack', { room, identity, trackSid, muted }, callOptions);
  }
  /** `settings` ({ maxQuality, width, height, priority }) apply with subscribe: true. */
  updateSubscriptions(room, identity, trackSids, subscribe, callOptions, settings) {
    return this.call('UpdateSubscriptions', { room, identity, trackSids, subscribe, settings }, callOptions);
  }
  /**
   * { room, identity, name, canPublish, canSubscribe, admin, ttlSecs }
   * -> { token, expiresAtUnixMs }
   */
  createAccessToken(request, callOptions) {
    return this.call('CreateAccessToken', request, callOptions);
  }
}
