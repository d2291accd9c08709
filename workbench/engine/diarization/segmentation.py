"""segmentation-3.0's SincNet front end run once over the audio that a batch of
overlapping windows covers (issue #15).

pyannote slides segmentation-3.0 over a recording in 10 s windows at a 2 s step
(`DiarizationConfig.segmentation_step` 0.2), so every sample goes through the model five
times. The model's first layer, a bank of 80 sinc band-pass filters of 251 taps at a stride
of 10 samples, is about a quarter of its time. It follows an instance normalisation of the
window's waveform, ``(x - mean) / sqrt(var + eps) * gamma + beta``, and a convolution is
linear, so for a window with its own mean and variance::

    conv(norm(x)) = gamma / sqrt(var + eps) * conv(x) + (beta - gamma * mean / sqrt(var + eps)) * sum(filter)

`SlidingSincNet` computes ``conv(x)`` once over the span of a batch of windows (they are
views into the recording, as pyannote's `Inference.slide` makes them) and gives each window
its slice, scaled and shifted by its own statistics; everything after the first layer
runs per window as before. Outputs match the plain model to float rounding (see
`tests/test_segmentation_frontend.py`); a batch that is not a set of evenly spaced views
into one signal, whose step is not a multiple of the filters' stride, or a single window,
goes through the plain forward pass.
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F

from workbench.engine.config import SEGMENTATION_FRONTENDS

__all__ = ["SEGMENTATION_FRONTENDS", "SlidingSincNet", "use_frontend"]


class SlidingSincNet:
    """The ``forward`` of a pyannote `SincNet` whose sinc convolution is shared by
    overlapping windows of one batch (installed by `use_frontend`)."""

    def __init__(self, sincnet: torch.nn.Module) -> None:
        self.sincnet = sincnet

    def plain(self, waveforms: torch.Tensor) -> torch.Tensor:
        """pyannote's forward pass (looked up on the class: the instance's ``forward`` is
        this object, also after pickling or copying)."""
        return type(self.sincnet).forward(self.sincnet, waveforms)

    def __call__(self, waveforms: torch.Tensor) -> torch.Tensor:
        step = self._step(waveforms)
        if step is None:
            return self.plain(waveforms)
        net: Any = self.sincnet  # torch types its layers as `Tensor | Module` attributes
        encoder, pool = net.conv1d[0], cast(torch.nn.MaxPool1d, net.pool1d[0])
        filters = encoder.get_filters()  # (80, 1, 251)
        stride, k = int(encoder.stride), _size(pool.kernel_size)
        batch, _, window = waveforms.shape
        span = waveforms.as_strided((1, 1, (batch - 1) * step + window), (0, 0, 1))
        shared = F.conv1d(span, filters, stride=stride)  # (1, 80, frames of the span)
        # the window's normalisation as a scale and a shift of conv(x): a * conv(x) + b * S
        norm = cast(torch.nn.InstanceNorm1d, net.wav_norm1d)
        var, mean = torch.var_mean(waveforms, dim=-1, unbiased=False)  # (batch, 1)
        a = norm.weight / torch.sqrt(var + norm.eps)
        b = norm.bias - a * mean
        # max-pooling |a * y + b * S| over k frames is |a| * max(maxpool(y) + c, -(minpool(y)
        # + c)) with c = b * S / a: the pools run once over the span, at stride 1, and
        # each window takes every k-th value from its first frame on
        highs = F.max_pool1d(shared, k, 1)
        lows = F.max_pool1d(-shared, k, 1)  # -minpool
        frames = ((window - filters.shape[-1]) // stride + 1) // k
        length = highs.shape[-1]
        size, strides = (batch, highs.shape[1], frames), (step // stride, length, k)
        scale = a.abs()[..., None]  # (batch, 1, 1)
        offset = (torch.sign(a) * b)[..., None] * filters.sum(dim=-1)[None]  # |a| * c
        outputs = torch.maximum(torch.addcmul(offset, highs.as_strided(size, strides), scale),
                                torch.addcmul(-offset, lows.as_strided(size, strides), scale))
        outputs = F.leaky_relu(net.norm1d[0](outputs))
        for conv1d, pool1d, norm1d in zip(net.conv1d[1:], net.pool1d[1:], net.norm1d[1:]):
            outputs = F.leaky_relu(norm1d(pool1d(conv1d(outputs))))
        return outputs

    def _step(self, waveforms: torch.Tensor) -> Any:
        """The samples between windows when `waveforms` (batch, 1, samples) are evenly
        spaced overlapping views into one signal that the shared path can serve, else
        None."""
        net: Any = self.sincnet  # as in __call__
        norm = cast(torch.nn.InstanceNorm1d, net.wav_norm1d)
        if (waveforms.dim() != 3 or waveforms.shape[0] < 2 or waveforms.shape[1] != 1
                or waveforms.stride(2) != 1 or not norm.affine or norm.track_running_stats
                or not bool((norm.weight != 0).all())
                or type(net.conv1d[0]).__name__ != "Encoder"
                or getattr(net.conv1d[0], "padding", 0) != 0
                or not getattr(net.conv1d[0], "as_conv1d", True)):
            return None
        pool = cast(torch.nn.MaxPool1d, net.pool1d[0])
        if (_size(pool.stride) != _size(pool.kernel_size) or _size(pool.padding) != 0
                or _size(pool.dilation) != 1 or pool.ceil_mode):
            return None
        step = waveforms.stride(0)
        stride = int(net.conv1d[0].stride)
        if not 0 < step < waveforms.shape[2] or step % stride:
            return None
        return step


def _size(value: Any) -> int:
    return int(value[0] if isinstance(value, (tuple, list)) else value)


def use_frontend(model: torch.nn.Module, frontend: str) -> None:
    """Run `model`'s SincNet front end per window (``"window"``, pyannote's forward
    pass) or once per batch span (``"shared"``, `SlidingSincNet`). Models without a
    SincNet front end are left as they are."""
    if frontend not in SEGMENTATION_FRONTENDS:
        raise ValueError(f"unknown segmentation front end {frontend!r}; "
                         f"expected one of {', '.join(SEGMENTATION_FRONTENDS)}")
    sincnet = getattr(model, "sincnet", None)
    if sincnet is None or not hasattr(sincnet, "wav_norm1d"):
        return
    if frontend == "window":
        sincnet.__dict__.pop("forward", None)
    elif not isinstance(sincnet.__dict__.get("forward"), SlidingSincNet):
        sincnet.forward = SlidingSincNet(sincnet)
