"""The models of live sessions: loaded once per process (`load_models`), shared by the
sessions that run one after the other, and warmed up before the first recording
(`warm_up`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from workbench.engine.audio import SAMPLE_RATE
from workbench.live.config import LiveConfig
from workbench.live.diarization import OnlineDiarizer

__all__ = ["LiveModels", "load_models", "warm_up"]


@dataclass
class LiveModels:
    """Loaded models, shareable by sessions that run one after the other."""

    transcriber: Any = None
    segmentation: Any = None
    embedding: Any = None


_MODELS: dict[tuple[Any, ...], LiveModels] = {}


def load_models(config: Optional[LiveConfig] = None, data_dir: Any = "data") -> LiveModels:
    """Load (once per process) the models `config` needs."""
    from workbench.engine.asr.transcribe import Transcriber

    config = config or LiveConfig()
    a = config.asr.asr_config()  # threads at most the usable CPUs
    key = (a.model, a.compute_type, a.device, a.cpu_threads, str(Path(data_dir).resolve()))
    models = _MODELS.setdefault(key, LiveModels())
    if config.transcribe and models.transcriber is None:
        models.transcriber = Transcriber(a, data_dir=data_dir)
    if config.diarize and models.segmentation is None:
        from workbench.engine.diarization.embedding import CAMPPlusEmbedding, load_segmentation_model

        models.segmentation = load_segmentation_model()
        models.embedding = CAMPPlusEmbedding.from_state_dict_file(
            runtime=config.diarization.embedding_runtime)
    return models


def warm_up(models: LiveModels, config: Optional[LiveConfig] = None) -> float:
    """Run each loaded model once on 5 s of noise, so that a recording's first pass and
    step do not pay the libraries' first-call costs (measured: a diarization step
    0.77 s the first time, 0.09 s after). Returns the seconds it took."""
    import torch

    config = config or LiveConfig()
    started = time.perf_counter()
    noise = (0.01 * np.random.default_rng(0).standard_normal(5 * SAMPLE_RATE)).astype(np.float32)
    if models.transcriber is not None:
        models.transcriber.decode(noise, encoder_seconds=5.0 + (config.asr.encoder_pad or 25.0),
                                  language="en" if not models.transcriber.multilingual else None,
                                  beam_size=1, word_timestamps=True, max_new_tokens=8)
    if models.segmentation is not None:
        diarizer = OnlineDiarizer(config.diarization,
                                  models=(models.segmentation, models.embedding))
        diarizer.append(noise)
        diarizer.step()  # imports what a step needs, runs segmentation-3.0
        from workbench.engine.provenance import torch_threads

        # on the thread count of the steps: ONNX Runtime makes a session per count
        with torch_threads(config.diarization.num_threads), torch.inference_mode():
            frames = models.segmentation.num_frames(noise.size)
            mask = np.ones((frames, 1), dtype=bool)
            models.embedding.embed_parts(torch.from_numpy(noise)[None], mask, mask, [0])
    return time.perf_counter() - started
