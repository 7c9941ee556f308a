"""The study driver: Ray Tune + Optuna over trials, each trial a Ray Train `TorchTrainer` built by
`ncstudy.trial.run_trial`. The searcher (ncstudy.search) is seeded from the study and persisted in
RESULTS/<name>/optuna.db. The driver also owns the study's life cycle: preflight checks, the MLflow
parent run, resume, and the results and report at the end.
"""

from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import ray
from ray import tune

from ncstudy.cluster import check_resources, check_shared_results, init_ray
from ncstudy.config import StudyConfig, dump_yaml, load_study, space_candidates, with_params
from ncstudy.data.build import build_data, load_source, source_key
from ncstudy.data.sources import Source
from ncstudy.errors import StudyError
from ncstudy.progress import StudyProgress
from ncstudy.report import build_report
from ncstudy.search import planned_trials, scheduler, searcher_and_space
from ncstudy.results import read_experiment, write_parquet, write_text
from ncstudy.tracking import TRIAL_TAG, StudyTracker, run_status, tracking_uri
from ncstudy.trial import TRIAL_DRIVER_RESOURCES, run_trial

TUNE_EXPERIMENT = "tune"


@dataclass(frozen=True)
class StudyPaths:
    """Where a study writes (GUIDE.md, "Outputs")."""

    results: Path
    name: str

    @property
    def folder(self) -> Path:
        return self.results / self.name

    @property
    def config_file(self) -> Path:
        return self.folder / "study.yaml"

    @property
    def ray_storage(self) -> Path:
        return self.folder / "ray"

    @property
    def tune_experiment(self) -> Path:
        return self.ray_storage / TUNE_EXPERIMENT

    @property
    def optuna_storage(self) -> str:
        return f"sqlite:///{(self.folder / 'optuna.db').resolve()}"


def _tune_run_config(study: StudyConfig, paths: StudyPaths, verbose: bool, fail_fast: bool = False) -> tune.RunConfig:
    """Tune's experiment folder under the study; our compact progress lines, Tune's tables with -v."""
    return tune.RunConfig(
        name=TUNE_EXPERIMENT,
        storage_path=str(paths.ray_storage.resolve()),
        failure_config=tune.FailureConfig(max_failures=0, fail_fast=fail_fast),
        callbacks=[StudyProgress(planned_trials(study), study.train.epochs + study.train.crt_epochs, study.search.metric)],
        verbose=1 if verbose else 0,
    )


def build_tuner(
    study: StudyConfig, paths: StudyPaths, tracker: StudyTracker, parent_run_id: str, source: Source,
    verbose: bool = False, fail_fast: bool = False,
) -> tune.Tuner:  # fmt: skip
    """The Tuner for a fresh study."""
    searcher, param_space, num_samples = searcher_and_space(study, paths.optuna_storage)
    return tune.Tuner(
        _trainable(study, paths, tracker, parent_run_id, source),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=study.search.metric,
            mode=study.search.mode,
            search_alg=searcher,
            scheduler=scheduler(study),
            num_samples=num_samples,
            max_concurrent_trials=study.search.max_concurrent,
            # A trial driver's process has imported torch, Ray Train and MLflow (seconds on a busy
            # node); the next trial reuses it instead of starting another (run_trial keeps no state).
            # Not with ASHA: a trial it stops is still inside trainer.fit(), Tune's reset of the
            # actor gives up after 2 s, and Tune then fails the next trial instead of starting a
            # fresh actor ("Could not re-use actor", seen in a CI run).
            reuse_actors=study.search.asha is None,
        ),
        run_config=_tune_run_config(study, paths, verbose, fail_fast),
    )


def preflight(study: StudyConfig) -> Source:
    """Load the data set and cut the splits for the base config and for every data value the space
    can produce, so a ratio that empties a class fails here, before anything is written."""
    source = load_source(study.data)
    build_data(study.data, source)
    for key, param in study.search.space.items():
        if key.startswith("data."):
            for value in space_candidates(param):
                trial_data = with_params(study, {key: value}).data
                build_data(trial_data, source if source_key(trial_data) == source_key(study.data) else None)
    return source


@dataclass(frozen=True)
class StudyOutcome:
    folder: Path
    finished: int
    failed: int
    tracking_uri: str
    parent_run_id: str


def _tracker(study: StudyConfig, results: Path) -> StudyTracker:
    return StudyTracker(
        tracking_uri(study.tracking.uri, results),
        study.tracking.experiment or study.name,
        artifact_root=None if study.tracking.uri else results / "mlartifacts",
    )


def _trainable(study: StudyConfig, paths: StudyPaths, tracker: StudyTracker, parent_run_id: str, source: Source):
    """run_trial with the study's fixed arguments; the decoded data set goes to the object store once."""
    return tune.with_resources(
        tune.with_parameters(
            run_trial,
            base=study.model_dump(mode="json"),
            tracker=tracker,
            parent_run_id=parent_run_id,
            ray_storage=str(paths.ray_storage.resolve() / "train"),
            shared_source=(source_key(study.data), [ray.put(source)]),
        ),
        TRIAL_DRIVER_RESOURCES,
    )


