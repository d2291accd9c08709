"""aiohttp server for live recording, transcription and diarization sessions."""

from .app import create_app
from .config import Limits, ServerConfig

__all__ = ["create_app", "Limits", "ServerConfig"]
