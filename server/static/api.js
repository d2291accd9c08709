// The REST API and the access token.
//
// A server started with a token answers 401 without it.  The token lives in
// sessionStorage (this tab only, gone when the tab closes) and travels as an
// `Authorization: Bearer` header on fetch, and as a `token` query parameter where
// no header can be set: the WebSocket, download links and the <audio> element.

const TOKEN_KEY = 'workbench.token';

/** The server wants a (valid) token. */
export class AuthRequired extends Error {}

/** The server could not be reached at all (not running, network down). */
export class ServerUnreachable extends Error {}

/** The server answered with an error status; `message` is its `{"error": ...}` text. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

export function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** `url` (absolute, or relative to this page) with the token as a query parameter. */
export function withToken(url) {
  const token = getToken();
  if (!token) return url;
  const u = new URL(url, location.href);
  u.searchParams.set('token', token);
  return /^[a-z]+:/i.test(url) ? u.href : u.pathname + u.search;
}

/** The recording WebSocket URL for `sessionId` (any unknown id makes a new session). */
export function recordingSocketUrl(sessionId) {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return withToken(`${scheme}//${location.host}/ws/${encodeURIComponent(sessionId)}`);
}

async function errorText(res) {
  try {
    const body = await res.json();
    if (body && typeof body.error === 'string') return body.error;
  } catch { /* not JSON */ }
  return `${res.status} ${res.statusText}`.trim();
}

/** Call the REST API; resolves to the parsed JSON (null for 204). */
export async function api(path, { method = 'GET', body } = {}) {
  const headers = { Accept: 'application/json' };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, {
      method, headers, cache: 'no-store',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new ServerUnreachable(`Cannot reach the server at ${location.origin}: ${err.message}`);
  }
  if (res.status === 401) throw new AuthRequired(await errorText(res));
  if (!res.ok) throw new ApiError(res.status, await errorText(res));
  if (res.status === 204) return null;
  return res.json();
}

export const RESULT_FORMATS = ['json', 'srt', 'vtt', 'txt', 'rttm', 'csv'];
export const AUDIO_FORMATS = ['wav', 'mp4'];

export function audioUrl(sessionId, format = 'wav') {
  return `/api/sessions/${encodeURIComponent(sessionId)}/audio?format=${format}`;
}

export function transcriptUrl(sessionId, format = 'json', runId = null) {
  const run = runId ? `&run=${encodeURIComponent(runId)}` : '';
  return `/api/sessions/${encodeURIComponent(sessionId)}/transcript?format=${format}${run}`;
}
