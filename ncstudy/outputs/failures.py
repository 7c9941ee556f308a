"""RESULTS/<name>/reports/<trial id>.error: how a trial failed, recorded by the driver's Tune callback
(ncstudy.outputs.results.ReportLog) when Tune reports the failure.

Tune's saved experiment state is not enough: a trial whose process died while its checkpoint was
being saved stays RUNNING there (Tune defers the trial's stop until that save resolves, which it
never does), and such a study was reported as interrupted. The record also says the failure's
cause, which decides what `resume` does with the trial (ncstudy.study.lost_trials):

- `lost_process`: Ray says the trial's process or node died under it (kill -9, the OOM killer, a
  node taken away): the machine's fault, so `resume` continues the trial from its checkpoint;
- `storage`: the trial could not write (a full disk, a read-only folder): the study stops at once
  as an interruption (the driver's storage-fault path, exit status 75) and `resume` continues it;
- `raised`: the trial's code raised (a diverged loss): failed, and it stays failed.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

from ncstudy.atomic import replaced_atomically
from ncstudy.outputs.formatting import trial_error_line, trial_error_text
from ncstudy.outputs.storage import Reserve

# Ray's errors of a lost process (ray.exceptions), by class name, and the words of Tune's error.txt,
# which holds the error's message without its class.
LOST_PROCESS_ERRORS = ("RayActorError", "ActorDiedError", "ActorUnavailableError", "WorkerCrashedError", "NodeDiedError",
                       "OutOfMemoryError")  # fmt: skip
LOST_PROCESS_WORDS = ("The actor died unexpectedly", "worker process has died", "The node with node id")
STORAGE_WORDS = {"No space left on device": errno.ENOSPC, "Disk quota exceeded": errno.EDQUOT,
                 "database or disk is full": errno.ENOSPC, "Read-only file system": errno.EROFS}  # fmt: skip
CAUSES = ("lost_process", "storage", "raised")


def _failure_file(study_folder: Path, trial_id: str) -> Path:
    return study_folder / "reports" / f"{trial_id}.error"


def _error_chain(trial) -> list[BaseException]:
    try:
        error = trial.get_pickled_error()
    except Exception:  # noqa: BLE001 (no pickled error, or one that does not unpickle here)
        error = None
    chain: list[BaseException] = []
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def failure_cause(trial) -> str:
    """lost_process, storage or raised (module docstring)."""
    text, chain = trial_error_text(trial), _error_chain(trial)
    if any(type(e).__name__ in LOST_PROCESS_ERRORS for e in chain) or any(w in text for w in (*LOST_PROCESS_ERRORS, *LOST_PROCESS_WORDS)):
        return "lost_process"
    if any(words in text for words in STORAGE_WORDS):
        return "storage"
    return "raised"


def record_failure(study_folder: Path, trial) -> None:
    """Write the trial's record {"error": its last line, "cause": failure_cause}. A storage fault
    first gives back the driver's reserve (ncstudy.outputs.storage.Reserve), so the record and the
    clean-up have room, then raises it as an OSError in the driver, which stops the study."""
    record = {"error": trial_error_line(trial), "cause": failure_cause(trial)}
    if record["cause"] == "storage":
        Reserve(study_folder).release()
    with replaced_atomically(_failure_file(study_folder, trial.trial_id)) as temporary:
        temporary.write_text(json.dumps(record))
    if record["cause"] == "storage":
        code = next(code for words, code in STORAGE_WORDS.items() if words in trial_error_text(trial))
        raise OSError(code, f"trial {trial.trial_id} could not write: {record['error']}")


def recorded_failure(study_folder: Path, trial_id: str) -> dict | None:
    """The trial's record (`record_failure`), if any."""
    try:
        record = json.loads(_failure_file(study_folder, trial_id).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("cause") in CAUSES and "error" in record else None


def forget_failure(study_folder: Path, trial_id: str) -> None:
    """A trial started again (`resume` continued it) has not failed."""
    _failure_file(study_folder, trial_id).unlink(missing_ok=True)
