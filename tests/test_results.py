"""ncstudy.outputs.results.read_experiment on a Tune experiment folder written by hand (no Ray is started):
trial folders named as Tune names them, params.json and Tune's result.json in each."""

import json
import random

import pytest

from ncstudy.outputs.results import read_experiment

TOTAL_EPOCHS = 3
DATE = "2026-12-03_14-29-09"


def _trial_folders(tune_folder, names: list[str], ids: list[str]) -> None:
    """Folders for trials created in the order of `names`, written in a shuffled order; trial n has
    finished with epoch 2 reported twice (a worker restart), except the one with no report yet."""
    order = list(range(len(names)))
    random.Random(0).shuffle(order)
    for n in order:
        folder = tune_folder / names[n]
        folder.mkdir(parents=True)
        (folder / "params.json").write_text(json.dumps({"regularizer.lambda_within": 0.1 * n}))
        epochs = [] if n == 4 else [1, 2, 2, 3]
        reports = [{"epoch": e, "val_acc_all": n + e / 10 + 0.01 * i, "trial_id": ids[n]} for i, e in enumerate(epochs)]
        (folder / "result.json").write_text("".join(json.dumps(r) + "\n" for r in reports))


@pytest.mark.parametrize("searcher", [True, False], ids=["searcher", "grid"])
def test_trials_and_epochs_come_in_creation_order(tmp_path, searcher):
    tune_folder = tmp_path / "study" / "ray" / "tune"
    rng = random.Random(1)
    if searcher:  # random ids, Tune's counter from 1: run_trial_1ccf35cd_1_...
        ids = [f"{rng.getrandbits(32):08x}" for _ in range(12)]
        names = [f"run_trial_{i}_{n + 1}_regularizer_lambda_within={0.1 * n:.4g}_{DATE}" for n, i in enumerate(ids)]
    else:  # the counter in the id too, from 0: run_trial_e6fa5_00001_1_...
        ids = [f"e6fa5_{n:05d}" for n in range(12)]
        names = [f"run_trial_{i}_{n}_regularizer_lambda_within={0.1 * n:.4g}_{DATE}" for n, i in enumerate(ids)]
    _trial_folders(tune_folder, names, ids)

    trials, epochs = read_experiment(tune_folder, TOTAL_EPOCHS)

    assert trials.columns[0] == "trial" and trials["trial"].tolist() == list(range(12))
    assert trials["trial_id"].tolist() == ids  # the id of trial 4, without reports, from its folder name
    assert trials["param.regularizer.lambda_within"].tolist() == pytest.approx([0.1 * n for n in range(12)])
    assert trials["status"].tolist() == ["finished"] * 4 + ["unfinished"] + ["finished"] * 7
    assert list(epochs.columns[:3]) == ["trial", "trial_id", "epoch"]
    expected = [(n, e) for n in range(12) if n != 4 for e in (1, 2, 3)]
    assert list(zip(epochs["trial"], epochs["epoch"])) == expected
    assert epochs["trial_id"].tolist() == [ids[n] for n, _ in expected]
    assert epochs.loc[epochs["epoch"] == 2, "val_acc_all"].tolist() == pytest.approx([n + 0.2 + 0.02 for n in range(12) if n != 4])
