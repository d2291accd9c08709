// The recorder page: microphone and options, a live recording, its live transcript,
// its processing and result, and the list of past sessions.  Recording logic lives in
// recorder.js, REST in api.js (the token form, and why a socket was refused, in auth.js),
// the live transcript view in live.js, notices and the event log in notices.js, download
// links in downloads.js; this module wires them to the page.

import {
  ApiError, withToken, recordingSocketUrl, audioUrl, transcriptUrl,
} from './api.js';
import { explainConnectFailure, fetchSession, request } from './auth.js';
import { $, el, formatClock, seconds, shortId, when } from './dom.js';
import { audioLinks, liveLinksWhenSaved, transcriptLinks } from './downloads.js';
import { LiveTranscript, showLiveCard, supersedeLive } from './live.js';
import { LiveRecording, pickRecordingFormat } from './recorder.js';
import { LevelMeter } from './meter.js';
import { MIC_KEY, microphoneProblem, refreshDevices } from './microphones.js';
import { dismiss, log, notify, reportError } from './notices.js';
import {
  announceDone, announceWhenDone, beingProcessed, isGone, renderSessions, reportDeleted,
} from './sessions.js';
import { renderTranscript } from './transcript.js';

const LIVE_KEY = 'workbench.liveResults';
const CAPTURING = ['connecting', 'recording', 'reconnecting'];
const STAGES = {
  queued: 'Queued', renditions: 'Preparing audio', decode: 'Decoding audio',
  asr: 'Transcribing', segmentation: 'Finding speech', embeddings: 'Telling voices apart',
  clustering: 'Grouping speakers', merge: 'Assembling the transcript', done: 'Done',
};

// ---------------------------------------------------------------------- recording

const meter = new LevelMeter($('level'), $('level-label'));
let current = null;
let starting = false; // between the click on Start and the recording's first state
let clock = 0;

function selectedFormat() {
  return document.querySelector('input[name="format"]:checked')?.value || 'wav';
}

async function startRecording() {
  if (current && [...CAPTURING, 'stopping'].includes(current.state)) return;
  dismiss('mic', 'server', 'connection', 'limit', 'recording', 'warning');
  starting = true;
  $('start').disabled = true;
  try {
    // The server first: reachable, and the token if it wants one.
    try {
      renderSessions((await request('/api/sessions')).sessions, openSession);
      dismiss('server');
    } catch (err) {
      reportError(err, 'Starting the recording', startRecording);
      return;
    }
    if (!navigator.mediaDevices?.getUserMedia) {
      notify('mic', 'error', 'This page cannot use a microphone.',
        'Browsers allow microphones only on https:// pages or on http://localhost.');
      return;
    }
    const recordingFormat = pickRecordingFormat();
    if (!recordingFormat) {
      notify('mic', 'error', 'This browser cannot record audio for the server.',
        'It supports none of WebM/Opus, Ogg/Opus or MP4 recording (MediaRecorder).');
      return;
    }
    const processing = $('browser-processing').checked;
    const audio = { channelCount: 1, echoCancellation: processing, noiseSuppression: processing,
      autoGainControl: processing };
    const deviceId = $('mic').value;
    if (deviceId) audio.deviceId = { exact: deviceId };
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio });
    } catch (err) {
      const [title, detail] = microphoneProblem(err);
      notify('mic', 'error', title, detail);
      return;
    }
    refreshDevices(); // labels are known once access is granted

    const start = { format: selectedFormat() };
    const speakers = $('num-speakers').value;
    if (speakers) start.num_speakers = Number(speakers);
    if ($('live-results').checked) start.live_results = true;
    const rec = new LiveRecording(stream, {
      socketUrl: recordingSocketUrl, start, recordingFormat, fetchSession,
    });
    current = rec;
    window.__recorder = rec; // for tests and for poking at it from the console
    $('log').replaceChildren();
    hideResult();
    wire(rec);
    meter.attach(stream);
    rec.start();
    clearInterval(clock);
    clock = setInterval(() => {
      $('elapsed').textContent = formatClock(rec.elapsed);
      if (rec.state === 'recording') {
        // A stalled connection shows as audio piling up in the socket before it closes.
        const kb = rec.unsentBytes / 1024;
        $('connection').textContent = kb > 32 ? `slow connection: ${kb.toFixed(0)} kB waiting to be sent`
          : 'live: streaming to the server';
      }
    }, 200);
  } finally {
    starting = false;
    renderRecorder();
  }
}

