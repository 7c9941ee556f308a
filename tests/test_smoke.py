"""`--smoke` without Ray: the smaller copy of every shipped study is valid and means what the study
means (each variant and stratum kept, epoch switches scaled but still switching), and fits a
machine without a GPU. The copies run end to end in tests/test_smoke_studies.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from ncstudy.smoke import SMOKE_EPOCHS, SMOKE_N_MAX, EpochScale, smoke_tree
from ncstudy.study_file import read_study
from ncstudy.terms import recipe_label
from ncstudy.config import with_params

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "studies").glob("*.yaml"))


@pytest.fixture(autouse=True)
def laptop(monkeypatch):
    """A machine with 2 cores and no GPU, where Ray would be local."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr("ncstudy.smoke.local_cpus", lambda: 2)
    monkeypatch.setattr("ncstudy.smoke.local_gpus", lambda: 0)


def test_epoch_points_scale_in_proportion_and_keep_their_meaning():
    scale = EpochScale(200, 4)
    assert [scale.point(e) for e in (0, 1, 5, 100, 160, 199)] == [0, 1, 1, 2, 3, 3]  # before the end stays before it
    assert scale.point(200) == 200 and scale.point(250) == 250  # a switch that never acts still never does
    assert scale.points([160, 180]) == [3]
    assert [scale.period(e) for e in (0, 1, 10, 100)] == [0, 1, 1, 2]
    assert EpochScale(12, 12).point(9) == 9  # a study already this short is left as it is


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_study_has_a_valid_smoke_copy_that_fits_a_laptop(path):
    full = read_study(path).study
    read = read_study(path, smoke=True)
    study = read.study
    assert study.name == f"{full.name}-smoke" and read.full_name == full.name
    assert study.train.epochs == min(full.train.epochs, SMOKE_EPOCHS)
    assert study.resources.gpus_per_worker == 0 and study.resources.num_workers * study.resources.cpus_per_worker <= 2
    assert set(study.search.variants) == set(full.search.variants)  # every row of the study
    assert {k: len(v) for k, v in study.search.strata.items()} == {k: len(v) for k, v in full.search.strata.items()}
    assert study.search.seed_list == full.search.seed_list[:1]
    if full.data.dataset != "digits":
        assert study.data.imbalance.n_max <= SMOKE_N_MAX and study.data.eval_per_class is not None
    if full.loss.reweight == "drw":
        assert 0 < study.loss.drw_epoch < study.train.epochs
    if full.regularizer.start_epoch:
        assert 0 < study.regularizer.start_epoch < study.train.epochs
    if full.metrics.every:  # NC over epochs: measured twice, at half and at the end
        assert study.metrics.every == study.train.epochs // 2
    assert all(key in read.smoke for key in ("name", "train.epochs"))


def test_each_variant_of_the_smoke_ablation_trains_what_its_name_says():
    """The recipe of every row, full size and smoke copy, differs only in its epochs."""
    full = read_study(ROOT / "studies" / "ablation_cifar10_lt.yaml").study
    smoke = read_study(ROOT / "studies" / "ablation_cifar10_lt.yaml", smoke=True).study
    for variant in full.search.variants:
        big, small = recipe_label(with_params(full, {"variant": variant})), recipe_label(with_params(smoke, {"variant": variant}))
        assert big.replace("DRW@160", "DRW@3") == small, variant


def test_epoch_settings_in_the_search_are_scaled_too():
    tree = read_study(ROOT / "studies" / "quickstart.yaml").study.model_dump(mode="json")
    tree["train"]["epochs"] = 100
    tree["search"]["space"]["regularizer.start_epoch"] = {"type": "choice", "values": [0, 50, 90]}
    tree["search"]["variants"] = {"late": {"loss.drw_epoch": 80, "loss.reweight": "drw"}}
    changes = smoke_tree(tree)
    assert tree["search"]["space"]["regularizer.start_epoch"]["values"] == [0, 2, 3]
    assert tree["search"]["variants"]["late"] == {"loss.drw_epoch": 3, "loss.reweight": "drw"}
    assert changes["train.epochs"] == (100, 4)


def test_set_applies_after_smoke_and_a_cluster_keeps_its_resources(monkeypatch):
    read = read_study(ROOT / "studies" / "cifar_lt.yaml", ["loss.drw_epoch=2", "search.num_samples=1"], smoke=True)
    assert read.study.loss.drw_epoch == 2 and read.study.search.num_samples == 1
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    on_cluster = read_study(ROOT / "studies" / "cifar_lt.yaml", smoke=True).study
    assert on_cluster.resources.gpus_per_worker == 0.25


def test_a_refusal_caused_by_a_setting_smoke_changed_is_blamed_on_smoke(capsys):
    from ncstudy.cli import main

    status = main(["validate", str(ROOT / "studies" / "cifar_lt.yaml"), "--smoke", "--set", "loss.drw_epoch=5"])
    assert status == 2
    err = capsys.readouterr().err
    assert "error: --set loss.drw_epoch: 5 is not before the last epoch (train.epochs 4)" in err, err
