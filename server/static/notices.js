// Notices at the top of the page: one per key (a newer one of the same key replaces it).

import { ServerUnreachable } from './api.js';
import { $, el } from './dom.js';

/** Show (or replace) the notice `key`: kind is error | warning | info. */
export function notify(key, kind, title, detail = '', { actions = [], timeout = 0 } = {}) {
  let box = document.querySelector(`#notices .notice[data-key="${key}"]`);
  if (!box) {
    box = el('div');
    box.dataset.key = key;
    $('notices').append(box);
  }
  box.className = `notice ${kind}`;
  box.setAttribute('role', kind === 'error' ? 'alert' : 'status');
  const close = el('button', { type: 'button', className: 'close', title: 'Dismiss', textContent: '×' });
  close.addEventListener('click', () => box.remove());
  const buttons = actions.map(({ label, run }) => {
    const b = el('button', { type: 'button', className: 'small-button', textContent: label });
    b.addEventListener('click', () => { box.remove(); run(); });
    return b;
  });
  box.replaceChildren(
    el('div', { className: 'notice-text' }, el('strong', { textContent: title }),
      detail ? el('span', { textContent: ` ${detail}` }) : null),
    ...buttons, close);
  const stamp = String(Math.random());
  box.dataset.stamp = stamp;
  if (timeout) setTimeout(() => { if (box.dataset.stamp === stamp) box.remove(); }, timeout);
}

export function dismiss(...keys) {
  for (const key of keys) document.querySelector(`#notices .notice[data-key="${key}"]`)?.remove();
}

/** A failed REST call as a notice that says what to do about it. */
export function reportError(err, what, retry = null) {
  const actions = retry ? [{ label: 'Try again', run: retry }] : [];
  if (err instanceof ServerUnreachable) {
    notify('server', 'error', 'Cannot reach the server.',
      `${what} failed: nothing answers at ${location.origin}. Check that the server is running `
      + '(python -m server) and that this machine can reach it, then try again.', { actions });
  } else {
    notify('server', 'error', `${what} failed.`, err.message || String(err), { actions });
  }
}

/** A line in the recording's event log (the last 60 are kept). */
export function log(text, kind = '') {
  const list = $('log');
  const time = new Date().toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  list.append(el('li', { className: kind }, el('time', { textContent: time }), ` ${text}`));
  while (list.children.length > 60) list.firstElementChild.remove();
  list.scrollTop = list.scrollHeight;
}
