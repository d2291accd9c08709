"""`python -m benchmarks live --server`: argument parsing, figures from timed events, table.

No server runs here: the figures are computed from hand-made event timings (the code
under test is the arithmetic and the writer), the measurement itself is the benchmark.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import benchmarks.live as live_bench
from benchmarks import live_server


def test_arguments_defaults_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    args = live_server.parse_args([])
    assert args.stream_counts == [1, 2]
    assert args.input_names == ["sample", "ami-train-2"]
    assert args.out.name == "live-server.json"
    args = live_server.parse_args(["--streams", "2,1,2", "--inputs", "ami-train-3",
                                   "--no-baseline"])
    assert args.stream_counts == [1, 2] and args.input_names == ["ami-train-3"]
    assert args.no_baseline
    assert live_server.parse_args(["--inputs", "meeting-10"]).input_names == ["meeting-10"]
    for bad in (["--inputs", "ami-test-1"], ["--inputs", "ami-train-11"], ["--inputs", "tst00"],
                ["--inputs", "meeting-0"], ["--inputs", "meeting-31"], ["--inputs", "meeting-x"],
                ["--streams", "0"], ["--streams", "x"], ["--chunk-seconds", "0"]):
        with pytest.raises(SystemExit):
            live_server.parse_args(bad)
    assert "python -m benchmarks live --server" in capsys.readouterr().err


def test_simulated_clock_arguments_take_asr_and_diarization_options(
        capsys: pytest.CaptureFixture[str]) -> None:
    args = live_bench.parse_args(["--asr", "max_word_lag=3", "--diarization",
                                  "adopt_distance=none", "--diarization", "delta_new=0.5"])
    assert args.asr_options == {"max_word_lag": 3}
    assert args.diarization_options == {"adopt_distance": None, "delta_new": 0.5}
    assert live_bench.live_config(5.0, args.asr_options, args.diarization_options
                                  ).diarization.delta_new == 0.5
    with pytest.raises(SystemExit):
        live_bench.parse_args(["--diarization", "adopt_distance"])
    # refused before any model loads, at the latency that cannot take it
    for bad in (["--diarization", "fill_speech=False"], ["--asr", "nope=1"],
                ["--latencies", "2,5", "--diarization", "window=4"]):
        with pytest.raises(SystemExit):
            live_bench.parse_args(bad)
    err = capsys.readouterr().err
    assert "'diarization.fill_speech' must be true or false (got 'False')" in err
    assert "unknown ASR option(s): nope" in err
    assert "at latency 5 s: latency must be in [step, window]" in err
    # the simulated clock takes long recordings and the development excerpts too
    args = live_bench.parse_args(["--inputs", "sample,ami-dev,corpus-dev,meeting-6", "--no-asr"])
    assert args.input_names == ["sample", "ami-dev", "corpus-dev", "meeting-6"] and args.no_asr
    assert live_bench.input_group("meeting-6") == "meeting"
    for bad in ("meeting-0", "meeting-31", "ami-test", "tst00"):
        with pytest.raises(SystemExit):
            live_bench.parse_args(["--inputs", bad])


def test_server_arguments_take_live_options_for_the_server(
        capsys: pytest.CaptureFixture[str]) -> None:
    """--asr / --diarization go to the server it starts as --live-config (checked first)."""
    assert live_server.parse_args([]).live_config == {}
    args = live_server.parse_args(["--asr", "lag_between_passes=false",
                                   "--diarization", "latency=5"])
    assert args.live_config == {"asr": {"lag_between_passes": False},
                                "diarization": {"latency": 5}}
    for bad in (["--asr", "nope=1"], ["--diarization", "latency=20"], ["--asr", "x"]):
        with pytest.raises(SystemExit):
            live_server.parse_args(bad)
    err = capsys.readouterr().err
    assert "--asr / --diarization: unknown ASR option(s): nope" in err
    assert "latency must be in [step, window]" in err


def test_groups_fill_every_group() -> None:
    assert live_server.groups(3, 1) == [[0], [1], [2]]
    assert live_server.groups(3, 2) == [[0, 1], [2, 0]]
    assert live_server.groups(1, 2) == [[0, 0]]


def test_timings_from_events() -> None:
    sends = [100.0 + 0.25 * k for k in range(8)]  # 8 chunks, first at t = 100
    w = lambda i, end, spk=None: {"index": i, "word": f" w{i}", "start": end - 0.3,  # noqa: E731
                                  "end": end, "probability": 0.9, "speaker": spk}
    received = [
        (100.02, {"type": "recording_started", "live_results": True}),
        (100.03, {"type": "progress", "chunks_received": 1}),
        (100.29, {"type": "progress", "chunks_received": 2}),
        (102.0, {"type": "transcript_final", "words": [w(0, 0.5), w(1, 1.0, "SPEAKER_00")]}),
        (103.0, {"type": "speaker_labels", "words": [w(0, 0.5, "SPEAKER_01")]}),
        (103.5, {"type": "recording_stopped", "live_run_id": "r1"}),
        (104.0, {"type": "transcript_final", "words": [w(2, 1.5, "SPEAKER_00")]}),
    ]
    t = live_server.timings(sends, received, 0.25)
    # the audio's clock starts a chunk before the first send: word 0 (ends at 0.5 s of
    # audio) is heard at 100 - 0.25 + 0.5 by a microphone's clock, received at 102
    assert t["word_latencies"] == pytest.approx([1.75, 1.25, 2.75])
    # word 1 had its speaker with its words, word 0 got it a second later
    assert sorted(t["speaker_latencies"]) == pytest.approx([1.25, 2.75, 2.75])
    assert t["first_word_delay"] == pytest.approx(2.25)
    assert t["words_before_stop"] == 2 and t["live_words"] == 3
    assert t["chunk_replies"] == pytest.approx([0.03, 0.04])


def _run(uri: str, streams: int, live: bool, lags: list[float]) -> dict:
    row = {"uri": uri, "live": live, "streams": streams, "refined_words": 10,
           "refined_wer": 0.1, "refined_der": 0.05, "chunk_reply_p50_ms": 5.0,
           "chunk_reply_p95_ms": 20.0 if live else 15.0, "lost_bytes": 0}
    if live:
        row.update(word_latencies=lags, speaker_latencies=[x + 1 for x in lags],
                   word_latency_p50=lags[0], word_latency_p95=lags[-1],
                   speaker_latency_p50=lags[0] + 1, speaker_latency_p95=lags[-1] + 1,
                   first_word_delay=3.0, words_before_stop=2, before_stop_share=0.2,
                   live_wer=0.2, live_der=0.1, live_cpu_per_audio_second=0.9)
    return row


def test_summary_and_table_through_live_main(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    runs = [_run("sample", 1, False, []), _run("sample", 1, True, [1.0, 2.0, 2.5]),
            _run("sample", 2, True, [2.0, 4.0, 5.0]), _run("trn00", 2, True, [1.0, 3.5, 6.0])]
    summary = live_server.summarize(runs)
    assert [s["streams"] for s in summary] == [1, 2]
    assert summary[0]["within_target"] and not summary[1]["within_target"]
    assert summary[0]["chunk_reply_p95_ms_without"] == 15.0
    assert summary[1]["chunk_reply_p95_ms_without"] is None
    assert summary[1]["before_stop_share"] == pytest.approx(0.2)
    # the first `words_before_stop` latencies of each run came before stop
    assert summary[1]["word_latency_before_stop_p95"] == 4.0  # of 2, 4, 1, 3.5
    assert live_server.most_streams(summary) == 1
    results = {"benchmark": "live-server",
               "machine": {"cpu_model": "Test CPU", "cpu_count": 2, "cpu_flags": ["avx2"],
                           "date": "2026-12-03T05:00:00+00:00",
                           "load_average_at_start": [5.0, 5.0, 5.0],
                           "load_average_at_end": [6.0, 5.0, 5.0]},
               "runs": runs, "summary": summary, "most_streams_within_target": 1}
    path = tmp_path / "live-server.json"
    path.write_text(json.dumps(results))
    assert live_bench.main(["--server", "--table", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Test CPU, 2 cores, flags: avx2" in out and "load average [5.0, 5.0, 5.0]" in out
    assert "| sample | 1 | 1.00 / 2.50 |" in out
    assert "| sample (no live) | 1 |" in out
    assert "with p95 word latency ≤ 3 s: 1." in out


def test_merged_takes_live_words_from_the_subscriber() -> None:
    final = {"type": "transcript_final", "words": []}
    received = [(1.0, {"type": "progress"}), (2.0, final), (3.0, {"type": "recording_stopped"})]
    heard = [(2.1, final), (2.9, {"type": "recording_stopped"}), (9.0, final)]
    merged = live_server.merged(received, heard)
    assert [(t, e["type"]) for t, e in merged] == [
        (1.0, "progress"), (2.1, "transcript_final"), (3.0, "recording_stopped"),
        (9.0, "transcript_final")]
    assert live_server.merged(received, heard[1:2]) == received


def test_long_meeting_is_the_excerpts_in_a_row_with_shifted_references(tmp_path: Path) -> None:
    """The ``meeting-M`` input on the real AMI train excerpts and the sample call."""
    import soundfile as sf

    from workbench.research.datasets import sample_call
    from workbench.research.datasets.ami import ami_items

    item = live_server.long_meeting(6, tmp_path)
    info = sf.info(str(item.audio))
    assert info.samplerate == 16000 and info.channels == 1
    assert 360 <= info.duration < 360 + 31  # stops after the piece that reaches 6 min
    turns = item.reference_turns()
    sources = ami_items("train", live_server.REPO_ROOT / "data") + [sample_call()]
    first = sources[0].reference_turns()
    assert [(t.speaker, round(t.start, 3)) for t in turns[:len(first)]] == \
        [(t.speaker, round(t.start, 3)) for t in first]
    # the 12th piece is the first excerpt again, 11 pieces (+ 0.5 s gaps each) later
    offset = sum(sf.info(str(s.audio)).duration + 0.5 for s in sources)
    again = [t for t in turns if t.start >= offset - 1e-3][:len(first)]
    assert [t.start - offset for t in again] == pytest.approx([t.start for t in first], abs=2e-3)
    assert max(t.end for t in turns) <= info.duration + 1e-3


def test_lag_by_minute_and_slope() -> None:
    ends = [5.0 * k for k in range(1, 60)]  # one word every 5 s for ~5 minutes
    flat = [2.0 + (0.5 if k % 2 else 0.0) for k in range(len(ends))]
    rows = live_server.lag_by_minute(ends, flat)
    assert [r["minute"] for r in rows] == [0, 1, 2, 3, 4]
    assert sum(r["words"] for r in rows) == len(ends)
    assert abs(live_server.lag_slope(ends, flat)) < 0.05
    growing = [2.0 + e / 60.0 for e in ends]  # one more second of lag per minute
    assert live_server.lag_slope(ends, growing) == pytest.approx(1.0, abs=1e-6)
    assert live_server.lag_by_minute(ends, growing)[-1]["p50"] > rows[-1]["p50"]
    assert live_server.lag_slope(ends[:10], growing[:10]) is None  # under 2 minutes
    refined = live_server.lag_by_minute(ends[:3], flat[:3], refined_ends=[10.0, 70.0, 130.0])
    assert [(r["words"], r["refined_words"]) for r in refined] == [(3, 1), (0, 1), (0, 1)]


def test_live_summary_pools_each_group_and_compares_it_with_the_refined_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def run(uri: str, system: str, der_errors: float, speech: float) -> dict:
        row = {"uri": uri, "system": system, "der_errors": der_errors, "speech": speech,
               "der": der_errors / speech, "wer_errors": 1, "ref_words": 10, "wer": 0.1}
        if system == "live":
            row.update(latency=2.0, word_latency_p50=1.0, word_latency_p95=2.0,
                       speaker_latency_p50=2.5, speaker_latency_p95=3.0,
                       cpu_per_audio_second=0.5, committed_before_end=0.9, asr_passes=3,
                       diarization_skipped_steps=0)
        return row

    runs = [run("sample", "offline", 1.0, 20.0), run("sample", "live", 2.0, 20.0),
            run("trn00", "offline", 3.0, 10.0), run("trn00", "live", 3.3, 10.0),
            run("trn01", "live", 1.0, 10.0),  # no refined run: in the live pool only
            run("trn02", "offline", 9.0, 10.0),  # no live run: in the refined pool only
            # the development excerpts are a group of their own, with DER's components
            {**run("dev00", "live", 2.0, 10.0), "missed": 1.0, "false_alarm": 0.5,
             "confusion": 0.5}]
    summary = {s["group"]: s for s in live_bench.summarize({"runs": runs})}
    assert summary["ami-dev"]["der"] == pytest.approx(0.2)
    assert summary["ami-dev"]["missed"] == pytest.approx(0.1)
    assert summary["ami-dev"]["confusion"] == pytest.approx(0.05)
    assert summary["ami-dev"]["der_ratio"] is None and summary["ami"]["missed"] is None
    assert summary["all"]["missed"] is None  # not every run has the components
    runs = runs[:-1]
    summary = {s["group"]: s for s in live_bench.summarize({"runs": runs})}
    assert summary["sample"]["der_ratio"] == pytest.approx(2.0)
    assert summary["ami"]["der"] == pytest.approx(0.215)
    assert summary["ami"]["offline_der"] == pytest.approx(0.6)
    assert summary["all"]["der"] == pytest.approx(6.3 / 40)
    assert summary["all"]["offline_der"] == pytest.approx(13.0 / 40, abs=1e-4)
    # the ratio compares the same recordings: dev01 has no refined run, dev00 no live one
    assert summary["ami"]["der_ratio"] == pytest.approx(1.1)
    assert summary["all"]["der_ratio"] == pytest.approx((5.3 / 30) / (4.0 / 30), abs=1e-3)
    assert live_bench.input_group("live_conv3") == "generated"
    assert live_bench.input_group("conv005") == "corpus-dev"
    assert live_bench.input_group("conversation") == "conversation"
    assert live_bench.input_group("dev01") == "ami-dev"
    path = tmp_path / "live.json"
    path.write_text(json.dumps({"benchmark": "live",
                                "machine": {"cpu_model": "Test CPU", "cpu_count": 2,
                                            "cpu_flags": ["avx2"]},
                                "parameters": {"costs": "0.6,0.3"}, "runs": runs}))
    assert live_bench.main(["--table", str(path)]) == 0
    out = capsys.readouterr().out
    assert "| **sample** | 2 | 10.0% | 10.0% | 10.0% (2.00x) | 5.0% |" in out


def test_group_lags_are_percentiles_of_the_pooled_words() -> None:
    """One slow input among fast ones: the group's p95 is that of all its words (nearest
    rank), not the median of the runs' own p95s."""
    slow = [6.0 + 0.06 * i for i in range(100)]  # 6-12 s
    runs = [{"uri": "sample", "system": "live", "latency": 2.0, "der_errors": 1.0, "speech": 10.0,
             "wer_errors": 1, "ref_words": 10, "word_latencies": slow, "speaker_latencies": slow,
             "word_latency_p50": 9.0, "word_latency_p95": 11.7, "speaker_latency_p50": 9.0,
             "speaker_latency_p95": 11.7, "cpu_per_audio_second": 0.5,
             "committed_before_end": 0.9}]
    for k in range(4):
        fast = [1.0 + 0.01 * i for i in range(100)]  # 1-2 s
        runs.append({**runs[0], "uri": f"trn0{k}", "word_latencies": fast,
                     "speaker_latencies": fast, "word_latency_p50": 1.5,
                     "word_latency_p95": 1.95})
    (row,) = [s for s in live_bench.summarize({"runs": runs}) if s["group"] == "all"]
    pooled = sorted(x for r in runs for x in r["word_latencies"])
    assert row["word_latency_p95"] == pytest.approx(pooled[474]) and row["word_latency_p95"] > 10
    assert row["word_latency_p50"] == pytest.approx(pooled[249])
    old = [{k: v for k, v in r.items() if not k.endswith("_latencies")} for r in runs]
    (row,) = [s for s in live_bench.summarize({"runs": old}) if s["group"] == "all"]
    assert row["word_latency_p95"] == pytest.approx(1.95)  # older files: median of the runs'


