"""Interruption as a user causes it: Ctrl-C (SIGINT to the whole foreground process group, as a
terminal sends it), SIGTERM (`ray job stop`, schedulers), a second Ctrl-C; then `resume`. The fast
case (an interrupt after an epoch of the second trial) runs in the default suite; the other moments
under `-m slow`. Each run is the CLI in a subprocess with its own local Ray (tests/processes.py)."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import mlflow
import optuna
import pandas as pd
import pytest
from processes import TINY, cli, kill_session, pasted, wait_for, wait_until

EPOCHS = 40  # long enough (seconds) to interrupt a single-worker trial between its epochs


def start(results: Path, log: Path, name: str, samples: int = 2, extra: tuple[str, ...] = ()):
    return cli("run", "studies/quickstart.yaml", "--set", f"name={name}", "--set", f"search.num_samples={samples}",
               *TINY, "--set", f"train.epochs={EPOCHS}", *extra, results=results, log=log)  # fmt: skip


def interrupted_and_resumed(
    tmp_path: Path, name: str, moment, signum=signal.SIGINT, samples: int = 2, twice=False, extra: tuple[str, ...] = (),
    planned: int | None = None,
):  # fmt: skip
    """Run, wait for `moment(folder)`, send `signum` to the process group (twice: again at once),
    check the interrupted state, then resume to the end. Returns (folder, run log, resume log)."""
    results, log, resume_log = tmp_path / "results", tmp_path / "run.log", tmp_path / "resume.log"
    folder = results / name
    run = start(results, log, name, samples, extra)
    try:
        wait_until(lambda: moment(folder, log), run, log, "the moment to interrupt")
        # Ctrl-C and a closing terminal (SIGHUP) reach the terminal's whole process group; SIGTERM
        # (`ray job stop`, `kill`) the driver.
        if signum in (signal.SIGINT, signal.SIGHUP):
            os.killpg(run.pid, signum)
        else:
            os.kill(run.pid, signum)
        if twice:
            wait_for(log, "stopping:", run)
            os.killpg(run.pid, signal.SIGINT)
        status = run.wait(timeout=300)
    finally:
        kill_session(run.pid)
    text = log.read_text()
    assert status == 128 + (signal.SIGINT if twice else signum), text[-3000:]
    printed = re.findall(r"`(python -m ncstudy resume [^`]+)` continues it", text)
    assert printed == [f"python -m ncstudy resume {name} --results {results.resolve()}"], text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    check_nothing_left_running(results, name)
    assert json.loads((folder / "state.json").read_text())["state"] == "interrupted"
    assert (folder / ".lock").read_text() == ""  # released: it names no holder

    resume = pasted(printed[0], cwd=tmp_path, log=resume_log)  # as printed, from another folder
    try:
        assert resume.wait(timeout=600) == 0, resume_log.read_text()[-3000:]
    finally:
        kill_session(resume.pid)
    check_complete(results, name, planned or samples)
    for console in (text, resume_log.read_text()):
        check_quiet_console(console)
    return folder, text, resume_log.read_text()


def check_quiet_console(text: str) -> None:
    """Which Ray, said first; none of Ray's own noise without -v."""
    assert text.startswith("ray: a private local instance started by ncstudy"), text[:300]
    for noise in ("Token authentication", "Configuration for experiment", "TensorBoard", "Tuner.restore", "Traceback",
                  "Experiment state snapshotting"):  # fmt: skip
        assert noise not in text, (noise, text[-3000:])


def check_nothing_left_running(results: Path, name: str) -> None:
    client = mlflow.MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return
    runs = client.search_runs([experiment.experiment_id])
    assert all(r.info.status in ("KILLED", "FINISHED") for r in runs), [(r.info.run_name, r.info.status) for r in runs]
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [r.info.status for r in parent] == ["KILLED"]


def check_complete(results: Path, name: str, planned: int, configurations: int | None = None) -> None:
    """Exactly the planned trials finished, one FINISHED run each, none RUNNING or FAILED, Optuna
    consistent: one COMPLETE Optuna trial per configuration (per trial unless `configurations`
    says otherwise: with search.seeds a configuration runs once per seed)."""
    folder = results / name
    trials = pd.read_parquet(folder / "trials.parquet")
    assert len(trials) == planned and trials["trial_id"].is_unique and set(trials["status"]) == {"finished"}
    epochs = pd.read_parquet(folder / "epochs.parquet")
    assert sorted(epochs.groupby("trial_id")["epoch"].apply(list).tolist()) == [list(range(1, EPOCHS + 1))] * planned
    client = mlflow.MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert sorted(r.info.run_id for r in children if r.info.status == "FINISHED") == sorted(trials["mlflow_run_id"])
    assert all(r.info.status in ("FINISHED", "KILLED") for r in children)  # KILLED: an attempt Tune never saved
    assert [r.info.status for r in runs if "mlflow.parentRunId" not in r.data.tags] == ["FINISHED"]
    storage = f"sqlite:///{folder / 'optuna.db'}"  # one Optuna study, or one per stratum
    studies = [optuna.load_study(study_name=n, storage=storage) for n in optuna.get_all_study_names(storage)]
    states = [t.state.name for study in studies for t in study.trials]
    assert states.count("COMPLETE") == (configurations or planned) and "RUNNING" not in states, states
    assert json.loads((folder / "state.json").read_text())["state"] == "finished"