function wire(rec) {
  // A recording still being processed when a new one starts keeps its socket until it is done;
  // its messages (live words flushed after its stop, progress, its result) must not reach the
  // card, the live view or the log of the recording now in progress: only the list follows it.
  const superseded = () => rec !== current;
  rec.addEventListener('state', () => renderRecorder());
  rec.addEventListener('server', (ev) => {
    if (!superseded()) onServerMessage(rec, ev.detail);
  });
  rec.addEventListener('started', (ev) => {
    if (!ev.detail.resumed) refreshSessions();
    if (ev.detail.replaced) {
      notify('connection', 'warning', 'The session was deleted meanwhile.', `Session `
        + `${shortId(ev.detail.replaced)} was deleted on the server while the connection was down, `
        + 'and what was recorded before the drop went with it. The recording goes on in a new '
        + `session, ${shortId(ev.detail.session_id)}.`);
    } else if (ev.detail.resumed && rec.reconnects) {
      notify('connection', 'info', 'Reconnected.', `Recording resumed as part ${ev.detail.part + 1} of `
        + 'the same session; the audio kept during the outage is being sent.', { timeout: 8000 });
    }
  });
  rec.addEventListener('reconnecting', (ev) => {
    if (superseded()) return;
    const { delay, attempt, code, pendingBytes } = ev.detail;
    const kept = pendingBytes ? ` (${(pendingBytes / 1024).toFixed(0)} kB waiting to be sent)` : '';
    notify('connection', 'warning', 'Connection to the server lost.',
      `${rec.userStopped ? 'The recording is stopped' : 'Recording goes on'} in this page${kept}; `
      + `reconnecting in ${(delay / 1000).toFixed(1)} s (attempt ${attempt}). Nothing is lost while `
      + 'this page stays open.');
    log(`Connection lost${code ? ` (code ${code})` : ''}; reconnecting in ${(delay / 1000).toFixed(1)} s`,
      'warning');
  });
  rec.addEventListener('limit', async (ev) => {
    const { message, refused, lostBytes, sessionId } = ev.detail;
    if (!refused) {
      if (superseded()) return;
      notify('limit', 'warning', 'The server ended the recording at its limit.',
        `${message}. Everything recorded up to the limit is kept and is being processed.`);
      return;
    }
    // A reconnect refused at a limit: the session keeps what reached it; process that.
    notify('limit', 'warning', 'The session was already at the server\'s limit.',
      `${message}. The recording could not be resumed after the connection came back, so the `
      + `${(lostBytes / 1024).toFixed(0)} kB captured since the drop were not added. Everything `
      + 'that reached the server before is kept and is being processed.');
    log(`Resume refused at the limit: ${message}; processing what the server has`, 'warning');
    let options = {};
    try {
      options = (await fetchSession(sessionId)).options || {};
    } catch {
      // the run then takes the server's defaults
    }
    processAgain(sessionId, options);
  });
  rec.addEventListener('warning', (ev) => {
    if (superseded()) return;
    notify('warning', 'warning', 'Warning.', ev.detail.message);
    log(ev.detail.message, 'warning');
  });
  rec.addEventListener('complete', (ev) => {
    if (superseded()) {
      refreshSessions();
      return;
    }
    dismiss('connection');
    if (cardFollows(rec)) {
      showResult(rec.sessionId, { runId: ev.detail.run_id, summary: ev.detail });
    } else {
      announceDone(rec.sessionId, 'completed', null, openSession);
    }
    refreshSessions();
  });
  rec.addEventListener('failed', async (ev) => {
    const { message, sessionId, connect, processing } = ev.detail;
    if (superseded()) {
      refreshSessions();
      return;
    }
    dismiss('connection');
    if (connect) {
      await explainConnectFailure(message, startRecording);
    } else if (processing && /session was deleted/i.test(message)) {
      log(message, 'error');
      forgetSession(sessionId); // nothing is kept to download or process again
      return;
    } else {
      notify('recording', 'error', processing ? 'Processing failed.' : 'The recording failed.',
        processing ? `${message.replace(/^Processing failed: /, '').replace(/\.$/, '')}. The audio is kept: download it `
          + 'or process it again below.' : message);
      log(message, 'error');
    }
    if (sessionId && cardFollows(rec)) openSession(sessionId);
    refreshSessions();
  });
  rec.addEventListener('detached', (ev) => {
    if (superseded()) return;
    dismiss('connection'); // (the recording is over: nothing is waiting for the server)
    log('Connection closed during processing; following it over the REST API');
    const sid = ev.detail.sessionId;
    if (cardFollows(rec)) watchSession(sid);
    else announceWhenDone(sid, () => cardFollows(rec), openSession); // (the card: another session)
  });
}

