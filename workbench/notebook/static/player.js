// The transcript player (workbench/notebook/player.py), an anywidget ES module: an audio
// player over the session's audio and its words in speaker colours; clicking a word seeks
// the audio to the word's start and plays; the word being played is underlined.

function render({ model, el }) {
  el.classList.add('workbench-player');
  el.innerHTML = `<audio class="player-audio" controls preload="metadata" style="width:100%"></audio>
    <div class="player-words" style="line-height:1.7;max-height:22em;overflow:auto"></div>`;
  const audio = el.querySelector('.player-audio');
  const box = el.querySelector('.player-words');
  let spans = [];

  const draw = () => {
    const src = model.get('src');
    if (audio.getAttribute('src') !== src) {
      if (src) audio.setAttribute('src', src); else audio.removeAttribute('src');
    }
    const colours = model.get('colours') || {};
    box.replaceChildren();
    spans = [];
    let speaker;
    model.get('words').forEach((w, i) => {
      if (w.speaker !== speaker) {
        speaker = w.speaker;
        const head = document.createElement('div');
        head.className = 'player-turn';
        head.style.marginTop = '.3em';
        const label = document.createElement('b');
        label.className = 'player-speaker';
        label.textContent = `${speaker ?? '(no speaker)'} `;
        label.style.color = colours[speaker] || '#666';
        const time = document.createElement('span');
        time.style.color = '#888';
        time.textContent = `${Number(w.start).toFixed(1)} s  `;
        head.append(time, label);
        box.append(head);
      }
      const span = document.createElement('span');
      span.className = 'player-word';
      span.textContent = `${String(w.word).trim()} `;
      span.dataset.index = String(i);
      span.dataset.start = String(w.start);
      span.dataset.speaker = w.speaker ?? '';
      span.style.color = colours[w.speaker] || '#666';
      span.style.cursor = 'pointer';
      span.title = `${Number(w.start).toFixed(2)}-${Number(w.end).toFixed(2)} s`;
      span.addEventListener('click', () => {
        audio.currentTime = Number(w.start);
        model.set('clicked', i);
        model.save_changes();
        audio.play().catch(() => {}); // autoplay rules may refuse: the seek stands
      });
      box.lastChild.append(span);
      spans.push(span);
    });
  };

  let current = -1;
  const highlight = () => {
    const t = audio.currentTime;
    const words = model.get('words');
    let found = -1;
    for (let i = 0; i < words.length; i += 1) {
      if (words[i].start <= t + 1e-3 && t < words[i].end) { found = i; break; }
    }
    if (found === current) return;
    if (spans[current]) spans[current].style.textDecoration = '';
    if (spans[found]) spans[found].style.textDecoration = 'underline';
    current = found;
  };
  const sync = () => {
    model.set('current_time', audio.currentTime);
    model.save_changes();
  };
  audio.addEventListener('timeupdate', highlight);
  audio.addEventListener('seeked', () => { highlight(); sync(); });
  audio.addEventListener('pause', sync);
  model.on('change:words', draw);
  model.on('change:colours', draw);
  model.on('change:src', draw);
  model.on('msg:custom', (msg) => {
    if (msg && typeof msg.seek === 'number') audio.currentTime = msg.seek;
  });
  draw();
}

export default { render };
