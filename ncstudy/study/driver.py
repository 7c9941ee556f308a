"""The study driver: Ray Tune + Optuna over trials, each trial run by one of the two trainables of
ncstudy.study.trial (the engine in the Tune trial actor, or a Ray Train `TorchTrainer` for DDP). The
searcher (ncstudy.study.search) is seeded from the study and persisted in RESULTS/<name>/optuna.db.
The driver also owns the study's life cycle: preflight checks, the lock on the study folder, the
MLflow parent run and, through its Tune callback ncstudy.study.trial_runs, every trial's run,
interruption and resume, and the results and report at the end. Every way a driver ends leaves the
folder, MLflow and Optuna saying the same thing about every trial (docs/reliability.md, "Resume, faults and
seeds").
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import ray
from ray import tune

from ncstudy.config import StudyConfig, check_study_name, dump_yaml, load_study, space_candidates, with_params
from ncstudy.data.build import StudyData, build_data, load_source, source_key
from ncstudy.data.sources import Source
from ncstudy.errors import StorageFault, StudyError
from ncstudy.outputs.commands import ncstudy_command, no_study_error
from ncstudy.outputs.report import build_report
from ncstudy.smoke import SMOKE_FILE
from ncstudy.outputs.results import ReportLog, read_experiment, write_parquet, write_text
from ncstudy.strata import strata, stratum_slug
from ncstudy.study.capacity import NODE_WAIT, CapacityWatch
from ncstudy.study.cluster import (
    check_local_resources, check_reachable, check_resources, check_shared_results, init_ray, trial_needs,
)  # fmt: skip
from ncstudy.study.console import study_log
from ncstudy.study.interrupt import INTERRUPTION
from ncstudy.study.lost_trials import requeue_lost_trials
from ncstudy.study.optuna_records import close_orphaned, record_resumed
from ncstudy.study.progress import StudyProgress
from ncstudy.study.search import OPTUNA_FILE, open_optuna_in, planned_trials, scheduler, searched_metric, searcher_and_space
from ncstudy.outputs.study_folder import (
    LOCK_FILE, TUNE_EXPERIMENT, StudyLock, StudyPaths, check_restart, clear_for_restart, is_unfinished, read_tracking,
    study_paths, write_state, write_tracking,
)  # fmt: skip
from ncstudy.outputs.storage import RESERVE_FILE, Reserve, check_stores, check_writable, storage_fault
from ncstudy.outputs.study_record import check_unedited, differences, write_record
from ncstudy.study.relocation import relocate
from ncstudy.study.stale_checkpoints import restore_named_checkpoints
from ncstudy.study.tracking import (
    FOLDER_TAG, LOCAL_UI, TRIAL_TAG, StudyTracker, experiment_page, folder_tag, study_tracker,
)  # fmt: skip
from ncstudy.study.trial import TRIAL_DRIVER_RESOURCES, run_single_worker_trial, run_trial
from ncstudy.study.trial_runs import TrialRuns

# How each trial status of ncstudy.outputs.results ends its MLflow run.
RUN_STATUS = {"finished": "FINISHED", "stopped": "FINISHED", "failed": "FAILED", "interrupted": "KILLED", "unfinished": "KILLED"}


def _tune_retries(study: StudyConfig, fail_fast: bool) -> int:
    """A single-worker trial is retried by Tune from its last checkpoint; a multi-worker one by Ray
    Train inside the trial (ncstudy.study.trial), so not by Tune again. Tune's fail_fast allows no retry."""
    return study.resources.max_failures if study.resources.num_workers == 1 and not fail_fast else 0