function onServerMessage(rec, msg) {
  if (liveView.handle(msg)) {
    onLiveEvent(msg);
    return;
  }
  switch (msg.type) {
    case 'recording_started':
      log(msg.resumed ? `Resumed: part ${msg.part + 1} of session ${shortId(msg.session_id)}`
        : `Recording started: session ${msg.session_id}`);
      // A resumed part goes on in the same live view, also one a past session hides (indexes go on).
      if (rec.startFields.live_results && (!msg.resumed || (msg.live_results && $('live-view').hidden
        && $('live-view').dataset.sessionId !== msg.session_id))) {
        startLive(msg, { keep: msg.resumed });
      }
      break;
    case 'progress':
      log(`Server has stored ${msg.chunks_received} chunks (${msg.total_size_mb} MB)`);
      break;
    case 'recording_stopped':
      log(`Recording stopped: ${seconds(msg.duration_seconds)} of audio received`);
      if (msg.live_run_id) $('live-view').dataset.runId = msg.live_run_id;
      if (cardFollows(rec)) showProcessing(rec.sessionId, 'Waiting for the server…', 0);
      break;
    case 'processing_started':
      log(msg.message || 'Processing started');
      if (cardFollows(rec)) showProcessing(rec.sessionId, 'Queued', 0);
      refreshSessions(); // (its entry said "recording" until the result)
      break;
    case 'processing_progress': {
      const label = STAGES[msg.stage] || msg.stage;
      if ($('stage').dataset.stage !== msg.stage) log(`Processing: ${label}`);
      if (cardFollows(rec)) showProcessing(rec.sessionId, label, msg.overall ?? 0, msg.stage);
      break;
    }
    case 'processing_complete':
      log(msg.word_count == null ? `Done: ${seconds(msg.duration_seconds)} of audio ready`
        : `Done: ${msg.speakers} speaker(s), ${msg.word_count} words, ${seconds(msg.duration_seconds)}`);
      if (cardFollows(rec)) showProcessing(rec.sessionId, 'Done', 1, 'done');
      break;
    case 'processing_failed':
      log(`Processing failed: ${msg.message}`, 'error');
      break;
    case 'error':
      log(`Server error ${msg.code}: ${msg.message}`, 'error');
      break;
    default:
      break;
  }
}

/** Whether the result card shows the recording `rec` (or nothing): a session opened after Stop
 * keeps the card, the recording's progress goes to the log and its result to a notice. */
function cardFollows(rec) {
  return $('result').hidden || $('result').dataset.sessionId === rec.sessionId;
}

function renderRecorder() {
  const state = current?.state || 'idle';
  $('recorder').dataset.state = state;
  const capturing = CAPTURING.includes(state);
  const busy = capturing || state === 'stopping';
  $('start').disabled = busy || starting;
  $('stop').disabled = !capturing;
  for (const input of $('record-form').querySelectorAll('input, select')) input.disabled = busy;
  $('live').hidden = !busy;
  $('connection').textContent = {
    connecting: 'connecting…',
    recording: 'live: streaming to the server',
    reconnecting: 'reconnecting… (audio kept in this page)',
    stopping: current?.ready ? 'sending the last audio…' : 'waiting for the server…',
  }[state] || '';
  $('live').dataset.state = state;
  if (!capturing) meter.detach();
  if (!busy) {
    clearInterval(clock);
    if (current) $('elapsed').textContent = formatClock(current.elapsed);
  }
}

async function stopRecording() {
  if (!current) return;
  // the card follows the recording from the click (a session opened after it keeps it)
  if (current.sessionId) showProcessing(current.sessionId, 'Waiting for the server…', 0);
  await current.stop();
}

// ---------------------------------------------------------------------- live transcript

const liveView = new LiveTranscript($('live-view'));

