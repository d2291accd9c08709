"""CAM++'s frame network run by ONNX Runtime instead of PyTorch (issue #15).

CAM++ is some 250 small operations per pass (52 densely connected TDNN layers, each with
batch norms, a context-aware mask and a concatenation); PyTorch's eager mode pays its
dispatch cost on every one of them, on inputs of a few hundred frames. ONNX Runtime runs
the same graph with the batch norms folded and the element-wise operations fused: 1.5-1.9x
faster on one thread (`python -m benchmarks embedding`), with outputs within ~4e-6
(relative) of PyTorch's (BENCHMARKS.md, "CAM++ on ONNX Runtime").

`OnnxFrameNetwork` exports the network from its input (mean-normalised fbanks,
``(batch, mel_bins, frames)``) up to the statistics pooling, once per set of weights and
package versions, into a cache folder (``$WORKBENCH_MODEL_CACHE``, default
``$XDG_CACHE_HOME/speech-workbench`` or ``~/.cache/speech-workbench``); later processes
load the file (0.3 s instead of a 3 s export). An export is checked against PyTorch on
two other input lengths before it is used or cached (a mismatch raises and names the
``"torch"`` runtime); a cached file that does not load is exported again. It needs the
``onnx`` package only for the export.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from workbench.engine.config import EMBEDDING_RUNTIMES
from workbench.engine.provenance import file_sha256, model_cache_dir, package_version

__all__ = ["EMBEDDING_RUNTIMES", "OnnxFrameNetwork", "model_cache_dir", "network_key"]

_OPSET = 17


class OnnxFrameNetwork:
    """A torch module ``(batch, mel_bins, frames) -> (batch, channels, n)`` run by ONNX
    Runtime.

    `network` is exported on first use (or loaded from the cache when a file for the same
    `key` exists). A session is made per torch thread count in force at the call, so the
    runtime uses the threads the caller set for torch (`DiarizationConfig.num_threads`);
    its worker threads do not spin between operations (spinning threads fight the ASR
    process for the cores). Picklable: sessions are rebuilt after unpickling.
    """

    def __init__(self, network: torch.nn.Module, key: str, num_mel_bins: int) -> None:
        self._network = network
        self.key = key
        self.num_mel_bins = num_mel_bins
        self._model: Optional[bytes] = None
        self._sessions: dict[int, Any] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_sessions"] = {}
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def cache_path(self) -> Path:
        """The exported model's file in `model_cache_dir`."""
        return model_cache_dir() / f"campplus-frames-{self.key}.onnx"

    def model_bytes(self) -> bytes:
        """The exported ONNX model (from the cache, or exported now and cached). A cached
        file that ONNX Runtime cannot load is exported again."""
        if self._model is None:
            path = self.cache_path
            if path.is_file():
                model = path.read_bytes()
                try:
                    self._sessions[1] = _new_session(model, 1)  # loads: keep it for use
                    self._model = model
                except Exception as error:  # a truncated or foreign file: export again
                    warnings.warn(f"exporting the embedding network again: the cached "
                                  f"{path} does not load ({error})", RuntimeWarning,
                                  stacklevel=2)
            if self._model is None:
                self._model = self._export()
                _write_atomically(path, self._model)
        return self._model

    def _export(self) -> bytes:
        module = self._network.eval()
        example = torch.zeros((1, self.num_mel_bins, 300))
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            # the TorchScript exporter is deprecated in favour of torch.export, which does
            # not export this network's dynamic segment pooling; the export is checked
            # against torch below
            warnings.simplefilter("ignore")
            with torch.inference_mode(False), torch.no_grad():
                torch.onnx.export(  # (the TorchScript exporter also writes to a file object)
                    module, (example,), buffer,  # type: ignore[arg-type]
                    input_names=["fbank"],
                    output_names=["features"], opset_version=_OPSET, dynamo=False,
                    dynamic_axes={"fbank": {0: "batch", 2: "frames"},
                                  "features": {0: "batch", 2: "n"}},
                )
        model = buffer.getvalue()
        # two lengths other than the example's, one past the 100-frame segment pooling
        generator = torch.Generator().manual_seed(0)
        for frames in (97, 517):
            x = torch.randn((2, self.num_mel_bins, frames), generator=generator)
            with torch.no_grad():
                expected = module(x)
            (actual,) = _new_session(model, 1).run(None, {"fbank": x.numpy()})
            error = float((torch.from_numpy(actual) - expected).abs().max()
                          / expected.abs().max())
            if actual.shape != tuple(expected.shape) or not error <= 1e-3:
                raise RuntimeError(f"the ONNX export of the embedding network does not match "
                                   f"PyTorch ({frames} frames: relative error {error:.2g}); "
                                   f"use embedding_runtime 'torch'")
        return model

    def _session(self) -> Any:
        threads = torch.get_num_threads()
        with self._lock:
            session = self._sessions.get(threads)
            if session is None:
                model = self.model_bytes()
                session = self._sessions.get(threads) or _new_session(model, threads)
                self._sessions[threads] = session
        return session

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, mel_bins, frames)`` -> ``(batch, channels, n)`` (float32)."""
        array = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        (out,) = self._session().run(None, {"fbank": array})
        return torch.from_numpy(out)


def _new_session(model: bytes, threads: int) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def network_key(weights: Path, code: Path) -> str:
    """A key for an export: the weights and architecture files and the versions of the
    packages that make and run it."""
    digest = hashlib.sha256()
    for path in (weights, code):
        digest.update(file_sha256(path).encode())  # cached per file: no re-reading
    for name in ("torch", "onnx", "onnxruntime"):
        digest.update(f"{name}={package_version(name)};".encode())
    digest.update(f"opset={_OPSET}".encode())
    return digest.hexdigest()[:16]


def _write_atomically(path: Path, data: bytes) -> None:
    # several worker processes may export at once: each writes its own temporary file
    # and renames it into place. A cache that cannot be written is not an error.
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as error:
        warnings.warn(f"could not cache the exported embedding network in {path}: {error}",
                      RuntimeWarning, stacklevel=3)