def run_study(
    study: StudyConfig, results: Path, restart: bool = False, verbose: bool = False, fail_fast: bool = False
) -> StudyOutcome:
    """Run a fresh study: validate the data, write study.yaml, search, write results and the report."""
    paths = StudyPaths(results.resolve(), study.name)
    if paths.config_file.exists() and not restart:
        if is_unfinished(results, study.name) and load_study(paths.config_file) == study:
            print(f"{paths.folder} holds an unfinished run of this study: resuming it (--restart starts afresh)")
            return resume_study(study.name, results, verbose)
        raise StudyError(
            f"{paths.folder}: a study named {study.name!r} is already there; "
            f"`python -m ncstudy resume {study.name}` continues it, `run --restart` replaces it"
        )
    source = preflight(study)
    check_resources(study, init_ray(study.resources.address, verbose))
    check_shared_results(paths.results, study.tracking.uri)
    if restart and paths.folder.exists():
        shutil.rmtree(paths.folder)
    paths.folder.mkdir(parents=True, exist_ok=True)
    write_text(dump_yaml(study), paths.config_file)

    tracker = _tracker(study, paths.results)
    parent_run_id = tracker.start_study(study.name, study.model_dump(mode="json"), paths.config_file)
    write_text(json.dumps({"parent_run_id": parent_run_id, "tracking_uri": tracker.uri}), paths.folder / "tracking.json")
    with _closing_on_error(tracker, parent_run_id):
        tuner = build_tuner(study, paths, tracker, parent_run_id, source, verbose, fail_fast)
        return _fit_and_finish(tuner, study, paths, tracker, parent_run_id)


@contextmanager
def _closing_on_error(tracker: StudyTracker, parent_run_id: str):
    """Never leave the study's runs RUNNING: KILLED on Ctrl-C (the parent and the trials it stopped,
    which leave their runs to the driver), FAILED on any other error."""
    try:
        yield
    except KeyboardInterrupt:
        tracker.close_interrupted(parent_run_id)
        tracker.finish(parent_run_id, "KILLED")
        raise
    except BaseException:
        tracker.finish(parent_run_id, "FAILED")
        raise


def resume_study(name: str, results: Path, verbose: bool = False) -> StudyOutcome:
    """Continue an interrupted study to its planned trial count: Tune restores the experiment and the
    searcher's state (the Optuna storage lives in the study folder too); finished trials are kept,
    unfinished ones resume from their last checkpoint, errored ones stay errored; MLflow runs the
    interruption left RUNNING are marked KILLED and a resumed trial reopens its own run."""
    paths = StudyPaths(results.resolve(), name)
    if not paths.config_file.exists():
        raise StudyError(f"{paths.config_file}: no study named {name!r} under {results}")
    study = load_study(paths.config_file)
    tracking_file = paths.folder / "tracking.json"
    if not tracking_file.exists() or not tune.Tuner.can_restore(str(paths.tune_experiment)):
        raise StudyError(f"{paths.folder}: the study never started searching; `run --restart` starts it afresh")
    saved = json.loads(tracking_file.read_text())
    tracker = StudyTracker(saved["tracking_uri"], study.tracking.experiment or study.name)
    parent_run_id = saved["parent_run_id"]
    source = preflight(study)
    check_resources(study, init_ray(study.resources.address, verbose))
    check_shared_results(paths.results, study.tracking.uri)
    tracker.close_interrupted(parent_run_id)
    tracker.client.update_run(parent_run_id, status="RUNNING")
    with _closing_on_error(tracker, parent_run_id):
        tuner = tune.Tuner.restore(
            str(paths.tune_experiment),
            trainable=_trainable(study, paths, tracker, parent_run_id, source),
            resume_unfinished=True,
            resume_errored=False,
        )
        return _fit_and_finish(tuner, study, paths, tracker, parent_run_id)


def is_unfinished(results: Path, name: str) -> bool:
    """A study folder whose search started but whose results were never written."""
    folder = results.resolve() / name
    return (folder / "tracking.json").exists() and not (folder / "trials.parquet").exists()


def _fit_and_finish(tuner, study, paths, tracker, parent_run_id) -> StudyOutcome:
    grid = tuner.fit()
    ended = {r.metrics.get("trial_id") for r in grid if r.error is None and r.metrics}
    children = tracker.children(parent_run_id)
    for run in children:  # a trial ASHA stopped is interrupted inside trainer.fit(): Tune says how it ended
        normal_end = run.data.tags.get(TRIAL_TAG) in ended
        if run.info.status == "RUNNING" or (normal_end and run.info.status == "FAILED"):
            tracker.finish(run.info.run_id, "FINISHED" if normal_end else "KILLED")
    run_ids = {run.data.tags.get(TRIAL_TAG): run.info.run_id for run in children}
    trials, epochs = read_experiment(paths.tune_experiment, study.train.epochs + study.train.crt_epochs, ended)
    done = trials[trials["status"] != "unfinished"] if len(trials) else trials
    done = done.assign(mlflow_run_id=done["trial_id"].map(run_ids)) if len(done) else done
    failed = sum(1 for result in grid if result.error is not None)
    write_parquet(done, paths.folder / "trials.parquet")
    write_parquet(epochs, paths.folder / "epochs.parquet")
    build_report([study.name], paths.results)
    tracker.log_artifacts(
        parent_run_id,
        [paths.folder / "report.md", paths.folder / "trials.parquet", paths.folder / "epochs.parquet",
         paths.folder / "tables", paths.folder / "figures"],
    )  # fmt: skip
    tracker.finish(parent_run_id, run_status(failed=len(done) == 0))
    return StudyOutcome(paths.folder, len(done), failed, tracker.uri, parent_run_id)
