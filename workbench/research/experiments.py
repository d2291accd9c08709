"""Experiments: run several systems over a corpus, cache every result, compare them.

A `System` is a named pipeline configuration (`PipelineConfig`; ``diarize=False`` is
ASR alone, `System.oracle` is told each recording's true speaker count) or the baseline
of senko's own diarizer (`System.senko`).  `run_grid` runs
every (recording, system) cell, locally in worker processes or on a Dask cluster, and
returns `evaluation.compare` of the scored cells::

    systems = [System("default", PipelineConfig()),
               System("threshold 0.35", PipelineConfig.from_dict({"clustering_threshold": 0.35})),
               System.asr_only(), System.senko()]
    table = run_grid(systems, load_manifest("data/corpus/manifest.json"),
                     cache_dir="data/experiments")
    table            # styled comparison, one row per recording x system + aggregates

Each finished cell is stored as
``cache_dir/<uri>-<audio sha256[:12]>/<system key>/<environment>/transcript.json`` (the
transcript with its configuration, package versions and stage timings) next to
``provenance.json`` (system, item, environment, host, machine, worker, wall time), and
logged to ``cache_dir/cells.jsonl``.  The key covers everything that can change a cell's
output: the audio's checksum, the system's configuration, and its *environment*
(`environment`): the checksums of the models it loads, the versions of the packages
that compute it and the workbench code that runs in it (`code_version`, a hash of the
source less the scoring and dataset modules no cell runs).  So after a code, model or
package change a cell is computed again instead of being served from older code;
``run_grid(..., stale="reuse")`` serves such stale cells anyway (marked ``stale`` with
the ``code_version`` they came from).  Cells computed on another CPU or with other
instruction-set caps or threads are served but marked ``other_machine`` (their timings
are another machine's, and with other vector flags or caps their words can differ too:
int8 kernels round differently on AVX-512 and AVX2); ``other_machine="rerun"`` computes
them again.  The keys and the
cells' storage are `workbench.research.cells`; a worker that would compute a cell in
another environment than its key's is refused there (`check_environment`).  A run that is
interrupted resumes where it stopped: cells whose ``transcript.json`` exists are read
back, not recomputed.  The system *name* is not part of the key, so renaming a system
reuses its results.  senko runs in a child process
(`workbench.research.baselines`); where it cannot run (its native code built for another CPU),
its cells are rows with ``status == "unavailable"`` and the ``reason``, cached nowhere.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import math
import multiprocessing
import numbers
import os
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

from workbench.engine.formats import PathLike
from workbench.engine.audio import AudioInput
from workbench.research.baselines import Availability, BaselineUnavailable, SenkoBaseline, \
    senko_availability
from workbench.research.cells import EnvironmentMismatch, _audio_checksum, _cell_code_version, \
    _read_provenance, _read_transcript, _stale_cell, _store, cell_path, check_environment, \
    code_version, environment, machine, machine_differences, source_version
from workbench.research.datasets.items import CorpusItem
from workbench.research.evaluation import COLUMNS, ComparisonTable, compare, score
from workbench.engine.pipeline import DEFAULT_DATA_DIR, PipelineConfig, get_pipeline
from workbench.engine.transcript import Transcript

__all__ = ["BASELINES", "BaselineUnavailable", "EnvironmentMismatch", "SenkoBaseline", "System",
           "cell_path", "code_version", "environment", "run_cell", "run_grid", "source_version"]


BASELINES = ("senko",)
"""Baseline systems that are not a `PipelineConfig`."""

_SENKO_DEFAULTS: dict[str, Any] = {"vad": "silero", "mer_cos": None, "accurate": None}


# --------------------------------------------------------------------------- systems


@dataclass(frozen=True)
class System:
    """A named system under comparison.

    Either a pipeline configuration (`config`; the default pipeline when neither is
    given) or a `baseline` by name (``"senko"``) with its `options`.  With
    `oracle_speakers` a pipeline is told each item's true speaker count (`for_item`).
    The constructors `pipeline`, `oracle`, `asr_only` and `senko` cover the usual cases.
    """

    name: str
    config: Optional[PipelineConfig] = None
    baseline: Optional[str] = None
    options: Mapping[str, Any] = field(default_factory=dict)
    oracle_speakers: bool = False

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValueError("a system needs a name")
        if self.oracle_speakers and self.baseline is not None:
            raise ValueError("oracle_speakers applies to pipeline systems only")
        if self.baseline is None:
            if self.options:
                raise ValueError("options belong to baselines; put pipeline options in config")
            if self.config is None:
                object.__setattr__(self, "config", PipelineConfig())
        else:
            if self.config is not None:
                raise ValueError("a system is either a pipeline configuration or a baseline")
            if self.baseline not in BASELINES:
                raise ValueError(f"unknown baseline {self.baseline!r} (known: {BASELINES})")
            unknown = set(self.options) - set(_SENKO_DEFAULTS)
            if unknown:
                raise ValueError(f"unknown senko option(s): {', '.join(sorted(unknown))}")
            # defaults spelled out, so that equal systems get equal keys
            object.__setattr__(self, "options", {**_SENKO_DEFAULTS, **self.options})
            return
        object.__setattr__(self, "options", dict(self.options))

    @classmethod
    def pipeline(cls, name: str, options: Optional[Mapping[str, Any]] = None) -> "System":
        """A pipeline system from `PipelineConfig.from_dict` options."""
        return cls(name, PipelineConfig.from_dict(options))

    @classmethod
    def oracle(cls, name: str = "oracle speakers",
               config: Optional[PipelineConfig] = None) -> "System":
        """`config` (default pipeline) told the true number of speakers of each item
        (``num_speakers`` from the item's reference, see `for_item`)."""
        return cls(name, config or PipelineConfig(), oracle_speakers=True)

    @classmethod
    def asr_only(cls, name: str = "asr-only",
                 config: Optional[PipelineConfig] = None) -> "System":
        """ASR alone (no diarization): `config` (default pipeline) with ``diarize=False``."""
        return cls(name, replace(config or PipelineConfig(), diarize=False))

    @classmethod
    def senko(cls, name: str = "senko", **options: Any) -> "System":
        """senko's own `Diarizer` on the CPU (silero VAD, CAM++, its clustering) as a
        diarization-only baseline.  Options: ``vad``, ``mer_cos``, ``accurate``."""
        return cls(name, baseline="senko", options=options)

    @property
    def transcribes(self) -> bool:
        return self.config is not None and self.config.transcribe

    @property
    def diarizes(self) -> bool:
        return self.config is None or self.config.diarize

    def for_item(self, item: CorpusItem) -> "System":
        """The system as it runs on `item`: an oracle system gets the item's reference
        speaker count (``info["num_speakers"]``, else the RTTM's speakers) as
        ``num_speakers``; any other system is returned as is."""
        if not self.oracle_speakers:
            return self
        assert self.config is not None
        count = item.info.get("num_speakers") if item.info else None
        if not count:
            if item.rttm is None:
                raise ValueError(f"{item.uri}: an oracle speaker count needs a reference "
                                 "(info['num_speakers'] or an RTTM)")
            count = len({t.speaker for t in item.reference_turns()})
        diarization = replace(self.config.diarization, num_speakers=int(count),
                              min_speakers=None, max_speakers=None)
        return System(self.name, replace(self.config, diarization=diarization))

    def serialize(self) -> dict[str, Any]:
        if self.config is not None:
            return {"name": self.name, "kind": "pipeline", "options": self.config.serialize(),
                    "oracle_speakers": self.oracle_speakers, "key": self.key()}
        return {"name": self.name, "kind": self.baseline, "options": dict(self.options),
                "key": self.key()}

    def key(self) -> str:
        """Short stable hash of what determines the output (not the name)."""
        if self.config is not None and not self.oracle_speakers:
            return self.config.key()
        if self.config is not None:
            blob = json.dumps({"oracle_speakers": True, "options": self.config.serialize()},
                              sort_keys=True).encode()
            return hashlib.sha256(blob).hexdigest()[:16]
        blob = json.dumps({"baseline": self.baseline, "options": self.options},
                          sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def availability(self) -> Availability:
        """Can the system run on this machine?  Pipelines can; a baseline is probed
        (`workbench.research.baselines.senko_availability`; cheap after the first call)."""
        if self.baseline == "senko":
            return senko_availability()
        return Availability(True)

    def run(self, audio: AudioInput, *, uri: Optional[str] = None,
            data_dir: PathLike = DEFAULT_DATA_DIR) -> Transcript:
        """Run the system on `audio`; models stay loaded in this process for later calls
        (senko's in its child process).  BaselineUnavailable when a baseline cannot run
        here (with the reason)."""
        if self.oracle_speakers:
            raise ValueError("resolve an oracle system for its item first: system.for_item(item)")
        if self.config is not None:
            return get_pipeline(self.config, data_dir=data_dir)(audio, uri=uri)
        transcript = SenkoBaseline.shared(**self.options)(audio, uri=uri)
        transcript.config["key"] = self.key()
        return transcript


def run_cell(item: CorpusItem, system: System, cell: str,
             data_dir: str = str(DEFAULT_DATA_DIR), threads: Optional[int] = 1,
             expected: Optional[Mapping[str, Any]] = None,
             recompute: bool = False) -> dict[str, Any]:
    """Compute one (item, system) cell and store it under `cell` (see `cell_path`).

    Top-level so that process pools and Dask can pickle it.  Returns ``{"transcript":
    <transcript.json document>, "provenance": {...}, "cached": bool}``; a cell already on
    disk is read back, not recomputed.  `threads` sets torch's thread count first.  A
    baseline that cannot run here (`BaselineUnavailable`) gives ``{"transcript": None,
    "unavailable": <reason>, "cached": False}`` and stores nothing, so a later run on a
    repaired set-up computes the cell.  `expected` is the `environment` the caller keyed
    the cell with: a process that would compute it in another one (other code, models or
    packages; code edited after it was imported) raises `EnvironmentMismatch` and
    stores nothing (`check_environment`).  A ``transcript.json`` that cannot be read or
    holds no transcript (``{}``) is logged and computed again; with `recompute` a finished cell is computed again too
    (its timings and `machine` this process's).
    """
    folder = Path(cell)
    system = system.for_item(item)
    document = None if recompute else _read_transcript(folder)
    if document is not None:
        return {"transcript": document, "provenance": _read_provenance(folder), "cached": True}
    env = check_environment(system, data_dir, expected)
    _set_threads(threads)
    started = time.time()
    t0 = time.perf_counter()
    try:
        transcript = system.run(item.audio, uri=item.uri, data_dir=data_dir)
    except BaselineUnavailable as exc:
        return {"transcript": None, "unavailable": exc.reason, "cached": False}
    provenance = {
        "item": {"uri": item.uri, "audio": str(item.audio),
                 "sha256": _audio_checksum(Path(item.audio))},
        "system": system.serialize(),
        "environment": env,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "wall_seconds": round(time.perf_counter() - t0, 4),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "torch_threads": threads,
        "machine": machine(threads),
        "timings": transcript.timings,
        "versions": transcript.config.get("versions", {}),
    }
    document = transcript.serialize()
    _store(folder, document, provenance)
    log = {"cell": str(folder), "uri": item.uri, "system": system.name, "key": system.key(),
           "code_version": env["code"],
           "pid": os.getpid(), "host": provenance["host"], "started": provenance["started"],
           "wall_seconds": provenance["wall_seconds"]}
    with open(folder.parent.parent.parent / "cells.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(log) + "\n")  # one short O_APPEND write: atomic on Linux
    return {"transcript": document, "provenance": provenance, "cached": False}


# --------------------------------------------------------------------------- the grid


def _set_threads(threads: Optional[int]) -> None:
    """torch's thread count, and OMP_NUM_THREADS for models loaded later (CTranslate2
    reads it when a Whisper model is created with ``cpu_threads=0``)."""
    if threads is not None:
        import torch

        os.environ["OMP_NUM_THREADS"] = str(threads)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


@contextmanager
def _child_environment(threads: Optional[int]) -> Iterator[None]:
    """OMP/MKL thread variables for worker processes spawned inside the block (a spawned
    process reads them when its OpenMP runtime starts, before any task runs)."""
    names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    saved = {n: os.environ.get(n) for n in names}
    if threads is not None:
        for n in names:
            os.environ[n] = str(threads)
    try:
        yield
    finally:
        for n, value in saved.items():
            if value is None:
                os.environ.pop(n, None)
            else:
                os.environ[n] = value


def _executor(executor: Any, pending: int, max_workers: Optional[int],
              threads: Optional[int]) -> tuple[Any, Any]:
    """(concurrent.futures-style executor, cleanup callable) for the `executor` argument."""
    if executor is None or (isinstance(executor, str) and executor == "processes"):
        workers = max_workers or max(1, min(pending, (os.cpu_count() or 1) // (threads or 1)))
        pool = cf.ProcessPoolExecutor(max_workers=workers,
                                      mp_context=multiprocessing.get_context("spawn"),
                                      initializer=_set_threads, initargs=(threads,))
        return pool, lambda: pool.shutdown(wait=True, cancel_futures=True)
    if isinstance(executor, str):
        if executor == "inline":
            return None, lambda: None
        if "://" in executor:
            from distributed import Client

            client = Client(executor)
            wrapped = client.get_executor(pure=False)

            def close() -> None:
                wrapped.shutdown(wait=False)
                client.close()

            return wrapped, close
        raise ValueError(f"unknown executor {executor!r}: None/'processes', 'inline', a "
                         "scheduler address ('tcp://host:8786'), a distributed.Client or "
                         "a concurrent.futures executor")
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover - dask[distributed] is a dependency
        Client = None  # type: ignore[assignment,misc]
    if Client is not None and isinstance(executor, Client):
        wrapped = executor.get_executor(pure=False)
        return wrapped, lambda: None
    if hasattr(executor, "submit"):
        return executor, lambda: None
    raise TypeError(f"executor must be None, a string or an executor, not {type(executor)}")


def run_grid(systems: Sequence[System], items: Sequence[CorpusItem], *,
             cache_dir: PathLike, executor: Any = None, max_workers: Optional[int] = None,
             threads_per_worker: Optional[int] = 1, data_dir: PathLike = DEFAULT_DATA_DIR,
             collar: float = 0.0, skip_overlap: bool = False,
             progress: bool = True, stale: str = "rerun",
             other_machine: str = "reuse") -> ComparisonTable:
    """Run every system on every item (cached), score the cells and compare them.

    `executor` chooses where cells run:

    - None or ``"processes"``: a local `ProcessPoolExecutor` (spawn) of `max_workers`
      processes (default: as many as the cores allow at `threads_per_worker` torch
      threads each, at most one per pending cell); each keeps its models loaded between
      cells;
    - ``"inline"``: this process, one cell after another (models stay warm here);
    - a scheduler address (``"tcp://host:8786"``) or a ``distributed.Client``: a Dask
      cluster (workers must see `cache_dir`, the audio and `data_dir` on a shared file
      system; results come back to this process, which stores what a worker could not);
    - any object with a ``concurrent.futures``-style ``submit``.

    Cells already in `cache_dir` are read back, never recomputed (one whose
    ``transcript.json`` cannot be read or holds no transcript is logged and computed
    again).  A cell's key covers
    the audio, the configuration and the `environment` (model checksums, package
    versions, `code_version`): a cell computed by other code, models or packages is
    *stale*.  ``stale="rerun"`` (the default) computes it again; ``stale="reuse"`` serves
    the newest stale cell instead (faster after a change known not to matter; its rows
    say ``stale`` and the ``code_version`` it came from, None when it recorded none).
    The machine is no part of the key (where a cell runs is not known when it is keyed;
    its timings depend on it, and on other vector flags or caps its words can too): each
    cell records the one it was computed on (`cells.machine`), and rows of cells computed
    on another CPU, under other instruction-set caps or thread settings than this call's
    (or that recorded none) say ``other_machine`` and ``machine_differences``;
    ``other_machine="rerun"`` computes them again here, ``"reuse"`` (the default) serves
    them.  All cells are attempted; if any failed a RuntimeError lists every (recording,
    system) pair that failed after the others are stored.
    A system that cannot run on this machine (senko whose native code was built for
    another CPU) is no failure: its cells get ``status == "unavailable"`` with the
    ``reason`` and no figures (local executors probe it once here, before any worker
    starts; on a cluster each worker finds out for itself).  Scoring uses
    `evaluation.score` with `collar` and `skip_overlap`; each row carries ``system``,
    ``system_key``, ``status`` (``"ok"`` or ``"unavailable"``), ``reason``, ``cached``
    (True when read from an earlier run), ``stale``, ``code_version`` (of the code
    that computed the cell), ``other_machine`` and ``machine_differences``.
    """
    for name, value in (("stale", stale), ("other_machine", other_machine)):
        if value not in ("rerun", "reuse"):
            raise ValueError(f"{name} must be 'rerun' or 'reuse', not {value!r}")
    for name, count in (("max_workers", max_workers), ("threads_per_worker", threads_per_worker)):
        whole = isinstance(count, numbers.Integral) and not isinstance(count, bool)
        if count is not None and not (whole and count >= 1):
            raise ValueError(f"{name} must be a whole number of at least 1 (or None for "
                             f"the default), not {count!r}")
    systems, items = list(systems), list(items)
    if not systems or not items:
        raise ValueError("run_grid needs at least one system and one item")
    for kind, names in (("system", [s.name for s in systems]), ("item", [i.uri for i in items])):
        dups = sorted({n for n in names if names.count(n) > 1})
        if dups:
            raise ValueError(f"duplicate {kind} name(s): {', '.join(dups)}")
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    here = machine(threads_per_worker)

    cells: dict[tuple[str, str], Path] = {}
    work: dict[Path, tuple[CorpusItem, System]] = {}  # one computation per distinct cell
    pairs: dict[Path, list[str]] = {}  # every (recording, system) a cell stands for
    failures: list[str] = []
    environments: dict[str, dict[str, Any]] = {}  # by system key, for this call
    for item in items:
        for system in systems:
            try:  # an oracle's count and the system's models: a missing reference or
                # model fails its cells alone
                resolved = system.for_item(item)
                if resolved.key() not in environments:
                    environments[resolved.key()] = environment(resolved, data_dir)
                path = cell_path(cache, item, resolved, data_dir, environments[resolved.key()])
            except Exception as exc:  # noqa: BLE001 - reported with the cells below
                failures.append(f"{item.uri} x {system.name}: {type(exc).__name__}: {exc}")
                continue
            cells[(item.uri, system.name)] = path
            work.setdefault(path, (item, resolved))
            pairs.setdefault(path, []).append(f"{item.uri} x {system.name}")

    def failed(path: Path, exc: BaseException) -> None:
        failures.extend(f"{pair}: {type(exc).__name__}: {exc}" for pair in pairs[path])

    results: dict[Path, dict[str, Any]] = {}
    recompute: set[Path] = set()  # finished cells of another machine, computed again
    for path, (item, system) in work.items():
        found: Optional[Path] = path
        document = _read_transcript(path)
        if document is None and stale == "reuse":
            found = _stale_cell(cache, item, system, besides=path)
            document = _read_transcript(found) if found is not None else None
        if document is None or found is None:  # (no document without a cell)
            continue
        provenance = _read_provenance(found)
        if other_machine == "rerun" and machine_differences(provenance.get("machine"), here):
            if found == path:
                recompute.add(path)
            continue
        results[path] = {"transcript": document, "cached": True, "stale": found != path,
                         "code_version": _cell_code_version(found), "provenance": provenance}
    local = executor is None or (isinstance(executor, str) and executor in ("processes",
                                                                              "inline"))
    if local:  # one probe here instead of a crash (or a probe) in every worker
        for path, (item, system) in work.items():
            if path not in results and system.baseline is not None:
                availability = system.availability()
                if not availability:
                    results[path] = {"transcript": None, "cached": False,
                                     "unavailable": availability.reason}
    pending = [path for path in work if path not in results]

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(work), initial=len(results), desc="cells", unit="cell")
    pool, close = _executor(executor, len(pending), max_workers, threads_per_worker) \
        if pending else (None, lambda: None)
    local_pool = executor is None or (isinstance(executor, str) and executor == "processes")
    try:
        if pool is None:
            for path in pending:
                item, system = work[path]
                try:
                    results[path] = run_cell(item, system, str(path), str(data_dir),
                                             threads_per_worker, environments[system.key()],
                                             path in recompute)
                except Exception as exc:  # noqa: BLE001 - reported with the cell below
                    failed(path, exc)
                if bar is not None:
                    bar.update(1)
        else:
            # A process pool starts its workers on the first submit.
            with _child_environment(threads_per_worker if local_pool else None):
                futures = {pool.submit(run_cell, *work[path], str(path), str(data_dir),
                                       threads_per_worker, environments[work[path][1].key()],
                                       path in recompute):
                           path for path in pending}
            for future in cf.as_completed(futures):
                path = futures[future]
                try:
                    result = future.result()
                except Exception as exc:  # noqa: BLE001 - reported with the cell below
                    failed(path, exc)
                else:
                    if result.get("transcript") is not None and (  # a worker elsewhere
                            path in recompute or not (path / "transcript.json").is_file()):
                        _store(path, result["transcript"], result.get("provenance", {}))
                    results[path] = result
                if bar is not None:
                    bar.update(1)
    finally:
        close()
        if bar is not None:
            bar.close()
    if failures:
        raise RuntimeError(f"{len(failures)} of {len(items) * len(systems)} cell(s) failed "
                           f"(the others are "
                           f"cached in {cache}):\n" + "\n".join(failures))

    rows = []
    for item in items:
        for system in systems:
            result = results[cells[(item.uri, system.name)]]
            key = system.for_item(item).key()
            if result.get("transcript") is None:
                rows.append({"system": system.name, "uri": item.uri,
                             **dict.fromkeys(COLUMNS, math.nan),  # every figure, none known
                             "duration": float(item.duration), "system_key": key,
                             "status": "unavailable", "reason": result.get("unavailable"),
                             "cached": False, "stale": False, "code_version": None,
                             "other_machine": False, "machine_differences": None})
                continue
            transcript = Transcript.from_dict(result["transcript"])
            provenance = result.get("provenance") or {}
            elsewhere = machine_differences(provenance.get("machine"), here)
            rows.append({"system": system.name, **score(item, transcript, collar=collar,
                                                        skip_overlap=skip_overlap),
                         "system_key": key, "status": "ok", "reason": None,
                         "cached": bool(result["cached"]),
                         "stale": bool(result.get("stale", False)),
                         # the code the cell names; None when it names none (never this
                         # call's code for a cell that cannot say)
                         "code_version": result.get("code_version") or (
                             provenance.get("environment") or {}).get("code"),
                         "other_machine": elsewhere is not None,
                         "machine_differences": elsewhere})
    return compare(rows, by="system")
