"""benchmarks/table7_device.py's pure parts, on the real study file: the variants become `--set`
arguments that train exactly the study's rows, and a shortened run keeps the recipe's shape."""

import pytest

from benchmarks.table7_device import (
    ROOT, STUDY, TABLE7_ROWS, Calibration, calibration_from, epochs_note, measurements, most_epochs_that_fit,
    predicted_s, schedule_settings, table7_trials, trial_settings,
)  # fmt: skip
from ncstudy.config import with_params
from ncstudy.study_file import load_study, parse_override


@pytest.fixture(scope="module")
def study():
    return load_study(ROOT / STUDY)


def test_the_five_rows_and_three_seeds_come_from_the_study(study):
    trials = table7_trials(study, list(TABLE7_ROWS), study.search.seeds)
    assert [(t.variant, t.seed) for t in trials[:4]] == [("CE", 0), ("CE", 1), ("CE", 2), ("+ centre loss", 0)]
    assert len(trials) == 15 and len({t.name for t in trials}) == 15
    assert {t.variant for t in trials} == set(TABLE7_ROWS)
    lb = next(t for t in trials if t.variant == "+ L_B")
    assert [parse_override(s) for s in lb.settings] == list(study.search.variants["+ L_B"].items())


@pytest.mark.parametrize("variant", TABLE7_ROWS)
def test_a_trials_settings_train_the_studys_row(study, variant):
    """`ncstudy train` with the trial's --set gives the config the study's search gives that row."""
    trial = next(t for t in table7_trials(study, [variant], [2]))
    config = load_study(ROOT / STUDY, trial_settings(trial, study.train.epochs))
    expected = with_params(study, {"variant": variant, "train.seed": 2, "data.imbalance.ratio": 100, "name": trial.name})
    assert config == expected


def test_the_full_recipe_is_unchanged_and_a_short_run_keeps_its_shape(study):
    """The study's recipe (cosine, DRW at 160) keeps its proportions; a step schedule scaled from 200
    to 60 epochs is the one studies/recipes/cpu_cifar.yaml wrote by hand (DRW 48, x0.1 at 48 and 54)."""
    assert schedule_settings(study, 200) == {
        "train.epochs": 200, "train.warmup_epochs": 5, "loss.drw_epoch": 160, "regularizer.start_epoch": 0, "metrics.every": 20,
    }  # fmt: skip
    assert schedule_settings(study, 57) == {
        "train.epochs": 57, "train.warmup_epochs": 1, "loss.drw_epoch": 46, "regularizer.start_epoch": 0, "metrics.every": 6,
    }  # fmt: skip
    shortest = schedule_settings(study, 2)
    assert shortest["loss.drw_epoch"] == 1 and shortest["metrics.every"] == 1
    step = load_study(ROOT / STUDY, ["train.schedule=multistep", "train.milestones=[160, 180]", "regularizer.start_epoch=100"])
    cpu = load_study(ROOT / "studies" / "ablation_cifar10_lt_cpu.yaml")
    scaled = schedule_settings(step, 60)
    assert scaled["train.milestones"] == cpu.train.milestones == [48, 54]
    assert scaled["loss.drw_epoch"] == cpu.loss.drw_epoch == 48
    assert scaled["train.warmup_epochs"] == cpu.train.warmup_epochs == 2
    assert scaled["regularizer.start_epoch"] == 30


def test_the_epochs_chosen_are_the_most_that_fit():
    calibration = calibration_from([[9.0, 2.0, 5.0], [8.0, 1.5, 4.0]], wall_s=60.0)
    assert calibration == Calibration(60.0, 2.0, 3.0)
    assert measurements(40, 4) == 10 and measurements(3, 0) == 1
    assert predicted_s(40, calibration, waves=1, every=4) == 60.0 + 37 * 2.0 + 9 * 3.0

    def predict(epochs):  # the study's measurement interval, 20 of 200 epochs, scaled
        return predicted_s(epochs, calibration, 1, max(1, round(epochs / 10)))

    fits = most_epochs_that_fit(200.0, 200, predict)
    assert predict(fits) <= 200.0 < predict(fits + 1)
    assert most_epochs_that_fit(50.0, 200, predict) is None
    assert most_epochs_that_fit(1e6, 200, predict) == 200
    assert epochs_note(200, fits, fits, 420, 200) == f"200-epoch trials do not fit in 420 s: ran {fits} epochs"
    assert epochs_note(200, 200, 200, 420, 200) == "200-epoch trials fit in 420 s: ran 200 epochs"
    assert epochs_note(200, 31, 4, 420, 4) == "200-epoch trials do not fit in 420 s: ran 4 epochs (--max-epochs 4; 31 would fit)"
