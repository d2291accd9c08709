// The input level meter: an AnalyserNode on the microphone stream, drawn as a bar.

const FLOOR_DB = -60;

/** Shows the RMS level (dBFS) of a MediaStream in `bar` (its width) until stopped. */
export class LevelMeter {
  constructor(bar, label) {
    this.bar = bar;
    this.label = label;
    this.context = null;
    this.frame = 0;
    this.peakDb = -Infinity; // loudest level seen since attach (for tests and the UI)
  }

  attach(stream) {
    this.detach();
    const Context = window.AudioContext || window.webkitAudioContext;
    if (!Context) return; // no Web Audio: the recording works, only the meter stays still
    this.context = new Context();
    const source = this.context.createMediaStreamSource(stream);
    const analyser = this.context.createAnalyser();
    analyser.fftSize = 2048;
    source.connect(analyser); // not to the destination: no echo of the microphone
    const samples = new Float32Array(analyser.fftSize);
    this.peakDb = -Infinity;
    let last = 0;
    const draw = (now) => {
      this.frame = requestAnimationFrame(draw);
      if (now - last < 50) return; // 20 updates a second are plenty
      last = now;
      analyser.getFloatTimeDomainData(samples);
      let sum = 0;
      for (const v of samples) sum += v * v;
      const db = 10 * Math.log10(sum / samples.length + 1e-12);
      this.peakDb = Math.max(this.peakDb, db);
      this.show(db);
    };
    this.frame = requestAnimationFrame(draw);
  }

  show(db) {
    const clamped = Math.max(FLOOR_DB, Math.min(0, db));
    const fraction = (clamped - FLOOR_DB) / -FLOOR_DB;
    this.bar.style.width = `${(fraction * 100).toFixed(1)}%`;
    this.bar.classList.toggle('hot', db > -6);
    this.bar.dataset.db = db.toFixed(1);
    this.bar.parentElement.setAttribute('aria-valuenow', clamped.toFixed(0));
    if (this.label) this.label.textContent = db <= FLOOR_DB ? 'silence' : `${clamped.toFixed(0)} dB`;
  }

  detach() {
    cancelAnimationFrame(this.frame);
    this.frame = 0;
    if (this.context) this.context.close();
    this.context = null;
    this.show(-Infinity);
  }
}
