"""RESULTS/<name>/record.json: what `run` started the study with, so that a later driver can tell
when the folder was copied or moved (its recorded place) and when the saved study.yaml was edited
(its fingerprint and settings), instead of silently resuming something else
(docs/reliability.md, "A copied or moved study folder" and "An edited record").
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ncstudy.errors import StudyError
from ncstudy.outputs.commands import ncstudy_command
from ncstudy.outputs.formatting import flatten
from ncstudy.outputs.results import write_text
from ncstudy.outputs.study_folder import StudyPaths

RECORD_FILE = "record.json"


def _fingerprint(config_file: Path) -> str:
    return hashlib.sha256(config_file.read_bytes()).hexdigest()


def _record_file(paths: StudyPaths) -> Path:
    return paths.folder / RECORD_FILE


def write_record(paths: StudyPaths, settings: dict[str, Any]) -> None:
    """After study.yaml is written: the folder's place, the file's fingerprint and its settings
    (the study's resolved config as JSON, to name what an edit changed)."""
    record = {"folder": str(paths.folder), "study_sha256": _fingerprint(paths.config_file), "settings": settings}
    write_text(json.dumps(record), _record_file(paths))


def read_record(paths: StudyPaths) -> dict[str, Any] | None:
    """The record, or None for a study folder written before records existed."""
    file = _record_file(paths)
    if not file.exists():
        return None
    try:
        record = json.loads(file.read_text())
        if not isinstance(record, dict) or not {"folder", "study_sha256", "settings"} <= record.keys():
            raise ValueError(record)
        return record
    except (OSError, UnicodeDecodeError, ValueError):
        raise StudyError(f"{file}: unreadable (not the JSON ncstudy writes); `run --restart` starts the study afresh") from None


def moved_from(paths: StudyPaths) -> Path | None:
    """Where the folder was when its study started, if that is not where it is now (a copy or a move)."""
    record = read_record(paths)
    if record is None or record["folder"] == str(paths.folder):
        return None
    return Path(record["folder"])


def note_new_place(paths: StudyPaths) -> None:
    """The folder is now recorded where it is (after its stores were pointed here)."""
    record = read_record(paths)
    if record is not None:
        write_text(json.dumps({**record, "folder": str(paths.folder)}), _record_file(paths))


def check_unedited(paths: StudyPaths, saved: dict[str, Any]) -> None:
    """Refuse a study whose saved study.yaml changed after `run` started it: its trials ran with the
    recorded settings, and a resume would mix the two (seen: an epochs edit resumed as two recipes).
    `saved` is the study.yaml now there, resolved (StudyConfig.model_dump(mode="json"))."""
    record = read_record(paths)
    if record is None or record["study_sha256"] == _fingerprint(paths.config_file):
        return
    changed = differences(record["settings"], saved)
    what = f" ({'; '.join(changed)})" if changed else " (comments or layout only)"
    raise StudyError(
        f"{paths.config_file}: edited after the study started{what}; its trials ran with the recorded settings: "
        f"undo the edit, or start afresh with `{ncstudy_command('run', str(paths.config_file), paths.results)} --restart`"
    )


def differences(before: dict[str, Any], after: dict[str, Any], limit: int = 4) -> list[str]:
    """'key: old -> new' for each setting that differs (at most `limit`, then how many more)."""
    old, new = flatten(before), flatten(after)
    lines = [f"{key}: {_text(old.get(key))} -> {_text(new.get(key))}" for key in sorted(old.keys() | new.keys())
             if old.get(key) != new.get(key)]  # fmt: skip
    return lines if len(lines) <= limit else [*lines[:limit], f"and {len(lines) - limit} more"]


def _text(value: Any) -> str:
    return "unset" if value is None else json.dumps(value)
