"""Speech recognition with faster-whisper: `models` finds, assembles and verifies model
folders; `transcribe` runs them."""
