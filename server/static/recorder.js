// A live recording: MediaRecorder chunks streamed over the recording protocol
// (`/ws/{session_id}`, README "Recording protocol"), surviving dropped connections.
//
// How a dropped connection is resumed without losing the outage
// --------------------------------------------------------------
// The server stores each start..stop span of a connection as one *part* and decodes
// every part on its own before joining them in order.  A WebM (or Ogg/MP4) stream
// carries its header only in a MediaRecorder's first chunk, so a part must begin with
// the first chunk of a recorder and hold only that recorder's chunks: one
// MediaRecorder = one part.
//
// When the connection drops while recording, the server has already closed the part
// at the last chunk it received; the same recorder's later chunks could never be
// decoded in a new part.  So *at the moment the drop is noticed* a new MediaRecorder
// is started on the same MediaStream (before the old one is stopped, so no captured
// sample falls between the two) and its chunks are buffered in this page while we
// reconnect to `/ws/{session_id}` with backoff.  The server answers the new `start`
// with `"resumed": true` (a new part of the same session); the buffer is then
// flushed, header chunk first, and streaming goes on live.
//
// What can be lost is only what the old recorder had captured but not yet delivered
// when the drop was noticed: the last timeslice (<= 250 ms) plus any bytes still in
// flight.  The outage itself is recorded in full, so the final audio has no gap
// longer than about one timeslice, however long the outage.  (Losing nothing at all
// would need the server to let a resumed connection append to the previous part.)
//
// A drop before the current recorder's first chunk reached the server (for example
// the connection was lost again while reconnecting) keeps that recorder: all of its
// chunks, header included, are still in the buffer.  Stop pressed during an outage
// stops the microphone; the buffered audio and `stop` are sent once the server is back.

export const TIMESLICE_MS = 250;
const BACKOFF_MS = [250, 500, 1000, 2000, 4000, 5000];

/** Containers this page can record in, best first, with the protocol's `input_format`. */
export const RECORDING_FORMATS = [
  { mimeType: 'audio/webm;codecs=opus', inputFormat: 'webm' },
  { mimeType: 'audio/ogg;codecs=opus', inputFormat: 'ogg' },
  { mimeType: 'audio/mp4', inputFormat: 'mp4' },
];

/** The first recording format this browser supports, or null. */
export function pickRecordingFormat() {
  if (typeof MediaRecorder === 'undefined') return null;
  return RECORDING_FORMATS.find((f) => MediaRecorder.isTypeSupported(f.mimeType)) || null;
}

// Protocol error codes the page reacts to (README table).
const NOT_STARTED = 4002;
const CHUNK_TOO_LARGE = 4003;
const TOTAL_SIZE_EXCEEDED = 4004;
const DURATION_EXCEEDED = 4005;
const UNDECODABLE_AUDIO = 4008;
const SESSION_BUSY = 4011;
// a refused `start` on reconnect worth trying again: the server is full for now, or failed
const TOO_MANY_RECORDINGS = 4012;
const INTERNAL_ERROR = 5000;

/**
 * One recording from Start to its processing result.
 *
 * States: connecting -> recording <-> reconnecting -> stopping -> processing ->
 * completed | failed.  Events (CustomEvent, payload in `detail`): `state`, `server`
 * (every server message), `started`, `reconnecting`, `limit`, `warning`, `complete`,
 * `failed`, `detached` (processing goes on but the socket is gone: poll REST).
 */
export class LiveRecording extends EventTarget {
  /**
   * @param {MediaStream} stream the microphone
   * @param {object} options
   * @param {(sessionId: string) => string} options.socketUrl the WebSocket URL for an id
   * @param {object} options.start fields of the `start` message (format, num_speakers...)
   * @param {{mimeType: string, inputFormat: string}} options.recordingFormat
   * @param {(sessionId: string) => Promise<object|null>} options.fetchSession REST look-up
   */
  constructor(stream, { socketUrl, start, recordingFormat, fetchSession }) {
    super();
    this.stream = stream;
    this.socketUrl = socketUrl;
    this.startFields = start;
    this.recordingFormat = recordingFormat;
    this.fetchSession = fetchSession;

    this.state = 'idle';
    this.sessionId = null;
    this.ws = null;
    this.ready = false;          // the server confirmed `start` on this.ws
    this.partOpen = false;       // the current recorder's first chunk is in a server part
    this.recorder = null;
    this.recorderStopped = null; // resolves when this.recorder has delivered its last chunk
    this.generation = 0;         // chunks of any other generation are ignored
    this.queue = [];             // chunks of the current recorder not yet sent
    this.userStopped = false;
    this.recorderDone = false;
    this.stopSent = false;
    // `stop` went out on a connection that was lost since: it may have arrived (the
    // session is then processed or done) until a look-up over REST says otherwise
    this.stopMayHaveArrived = false;
    this.refused = false;        // the last socket closed without ever opening
    this.attempt = 0;
    this.retryTimer = null;

    // Figures for the page and for tests.
    this.startedAt = null;
    this.stoppedAt = null;
    this.bytesSent = 0;
    this.bytesDropped = 0;
    this.parts = 0;
    this.reconnects = 0;
  }