/** `recording_started` of a recording that asked for live results (`keep`: its words so far). */
function startLive(msg, { keep = false } = {}) {
  dismiss('live');
  if (msg.live_results === undefined) {
    notify('live', 'info', 'No live transcript from this server.',
      'It does not offer live results; the transcript comes after Stop.', { timeout: 10000 });
    return;
  }
  if (!msg.live_results) return; // refused (over budget): a live_paused {reason} says why
  if (!keep) liveView.reset();
  showLiveCard(msg.session_id);
}

/** Whether the live view holds the words of `sessionId`, the recording in progress or just
 * stopped (shown or hidden by a past session opened meanwhile). */
function ownLive(sessionId) {
  return !!sessionId && current?.sessionId === sessionId && !['completed', 'failed'].includes(current.state)
    && $('live-view').dataset.sessionId === sessionId;
}

function onLiveEvent(msg) {
  if (msg.type === 'live_paused') {
    const refused = $('live-view').hidden; // recording_started said live_results: false
    notify('live', 'warning', refused ? 'No live transcript for this recording.' : 'Live transcript paused.',
      `${String(msg.reason || '').replace(/\.$/, '')}. The recording itself goes on and loses nothing; `
      + 'the full transcript comes after Stop.');
    log(`Live transcript paused: ${msg.reason}`, 'warning');
  } else if (msg.type === 'live_resumed') {
    notify('live', 'info', 'Live transcript resumed.', '', { timeout: 8000 });
    log('Live transcript resumed');
  }
}

// ---------------------------------------------------------------------- processing and results

let watchToken = 0;

function hideResult() {
  watchToken += 1;
  $('result').hidden = true;
  $('player').removeAttribute('src');
  $('live-view').hidden = true;
  delete $('live-view').dataset.sessionId;
  $('live-note').hidden = true;
  liveView.reset();
}

function showProcessing(sessionId, label, overall, stage = '') {
  const card = $('result');
  if (card.dataset.sessionId !== sessionId || card.hidden) {
    card.hidden = false;
    card.dataset.sessionId = sessionId;
    $('result-summary').textContent = `Session ${sessionId}`;
    $('result-actions').replaceChildren();
    $('downloads').replaceChildren();
    $('transcript').replaceChildren();
    $('player').hidden = true;
    $('player').removeAttribute('src');
    $('live-view').hidden = !ownLive(sessionId); // its words, if a past session was opened meanwhile
    $('live-note').hidden = true;
  }
  // A live transcript of this session stays in view until the refined one replaces it.
  card.dataset.state = 'processing';
  $('result-status').textContent = 'processing';
  $('result-status').className = 'badge status-processing';
  if (!$('live-view').hidden) {
    $('result-summary').textContent = `Session ${shortId(sessionId)} · live transcript; the refined `
      + 'one replaces it when processing is done';
  }
  $('processing').hidden = false;
  $('stage').textContent = label;
  $('stage').dataset.stage = stage;
  $('progress').value = Math.max(0, Math.min(1, overall || 0));
  $('percent').textContent = `${Math.round(($('progress').value) * 100)} %`;
}

/** Follow a session being processed over REST until it is done (used after a lost socket). */
async function watchSession(sessionId) {
  const token = ++watchToken;
  for (;;) {
    let session;
    try {
      session = await fetchSession(sessionId);
      dismiss('server');
    } catch (err) {
      if (token !== watchToken) return;
      if (isGone(err)) { forgetSession(sessionId); return; }
      reportError(err, 'Following the processing');
      session = null;
    }
    if (token !== watchToken) return;
    if (session && !beingProcessed(session)) {
      showResult(sessionId, { session });
      refreshSessions();
      return;
    }
    const run = session?.runs?.[session.runs.length - 1];
    if (session) showProcessing(sessionId, STAGES[run?.stage] || run?.stage || 'Queued', run?.progress ?? 0, run?.stage);
    await new Promise((r) => setTimeout(r, 1500));
    if (token !== watchToken) return;
  }
}

/** `sessionId` was deleted (elsewhere, or while it was processed): its card and entry go. */
function forgetSession(sessionId) {
  if ($('result').dataset.sessionId === sessionId) hideResult();
  reportDeleted(sessionId);
  refreshSessions();
}

