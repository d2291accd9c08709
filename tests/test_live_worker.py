"""The live worker's pieces without models: its streaming decoders against the engine's
file decoder on real audio in every container, and the time shift of a live session that
starts after earlier parts of a recording."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from server.live_worker import StreamDecoder, shift_event, shift_transcript
from workbench.engine.audio import AudioDecodeError, InputFormat, decode_file
from workbench.engine.transcript import Transcript, TranscriptSegment, Turn, Word

from .test_recording_functional import correlation


def stream_decode(data: bytes, container: str | None, chunk: int = 997, rate: int = 16000,
                  channels: int = 1) -> np.ndarray:
    out: list[np.ndarray] = []
    decoder = StreamDecoder(out.append, container, rate, channels)
    for i in range(0, len(data), chunk):
        decoder.feed(data[i:i + chunk])
    decoder.close()
    return np.concatenate(out) if out else np.zeros(0, np.float32)


@pytest.mark.parametrize("name,container", [("speech.wav", None), ("speech.wav", "wav"),
                                            ("speech.pcm", "pcm_s16le")])
def test_pcm_and_wav_decode_as_the_engine_does(speech_dir: Path, name: str,
                                               container: str | None) -> None:
    """44.1 kHz stereo WAV (detected or declared) and 16 kHz PCM, fed in odd-sized
    chunks, give the samples the engine decodes from the whole file."""
    path = speech_dir / name
    fmt = InputFormat(container, 16000, 1) if container == "pcm_s16le" else None
    expected = decode_file(path, fmt)
    got = stream_decode(path.read_bytes(), container)
    assert got.dtype == np.float32 and abs(len(got) - len(expected)) <= 1
    n = min(len(got), len(expected))
    np.testing.assert_allclose(got[:n], expected[:n], atol=2e-4)


@pytest.mark.parametrize("name,container", [("speech.webm", "webm"), ("speech.ogg", "ogg"),
                                            ("speech.mp3", "mp3"), ("speech.flac", "flac"),
                                            ("speech.webm", None)])
def test_compressed_streams_decode_through_ffmpeg_as_they_come(
        speech_dir: Path, reference_audio: np.ndarray, name: str, container: str | None) -> None:
    got = stream_decode((speech_dir / name).read_bytes(), container, chunk=4000)
    assert abs(len(got) - len(reference_audio)) < 0.1 * 16000
    assert correlation(got, reference_audio) > 0.9


def test_bytes_that_are_not_the_declared_container_are_refused() -> None:
    noise = np.random.default_rng(1).integers(0, 256, 40000, dtype=np.uint8).tobytes()
    with pytest.raises(AudioDecodeError):
        stream_decode(noise, "webm", chunk=4000)
    with pytest.raises(AudioDecodeError):
        stream_decode(noise, None)  # nothing recognisable to detect


def test_times_and_indexes_shift_for_a_later_live_session() -> None:
    final = {"type": "transcript_final", "text": "hi", "lag_seconds": 0.5, "at": 2.0,
             "words": [{"index": 0, "word": " hi", "start": 1.0, "end": 1.5,
                        "probability": 0.9, "speaker": None}]}
    shifted = shift_event(final, 10.0, 7)
    assert shifted["at"] == 12.0 and shifted["lag_seconds"] == 0.5
    assert shifted["words"] == [{"index": 7, "word": " hi", "start": 11.0, "end": 11.5,
                                 "probability": 0.9, "speaker": None}]
    update = {"type": "diarization_update", "turns": [{"start": 0.0, "end": 1.0,
                                                       "speaker": "SPEAKER_00"}],
              "final_until": 1.0, "tentative": [], "speakers": 1, "lag_seconds": 1.0, "at": 2.0}
    moved = shift_event(update, 10.0, 7)
    assert (moved["turns"][0]["start"], moved["final_until"], moved["at"]) == (10.0, 11.0, 12.0)
    assert shift_event(final, 0.0, 0) is final and final["words"][0]["index"] == 0

    w = Word(1.0, 1.5, " hi", 0.9, "SPEAKER_00")
    t = Transcript([TranscriptSegment(1.0, 1.5, "SPEAKER_00", "hi", (w,))],
                   [Turn(0.5, 2.0, "SPEAKER_00")], 3.0)
    s = shift_transcript(t, 10.0)
    assert s.duration == 13.0 and s.turns == [Turn(10.5, 12.0, "SPEAKER_00")]
    assert s.segments[0].start == 11.0 and s.words == [Word(11.0, 11.5, " hi", 0.9,
                                                            "SPEAKER_00")]


def test_a_failing_consumer_ends_ffmpeg_decoding_instead_of_hanging(speech_dir: Path) -> None:
    """When what takes the samples fails, the reader stopped draining FFmpeg's output;
    FFmpeg then stopped reading, and the next write blocked for ever (the worker never
    reported its error)."""
    import threading

    def refuse(samples: np.ndarray) -> None:
        raise ValueError("the session cannot take samples")

    data = (speech_dir / "speech.webm").read_bytes() * 8
    decoder = StreamDecoder(refuse, "webm", 16000, 1)
    outcome: list[BaseException] = []

    def feed_all() -> None:
        try:
            for i in range(0, len(data), 4000):
                decoder.feed(data[i:i + 4000])
            decoder.close()
        except BaseException as exc:  # noqa: BLE001 - what the worker reports
            outcome.append(exc)

    thread = threading.Thread(target=feed_all, daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "feeding hung"
    assert outcome and "the session cannot take samples" in str(outcome[0])