def test_a_recording_that_only_filled_the_last_group_is_not_pooled_twice() -> None:
    assert live_server.groups(3, 2) == [[0, 1], [2, 0]]
    runs = [_run("sample", 2, True, [1.0, 1.0]), _run("trn00", 2, True, [2.0, 2.0]),
            _run("trn01", 2, True, [3.0, 3.0]), {**_run("sample", 2, True, [9.0, 9.0]), "repeat": True}]
    (level,) = live_server.summarize(runs)
    assert level["recordings"] == 3 and level["word_latency_p95"] == 3.0
    # a file from before the `repeat` field: its table reprinted the saved summary, which
    # counted the filler (two-stream p95 3.03 s where the recordings give 2.94 s)
    old = [{k: v for k, v in r.items() if k != "repeat"} for r in runs]
    old[-1]["lost_bytes"] = 5  # a filler is a real recording: its bytes count
    (level,) = live_server.summarize(live_server.marked_repeats(old))
    assert level["recordings"] == 3 and level["word_latency_p95"] == 3.0
    assert level["lost_bytes"] == 5
    table = live_server.markdown_table({"machine": {}, "runs": old, "summary": [
        {**level, "word_latency_p95": 9.0}]})
    assert "| sample (filler) | 2 | 9.00 / 9.00 |" in table
    assert "| 2 | 2.00 / 3.00 |" in table  # the summary from the runs, not the saved one


