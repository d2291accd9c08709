// The microphone widget (workbench/notebook/microphone.py), an anywidget ES module.
//
// Record -> getUserMedia -> MediaRecorder (WebM/Opus, else Ogg/Opus, else MP4) chunks of
// 250 ms, each sent as one binary frame over the recording protocol, straight from this
// browser to the server's /ws/new (README "Recording protocol" and "Live results"):
//   {"action": "start", "format", "input_format", "live_results": true, ...options}
//   <binary chunk> ... {"action": "stop"}
// Chunks captured before `recording_started` are queued and sent right after it, header
// chunk first, so the part the server stores decodes.  Every server message goes to the
// Python side as a custom message {type: "server", message}; state, session id, elapsed
// time, level and live_results are synced traitlets.  A dropped connection ends the
// recording (the server keeps what arrived; the recorder page, not this widget, resumes).
//
// For tests and curious users, window.__workbenchMicrophones lists each view's log:
// `sent` (JSON texts and binary sizes, in order) and `received` (parsed messages).

const TIMESLICE_MS = 250;
const FORMATS = [
  { mimeType: 'audio/webm;codecs=opus', inputFormat: 'webm' },
  { mimeType: 'audio/ogg;codecs=opus', inputFormat: 'ogg' },
  { mimeType: 'audio/mp4', inputFormat: 'mp4' },
];
const FLOOR_DB = -60;
const ACTIVE = ['connecting', 'recording', 'stopping'];

function pickFormat() {
  if (typeof MediaRecorder === 'undefined') return null;
  return FORMATS.find((f) => MediaRecorder.isTypeSupported(f.mimeType)) || null;
}

function socketUrl(serverUrl, sessionId, token) {
  const base = new URL(serverUrl || window.location.origin, window.location.href);
  base.protocol = base.protocol === 'https:' ? 'wss:' : 'ws:';
  base.pathname = `${base.pathname.replace(/\/$/, '')}/ws/${encodeURIComponent(sessionId)}`;
  if (token) base.searchParams.set('token', token);
  return base.toString();
}

/** One short line for a server message (the widget's message log). */
function describe(msg) {
  switch (msg.type) {
    case 'recording_started':
      return `recording session ${String(msg.session_id).slice(0, 8)}`
        + (msg.live_results ? ', live results on' : ', no live results');
    case 'progress': return `${msg.chunks_received} chunks, ${msg.total_size_mb} MB`;
    case 'recording_stopped': return `recorded ${Number(msg.duration_seconds).toFixed(1)} s`;
    case 'processing_started': return 'processing…';
    case 'processing_progress':
      return `${msg.stage} ${Math.round(100 * (msg.overall ?? msg.progress ?? 0))}%`;
    case 'processing_complete': // counts are null for a run that made audio files only
      return msg.word_count == null ? `done: ${Number(msg.duration_seconds).toFixed(1)} s of audio ready`
        : `done: ${msg.speakers} speaker(s), ${msg.word_count} words`;
    case 'processing_failed': return `processing failed: ${msg.message}`;
    case 'live_paused': return `live results paused: ${msg.reason}`;
    case 'live_resumed': return 'live results resumed';
    case 'error': return `error ${msg.code}: ${msg.message}`;
    default: return null; // live words are drawn by the live view, not listed here
  }
}

class Recording {
  constructor(model, log, ui) {
    this.model = model;
    this.log = log;
    this.ui = ui;
    this.ws = null;
    this.stream = null;
    this.recorder = null;
    this.queue = [];
    this.ready = false;
    this.stopSent = false;
    this.startedAt = null;
    this.stoppedAt = null;
    this.audio = null;
    this.timer = 0;
  }

  set(values) {
    for (const [k, v] of Object.entries(values)) this.model.set(k, v);
    this.model.save_changes();
  }

  get state() { return this.model.get('state'); }

  get elapsed() {
    if (this.startedAt === null) return 0;
    return ((this.stoppedAt ?? performance.now()) - this.startedAt) / 1000;
  }

