"""Start-up recovery after a crash: recordings that were open are finalised, torn
``audio.wav`` files rebuilt from their raw parts, and sessions left ``processing``
without a run get the run (or the outcome) the crash denied them.

Blocking (decoding, SQLite): the application runs these in a thread at start-up.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from workbench.engine.audio import PARTLY_DECODED, AudioDecodeError

from .finalise import finalise, wav_intact
from .live_worker import SPEAKERS_FILE
from .sessions import DELETED_PREFIX, SessionStore, valid_id

log = logging.getLogger("server.recovery")

# Temporary files of atomic writes a crash or a killed worker cut short, under sessions/:
# audio renditions (audio.wav, audio.mp4), a run's results (workbench.engine.formats.save)
# and a live run's speakers (server.live_worker).
TEMPORARY_FILES = ("*/.audio.*", "*/runs/*/.transcript.*", f"*/runs/*/.{SPEAKERS_FILE}.*")


def recover(store: SessionStore, max_seconds: float | None = None) -> list[str]:
    """After a crash: finalise recordings that were open and mark them ``interrupted``.

    Part sizes are taken from the files (the store is updated on a cadence);
    the WAV is rebuilt from the raw parts, so a torn header cannot survive.  A
    finished session whose ``audio.wav`` is torn or missing gets it rebuilt too,
    and half-written temporary files are removed. Deletes a crash cut short are finished
    (:func:`sweep_deleted`).
    """
    removed, restored = sweep_deleted(store)
    for sid in removed:
        log.warning("Finished deleting session %s, cut short by a crash", sid)
    for sid in restored:
        log.warning("Session %s: its delete never committed; its folder is back", sid)
    unknown = unknown_folders(store)
    if unknown:  # (a database replaced or lost): kept, never removed on a guess
        log.warning("%d folder(s) in %s belong to no session (left alone): %s", len(unknown),
                    store.sessions_dir, ", ".join(unknown[:10]) + (" ..." if len(unknown) > 10 else ""))
    recovered = []
    for pattern in TEMPORARY_FILES:
        for stale in store.sessions_dir.glob(pattern):
            stale.unlink(missing_ok=True)
    left_open = store.sessions_in("recording")
    if left_open:  # (no requests are served meanwhile: say why start-up takes a while)
        log.warning("Rebuilding the audio of %d recording(s) left open by a crash before "
                    "serving", len(left_open))
    for session in left_open:
        total = store.recount_parts(session.id)
        error = None
        try:
            duration = finalise(store, store.get_session(session.id) or session, max_seconds)
        except AudioDecodeError as exc:
            duration, error = 0.0, str(exc)
        except Exception as exc:  # (a full disk): this session waits, the server starts
            log.exception("Session %s: its audio.wav could not be rebuilt at start-up", session.id)
            duration, error = 0.0, (f"Rebuilding the recording's audio failed ({type(exc).__name__}: "
                                    f"{exc}); its raw parts are kept")
            # an audio.wav of an earlier stop lacks the later parts: no run may take it,
            # and without it the next start-up rebuilds the recording
            try:
                store.audio_path(session.id).unlink(missing_ok=True)
            except OSError:  # (not a file: nothing a run could take either)
                log.warning("Session %s: its audio.wav could not be removed", session.id)
        store.set_status(session.id, "interrupted", duration_seconds=duration,
                         bytes_received=total, error=error)
        log.warning("Recovered session %s after a crash: %.2f s kept, now interrupted",
                    session.id, duration)
        recovered.append(session.id)
    for session in store.sessions_in("interrupted", "processing", "completed"):
        if session.id in recovered:  # rebuilt (or tried) just above
            continue
        wav = store.audio_path(session.id)
        if not session.parts or (wav.exists() and wav_intact(wav)):
            continue
        if not wav.exists() and all(part.error and not part.error.startswith(PARTLY_DECODED)
                                    for part in session.parts):
            continue  # none decoded at its stop: there never was an audio.wav (a stop or
            # resume tries again)
        try:
            duration = finalise(store, session, max_seconds)
        except AudioDecodeError as exc:
            log.warning("Session %s: audio.wav is damaged and cannot be rebuilt: %s",
                        session.id, exc)
            continue
        except Exception:  # (a full disk): the next start-up tries again
            log.exception("Session %s: its damaged audio.wav could not be rebuilt", session.id)
            continue
        store.update_session(session.id, duration_seconds=duration,
                             error=None if session.status == "interrupted" else session.error)
        log.warning("Rebuilt the damaged audio.wav of session %s from its raw parts", session.id)
        recovered.append(session.id)
    return recovered


def sweep_deleted(store: SessionStore) -> tuple[list[str], list[str]]:
    """Finish deletes a crash cut short (see :meth:`SessionStore.delete_session`):
    ``.deleted-<id>`` folders whose row is gone are removed; those whose row stayed (the
    delete never committed) get their name back. Returns (ids removed, ids restored)."""
    import shutil

    from workbench.engine.durable import move_back

    removed, restored = [], []
    for doomed in sorted(store.sessions_dir.glob(f"{DELETED_PREFIX}*")):
        sid = doomed.name[len(DELETED_PREFIX):]
        if valid_id(sid) and store.get_session(sid) is not None:
            move_back(doomed, store.session_dir(sid))  # (into a folder made anew meanwhile)
            restored.append(sid)
        else:
            removed.append(sid)
            shutil.rmtree(doomed, ignore_errors=True)
    return removed, restored


def unknown_folders(store: SessionStore) -> list[str]:
    """Names of the folders under sessions/ that no session owns (a database lost or
    replaced): never removed on a guess."""
    known = {s.id for s in store.list_sessions()}
    return sorted(p.name for p in store.sessions_dir.iterdir() if p.is_dir()
                  and p.name not in known and not p.name.startswith(DELETED_PREFIX))


def requeue_orphans(store: SessionStore, config_for: Callable[[Any], dict[str, Any]]) -> list[str]:
    """Sessions left ``processing`` without a queued or running run get what the crash
    denied them: the outcome of their last run when it finished after the session entered
    ``processing`` (a crash before the status was updated), else a new run (a crash
    between ``stop`` and queueing the run)."""
    orphans = []
    for session in store.sessions_in("processing"):
        refined = [r for r in session.runs if r.kind == "refined"]
        if any(r.status in ("queued", "running") for r in refined):
            continue
        last = refined[-1] if refined else None
        if last is not None and last.finished_at and last.finished_at >= session.updated_at:
            ok = last.status == "completed"
            store.set_status(session.id, "completed" if ok else "failed",
                             error=None if ok else last.error)
            log.warning("Session %s: marked %s after its last run, as a crash left it",
                        session.id, "completed" if ok else "failed")
        else:
            run = store.create_run(session.id, config_for(session))
            log.warning("Queued run %s for session %s, left processing by a crash", run.id,
                        session.id)
            orphans.append(session.id)
    return orphans


def fail_live_runs(store: SessionStore) -> list[str]:
    """Live runs a crash left ``running`` (their live worker died with the server) are
    ``failed``: the audio is kept, and the refined run is the result."""
    failed = []
    for run in store.runs_in("running", kind="live"):
        store.finish_run(run.id, ok=False, error="The server stopped before the live result "
                                                   "was saved")
        log.warning("Live run %s of session %s failed: the server stopped", run.id,
                    run.session_id)
        failed.append(run.id)
    return failed


__all__ = ["fail_live_runs", "recover", "requeue_orphans", "sweep_deleted", "unknown_folders"]
