"""Each trial's MLflow run, logged by the study driver from what Tune hands it: a Ray Tune `Callback`
in the driver, as Ray's own MLflowLoggerCallback is (ray.air.integrations.mlflow).

Why the driver, and not the process that trains: that process then imports neither MLflow nor
SQLAlchemy nor matplotlib (about 2.5 s and 100 MiB of a single-worker trial actor on 2 cores,
benchmarks/ray_overhead.py and memory.py); one process writes the tracking store, so trials never
race on it (the sqlite dataset-input race of ncstudy.study.tracking.log_dataset_input); and on a
multi-node cluster the sqlite file is written on the head node only, never over a network file
system from a worker node. Both paths report through Tune (a single-worker trial's actor directly, a
multi-worker trial's rank 0 through TuneReportCallback), so both are logged here alike.

- `on_trial_start`: the trial's child run under the study's parent run, created, or reopened when
  the trial resumes (ncstudy.study.tracking.StudyTracker.start_trial), named by its sampled values
  in short (`trial_run_name`), with them at full precision as its description (`trial_description`).
- `on_trial_result`: the report's moving values as metrics at step = epoch, its constants as params
  (ncstudy.study.tracking.TrialRunLog; a restored trial's repeated epochs are logged once).
- `on_trial_complete`: the trial's figures, drawn here from its final checkpoint's collapse.npz
  (the report side draws, never the trial), and that file, then FINISHED. `on_trial_error`: FAILED.
  Trials the study leaves unfinished are closed by the driver when the search ends
  (ncstudy.study.driver._close_trial_runs), which also reconciles every run with Tune's last word.

Tune pickles its callbacks with the experiment and `resume` gets that copy back, so nothing here is
bound to one driver: each trial's study is found from its own storage path (STUDY/ray/tune/<trial>,
as ncstudy.outputs.results.ReportLog does), and the study's config and parent run are read from the
study folder, so a moved results folder logs into its own store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.tune import Callback

from ncstudy.config import StudyConfig, load_study, with_params
from ncstudy.outputs.formatting import flatten
from ncstudy.outputs.results import TUNE_BOOKKEEPING, checkpoint_folder
from ncstudy.outputs.study_folder import read_tracking, study_paths
from ncstudy.study.tracking import StudyTracker, TrialRunLog, folder_tag, study_tracker, trial_description, trial_run_name

# What Tune adds to a trial's report, and the checkpoint path a multi-worker trial's report carries
# (ray.tune.integration.ray_train): none of it is the trial's measurement.
NOT_LOGGED = TUNE_BOOKKEEPING | {"trial_id", "checkpoint_path"}


class TrialRuns(Callback):
    def __init__(self) -> None:
        self.setup()

    def setup(self, **info) -> None:
        """At the start of every `fit`, the first and each resumed one: nothing carried over."""
        self._studies: dict[Path, tuple[StudyConfig, StudyTracker, str]] = {}
        self._logs: dict[str, TrialRunLog] = {}

    def _study_of(self, trial) -> tuple[StudyConfig, StudyTracker, str]:
        """(config, tracker, parent run id) of the study whose Tune folder holds `trial`."""
        folder = Path(trial.path).parents[2]
        if folder not in self._studies:
            paths = study_paths(folder.parent, folder.name)
            study = load_study(paths.config_file)
            parent_run_id, _ = read_tracking(paths)
            self._studies[folder] = (study, study_tracker(study, paths.results), parent_run_id)
        return self._studies[folder]

    def _log_of(self, trial) -> TrialRunLog:
        """The trial's run log, its run started (or reopened) on first use."""
        if trial.trial_id not in self._logs:
            study, tracker, parent_run_id = self._study_of(trial)
            params = dict(trial.config)
            config = with_params(study, params)
            tree = config.model_dump(mode="json")
            name = trial_run_name(params, trial.trial_id, several_seeds=len(config.search.seed_list) > 1)
            description = trial_description(params, trial.trial_id)
            folder = folder_tag(Path(trial.path).parents[2])
            run_id = tracker.start_trial(parent_run_id, config.name, trial.trial_id, flatten(tree), name, description, folder)
            self._logs[trial.trial_id] = TrialRunLog(tracker.uri, run_id, tree["data"])
        return self._logs[trial.trial_id]

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        self._log_of(trial)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict[str, Any], **info) -> None:
        self._log_of(trial).log_report({key: value for key, value in result.items() if key not in NOT_LOGGED})

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        """Completed: every epoch ran, or Tune stopped it (a scheduler such as ASHA); both are FINISHED."""
        log = self._log_of(trial)
        folder = checkpoint_folder(Path(trial.path), trial.last_result or {})
        if folder is not None:
            log.log_final(Path(folder))
        self._close(trial, "FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._close(trial, "FAILED")

    def _close(self, trial, status: str) -> None:
        log = self._log_of(trial)
        self._study_of(trial)[1].finish(log.run_id, status)
        del self._logs[trial.trial_id]