def started_trials(log: Path) -> list[str]:
    return re.findall(r"trial (\w+) started", log.read_text())


def after_an_epoch_of_the_second_trial(folder: Path, log: Path) -> bool:
    """The second trial's first report in the driver's report log (ncstudy.outputs.results.ReportLog, flushed
    at once): a single-worker trial's epochs take a fraction of a second here, faster than the
    console's progress lines."""
    started = started_trials(log)
    reports = folder / "reports" / f"{started[1]}.jsonl" if len(started) >= 2 else None
    return reports is not None and reports.exists() and reports.read_text().count("\n") >= 1


def val_steps(results: Path, name: str, trial_id: str) -> list[int]:
    """The epochs the trial's MLflow run received a validation accuracy for, in order, repeats kept."""
    client = mlflow.MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(name)
    run = [r for r in client.search_runs([experiment.experiment_id]) if r.data.tags.get("ncstudy.trial_id") == trial_id]
    return sorted(m.step for m in client.get_metric_history(run[0].info.run_id, "val_acc_all")) if run else []


def test_ctrl_c_mid_trial_exits_130_marks_killed_and_resume_continues_from_the_checkpoint(tmp_path):
    before = {}

    def moment(folder: Path, log: Path) -> bool:
        if after_an_epoch_of_the_second_trial(folder, log):
            before["trial"] = started_trials(log)[1]
            return True
        return False

    folder, text, resumed = interrupted_and_resumed(tmp_path, "ctrlc", moment)
    assert "interrupted: 1 finished, 1 unfinished" in text
    # The second trial continued from its checkpoint: each epoch reached MLflow once, the ones
    # before the interrupt included (a restart from scratch would have logged them twice).
    assert val_steps(tmp_path / "results", "ctrlc", before["trial"]) == list(range(1, EPOCHS + 1))
    assert "resumed: 1 of 2 trials had ended, 1 to go" in resumed and "(2/2)" in resumed


@pytest.mark.slow
def test_sigterm_mid_trial_exits_143_and_resumes(tmp_path):
    interrupted_and_resumed(tmp_path, "sigterm", after_an_epoch_of_the_second_trial, signum=signal.SIGTERM)


@pytest.mark.slow
def test_sighup_the_terminal_closing_exits_129_and_resumes(tmp_path):
    interrupted_and_resumed(tmp_path, "sighup", after_an_epoch_of_the_second_trial, signum=signal.SIGHUP)


def test_a_second_ctrl_c_stops_at_once_and_the_study_still_resumes(tmp_path):
    interrupted_and_resumed(tmp_path, "twice", after_an_epoch_of_the_second_trial, twice=True)


@pytest.mark.slow
def test_ctrl_c_before_the_first_epoch_then_resume(tmp_path):
    interrupted_and_resumed(tmp_path, "early", lambda folder, log: "trial " in log.read_text() and " started" in log.read_text())


@pytest.mark.slow
def test_ctrl_c_between_trials_then_resume(tmp_path):
    interrupted_and_resumed(tmp_path, "between", lambda folder, log: "(1/3)" in log.read_text(), samples=3)


@pytest.mark.slow
def test_ctrl_c_during_the_final_report_then_resume(tmp_path):
    interrupted_and_resumed(tmp_path, "atreport", lambda folder, log: "(2/2)" in log.read_text())


@pytest.mark.slow
def test_ctrl_c_in_a_stratified_study_then_resume_keeps_each_stratum_s_budget(tmp_path):
    """search.strata: the searcher's per-stratum state (Optuna study, budget) survives the interrupt."""
    strata = ("--set", "search.strata={data.imbalance.ratio: [10, 50]}", "--set",
              "search.space={regularizer.lambda_within: {type: loguniform, low: 0.001, high: 0.1}}")  # fmt: skip
    folder, text, _ = interrupted_and_resumed(
        tmp_path, "strata", after_an_epoch_of_the_second_trial, samples=2, extra=strata, planned=4
    )
    trials = pd.read_parquet(folder / "trials.parquet")
    assert trials["param.data.imbalance.ratio"].value_counts().to_dict() == {10: 2, 50: 2}
