"""MLflow tracking: a parent run per study, a child run per trial (`mlflow.parentRunId`).

MLflow 3 refuses its plain file store, so the local default is sqlite at an absolute path,
`RESULTS/mlflow.db`, with artifacts beside it in `RESULTS/mlartifacts`. Per-epoch metrics are
logged by `MlflowReportCallback`, a Ray Train callback that runs in the trial's Train controller and
sees what rank 0 reported, so each trial is logged once however many workers it has; it also logs
the figures the final checkpoint carries.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient
from ray.train.v2.api.callback import UserCallback

from ncstudy.checkpoint_files import COLLAPSE_FILE, FIGURES

PARENT_TAG = "mlflow.parentRunId"
STUDY_TAG = "ncstudy.study"
TRIAL_TAG = "ncstudy.trial_id"
MAX_PARAMS_PER_BATCH = 100


def tracking_uri(configured: str | None, results_dir: Path) -> str:
    """The configured URI, or sqlite at the absolute path RESULTS/mlflow.db."""
    if configured:
        return configured
    return f"sqlite:///{(results_dir / 'mlflow.db').resolve()}"


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _params(values: dict[str, Any]) -> list[Param]:
    return [Param(key, str(value)) for key, value in values.items()]


def _metrics(values: dict[str, Any], step: int) -> list[Metric]:
    stamp = int(time.time() * 1000)
    return [
        Metric(key, float(value), stamp, step)
        for key, value in values.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ]


class StudyTracker:
    """Creates and closes the study's MLflow runs; cheap to pickle (it holds only strings)."""

    def __init__(self, uri: str, experiment: str, artifact_root: Path | None = None):
        self.uri = uri
        self.experiment = experiment
        self.artifact_root = artifact_root
        self._experiment_id: str | None = None

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.uri)

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            found = self.client.get_experiment_by_name(self.experiment)
            if found is not None:
                self._experiment_id = found.experiment_id
            else:
                location = self.artifact_root.resolve().as_uri() if self.artifact_root else None
                self._experiment_id = self.client.create_experiment(self.experiment, artifact_location=location)
        return self._experiment_id

    def start_study(self, name: str, config: dict[str, Any], config_file: Path) -> str:
        """The parent run: the resolved config as params and as an artifact."""
        run = self.client.create_run(self.experiment_id, run_name=name, tags={STUDY_TAG: name})
        self.log_params(run.info.run_id, flatten(config))
        self.client.log_artifact(run.info.run_id, str(config_file))
        return run.info.run_id

    def children(self, parent_run_id: str) -> list:
        return self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'", max_results=10_000
        )

    def start_trial(self, parent_run_id: str, study: str, trial_id: str, params: dict[str, Any]) -> str:
        """The trial's child run under the study's parent run; a trial resumed after an interruption
        gets its own run back (set RUNNING again), so MLflow holds one run per trial."""
        for run in self.children(parent_run_id):
            if run.data.tags.get(TRIAL_TAG) == trial_id:
                self.client.update_run(run.info.run_id, status="RUNNING")
                return run.info.run_id
        run = self.client.create_run(
            self.experiment_id,
            run_name=trial_id,
            tags={PARENT_TAG: parent_run_id, STUDY_TAG: study, TRIAL_TAG: trial_id},
        )
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    def close_interrupted(self, parent_run_id: str) -> int:
        """Mark the runs an interrupted attempt left RUNNING as KILLED (the ones that resume reopen)."""
        stale = [run for run in self.children(parent_run_id) if run.info.status == "RUNNING"]
        for run in stale:
            self.finish(run.info.run_id, "KILLED")
        return len(stale)

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        items = _params(params)
        for start in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=items[start : start + MAX_PARAMS_PER_BATCH])

    def log_artifacts(self, run_id: str, paths: list[Path]) -> None:
        """Files as artifacts at the top level, folders under their own name."""
        for path in paths:
            if path.is_dir():
                self.client.log_artifacts(run_id, str(path), artifact_path=path.name)
            elif path.exists():
                self.client.log_artifact(run_id, str(path))

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)


class MlflowReportCallback(UserCallback):
    """Logs each report of rank 0 to the trial's child run: numbers as metrics at step=epoch,
    strings (the data fingerprint) once as params."""

    def __init__(self, uri: str, run_id: str):
        self.uri = uri
        self.run_id = run_id
        self._logged_params: set[str] = set()

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        values = metrics[0]
        step = int(values.get("epoch", 0))
        new_params = {
            k: v for k, v in values.items() if isinstance(v, str) and k not in self._logged_params
        }
        client = MlflowClient(tracking_uri=self.uri)
        client.log_batch(
            self.run_id,
            metrics=_metrics(values, step),
            params=_params(new_params),
            tags=[RunTag("ncstudy.last_epoch", str(step))],
        )
        self._logged_params.update(new_params)
        if checkpoint is not None:
            with checkpoint.as_directory() as folder:
                figures = Path(folder) / FIGURES
                if figures.is_dir():  # the final checkpoint: the trial's figures and per-class arrays
                    client.log_artifacts(self.run_id, str(figures), artifact_path="figures")
                    client.log_artifact(self.run_id, str(Path(folder) / COLLAPSE_FILE))


def run_status(failed: bool) -> str:
    return RunStatus.to_string(RunStatus.FAILED if failed else RunStatus.FINISHED)