  /** Seconds since Start (frozen at Stop). */
  get elapsed() {
    if (this.startedAt === null) return 0;
    return ((this.stoppedAt ?? performance.now()) - this.startedAt) / 1000;
  }

  /** Audio captured here and not yet handed to the server (bytes). */
  get pendingBytes() {
    return this.queue.reduce((n, b) => n + b.size, 0);
  }

  /** Captured bytes not yet on the wire: buffered here plus queued in the socket. */
  get unsentBytes() {
    return this.pendingBytes + (this.ws ? this.ws.bufferedAmount : 0);
  }

  /** Start capturing and connect; chunks are buffered until the server says `recording_started`. */
  start() {
    this._setState('connecting');
    this.startedAt = performance.now();
    for (const track of this.stream.getAudioTracks()) {
      track.addEventListener('ended', () => {
        if (!this.userStopped && ['connecting', 'recording', 'reconnecting'].includes(this.state)) {
          this._emit('warning', { message: 'The microphone stopped delivering audio (unplugged or '
            + 'taken by another application). The recording was stopped; what was captured is kept.' });
          this.stop();
        }
      });
    }
    this._startRecorder();
    this._connect();
  }

  /** Stop capturing; the rest of the audio and `stop` go to the server (now or after a reconnect). */
  async stop() {
    if (this.userStopped || !['connecting', 'recording', 'reconnecting'].includes(this.state)) return;
    this.userStopped = true;
    this.stoppedAt = performance.now();
    this._setState('stopping');
    const stopped = this.recorderStopped;
    if (this.recorder && this.recorder.state !== 'inactive') this.recorder.stop();
    await stopped; // the final chunk has gone through _onChunk
    this.recorderDone = true;
    this._releaseMicrophone();
    this._flush();
  }

  // ------------------------------------------------------------------ capture

  _startRecorder() {
    const generation = ++this.generation;
    const rec = new MediaRecorder(this.stream, { mimeType: this.recordingFormat.mimeType });
    rec.addEventListener('dataavailable', (ev) => this._onChunk(generation, ev.data));
    rec.addEventListener('error', (ev) => this._emit('warning', {
      message: `The browser's recorder reported an error: ${ev.error?.message || 'unknown'}`,
    }));
    this.recorderStopped = new Promise((resolve) => rec.addEventListener('stop', resolve, { once: true }));
    this.recorder = rec;
    this.queue = [];
    this.partOpen = false;
    rec.start(TIMESLICE_MS);
  }

  _onChunk(generation, blob) {
    if (generation !== this.generation || !blob || blob.size === 0) return;
    if (this.ready && this.ws && this.ws.readyState === WebSocket.OPEN) this._send(blob);
    else this.queue.push(blob);
  }

  _send(blob) {
    this.ws.send(blob); // a binary frame is one chunk; WebSocket sends keep their order
    this.partOpen = true;
    this.bytesSent += blob.size;
  }

  _flush() {
    if (!this.ready || !this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    for (const blob of this.queue) this._send(blob);
    this.queue = [];
    if (this.userStopped && this.recorderDone && !this.stopSent) {
      this.ws.send(JSON.stringify({ action: 'stop' }));
      this.stopSent = true;
    }
  }

  /** The server ended the recording (a limit): stop capturing, keep nothing more. */
  _endCapture() {
    this.generation += 1; // later chunks are ignored
    this.queue = [];
    this.userStopped = true;
    this.recorderDone = true;
    this.stopSent = true;
    this.stoppedAt ??= performance.now();
    if (this.recorder && this.recorder.state !== 'inactive') this.recorder.stop();
    this._releaseMicrophone();
  }

  _releaseMicrophone() {
    for (const track of this.stream.getTracks()) track.stop();
  }

  // ------------------------------------------------------------------ connection

  _connect() {
    const ws = new WebSocket(this.socketUrl(this.sessionId || 'new'));
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    this.ready = false;
    let opened = false;
    ws.addEventListener('open', () => {
      opened = true;
      ws.send(JSON.stringify({
        action: 'start', input_format: this.recordingFormat.inputFormat, ...this.startFields,
      }));
    });
    ws.addEventListener('message', (ev) => {
      if (this.ws === ws && typeof ev.data === 'string') this._onMessage(ev.data);
    });
    ws.addEventListener('close', (ev) => {
      if (this.ws === ws) this._onClose(ev, opened);
    });
  }

  _closeSocket() {
    const ws = this.ws;
    this.ws = null;
    this.ready = false;
    if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000, 'done');
  }