async function openSession(sessionId) {
  if (ownLive(sessionId) && (!$('live-view').hidden || [...CAPTURING, 'stopping'].includes(current.state))) {
    // The recording in progress: its live transcript, hidden if a past session was opened since.
    if ($('live-view').hidden) {
      watchToken += 1; // that session's card, and its following, give way
      showLiveCard(sessionId);
    }
    $('result').scrollIntoView({ behavior: 'smooth', block: 'start' });
    return;
  }
  const token = watchToken; // a session opened (or a card shown) meanwhile wins
  let session;
  try {
    session = await fetchSession(sessionId);
  } catch (err) {
    if (isGone(err)) forgetSession(sessionId);
    else reportError(err, 'Opening the session', () => openSession(sessionId));
    return;
  }
  if (token !== watchToken) return;
  if (beingProcessed(session)) {
    showProcessing(sessionId, 'Processing', 0);
    watchSession(sessionId);
  } else {
    showResult(sessionId, { session });
  }
  $('result').scrollIntoView({ behavior: 'smooth', block: 'start' });
}

async function processAgain(sessionId, options = {}, button = null) {
  if (button) button.disabled = true; // one click, one run
  try {
    // The session's own options (e.g. num_speakers from Start) configure the new run too.
    await request(`/api/sessions/${encodeURIComponent(sessionId)}/runs`, { method: 'POST', body: options });
    dismiss('recording');
    showProcessing(sessionId, 'Queued', 0);
    if ($('result').dataset.sessionId === sessionId) {
      // until the new result: no button for yet another run, the old results marked old
      $('result-actions').replaceChildren(el('p', { className: 'muted',
        textContent: button?.textContent === 'Process again'
          ? 'Processing again; the files below are the last result\'s until it is done.'
          : 'Processing the recording…' }));
    }
    refreshSessions();
    watchSession(sessionId);
  } catch (err) {
    if (button) button.disabled = false;
    reportError(err, 'Starting processing');
  }
}

