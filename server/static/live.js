// The live transcript while a recording runs (README "Live results over the protocol").
//
// Committed words (`transcript_final`) are drawn in their speaker's colour, one line per
// run of words of one speaker; words whose speaker is not known yet sit on a grey
// "speaker pending" line until `speaker_labels` colours them.  The current hypothesis
// (`transcript_partial`) follows, greyed, replaced by each new one.  Speaker lanes
// drawn from `diarization_update` grow beside: final turns solid, the tentative guess
// past `final_until` faint.  Speakers are coloured by their order of appearance.

import { $, el, shortId } from './dom.js';
import { PALETTE, formatTime } from './transcript.js';

/** The server messages a LiveTranscript draws. */
export const LIVE_EVENTS = new Set(['transcript_partial', 'transcript_final', 'speaker_labels',
  'diarization_update', 'live_paused', 'live_resumed', 'live_replay']);

const PENDING = ''; // the line key of words without a speaker yet

export class LiveTranscript {
  /** @param {HTMLElement} root an empty element the view is built in */
  constructor(root) {
    this.root = root;
    this.statusNode = el('p', { className: 'live-status muted small' });
    this.lanesNode = el('div', { className: 'lanes', ariaLabel: 'Speakers over time' });
    this.linesNode = el('div', { className: 'live-lines' });
    this.partialNode = el('p', { className: 'live-partial', title: 'Not final yet: may still change' });
    root.replaceChildren(this.statusNode, this.lanesNode, this.linesNode, this.partialNode);
    this.reset();
  }

  /** Forget everything (a new recording). */
  reset() {
    this.words = [];        // committed words by index: {index, word, start, end, speaker}
    this.lines = [];        // {speaker, from, to, node}: runs of words of one speaker
    this.partial = null;    // {text, start, end}
    this.turns = [];        // final speaker turns, same-speaker turns that touch joined
    this.tentative = [];
    this.finalUntil = 0;
    this.at = 0;            // audio seconds the server had when it sent the last event
    this.lag = null;        // the last transcript_final's lag_seconds
    this.paused = null;     // the reason while live work is paused
    this.colours = new Map();
    this.events = 0;        // live events drawn (for tests)
    this.linesNode.replaceChildren();
    this.lanesNode.replaceChildren();
    this.root.dataset.events = '0';
    this.root.dataset.words = '0';
    this._renderPartial();
    this._renderStatus();
  }

  /** A resumed part: a pause said before is said again if it still holds. */
  unpause() {
    this.paused = null;
    this.root.dataset.paused = '';
    this._renderStatus();
  }

  /** Speaker -> colour, in order of first appearance. */
  colour(speaker) {
    if (!this.colours.has(speaker)) this.colours.set(speaker, PALETTE[this.colours.size % PALETTE.length]);
    return this.colours.get(speaker);
  }

  get wordCount() {
    return this.words.filter(Boolean).length;
  }

  /** The committed text so far, words joined by spaces. */
  get text() {
    return this.words.filter(Boolean).map((w) => w.word.trim()).join(' ');
  }

  /** Draw `msg` if it is a live event; returns whether it was one. */
  handle(msg) {
    // a resumed part of its recording: a pause said before is said again if it still holds
    if (msg.type === 'recording_started' && msg.resumed
      && msg.session_id === this.root.dataset.sessionId) this.unpause();
    if (!LIVE_EVENTS.has(msg.type)) return false;
    if (typeof msg.at === 'number') this.at = Math.max(this.at, msg.at);
    switch (msg.type) {
      case 'transcript_final':
        this._commit(msg.words || []);
        if (typeof msg.lag_seconds === 'number') this.lag = msg.lag_seconds;
        break;
      case 'speaker_labels':
        this._label(msg.words || []);
        break;
      case 'transcript_partial':
        this.partial = msg.text ? { text: msg.text, start: msg.start, end: msg.end } : null;
        this._renderPartial();
        break;
      case 'diarization_update':
        this._diarization(msg);
        break;
      case 'live_replay': // after a resume: everything final until it was sent
        this._commit(msg.words || []);
        this._label(msg.words || []);
        // it holds every final turn of its live stream from `from` on, those the page had
        // included; earlier turns are an earlier live stream's of the session: they stay
        this.turns = this.turns.filter((t) => t.start < (msg.from ?? 0));
        this.paused = null; // a live_paused follows while still behind
        this._diarization({
          turns: msg.turns || [],
          final_until: Math.max(this.finalUntil, msg.final_until ?? 0),
          tentative: this.tentative,
        });
        break;
      case 'live_paused':
        this.paused = msg.reason || 'paused';
        break;
      case 'live_resumed':
        this.paused = null;
        break;
      default:
        break;
    }
    this.events += 1;
    this.root.dataset.events = String(this.events);
    this.root.dataset.words = String(this.wordCount);
    this.root.dataset.paused = this.paused ? '1' : '';
    this._renderStatus();
    return true;
  }

