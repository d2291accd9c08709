"""Live results: streaming transcription and online diarization of audio as it arrives.

* `workbench.live.asr` — `StreamingTranscriber`: faster-whisper on a bounded buffer,
  VAD-gated passes, words committed by LocalAgreement-2, pauses and utterance ends;
* `workbench.live.diarization` — `OnlineDiarizer`: segmentation-3.0 on a rolling window,
  CAM++ per local speaker, incremental clustering; turns final up to ``final_until``;
* `workbench.live.diarization_config` — `OnlineDiarizationConfig`, its options;
* `workbench.live.clustering` — `OnlineSpeakerClustering`: the incremental clustering,
  and `continuing`, which links a voice going on across windows;
* `workbench.live.pipeline` — `LiveSession` (``feed``/``finish``, events through a hook,
  threaded or on a simulated clock) and `stream_file`;
* `workbench.live.config` — `LiveConfig`, everything that determines a live run;
* `workbench.live.models` — `load_models` (once per process) and `warm_up`;
* `workbench.live.events` — the event types (``serialize()`` gives the wire form).
"""

from workbench.live.events import (
    DiarizationUpdate,
    EventHook,
    LiveEvent,
    SpeakerLabels,
    TranscriptFinal,
    TranscriptPartial,
)
from workbench.live.models import LiveModels, load_models, warm_up
from workbench.live.config import LiveConfig
from workbench.live.pipeline import JobCosts, LiveResult, LiveSession, stream_file

__all__ = ["DiarizationUpdate", "EventHook", "JobCosts", "LiveConfig", "LiveEvent",
           "LiveModels", "LiveResult", "LiveSession", "SpeakerLabels", "TranscriptFinal",
           "TranscriptPartial", "load_models", "stream_file", "warm_up"]