/** The result card for a session: summary, audio player, downloads and the transcript. */
async function showResult(sessionId, { runId = null, summary = null, session = null } = {}) {
  const token = ++watchToken;
  dismiss(`ready:${sessionId}`); // (its "is ready" notice)
  const card = $('result');
  card.hidden = false;
  card.dataset.sessionId = sessionId;
  card.dataset.state = 'loading';
  try {
    session ??= await fetchSession(sessionId);
  } catch (err) {
    if (isGone(err)) forgetSession(sessionId);
    else reportError(err, 'Loading the result', () => showResult(sessionId, { runId, summary }));
    return;
  }
  if (token !== watchToken) return; // another card was asked for meanwhile
  const runs = session.runs || [];
  const done = [...runs].reverse().filter((r) => r.status === 'completed');
  const said = (r) => r?.summary?.word_count != null; // has a transcript (a renditions run has none)
  const served = session.transcript; // what GET /transcript serves: {runs, kind, speakers, word_count}
  let run = runId ? runs.find((r) => r.id === runId) : done[0];
  const liveRun = runs.find((r) => r.id && r.id === (summary?.supersedes ?? run?.supersedes))
    || done.find((r) => r.kind === 'live');
  const again = (ms, then) => setTimeout(() => token === watchToken && then(sessionId), ms);
  const saving = runs.some((r) => r.kind === 'live' && r.status === 'running'); // part of the live transcript
  if (saving && served?.kind !== 'refined' && !(runId && said(run))) { // (renditions: the live runs are
    card.dataset.sessionId = ''; // the transcript) shown once saved (no other session's card meanwhile)
    showProcessing(sessionId, 'Saving the live transcript', 1, 'done');
    return void again(1000, showResult);
  }
  if (served && !(runId && said(run))) [run, summary] = [runs.find((r) => r.id === served.runs.at(-1)), served];
  summary ??= run?.summary || {};
  const status = session.status;
  if (status === 'recording') again(2000, watchSession); // (by another page: followed till done)
  $('processing').hidden = true;
  const shownLive = supersedeLive(sessionId, run, liveRun);
  $('result-status').textContent = status;
  $('result-status').className = `badge status-${status}`;
  const facts = [`Session ${shortId(sessionId)}`, seconds(session.duration_seconds)];
  if (summary.speakers != null) facts.push(`${summary.speakers} speaker${summary.speakers === 1 ? '' : 's'}`);
  if (summary.word_count != null) facts.push(`${summary.word_count} words`);
  if (session.created_at) facts.push(when(session.created_at));
  $('result-summary').textContent = facts.filter(Boolean).join(' · ');
  $('result-summary').title = sessionId;
  const actions = [];
  if (status === 'failed' || status === 'interrupted') {
    const why = status === 'failed' ? `Processing failed: ${session.error || 'unknown error'}.`
      : 'The recording was interrupted (connection lost); its audio is kept.';
    actions.push(el('p', { className: status === 'failed' ? 'error-text' : 'muted', textContent: why }));
  }
  if (['failed', 'interrupted', 'completed'].includes(status) && session.duration_seconds > 0) {
    const b = el('button', { type: 'button', className: 'small-button',
      textContent: status === 'completed' ? 'Process again' : 'Process now' });
    b.addEventListener('click', () => processAgain(sessionId, session.options || {}, b));
    actions.push(b);
  }
  if (status === 'recording') actions.push(el('p', { className: 'muted', textContent: 'This session is being recorded right now.' }));
  $('result-actions').replaceChildren(...actions);

  const hasAudio = session.duration_seconds > 0;
  const player = $('player');
  player.hidden = !hasAudio;
  if (hasAudio) {
    const src = withToken(audioUrl(sessionId, 'wav'));
    if (player.getAttribute('src') !== src) player.src = src;
  } else {
    player.removeAttribute('src');
  }

  const groups = [];
  if (hasAudio) groups.push(audioLinks(sessionId));
  const transcript = $('transcript');
  transcript.replaceChildren();
  if (run && status !== 'recording') {
    try {
      const served = run.kind === 'live' ? null : run; // live: every part's, as the server joins them
      const doc = await request(transcriptUrl(sessionId, 'json', served?.id));
      if (token !== watchToken) return;
      renderTranscript(transcript, doc, { onSeek: (t) => { player.currentTime = t; player.play().catch(() => {}); } });
      groups.push(transcriptLinks(sessionId, served));
      if (run.kind === 'live') {
        transcript.prepend(el('p', { className: 'muted', textContent: 'This is the live transcript made while '
          + 'recording; there is no refined one (yet).' }));
      }
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        transcript.append(el('p', { className: 'muted', textContent: 'No transcript: this server only '
          + 'made audio files for this run (pipeline "renditions").' }));
      } else {
        transcript.append(el('p', { className: 'error-text', textContent: `The transcript could not be loaded: ${err.message}` }));
      }
    }
  } else if (status === 'completed') {
    transcript.append(el('p', { className: 'muted', textContent: 'No transcript for this session.' }));
  }
  const beside = liveRun && run && liveRun.id !== run.id ? liveRun.status : null; // the live run's links
  if (beside === 'completed') groups.push(transcriptLinks(sessionId, liveRun, { live: true }));
  $('downloads').replaceChildren(...groups);
  if (beside === 'running') liveLinksWhenSaved($('downloads'), sessionId, liveRun.id, () => token === watchToken
    && card.dataset.sessionId === sessionId && card.dataset.state === 'ready', (r) => supersedeLive(sessionId, run, r, shownLive));
  card.dataset.state = 'ready';
}

// ---------------------------------------------------------------------- sessions list

async function refreshSessions() {
  try {
    renderSessions((await request('/api/sessions')).sessions, openSession);
    dismiss('server');
  } catch (err) {
    reportError(err, 'Loading the sessions', () => refreshSessions());
  }
}

// ---------------------------------------------------------------------- start-up

$('start').addEventListener('click', () => startRecording());
$('stop').addEventListener('click', () => stopRecording());
$('refresh').addEventListener('click', () => refreshSessions());
$('mic').addEventListener('change', () => localStorage.setItem(MIC_KEY, $('mic').value));
$('live-results').checked = localStorage.getItem(LIVE_KEY) !== 'off';
$('live-results').addEventListener('change', () => localStorage.setItem(LIVE_KEY, $('live-results').checked ? 'on' : 'off'));
navigator.mediaDevices?.addEventListener?.('devicechange', refreshDevices);
window.addEventListener('beforeunload', (ev) => {
  if (current && [...CAPTURING, 'stopping'].includes(current.state)) {
    ev.preventDefault();
    ev.returnValue = ''; // the recording would be cut short
  }
});

refreshDevices();
refreshSessions();
renderRecorder();
document.body.dataset.ready = '1';
