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
 * while the live one is still being saved (a busy machine). Asks for the session every second
 * while `wanted()` (the card still shows it), for at most `tries` s; a failed live run has none. */
export async function liveLinksWhenSaved(container, sessionId, runId, wanted, tries = 120) {
  for (let i = 0; i < tries; i += 1) {
    await new Promise((resolve) => { setTimeout(resolve, 1000); });
    if (!wanted()) return;
    let run;
    try {
      run = (await fetchSession(sessionId)).runs?.find((r) => r.id === runId);
    } catch {
      continue; // (a deleted session's card goes anyway; a server restarting comes back)
    }
    if (!wanted() || run?.status !== 'running') {
      if (wanted() && run?.status === 'completed') container.append(transcriptLinks(sessionId, run, { live: true }));
      return;
    }
  }
}
