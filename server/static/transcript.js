// A speaker-attributed transcript (`transcript.json`) drawn as coloured speaker turns.

export const PALETTE = ['#2563eb', '#d9480f', '#0f9d58', '#9c36b5', '#c2255c', '#0b7285', '#b08800',
  '#5c7cfa'];

/** 75.3 -> "1:15.3"; 3725 -> "1:02:05.0". */
export function formatTime(seconds) {
  // whole tenths first, so that 59.96 s reads 1:00.0, not 0:60.0
  const tenths = Math.round(Math.max(0, seconds || 0) * 10);
  const h = Math.floor(tenths / 36000);
  const m = Math.floor((tenths % 36000) / 600);
  const rest = ((tenths % 600) / 10).toFixed(1).padStart(4, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${rest}` : `${m}:${rest}`;
}

/** A colour per speaker label, in order of first appearance. */
export function speakerColours(segments) {
  const colours = new Map();
  for (const seg of segments) {
    const label = seg.speaker ?? 'UNKNOWN';
    if (!colours.has(label)) colours.set(label, PALETTE[colours.size % PALETTE.length]);
  }
  return colours;
}

/** Consecutive segments of one speaker joined into turns {speaker, start, end, text}. */
export function speakerTurns(segments) {
  const turns = [];
  for (const seg of segments) {
    const speaker = seg.speaker ?? 'UNKNOWN';
    const text = (seg.text || '').trim();
    const last = turns[turns.length - 1];
    if (last && last.speaker === speaker) {
      last.end = Math.max(last.end, seg.end);
      last.text = `${last.text} ${text}`.trim();
    } else {
      turns.push({ speaker, start: seg.start, end: seg.end, text });
    }
  }
  return turns;
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  node.append(...children);
  return node;
}

/**
 * Draw `doc` (transcript.json) into `container`: a legend with each speaker's talk time,
 * then the turns.  `onSeek(seconds)` is called when a turn's time is clicked.
 */
export function renderTranscript(container, doc, { onSeek } = {}) {
  const segments = Array.isArray(doc.segments) ? doc.segments : [];
  const colours = speakerColours(segments);
  container.replaceChildren();
  if (!segments.length) {
    container.append(el('p', { className: 'muted', textContent: 'No speech was recognised in this recording.' }));
    return;
  }
  const talk = new Map();
  for (const seg of segments) {
    const label = seg.speaker ?? 'UNKNOWN';
    talk.set(label, (talk.get(label) || 0) + Math.max(0, seg.end - seg.start));
  }
  const legend = el('ul', { className: 'legend' });
  for (const [label, colour] of colours) {
    const item = el('li', {}, el('span', { className: 'swatch' }), `${label} · ${formatTime(talk.get(label))}`);
    item.style.setProperty('--speaker', colour);
    legend.append(item);
  }
  const list = el('ol', { className: 'turns' });
  for (const turn of speakerTurns(segments)) {
    const time = el('button', {
      type: 'button', className: 'time', title: 'Play from here',
      textContent: `${formatTime(turn.start)} – ${formatTime(turn.end)}`,
    });
    time.addEventListener('click', () => onSeek?.(turn.start));
    const item = el('li', { className: 'turn' },
      el('div', { className: 'turn-head' }, el('span', { className: 'speaker', textContent: turn.speaker }), time),
      el('p', { className: 'text', textContent: turn.text }));
    item.dataset.speaker = turn.speaker;
    item.dataset.start = String(turn.start);
    item.style.setProperty('--speaker', colours.get(turn.speaker));
    list.append(item);
  }
  container.append(legend, list);
}
