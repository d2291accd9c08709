"""Run configurations: what one processing run does, as typed dataclasses.

The one place that names the options of a run. `RunConfig` holds an `ASRConfig`, a
`DiarizationConfig` and a `MergeConfig`; `RunConfig.from_dict` reads nested sections
(``{"asr": {...}, "diarization": {...}, "merge": {...}}``) and/or the flat names of
`FLAT_OPTIONS` (the recording protocol's ``start`` fields and the command line's flags)
and checks every name, type and range, raising `ConfigError` with a message that names
the field. `to_dict` gives the plain-JSON form stored with every run.

This module imports nothing heavy (no torch, no models), so the server validates a
configuration on its event loop in microseconds; `workbench.engine.pipeline.PipelineConfig` is
`RunConfig`.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Optional, Union, cast, get_args, get_origin, get_type_hints

__all__ = ["ASRConfig", "ConfigError", "DiarizationConfig", "FLAT_OPTIONS", "MergeConfig",
           "RunConfig", "build_config", "check_language", "check_speaker_counts", "check_value",
           "flat_option_default", "flat_option_type", "names_local_folder"]

# faster-whisper / CTranslate2
ASR_DEVICES = ("cpu", "cuda", "auto")
# torch devices of the diarization models (a GPU by its index too)
DIARIZATION_DEVICES = ("cpu", "cuda", "mps", *(f"cuda:{i}" for i in range(8)))
COMPUTE_TYPES = ("default", "auto", "int8", "int8_float32", "int8_float16", "int8_bfloat16",
                 "int16", "float16", "bfloat16", "float32")
# linkage methods of pyannote's AgglomerativeClustering
LINKAGE_METHODS = ("average", "centroid", "complete", "median", "single", "ward", "weighted")
# how workbench.engine.diarization.clustering.RunClustering picks the number of speakers
SPEAKER_COUNT_RULES = ("silhouette", "threshold")
# how often CAM++ sees each stretch of speech (workbench.engine.diarization.pipelines)
EMBEDDING_PASSES = ("window", "shared", "once")
EMBEDDING_RUNTIMES = ("onnx", "torch")
SEGMENTATION_FRONTENDS = ("shared", "window")
MAX_SPEAKERS = 64
# faster_whisper.tokenizer._LANGUAGE_CODES (a test keeps them equal; no CTranslate2 here)
WHISPER_LANGUAGES = (
    "af am ar as az ba be bg bn bo br bs ca cs cy da de el en es et eu fa fi fo fr gl gu ha "
    "haw he hi hr ht hu hy id is it ja jw ka kk km kn ko la lb ln lo lt lv mg mi mk ml mn mr "
    "ms mt my ne nl nn no oc pa pl ps pt ro ru sa sd si sk sl sn so sq sr su sv sw ta te tg "
    "th tk tl tr tt uk ur uz vi yi yo zh yue").split()
MAX_TEXT = 1000


class ConfigError(ValueError):
    """A configuration that cannot run; ``field`` names the offending option."""

    def __init__(self, field_name: Optional[str], message: str) -> None:
        super().__init__(message)
        self.field = field_name


def _option(default: Any, *, lo: Optional[float] = None, hi: Optional[float] = None,
            lo_open: bool = False, hi_open: bool = False,
            choices: Optional[tuple[str, ...]] = None, max_len: int = MAX_TEXT) -> Any:
    """A dataclass field with its allowed range (numbers; `lo_open` / `hi_open` leave a
    bound out) or choices / length (text)."""
    return field(default=default, metadata={"lo": lo, "hi": hi, "lo_open": lo_open,
                                            "hi_open": hi_open, "choices": choices,
                                            "max_len": max_len})


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _field_kind(cls: type, f: Field[Any]) -> tuple[type, bool]:
    """(bool|int|float|str, None allowed) of a field, from its annotation."""
    hint = _hints(cls)[f.name]
    optional = False
    if get_origin(hint) is Union:
        args = [a for a in get_args(hint) if a is not type(None)]
        optional, hint = True, args[0]
    return hint, optional


@lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def check_value(cls: type, name: str, value: Any, label: Optional[str] = None) -> Any:
    """``value`` checked against field ``name`` of config class ``cls`` (type, range,
    choices); returns it normalised (an integer given for a float becomes a float).
    Raises `ConfigError` naming ``label`` (default: the field's name)."""
    f = next(x for x in fields(cls) if x.name == name)
    kind, optional = _field_kind(cls, f)
    label = label or name
    meta = f.metadata
    if value is None:
        if optional:
            return None
        raise ConfigError(label, f"'{label}' must be {_KIND_NAMES[kind]}, not null")
    if not isinstance(value, bool):  # NumPy scalars too (sweeps, counts from arrays)
        if kind is float and isinstance(value, numbers.Real):
            try:
                value = float(value)
            except OverflowError:  # an integer too large for a float
                raise ConfigError(label, f"'{label}' must be a finite number "
                                         f"(got {_show(value)})") from None
        elif kind is int and isinstance(value, numbers.Integral):
            value = int(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ConfigError(label, f"'{label}' must be {_KIND_NAMES[kind]}"
                                 f"{' or null' if optional else ''} (got {_show(value)})")
    if kind is float and not math.isfinite(cast(float, value)):
        raise ConfigError(label, f"'{label}' must be a finite number (got {_show(value)})")
    if kind in (int, float):
        lo, hi, lo_open = meta.get("lo"), meta.get("hi"), meta.get("lo_open")
        hi_open = meta.get("hi_open")
        if (lo is not None and (value <= lo if lo_open else value < lo)) or (
                hi is not None and (value >= hi if hi_open else value > hi)):
            low = "" if lo is None else (f"> {lo:g}" if lo_open else f">= {lo:g}")
            high = "" if hi is None else (f"< {hi:g}" if hi_open else f"<= {hi:g}")
            raise ConfigError(label, f"'{label}' must be {' and '.join(filter(None, (low, high)))}"
                                     f" (got {_show(value)})")
    if kind is str:
        text = cast(str, value)
        if meta.get("choices") and text not in meta["choices"]:
            raise ConfigError(label, f"'{label}' must be one of {', '.join(meta['choices'])} "
                                     f"(got {_show(value)})")
        if not text.strip():
            raise ConfigError(label, f"'{label}' must not be empty")
        if len(text) > meta.get("max_len", MAX_TEXT):
            raise ConfigError(label, f"'{label}' is too long (at most "
                                     f"{meta.get('max_len', MAX_TEXT)} characters)")
    return value


def _check_fields(obj: Any) -> None:
    """Check every field of a config dataclass (from its ``__post_init__``)."""
    for f in fields(obj):
        value = check_value(type(obj), f.name, getattr(obj, f.name))
        if value is not getattr(obj, f.name):
            object.__setattr__(obj, f.name, value)


def build_config(cls: type, data: Any, section: str, labels: Mapping[str, str]) -> Any:
    """``cls`` (bool/int/float/str fields) from the mapping ``data``; unknown names and bad
    values raise ConfigError naming the option (``labels``: field -> label, ``section.field``)."""
    if not isinstance(data, Mapping):
        raise ConfigError(section, f"'{section}' must be a JSON object (got {_show(data)})")
    known = {f.name for f in fields(cls)}
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise ConfigError(f"{section}.{unknown[0]}",
                          f"unknown {'ASR' if section == 'asr' else section} option(s): "
                          f"{', '.join(unknown)} "
                          f"(known: {', '.join(sorted(known))})")
    values = {k: check_value(cls, k, v, labels.get(k, f"{section}.{k}")) for k, v in data.items()}
    try:
        return cls(**values)
    except ConfigError as exc:
        if exc.field and exc.field in labels and labels[exc.field] != exc.field:
            raise ConfigError(labels[exc.field],
                              str(exc).replace(f"'{exc.field}'", f"'{labels[exc.field]}'"))
        raise


def names_local_folder(model: str) -> bool:
    """Whether an ASR model name makes the loader (`workbench.engine.asr.models`) read a
    folder on this machine: a path, or a name that exists here (else a bundled name or an
    ``owner/repo`` hub id). The server gates such names (``--allow-local-models``) with
    this same rule: its own rule missed " /tmp" (the loader strips the name) and bare
    names of folders in its working directory."""
    name = model.strip()
    if name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1:
        return True
    try:
        return Path(name).expanduser().exists()
    except OSError:  # a name no file can have (over 255 bytes): not a folder here
        return False


def check_speaker_counts(num_speakers: Optional[int], min_speakers: Optional[int],
                         max_speakers: Optional[int]) -> None:
    """Speaker-count hints: each >= 1, min <= max, and an exact count within them (the
    exact count won silently: 5 speakers for a maximum of 2)."""
    for name, value in (("num_speakers", num_speakers), ("min_speakers", min_speakers),
                        ("max_speakers", max_speakers)):
        if value is not None and value < 1:
            raise ConfigError(name, f"'{name}' must be >= 1")
    if min_speakers is not None and max_speakers is not None and min_speakers > max_speakers:
        raise ConfigError("min_speakers", "'min_speakers' must not exceed 'max_speakers'")
    if num_speakers is not None and min_speakers is not None and num_speakers < min_speakers:
        raise ConfigError("num_speakers", "'num_speakers' must not be below 'min_speakers'")
    if num_speakers is not None and max_speakers is not None and num_speakers > max_speakers:
        raise ConfigError("num_speakers", "'num_speakers' must not exceed 'max_speakers'")


def check_language(config: "RunConfig") -> None:
    """ConfigError when a run's model is English-only by its name (``*.en``) and its
    `language` another: on a run's whole configuration (options alone name the default
    model until merged); the model's own check at its load stays the last word."""
    asr = config.asr
    if asr.language not in (None, "en") and asr.model.strip().endswith(".en"):
        raise ConfigError("language", f"model {_show(asr.model)} is English-only: "
                                      "'language' must be 'en' or null")


@dataclass(frozen=True)
class ASRConfig:
    """Everything that determines a transcription run.

    `model` is resolved by `workbench.engine.asr.models.resolve_model`. `language` None lets Whisper
    detect it (English-only models always use ``en``). `vad_filter` skips non-speech with
    faster-whisper's Silero VAD before decoding (measured on the pyannote sample call:
    tiny.en WER 16.0 % with it, 18.5 % without; base 21.0 % with, 14.8 % without, but
    1.5x slower). `beam_size` 5 is faster-whisper's default. `cpu_threads` 0 lets
    CTranslate2 choose (``OMP_NUM_THREADS``, else 4). Word timestamps are always on.

    `cpu_threads` is 1 by default: on a 2-core machine more threads made tiny.en slower,
    not faster, alone as well as beside diarization (BENCHMARKS.md, "ASR threads": the
    5-minute input, ASR alone, RTF 0.089 on 1 thread, 0.143 on 2, 0.160 on 4; the whole
    pipeline 0.094 against 0.117 with CTranslate2's default of 4). Same words either way.
    """

    model: str = _option("tiny.en")
    compute_type: str = _option("int8", choices=COMPUTE_TYPES)
    device: str = _option("cpu", choices=ASR_DEVICES)
    language: Optional[str] = _option(None, max_len=32)
    vad_filter: bool = _option(True)
    beam_size: int = _option(5, lo=1, hi=64)
    cpu_threads: int = _option(1, lo=0, hi=1024)

    def __post_init__(self) -> None:
        _check_fields(self)
        if self.language is not None and self.language not in WHISPER_LANGUAGES:
            raise ConfigError("language", "'language' must be a Whisper language code such as "
                                          f"'en', 'de' or 'fr', or null (got {_show(self.language)})")

    @property
    def word_timestamps(self) -> bool:
        """Always True: words with times are what the merge with diarization needs."""
        return True

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form of the configuration."""
        return {**asdict(self), "word_timestamps": True}

    serialize = to_dict

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ASRConfig":
        """Inverse of `to_dict`; unknown names and bad values raise `ConfigError`."""
        data = dict(data)
        if data.pop("word_timestamps", True) is not True:
            raise ConfigError("asr.word_timestamps", "'word_timestamps' cannot be turned off")
        return build_config(cls, data, "asr", {})


@dataclass(frozen=True)
class DiarizationConfig:
    """Everything that determines a diarization run.

    Speaker-count fields are defaults that a call to `Diarizer` can override.
    When `pipeline_path` is set, the models and hyper-parameters come from that local
    pyannote pipeline (a folder with ``config.yaml`` or the file itself) and only the
    batch sizes, `device` and speaker counts below apply.
    """

    # Chosen on the development set of BENCHMARKS.md ("Diarization": the sample call, the
    # 5-minute benchmark input and 8 generated conversations) and checked on 16 other
    # conversations and 10 single-speaker recordings (python -m benchmarks diarization).
    # speaker_count "silhouette": the number of speakers is the dendrogram cut (average
    # linkage, cosine) with the best silhouette, at most the clusters still apart at
    # clustering_threshold. The last merge came at <= 0.109 with one voice and >= 0.396
    # with more; every count is right for 0.25-0.3 on dev, 0.15-0.35 held out. pyannote's
    # "threshold" rule (centroid linkage, 0.6, min_cluster_size 6: the earlier default)
    # must sit between a real speaker's spread (0.60) and two synthetic voices (0.67) and
    # loses a voice of short 5-voice conversations; so does min_cluster_size > 1 here.
    speaker_count: str = _option("silhouette", choices=SPEAKER_COUNT_RULES)
    # 0.3 since the AMI excerpts (issue #14; python -m benchmarks diarization --sets ami):
    # with the count of pyannote, AMI train / development 28.6 % / 22.7 % DER at 0.3,
    # 35.7 % / 48.0 % at 0.25 (dev00: 5 speakers for 2, trn09's main voice split); the
    # synthetic dev set holds (5.6 %, every count right; BENCHMARKS.md, "Real meetings").
    clustering_threshold: float = _option(0.3, lo=0.0, lo_open=True, hi=2.0)
    clustering_method: str = _option("average", choices=LINKAGE_METHODS)
    min_cluster_size: int = _option(1, lo=1, hi=100000)
    min_duration_off: float = _option(0.0, lo=0.0, hi=3600.0)
    # 0.2 (a 2 s step for 10 s windows) halves the embedding work of pyannote's 0.1
    # at least 0.01 (100 windows a window's length): at 1e-5 a run of 11 s did not end
    segmentation_step: float = _option(0.2, lo=0.01, hi=1.0)
    # segmentation_frontend "shared": segmentation-3.0's first layer (80 sinc filters, a
    # quarter of its time) runs once over the audio a batch of overlapping windows covers,
    # each window scaled by its own normalisation (same outputs to float rounding:
    # workbench.engine.diarization.segmentation); "window": pyannote's pass per window.
    segmentation_frontend: str = _option("shared", choices=SEGMENTATION_FRONTENDS)
    # Local speakers are cut into runs at silences >= split_min_gap s and into pieces of
    # about split_piece_duration s (SplittingSpeakerDiarization); runs of one local
    # speaker within split_threshold (cosine) are grouped to train the clustering, and
    # each run gets the speaker nearest its own embedding. split_threshold None turns
    # splitting off (pyannote's behaviour); split_piece_duration None cuts at silences only.
    # segmentation-3.0 gives two synthetic voices one local speaker, often with no pause
    # between them: cutting at silences only gives dev 11.5 % DER (98 s of confusion),
    # 1.5 s pieces 5.6 % (22 s). split_threshold 0.3 is the only value of 0.2-0.4 with
    # every dev count right (held out: 0.2-0.35; 0.2 over-splits the real call); 1 s
    # pieces do slightly better here (5.1 %), on synthetic voices only: 1.5 s stays.
    split_threshold: Optional[float] = _option(0.3, lo=0.0, lo_open=True, hi=2.0)
    split_min_gap: float = _option(0.1, lo=0.0, lo_open=True, hi=3600.0)
    split_piece_duration: Optional[float] = _option(1.5, lo=0.0, lo_open=True, hi=3600.0)
    embedding_exclude_overlap: bool = _option(True)  # as pyannote: overlapped frames left out
    # embedding_passes "window": CAM++ runs on each local speaker of each 10 s window
    # (each second of speech goes through it about 5 times at a 2 s step); "shared": only
    # every embedding_share-th window gets those passes and the runs of the windows
    # between pool the features of the nearest pass holding >= 90 % of their frames;
    # "once": the frame features of the whole recording are computed once, in blocks of
    # embedding_block s with embedding_context s of audio either side, and each run
    # pools the frames it covers (cheapest, but CAM++ sees ~2 s either side of a frame,
    # so other voices leak into a run's features: see BENCHMARKS.md, issue #15).
    # "shared" is the default since 2026-12-03: the same DER as "window" on the synthetic
    # dev set (6.0 %), the held-out set (4.2 %) and AMI train / development (27.5 % /
    # 23.1 %) for 12-17 % less CPU time (BENCHMARKS.md, "Diarization on both cores").
    # Used when local speakers are split into runs (split_threshold set); with splitting
    # off, pyannote's own embedding step runs.
    embedding_passes: str = _option("shared", choices=EMBEDDING_PASSES)
    embedding_share: int = _option(2, lo=1, hi=100)
    # "shared": a run pools the nearby pass holding most of its frames if that pass holds
    # at least this share of them (and one frame at least) and agrees with the run's local
    # speaker (intersection over union where the windows overlap) up to
    # embedding_share_agreement; otherwise its window gets passes. 0 / 0 since 2026-12-04
    # (0.9 / 0.8 before): 20-34 % fewer frames through CAM++ (AMI train, 5-minute input),
    # DER synthetic dev 6.0 -> 5.9 %, held-out 4.2 -> 4.2 %, sample call 5.9 %, AMI train /
    # development 27.5 / 23.1 % unchanged (BENCHMARKS.md, "Shared passes for more runs").
    embedding_share_coverage: float = _option(0.0, lo=0.0, hi=1.0)
    embedding_share_agreement: float = _option(0.0, lo=0.0, hi=1.0)
    embedding_block: float = _option(10.0, lo=0.5, hi=3600.0)
    embedding_context: float = _option(1.0, lo=0.0, hi=60.0)
    # What runs CAM++'s frame network: "onnx" (ONNX Runtime, exported once into the model
    # cache; same embeddings within ~4e-6) or "torch" (eager PyTorch). See
    # workbench.engine.diarization.runtime and BENCHMARKS.md, issue #15.
    embedding_runtime: str = _option("onnx", choices=EMBEDDING_RUNTIMES)
    # Threads that run CAM++'s passes at once ("window": windows, "shared": ranges of
    # windows; each thread on num_threads torch threads). The embeddings do not depend
    # on it. At most `usable_cpus` workers of either kind start (32 on 2 cores doubled
    # the CPU time); a run's provenance records the numbers that ran ("effective").
    embedding_workers: int = _option(1, lo=1, hi=64)
    # Threads that each run a part of every batch of segmentation windows. Diarization
    # alone on an idle 2-core machine: embedding_workers 2 and segmentation_workers 2 use
    # both cores (BENCHMARKS.md, "Diarization on both cores"); beside the ASR, 1 leaves
    # it its core.
    segmentation_workers: int = _option(1, lo=1, hi=64)
    # Options for real meetings, measured on the AMI excerpts (workbench.research.datasets
    # .ami; python -m benchmarks diarization --sets ami) and off by default: the best of
    # them on AMI train (onset 0.3, clustering_min_active 0.1, count_min_active 0.15:
    # 28.4 % DER vs 35.7 %) over-counted the development excerpts (14 speakers for 4:
    # 66.7 % vs 48.0 %) and cost the real phone call (pyannote sample) 6.7 points.
    # segmentation_onset: each local speaker is active where its probability (summed
    # over the powerset classes it is in) exceeds it, instead of where its class is the
    # most likely (None: pyannote's argmax). 0.3 on AMI train: missed 22.1 -> 16.7 % of
    # the speech, false alarm 1.4 -> 3.3 %; on the sample call false alarm 2.0 -> 7.0 %.
    # (below 1: a probability never exceeds 1, and every frame would be silence)
    segmentation_onset: Optional[float] = _option(None, lo=0.0, lo_open=True, hi=1.0,
                                                  hi_open=True)
    # powerset_count: the speakers of each frame are counted from segmentation-3.0's
    # powerset class probabilities (summed per number of speakers; the most likely number
    # wins) instead of from the binarized local speakers, and overlap (two speakers) wins
    # when its probability is within overlap_bias of the best: the argmax class is often
    # one voice where two talk at once, and missed speech in overlap is the largest part
    # of the error on AMI (see BENCHMARKS.md, "Real meetings"). AMI train: 27.5 % DER at
    # 0.3, 28.3 % at 0.1, 28.6 % counting binarized speakers, 26.4 % at 0.5 (but the
    # sample call 9.0 % at 0.5, 5.9 % at 0.3, 5.6 % binarized).
    powerset_count: bool = _option(True)
    overlap_bias: float = _option(0.3, lo=0.0, hi=1.0)
    # Share of a 10 s window a local speaker must speak alone for its embedding to form
    # the clusters (pyannote: 0.2, i.e. 2 s); count_min_active the same for the
    # embeddings that estimate the number of speakers (None: clustering_min_active).
    # AMI train (with onset 0.3): 0.1 / 0.15 gave 28.4 % DER; 0.1 alone inflated the
    # count (up to 12 speakers); the sample call got a third speaker from either.
    clustering_min_active: float = _option(0.2, lo=0.0, hi=1.0)
    count_min_active: Optional[float] = _option(None, lo=0.0, hi=1.0)
    # clustering_min_active when the number of speakers (or a minimum of 2 or more) is
    # given (chosen on AMI train): meeting participants who say a few words between
    # others never speak 2 s alone, and the given count then split the main voice. AMI
    # train, true count given: 31.3 % DER at 0.1, 43.8 % at 0.2 (50.3 % before the
    # forced cut of RunClustering), 35.7 % estimating; development: 30.0 % at 0.1,
    # 22.7 % at 0.2, 48.0 % estimating. Without a given count nothing changes.
    # 0.05 with powerset_count and clustering_threshold 0.3 (AMI train, true count given,
    # overlap_bias 0.1: 31.0 % at 0.05 or 0.1, 39.9 % at 0.2 or None). When the count
    # estimated without a given one is within it, the given count changes nothing
    # (RunClustering), so development (both counts estimated right) scores the same
    # either way. Since the estimate's clusters stay and the extra speakers keep their
    # own runs (RunClustering, 2026-12-03), AMI train with the true count: 27.9 % at
    # 0.05, 29.8 % at 0.1, 30.9 % at 0.2, 30.1 % None, 29.4 % at 0 (estimating: 27.5 %).
    given_count_min_active: Optional[float] = _option(0.05, lo=0.0, hi=1.0)
    # recount_extra_speakers: when no count is given and the output holds more speakers
    # than the clustering found (pyannote's reconstruction gives the frames that count
    # more speakers than there are clusters to an unclustered extra speaker), cluster
    # again with the output's number as a given count (segmentation and embeddings are
    # reused). AMI train 27.5 -> 26.3 % DER (trn03 5.7 -> 2.2 %, trn07 64.2 -> 53.8 %:
    # one cluster and an extra speaker each); development, the sample call and the
    # synthetic dev set never have an extra speaker (measured 2026-12-04).
    recount_extra_speakers: bool = _option(True)
    # fill_speech: frames the count leaves without a speaker get one where a second model,
    # pyannote/segmentation 2.x, hears speech (workbench.engine.diarization.voice_activity:
    # fill_speech_window-long windows every fill_speech_step s, local speakers above
    # fill_speech_threshold, averaged). Chosen on AMI train with the diarizer alone
    # (BENCHMARKS.md, "A second opinion on speech"), train / development: 26.28 / 23.08 %
    # off; 10 s every 2.5 s at 0.6 24.59 / 22.86 %; at 0.5 24.92 / 22.75 %; 10 s every 5 s
    # at 0.6 24.83 / 22.89 %; 5 s (the model's trained length) every 0.5 s at 0.6 24.57 /
    # 22.78 % for 2.5 times the work; 7.5 s every 1.5 s 24.54 / 22.86 %.
    fill_speech: bool = _option(True)
    fill_speech_threshold: float = _option(0.6, lo=0.0, lo_open=True, hi=1.0, hi_open=True)
    fill_speech_step: float = _option(2.5, lo=0.05, hi=60.0)
    fill_speech_window: float = _option(10.0, lo=1.0, hi=60.0)
    num_speakers: Optional[int] = _option(None, lo=1, hi=MAX_SPEAKERS)
    min_speakers: Optional[int] = _option(None, lo=1, hi=MAX_SPEAKERS)
    max_speakers: Optional[int] = _option(None, lo=1, hi=MAX_SPEAKERS)
    embedding_batch_size: int = _option(32, lo=1, hi=4096)
    segmentation_batch_size: int = _option(32, lo=1, hi=4096)
    device: str = _option("cpu", choices=DIARIZATION_DEVICES)
    # torch intra-op threads during a call (None: leave torch's setting). With 2 threads
    # on a 2-core machine that is busy elsewhere, CAM++ runs ~75x slower (threads spin at
    # barriers between its many small ops): 9.8 s instead of 0.13 s for a 5 s chunk.
    num_threads: Optional[int] = _option(1, lo=1, hi=1024)
    pipeline_path: Optional[str] = _option(None)

    def __post_init__(self) -> None:
        _check_fields(self)
        check_speaker_counts(self.num_speakers, self.min_speakers, self.max_speakers)
        if self.fill_speech and self.fill_speech_step > self.fill_speech_window:
            raise ConfigError("fill_speech_step", "'fill_speech_step' "
                              f"({_show(self.fill_speech_step)} s) must be at most "
                              f"'fill_speech_window' ({_show(self.fill_speech_window)} s)")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form of the configuration."""
        return asdict(self)

    serialize = to_dict

    def pipeline_parameters(self) -> dict[str, Any]:
        """The hyper-parameters of the bundled pyannote pipeline (for ``instantiate``)."""
        return {
            "segmentation": {"min_duration_off": self.min_duration_off},
            "clustering": {
                "method": self.clustering_method,
                "min_cluster_size": self.min_cluster_size,
                "threshold": self.clustering_threshold,
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DiarizationConfig":
        """Inverse of `to_dict`; unknown names and bad values raise `ConfigError`."""
        return build_config(cls, data, "diarization", {})


@dataclass(frozen=True)
class MergeConfig:
    """How words meet speakers: nearest-turn tolerance and segment splitting."""

    tolerance: float = _option(0.5, lo=0.0, hi=3600.0)
    max_pause: float = _option(1.0, lo=0.0, lo_open=True, hi=3600.0)
    max_segment_duration: float = _option(30.0, lo=0.0, lo_open=True, hi=86400.0)

    def __post_init__(self) -> None:
        _check_fields(self)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MergeConfig":
        return build_config(cls, data, "merge", {})


# Flat option names (the recording protocol's `start` fields, the command line's flags,
# REST run bodies) -> (section, field). Every name here is also valid nested.
FLAT_OPTIONS: dict[str, tuple[str, str]] = {
    "asr_model": ("asr", "model"),
    "language": ("asr", "language"),
    "vad_filter": ("asr", "vad_filter"),
    "beam_size": ("asr", "beam_size"),
    "compute_type": ("asr", "compute_type"),
    "num_speakers": ("diarization", "num_speakers"),
    "min_speakers": ("diarization", "min_speakers"),
    "max_speakers": ("diarization", "max_speakers"),
    "clustering_threshold": ("diarization", "clustering_threshold"),
    "min_duration_off": ("diarization", "min_duration_off"),
    "pipeline_path": ("diarization", "pipeline_path"),
}

_SECTIONS: dict[str, type] = {"asr": ASRConfig, "diarization": DiarizationConfig,
                              "merge": MergeConfig}
_SWITCHES = ("transcribe", "diarize")


def flat_option_type(name: str) -> type:
    """bool, int, float or str: the type of the flat option ``name`` (for CLI flags)."""
    section, attr = FLAT_OPTIONS[name]
    cls = _SECTIONS[section]
    return _field_kind(cls, next(f for f in fields(cls) if f.name == attr))[0]


def flat_option_default(name: str) -> Any:
    """The default value of the flat option ``name``."""
    section, attr = FLAT_OPTIONS[name]
    f = next(f for f in fields(_SECTIONS[section]) if f.name == attr)
    return None if f.default is MISSING else f.default


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run: ASR, diarization and merge settings.

    ``diarize=False`` gives ASR alone (a baseline); ``transcribe=False`` gives
    diarization alone.
    """

    asr: ASRConfig = field(default_factory=ASRConfig)
    diarization: DiarizationConfig = field(default_factory=DiarizationConfig)
    merge: MergeConfig = field(default_factory=MergeConfig)
    transcribe: bool = True
    diarize: bool = True

    def __post_init__(self) -> None:
        for name in _SWITCHES:
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(name, f"'{name}' must be true or false "
                                        f"(got {_show(getattr(self, name))})")
        if not (self.transcribe or self.diarize):
            raise ConfigError("transcribe", "a run must transcribe, diarize or both")

    @classmethod
    def from_dict(cls, data: Optional[Mapping[str, Any]] = None) -> "RunConfig":
        """Build from nested sections (``asr``, ``diarization``, ``merge``) and/or the flat
        options of `FLAT_OPTIONS`; ``transcribe``/``diarize`` switch a half off. Unknown
        names, wrong types and values out of range raise `ConfigError` (a ValueError)
        naming the option as it was given."""
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(None, f"a run configuration must be a JSON object "
                                    f"(got {_show(data)})")
        sections: dict[str, dict[str, Any]] = {}
        labels: dict[str, dict[str, str]] = {name: {} for name in _SECTIONS}
        for name in _SECTIONS:
            given = data.get(name)
            if given is None:
                sections[name] = {}
            elif not isinstance(given, Mapping):
                raise ConfigError(name, f"'{name}' must be a JSON object (got {_show(given)})")
            else:
                sections[name] = dict(given)
        switches: dict[str, Any] = {}
        unknown = []
        for key, value in data.items():
            if key in _SECTIONS:
                continue
            if key in _SWITCHES:
                switches[key] = value
            elif key in FLAT_OPTIONS:
                section, attr = FLAT_OPTIONS[key]
                if attr in sections[section] and sections[section][attr] != value:
                    raise ConfigError(key, f"'{key}' and '{section}.{attr}' disagree")
                sections[section][attr] = value
                labels[section][attr] = key
            else:
                unknown.append(str(key))
        if unknown:
            hint = (" ('pipeline' is the server's switch, not a pipeline option)"
                    if "pipeline" in unknown else "")
            raise ConfigError(sorted(unknown)[0],
                              f"unknown option(s): {', '.join(sorted(unknown))}{hint}; known: "
                              f"{', '.join([*FLAT_OPTIONS, *_SWITCHES, *_SECTIONS])}")
        asr = dict(sections["asr"])
        if asr.pop("word_timestamps", True) is not True:
            raise ConfigError("asr.word_timestamps", "'word_timestamps' cannot be turned off")
        return cls(asr=build_config(ASRConfig, asr, "asr", labels["asr"]),
                   diarization=build_config(DiarizationConfig, sections["diarization"], "diarization",
                                      labels["diarization"]),
                   merge=build_config(MergeConfig, sections["merge"], "merge", labels["merge"]),
                   **switches)

    def to_dict(self) -> dict[str, Any]:
        """The nested plain-JSON form (what ``transcript.json`` stores as ``options``)."""
        return {"asr": self.asr.to_dict(), "diarization": self.diarization.to_dict(),
                "merge": self.merge.to_dict(), "transcribe": self.transcribe,
                "diarize": self.diarize}

    serialize = to_dict

    def key(self) -> str:
        """A short stable hash of the configuration (cache keys, run labels)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]
