"""The session store's SQLite tables, and the upgrades of stores made by older versions."""

from __future__ import annotations

import sqlite3

DATABASE_NAME = "workbench.sqlite3"

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    format TEXT NOT NULL DEFAULT 'wav',
    duration_seconds REAL NOT NULL DEFAULT 0,
    bytes_received INTEGER NOT NULL DEFAULT 0,
    chunks_received INTEGER NOT NULL DEFAULT 0,
    options TEXT NOT NULL DEFAULT '{}',
    error TEXT,
    audio_truncated INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS parts (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    container TEXT,
    sample_rate INTEGER NOT NULL,
    channels INTEGER NOT NULL,
    bytes INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    PRIMARY KEY (session_id, idx)
);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    status TEXT NOT NULL,
    config TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    stage TEXT,
    progress REAL NOT NULL DEFAULT 0,
    error TEXT,
    summary TEXT NOT NULL DEFAULT '{}',
    attempts INTEGER NOT NULL DEFAULT 0,
    kind TEXT NOT NULL DEFAULT 'refined',
    supersedes TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_status ON runs(status, seq);
CREATE INDEX IF NOT EXISTS runs_by_session ON runs(session_id, seq);
"""


class Corrupt(sqlite3.DatabaseError):
    """The database's pages fail SQLite's quick check."""


# SQLite's primary result codes of a damaged file: SQLITE_CORRUPT, SQLITE_NOTADB
_DAMAGE_CODES = (11, 26)


def damaged(exc: sqlite3.DatabaseError) -> bool:
    """Whether `exc` says the file is damaged or no database (not locked, not an I/O or
    permission error: those leave an intact file)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, Corrupt) or (code is not None and code & 0xFF in _DAMAGE_CODES)


def open_database(db: sqlite3.Connection) -> None:
    """Settings, tables and upgrades of a store just opened; a damaged file raises
    sqlite3.DatabaseError (a database whose pages were overwritten fails the quick check;
    one cut to 0 bytes is a new, empty one: its sessions are named by start-up recovery)."""
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA foreign_keys=ON")
    (verdict,) = db.execute("PRAGMA quick_check").fetchone()
    if verdict != "ok":
        raise Corrupt(f"quick check: {verdict}")
    db.executescript(SCHEMA)
    columns = {row[1] for row in db.execute("PRAGMA table_info(sessions)")}
    if "audio_truncated" not in columns:  # a store made before the column existed
        db.execute("ALTER TABLE sessions ADD COLUMN audio_truncated INTEGER NOT NULL DEFAULT 0")
    columns = {row[1] for row in db.execute("PRAGMA table_info(parts)")}
    if "error" not in columns:
        db.execute("ALTER TABLE parts ADD COLUMN error TEXT")
    columns = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
    if "kind" not in columns:  # a store made before live runs: every run was refined
        db.execute("ALTER TABLE runs ADD COLUMN kind TEXT NOT NULL DEFAULT 'refined'")
    if "supersedes" not in columns:
        db.execute("ALTER TABLE runs ADD COLUMN supersedes TEXT")


__all__ = ["Corrupt", "DATABASE_NAME", "SCHEMA", "damaged", "open_database"]
