"""The study folder's storage, checked before Ray starts and recognised when it fails mid-study
(docs/reliability.md, "Storage faults").

- Before: the folder must take a file (a read-only mount or a folder of another user raised a
  traceback after Ray had started) and its disk must have room (`MIN_FREE_MB`); on resume, the
  stores it holds must be readable: a truncated optuna.db or mlflow.db (sqlite's quick_check) or
  Tune experiment state is named with the way out, before anything is marked RUNNING.
- During: a disk that fills up, or a folder that becomes read-only, surfaces as an OSError (ENOSPC,
  EDQUOT, EROFS) or as sqlite's "database or disk is full" inside whatever library wrote;
  `storage_fault` finds it in the exception's chain so that the driver stops the study as an
  interruption with its own exit status instead of a failed one.
- A small reserve file (`Reserve`) is given back when the disk fills, so that the driver can still
  mark its runs KILLED and write state.json.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
from contextlib import closing, suppress
from pathlib import Path

from ncstudy.errors import StudyError
from ncstudy.outputs.commands import ncstudy_command

MIN_FREE_MB = 50  # a tiny study writes a few MB; a CIFAR one a few MB per trial (checkpoints, MLflow, Tune state)
RESERVE_FILE = ".reserve"
RESERVE_BYTES = 2 * 1024**2  # room for the clean-up after a full disk: sqlite journals and a few small files
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}
SQLITE_STORAGE_MESSAGES = ("database or disk is full", "attempt to write a readonly database", "disk i/o error")


def _existing(folder: Path) -> Path:
    """`folder`, or its nearest ancestor that exists (where the study folder would be created)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def check_writable(folder: Path, what: str = "--results") -> None:
    """A file can be created in `folder` (or where it would be created), and its disk has room."""
    place = _existing(folder)
    probe = place / f".ncstudy-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"ncstudy")
    except OSError as error:
        with suppress(OSError):  # a full disk may have created it empty
            probe.unlink(missing_ok=True)
        raise StudyError(f"{what} {folder}: cannot write there ({error.strerror}); choose a writable folder") from None
    probe.unlink()
    free_mb = shutil.disk_usage(place).free / 1024**2
    if free_mb < MIN_FREE_MB:
        raise StudyError(
            f"{what} {folder}: its disk has {free_mb:.0f} MB free, a study needs at least {MIN_FREE_MB} MB "
            "(checkpoints, Tune's state, the MLflow store); free some space or choose another folder"
        )


def check_stores(folder: Path, results: Path, files: list[Path]) -> None:
    """Each sqlite store and Tune state file in `files` that exists is readable; a corrupt one is
    named with the way out. Asked by `resume` before Ray starts and before any run is touched."""
    for file in files:
        if not file.exists():
            continue
        problem = _sqlite_problem(file) if file.suffix == ".db" else _json_problem(file)
        if problem:
            raise StudyError(
                f"{file}: unreadable ({problem}); restore it from a backup copy of the folder, or start the study "
                f"afresh with `{ncstudy_command('run', str(folder / 'study.yaml'), results)} --restart`"
            )


def _sqlite_problem(file: Path) -> str | None:
    try:
        with closing(sqlite3.connect(f"{file.resolve().as_uri()}?mode=ro", uri=True)) as connection:
            verdict = connection.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as error:
        return str(error)
    return None if verdict == "ok" else str(verdict)


def _json_problem(file: Path) -> str | None:
    try:
        json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        return type(error).__name__
    return None


def storage_fault(error: BaseException) -> str | None:
    """The storage fault behind `error`, if any ("No space left on device", "database or disk is
    full", ...), found in its chain of causes (MLflow and SQLAlchemy wrap sqlite's errors)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in STORAGE_ERRNOS:
            return error.strerror or str(error)
        text = str(error).lower()
        for message in SQLITE_STORAGE_MESSAGES:
            if message in text:
                return message
        error = error.__cause__ or error.__context__
    return None


class Reserve:
    """RESULTS/<name>/.reserve, a few MB held while a driver works and given back when the disk
    fills up: the clean-up (runs marked KILLED, state.json) then has room to be written."""

    def __init__(self, folder: Path):
        self.path = folder / RESERVE_FILE

    def hold(self) -> None:
        try:
            with open(self.path, "wb") as file:
                file.write(b"\0" * RESERVE_BYTES)
        except OSError:  # no room even for this: the clean-up is best effort, `resume` completes it
            self.release()

    def release(self) -> None:
        self.path.unlink(missing_ok=True)