  _onClose(ev, opened) {
    this.ws = null;
    this.ready = false;
    this.refused = !opened; // (the next attempt asks REST why first: see `_reconnect`)
    if (['completed', 'failed', 'idle'].includes(this.state)) return;
    if (this.state === 'processing') {
      this._detach();
      return;
    }
    if (!this.sessionId) {
      // Nothing reached the server yet and it would not even take the connection.
      this._fail(opened
        ? 'The server closed the recording connection before the recording started.'
        : 'Could not open the recording connection to the server (it may be down, or it refused '
          + 'the connection).', { code: ev.code, connect: true });
      return;
    }
    if (this.partOpen) {
      // The part holding this recorder's header is closed: its later chunks are useless.
      this.bytesDropped += this.pendingBytes;
      const old = this.recorder;
      if (!this.userStopped) {
        this._startRecorder(); // new recorder first, so nothing captured falls in between
      } else {
        this.generation += 1;
        this.queue = [];
        this.partOpen = false;
      }
      if (old && old.state !== 'inactive') old.stop();
    }
    // (kept over every failed attempt: a resume of a session whose stop arrived
    // recorded an empty part and processed it again)
    this.stopMayHaveArrived ||= this.stopSent;
    this.stopSent = false;
    this._setState(this.userStopped ? 'stopping' : 'reconnecting');
    this._scheduleReconnect(ev);
  }

