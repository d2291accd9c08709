"""Sessions, their recorded parts and their processing runs, in an embedded SQLite store.

One SQLite database (``DATA/workbench.sqlite3``) holds the metadata; each session
owns a directory ``DATA/sessions/<id>/`` with the raw parts it received, the
canonical ``audio.wav``, an optional ``audio.mp4`` and one folder per run.
Every write is a transaction, so a crash leaves the store consistent.  The store
returns data; the URLs clients see are made in :mod:`server.routes`.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from workbench.engine.audio import InputFormat
from workbench.engine.durable import move_back, sync_folder
from workbench.engine.transcript import served_runs

from .schema import DATABASE_NAME, damaged, open_database

# The renditions of a session's audio, each a file ``audio.<format>`` in its directory:
# the canonical WAV (made at ``stop``) and an MP4 (AAC) made on demand.
from workbench.engine.formats import AUDIO_FORMATS

SESSION_STATES = ("idle", "recording", "interrupted", "processing", "completed", "failed")
RUN_STATES = ("queued", "running", "completed", "failed")
# What made a run: "refined" (the processing pipeline, queued at `stop` or by REST) or
# "live" (the live result of a recording with `live_results`, saved at its end). A
# session's status follows its refined runs only.
RUN_KINDS = ("refined", "live")

# States a session may move to from each state.  `recording` is re-entered
# from `interrupted` (resume) and from a finished session (append more audio).
TRANSITIONS: dict[str, frozenset[str]] = {
    "idle": frozenset({"recording"}),
    "recording": frozenset({"interrupted", "processing", "failed"}),
    "interrupted": frozenset({"recording", "processing", "failed"}),
    "processing": frozenset({"completed", "failed", "processing"}),
    "completed": frozenset({"processing", "recording"}),
    "failed": frozenset({"processing", "recording"}),
}

# A deleted session's folder while it is removed (no id starts with a dot)
DELETED_PREFIX = ".deleted-"

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def valid_id(value: str) -> bool:
    """True for ids safe to use as a directory name (letters, digits, '-', '_')."""
    return bool(_ID_RE.match(value))


def new_id() -> str:
    return str(uuid.uuid4())


def _now() -> float:
    return time.time()


def _iso(ts: Optional[float]) -> Optional[str]:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


@dataclass
class Part:
    """One contiguous span of received bytes (start..stop) and how they are encoded."""

    index: int
    container: Optional[str]
    sample_rate: int
    channels: int
    bytes: int
    error: Optional[str] = None  # why its bytes did not decode at the last stop (then skipped)

    @property
    def filename(self) -> str:
        return f"part-{self.index:03d}.raw"

    @property
    def input_format(self) -> InputFormat:
        return InputFormat(self.container, self.sample_rate, self.channels)


@dataclass
class Run:
    """One processing run of a session: a configuration, its state and its outputs."""

    id: str
    session_id: str
    status: str
    config: dict[str, Any]
    created_at: float
    started_at: Optional[float] = None
    finished_at: Optional[float] = None
    stage: Optional[str] = None
    progress: float = 0.0
    error: Optional[str] = None
    summary: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0
    kind: str = "refined"
    # The live run this refined run replaces (the one saved at the same `stop`).
    supersedes: Optional[str] = None

    def serialize(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "session_id": self.session_id,
            "kind": self.kind,
            "supersedes": self.supersedes,
            "status": self.status,
            "config": self.config,
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "stage": self.stage,
            "progress": round(self.progress, 4),
            "error": self.error,
            "summary": self.summary,
        }


@dataclass
class Session:
    """A recording session: its state, its audio and its runs."""

    id: str
    status: str
    created_at: float
    updated_at: float
    format: str = "wav"
    duration_seconds: float = 0.0
    bytes_received: int = 0
    chunks_received: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    error: Optional[str] = None
    audio_truncated: bool = False  # audio.wav stops at the duration limit; the parts hold more
    parts: list[Part] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    # Formats of AUDIO_FORMATS whose file is on disk.
    renditions: tuple[str, ...] = ()

    def serialize(self) -> dict[str, Any]:
        """The session's data as JSON values (the REST object adds links: see
        :func:`server.routes.session_json`)."""
        served = self.transcript()
        return {
            "id": self.id,
            "status": self.status,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "format": self.format,
            "duration_seconds": round(self.duration_seconds, 3),
            "bytes_received": self.bytes_received,
            "chunks_received": self.chunks_received,
            "options": self.options,
            "error": self.error,
            "audio_truncated": self.audio_truncated,
            "parts": [
                {"index": p.index, "container": p.container, "bytes": p.bytes, "error": p.error}
                for p in self.parts
            ],
            "runs": [r.serialize() for r in self.runs],
            "speakers": None if served is None else served["speakers"],
            "transcript": served,
        }

    def transcript(self) -> Optional[dict[str, Any]]:
        """What the session's transcript is made of, as GET /transcript without ``run``
        serves it: ``runs`` (ids, `served_runs` of the completed runs with a transcript; a
        renditions run has none), their ``kind``, ``speakers`` (one label counted once
        across the live runs of a session recorded in parts: the labels carry over a
        resume) and ``word_count`` (summed); None without such a run."""
        runs = served_runs([r for r in self.runs if r.status == "completed"
                            and "word_count" in r.summary], lambda r: r.kind)
        if not runs:
            return None
        if len(runs) == 1 or any("speaker_labels" not in r.summary for r in runs):
            speakers = max((r.summary.get("speakers") for r in runs), key=lambda n: n or 0)
        else:
            speakers = len({label for r in runs for label in r.summary["speaker_labels"]})
        return {"runs": [r.id for r in runs], "kind": runs[-1].kind, "speakers": speakers,
                "word_count": sum(int(r.summary["word_count"] or 0) for r in runs)}

    def _repr_html_(self) -> str:  # pragma: no cover - notebook display
        rows = "".join(
            f"<tr><td>{r.id[:8]}</td><td>{r.status}</td><td>{r.stage or ''}</td>"
            f"<td>{r.summary.get('speakers', '')}</td></tr>"
            for r in self.runs
        )
        return (
            f"<b>Session {self.id}</b> — {self.status}, {self.duration_seconds:.1f} s, "
            f"format {self.format}<table><tr><th>run</th><th>status</th><th>stage</th>"
            f"<th>speakers</th></tr>{rows}</table>"
        )


class StoreDamaged(RuntimeError):
    """The session database cannot be read (damaged, or not a database)."""


class TransitionError(ValueError):
    """A session was asked to move to a state its current state does not allow."""


class SessionStore:
    """Thread-safe store of sessions, parts and runs (SQLite in WAL mode).

    Methods are synchronous and short; the server calls them from a thread
    (``asyncio.to_thread``) so the event loop never waits on the disk.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.sessions_dir = self.data_dir / "sessions"
        self.sessions_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        path = self.data_dir / DATABASE_NAME
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        try:
            open_database(self._db)
        except sqlite3.DatabaseError as exc:  # (a raw traceback, or every session gone)
            self._db.close()
            if not damaged(exc):  # locked, unreadable: as it is (no advice to replace it)
                raise
            raise StoreDamaged(
                f"the session database {path} is damaged ({exc}); the server cannot start on "
                f"it. Keep a copy, then try: sqlite3 {path} .recover | sqlite3 recovered.sqlite3"
                f" (and put recovered.sqlite3 in its place)") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------ helpers
    def _tx(self) -> "_Transaction":
        return _Transaction(self)

    def session_dir(self, session_id: str) -> Path:
        if not valid_id(session_id):
            raise ValueError("invalid session id")
        return self.sessions_dir / session_id

    def audio_path(self, session_id: str, fmt: str = "wav") -> Path:
        """The file of one rendition (see :data:`AUDIO_FORMATS`) of a session's audio."""
        if fmt not in AUDIO_FORMATS:
            raise ValueError(f"unknown audio format {fmt!r}")
        return self.session_dir(session_id) / f"audio.{fmt}"

    def run_dir(self, session_id: str, run_id: str) -> Path:
        return self.session_dir(session_id) / "runs" / run_id

    # ------------------------------------------------------------------ sessions
    def create_session(self, session_id: Optional[str] = None, fmt: str = "wav",
                       options: Optional[dict[str, Any]] = None) -> Session:
        sid = session_id or new_id()
        now = _now()
        with self._tx() as db:
            db.execute(
                "INSERT INTO sessions (id, status, created_at, updated_at, format, options)"
                " VALUES (?, 'idle', ?, ?, ?, ?)",
                (sid, now, now, fmt, json.dumps(options or {})),
            )
        (self.session_dir(sid) / "runs").mkdir(parents=True, exist_ok=True)
        session = self.get_session(sid)
        assert session is not None
        return session

    def get_session(self, session_id: str) -> Optional[Session]:
        if not valid_id(session_id):
            return None
        with self._lock:
            row = self._db.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
            if row is None:
                return None
            return self._load(row)

    def list_sessions(self) -> list[Session]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM sessions ORDER BY created_at DESC").fetchall()
            return [self._load(row) for row in rows]

    def sessions_in(self, *states: str) -> list[Session]:
        with self._lock:
            marks = ",".join("?" * len(states))
            rows = self._db.execute(
                f"SELECT * FROM sessions WHERE status IN ({marks}) ORDER BY created_at", states
            ).fetchall()
            return [self._load(row) for row in rows]

    def _load(self, row: sqlite3.Row) -> Session:
        sid = row["id"]
        parts = [
            Part(p["idx"], p["container"], p["sample_rate"], p["channels"], p["bytes"], p["error"])
            for p in self._db.execute(
                "SELECT * FROM parts WHERE session_id = ? ORDER BY idx", (sid,)
            )
        ]
        runs = [self._run(r) for r in self._db.execute(
            "SELECT * FROM runs WHERE session_id = ? ORDER BY seq", (sid,)
        )]
        directory = self.sessions_dir / sid
        renditions = tuple(fmt for fmt in AUDIO_FORMATS
                           if (directory / f"audio.{fmt}").exists())
        return Session(
            id=sid,
            status=row["status"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            format=row["format"],
            duration_seconds=row["duration_seconds"],
            bytes_received=row["bytes_received"],
            chunks_received=row["chunks_received"],
            options=json.loads(row["options"]),
            error=row["error"],
            audio_truncated=bool(row["audio_truncated"]),
            parts=parts,
            runs=runs,
            renditions=renditions,
        )

    def set_status(self, session_id: str, status: str, *, error: Optional[str] = None,
                   **fields: Any) -> None:
        """Move a session to `status` along an allowed transition, updating `fields`."""
        if status not in SESSION_STATES:
            raise ValueError(status)
        with self._tx() as db:
            row = db.execute("SELECT status FROM sessions WHERE id = ?", (session_id,)).fetchone()
            if row is None:
                raise KeyError(session_id)
            if status != row["status"] and status not in TRANSITIONS[row["status"]]:
                raise TransitionError(f"{row['status']} -> {status}")
            self._update(db, session_id, status=status, error=error, **fields)

    def begin_processing(self, session_id: str) -> bool:
        """Move a session to ``processing`` for a run about to start, unless it is
        recording (then False: the run waits; a connection may have resumed it since the
        run was queued).  One transaction, so a resume and a run never both win.
        KeyError: no such session (deleted)."""
        with self._tx() as db:
            row = db.execute("SELECT status FROM sessions WHERE id = ?", (session_id,)).fetchone()
            if row is None:
                raise KeyError(session_id)
            if row["status"] == "recording":
                return False
            if row["status"] != "processing":
                if "processing" not in TRANSITIONS[row["status"]]:
                    raise TransitionError(f"{row['status']} -> processing")
                self._update(db, session_id, status="processing", error=None)
            return True

    def update_session(self, session_id: str, **fields: Any) -> None:
        with self._tx() as db:
            self._update(db, session_id, **fields)

    @staticmethod
    def _update(db: sqlite3.Connection, session_id: str, **fields: Any) -> None:
        allowed = {"status", "format", "duration_seconds", "bytes_received", "chunks_received",
                   "options", "error", "audio_truncated"}
        if "options" in fields:
            fields["options"] = json.dumps(fields["options"])
        cols = [k for k in fields if k in allowed]
        sets = ", ".join(f"{k} = ?" for k in cols)
        db.execute(
            f"UPDATE sessions SET {sets}{', ' if sets else ''}updated_at = ? WHERE id = ?",
            [fields[k] for k in cols] + [_now(), session_id],
        )

    def delete_session(self, session_id: str) -> bool:
        """Delete a session and its files; False when there is none or it is recording
        (checked in the same statement: a resume racing the delete either starts first,
        and the session stays, or finds it gone).

        The folder is renamed to ``.deleted-<id>`` (durably) before the row's removal
        commits, then removed: after a crash in between, start-up's `sweep_deleted` gives
        a row's folder its name back or removes a folder whose row is gone (a crash during
        the removal left the deleted audio on disk for good)."""
        import shutil

        folder = self.session_dir(session_id)
        doomed = self.sessions_dir / f"{DELETED_PREFIX}{session_id}"
        renamed = False
        try:
            with self._tx() as db:
                cur = db.execute("DELETE FROM sessions WHERE id = ? AND status != 'recording'",
                                 (session_id,))
                if cur.rowcount and folder.exists():
                    if doomed.exists():  # (an earlier delete's, cut short)
                        shutil.rmtree(doomed, ignore_errors=True)
                    folder.rename(doomed)
                    renamed = True
                    sync_folder(self.sessions_dir)
        except BaseException:  # the row stays (rolled back, e.g. a full disk at COMMIT):
            if renamed:        # so do its files
                move_back(doomed, folder)
            raise
        if cur.rowcount:
            shutil.rmtree(doomed, ignore_errors=True)
        return bool(cur.rowcount)

    def remove_leftovers(self, session_id: str) -> bool:
        """A session deleted while a worker still worked on it: remove what the worker
        wrote since (a run's transcripts, in a folder made anew). True if it was gone."""
        import shutil

        if self.get_session(session_id) is not None:
            return False
        shutil.rmtree(self.session_dir(session_id), ignore_errors=True)
        return True

    # ------------------------------------------------------------------ parts
    def add_part(self, session_id: str, fmt: InputFormat) -> Part:
        with self._tx() as db:
            (idx,) = db.execute(
                "SELECT COALESCE(MAX(idx) + 1, 0) FROM parts WHERE session_id = ?", (session_id,)
            ).fetchone()
            db.execute(
                "INSERT INTO parts (session_id, idx, container, sample_rate, channels)"
                " VALUES (?, ?, ?, ?, ?)",
                (session_id, idx, fmt.container, fmt.sample_rate, fmt.channels),
            )
        return Part(idx, fmt.container, fmt.sample_rate, fmt.channels, 0)

    def set_part_errors(self, session_id: str, errors: dict[int, Optional[str]]) -> None:
        """Store why each part did (not) decode: its index -> message, or None."""
        with self._tx() as db:
            db.executemany("UPDATE parts SET error = ? WHERE session_id = ? AND idx = ?",
                           [(message, session_id, idx) for idx, message in errors.items()])

    def recount_parts(self, session_id: str) -> int:
        """Each part's size taken from its file, stored, and their sum (the bytes the
        session holds): a crash, or a failed write of the counts at `stop`, leaves the
        stored sizes behind the files.  KeyError: no such session."""
        session = self.get_session(session_id)
        if session is None:
            raise KeyError(session_id)
        directory = self.session_dir(session_id)
        total = 0
        for part in session.parts:
            path = directory / part.filename
            part.bytes = path.stat().st_size if path.exists() else 0
            total += part.bytes
            self.update_part(session_id, part)
        return total

    def update_part(self, session_id: str, part: Part, **session_fields: Any) -> None:
        """Store a part's size and format, and ``session_fields`` of its session, in one
        transaction (one commit: the hot path while recording)."""
        with self._tx() as db:
            db.execute(
                "UPDATE parts SET container = ?, sample_rate = ?, channels = ?, bytes = ?"
                " WHERE session_id = ? AND idx = ?",
                (part.container, part.sample_rate, part.channels, part.bytes, session_id,
                 part.index),
            )
            if session_fields:
                self._update(db, session_id, **session_fields)

    # ------------------------------------------------------------------ runs
    def create_run(self, session_id: str, config: dict[str, Any], *, kind: str = "refined",
                   supersedes: Optional[str] = None) -> Run:
        """A new run: a refined run is ``queued`` (the job queue takes it); a live run is
        ``running`` until its live worker has saved it."""
        if kind not in RUN_KINDS:
            raise ValueError(kind)
        rid = new_id()
        now = _now()
        status = "queued" if kind == "refined" else "running"
        started = None if kind == "refined" else now
        with self._tx() as db:
            (seq,) = db.execute("SELECT COALESCE(MAX(seq) + 1, 0) FROM runs").fetchone()
            db.execute(
                "INSERT INTO runs (id, session_id, seq, status, config, created_at, started_at,"
                " kind, supersedes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (rid, session_id, seq, status, json.dumps(config), now, started, kind,
                 supersedes),
            )
        return Run(rid, session_id, status, config, now, started_at=started, kind=kind,
                   supersedes=supersedes)

    def get_run(self, run_id: str) -> Optional[Run]:
        with self._lock:
            row = self._db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
            return self._run(row) if row else None

    def runs_in(self, *states: str, kind: str = "refined") -> list[Run]:
        """Runs of one ``kind`` (the processing queue's by default) in ``states``."""
        with self._lock:
            marks = ",".join("?" * len(states))
            rows = self._db.execute(
                f"SELECT * FROM runs WHERE status IN ({marks}) AND kind = ? ORDER BY seq",
                (*states, kind)).fetchall()
            return [self._run(r) for r in rows]

    def update_run(self, run_id: str, **fields: Any) -> None:
        allowed = {"status", "started_at", "finished_at", "stage", "progress", "error",
                   "summary", "attempts"}
        if "summary" in fields:
            fields["summary"] = json.dumps(fields["summary"])
        cols = [k for k in fields if k in allowed]
        with self._tx() as db:
            db.execute(
                f"UPDATE runs SET {', '.join(f'{k} = ?' for k in cols)} WHERE id = ?",
                [fields[k] for k in cols] + [run_id],
            )

    def finish_run(self, run_id: str, *, ok: bool, summary: Optional[dict[str, Any]] = None,
                   error: Optional[str] = None, finished_at: Optional[float] = None) -> bool:
        """End a run and, when it was its session's last queued or running refined one, move
        the session to ``completed``/``failed`` in the same transaction, so no reader sees
        every run finished while the session still says ``processing``.  Live runs never
        move the session (its status follows the refined run).  Returns whether the
        session's status was moved."""
        fields: dict[str, Any] = {"finished_at": finished_at if finished_at is not None
                                  else _now()}
        if ok:
            fields.update(status="completed", stage="done", progress=1.0,
                          summary=json.dumps(summary or {}))
        else:
            fields.update(status="failed", error=error)
        with self._tx() as db:
            row = db.execute("SELECT session_id, kind FROM runs WHERE id = ?",
                             (run_id,)).fetchone()
            if row is None:
                return False
            sid = row["session_id"]
            db.execute(f"UPDATE runs SET {', '.join(f'{k} = ?' for k in fields)} WHERE id = ?",
                       [*fields.values(), run_id])
            if row["kind"] != "refined":
                return False
            (pending,) = db.execute(
                "SELECT COUNT(*) FROM runs WHERE session_id = ? AND kind = 'refined'"
                " AND status IN ('queued', 'running')", (sid,)).fetchone()
            current = db.execute("SELECT status FROM sessions WHERE id = ?", (sid,)).fetchone()
            status = "completed" if ok else "failed"
            if (pending or current is None or current["status"] == "recording"
                    or (status != current["status"]
                        and status not in TRANSITIONS[current["status"]])):
                return False  # (a run's end never moves a session that records again)
            self._update(db, sid, status=status, error=None if ok else error)
            return True

    @staticmethod
    def _run(row: sqlite3.Row) -> Run:
        return Run(
            id=row["id"],
            session_id=row["session_id"],
            status=row["status"],
            config=json.loads(row["config"]),
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            stage=row["stage"],
            progress=row["progress"],
            error=row["error"],
            summary=json.loads(row["summary"]),
            attempts=row["attempts"],
            kind=row["kind"],
            supersedes=row["supersedes"],
        )


class _Transaction:
    def __init__(self, store: SessionStore) -> None:
        self.store = store

    def __enter__(self) -> sqlite3.Connection:
        self.store._lock.acquire()
        try:  # ("database is locked" by another process, an I/O error): no __exit__ then
            self.store._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self.store._lock.release()
            raise
        return self.store._db

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        try:
            self.store._db.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self.store._lock.release()

