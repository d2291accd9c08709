"""CAM++'s frame network on ONNX Runtime (`workbench.engine.diarization.runtime`): the
same features as PyTorch on real speech, an export cached per weights and versions, clear
refusals, a cache that cannot be written is no error."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path
from typing import Iterator

import pytest
import soundfile as sf
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from workbench.engine.config import ConfigError, DiarizationConfig  # noqa: E402
from workbench.engine.diarization.diarizer import model_identity  # noqa: E402
from workbench.engine.diarization.embedding import CAMPPlusEmbedding, bundled_model_paths  # noqa: E402
from workbench.engine.diarization.runtime import OnnxFrameNetwork, network_key  # noqa: E402
from workbench.live.diarization import OnlineDiarizationConfig  # noqa: E402
from workbench.research.datasets import sample_call  # noqa: E402

pytestmark = [pytest.mark.models, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def chunk() -> torch.Tensor:
    """10 s of the real sample call (two voices), ``(1, samples)``."""
    waveform, rate = sf.read(str(sample_call().audio), dtype="float32")
    assert rate == 16000
    return torch.from_numpy(waveform[5 * rate: 15 * rate])[None]


@pytest.fixture
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("WORKBENCH_MODEL_CACHE", str(folder))
    return folder


def _close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-4) -> bool:
    return float((a - b).abs().max()) <= rel * float(b.abs().max())


def test_onnx_gives_torchs_features_and_embeddings(chunk, cache, one_thread) -> None:
    model = CAMPPlusEmbedding.from_state_dict_file(runtime="torch")
    assert model.runtime == "torch"
    with torch.inference_mode():
        fbank = model.compute_fbank(chunk)
        speech = fbank[100:700]  # 6 s; and a short piece below the 1 s segment pooling
        torch_features = [model.frame_features(speech), model.frame_features(fbank[:60])]
        torch_batch = model.embed_features(torch.stack([fbank[:400], fbank[400:800]]))
        model.use_runtime("onnx")
        assert model.runtime == "onnx"
        onnx_features = [model.frame_features(speech), model.frame_features(fbank[:60])]
        onnx_batch = model.embed_features(torch.stack([fbank[:400], fbank[400:800]]))
    for t, o in zip(torch_features, onnx_features):
        assert o.shape == t.shape and o.dtype == torch.float32
        assert _close(o, t)
    assert onnx_batch.shape == (2, 192) and _close(onnx_batch, torch_batch)
    # the two halves are different voices: the check above is not trivially met
    assert not _close(onnx_batch[0], onnx_batch[1], rel=0.1)
    assert list(cache.glob("campplus-frames-*.onnx")) == [model._onnx.cache_path]


def test_a_second_model_loads_the_cached_export(chunk, cache, one_thread, monkeypatch) -> None:
    first = CAMPPlusEmbedding.from_state_dict_file(runtime="onnx")
    with torch.inference_mode():
        expected = first.frame_features(first.compute_fbank(chunk))
    assert first._onnx.cache_path.is_file()

    def no_export(self):
        raise AssertionError("exported again although the cache holds the model")

    monkeypatch.setattr(OnnxFrameNetwork, "_export", no_export)
    second = CAMPPlusEmbedding.from_state_dict_file(runtime="onnx")
    with torch.inference_mode():
        assert torch.equal(second.frame_features(second.compute_fbank(chunk)), expected)
    # and it survives pickling (worker processes), sessions rebuilt on the other side
    third = pickle.loads(pickle.dumps(second))
    assert third.runtime == "onnx"
    with torch.inference_mode():
        assert torch.equal(third.frame_features(third.compute_fbank(chunk)), expected)


def test_the_export_key_follows_the_weights(tmp_path: Path) -> None:
    paths = bundled_model_paths()
    key = network_key(paths["embedding"], paths["embedding_code"])
    assert key == network_key(paths["embedding"], paths["embedding_code"])
    changed = tmp_path / "weights.pt"
    shutil.copyfile(paths["embedding"], changed)
    with open(changed, "ab") as handle:
        handle.write(b"\0")
    assert network_key(changed, paths["embedding_code"]) != key


def test_a_cache_that_cannot_be_written_warns_and_still_runs(chunk, tmp_path, monkeypatch,
                                                            one_thread) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("WORKBENCH_MODEL_CACHE", str(blocker / "cache"))
    model = CAMPPlusEmbedding.from_state_dict_file(runtime="onnx")
    with pytest.warns(RuntimeWarning, match="could not cache"), torch.inference_mode():
        features = model.frame_features(model.compute_fbank(chunk))
    assert torch.isfinite(features).all() and features.shape[0] == 512


def test_unknown_runtimes_are_refused() -> None:
    model = CAMPPlusEmbedding()
    with pytest.raises(ValueError, match="unknown embedding runtime 'tensorrt'"):
        model.use_runtime("tensorrt")
    with pytest.raises(ConfigError, match="embedding_runtime"):
        DiarizationConfig(embedding_runtime="tensorrt")
    with pytest.raises(ValueError, match="embedding_runtime"):
        OnlineDiarizationConfig(embedding_runtime="tensorrt")


def test_the_runtime_is_part_of_the_model_identity() -> None:
    onnx = model_identity(DiarizationConfig())
    torch_ = model_identity(DiarizationConfig(embedding_runtime="torch"))
    assert onnx["embedding"]["runtime"] == "onnx" and torch_["embedding"]["runtime"] == "torch"
    assert onnx["packages"]["onnxruntime"] and onnx["packages"]["onnx"]
    assert len(onnx["embedding"]["sha256"]) == 64


def test_a_cached_file_that_does_not_load_is_exported_again(chunk, cache, one_thread) -> None:
    reference = CAMPPlusEmbedding.from_state_dict_file(runtime="torch")
    model = CAMPPlusEmbedding.from_state_dict_file(runtime="onnx")
    path = model._onnx.cache_path
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not an onnx model")  # e.g. a copy cut short
    with pytest.warns(RuntimeWarning, match="exporting the embedding network again"), \
            torch.inference_mode():
        fbank = model.compute_fbank(chunk)
        features = model.frame_features(fbank)
    with torch.inference_mode():
        assert _close(features, reference.frame_features(fbank))
    assert path.stat().st_size > 1_000_000  # replaced by the export


class _TracesDifferently(torch.nn.Module):
    """Eager: the identity; traced for export: twice the input (an export that does not
    reproduce the module, as a faulty exporter would)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 if torch.jit.is_tracing() else x.clone()


def test_an_export_that_does_not_match_torch_is_refused(cache) -> None:
    network = OnnxFrameNetwork(_TracesDifferently(), key="faulty", num_mel_bins=80)
    with pytest.raises(RuntimeError, match="does not match PyTorch"):
        network(torch.zeros((1, 80, 120)))
    assert not network.cache_path.exists()