def test_rounds_pool_every_round_and_give_each_rounds_p95() -> None:
    assert live_server.parse_args([]).rounds == 1
    assert live_server.parse_args(["--rounds", "3"]).rounds == 3
    with pytest.raises(SystemExit):
        live_server.parse_args(["--rounds", "0"])
    runs = [{**_run("sample", 1, True, [1.0, 4.0]), "repeat": False, "round": 0},
            {**_run("trn00", 1, True, [2.0, 2.0]), "repeat": False, "round": 0},
            {**_run("sample", 1, True, [1.0, 3.0]), "repeat": False, "round": 1},
            {**_run("trn00", 1, True, [1.0, 1.0]), "repeat": False, "round": 1},
            {**_run("sample", 1, True, [5.0, 5.0]), "repeat": False, "round": 2},
            {**_run("trn00", 1, True, [5.0, 5.0]), "repeat": False, "round": 2}]
    (level,) = live_server.summarize(runs)
    assert level["recordings"] == 6 and level["rounds"] == 3
    # each round's own p95 (nearest-rank over its 4 words), and the pooled one over all 12
    assert level["word_latency_p95_by_round"] == [4.0, 3.0, 5.0]
    assert level["word_latency_p95_median_of_rounds"] == 4.0
    assert level["word_latency_p95"] == 5.0
    # a recording of the second round is not a filler of the first, even in a file whose
    # runs lack `repeat`
    old = [{k: v for k, v in r.items() if k != "repeat"} for r in runs]
    assert not any(r["repeat"] for r in live_server.marked_repeats(old))
    table = live_server.markdown_table({"machine": {}, "runs": runs})
    assert "| sample (round 2) | 1 | 1.00 / 3.00 |" in table
    assert "| 4.00, 3.00, 5.00 (median 4.00) |" in table
    minutes = [{"minute": m, "words": 1, "refined_words": 1, "p50": 1.0, "p95": 1.0}
               for m in range(3)]
    table = live_server.markdown_table({"machine": {}, "runs": [
        {**r, "lag_by_minute": minutes} for r in runs[:3]]})
    assert "Word lag by minute, sample (round 2) (1 stream(s);" in table
    assert "Word lag by minute, sample (1 stream(s);" in table
    (one,) = live_server.summarize(runs[:2])  # one round: no per-round column
    assert one["rounds"] == 1 and one["word_latency_p95_by_round"] == [4.0]
    assert "| no | – |" in live_server.markdown_table({"machine": {}, "runs": runs[:2]})


