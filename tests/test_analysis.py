"""Analysis of a session: tables, annotation, speaker statistics and plots."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

from workbench.notebook.analysis import from_transcript, load_session, speaker_stats
from workbench.engine.audio import write_wav
from workbench.notebook.client import Client
from workbench.notebook.local_server import LocalServer
from workbench.engine.transcript import (Transcript, Turn, Word, assign_speakers, build_segments,
                                         served_runs)


def make_transcript() -> Transcript:
    turns = [Turn(0.0, 4.0, "A"), Turn(3.0, 6.0, "B"), Turn(7.0, 9.0, "A")]
    exclusive = [Turn(0.0, 3.0, "A"), Turn(3.0, 6.0, "B"), Turn(7.0, 9.0, "A")]
    words = [Word(0.5, 1.0, " one"), Word(1.2, 1.6, " two"), Word(3.5, 4.0, " three"),
             Word(7.5, 8.0, " four")]
    return Transcript(build_segments(assign_speakers(words, exclusive)), turns, 10.0)


def test_speaker_stats_by_hand() -> None:
    stats = speaker_stats(make_transcript())
    assert stats.loc["A", "talk_time"] == pytest.approx(6.0)   # 0-4 and 7-9
    assert stats.loc["B", "talk_time"] == pytest.approx(3.0)
    assert stats.loc["A", "turns"] == 2 and stats.loc["B", "turns"] == 1
    assert stats.loc["A", "overlap"] == pytest.approx(1.0)     # 3-4 with B
    assert stats.loc["B", "overlap"] == pytest.approx(1.0)
    assert stats.loc["A", "words"] == 3 and stats.loc["B", "words"] == 1
    assert stats.loc["A", "words_per_minute"] == pytest.approx(30.0)
    assert stats["share"].sum() == pytest.approx(1.0)


def test_offline_session_tables_and_plot(tmp_path: Path) -> None:
    audio = (0.1 * np.sin(np.arange(16000 * 10) * 0.05)).astype(np.float32)
    wav = write_wav(tmp_path / "a.wav", audio)
    data = from_transcript(wav, make_transcript())
    assert data.duration == pytest.approx(10.0)
    assert list(data.segments["speaker"]) == ["A", "B", "A"]
    assert list(data.words["word"]) == ["one", "two", "three", "four"]
    assert data.annotation.labels() == ["A", "B"]
    fig = data.plot(0, 10)
    assert len(fig.axes) >= 3
    fig.savefig(tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 10000
    assert "speaker" in data._repr_html_()


def test_load_session_over_rest_and_from_data_dir(server: LocalServer, speech_dir: Path,
                                                  tmp_path: Path) -> None:
    with Client(server) as client:
        rec = client.record(speech_dir / "speech.wav")
        remote = load_session(rec.session_id, server=client, cache_dir=tmp_path)
        # a run the session does not have was "no completed transcript yet"
        with pytest.raises(KeyError, match=f"no run nosuch in session {rec.session_id}"):
            load_session(rec.session_id, server=client, run="nosuch", cache_dir=tmp_path)
    assert remote.sample_rate == 16000 and remote.duration > 5
    assert remote.transcript is None  # this server makes renditions only
    assert len(remote.runs) == 1
    local = load_session(rec.session_id, data_dir=server.data_dir)
    np.testing.assert_allclose(local.audio, remote.audio)
    with pytest.raises(ValueError, match="no completed transcript"):
        local.segments


def test_load_session_from_data_dir_prefers_the_refined_run(tmp_path: Path) -> None:
    """Read from the data folder, a live run saved after the refined run (its worker
    flushing) was taken for the session's result; the server serves the refined one."""
    import json
    import os

    directory = tmp_path / "sessions" / "S"
    write_wav(directory / "audio.wav", np.zeros(16000 * 10, np.float32))
    refined, live = make_transcript(), make_transcript()
    refined.config, live.config = {"kind": "refined"}, {"kind": "live"}
    live.segments = live.segments[:1]
    for name, transcript, mtime in (("R", refined, 1000), ("L", live, 2000)):
        (directory / "runs" / name).mkdir(parents=True)
        path = directory / "runs" / name / "transcript.json"
        path.write_text(json.dumps(transcript.serialize()))
        os.utime(path, (mtime, mtime))
    session = load_session("S", data_dir=tmp_path)
    assert session.transcript is not None and len(session.transcript.segments) == 3
    assert len(load_session("S", data_dir=tmp_path, run="L").transcript.segments) == 1  # type: ignore[union-attr]


