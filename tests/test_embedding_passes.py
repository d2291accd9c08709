"""``embedding_passes``: CAM++ frame features of the whole recording computed once
(`CAMPPlusEmbedding.recording_features`) and pooled per run ("once"), or the passes of
every other window shared ("shared"), against the default of one network pass per local
speaker and 10 s window, on real speech (the pyannote sample call)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")

from pyannote.audio import sample as pyannote_sample  # noqa: E402
from pyannote.core import SlidingWindowFeature  # noqa: E402

from workbench.engine.config import DiarizationConfig  # noqa: E402
from workbench.engine.diarization.diarizer import Diarizer  # noqa: E402
from workbench.engine.diarization.embedding import CAMPPlusEmbedding  # noqa: E402

pytestmark = [pytest.mark.models, pytest.mark.timeout(600)]

SAMPLE = Path(pyannote_sample.__file__).parent / "sample.wav"


@pytest.fixture(scope="module")
def waveform() -> torch.Tensor:
    samples, rate = sf.read(SAMPLE, dtype="float32")
    assert rate == 16000
    return torch.from_numpy(samples)[None]


@pytest.fixture(scope="module")
def window_diarizer() -> Diarizer:
    return Diarizer(replace(DiarizationConfig(), embedding_passes="window"))


@pytest.fixture(scope="module")
def campplus(window_diarizer: Diarizer) -> CAMPPlusEmbedding:
    model = window_diarizer.pipeline._embedding.model_
    assert isinstance(model, CAMPPlusEmbedding)
    return model


def test_recording_features_fall_on_one_grid(campplus: CAMPPlusEmbedding,
                                             waveform: torch.Tensor) -> None:
    """Blocks without context are the frame features of their own audio, side by side;
    one block the size of the recording pools to the recording's embedding."""
    step = campplus.feature_step
    with torch.inference_mode():
        whole = campplus.recording_features(waveform, block=60.0, context=0.0)
        assert torch.allclose(campplus.pool(whole), campplus(waveform[None])[0], atol=1e-3)
        blocks = campplus.recording_features(waveform, block=3.0, context=0.0)
        assert blocks.shape == whole.shape
        per_block = 3 * 16000 // step
        for first in (0, per_block, 5 * per_block):
            piece = waveform[:, first * step: (first + per_block) * step + 240]
            own = campplus.frame_features(campplus.compute_fbank(piece))
            assert torch.allclose(blocks[:, first: first + per_block], own[:, :per_block],
                                  atol=1e-4)


def test_once_embeds_runs_like_the_windows(window_diarizer: Diarizer,
                                           waveform: torch.Tensor) -> None:
    """The same runs get an embedding both ways, each within cosine 0.7 of the
    window's (measured: mean 0.90, lowest 0.76), in a fraction of the network work."""
    pipeline = window_diarizer.pipeline
    file = {"waveform": waveform, "sample_rate": 16000, "uri": "sample"}
    segmentations = pipeline.get_segmentations(file)
    embeddings = {}
    for passes in ("window", "once"):
        pipeline.embedding_passes = passes
        try:
            with torch.inference_mode():
                embeddings[passes] = pipeline.get_embeddings(
                    file, SlidingWindowFeature(segmentations.data.copy(),
                                               segmentations.sliding_window),
                    exclude_overlap=True)
        finally:
            pipeline.embedding_passes = "window"
    window = embeddings["window"].reshape(-1, 192)
    once = embeddings["once"].reshape(-1, 192)
    assert np.array_equal(np.isnan(window[:, 0]), np.isnan(once[:, 0]))
    valid = ~np.isnan(window[:, 0])
    assert valid.sum() >= 20
    cosine = (window[valid] * once[valid]).sum(1) / (
        np.linalg.norm(window[valid], axis=1) * np.linalg.norm(once[valid], axis=1))
    assert cosine.min() >= 0.7, np.sort(cosine)[:5]
    assert cosine.mean() >= 0.85


def test_shared_passes_diarize_the_sample_call(waveform: torch.Tensor) -> None:
    """"shared" keeps the sample call's two speakers and its DER ("once" found three
    there: 15.6 % DER against 5.8 %, BENCHMARKS.md)."""
    from pyannote.database.util import load_rttm
    from pyannote.metrics.diarization import DiarizationErrorRate

    diarizer = Diarizer(replace(DiarizationConfig(), embedding_passes="shared"))
    result = diarizer(waveform[0].numpy(), 16000)
    reference = next(iter(load_rttm(SAMPLE.with_suffix(".rttm")).values()))
    assert result.speakers == ["SPEAKER_00", "SPEAKER_01"]
    error = DiarizationErrorRate()(reference, result.annotation)
    assert error <= 0.08