  // ------------------------------------------------------------------ words

  _commit(words) {
    let first = Infinity;
    for (const w of words) {
      const index = Number.isInteger(w.index) ? w.index : this.words.length;
      if (this.words[index]) continue; // committed words never change: a repeat is ignored
      this.words[index] = { index, word: w.word, start: w.start, end: w.end, speaker: w.speaker ?? null };
      if (w.speaker != null) this.colour(w.speaker);
      first = Math.min(first, index);
    }
    if (first < Infinity) this._renderFrom(first);
  }

  _label(words) {
    let first = Infinity;
    for (const w of words) {
      const known = this.words[w.index];
      if (!known || w.speaker == null || known.speaker === w.speaker) continue;
      known.speaker = w.speaker;
      this.colour(w.speaker);
      first = Math.min(first, w.index);
    }
    if (first < Infinity) this._renderFrom(first);
  }

  /** Redraw the lines from the one holding word `index` on; earlier lines stay as they are. */
  _renderFrom(index) {
    let keep = this.lines.findIndex((line) => line.to >= index);
    if (keep === -1) keep = this.lines.length;
    // The line before may grow (new words, or words that got its speaker): redraw it too.
    keep = Math.max(0, keep - 1);
    const from = keep < this.lines.length ? this.lines[keep].from : 0;
    for (const line of this.lines.splice(keep)) line.node.remove();
    let line = null;
    for (let i = from; i < this.words.length; i += 1) {
      const w = this.words[i];
      if (!w) continue;
      const key = w.speaker ?? PENDING;
      if (!line || line.speaker !== key) {
        line = { speaker: key, from: i, to: i, words: [] };
        this.lines.push(line);
      }
      line.to = i;
      line.words.push(w);
    }
    for (const l of this.lines.slice(keep)) {
      l.node = this._lineNode(l);
      delete l.words;
      this.linesNode.append(l.node);
    }
  }

  _lineNode(line) {
    const pending = line.speaker === PENDING;
    const text = el('p', { className: 'text' });
    line.words.forEach((w, i) => {
      const span = el('span', { className: 'word', textContent: w.word.trim() });
      span.dataset.index = String(w.index);
      if (i) text.append(' ');
      text.append(span);
    });
    const node = el('div', { className: `live-line${pending ? ' pending' : ''}` },
      el('div', { className: 'turn-head' },
        el('span', { className: 'speaker', textContent: pending ? 'speaker…' : line.speaker }),
        el('span', { className: 'time', textContent: formatTime(line.words[0].start) })),
      text);
    node.dataset.speaker = line.speaker;
    if (!pending) node.style.setProperty('--speaker', this.colour(line.speaker));
    return node;
  }

  _renderPartial() {
    this.partialNode.textContent = this.partial ? this.partial.text : '';
    this.partialNode.hidden = !this.partial;
  }

  // ------------------------------------------------------------------ speakers

  _diarization(msg) {
    for (const t of msg.turns || []) {
      this.colour(t.speaker);
      const last = this.turns.findLast((u) => u.speaker === t.speaker);
      if (last && t.start <= last.end + 0.05) last.end = Math.max(last.end, t.end);
      else this.turns.push({ start: t.start, end: t.end, speaker: t.speaker });
    }
    this.tentative = (msg.tentative || []).map((t) => ({ ...t }));
    for (const t of this.tentative) this.colour(t.speaker);
    if (typeof msg.final_until === 'number') this.finalUntil = msg.final_until;
    this._renderLanes();
  }

