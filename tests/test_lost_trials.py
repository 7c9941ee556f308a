"""A trial whose process was lost is a failed trial that `resume` continues; one whose code raised
stays failed (docs/reliability.md, "A lost trial process"). The pieces, in seconds, without Ray: the
failure's record and cause, the saved state requeued, Optuna told the resumed outcome. The whole
path (kill -9 of a trial's process) is tests/test_faults.py's, in the slow suite."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import optuna
import pandas as pd
import pytest

from ncstudy.outputs.failures import failure_cause, forget_failure, record_failure, recorded_failure
from ncstudy.study.lost_trials import requeue_lost_trials
from ncstudy.study.optuna_records import RESUMED_FROM, record_resumed
from ncstudy.study_file import load_study

QUICKSTART = Path(__file__).resolve().parents[1] / "studies" / "quickstart.yaml"
ACTOR_DIED = """Failure # 1 (occurred at 2026-12-06_08-17-14)
The actor died unexpectedly before finishing this task.
\tclass_name: ImplicitFunc
The actor is dead because its worker process has died. Worker exit type: SYSTEM_ERROR
"""
DIVERGED = """Failure # 1 (occurred at 2026-12-06_08-17-14)
ray.exceptions.RayTaskError(TrialDiverged): ray::ImplicitFunc.train() (pid=1, ip=1)
ncstudy.engine.loop.TrialDiverged: the trial diverged in epoch 3: loss = nan
"""
DISK_FULL = "Failure # 1\nOSError: [Errno 28] No space left on device: 'checkpoint_000003'\n"


class FakeTrial:
    """What Tune hands a callback of a failed trial: its id, folder and error file."""

    def __init__(self, study_folder: Path, trial_id: str, error_text: str):
        self.trial_id = trial_id
        self.path = str(study_folder / "ray" / "tune" / f"run_trial_{trial_id}_1")
        Path(self.path).mkdir(parents=True)
        self.error_file = str(Path(self.path) / "error.txt")
        Path(self.error_file).write_text(error_text)

    def get_pickled_error(self):
        return None


@pytest.mark.parametrize("text, cause", [(ACTOR_DIED, "lost_process"), (DIVERGED, "raised"), (DISK_FULL, "storage")])
def test_the_cause_of_a_failure_is_read_from_ray_s_error(tmp_path, text, cause):
    assert failure_cause(FakeTrial(tmp_path, "t", text)) == cause


def test_a_failure_is_recorded_with_its_last_line_and_forgotten_when_the_trial_runs_again(tmp_path):
    record_failure(tmp_path, FakeTrial(tmp_path, "aa", DIVERGED))
    assert recorded_failure(tmp_path, "aa") == {"error": "TrialDiverged: the trial diverged in epoch 3: loss = nan", "cause": "raised"}
    forget_failure(tmp_path, "aa")
    assert recorded_failure(tmp_path, "aa") is None


def test_a_trial_that_could_not_write_stops_the_study_once_recorded(tmp_path):
    (tmp_path / ".reserve").write_bytes(b"\0" * 10)
    with pytest.raises(OSError) as raised:
        record_failure(tmp_path, FakeTrial(tmp_path, "bb", DISK_FULL))
    assert raised.value.errno == errno.ENOSPC and not (tmp_path / ".reserve").exists()
    assert recorded_failure(tmp_path, "bb")["cause"] == "storage"


def test_only_trials_that_lost_their_process_or_storage_are_requeued(tmp_path):
    experiment = tmp_path / "ray" / "tune"
    trials = {"lost": ACTOR_DIED, "full": DISK_FULL, "raised": DIVERGED}
    for trial_id, text in trials.items():
        try:
            record_failure(tmp_path, FakeTrial(tmp_path, trial_id, text))
        except OSError:  # the storage fault stops the study once recorded
            pass
    trial_data = [[json.dumps({"trial_id": t, "status": "ERROR"}), "{}"] for t in trials]
    trial_data.append([json.dumps({"trial_id": "done", "status": "TERMINATED"}), "{}"])
    state = experiment / "experiment_state-2026-12-06_08-00-00.json"
    state.write_text(json.dumps({"trial_data": trial_data, "runner_data": {}}))

    lines = requeue_lost_trials(experiment)
    assert len(lines) == 2 and "trial lost lost its process" in lines[0] and "trial full could not write" in lines[1]
    statuses = {json.loads(t)["trial_id"]: json.loads(t)["status"] for t, _ in json.loads(state.read_text())["trial_data"]}
    assert statuses == {"lost": "RUNNING", "full": "RUNNING", "raised": "ERROR", "done": "TERMINATED"}
    assert requeue_lost_trials(experiment) == []  # nothing left to requeue


def test_optuna_gets_the_outcome_of_a_failed_trial_that_resume_finished(tmp_path):
    study = load_study(QUICKSTART, ["name=s"])
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna_study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    params = {"regularizer.lambda_within": 0.01, "data.imbalance.ratio": 10}
    distributions = {"regularizer.lambda_within": optuna.distributions.FloatDistribution(0.001, 0.1, log=True),
                     "data.imbalance.ratio": optuna.distributions.CategoricalDistribution([10, 50])}  # fmt: skip
    optuna_study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, state=optuna.trial.TrialState.FAIL))
    trials = pd.DataFrame([
        {"trial_id": "a", "status": "finished", "val_acc_all": 0.8, **{f"param.{k}": v for k, v in params.items()}},
        {"trial_id": "b", "status": "failed", "val_acc_all": 0.3, "param.regularizer.lambda_within": 0.05, "param.data.imbalance.ratio": 50},
    ])  # fmt: skip

    assert record_resumed(study, tmp_path, storage, trials) == 1
    assert record_resumed(study, tmp_path, storage, trials) == 0  # told once
    failed, resumed = optuna.load_study(study_name="s", storage=storage).trials
    assert failed.state.name == "FAIL" and resumed.state.name == "COMPLETE"
    assert resumed.value == 0.8 and resumed.params == params and resumed.user_attrs[RESUMED_FROM] == 0


def test_optuna_gets_every_objective_of_a_failed_trial_that_resume_finished(tmp_path):
    """A multi-objective study (search.objectives): the added COMPLETE trial carries each objective's
    mean over the seeds, in the order of the objectives."""
    study = load_study(QUICKSTART, ["name=s", "search.seeds=[0, 1]"])
    objectives = {"val_acc_many": "max", "val_acc_few": "max"}
    study = study.model_copy(update={"search": study.search.model_copy(update={"objectives": objectives})})
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna_study = optuna.create_study(study_name="s", storage=storage, directions=["maximize", "maximize"])
    params = {"regularizer.lambda_within": 0.01}
    distributions = {"regularizer.lambda_within": optuna.distributions.FloatDistribution(0.001, 0.1, log=True)}
    failed = optuna.trial.create_trial(params=params, distributions=distributions, state=optuna.trial.TrialState.FAIL)
    optuna_study.add_trial(failed)
    trials = pd.DataFrame([
        {"trial_id": "a", "status": "finished", "val_acc_many": 0.8, "val_acc_few": 0.1, "param.train.seed": 0,
         "param.regularizer.lambda_within": 0.01},
        {"trial_id": "b", "status": "finished", "val_acc_many": 0.6, "val_acc_few": 0.3, "param.train.seed": 1,
         "param.regularizer.lambda_within": 0.01},
    ])  # fmt: skip

    assert record_resumed(study, tmp_path, storage, trials) == 1
    failed, resumed = optuna.load_study(study_name="s", storage=storage).trials
    assert resumed.state.name == "COMPLETE" and resumed.values == pytest.approx([0.7, 0.2])
