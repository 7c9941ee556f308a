"""The study folder RESULTS/<name>: its paths, the driver's lock, the record of its MLflow runs and
of how the last attempt ended, and the only code that deletes it (`run --restart`).

Interruption is normal (the guide's principles), so every file here says what state the study is
in: `tracking.json` exists once the search started (the parent run), `state.json` says how the last
driver ended (running, interrupted, failed, finished), and `.lock` is locked by the driver working
in the folder now and names it, so a second `run` or `resume` is refused instead of writing a
second study into the same files. A driver refused before it wrote a study leaves no `.lock` behind.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from ncstudy.errors import StudyError
from ncstudy.outputs.commands import ncstudy_command
from ncstudy.outputs.results import write_text
from ncstudy.outputs.storage import RESERVE_FILE

TUNE_EXPERIMENT = "tune"
LOCK_FILE = ".lock"


@dataclass(frozen=True)
class StudyPaths:
    """Where a study writes (docs/outputs.md, "The study folder")."""

    results: Path
    name: str

    @property
    def folder(self) -> Path:
        return self.results / self.name

    @property
    def config_file(self) -> Path:
        return self.folder / "study.yaml"

    @property
    def tracking_file(self) -> Path:
        return self.folder / "tracking.json"

    @property
    def state_file(self) -> Path:
        return self.folder / "state.json"

    @property
    def ray_storage(self) -> Path:
        return self.folder / "ray"

    @property
    def tune_experiment(self) -> Path:
        return self.ray_storage / TUNE_EXPERIMENT

    @property
    def optuna_storage(self) -> str:
        return f"sqlite:///{(self.folder / 'optuna.db').resolve()}"


def study_paths(results: Path, name: str) -> StudyPaths:
    """The paths of study `name` under `results`, which must be a folder (or not exist yet)."""
    if results.exists() and not results.is_dir():
        raise StudyError(f"--results {results}: is a file, not a folder")
    paths = StudyPaths(results.resolve(), name)
    if paths.folder.is_symlink() or (paths.folder.exists() and not paths.folder.is_dir()):
        raise StudyError(f"{paths.folder}: not a study folder (a link or a file); move it away or choose another name")
    return paths


# -- the MLflow record ------------------------------------------------------------------------


def write_tracking(paths: StudyPaths, parent_run_id: str, configured_uri: str | None) -> None:
    """The parent run and the tracking store. The default store is recorded relative to the results
    folder (null), so a copied or moved results folder resumes and reports into its own copy."""
    write_text(json.dumps({"parent_run_id": parent_run_id, "tracking_uri": configured_uri}), paths.tracking_file)


def read_tracking(paths: StudyPaths) -> tuple[str, str | None] | None:
    """(parent run id, configured tracking URI or None for the default), None before the search started."""
    if not paths.tracking_file.exists():
        return None
    try:
        saved = json.loads(paths.tracking_file.read_text())
        return str(saved["parent_run_id"]), saved.get("tracking_uri")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise StudyError(
            f"{paths.tracking_file}: unreadable (not the JSON ncstudy writes); `run --restart` starts the study afresh"
        ) from None


# -- how the last driver ended ------------------------------------------------------------------


def write_state(paths: StudyPaths, state: str, **counts: int) -> None:
    """state: running | interrupted | failed | finished, with trial counts."""
    write_text(json.dumps({"state": state, **counts, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}), paths.state_file)


def read_state(paths: StudyPaths) -> str | None:
    try:
        return str(json.loads(paths.state_file.read_text())["state"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None


def is_unfinished(paths: StudyPaths) -> bool:
    """A study whose last driver did not finish every trial (or never started the search)."""
    return paths.config_file.exists() and read_state(paths) != "finished"


# -- the lock ---------------------------------------------------------------------------------


def _holder(lock: Path) -> dict:
    """Who wrote the lock file: {pid, host, since}; {} when empty or unreadable."""
    try:
        holder = json.loads(lock.read_text() or "{}")
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _in_use(folder: Path, holder: dict) -> str:
    return (
        f"{folder}: another ncstudy driver (pid {holder.get('pid', '?')} on {holder.get('host', '?')}, since "
        f"{holder.get('since', '?')}) is working on this study; wait for it, or stop it and "
        f"`{ncstudy_command('resume', folder.name, folder.parent)}`"
    )


def lock_held(folder: Path) -> bool:
    """Whether a live driver holds the study folder's lock now (a shared flock cannot be had)."""
    try:
        descriptor = os.open(folder / LOCK_FILE, os.O_RDONLY)
    except OSError:  # no lock file: no driver has worked here (or a copied folder)
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)
    return False


def held_by_this_process(folder: Path) -> bool:
    """Whether the lock file names this process as its holder (StudyLock writes pid and host)."""
    holder = _holder(folder / LOCK_FILE)
    return holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname()


class StudyLock:
    """`.lock` in the study folder, locked (flock, exclusive) while a driver works in it and holding
    that driver's pid, host and start time. The kernel releases the lock when its process ends,
    however it ends, so a lock is never stale: a file still naming a process that is gone is taken
    over, and that is said. A second driver is refused with one line naming the holder. The folder
    is created if needed; a lock file this driver created goes again on exit when no study was
    written (and so does a folder it created and left empty)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.path = folder / LOCK_FILE
        self._created_folder = False
        self._created_file = False
        self._descriptor: int | None = None

    @staticmethod
    def refuse_if_held(folder: Path) -> None:
        """Before Ray starts: refuse at once when a live driver holds the folder."""
        if lock_held(folder):
            raise StudyError(_in_use(folder, _holder(folder / LOCK_FILE)))

    def __enter__(self) -> "StudyLock":
        self._created_folder = not self.folder.exists()
        self._created_file = not self.path.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise StudyError(_in_use(self.folder, _holder(self.path))) from None
        previous = _holder(self.path)
        if previous:
            print(f"note: took over the lock of process {previous.get('pid')} on {previous.get('host')}, "
                  "which ended without releasing it", flush=True)  # fmt: skip
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, json.dumps(me).encode(), 0)
        self._descriptor = descriptor
        return self

    def __exit__(self, *exc) -> None:
        if self._descriptor is None:
            return
        os.ftruncate(self._descriptor, 0)  # released: an empty file names no holder
        if self._created_file and not (self.folder / "study.yaml").exists():
            self.path.unlink()  # refused before writing a study: nothing is left in the user's folder
            if self._created_folder and not any(self.folder.iterdir()):
                self.folder.rmdir()
        os.close(self._descriptor)  # closing releases the flock
        self._descriptor = None


# -- --restart ---------------------------------------------------------------------------------


def check_restart(paths: StudyPaths) -> None:
    """`--restart` deletes only this study's own folder: its study.yaml must name it."""
    try:
        saved = yaml.safe_load(paths.config_file.read_text())
        name = saved.get("name") if isinstance(saved, dict) else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        name = None
    if name != paths.name:
        raise StudyError(
            f"--restart: {paths.folder} holds no study named {paths.name!r} (its study.yaml is missing or names "
            "another); ncstudy deletes only its own study folders: move that folder away"
        )


def clear_for_restart(paths: StudyPaths) -> None:
    """Delete the previous study of this name, and only that (`check_restart`). Never follows a link
    (checked in `study_paths`; rmtree removes links inside, not their targets). The lock, held by
    this driver, stays, and so does its storage reserve (ncstudy.outputs.storage.Reserve)."""
    check_restart(paths)
    for entry in paths.folder.iterdir():
        if entry.name in (LOCK_FILE, RESERVE_FILE):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
