"""The progress hook every long-running step accepts.

Steps report ``hook(stage, completed, total)`` (pyannote's convention without the
artifact): the same hook can drive a WebSocket progress event, an ipywidgets bar or tqdm.
"""

from __future__ import annotations

from typing import Protocol, Union

__all__ = ["ProgressHook"]


class ProgressHook(Protocol):
    """Progress callback: ``hook(stage, completed, total)``; `completed` and `total` are
    counts or seconds (of audio) depending on the stage."""

    def __call__(self, stage: str, completed: Union[int, float], total: Union[int, float]) -> None: ...
