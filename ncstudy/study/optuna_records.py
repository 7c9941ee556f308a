"""The Optuna studies of a search, made to agree with its trials once no trial is left to continue
(the driver's `_finish`), so that optuna-dashboard and the report's Optuna figures hold only trials
that ended, each as it ended:

- an Optuna trial still RUNNING belongs to an attempt that was interrupted and run again by Tune
  under a new id: FAIL (`close_orphaned`);
- an Optuna trial told FAIL because its process was lost (kill -9, a lost node: Tune reports the
  failure, then `resume` continues the trial from its checkpoint, as Tune still had it running)
  whose configuration then finished: Optuna never reopens a finished trial, so the outcome is added
  as a COMPLETE trial of the same parameters, with the user attribute `ncstudy_resumed_from` naming
  the failed one (`record_resumed`). The FAIL stays: that attempt was lost.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import optuna
import pandas as pd

from ncstudy.config import StudyConfig
from ncstudy.strata import optuna_study_names, searches
from ncstudy.study.search import SEED_KEY

RESUMED_FROM = "ncstudy_resumed_from"


def _studies(study: StudyConfig, storage: str) -> list[tuple[optuna.Study, dict]]:
    """The search's Optuna studies (one, or one per stratum and, with split_by_variant, variant), each
    with the fixed values its trials carry beside its parameters; none for a grid or an unsearched study."""
    found = []
    for name, fixed in zip(optuna_study_names(study), searches(study)):
        try:
            found.append((optuna.load_study(study_name=name, storage=storage), fixed))
        except KeyError:  # no Optuna study of that name (a grid study)
            continue
    return found


def close_orphaned(study: StudyConfig, folder: Path, storage: str) -> None:
    """Optuna trials still RUNNING end FAIL (module docstring)."""
    if not (folder / "optuna.db").exists():
        return
    for optuna_study, _ in _studies(study, storage):
        for trial in optuna_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            optuna_study.tell(trial.number, state=optuna.trial.TrialState.FAIL)


def record_resumed(study: StudyConfig, folder: Path, storage: str, trials: pd.DataFrame) -> int:
    """For each FAIL Optuna trial whose configuration finished on every seed after a resume, a
    COMPLETE trial with the mean of each objective over the seeds (as SeedRepeater tells it);
    returns how many were added."""
    if not (folder / "optuna.db").exists() or not len(trials):
        return 0
    objectives, added = list(study.search.objective_directions), 0
    finished = trials[trials["status"].isin(["finished", "stopped"])]
    for optuna_study, fixed in _studies(study, storage):
        trials_now = optuna_study.get_trials(deepcopy=False)
        recorded = {t.user_attrs.get(RESUMED_FROM) for t in trials_now} | {
            _key(t.params) for t in trials_now if t.state == optuna.trial.TrialState.COMPLETE
        }
        for failed in (t for t in trials_now if t.state == optuna.trial.TrialState.FAIL):
            if failed.number in recorded or _key(failed.params) in recorded:
                continue
            configuration = {**fixed, **failed.params}  # its stratum's rows only: another may share the params
            per_objective = [_finished_values(finished, configuration, name) for name in objectives]
            if any(len(values) < len(study.search.seed_list) for values in per_objective):
                continue
            optuna_study.add_trial(optuna.trial.create_trial(
                params=failed.params, distributions=failed.distributions,
                values=[statistics.fmean(values) for values in per_objective], user_attrs={RESUMED_FROM: failed.number},
            ))  # fmt: skip
            added += 1
    return added


def _key(params: dict) -> tuple:
    return tuple(sorted((key, repr(value)) for key, value in params.items()))


def _finished_values(finished: pd.DataFrame, params: dict, metric: str) -> list[float]:
    """The metric of each finished trial (one per training seed) whose config has these parameters."""
    rows = finished
    for key, value in params.items():
        column = f"param.{key}"
        if column not in rows:
            return []
        rows = rows[rows[column] == value]
    if metric not in rows:
        return []
    return [float(v) for v in rows.drop_duplicates(f"param.{SEED_KEY}" if f"param.{SEED_KEY}" in rows else "trial_id")[metric]
            if v is not None and not math.isnan(float(v))]  # fmt: skip
