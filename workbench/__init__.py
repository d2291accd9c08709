"""Research workbench for live speech recording, transcription and speaker diarization."""

import os as _os

# pyannote.audio 4 reports usage to its servers unless told not to; no machine here
# reaches them, and a research tool should not phone home by default.
_os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")

__version__ = "0.1.0"


def _code_at_import() -> str:
    from pathlib import Path

    from workbench.engine.provenance import source_version

    return source_version(Path(__file__).resolve().parent)


IMPORTED_CODE = _code_at_import()
"""The hash of the code that computes results as this process first imported the package
(`workbench.research.cells.check_environment` refuses to compute a cell once the files
on disk differ from it: the process runs other code than the cell's key would name)."""
