"""Streaming Silero VAD (workbench.live.vad): chunked scoring equals whole-stream scoring."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.conftest import SENTENCES, espeak
from workbench.engine.audio import SAMPLE_RATE, decode_file
from workbench.live.vad import FRAME, StreamingVAD


def _speech(tmp_path: Path) -> np.ndarray:
    return decode_file(espeak(SENTENCES[0], tmp_path / "s.wav"))


def test_chunked_probabilities_equal_whole_stream(tmp_path: Path) -> None:
    from faster_whisper.vad import get_vad_model

    audio = np.concatenate([np.zeros(SAMPLE_RATE, np.float32), _speech(tmp_path)])
    whole = get_vad_model()(audio[: audio.size // FRAME * FRAME]).reshape(-1)
    vad = StreamingVAD()
    rng = np.random.default_rng(0)
    i = 0
    while i < audio.size:
        n = int(rng.integers(1, 3000))
        vad.append(audio[i:i + n])
        i += n
    np.testing.assert_allclose(vad.probabilities(), whole, atol=1e-5)


def test_speech_has_regions_silence_and_noise_have_none(tmp_path: Path) -> None:
    speech = _speech(tmp_path)
    vad = StreamingVAD()
    vad.append(np.zeros(SAMPLE_RATE, np.float32))
    vad.append(speech)
    regions = vad.regions()
    assert regions, "no speech found in espeak-ng speech"
    assert regions[0][0] >= 0.8  # the leading second of silence is not speech
    assert sum(b - a for a, b in regions) > 0.6 * speech.size / SAMPLE_RATE

    quiet = StreamingVAD()
    rng = np.random.default_rng(1)
    quiet.append(np.zeros(2 * SAMPLE_RATE, np.float32))
    quiet.append((0.003 * rng.standard_normal(3 * SAMPLE_RATE)).astype(np.float32))
    assert quiet.regions() == []
