"""aiohttp server for live recording, transcription and diarization sessions."""

from .app import create_app
from .config import ServerConfig
from .limits import Limits

__all__ = ["create_app", "Limits", "ServerConfig"]
