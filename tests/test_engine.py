"""The Ray-free engine and `python -m ncstudy train` (ncstudy.engine, ncstudy.single_run): the engine
imports neither Ray, MLflow nor matplotlib, and `train --no-tracking` runs where Ray, MLflow and
Optuna are not installed (a GPU machine with torch alone), writing a folder `report` reads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ncstudy.cli import main

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "studies" / "quickstart.yaml"
SMALL = ["--set", "train.epochs=2", "--set", "model.width=4", "--set", "model.feature_dim=16", "--set", "metrics.every=1"]


FACTS = {"trial", "trial_id", "epoch", "epoch_time_s", "lr", "loss", "world_size", "num_train", "data_fingerprint", "counts_note"}


def follows_the_naming_rule(column: str) -> bool:
    """docs/outputs.md, "Metric names": a split's measurement carries the split's prefix; the optimisation's
    terms are `loss_*`; the rest are the trial's facts."""
    return column in FACTS or column.startswith(("train_", "val_", "test_", "loss_", "classes_"))


def without(modules: tuple[str, ...], code: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter where importing any of `modules` fails as if not installed."""
    block = f"import sys\nfor name in {modules!r}:\n    sys.modules[name] = None\n"
    return subprocess.run([sys.executable, "-c", block + code], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_the_engine_imports_no_ray_mlflow_or_matplotlib():
    engine = ("state", "step", "loop", "measure", "checkpoint", "evaluation", "recipe")
    code = "\n".join(f"import ncstudy.engine.{name}" for name in engine)
    code += "\nprint(sorted(m for m, module in sys.modules.items() if module is not None and m.split('.')[0] in ('ray', 'mlflow', 'matplotlib', 'optuna')))"
    done = without(("ray", "mlflow", "matplotlib"), code)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_train_runs_without_ray_mlflow_or_optuna(tmp_path):
    args = ["train", str(QUICKSTART), *SMALL, "--no-tracking", "--results", str(tmp_path)]
    done = without(("ray", "mlflow", "optuna"), f"from ncstudy.cli import main\nsys.exit(main({args!r}))")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "test accuracy  all " in done.stdout
    folder = tmp_path / "quickstart"
    trials, epochs = pd.read_parquet(folder / "trials.parquet"), pd.read_parquet(folder / "epochs.parquet")
    assert trials[["trial", "trial_id", "status", "epochs_done"]].to_dict("records") == [
        {"trial": 0, "trial_id": "train", "status": "finished", "epochs_done": 2}
    ]
    assert epochs["epoch"].tolist() == [1, 2] and {"val_acc_all", "loss", "train_nc1", "loss_within"} <= set(epochs)
    assert not [c for c in epochs if not follows_the_naming_rule(c)]
    assert sorted(p.name for p in (folder / "figures").iterdir()) == ["angles.png", "nc_curves.png", "norms.png"]
    assert not (tmp_path / "mlflow.db").exists()


def test_train_no_figures_runs_without_matplotlib(tmp_path):
    """`--no-figures` (a GPU machine without matplotlib, benchmarks/table7_device.py) draws nothing."""
    args = ["train", str(QUICKSTART), *SMALL, "--no-tracking", "--no-figures", "--results", str(tmp_path)]
    done = without(("ray", "mlflow", "optuna", "matplotlib"), f"from ncstudy.cli import main\nsys.exit(main({args!r}))")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    folder = tmp_path / "quickstart"
    assert pd.read_parquet(folder / "trials.parquet")["status"].tolist() == ["finished"]
    assert not (folder / "figures").exists() and "figures/" not in done.stdout


def test_train_tracks_one_run_and_the_report_reads_its_folder(tmp_path, capsys):
    import mlflow

    assert main(["train", str(QUICKSTART), *SMALL, "--results", str(tmp_path)]) == 0
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("quickstart").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["ncstudy.runner"] == "train"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_acc_all")] == [1, 2]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert artifacts == {"figures/angles.png", "figures/norms.png", "figures/nc_curves.png"}
    assert main(["report", "quickstart", "--results", str(tmp_path)]) == 0
    assert "| CE + L_W" in (tmp_path / "quickstart" / "report.md").read_text()


def test_train_refuses_to_replace_a_folder_without_restart_and_never_a_study(tmp_path, capsys):
    args = ["train", str(QUICKSTART), *SMALL, "--no-tracking", "--results", str(tmp_path)]
    assert main(args) == 0
    assert main(args) == 2
    assert "--restart replaces it" in capsys.readouterr().err
    assert main([*args, "--restart"]) == 0
    (tmp_path / "quickstart" / "state.json").write_text(json.dumps({"state": "finished"}))
    assert main([*args, "--restart"]) == 2
    assert "a study of this name is there" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [["--set", "train.epochs=-1"], ["--device", "cuda"]], ids=["negative epochs", "no cuda"])
def test_train_bad_input_is_one_line_and_exit_2(tmp_path, capsys, bad):
    import torch

    if bad == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    assert main(["train", str(QUICKSTART), *bad, "--no-tracking", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert not (tmp_path / "quickstart").exists()


@pytest.mark.slow
def test_train_compile_gives_the_eager_numbers(tmp_path):
    """`train.compile: default` (torch.compile, inductor on the CPU) trains the same model: the
    per-epoch losses and accuracies of eager mode to 1e-4 (compiled kernels reorder float sums)."""
    frames = {}
    for mode in ("none", "default"):
        args = ["train", str(QUICKSTART), *SMALL, "--set", f"train.compile={mode}", "--set", f"name=c_{mode.replace('-', '_')}"]
        assert main([*args, "--no-tracking", "--results", str(tmp_path)]) == 0
        frames[mode] = pd.read_parquet(tmp_path / f"c_{mode}" / "epochs.parquet")
    columns = ["loss", "loss_sup", "loss_within", "loss_between", "val_acc_all", "train_nc1"]
    pd.testing.assert_frame_equal(frames["default"][columns], frames["none"][columns], rtol=1e-4, atol=1e-6)


def test_a_diverged_trial_is_one_line_and_exit_1_and_its_run_failed(tmp_path, capsys):
    """A learning rate that blows the weights up ends `train` with one line naming the epoch and
    what to change (exit 1: the settings' result, not bad input), and the MLflow run FAILED."""
    import mlflow

    args = ["train", str(QUICKSTART), *SMALL, "--set", "train.lr=1e12", "--set", "train.warmup_epochs=0"]
    assert main([*args, "--results", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: the trial diverged in epoch 1: "), err
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("quickstart").experiment_id])
    assert run.info.status == "FAILED"
