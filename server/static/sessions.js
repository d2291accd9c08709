// The list of past sessions on the recorder page, and what a session's state means there.

import { ApiError } from './api.js';
import { fetchSession } from './auth.js';
import { $, el, seconds, shortId, when } from './dom.js';
import { dismiss, notify } from './notices.js';

/** Processing, or a refined run queued or running (a run just asked for is queued while the
 * session still says interrupted, completed or failed until a worker takes it). */
export function beingProcessed(session) {
  return session.status === 'processing' || (session.runs || []).some(
    (r) => (r.kind ?? 'refined') === 'refined' && ['queued', 'running'].includes(r.status));
}

/** The session list (the result card's session marked); `onOpen(id)` when one is clicked. */
export function renderSessions(sessions, onOpen) {
  const list = $('session-list');
  const open = $('result').hidden ? null : $('result').dataset.sessionId;
  list.replaceChildren(...sessions.map((s) => {
    const meta = [seconds(s.duration_seconds), s.speakers ? `${s.speakers} speakers` : '', s.format.toUpperCase()];
    const button = el('button', { type: 'button', className: 'session', title: s.id },
      el('span', { className: 'when', textContent: when(s.created_at) }),
      el('span', { className: `badge status-${s.status}`, textContent: s.status }),
      el('span', { className: 'meta', textContent: meta.filter(Boolean).join(' · ') }),
      el('span', { className: 'id', textContent: shortId(s.id) }));
    button.addEventListener('click', () => onOpen(s.id));
    const item = el('li', {}, button);
    item.dataset.sessionId = s.id;
    if (s.id === open) item.classList.add('current');
    return item;
  }));
  $('sessions-empty').hidden = sessions.length > 0;
}

/** A REST error saying that the session asked for does not exist (any more). */
export function isGone(err) {
  return err instanceof ApiError && err.status === 404;
}

/** Say that `sessionId` was deleted, replacing what failed or was promised about it. */
export function reportDeleted(sessionId) {
  dismiss('server');
  notify('recording', 'warning', 'The session was deleted.', `Session ${shortId(sessionId)} is no `
    + 'longer on the server (deleted from another page or over the API): its audio and transcripts '
    + 'went with it, and any processing of it has stopped.');
}

/** Say that the processing of `sessionId`, a recording stopped while another session is on
 * show, is over (`status` completed or failed), with a button that opens it. */
export function announceDone(sessionId, status, error, onOpen) {
  const failed = status === 'failed';
  notify(`ready:${sessionId}`, failed ? 'error' : 'info', `Session ${shortId(sessionId)} `
    + (failed ? 'could not be processed.' : 'is ready.'), failed ? (error || '')
    : 'The recording you stopped has been processed.', { actions: [{ label: 'Open', run: () => onOpen(sessionId) }] });
}

/** Follow `sessionId` over REST without showing it (its socket closed while another session
 * was on show) until it is processed, then `announceDone`; stops when `shown()` (its card is
 * back, and follows it) or when it was deleted. */
export async function announceWhenDone(sessionId, shown, onOpen) {
  for (;;) {
    await new Promise((r) => setTimeout(r, 2000));
    if (shown()) return;
    let session;
    try {
      session = await fetchSession(sessionId);
    } catch (err) {
      if (isGone(err)) return;
      continue; // (the server away for a while: asked again)
    }
    if (!beingProcessed(session)) {
      announceDone(sessionId, session.status, session.error, onOpen);
      return;
    }
  }
}
