"""`LiveConfig`: everything that determines a live run (the streaming ASR's and the online
diarization's configurations, which of the two run, how words meet speakers)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from workbench.live.asr import StreamingASRConfig
from workbench.live.diarization import OnlineDiarizationConfig

__all__ = ["LiveConfig"]


@dataclass(frozen=True)
class LiveConfig:
    """Everything that determines a live run."""

    asr: StreamingASRConfig = field(default_factory=StreamingASRConfig)
    diarization: OnlineDiarizationConfig = field(default_factory=OnlineDiarizationConfig)
    transcribe: bool = True
    diarize: bool = True
    speaker_tolerance: float = 0.5  # a word in a gap takes the nearest turn this close
    max_pause: float = 1.0  # segments of the final transcript split at longer pauses

    def __post_init__(self) -> None:
        if not (self.transcribe or self.diarize):
            raise ValueError("a live run must transcribe, diarize or both")

    @classmethod
    def for_latency(cls, latency: float, **asr_options: Any) -> "LiveConfig":
        """Diarization final `latency` s after the audio (`OnlineDiarizationConfig.for_latency`)."""
        if not 0 < latency < float("inf"):  # (0 said "need 0 < step <= window <= 10")
            raise ValueError(f"latency must be a positive number of seconds (got {latency})")
        return cls(asr=StreamingASRConfig(**asr_options),
                   diarization=OnlineDiarizationConfig.for_latency(latency))

    def serialize(self) -> dict[str, Any]:
        return {"asr": self.asr.serialize(), "diarization": self.diarization.serialize(),
                "transcribe": self.transcribe, "diarize": self.diarize,
                "speaker_tolerance": self.speaker_tolerance, "max_pause": self.max_pause}

    @classmethod
    def from_dict(cls, data: Optional[Mapping[str, Any]] = None) -> "LiveConfig":
        data = dict(data or {})
        asr = StreamingASRConfig.from_dict(data.pop("asr", None) or {})
        diar = OnlineDiarizationConfig.from_dict(data.pop("diarization", None) or {})
        unknown = set(data) - {"transcribe", "diarize", "speaker_tolerance", "max_pause"}
        if unknown:
            raise ValueError(f"unknown live option(s): {', '.join(sorted(unknown))}")
        return cls(asr=asr, diarization=diar, **data)
