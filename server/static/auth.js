// The access token form, and REST calls that ask for a token whenever the server answers 401.

import { api, AuthRequired, getToken, setToken } from './api.js';
import { $ } from './dom.js';
import { notify, reportError } from './notices.js';

let tokenPrompt = null;

/** Show the token form; resolves once a token was entered. */
export function askForToken(reason) {
  if (!tokenPrompt) {
    tokenPrompt = new Promise((resolve) => {
      const form = $('auth-form');
      $('auth-message').textContent = getToken()
        ? `The server did not accept the token (${reason}). Enter the right one.`
        : `This server asks for an access token (${reason}). Enter the token it was started with.`;
      $('auth').hidden = false;
      $('auth-token').value = '';
      $('auth-token').focus();
      form.onsubmit = (ev) => {
        ev.preventDefault();
        setToken($('auth-token').value.trim());
        $('auth').hidden = true;
        tokenPrompt = null;
        resolve();
      };
    });
  }
  return tokenPrompt;
}

/** `api()` that asks for a token whenever the server answers 401, then tries again. */
export async function request(path, options) {
  for (;;) {
    try {
      return await api(path, options);
    } catch (err) {
      if (!(err instanceof AuthRequired)) throw err;
      await askForToken(err.message);
    }
  }
}

export function fetchSession(id) {
  return request(`/api/sessions/${encodeURIComponent(id)}`);
}

/** The WebSocket would not open: ask REST why (down? token?) and say so. */
export async function explainConnectFailure(message, retry) {
  try {
    await api('/api/sessions');
    notify('recording', 'error', 'The server refused the recording connection.',
      `${message} The REST API answers, so a proxy or the server's origin check may block `
      + 'WebSockets from this page.');
  } catch (err) {
    if (err instanceof AuthRequired) {
      notify('recording', 'error', 'The server wants an access token.', 'Enter it, then press Start again.');
      askForToken(err.message);
    } else {
      reportError(err, 'Starting the recording', retry);
    }
  }
}