  fail(text) {
    this.set({ state: 'failed', error: text });
    this.ui.say(text, true);
    this.release();
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000, 'failed');
  }

  async start() {
    if (ACTIVE.includes(this.state)) return;
    this.dropPrevious();
    const format = pickFormat();
    if (!format) { this.fail('This browser cannot record audio (no MediaRecorder).'); return; }
    this.ready = false;
    this.queue = [];
    this.stopSent = false;
    this.limited = false;
    this.stage = null;
    this.set({ state: 'connecting', error: '', session_id: '', live_results: false,
      input_format: format.inputFormat, elapsed: 0 });
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
      });
    } catch (err) {
      this.fail(`No microphone: ${err.message || err.name}`);
      return;
    }
    if (this.state !== 'connecting') { // Stop pressed while the browser asked for the microphone
      for (const track of this.stream.getTracks()) track.stop();
      this.stream = null;
      this.set({ state: 'idle' });
      this.ui.say('stopped before the recording started');
      return;
    }
    this.startedAt = performance.now();
    this.stoppedAt = null;
    this.meter();
    this.timer = setInterval(() => this.set({ elapsed: Math.round(this.elapsed * 10) / 10 }), 500);
    this.recorder = new MediaRecorder(this.stream, { mimeType: format.mimeType });
    this.recorderStopped = new Promise((resolve) => this.recorder.addEventListener('stop', resolve, { once: true }));
    this.recorder.addEventListener('dataavailable', (ev) => {
      if (!ev.data || ev.data.size === 0 || this.limited) return; // a limit ended the recording
      if (this.ready && this.ws.readyState === WebSocket.OPEN) this.send(ev.data);
      else this.queue.push(ev.data);
    });
    this.recorder.start(TIMESLICE_MS);

    const ws = new WebSocket(socketUrl(this.model.get('server_url'), 'new', this.model.get('token')));
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    ws.addEventListener('open', () => {
      if (this.ws !== ws) return;
      const start = {
        ...this.model.get('options'), action: 'start', format: this.model.get('format') || 'wav',
        input_format: format.inputFormat, live_results: true,
      };
      this.sendText(start);
    });
    ws.addEventListener('message', (ev) => {
      // Only this recording's socket: a previous one's late messages must not end this one.
      if (this.ws !== ws) return;
      if (typeof ev.data === 'string') this.onMessage(ev.data, ws);
    });
    ws.addEventListener('close', (ev) => {
      if (this.ws !== ws) return;
      if (['stopping', 'connecting'].includes(this.state) && !this.ready) { // no session started
        this.fail(`The connection to the server closed (${ev.code}${ev.reason ? `: ${ev.reason}` : ''}) `
          + 'before the recording started; nothing was recorded.');
      } else if (['connecting', 'recording'].includes(this.state)) {
        this.fail(`The connection to the server closed (${ev.code}${ev.reason ? `: ${ev.reason}` : ''}); `
          + 'what arrived is kept.');
      } else if (['stopping', 'processing'].includes(this.state)) {
        this.set({ state: 'detached' });
        this.ui.say('connection closed; processing goes on on the server');
      }
    });
  }

  /** A start while the previous recording is still being processed (`Microphone.start()`;
   * the Record button waits for the result): its socket is closed, so that nothing of it (live
   * words flushed after its stop, progress, its result) is taken for the new recording's.  The
   * server goes on processing it; its result is in the session list (the widget follows one
   * recording at a time). */
  dropPrevious() {
    const old = this.ws;
    this.ws = null;
    if (!old || old.readyState > WebSocket.OPEN) return;
    old.close(1000, 'a new recording started');
    const sid = this.model.get('session_id');
    if (this.state === 'processing' && sid) {
      this.ui.say(`session ${sid.slice(0, 8)} is still being processed on the server; its result will be in `
        + 'the session list');
    }
  }

  sendText(obj) {
    const text = JSON.stringify(obj);
    this.ws.send(text);
    this.log.sent.push({ kind: 'text', message: obj, at: performance.now() });
  }

  send(blob) {
    this.ws.send(blob); // one binary frame per MediaRecorder chunk, in order
    this.log.sent.push({ kind: 'binary', bytes: blob.size, at: performance.now() });
  }

  flush() {
    for (const blob of this.queue) this.send(blob);
    this.queue = [];
  }

  async stop() {
    if (!['connecting', 'recording'].includes(this.state)) return;
    this.stoppedAt = performance.now();
    this.set({ state: 'stopping', elapsed: Math.round(this.elapsed * 10) / 10 });
    if (this.recorder && this.recorder.state !== 'inactive') {
      const stopped = this.recorderStopped;
      this.recorder.stop();
      await stopped; // the last chunk has gone through dataavailable
    }
    this.release();
    if (this.ready && this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.flush();
      this.sendText({ action: 'stop' });
      this.stopSent = true;
    }
  }

  release() {
    clearInterval(this.timer);
    cancelAnimationFrame(this.frame);
    if (this.audio) this.audio.close();
    this.audio = null;
    if (this.stream) for (const track of this.stream.getTracks()) track.stop();
    this.stream = null;
    this.ui.level(-Infinity);
    if (this.model.get('level_db') !== -120) this.set({ level_db: -120 });
  }

  meter() {
    const Context = window.AudioContext || window.webkitAudioContext;
    if (!Context) return;
    this.audio = new Context();
    const analyser = this.audio.createAnalyser();
    analyser.fftSize = 2048;
    this.audio.createMediaStreamSource(this.stream).connect(analyser); // not to the speakers
    const samples = new Float32Array(analyser.fftSize);
    let last = 0;
    let synced = 0;
    const draw = (now) => {
      this.frame = requestAnimationFrame(draw);
      if (now - last < 50) return;
      last = now;
      analyser.getFloatTimeDomainData(samples);
      let sum = 0;
      for (const v of samples) sum += v * v;
      const db = 10 * Math.log10(sum / samples.length + 1e-12);
      this.ui.level(db);
      this.ui.elapsed(this.elapsed);
      if (now - synced > 500) { synced = now; this.set({ level_db: Math.round(db * 10) / 10 }); }
    };
    this.frame = requestAnimationFrame(draw);
  }

  onMessage(text, ws) {
    let msg;
    try { msg = JSON.parse(text); } catch { return; }
    if (!msg || typeof msg !== 'object') return;
    this.log.received.push(msg);
    this.model.send({ type: 'server', message: msg });
    const line = msg.type === 'processing_progress' && msg.stage === this.stage ? null : describe(msg);
    if (msg.type === 'processing_progress') this.stage = msg.stage; // one line per stage
    if (line) this.ui.say(line, msg.type === 'error' || msg.type === 'processing_failed');
    switch (msg.type) {
      case 'recording_started':
        this.ready = true;
        this.set({ state: 'recording', session_id: msg.session_id, live_results: !!msg.live_results });
        this.flush();
        if (this.stoppedAt !== null) this.stop(); // Stop was pressed while connecting
        break;
      case 'recording_stopped':
        if (this.state !== 'stopping') this.stoppedAt = performance.now();
        this.release();
        this.set({ state: 'processing' });
        break;
      case 'processing_complete':
      case 'processing_failed':
        this.set({ state: msg.type === 'processing_complete' ? 'completed' : 'failed' });
        ws.close(1000, 'done');
        break;
      case 'error':
        if (!this.ready) this.fail(`The server refused to start the recording: ${msg.message}`);
        else if (msg.code === 4008) { // undecodable: no run follows (the bytes are kept)
          this.set({ state: 'failed' });
          ws.close(1000, 'done');
        } else if (msg.code === 4004 || msg.code === 4005) { // a limit ended the recording
          this.limited = true; // the recorder's last chunk would only be refused (4002)
          if (this.recorder && this.recorder.state !== 'inactive') this.recorder.stop();
          this.queue = [];
          this.release();
        }
        break;
      default:
        break;
    }
  }
}

