// The microphone list (the choice remembered in localStorage) and what a failed
// getUserMedia means for the user.

import { $ } from './dom.js';

export const MIC_KEY = 'workbench.microphone';

/** Fill the microphone list (the remembered one selected). */
export async function refreshDevices() {
  const select = $('mic');
  const hint = $('mic-hint');
  if (!navigator.mediaDevices?.enumerateDevices) {
    select.replaceChildren(new Option('No microphone access on this page', ''));
    hint.textContent = 'Browsers allow microphones only on https:// or http://localhost pages.';
    return;
  }
  let inputs = [];
  try {
    inputs = (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === 'audioinput');
  } catch {
    inputs = [];
  }
  const wanted = select.value || localStorage.getItem(MIC_KEY) || '';
  const options = [new Option('Default microphone', '')];
  let unnamed = 0;
  for (const d of inputs) {
    if (!d.deviceId || d.deviceId === 'default' || d.deviceId === 'communications') continue;
    unnamed += 1;
    options.push(new Option(d.label || `Microphone ${unnamed}`, d.deviceId));
  }
  select.replaceChildren(...options);
  select.value = options.some((o) => o.value === wanted) ? wanted : '';
  if (!inputs.length) hint.textContent = 'No microphone found.';
  else if (!inputs.some((d) => d.label)) hint.textContent = 'Names appear once microphone access is allowed.';
  else hint.textContent = '';
}

/** Title and advice for a getUserMedia failure. */
export function microphoneProblem(err) {
  switch (err?.name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return ['Microphone access was denied.',
        'Allow the microphone for this page (the microphone icon in the address bar, or the '
        + "browser's site settings), then press Start again."];
    case 'NotFoundError':
      return ['No microphone was found.', 'Connect a microphone (or enable it in the system '
        + 'settings) and press Start again.'];
    case 'OverconstrainedError':
      return ['The selected microphone is not available.', 'Pick another one in the list and press '
        + 'Start again.'];
    case 'NotReadableError':
    case 'AbortError':
      return ['The microphone could not be opened.', 'Another application may be using it; close '
        + 'that application and press Start again.'];
    default:
      return ['The microphone could not be used.', `${err?.name || 'Error'}: ${err?.message || err}`];
  }
}