  _renderLanes() {
    const span = Math.max(this.at, this.finalUntil, 1);
    const pct = (x) => `${((100 * Math.max(0, x)) / span).toFixed(3)}%`;
    const talk = new Map();
    for (const t of this.turns) talk.set(t.speaker, (talk.get(t.speaker) || 0) + t.end - t.start);
    const rows = [...this.colours].map(([speaker, colour]) => {
      const lane = el('div', { className: 'lane' });
      const segment = (t, tentative) => {
        const seg = el('span', { className: tentative ? 'seg tentative' : 'seg' });
        seg.style.left = pct(t.start);
        seg.style.width = pct(t.end - t.start);
        return seg;
      };
      const final = el('span', { className: 'final-until', title: 'Speakers are final up to here' });
      final.style.left = pct(this.finalUntil);
      lane.append(...this.turns.filter((t) => t.speaker === speaker).map((t) => segment(t, false)),
        ...this.tentative.filter((t) => t.speaker === speaker).map((t) => segment(t, true)), final);
      const row = el('div', { className: 'lane-row' },
        el('span', { className: 'lane-label' }, el('span', { className: 'swatch' }),
          `${speaker} · ${formatTime(talk.get(speaker) || 0)}`),
        lane);
      row.dataset.speaker = speaker;
      row.style.setProperty('--speaker', colour);
      return row;
    });
    this.lanesNode.replaceChildren(...rows);
  }

  _renderStatus() {
    const n = this.wordCount;
    const facts = [`${n} word${n === 1 ? '' : 's'}`];
    const speakers = this.colours.size;
    if (speakers) facts.push(`${speakers} speaker${speakers === 1 ? '' : 's'}`);
    if (this.at) facts.push(`${formatTime(this.at)} heard`);
    if (this.lag !== null) facts.push(`words ${this.lag.toFixed(1)} s behind`);
    if (this.paused) facts.push(`paused: ${this.paused}`);
    this.statusNode.textContent = facts.join(' · ');
  }
}

/** The result card as the live transcript of `sessionId`, the recording in progress (its words
 * so far kept: a past session opened meanwhile only hid them). */
export function showLiveCard(sessionId) {
  const card = $('result');
  card.hidden = false;
  card.dataset.sessionId = sessionId;
  card.dataset.state = 'live';
  $('result-status').textContent = 'live';
  $('result-status').className = 'badge status-recording';
  $('result-summary').textContent = `Session ${shortId(sessionId)} · live transcript while recording`;
  $('result-summary').title = sessionId;
  for (const id of ['result-actions', 'downloads', 'transcript']) $(id).replaceChildren();
  $('player').pause();
  $('player').hidden = true;
  $('processing').hidden = true;
  $('live-view').dataset.sessionId = sessionId;
  $('live-view').hidden = false;
  $('live-note').hidden = true;
}

/** Hide the page's live transcript, saying that `run` (the refined one) supersedes it; returns
 * whether the live words were on show (`shown`: as an earlier call found, when said again). */
export function supersedeLive(sessionId, run, liveRun, shown = null) {
  const view = $('live-view');
  shown ??= !view.hidden && view.dataset.sessionId === sessionId;
  view.hidden = true;
  const note = $('live-note');
  note.hidden = !liveRun || !run || run.id === liveRun.id;
  if (note.hidden) return;
  const why = liveRun.error ? ` (${String(liveRun.error).replace(/\.$/, '')})` : '';
  const fate = {
    completed: 'its files are under "Live transcript"',
    failed: `it could not be saved and has no files${why}`,
  }[liveRun.status] || 'still being saved; its files come here when it is';
  note.textContent = `${shown ? 'The refined transcript replaces the live one shown while recording'
    : 'This refined transcript supersedes the live one made while recording'} (live run `
    + `${shortId(liveRun.id)}: ${fate}).`;
  return shown;
}
