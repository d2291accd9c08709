// The result card's download links: the session's audio, and a run's transcript in every
// format, each saved under the name the server gives it.

import { withToken, audioUrl, transcriptUrl, RESULT_FORMATS, AUDIO_FORMATS } from './api.js';
import { fetchSession } from './auth.js';
import { el } from './dom.js';

/** A run's file name as the server names it (`<id>.<run id's first 8>.<format>`): runs of
 * one session (processed again, or its live run) never share a name. */
function runFilename(sessionId, run, format) { // (no run: the session's transcript)
  return run ? `${sessionId}.${run.id.slice(0, 8)}.${format}` : `${sessionId}.${format}`;
}

function link(href, text, filename, format, kind = '') {
  const a = el('a', { href: withToken(href), textContent: text, className: 'download' });
  a.download = filename;
  a.dataset.format = format;
  if (kind) a.dataset.kind = kind;
  return a;
}

function group(label, links, className = 'download-group') {
  return el('div', { className }, el('span', { className: 'group-label', textContent: label }), ...links);
}

/** The session's audio, one link per format. */
export function audioLinks(sessionId) {
  return group('Audio', AUDIO_FORMATS.map((f) => link(audioUrl(sessionId, f), f.toUpperCase(),
    `${sessionId}.${f}`, f)));
}

/** `run`'s transcript, one link per format (`live`: the live run beside a refined one). */
export function transcriptLinks(sessionId, run, { live = false } = {}) {
  return group(live ? 'Live transcript' : 'Transcript',
    RESULT_FORMATS.map((f) => link(transcriptUrl(sessionId, f, run?.id), f.toUpperCase(),
      runFilename(sessionId, run, f), f, live ? 'live' : '')),
    live ? 'download-group live-run' : 'download-group');
}

/** The live run's links, added to `container` once the run is saved: the refined run can end
 * while the live one is still being saved (a busy machine). Asks for the session while
 * `wanted()` (the card still shows it), every second at first, then less often, for as long as
 * the server gives a save (10 minutes); `onSaved(run)` once the run is saved or failed. */
export async function liveLinksWhenSaved(container, sessionId, runId, wanted, onSaved) {
  const until = Date.now() + 600_000;
  for (let wait = 1000; Date.now() < until; wait = Math.min(1.5 * wait, 10_000)) {
    await new Promise((resolve) => { setTimeout(resolve, wait); });
    if (!wanted()) return;
    let run;
    try {
      run = (await fetchSession(sessionId)).runs?.find((r) => r.id === runId);
    } catch (err) {
      if (err?.status === 404) return; // (deleted: its card goes)
      continue; // (a server restarting comes back)
    }
    if (!wanted() || !run) return;
    if (run.status === 'running') continue;
    if (run.status === 'completed') container.append(transcriptLinks(sessionId, run, { live: true }));
    onSaved?.(run);
    return;
  }
}
