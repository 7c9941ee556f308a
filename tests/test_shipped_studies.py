"""Every file in studies/ runs (slow): each for one tiny epoch on CPU, with size overrides only, through
the real driver (Ray Tune, Optuna, Ray Train, MLflow, the report), so that a variant name, a key or
a setting that MLflow, Optuna or Ray cannot take fails here and not in a user's first hour.

The CIFAR studies find their data as a user's run does, through the data root ($NCSTUDY_DATA, which
CI points at its data folder): the CIFAR-10 Parquet tables there. The overrides change sizes, never
what a study searches: CIFAR-100 (which cannot be downloaded here) is replaced by those CIFAR-10
tables, the ImageNet-LT study gets a small generated image folder in its list format, and the epochs,
n_max, image size, resources and how many configurations, seeds and grid values run are cut down."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ncstudy.config import load_study
from ncstudy.study.driver import run_study

STUDIES = Path(__file__).resolve().parents[1] / "studies"
pytestmark = pytest.mark.slow

TINY = ["train.epochs=1", "train.warmup_epochs=0", "train.milestones=[]", "loss.drw_epoch=0", "metrics.every=0",
        "regularizer.start_epoch=0", "search.max_concurrent=2", "resources.num_workers=1",
        "resources.cpus_per_worker=1", "resources.gpus_per_worker=0", "resources.max_failures=0"]  # fmt: skip


def test_every_shipped_study_is_covered():
    assert sorted(p.name for p in STUDIES.glob("*.yaml")) == sorted(SIZES)


def image_lists(folder: Path) -> list[str]:
    """A small ImageNet-LT-style folder: 3 classes, 'relative/path label' lists for train/val/test.
    Images of 64 pixels, not 32: at 32 ResNeXt-50's last stage sees 1 x 1 maps, and BatchNorm over
    the last batch's two such maps blew the weights up (the trial diverged, correctly reported)."""
    rng = np.random.default_rng(0)
    for split, counts in {"train": [8, 4, 2], "val": [2, 2, 2], "test": [2, 2, 2]}.items():
        lines = []
        for label, count in enumerate(counts):
            (folder / "images" / split).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)).save(folder / "images" / split / f"{label}-{i}.jpg")
                lines.append(f"{split}/{label}-{i}.jpg {label}")
        (folder / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return [f"data.root={folder / 'images'}", f"data.train_list={folder / 'train.txt'}", f"data.val_list={folder / 'val.txt'}",
            f"data.test_list={folder / 'test.txt'}", "data.image_size=64", "data.loader_workers=0", "train.batch_size=4"]  # fmt: skip


def cifar(root: Path, cache: Path) -> list[str]:
    """No data.root: the study's own (null, the data root) finds the tables under $NCSTUDY_DATA."""
    return [f"data.cache_dir={cache}", "data.download=false",
            "data.imbalance.n_max=200", "data.val_per_class=5", "train.batch_size=64"]  # fmt: skip


SIZES = {
    "quickstart.yaml": (lambda tmp, parquet: ["search.num_samples=1"], 1),
    "cifar_lt.yaml": (lambda tmp, parquet: [*cifar(*parquet), "search.num_samples=1"], 3),  # one per stratum (ratio)
    "cifar100_lt.yaml": (lambda tmp, parquet: [*cifar(*parquet), "data.dataset=cifar10", "search.num_samples=1"], 3),
    "imagenet_lt.yaml": (lambda tmp, parquet: [*image_lists(tmp), "search.num_samples=1"], 1),
    # the grid's six variants (Table 7), one ratio, one seed
    "ablation_cifar10_lt.yaml": (lambda tmp, parquet: [*cifar(*parquet), "search.seeds=[0]",
                                                       "search.space.data.imbalance.ratio.values=[100]"], 6),  # fmt: skip
    "ablation_cifar10_lt_cpu.yaml": (lambda tmp, parquet: [*cifar(*parquet), "search.seeds=[0]"], 4),
}


@pytest.mark.parametrize("file", sorted(SIZES))
def test_a_shipped_study_runs_to_the_end(file, ray_session, cifar_parquet, tmp_path):
    overrides, planned = SIZES[file]
    study = load_study(STUDIES / file, [*overrides(tmp_path, cifar_parquet), *TINY])
    if study.data.dataset == "cifar10":  # found through the data root, as a user's run finds it
        assert cifar_parquet[0] in (Path(study.data.root).resolve(), Path(study.data.root).resolve() / "cifar10-jpeg")
    outcome = run_study(study, tmp_path / "results")
    assert (outcome.planned, outcome.finished, outcome.failed) == (planned, planned, []), outcome
    trials = pd.read_parquet(outcome.folder / "trials.parquet")
    assert len(trials) == planned and set(trials["status"]) == {"finished"}
    client = mlflow.MlflowClient(outcome.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(study.tracking.experiment or study.name).experiment_id])
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * (planned + 1)
    report = (outcome.folder / "report.md").read_text()
    if study.search.variants:  # the ablation table shows the variant names as written
        assert all(f"| {name} |" in report for name in study.search.variants), report
