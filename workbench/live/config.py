"""`LiveConfig`: everything that determines a live run (the streaming ASR's and the online
diarization's configurations, which of the two run, how words meet speakers)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from workbench.engine.config import ConfigError, check_value
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
            raise ConfigError("transcribe", "a live run must transcribe, diarize or both")

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
        """The inverse of `serialize`, any option left out at its default. Unknown names,
        wrong types and values out of range raise `ConfigError` (a ValueError) naming the
        option (``asr.NAME``, ``diarization.NAME``, ``NAME``)."""
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(None, "live options must be a JSON object, e.g. "
                                    f'{{"diarization": {{"latency": 5.0}}}} (got {data!r:.40})')
        data = dict(data)
        asr = _section(StreamingASRConfig, data.pop("asr", None), "asr")
        diar = _section(OnlineDiarizationConfig, data.pop("diarization", None), "diarization")
        own = ("transcribe", "diarize", "speaker_tolerance", "max_pause")
        unknown = sorted(set(map(str, data)) - set(own))
        if unknown:
            raise ConfigError(unknown[0], f"unknown live option(s): {', '.join(unknown)} "
                                          f"(known: asr, diarization, {', '.join(own)})")
        return cls(asr=asr, diarization=diar,
                   **{name: check_value(cls, name, value) for name, value in data.items()})


def _section(cls: Any, given: Any, section: str) -> Any:
    """A section's configuration (None: the defaults); what its class refuses raises
    ConfigError naming the section (a range `__post_init__` checks: a ValueError there)."""
    try:
        return cls.from_dict({} if given is None else given)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(section, f"{section}: {exc}") from None
