"""Research workbench for live speech recording, transcription and speaker diarization."""

import os as _os

# pyannote.audio 4 reports usage to its servers unless told not to; no machine here
# reaches them, and a research tool should not phone home by default.
_os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")

__version__ = "0.1.0"