  _scheduleReconnect(ev) {
    const delay = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
    this.attempt += 1;
    this.reconnects += 1;
    this._emit('reconnecting', {
      delay, attempt: this.attempt, code: ev?.code, reason: ev?.reason || '',
      pendingBytes: this.pendingBytes,
    });
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this._reconnect(), delay);
  }

  async _reconnect() {
    if (this.stopMayHaveArrived) {
      // `stop` went out on a lost connection: if it arrived, processing has started.
      const { session, error } = await this._lookUp();
      if (session && !['interrupted', 'recording', 'idle'].includes(session.status)) {
        this._detach();
        return;
      }
      if (error?.status === 404) { // (a `start` now would open a new, empty session)
        this._fail('The session was deleted on the server meanwhile.', { processing: true });
        return;
      }
      if (session?.status === 'recording' || error) {
        // the server has not noticed the drop yet, or cannot say: ask again, never resume
        // blindly (a `start` on a session whose stop arrived adds a part and a run)
        this._scheduleReconnect(null);
        return;
      }
      if (session) this.stopMayHaveArrived = false; // interrupted: the stop never arrived
    } else if (this.refused) {
      // The socket did not even open: down, or (restarted with a token) refusing it. The
      // look-up asks for the token on a 401 and waits for it (`fetchSession` is
      // auth.js's `request`); without it the page retried every 5 s for ever.
      await this._lookUp();
    }
    if (['reconnecting', 'stopping'].includes(this.state)) this._connect();
  }

  /** The session over REST: `{session}`, or `{error}` (404: deleted; else unreachable...). */
  async _lookUp() {
    try {
      return { session: await this.fetchSession(this.sessionId) };
    } catch (error) {
      return { error };
    }
  }

  _detach() {
    clearTimeout(this.retryTimer);
    this._closeSocket();
    this._setState('processing');
    this._emit('detached', { sessionId: this.sessionId });
  }

  _fail(message, extra = {}) {
    clearTimeout(this.retryTimer);
    if (this.recorder && this.recorder.state !== 'inactive') this.recorder.stop();
    this.generation += 1;
    this._releaseMicrophone();
    this._closeSocket();
    this._setState('failed');
    this._emit('failed', { message, sessionId: this.sessionId, ...extra });
  }

  // ------------------------------------------------------------------ server messages

  _onMessage(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    if (!msg || typeof msg !== 'object') return;
    this._emit('server', msg);
    switch (msg.type) {
      case 'recording_started': {
        // another id on a reconnect: the session was deleted while the connection was
        // down, and the server made a new one for this `start` (`replaced`: the old id)
        const replaced = this.sessionId && msg.session_id !== this.sessionId ? this.sessionId : null;
        this.sessionId = msg.session_id;
        this.ready = true;
        if (!this.userStopped) this.attempt = 0; // (a stop sent again backs off further)
        this.parts += 1;
        if (this.state === 'connecting' || this.state === 'reconnecting') this._setState('recording');
        this._emit('started', { ...msg, replaced });
        this._flush();
        break;
      }
      case 'recording_stopped':
        if (msg.undecoded_parts?.length) { // (processing goes on without them: say so)
          this._emit('warning', { message: `${msg.undecoded_parts.length} part(s) of the `
            + 'recording could not be decoded and are left out of the result ('
            + `${msg.undecoded_parts.map((p) => `part ${p.part + 1}: ${p.error}`).join('; ')}); `
            + 'their bytes are kept on the server.' });
        }
        break;
      case 'processing_started':
        this._setState('processing');
        break;
      case 'processing_complete':
        this._closeSocket();
        this._setState('completed');
        this._emit('complete', msg);
        break;
      case 'processing_failed':
        this._closeSocket();
        this._setState('failed');
        this._emit('failed', { message: `Processing failed: ${msg.message}`, sessionId: this.sessionId,
          processing: true });
        break;
      case 'error':
        this._onError(msg);
        break;
      default:
        break;
    }
  }

  async _onError(msg) {
    const code = msg.code;
    if (code === NOT_STARTED && this.stopSent) {
      // chunks sent before a limit (or our stop) reached the server: nothing to say
    } else if (code === CHUNK_TOO_LARGE) {
      this._emit('warning', { message: `The server refused a piece of audio: ${msg.message}. `
        + 'The recording goes on.' });
    } else if ((code === TOTAL_SIZE_EXCEEDED || code === DURATION_EXCEEDED) && this.ready) {
      this._endCapture();
      this._setState('stopping');
      this._emit('limit', { code, message: msg.message });
    } else if (code === SESSION_BUSY && !this.ready && this.sessionId) {
      // Refused `start` on reconnect: the server may still be closing the old connection,
      // or our `stop` did arrive and the session is being processed.
      const { session } = await this._lookUp();
      if (session && ['processing', 'completed', 'failed'].includes(session.status)) {
        if (this.userStopped) this._detach();
        else this._fail(`The session is ${session.status} and cannot take more audio.`);
      } else {
        this._closeSocket();
        this._scheduleReconnect({ code: 1000, reason: 'session still busy on the server' });
      }
    } else if (code === UNDECODABLE_AUDIO) {
      this._fail(`The server could not decode the recording: ${msg.message}`);
    } else if (!this.ready && this.sessionId && ['reconnecting', 'stopping'].includes(this.state)) {
      // Refused `start` on reconnect: the audio since the drop waits here.
      if (code === TOTAL_SIZE_EXCEEDED || code === DURATION_EXCEEDED) {
        // The session was at a limit already (the server came back with a lower one, or
        // found the last part longer than it knew): it can take no more audio, but what
        // reached it is kept. The page asks for it to be processed ('limit', refused).
        const lostBytes = this.pendingBytes;
        this.bytesDropped += lostBytes;
        this._endCapture();
        this._closeSocket();
        this._setState('processing');
        this._emit('limit', { code, message: msg.message, refused: true, lostBytes,
          sessionId: this.sessionId });
      } else if (code === TOO_MANY_RECORDINGS || code === INTERNAL_ERROR) {
        this._emit('warning', { message: `The server cannot take the recording back yet: `
          + `${msg.message}. Trying again; the audio since the drop is kept here.` });
        this._closeSocket();
        this._scheduleReconnect({ code: 1000, reason: msg.message });
      } else {
        this._fail(`The server refused to resume the recording: ${msg.message}. What reached `
          + 'it before the drop is kept in the session.', { code });
      }
    } else if (code === INTERNAL_ERROR && this.ready && this.state === 'stopping' && this.stopSent) {
      // The stop (or a limit's end) could not be saved (a full disk): no
      // `recording_stopped` follows on this socket, which stayed 'stopping' for good. As
      // after a drop: REST says whether it is processing (followed), else the session is
      // resumed and stopped again once the server has marked it interrupted.
      this._closeSocket();
      this._onClose({ code: 1011, reason: msg.message }, true);
    } else if (!this.ready && (!this.sessionId || !['stopping', 'processing'].includes(this.state))) {
      // (also after Stop was pressed before the first `start` was answered: no session exists)
      this._fail(`The server refused to start the recording: ${msg.message}`, { code });
    } else {
      this._emit('warning', { message: `Server: ${msg.message}` });
    }
  }

  // ------------------------------------------------------------------ events

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._emit('state', { state });
  }

  _emit(name, detail) {
    this.dispatchEvent(new CustomEvent(name, { detail }));
  }
}
