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


def _embeddings(pipeline, file, segmentations) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The pipeline's run embeddings of `file` on a copy of its `segmentations`."""
    with torch.inference_mode():
        return pipeline.get_embeddings(
            file, SlidingWindowFeature(segmentations.data.copy(), segmentations.sliding_window),
            exclude_overlap=True)


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
            embeddings[passes] = _embeddings(pipeline, file, segmentations)
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


def test_looser_share_checks_run_fewer_frames_and_embed_the_same_runs(
        window_diarizer: Diarizer, waveform: torch.Tensor,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``embedding_share_coverage`` / ``embedding_share_agreement``: the looser, the more
    runs pool a nearby window's pass instead of their window getting passes; a pass
    never serves a run none of whose frames it holds, so every run keeps an embedding."""
    pipeline = window_diarizer.pipeline
    file = {"waveform": waveform, "sample_rate": 16000, "uri": "sample"}
    segmentations = pipeline.get_segmentations(file)
    model = pipeline._embedding.model_
    frame_features = model.frame_features
    frames: dict[float, int] = {}
    embeddings = {}
    before = (pipeline.embedding_passes, pipeline.embedding_share_coverage,
              pipeline.embedding_share_agreement)
    for loose in (1.0, 0.0):
        frames[loose] = 0

        def counted(fbank: torch.Tensor) -> torch.Tensor:
            frames[loose] += fbank.shape[0]
            return frame_features(fbank)

        monkeypatch.setattr(model, "frame_features", counted)
        pipeline.embedding_passes = "shared"
        pipeline.embedding_share_coverage = pipeline.embedding_share_agreement = loose
        try:
            embeddings[loose] = _embeddings(pipeline, file, segmentations)
        finally:
            (pipeline.embedding_passes, pipeline.embedding_share_coverage,
             pipeline.embedding_share_agreement) = before
    assert frames[0.0] < 0.9 * frames[1.0], frames
    strict, loose_ = embeddings[1.0][..., 0], embeddings[0.0][..., 0]
    np.testing.assert_array_equal(np.isnan(strict), np.isnan(loose_))
    a, b = embeddings[1.0][~np.isnan(strict)], embeddings[0.0][~np.isnan(strict)]
    cosine = (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert len(cosine) >= 20 and np.median(cosine) > 0.95, np.percentile(cosine, [0, 50])


@pytest.mark.parametrize("passes", ["window", "shared"])
def test_embedding_workers_give_the_same_embeddings(window_diarizer: Diarizer,
                                                    waveform: torch.Tensor, passes: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Two worker threads run the network passes ("window": windows at once; "shared":
    two ranges of windows at once), with the caller's torch thread count, and give every
    run exactly the embedding of one worker."""
    import threading

    from workbench.engine.provenance import torch_threads

    pipeline = window_diarizer.pipeline
    file = {"waveform": waveform, "sample_rate": 16000, "uri": "sample"}
    segmentations = pipeline.get_segmentations(file)
    model = pipeline._embedding.model_
    seen: dict[int, list[tuple[str, int]]] = {1: [], 2: []}
    speaker_passes = model.speaker_passes
    embeddings = {}
    for workers in (1, 2):
        def recorded(*args, **kwargs):  # type: ignore[no-untyped-def]
            seen[workers].append((threading.current_thread().name, torch.get_num_threads()))
            return speaker_passes(*args, **kwargs)

        monkeypatch.setattr(model, "speaker_passes", recorded)
        pipeline.embedding_workers, pipeline.embedding_passes = workers, passes
        try:
            with torch_threads(1), torch.inference_mode():  # as Diarizer runs it
                embeddings[workers] = pipeline.get_embeddings(
                    file, SlidingWindowFeature(segmentations.data.copy(),
                                               segmentations.sliding_window),
                    exclude_overlap=True)
        finally:
            pipeline.embedding_workers, pipeline.embedding_passes = 1, "window"
    threads = {name for name, _ in seen[2]}
    assert len(threads) == 2 and all(name.startswith("embeddings") for name in threads)
    assert {count for _, count in seen[1] + seen[2]} == {1}  # not torch's default 2
    assert (~np.isnan(embeddings[1][..., 0])).sum() >= 20
    np.testing.assert_array_equal(embeddings[1], embeddings[2])


def test_segmentation_workers_split_each_batch(window_diarizer: Diarizer,
                                               waveform: torch.Tensor,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """``segmentation_workers`` 2 runs each batch of windows as two halves on two threads
    (with the caller's torch thread count) and gives the windows the segmentation of one
    worker; the pipeline's own infer is back afterwards."""
    import threading

    from pyannote.audio.core.inference import Inference

    from workbench.engine.provenance import torch_threads

    pipeline = window_diarizer.pipeline
    file = {"waveform": waveform, "sample_rate": 16000, "uri": "sample"}
    seen: list[tuple[str, int, int]] = []
    infer = Inference.infer

    def recorded(self, chunks):  # type: ignore[no-untyped-def]
        seen.append((threading.current_thread().name, torch.get_num_threads(), len(chunks)))
        return infer(self, chunks)

    monkeypatch.setattr(Inference, "infer", recorded)
    segmentations = {}
    for workers in (1, 2):
        pipeline.segmentation_workers = workers
        try:
            with torch_threads(1):
                segmentations[workers] = pipeline.get_segmentations(file).data
        finally:
            pipeline.segmentation_workers = 1
    assert "infer" not in vars(pipeline._segmentation)
    single = [s for s in seen if not s[0].startswith("segmentation")]
    split = [s for s in seen if s[0].startswith("segmentation")]
    assert sum(n for _, _, n in single) == sum(n for _, _, n in split) == \
        segmentations[1].shape[0]
    assert len({name for name, _, _ in split}) == 2 and {t for _, t, _ in seen} == {1}
    assert segmentations[1].shape == segmentations[2].shape
    # the same model on batches of other sizes: equal up to float rounding
    assert (segmentations[1] != segmentations[2]).mean() < 1e-3


def test_embedding_and_segmentation_workers_are_checked() -> None:
    from workbench.engine.config import ConfigError

    for bad in ({"embedding_workers": 0}, {"segmentation_workers": 0}):
        with pytest.raises(ConfigError):
            DiarizationConfig.from_dict(bad)
