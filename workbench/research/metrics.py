"""Evaluation metrics for transcription and diarization, and readers for reference files.

- Transcription: word error rate (`word_error_rate`, jiwer) after `normalize_text`, and
  the concatenated minimum-permutation WER of speaker-attributed transcripts (`cp_wer`,
  meeteval).
- Diarization: diarization error rate with its components (`diarization_error`) and
  Jaccard error rate (`jaccard_error_rate`), both computed by pyannote.metrics (JER with
  dscore's pairing of speakers, the one with the smallest JER).
- Reference files: RTTM (`load_rttm`), STM (`load_stm`, `stm_text`, `stm_by_speaker`) and
  UEM (`load_uem`).

Usage::

    ref = stm_text("sample.stm")
    word_error_rate(ref, asr_result.text).wer          # 0.17
    diarization_error(load_rttm("sample.rttm")["sample"], diarization.annotation).der
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping, NamedTuple, Optional, Union, cast

import jiwer
import numpy as np
from meeteval.wer import cp_word_error_rate
from pyannote.core import Annotation, Segment, Timeline
from pyannote.metrics.diarization import DiarizationErrorRate, JaccardErrorRate

from workbench.engine.formats import PathLike, read_rttm, read_stm, read_uem, to_annotation
from workbench.engine.transcript import Turn, replace_non_word

__all__ = [
    "CPWERResult",
    "DERResult",
    "JERResult",
    "STMEntry",
    "WERResult",
    "as_annotation",
    "concatenated_minimum_permutation_wer",
    "cp_wer",
    "diarization_error",
    "jaccard_error_rate",
    "load_rttm",
    "load_stm",
    "load_uem",
    "normalize_text",
    "speakers_within",
    "stm_by_speaker",
    "stm_text",
    "word_error_rate",
]


# --------------------------------------------------------------------------- text

_APOSTROPHES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u02bc": "'", "\u0060": "'", "\u00b4": "'"})
_HYPHENS = re.compile(r"[\-\u2010\u2011\u2012\u2013\u2014\u2015\u2212]")
# Placeholders (control characters never left in normalised text) protect the marks
# that are kept while every other punctuation mark or symbol becomes a space.
_KEEP_APOSTROPHE, _KEEP_POINT, _KEEP_COMMA = "\x01", "\x02", "\x03"
_INNER_APOSTROPHE = re.compile(r"(?<=\w)'(?=\w)")
_DECIMAL_POINT = re.compile(r"(?<=\d)\.(?=\d)")
_THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d)")
_SPACES = re.compile(r"\s+")
_JOINER = re.compile(r"[\u200c\u200d]")
# Scripts written without spaces between words (Thai, Lao, Burmese, Khmer, kana, CJK
# ideographs): each character is a word, so their "WER" is the character error rate.
_UNSPACED = re.compile("[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u31f0-\u31ff"
                       "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f"
                       "\U00020000-\U0003134f]")


def _characters_apart(text: str) -> str:
    """`text` with a space around each character of a script written without spaces
    (`_UNSPACED`), its combining marks (Thai vowel signs and tones) kept with it."""
    if not _UNSPACED.search(text):
        return text
    out, within = [], False
    for ch in text:
        if unicodedata.category(ch)[0] == "M":
            out.append(ch)
            continue
        unspaced = _UNSPACED.match(ch) is not None
        if unspaced or within:
            out.append(" ")
        out.append(ch)
        within = unspaced
    return "".join(out)


def _stray_joiner(match: "re.Match[str]") -> str:
    """A zero-width (non-)joiner stays between two letters, marks or digits, or after a
    mark (a virama: Devanagari half forms, a Malayalam chillu ends a word so), else it
    goes."""
    text, i = match.string, match.start()
    before = unicodedata.category(text[i - 1])[0] if i > 0 else ""
    after = unicodedata.category(text[i + 1])[0] if i + 1 < len(text) else ""
    keep = before in ("L", "M", "N") and (after in ("L", "M", "N") or before == "M")
    return match.group() if keep else ""


def normalize_text(text: str) -> str:
    """Normalise text for word error rates.

    The steps, in order:

    1. Typographic apostrophes (``’ ‘ ʼ`` and backtick/acute accent) become ``'``.
    2. Unicode NFKC, then lower case.
    3. Hyphens and dashes (``- ‐ ‑ ‒ – — ― −``) become spaces: ``well-known`` counts as
       two words, ``well known``.
    4. Punctuation and symbols become spaces, except an apostrophe between two word
       characters (``didn't``, ``o'clock`` and ``sheila's`` are kept whole; the quotes
       in ``'hello'`` and the apostrophe of ``dogs'`` go) and a ``.`` or ``,`` between two
       digits (``3.5``, ``1,000``). So ``U.S.`` becomes ``u s`` and ``50%`` becomes ``50``.
       Combining marks (Devanagari and Thai vowel signs, Arabic diacritics) are no
       punctuation: they stay in their word.
    5. Numbers stay as they are written: ``20`` and ``twenty`` are different words.
    6. In scripts written without spaces between words (Chinese, Japanese kana, Thai,
       Lao, Burmese, Khmer) every character is a word, with its combining marks: the
       error rate there is the character error rate (``今天很好`` is four words; Korean,
       written with spaces, keeps its words).
    7. Runs of whitespace collapse to one space; leading/trailing space is removed.

    The same function is applied to references and hypotheses by `word_error_rate` and
    `cp_wer`, so scores compare wording, not casing or punctuation style.
    """
    # the apostrophes first: NFKC makes an acute accent a space and a combining mark
    text = unicodedata.normalize("NFKC", text.translate(_APOSTROPHES)).lower()
    text = _HYPHENS.sub(" ", text)
    text = _INNER_APOSTROPHE.sub(_KEEP_APOSTROPHE, text)
    text = _DECIMAL_POINT.sub(_KEEP_POINT, text)
    text = _THOUSANDS_COMMA.sub(_KEEP_COMMA, text)
    # (zero-width joiners and non-joiners are part of Persian and Indic words)
    text = replace_non_word(text, " ", keep=r"\s\x01\x02\x03\u200c\u200d")
    text = _JOINER.sub(_stray_joiner, text)  # one that joins no two letters is no word
    text = text.replace(_KEEP_APOSTROPHE, "'").replace(_KEEP_POINT, ".").replace(_KEEP_COMMA, ",")
    return _SPACES.sub(" ", _characters_apart(text)).strip()


def _ratio(errors: int, length: int) -> float:
    """errors / length, defined as 0 for no errors over an empty reference and inf otherwise."""
    if length:
        return errors / length
    return 0.0 if errors == 0 else math.inf


@dataclass(frozen=True)
class WERResult:
    """Word error rate and its alignment counts.

    ``wer = (substitutions + deletions + insertions) / reference_words``; with an empty
    reference it is 0 for an empty hypothesis and ``inf`` otherwise.
    """

    wer: float
    substitutions: int
    deletions: int
    insertions: int
    hits: int
    reference_words: int
    hypothesis_words: int
    normalized: bool

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    def serialize(self) -> dict[str, Any]:
        return asdict(self)


def word_error_rate(reference: str, hypothesis: str, *, normalize: bool = True) -> WERResult:
    """Word error rate of `hypothesis` against `reference` (jiwer's alignment).

    Both texts go through `normalize_text` first unless `normalize` is False, in which
    case they are only split on whitespace.
    """
    ref = normalize_text(reference) if normalize else " ".join(reference.split())
    hyp = normalize_text(hypothesis) if normalize else " ".join(hypothesis.split())
    ref_words, hyp_words = len(ref.split()), len(hyp.split())
    if ref_words == 0 or hyp_words == 0:
        # jiwer refuses empty references; the counts are plain here.
        return WERResult(
            wer=_ratio(hyp_words, ref_words) if ref_words == 0 else 1.0,
            substitutions=0,
            deletions=ref_words,
            insertions=hyp_words if ref_words == 0 else 0,
            hits=0,
            reference_words=ref_words,
            hypothesis_words=hyp_words,
            normalized=normalize,
        )
    out = jiwer.process_words(ref, hyp)
    return WERResult(
        wer=float(out.wer),
        substitutions=int(out.substitutions),
        deletions=int(out.deletions),
        insertions=int(out.insertions),
        hits=int(out.hits),
        reference_words=ref_words,
        hypothesis_words=hyp_words,
        normalized=normalize,
    )


@dataclass(frozen=True)
class CPWERResult:
    """Concatenated minimum-permutation WER (cpWER) and its counts.

    `assignment` pairs reference and hypothesis speakers as chosen by the minimum-cost
    permutation (None on one side for a missed or extra speaker).
    """

    cpwer: float
    errors: int
    reference_words: int
    substitutions: int
    deletions: int
    insertions: int
    missed_speakers: int
    false_alarm_speakers: int
    scored_speakers: int
    assignment: tuple[tuple[Optional[str], Optional[str]], ...]
    normalized: bool

    def serialize(self) -> dict[str, Any]:
        data = asdict(self)
        data["assignment"] = [list(pair) for pair in self.assignment]
        return data


def concatenated_minimum_permutation_wer(
    reference_by_speaker: Mapping[str, str],
    hypothesis_by_speaker: Mapping[str, str],
    *,
    normalize: bool = True,
) -> CPWERResult:
    """cpWER: each speaker's words concatenated, speakers paired to minimise the errors.

    Texts of each speaker are passed in time order (see `stm_by_speaker`); they are
    normalised with `normalize_text` unless `normalize` is False. Computed by meeteval's
    `cp_word_error_rate`; an extra or missing speaker counts all its words as insertions
    or deletions.
    """
    prepare = normalize_text if normalize else (lambda text: " ".join(text.split()))
    ref = {str(k): prepare(v) for k, v in reference_by_speaker.items()}
    hyp = {str(k): prepare(v) for k, v in hypothesis_by_speaker.items()}
    # Plain strings have no timestamps: sorting off says so and silences meeteval's
    # "Assuming sort=False" log message.
    out = cp_word_error_rate(ref, hyp, reference_sort=False, hypothesis_sort=False)
    return CPWERResult(
        cpwer=_ratio(int(out.errors), int(out.length)),
        errors=int(out.errors),
        reference_words=int(out.length),
        substitutions=int(out.substitutions),
        deletions=int(out.deletions),
        insertions=int(out.insertions),
        missed_speakers=int(out.missed_speaker),
        false_alarm_speakers=int(out.falarm_speaker),
        scored_speakers=int(out.scored_speaker),
        assignment=tuple(tuple(pair) for pair in out.assignment),
        normalized=normalize,
    )


cp_wer = concatenated_minimum_permutation_wer

# --------------------------------------------------------------------------- diarization

Turns = Union[Annotation, Iterable[Turn]]


as_annotation = to_annotation
"""A pyannote `Annotation` from an `Annotation` (returned as is) or `Turn`s."""


def _as_uem(uem: Union[Timeline, Segment, None], reference: Annotation, hypothesis: Annotation) -> Timeline:
    """The evaluated region; by default the union of both annotations' extents.

    That default is what pyannote.metrics would approximate itself (with a warning).
    """
    if isinstance(uem, Timeline):
        return uem
    if isinstance(uem, Segment):
        return Timeline([uem], uri=reference.uri)
    extent = reference.get_timeline().extent() | hypothesis.get_timeline().extent()
    return Timeline([extent] if extent else [], uri=reference.uri)


@dataclass(frozen=True)
class DERResult:
    """Diarization error rate and its components, in seconds of reference time.

    ``der = (missed + false_alarm + confusion) / total``; `total` is the reference
    speech (overlap counted once per speaker) inside the evaluated region.
    """

    der: float
    missed: float
    false_alarm: float
    confusion: float
    correct: float
    total: float
    collar: float
    skip_overlap: bool

    def serialize(self) -> dict[str, Any]:
        return asdict(self)


def _merged(reference: Turns, hypothesis: Turns) -> tuple[Annotation, Annotation]:
    """Both sides as annotations whose turns of one speaker never overlap (pyannote counts
    each track: a speaker's overlapping or repeated turns were speech counted twice, and
    missed; md-eval and dscore merge them)."""
    ref = as_annotation(reference).support()
    return ref, as_annotation(hypothesis, uri=ref.uri).support()


def diarization_error(
    reference: Turns,
    hypothesis: Turns,
    uem: Union[Timeline, Segment, None] = None,
    collar: float = 0.0,
    skip_overlap: bool = False,
) -> DERResult:
    """Diarization error rate of `hypothesis` against `reference` (pyannote.metrics).

    Speakers are mapped one-to-one to maximise overlap, so labels need not match.
    `uem` restricts evaluation to a region (default: from the earliest start to the
    latest end in either annotation).
    `collar` follows pyannote.metrics: the *total* width of the band removed around each
    reference boundary, half on each side (md-eval's ``-c 0.25`` equals ``collar=0.5``).
    """
    ref, hyp = _merged(reference, hypothesis)
    metric = DiarizationErrorRate(collar=collar, skip_overlap=skip_overlap)
    parts = metric(ref, hyp, uem=_as_uem(uem, ref, hyp), detailed=True)
    total = float(parts["total"])
    missed = float(parts["missed detection"])
    false_alarm = float(parts["false alarm"])
    confusion = float(parts["confusion"])
    return DERResult(
        der=_ratio_seconds(missed + false_alarm + confusion, total),
        missed=missed,
        false_alarm=false_alarm,
        confusion=confusion,
        correct=float(parts["correct"]),
        total=total,
        collar=collar,
        skip_overlap=skip_overlap,
    )


def _ratio_seconds(errors: float, total: float) -> float:
    if total > 0:
        return errors / total
    return 0.0 if errors == 0 else math.inf


class _JER(JaccardErrorRate):
    """pyannote.metrics' JER with dscore's pairing: reference and hypothesis speakers
    paired to minimise the summed JER (pyannote pairs them by overlap time, which can
    leave a minor speaker unpaired and give a higher figure than dscore's)."""

    def optimal_mapping(self, hypothesis: Annotation, reference: Annotation,  # type: ignore[override]
                        uem: Optional[Timeline] = None) -> dict[Any, Any]:
        """Reference label -> hypothesis label (the arguments as `compute_components`
        passes them)."""
        from scipy.optimize import linear_sum_assignment

        refs, hyps = list(reference.labels()), list(hypothesis.labels())
        if not refs or not hyps:
            return {}
        cost = np.ones((len(refs), len(hyps)))
        for i, ref in enumerate(refs):
            r = reference.label_timeline(ref)
            for j, hyp in enumerate(hyps):
                h = hypothesis.label_timeline(hyp)
                union = r.union(h).support().duration()
                if union > 0:
                    cost[i, j] = 1.0 - r.crop(h).duration() / union
        rows, cols = linear_sum_assignment(cost)
        return {refs[i]: hyps[j] for i, j in zip(rows, cols)}


@dataclass(frozen=True)
class JERResult:
    """Jaccard error rate: the mean over reference speakers of 1 - IoU with their match."""

    jer: float
    speaker_count: int
    collar: float
    skip_overlap: bool

    def serialize(self) -> dict[str, Any]:
        return asdict(self)


def jaccard_error_rate(
    reference: Turns,
    hypothesis: Turns,
    uem: Union[Timeline, Segment, None] = None,
    collar: float = 0.0,
    skip_overlap: bool = False,
) -> JERResult:
    """Jaccard error rate (DIHARD II) of `hypothesis` against `reference`: pyannote.metrics'
    computation with dscore's pairing of speakers (the one that minimises the JER).

    Arguments as in `diarization_error` (dscore applies no collar and scores overlap;
    with a collar or `skip_overlap` this is pyannote's JER on what they leave).
    """
    ref, hyp = _merged(reference, hypothesis)
    metric = _JER(collar=collar, skip_overlap=skip_overlap)
    parts = metric(ref, hyp, uem=_as_uem(uem, ref, hyp), detailed=True)
    count = int(parts["speaker count"])
    if count:
        jer = float(parts["speaker error"]) / count
    else:  # no reference speaker: any hypothesis speech is all error (as pyannote.metrics)
        jer = 1.0 if hyp.crop(_as_uem(uem, ref, hyp)).get_timeline().duration() > 0 else 0.0
    return JERResult(jer=jer, speaker_count=count, collar=collar, skip_overlap=skip_overlap)


# --------------------------------------------------------------------------- readers


def speakers_within(annotation: Turns,
                    uem: Union[Timeline, Segment, None] = None) -> int:
    """How many speakers `annotation` (or turns) has inside `uem` (all of it without
    one): how every speaker count is compared (`evaluation.score`, the benchmarks), a
    speaker who only speaks outside the scored region not counted on either side."""
    annotation = as_annotation(annotation)
    return len((annotation if uem is None else annotation.crop(uem)).labels())


def load_rttm(path: PathLike) -> dict[str, Annotation]:
    """Read ``SPEAKER`` lines of an RTTM file into one `Annotation` per file id (uri)
    (see `workbench.engine.formats.read_rttm`)."""
    turns: dict[str, list[Turn]] = {}
    for uri, turn in read_rttm(path):
        turns.setdefault(uri, []).append(turn)
    return {uri: to_annotation(mine, uri=uri) for uri, mine in turns.items()}


class STMEntry(NamedTuple):
    """One STM segment: who spoke from `start` to `end` (seconds) and what was said."""

    speaker: str
    start: float
    end: float
    text: str


def load_stm(path: PathLike, uri: Optional[str] = None) -> list[STMEntry]:
    """Read an STM file (``uri channel speaker start end [<label>] text``) in time order.

    Only segments of `uri` are kept when it is given. An optional ``<...>`` label field
    after the times is skipped; segments whose text is ``ignore_time_segment_in_scoring``
    are dropped.
    """
    # (an STM line always names its speaker)
    entries = [STMEntry(cast(str, segment.speaker), segment.start, segment.end, segment.text)
               for u, segment in read_stm(path) if uri is None or u == uri]
    entries.sort(key=lambda entry: (entry.start, entry.end))
    return entries


def stm_text(path: PathLike, uri: Optional[str] = None) -> str:
    """Reference text of an STM file: all segments joined in time order."""
    return " ".join(entry.text for entry in load_stm(path, uri) if entry.text)


def stm_by_speaker(path: PathLike, uri: Optional[str] = None) -> dict[str, str]:
    """Reference text per speaker (segments in time order), ready for `cp_wer`."""
    texts: dict[str, list[str]] = {}
    for entry in load_stm(path, uri):
        texts.setdefault(entry.speaker, [])
        if entry.text:
            texts[entry.speaker].append(entry.text)
    return {speaker: " ".join(parts) for speaker, parts in texts.items()}


def load_uem(path: PathLike) -> dict[str, Timeline]:
    """Read a UEM file (``uri channel start end``) into one `Timeline` per uri."""
    timelines: dict[str, Timeline] = {}
    for uri, (start, end) in read_uem(path):
        timelines.setdefault(uri, Timeline(uri=uri)).add(Segment(start, end))
    return timelines