function render({ model, el }) {
  el.classList.add('workbench-microphone');
  el.innerHTML = `
    <div style="display:flex;align-items:center;gap:.6rem;flex-wrap:wrap">
      <button class="mic-record" type="button">&#9679; Record</button>
      <button class="mic-stop" type="button" disabled>&#9632; Stop</button>
      <span class="mic-state" style="min-width:6rem;font-weight:bold"></span>
      <span class="mic-elapsed" style="font-variant-numeric:tabular-nums">0:00.0</span>
      <div class="mic-meter" role="meter" aria-label="Input level" aria-valuemin="${FLOOR_DB}"
           aria-valuemax="0" style="width:180px;height:.6rem;border-radius:999px;background:#e6e9ef;overflow:hidden">
        <div class="mic-level" style="height:100%;width:0;background:#2ca02c"></div>
      </div>
      <span class="mic-db" style="color:#666;font-size:85%">silence</span>
    </div>
    <div class="mic-messages" style="font-family:monospace;font-size:85%;color:#333;max-height:7.5em;overflow:auto"></div>`;
  const $ = (sel) => el.querySelector(sel);
  const ui = {
    say(text, error = false) {
      const line = document.createElement('div');
      line.className = 'mic-message';
      line.textContent = text;
      if (error) line.style.color = '#b00';
      $('.mic-messages').prepend(line);
      while ($('.mic-messages').children.length > 50) $('.mic-messages').lastChild.remove();
    },
    level(db) {
      const clamped = Math.max(FLOOR_DB, Math.min(0, db));
      const bar = $('.mic-level');
      bar.style.width = `${((clamped - FLOOR_DB) / -FLOOR_DB * 100).toFixed(1)}%`;
      bar.style.background = db > -6 ? '#d62728' : '#2ca02c';
      bar.dataset.db = Number.isFinite(db) ? db.toFixed(1) : '';
      $('.mic-meter').setAttribute('aria-valuenow', clamped.toFixed(0));
      $('.mic-db').textContent = db <= FLOOR_DB ? 'silence' : `${clamped.toFixed(0)} dB`;
    },
    elapsed(seconds) {
      const m = Math.floor(seconds / 60);
      $('.mic-elapsed').textContent = `${m}:${(seconds - 60 * m).toFixed(1).padStart(4, '0')}`;
    },
  };
  const log = { sent: [], received: [] };
  window.__workbenchMicrophones = window.__workbenchMicrophones || [];
  window.__workbenchMicrophones.push(log);
  const recording = new Recording(model, log, ui);

  const showState = () => {
    const state = model.get('state');
    el.dataset.state = state;
    $('.mic-state').textContent = state;
    $('.mic-record').disabled = ['connecting', 'recording', 'stopping', 'processing'].includes(state);
    $('.mic-stop').disabled = !['connecting', 'recording'].includes(state);
    ui.elapsed(model.get('elapsed'));
  };
  $('.mic-record').addEventListener('click', () => recording.start());
  $('.mic-stop').addEventListener('click', () => recording.stop());
  model.on('change:state', showState);
  model.on('change:elapsed', () => ui.elapsed(model.get('elapsed')));
  model.on('msg:custom', (msg) => {
    if (msg && msg.command === 'start') recording.start();
    else if (msg && msg.command === 'stop') recording.stop();
  });
  showState();
  return () => {
    if (['connecting', 'recording'].includes(model.get('state'))) recording.stop();
  };
}

export default { render };