def test_live_rates_print_from_their_sums() -> None:
    """Rounded to 4 digits before printing, 2.204 s of errors in 24.35 s of speech (9.05 %)
    printed 9.0 %."""
    run = {"der": 0.0905, "der_errors": 2.204, "speech": 24.35, "wer": 0.1605,
           "wer_errors": 13, "ref_words": 81}
    assert format(live_bench._rate(run), ".1%") == "9.1%"
    assert format(live_bench._rate(run, "wer"), ".1%") == "16.0%"
    assert format(live_bench._pooled([run], "der_errors", "speech"), ".1%") == "9.1%"


def test_live_inputs_made_by_another_generator_or_spec_are_made_again(tmp_path: Path) -> None:
    from workbench.research.datasets import GENERATOR_VERSION

    for ext in ("wav", "rttm", "stm", "uem"):
        (tmp_path / f"live_conv2.{ext}").write_text("stale")
    (tmp_path / "live_conv2.json").write_text(json.dumps({"generator_version": "0", "seed": 999}))
    (item,) = live_bench.prepare_inputs(["conv2"], tmp_path)
    info = json.loads((tmp_path / "live_conv2.json").read_text())
    assert info["generator_version"] == GENERATOR_VERSION and info["seed"] == 21
    assert item.load_audio().size > 50 * 16000
    made = item.audio.stat().st_mtime_ns
    (again,) = live_bench.prepare_inputs(["conv2"], tmp_path)  # now reused as it is
    assert again.audio.stat().st_mtime_ns == made and again.uri == "live_conv2"
