"""A multi-objective study end to end, as a user runs it: two validation objectives (many-shot and
few-shot accuracy) on digits, two variants each searched on its own (search.split_by_variant), two
training seeds; Ctrl-C in the middle, then the printed resume command. The resumed study continues
the same Optuna studies (one per variant, one direction per objective, named by the objectives),
which end with one COMPLETE trial per configuration whose values are the means over its seeds."""

from __future__ import annotations

import os
import re
import signal

import mlflow
import optuna
import pandas as pd
import pytest
import yaml
from processes import ROOT, TINY, cli, kill_session, pasted, wait_until
from test_interrupt import EPOCHS, after_an_epoch_of_the_second_trial, check_complete, check_quiet_console

OBJECTIVES = {"val_acc_many": "max", "val_acc_few": "max"}
VARIANTS = {"LA": {}, "LA + L_W": {"regularizer.lambda_within": 0.01}}


def pareto_quickstart(folder) -> str:
    """The quick start as a two-objective study of logit adjustment with and without L_W."""
    study = yaml.safe_load((ROOT / "studies" / "quickstart.yaml").read_text())
    search = study["search"]
    del search["metric"], search["mode"]
    search.update(
        objectives=OBJECTIVES, num_samples=1, seeds=[0, 1], split_by_variant=True, variants=VARIANTS,
        space={"loss.tau": {"type": "uniform", "low": 0.0, "high": 2.0}},
    )  # fmt: skip
    study.update(name="pareto", loss={"name": "logit_adjusted"}, regularizer={"lambda_within": 0.0, "lambda_between": 0.0})
    path = folder / "pareto.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return str(path)


@pytest.mark.slow
def test_a_two_objective_study_resumes_after_ctrl_c_with_the_same_optuna_studies(tmp_path):
    results, log, resume_log = tmp_path / "results", tmp_path / "run.log", tmp_path / "resume.log"
    folder = results / "pareto"
    run = cli("run", pareto_quickstart(tmp_path), *TINY, "--set", f"train.epochs={EPOCHS}", results=results, log=log)
    try:
        wait_until(lambda: after_an_epoch_of_the_second_trial(folder, log), run, log, "the second trial's first epoch")
        storage = f"sqlite:///{folder / 'optuna.db'}"
        before = {s.study_name: s._study_id for s in optuna.get_all_study_summaries(storage)}
        os.killpg(run.pid, signal.SIGINT)
        assert run.wait(timeout=300) == 130, log.read_text()[-3000:]
    finally:
        kill_session(run.pid)
    text = log.read_text()
    assert "val_acc_many" in text and "val_acc_few" in text  # the progress lines show both objectives
    printed = re.findall(r"`(python -m ncstudy resume [^`]+)` continues it", text)
    assert len(printed) == 1, text[-3000:]
    resume = pasted(printed[0], cwd=tmp_path, log=resume_log)
    try:
        assert resume.wait(timeout=600) == 0, resume_log.read_text()[-3000:]
    finally:
        kill_session(resume.pid)
    check_quiet_console(text)
    check_quiet_console(resume_log.read_text())
    check_complete(results, "pareto", planned=4, configurations=2)

    after = {s.study_name: s._study_id for s in optuna.get_all_study_summaries(storage)}
    assert after == before and sorted(after) == ["pareto[variant=LA + L_W]", "pareto[variant=LA]"]
    trials = pd.read_parquet(folder / "trials.parquet")
    for name, variant in (("pareto[variant=LA]", "LA"), ("pareto[variant=LA + L_W]", "LA + L_W")):
        optuna_study = optuna.load_study(study_name=name, storage=storage)
        assert optuna_study.metric_names == list(OBJECTIVES)
        assert [d.name for d in optuna_study.directions] == ["MAXIMIZE", "MAXIMIZE"]
        [configuration] = optuna_study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        seeds = trials[trials["param.variant"] == variant]
        assert sorted(seeds["param.train.seed"]) == [0, 1]
        assert seeds["param.loss.tau"].nunique() == 1 and seeds["param.loss.tau"].iloc[0] == configuration.params["loss.tau"]
        assert configuration.values == pytest.approx([seeds[objective].mean() for objective in OBJECTIVES])

    client = mlflow.MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("pareto").experiment_id])
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.data.tags["ncstudy.objectives"] == "val_acc_many max, val_acc_few max"
    assert parent.data.params["search.objectives.val_acc_few"] == "max"
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "tables")}
    assert "tables/front.csv" in artifacts, artifacts