def test_the_spectrogram_is_drawn_where_the_plot_starts(tmp_path: Path) -> None:
    """With start > 0 the spectrogram (a QuadMesh, no extent to shift) was drawn from 0 to
    end - start while the shared time axis showed start to end."""
    from matplotlib.collections import QuadMesh

    audio = (0.1 * np.sin(np.arange(16000 * 20) * 0.05)).astype(np.float32)
    data = from_transcript(write_wav(tmp_path / "a.wav", audio), make_transcript())
    fig = data.plot(10, 14)
    meshes = [c for c in fig.axes[1].collections if isinstance(c, QuadMesh)]
    assert len(meshes) == 1
    x = meshes[0].get_coordinates()[..., 0]
    assert x.min() == pytest.approx(10.0, abs=0.01) and x.max() == pytest.approx(14.0, abs=0.02)
    assert fig.axes[1].get_xlim() == pytest.approx((10.0, 14.0))


def test_load_session_from_data_dir_picks_runs_as_the_server_and_refuses_unknown_ones(
        tmp_path: Path) -> None:
    """From a data folder an unknown run gave transcript=None (over REST a KeyError), and
    the latest run was the one whose transcript.json was written last; with the server's
    store readable its runs are taken in their creation order, as the server does."""
    import json
    import os

    from server.sessions import SessionStore

    store = SessionStore(tmp_path)
    try:
        sid = store.create_session().id
        first, second = (store.create_run(sid, {}) for _ in range(2))
        for run in (first, second):
            store.finish_run(run.id, ok=True)
        write_wav(store.audio_path(sid), np.zeros(16000 * 10, np.float32))
        older, newer = make_transcript(), make_transcript()
        newer.segments = newer.segments[:1]
        # the first run's file rewritten after the second run's (a copy, a re-export)
        for run, transcript, mtime in ((second, newer, 1000), (first, older, 2000)):
            path = store.run_dir(sid, run.id) / "transcript.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(transcript.serialize()))
            os.utime(path, (mtime, mtime))
        session = store.get_session(sid)
        assert session is not None
        served = served_runs(  # what GET /transcript serves (server/app.py)
            [r for r in session.runs if (store.run_dir(sid, r.id) / "transcript.json").exists()],
            lambda r: r.kind)
    finally:
        store.close()
    assert [r.id for r in served] == [second.id]
    local = load_session(sid, data_dir=tmp_path)
    assert local.transcript is not None and len(local.transcript.segments) == 1
    assert [r["id"] for r in local.runs] == [first.id, second.id]
    assert len(load_session(sid, data_dir=tmp_path, run=first.id).transcript.segments) == 3  # type: ignore[union-attr]
    with pytest.raises(KeyError, match=f"no run nosuch in session {sid}"):
        load_session(sid, data_dir=tmp_path, run="nosuch")
    # without the store (the files alone) an unknown run is a KeyError too
    os.remove(tmp_path / "workbench.sqlite3")
    with pytest.raises(KeyError, match=f"no run nosuch in session {sid}"):
        load_session(sid, data_dir=tmp_path, run="nosuch")
    assert len(load_session(sid, data_dir=tmp_path).transcript.segments) == 3  # type: ignore[union-attr]


def test_load_session_from_data_dir_joins_the_live_runs_of_a_session_in_parts(
        tmp_path: Path) -> None:
    """With no refined transcript, a session recorded in two parts with live results is
    both live runs' transcripts, as GET /transcript serves it (the newest alone before)."""
    import json
    import os

    from server.sessions import SessionStore

    store = SessionStore(tmp_path)
    try:
        sid = store.create_session().id
        first, second = (store.create_run(sid, {}, kind="live") for _ in range(2))
        write_wav(store.audio_path(sid), np.zeros(16000 * 10, np.float32))
        live = make_transcript()
        live.config = {"kind": "live"}  # (as a live run's transcript says)
        for mtime, run in enumerate((first, second), 1000):
            store.finish_run(run.id, ok=True)
            path = store.run_dir(sid, run.id) / "transcript.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(live.serialize()))
            os.utime(path, (mtime, mtime))
    finally:
        store.close()
    one = len(make_transcript().segments)
    local = load_session(sid, data_dir=tmp_path)
    assert local.transcript is not None and len(local.transcript.segments) == 2 * one
    assert local.transcript.config == {"live_runs": [first.id, second.id]}
    assert len(load_session(sid, data_dir=tmp_path, run=first.id).transcript.segments) == one  # type: ignore[union-attr]
    # the files alone (a copied sessions/ folder): the same (the newest live run's alone)
    os.remove(tmp_path / "workbench.sqlite3")
    copied = load_session(sid, data_dir=tmp_path)
    assert copied.transcript is not None and len(copied.transcript.segments) == 2 * one
    assert copied.transcript.config == {"live_runs": [first.id, second.id]}
