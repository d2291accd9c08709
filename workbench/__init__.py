"""Research workbench for live speech recording, transcription and speaker diarization."""

__version__ = "0.1.0"
