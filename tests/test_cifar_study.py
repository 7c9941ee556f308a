"""studies/cifar_lt.yaml through `--set` overrides: ResNet-32 on the real CIFAR-10 Parquet, on CPU."""

from pathlib import Path

import pandas as pd

from ncstudy.config import load_study
from ncstudy.study.driver import run_study

CIFAR_STUDY = Path(__file__).resolve().parents[1] / "studies" / "cifar_lt.yaml"


def test_two_epoch_cifar_lt_run_reports_many_medium_few(ray_session, cifar_parquet, tmp_path):
    root, cache = cifar_parquet
    study = load_study(CIFAR_STUDY, [
        "name=cifar_smoke", f"data.root={root}", f"data.cache_dir={cache}", "train.epochs=2",
        "train.warmup_epochs=1", "loss.drw_epoch=1",
        "data.imbalance.n_max=100",             # 100 ... 1 per class: a CPU-sized slice of the same profile
        "search.num_samples=1", "search.strata={data.imbalance.ratio: [100]}",  # one trial, one stratum
        "search.max_concurrent=1", "resources.gpus_per_worker=0",
        "resources.cpus_per_worker=2", "resources.max_failures=0",
    ])  # fmt: skip
    outcome = run_study(study, tmp_path)
    assert outcome.finished == 1 and outcome.complete
    trials = pd.read_parquet(tmp_path / "cifar_smoke" / "trials.parquet")
    row = trials.iloc[0]
    assert row["classes_many"] == 3 and row["classes_medium"] == 4 and row["classes_few"] == 3
    for group in ("all", "many", "medium", "few"):
        assert 0.0 <= row[f"test_acc_{group}"] <= 1.0
    assert row["num_train"] == sum(int(100 * (1 / row["param.data.imbalance.ratio"]) ** (i / 9)) for i in range(10))
    epochs = pd.read_parquet(tmp_path / "cifar_smoke" / "epochs.parquet")
    assert epochs["epoch"].tolist() == [1, 2]  # completed epochs
    assert (epochs["loss_within"] > 0).all() and (epochs["loss_between"] != 0).all()  # the regularizers ran
