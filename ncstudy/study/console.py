"""What a study driver prints, and what it keeps for RESULTS/<name>/driver.log instead.

The console of `run` and `resume` is ncstudy's own lines (ncstudy.study.progress and the summary).
A few messages of Ray Tune and Optuna repeat what those lines say, or say it once per epoch or per
trial at great length; `study_log` sends them to the study's driver.log (appended, one line per
record with its time, logger and level; a traceback follows its line) and, without -v, nowhere else:

- Tune's "Experiment state snapshotting has been triggered multiple times" (logger
  ray.tune.execution.experiment_state), which a single-worker trial's checkpoint per epoch can
  trigger on every epoch;
- Tune's "Trial task failed for trial ..." with the failed trial's whole traceback (logger
  ray.tune.execution.tune_controller): the progress line says the error's last line;
- Tune's "Trials did not complete: [...]" (logger ray.tune.tune), which the summary says per trial;
- Tune's "The `on_trial_result` operation took 0.53 s, which may be a performance bottleneck" and
  "Processing trial results took ..." (logger ray.tune.utils.util, `warn_if_slow`), on every epoch
  while the driver's MLflow logging competes for the CPU (a tracking server on a loaded head, or
  on a 2-core laptop): driver.log keeps them for whoever tunes the driver;
- Tune's "Ignore this message if the cluster is autoscaling. No trial is running ..." (logger
  ray.tune.execution.insufficient_resources_manager), every minute while trials wait for
  resources: ncstudy.study.capacity's "waiting for nodes" line says it, with what is being added;
- Tune's "Failed to fetch metrics for N trial(s)" (logger ray.tune.analysis.experiment_analysis),
  when a study stops before any trial reported;
- MLflow's "SQLAlchemy database error" with the whole SQLAlchemy traceback (logger
  mlflow.store.db.utils, `make_managed_session`), logged before MLflow raises the error that the
  driver turns into one line (a full disk: ncstudy.outputs.storage);
- Optuna's UserWarning "The reported value is ignored because this `step=N` is already reported"
  (warnings.warn in optuna.trial.Trial.report), which Tune's OptunaSearch triggers when a resumed
  trial reports again the epochs it ran after its last checkpoint: Optuna keeps the first value.

Only records of those loggers whose message starts with those words are held back; every other
message of Ray, Tune, Optuna and MLflow reaches the console as before. With -v all of them reach the console
too. `STUDY_LOG` is a logger of ncstudy's own for lines that belong in driver.log only (the path of
a failed trial's error file).

What the CLI quiets for the whole process before Ray starts is ncstudy.cli's `_quiet_libraries`.
"""

from __future__ import annotations

import logging
import re
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

DRIVER_LOG = "driver.log"

# (logger, the start of the message) of each message that goes to driver.log instead of the console.
ROUTED_RECORDS: tuple[tuple[str, str], ...] = (
    ("ray.tune.execution.experiment_state", "Experiment state snapshotting has been triggered multiple times"),
    ("ray.tune.execution.tune_controller", "Trial task failed for trial"),
    ("ray.tune.tune", "Trials did not complete"),
    ("ray.tune.utils.util", "The `"),  # warn_if_slow's DEFAULT_MESSAGE: "The `{name}` operation took ..."
    ("ray.tune.utils.util", "Processing trial results took"),
    ("ray.tune.execution.insufficient_resources_manager", "Ignore this message if the cluster is autoscaling"),
    ("ray.tune.analysis.experiment_analysis", "Failed to fetch metrics for"),
    ("mlflow.store.db.utils", "SQLAlchemy database error"),
)
# Optuna's warning (a UserWarning: optuna.trial.Trial.report calls warnings.warn).
ROUTED_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    (UserWarning, "The reported value is ignored because this"),
)

STUDY_LOG = logging.getLogger("ncstudy.study_log")  # driver.log only, while `study_log` is open
STUDY_LOG.propagate = False
STUDY_LOG.setLevel(logging.INFO)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class _LineFormatter(logging.Formatter):
    """`time logger LEVEL message` on one line (a message's own line breaks become spaces), then the
    traceback if the record has one; no terminal colours."""

    def format(self, record: logging.LogRecord) -> str:
        message = " ".join(line.strip() for line in record.getMessage().splitlines() if line.strip())
        text = f"{self.formatTime(record)} {record.name} {record.levelname} {message}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info).rstrip("\n")
        return _ANSI.sub("", text)


class _ToStudyLog(logging.Filter):
    """On one library logger: a record whose message starts with one of `starts` goes to the study's
    log, and to the console only if `verbose`; every other record passes untouched."""

    def __init__(self, starts: tuple[str, ...], handler: logging.Handler, verbose: bool):
        super().__init__()
        self.starts = starts
        self.handler = handler
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            held = record.getMessage().startswith(self.starts)
        except Exception:  # a record whose arguments do not format: not one of ours
            return True
        if held:
            self.handler.handle(record)
        return self.verbose or not held


class _StudyLogFile(logging.FileHandler):
    """Appends to driver.log, created at its first record. A log it cannot write (a full disk, a
    folder gone) says so once on stderr instead of logging's traceback per record."""

    failed = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            super().emit(record)  # opening the file at the first record may raise here (Python 3.11)
        except Exception:
            self.handleError(record)

    def handleError(self, record: logging.LogRecord) -> None:
        if not self.failed:
            self.failed = True
            error = sys.exc_info()[1]
            print(f"note: cannot write {self.baseFilename} ({error}); Ray's and Optuna's messages kept there are lost", file=sys.stderr)


@contextmanager
def study_log(folder: Path, verbose: bool) -> Iterator[Path]:
    """While open, the messages of ROUTED_RECORDS and ROUTED_WARNINGS, and STUDY_LOG's, are appended
    to `folder`/driver.log (created at the first one); without `verbose` they reach no console.
    Yields the log's path. Opened by the driver once it holds the study folder's lock."""
    path = Path(folder) / DRIVER_LOG
    handler = _StudyLogFile(path, mode="a", encoding="utf-8", delay=True)
    handler.setFormatter(_LineFormatter())
    starts: dict[str, tuple[str, ...]] = {}
    for name, start in ROUTED_RECORDS:
        starts[name] = starts.get(name, ()) + (start,)
    filters = [(logging.getLogger(name), _ToStudyLog(prefixes, handler, verbose)) for name, prefixes in starts.items()]
    for logger, routed in filters:
        logger.addFilter(routed)
    STUDY_LOG.addHandler(handler)
    previous_show = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        text = str(message)
        if any(issubclass(category, kind) and text.startswith(start) for kind, start in ROUTED_WARNINGS):
            record = logging.LogRecord(
                "py.warnings", logging.WARNING, filename, lineno, f"{category.__name__}: {text} ({filename}:{lineno})", None, None
            )
            handler.handle(record)
            if not verbose:
                return
        previous_show(message, category, filename, lineno, file, line)

    warnings.showwarning = showwarning
    try:
        yield path
    finally:
        if warnings.showwarning is showwarning:
            warnings.showwarning = previous_show
        STUDY_LOG.removeHandler(handler)
        for logger, routed in filters:
            logger.removeFilter(routed)
        handler.close()