def _tune_run_config(study: StudyConfig, paths: StudyPaths, verbose: bool, fail_fast: bool = False) -> tune.RunConfig:
    """Tune's experiment folder under the study; our compact progress lines, Tune's tables with -v."""
    return tune.RunConfig(
        name=TUNE_EXPERIMENT,
        storage_path=str(paths.ray_storage.resolve()),
        failure_config=tune.FailureConfig(max_failures=_tune_retries(study, fail_fast), fail_fast=fail_fast),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),  # single-worker trials: the latest epoch's
        callbacks=[
            ReportLog(),
            TrialRuns(),
            StudyProgress(
                planned_trials(study), study.train.total_epochs, searched_metric(study)[0],
                capacity=CapacityWatch(trial_needs(study), study.resources.node_wait_s),
            ),  # fmt: skip
        ],
        verbose=1 if verbose else 0,
    )


def build_tuner(
    study: StudyConfig, paths: StudyPaths, source: Source, max_concurrent: int, verbose: bool = False, fail_fast: bool = False
) -> tune.Tuner:
    """The Tuner for a fresh study (its parent MLflow run already recorded: TrialRuns reads it)."""
    open_optuna_in(paths.folder)
    searcher, param_space, num_samples = searcher_and_space(study)
    return tune.Tuner(
        _trainable(study, paths, source),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            # Several objectives: no single metric ranks trials, so Tune is given none (the searcher
            # has the lists; ASHA, which needs one, is refused by the schema).
            metric=None if study.search.multi_objective else study.search.metric,
            mode=None if study.search.multi_objective else study.search.mode,
            search_alg=searcher,
            scheduler=scheduler(study),
            num_samples=num_samples,
            max_concurrent_trials=max_concurrent,
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
    or the strata can produce, so a ratio that empties a class, or a frequency group an objective
    measures, fails here, before anything is written."""
    source = load_source(study.data)
    _check_objective_groups(study, build_data(study.data, source), "")
    candidates = {key: space_candidates(param) for key, param in study.search.space.items()}
    candidates.update({key: list(values) for key, values in study.search.strata.items()})
    for key, values in candidates.items():
        if key.startswith("data."):
            for value in values:
                trial_data = with_params(study, {key: value}).data
                built = build_data(trial_data, source if source_key(trial_data) == source_key(study.data) else None)
                _check_objective_groups(study, built, f" at {key} = {value}")
    return source


def _check_objective_groups(study: StudyConfig, data: StudyData, where: str) -> None:
    """An objective on a frequency group (val_acc_few) needs the group to hold a class: an empty
    group's accuracy is missing (NaN), which Optuna cannot rank, so the search would learn nothing."""
    for name in study.search.objective_directions:
        group = name.removeprefix("val_acc_")
        if group in data.groups and not data.groups[group]:
            key = "search.objectives" if study.search.multi_objective else "search.metric"
            raise StudyError(
                f"{key}: {name} is never measured: the split{where} has no {group}-shot class "
                "(data.shot_split groups the classes); choose another objective or split"
            )


@dataclass(frozen=True)
class StudyOutcome:
    """How a driver ended: counts of the planned trials by status, and the failed trials' details."""

    folder: Path
    planned: int
    finished: int  # ran every epoch, or stopped early by ASHA: both as the study planned
    failed: list[tuple[str, int, str]] = field(default_factory=list)  # (trial id, epochs done, error)
    interrupted: bool = False
    tracking_uri: str = ""
    runs_page: str = ""  # the study's runs in the MLflow UI (ncstudy.study.tracking.experiment_page)

    @property
    def unfinished(self) -> int:
        return self.planned - self.finished - len(self.failed)

    @property
    def complete(self) -> bool:
        return self.finished == self.planned


def _trainable(study: StudyConfig, paths: StudyPaths, source: Source):
    """The trial function of the study's path (ncstudy.study.trial) with the study's fixed arguments; the
    decoded data set goes to the object store once. A single-worker trial's actor holds the trial's
    CPU and GPU; a multi-worker trial's actor only waits on its TorchTrainer, whose workers hold them."""
    fixed = {
        "base": study.model_dump(mode="json"),
        "shared_source": (source_key(study.data), [ray.put(source)]),
    }
    res = study.resources
    if res.num_workers == 1:
        resources = {"cpu": res.cpus_per_worker, **({"gpu": res.gpus_per_worker} if res.gpus_per_worker else {})}
        return tune.with_resources(tune.with_parameters(run_single_worker_trial, **fixed), resources)
    train_storage = str(paths.ray_storage.resolve() / "train")
    return tune.with_resources(tune.with_parameters(run_trial, ray_storage=train_storage, **fixed), TRIAL_DRIVER_RESOURCES)


def _start_ray(study: StudyConfig, paths: StudyPaths, verbose: bool) -> int:
    """Ray, and what it must hold before anything is written; returns the trials to run at once.
    What needs no Ray (a GPU this machine lacks when Ray would be local) is refused before it starts."""
    check_local_resources(study)
    may_grow = init_ray(study.resources.address, verbose)
    NODE_WAIT.watching = may_grow  # trials that wait for nodes are watched (ncstudy.study.capacity)
    INTERRUPTION.reclaim()
    max_concurrent = check_resources(study, may_grow)
    check_shared_results(paths.results, study.tracking.uri)
    return max_concurrent


def _existing_study(study: StudyConfig, paths: StudyPaths, restart: bool) -> str:
    """What `run` does with the study folder: "new" (empty or absent), "resume" (an unfinished run of
    this very study), "restart" (--restart over this study's folder); anything else is refused with
    one line. Asked before Ray starts, and again under the lock (another driver may have written since)."""
    if not paths.folder.is_dir() or not any(entry.name not in (LOCK_FILE, RESERVE_FILE) for entry in paths.folder.iterdir()):
        return "new"
    if restart:
        check_restart(paths)
        return "restart"
    if paths.config_file.exists():
        saved = load_study(paths.config_file)
        if is_unfinished(paths) and saved == study:
            check_unedited(paths, saved.model_dump(mode="json"))
            return "resume"
        changed = differences(saved.model_dump(mode="json"), study.model_dump(mode="json"))
        given = f"; the file given differs from the saved study ({'; '.join(changed)})" if changed else ""
        raise StudyError(
            f"{paths.folder}: a study named {study.name!r} is already there{given}; "
            f"`{ncstudy_command('resume', study.name, paths.results)}` continues it, `run --restart` replaces it"
        )
    raise StudyError(f"{paths.folder}: holds files but no study; choose another name or move that folder away")


def run_study(
    study: StudyConfig, results: Path, restart: bool = False, verbose: bool = False, fail_fast: bool = False,
    smoke: dict | None = None,
) -> StudyOutcome:
    """Run a fresh study: validate the data, write study.yaml (and smoke.json, the record of a
    `--smoke` copy: ncstudy.study_file.StudyRead.smoke_record), search, write results and the report.
    Running an unfinished study of the same config again resumes it."""
    paths = study_paths(results, study.name)
    StudyLock.refuse_if_held(paths.folder)
    _check_storage(study, paths, resuming=_existing_study(study, paths, restart) == "resume")
    check_reachable(study)
    source = preflight(study)
    max_concurrent = _start_ray(study, paths, verbose)
    with StudyLock(paths.folder), study_log(paths.folder, verbose), _stopped_by_storage_faults(paths):
        found = _existing_study(study, paths, restart)
        if found == "resume":
            print(f"{paths.folder} holds an unfinished run of this study: resuming it (--restart starts afresh)")
            return _resume_locked(study, paths, source, max_concurrent, verbose)
        if found == "restart":
            clear_for_restart(paths)
        write_text(dump_yaml(study), paths.config_file)
        write_record(paths, study.model_dump(mode="json"))
        if smoke is not None:
            write_text(json.dumps(smoke, indent=1), paths.folder / SMOKE_FILE)
        return _start_search(study, paths, source, max_concurrent, verbose, fail_fast)


def _start_search(
    study: StudyConfig, paths: StudyPaths, source: Source, max_concurrent: int, verbose: bool, fail_fast: bool = False
) -> StudyOutcome:
    """The study's parent run, recorded before any trial starts, then the search."""
    tracker = study_tracker(study, paths.results)
    parent_run_id = tracker.start_study(study.name, study.model_dump(mode="json"), paths.config_file)
    write_tracking(paths, parent_run_id, study.tracking.uri)
    write_state(paths, "running")
    tuner = build_tuner(study, paths, source, max_concurrent, verbose, fail_fast)
    return _fit_and_finish(tuner, study, paths, tracker, parent_run_id)


def resume_study(name: str, results: Path, verbose: bool = False) -> StudyOutcome:
    """Continue an interrupted study to its planned trial count (see `_resume_locked`)."""
    paths = study_paths(results, check_study_name(name))
    if not paths.config_file.exists():
        raise no_study_error(name, results)
    study = load_study(paths.config_file)
    check_unedited(paths, study.model_dump(mode="json"))
    read_tracking(paths)  # a corrupt record fails here, before Ray starts
    StudyLock.refuse_if_held(paths.folder)
    _check_storage(study, paths, resuming=True)
    check_reachable(study)
    source = preflight(study)
    max_concurrent = _start_ray(study, paths, verbose)
    with StudyLock(paths.folder), study_log(paths.folder, verbose), _stopped_by_storage_faults(paths):
        return _resume_locked(study, paths, source, max_concurrent, verbose)


def _check_storage(study: StudyConfig, paths: StudyPaths, resuming: bool) -> None:
    """Before Ray starts: the folder takes files and has room; the stores a resume reads are readable
    (a corrupt one is named with the way out before any run is marked RUNNING)."""
    check_writable(paths.folder)
    if resuming:
        states = sorted(paths.tune_experiment.glob("experiment_state-*.json"))[-1:]  # the one Tune restores
        stores = [paths.folder / OPTUNA_FILE, *([] if study.tracking.uri else [paths.results / "mlflow.db"]), *states]
        check_stores(paths.folder, paths.results, stores)


@contextmanager
def _stopped_by_storage_faults(paths: StudyPaths):
    """A disk that fills up (or a folder that turns read-only) while the driver works stops the study
    as an interruption (StorageFault, exit status 75) instead of a traceback; the reserve held
    meanwhile is given back first, so the clean-up of `_fit_and_finish` has room."""
    reserve = Reserve(paths.folder)
    reserve.hold()
    try:
        yield
    except Exception as error:
        fault = storage_fault(error)
        if fault is None:
            raise
        raise StorageFault(
            f"{paths.folder}: {fault}; the study stopped and keeps what it wrote: make room (or make the folder "
            f"writable), then `{ncstudy_command('resume', paths.name, paths.results)}` continues it"
        ) from error
    finally:
        reserve.release()


def _resume_locked(study: StudyConfig, paths: StudyPaths, source: Source, max_concurrent: int, verbose: bool) -> StudyOutcome:
    """Tune restores the experiment and the searcher's state (the Optuna storage lives in the study
    folder too); finished trials are kept, interrupted ones resume from their last checkpoint, failed
    ones stay failed unless their process was lost (ncstudy.study.lost_trials); MLflow runs the
    interruption left RUNNING are marked KILLED and a resumed trial reopens its own. A study
    interrupted before Tune first saved its state ran nothing that resume could continue: its search
    starts again under the same parent run. A copied or moved folder is first pointed at where it
    is now (ncstudy.study.relocation)."""
    moved = relocate(paths, default_store=not study.tracking.uri)
    if moved:
        print(moved, flush=True)
    open_optuna_in(paths.folder)
    record = read_tracking(paths)
    if record is None:  # interrupted before the parent run was recorded
        return _start_search(study, paths, source, max_concurrent, verbose)
    parent_run_id, _ = record
    tracker = study_tracker(study, paths.results)
    tracker.close_interrupted(parent_run_id)
    tracker.client.update_run(parent_run_id, status="RUNNING")
    tracker.client.set_tag(parent_run_id, FOLDER_TAG, folder_tag(paths.folder))  # a copy's resume says so
    write_state(paths, "running")
    if tune.Tuner.can_restore(str(paths.tune_experiment)):
        for line in restore_named_checkpoints(paths.tune_experiment):  # a driver killed mid-save (module docstring)
            print(f"note: {line}")
        for line in requeue_lost_trials(paths.tune_experiment):  # a trial's process lost, not its code failing
            print(f"note: {line}")
        tuner = tune.Tuner.restore(
            str(paths.tune_experiment),
            trainable=_trainable(study, paths, source),
            resume_unfinished=True,
            resume_errored=False,
        )
    else:
        tuner = build_tuner(study, paths, source, max_concurrent, verbose)
    return _fit_and_finish(tuner, study, paths, tracker, parent_run_id)


def _fit_and_finish(tuner: tune.Tuner, study: StudyConfig, paths: StudyPaths, tracker: StudyTracker, parent_run_id: str) -> StudyOutcome:
    """Run the search; then, however it ended, make the results folder, MLflow and Optuna agree.
    A second Ctrl-C (or one after the search, while the results are written) stops at once: what
    ran is marked KILLED and `resume` finishes the job.

    Tune keeps a single-worker trial's latest checkpoint only, and so saves its experiment state
    after each one (what keeps `resume` pointing at a checkpoint that exists); with epochs shorter
    than 5 s it warns about that on every epoch, so the warning is off (a small local copy). Set
    here, before Tune reads it, for a fresh search and a restored one alike.

    Trials that waited `resources.node_wait_s` for nodes that never came stop the search as an
    interruption does (ncstudy.study.capacity): the study ends interrupted, its state saved, and the
    reason is one error line (exit status 2, as for a trial larger than a cluster that cannot grow)."""
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    NODE_WAIT.reason = None
    try:
        with INTERRUPTION.tune_loop():
            tuner.fit()
        outcome = _finish(study, paths, tracker, parent_run_id)
    except KeyboardInterrupt:
        _stop_interrupted(tracker, paths, parent_run_id)
        raise
    except BaseException as error:
        if INTERRUPTION.stopped_at_once:
            # The KeyboardInterrupt landed inside a library call that turned it into its own error:
            # sqlite3 reports an interrupted query as OperationalError, which MLflow wraps in an
            # MlflowException. It is still the user's Ctrl-C: exit 130, state interrupted.
            _stop_interrupted(tracker, paths, parent_run_id)
            raise KeyboardInterrupt from error
        if storage_fault(error):  # stopped like an interruption; the writes may fail again: `resume` completes them
            Reserve(paths.folder).release()
            with suppress(Exception):
                _stop_interrupted(tracker, paths, parent_run_id)
            raise
        tracker.close_interrupted(parent_run_id)
        tracker.finish(parent_run_id, "FAILED")
        write_state(paths, "failed")
        raise
    if NODE_WAIT.reason:
        raise StudyError(
            f"{NODE_WAIT.reason}. The study stopped and keeps its state ({outcome.finished} of {outcome.planned} "
            f"trials finished): fix the cluster, then `{ncstudy_command('resume', paths.name, paths.results)}` continues it"
        )
    return outcome


def _stop_interrupted(tracker: StudyTracker, paths: StudyPaths, parent_run_id: str) -> None:
    tracker.close_interrupted(parent_run_id)
    tracker.finish(parent_run_id, "KILLED")
    write_state(paths, "interrupted")


def _finish(study: StudyConfig, paths: StudyPaths, tracker: StudyTracker, parent_run_id: str) -> StudyOutcome:
    """Trials' statuses from Tune, their MLflow runs closed to match, the tables, report and best
    configuration, and the state the next driver reads."""
    trials, epochs = read_experiment(paths.tune_experiment, study.train.total_epochs)
    outcome = _outcome(study, paths, trials, tracker)
    trials = _close_trial_runs(tracker, parent_run_id, trials)
    if not outcome.interrupted:
        close_orphaned(study, paths.folder, paths.optuna_storage)
        record_resumed(study, paths.folder, paths.optuna_storage, trials)
    done = trials[trials["status"].isin(["finished", "stopped"])] if len(trials) else trials
    write_parquet(done, paths.folder / "trials.parquet")
    write_parquet(epochs, paths.folder / "epochs.parquet")
    build_report([study.name], paths.results)
    if study.search.multi_objective:  # no best trial: the report's fronts (tables/, figures/) are the outcome
        tracker.tag_objectives(parent_run_id, study.search.objective_directions)
    for stratum in strata(study) if not study.search.multi_objective else ():  # one best per stratum
        rows = trials
        for key, value in stratum.items():
            column = rows[f"param.{key}"] if f"param.{key}" in rows else None
            rows = rows.iloc[:0] if column is None else rows[column.isna() if value is None else column == value]
        prefix = f"{stratum_slug(stratum)}/" if stratum else ""
        tracker.log_best(parent_run_id, rows, study.search.metric, study.search.mode, prefix)
    tracker.log_artifacts(
        parent_run_id,
        [paths.folder / "report.md", paths.folder / "trials.parquet", paths.folder / "epochs.parquet",
         paths.folder / "tables", paths.folder / "figures", paths.folder / SMOKE_FILE],  # missing files are skipped
    )  # fmt: skip
    state = "interrupted" if outcome.interrupted else "finished" if outcome.complete else "failed"
    tracker.finish(parent_run_id, {"interrupted": "KILLED", "finished": "FINISHED", "failed": "FAILED"}[state])
    write_state(paths, state, planned=outcome.planned, finished=outcome.finished, failed=len(outcome.failed))
    return outcome


def _outcome(study: StudyConfig, paths: StudyPaths, trials: pd.DataFrame, tracker: StudyTracker) -> StudyOutcome:
    planned = planned_trials(study)
    rows = trials if len(trials) else pd.DataFrame(columns=["trial_id", "status", "epochs_done", "error"])
    finished = int(rows["status"].isin(["finished", "stopped"]).sum())
    failed = [(r.trial_id, int(r.epochs_done), str(r.error)) for r in rows[rows["status"] == "failed"].itertuples()]
    interrupted = INTERRUPTION.interrupted or (finished + len(failed) < planned and not failed)
    ui = tracker.uri if tracker.uri.startswith(("http://", "https://")) else LOCAL_UI
    page = experiment_page(ui, tracker.experiment_id, *study.search.first_objective)
    return StudyOutcome(paths.folder, planned, finished, failed, interrupted, tracker.uri, page)


def _close_trial_runs(tracker: StudyTracker, parent_run_id: str, trials: pd.DataFrame) -> pd.DataFrame:
    """Each trial's MLflow run ends as its trial did (RUN_STATUS); a run whose trial Tune no longer
    knows (an attempt killed before Tune saved it, then run again under a new id) ends KILLED.
    Returns `trials` with the `mlflow_run_id` of each."""
    status_of = dict(zip(trials["trial_id"], trials["status"])) if len(trials) else {}
    run_ids = {}
    for run in tracker.children(parent_run_id):
        trial_id = run.data.tags.get(TRIAL_TAG)
        wanted = RUN_STATUS[status_of[trial_id]] if trial_id in status_of else "KILLED"
        if trial_id in status_of:
            run_ids[trial_id] = run.info.run_id
        if run.info.status != wanted and (trial_id in status_of or run.info.status == "RUNNING"):
            tracker.finish(run.info.run_id, wanted)
    return trials.assign(mlflow_run_id=trials["trial_id"].map(run_ids)) if len(trials) else trials
