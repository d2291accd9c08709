"""segmentation-3.0's SincNet front end shared by overlapping windows
(`workbench.engine.diarization.segmentation`): on real speech, pyannote's sliding windows
get the same class probabilities as from the plain model, by the shared path; batches the
shared path cannot serve go through the plain forward pass bit for bit."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pyannote.audio import Inference  # noqa: E402

from workbench.engine.config import ConfigError, DiarizationConfig  # noqa: E402
from workbench.engine.diarization.diarizer import Diarizer, model_identity  # noqa: E402
from workbench.engine.diarization.embedding import load_segmentation_model  # noqa: E402
from workbench.engine.diarization.pipelines import _PowersetProbabilities  # noqa: E402
from workbench.engine.diarization.segmentation import SlidingSincNet, use_frontend  # noqa: E402
from workbench.research.datasets import sample_call  # noqa: E402

pytestmark = [pytest.mark.models, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def call() -> torch.Tensor:
    """The real sample call (30 s, two voices), ``(1, samples)``."""
    waveform, rate = sf.read(str(sample_call().audio), dtype="float32")
    assert rate == 16000
    return torch.from_numpy(waveform)[None]


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return load_segmentation_model()


def _probabilities(model: torch.nn.Module, waveform: torch.Tensor, step: float,
                   frontend: str) -> np.ndarray:
    use_frontend(model, frontend)
    inference = Inference(model, step=step, batch_size=8, skip_aggregation=True)
    inference.conversion = _PowersetProbabilities()
    return inference({"waveform": waveform, "sample_rate": 16000}).data


@pytest.mark.parametrize("step", [2.0, 1.0])
def test_shared_front_end_gives_the_plain_models_probabilities(model, call, step) -> None:
    plain = _probabilities(model, call, step, "window")
    shared = _probabilities(model, call, step, "shared")
    assert shared.shape == plain.shape and shared.shape[0] >= 2
    # the shared path ran (float rounding differs) and agrees with the plain one
    assert not np.array_equal(shared, plain)
    assert float(np.abs(shared - plain).max()) < 1e-3
    assert (shared.argmax(-1) == plain.argmax(-1)).mean() > 0.999


def test_batches_the_shared_path_cannot_serve_run_the_plain_forward(model, call) -> None:
    use_frontend(model, "window")
    sliding = SlidingSincNet(model.sincnet)
    views = call[:, : 16000 * 20].unfold(1, 160000, 16005).permute(1, 0, 2)  # step % 10 != 0
    with torch.inference_mode():
        for batch in (views, views.contiguous(), views[:1]):
            assert sliding._step(batch) is None
            assert torch.equal(sliding(batch), sliding.plain(batch))
        aligned = call[:, : 16000 * 20].unfold(1, 160000, 16000).permute(1, 0, 2)
        assert sliding._step(aligned) == 16000
        assert torch.allclose(sliding(aligned), sliding.plain(aligned), atol=1e-4)


def test_a_copied_or_pickled_model_keeps_both_paths(model, call) -> None:
    import copy
    import pickle

    use_frontend(model, "shared")
    views = call[:, : 16000 * 20].unfold(1, 160000, 32000).permute(1, 0, 2)
    with torch.inference_mode():
        expected = model(views)
        for other in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
            sliding = other.sincnet.__dict__["forward"]
            assert isinstance(sliding, SlidingSincNet) and sliding.sincnet is other.sincnet
            assert torch.allclose(other(views), expected, atol=1e-5)
            assert torch.equal(other(views[:1]), model(views[:1]))  # the plain path


def test_the_option_is_checked_echoed_and_installed() -> None:
    assert DiarizationConfig().segmentation_frontend == "shared"
    with pytest.raises(ConfigError):
        DiarizationConfig(segmentation_frontend="fast")
    assert model_identity(DiarizationConfig(segmentation_frontend="window")
                          )["segmentation"]["frontend"] == "window"
    with pytest.raises(ValueError, match="unknown segmentation front end"):
        use_frontend(torch.nn.Linear(1, 1), "fast")
    for frontend, kind in (("shared", SlidingSincNet), ("window", type(None))):
        diarizer = Diarizer(DiarizationConfig(segmentation_frontend=frontend))
        sincnet = diarizer.pipeline._segmentation.model.sincnet
        assert isinstance(sincnet.__dict__.get("forward"), kind)
