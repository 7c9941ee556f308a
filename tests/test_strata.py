"""search.strata without running a study: validation (one line, exit 2), the best configuration per
stratum (chosen within the stratum by the search's metric and mode), and its figure, from a
synthetic study folder (study.yaml + trials.parquet, as a copied study holds them)."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ncstudy.cli import main
from ncstudy.config import AshaConfig, load_study
from ncstudy.outputs.report import build_report
from ncstudy.outputs.tables import best_per_stratum

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "studies" / "quickstart.yaml"
NO_RATIO_IN_SPACE = "search.space={regularizer.lambda_within: {type: loguniform, low: 0.001, high: 0.1}}"


def refused(capsys, *overrides: str) -> str:
    """`validate` of the quick start with `overrides`: exit 2 and one line `error: ...`; returns it."""
    status = main(["validate", str(QUICKSTART), *(f"--set={text}" for text in overrides)])
    out, err = capsys.readouterr()
    assert status == 2 and out == "" and "Traceback" not in err, (status, out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["search.strata={data.imbalance.ratoi: [10, 50]}"], "search.strata.data.imbalance.ratoi: no such setting"),
        (["search.strata={data.imbalance: [10]}"], "search.strata.data.imbalance: names a section, not a setting"),
        ([NO_RATIO_IN_SPACE, "search.strata={data.imbalance.ratio: [10, 0.5]}"], "search.strata.data.imbalance.ratio: value 0.5 is invalid"),
        (["search.strata={data.imbalance.ratio: [10, 50]}"], "strata data.imbalance.ratio: also in search.space"),
        ([NO_RATIO_IN_SPACE, "search.strata={data.imbalance.ratio: []}"], "give at least one value"),
        ([NO_RATIO_IN_SPACE, "search.strata={data.imbalance.ratio: [[10, 50]]}"], "not a single finite value"),
        ([NO_RATIO_IN_SPACE, "search.strata={train.seed: [0, 1]}"], "reserved; use search.seeds"),
        ([NO_RATIO_IN_SPACE, "search.strata=[10, 50]"], "search.strata: Input should be a valid dictionary"),
    ],
)
def test_bad_strata_are_refused_with_one_line_and_exit_2(capsys, overrides, message):
    assert message in refused(capsys, *overrides)


def test_good_strata_validate(capsys):
    study = load_study(QUICKSTART, [NO_RATIO_IN_SPACE, "search.strata={data.imbalance.ratio: [10, 50]}"])
    assert study.search.strata == {"data.imbalance.ratio": [10, 50]}
    assert main(["validate", str(QUICKSTART), f"--set={NO_RATIO_IN_SPACE}",
                 "--set=search.strata={data.imbalance.ratio: [10, 50]}"]) == 0  # fmt: skip


def trials_frame() -> pd.DataFrame:
    """Two strata x two configurations x two seeds. At r=10 every configuration beats every one at
    r=100, so a best chosen across strata would give r=100 nothing; within r=100 the best is lw=0.05."""
    rows = []
    for ratio, lw, lb, temperature, val in [
        (10, 0.001, 0.5, None, 0.90), (10, 0.01, 0.1, 0.5, 0.85),
        (100, 0.001, 0.5, None, 0.60), (100, 0.05, 0.02, 0.1, 0.70),
    ]:  # fmt: skip
        for seed in (0, 1):
            rows.append({
                "trial_id": f"r{ratio}_{lw}_{seed}", "status": "finished", "param.data.imbalance.ratio": ratio,
                "param.regularizer.lambda_within": lw, "param.regularizer.lambda_between": lb,
                "param.regularizer.temperature": temperature, "param.train.seed": seed,
                "val_acc_all": val + 0.01 * seed, "test_acc_all": val - 0.1, "test_acc_many": 0.9, "test_acc_medium": 0.5,
                "test_acc_few": math.nan if ratio == 10 else 0.2, "train_nc1": 0.5, "train_nc1_many": 0.4, "classes_many": 3, "classes_medium": 4, "classes_few": 3,
            })  # fmt: skip
    return pd.DataFrame(rows)


def test_best_per_stratum_is_chosen_within_each_stratum_by_metric_and_mode():
    trials = trials_frame()
    by = [c for c in trials if c.startswith("param.") and c != "param.train.seed"]
    best = best_per_stratum(trials, ["param.data.imbalance.ratio"], by, "val_acc_all")
    numbers = best.numbers
    assert numbers["param.data.imbalance.ratio"].tolist() == [10, 100]
    assert numbers["param.regularizer.lambda_within"].tolist() == [0.001, 0.05]
    assert numbers["val_acc_all_mean"].tolist() == pytest.approx([0.905, 0.705]) and numbers["n"].tolist() == [2, 2]
    assert best.display.columns[:4].tolist() == ["data.imbalance.ratio", "regularizer.lambda_within",
                                                 "regularizer.lambda_between", "regularizer.temperature"]  # fmt: skip
    assert best.display["Few (3)"].tolist() == ["-", "20.0 ± 0.0"]
    worst = best_per_stratum(trials, ["param.data.imbalance.ratio"], by, "val_acc_all", higher_is_better=False)
    assert worst.numbers["param.regularizer.lambda_within"].tolist() == [0.01, 0.001]


def test_the_report_has_the_best_per_stratum_table_and_figure(tmp_path):
    study = load_study(
        QUICKSTART,
        ["name=stratified", "search.seeds=[0, 1]", "search.strata={data.imbalance.ratio: [10, 100]}",
         "search.space={regularizer.lambda_within: {type: loguniform, low: 0.001, high: 0.1}, "
         "regularizer.lambda_between: {type: loguniform, low: 0.01, high: 1.0}, "
         "regularizer.temperature: {type: choice, values: [null, 0.1, 0.5]}}"],
    )  # fmt: skip
    folder = tmp_path / "stratified"
    folder.mkdir()
    (folder / "study.yaml").write_text(yaml.safe_dump(study.model_dump(mode="json"), sort_keys=False))
    trials_frame().to_parquet(folder / "trials.parquet")
    build_report(["stratified"], tmp_path)
    report = (folder / "report.md").read_text()
    section = report[report.index("### Best configuration per stratum") :]
    rows = [line for line in section.splitlines() if line.startswith("| 1")]
    assert rows[0].startswith("| 10 | 0.001 | 0.5 | none | 90.5 ± 0.7 |"), rows
    assert rows[1].startswith("| 100 | 0.05 | 0.02 | 0.1 | 70.5 ± 0.7 |"), rows
    assert (folder / "tables" / "best_by_stratum.csv").exists()
    figure = folder / "figures" / "best_by_stratum.png"
    assert figure.exists() and "figures/best_by_stratum.png" in report
    from PIL import Image

    with Image.open(figure) as image:
        assert image.size[0] > 2.5 * image.size[1]  # three panels side by side: lambda_W, lambda_B, temperature
    assert not list(folder.glob("figures/.*.tmp"))


def test_the_figure_has_a_line_per_further_stratum_and_no_panel_for_text_parameters(tmp_path):
    from ncstudy.outputs.figures import best_by_stratum

    panels = {"regularizer.lambda_within": {"name=ce": ([10, 50, 100], [0.01, 0.02, np.nan]),
                                            "name=focal": ([10, 50, 100], [0.03, None, 0.05])}}  # fmt: skip
    path = best_by_stratum(panels, "data.imbalance.ratio", tmp_path / "b.png", log_y=["regularizer.lambda_within"])
    assert path.exists() and path.stat().st_size > 0


def _asha_decisions(study_strata: dict) -> dict[str, str]:
    """ASHA's decision at epoch 1 for trials of two strata: r=10's score 0.9 and 0.8, then r=100's
    0.3 and 0.2 (an easy and a hard stratum), reported in that order."""
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    from ncstudy.study.search import scheduler

    study = load_study(QUICKSTART).model_copy(deep=True)
    study.search.strata = study_strata
    study.search.space.pop("data.imbalance.ratio", None)
    study.search.asha = AshaConfig(grace_period=1, reduction_factor=2)
    asha = scheduler(study)
    asha.set_search_properties("val_acc_all", "max")
    decisions = {}
    for name, ratio, score in [("a1", 10, 0.9), ("a2", 10, 0.8), ("b1", 100, 0.3), ("b2", 100, 0.2)]:
        trial = SimpleNamespace(trial_id=name, config={"data.imbalance.ratio": ratio})
        asha.on_trial_add(None, trial)
        decision = asha.on_trial_result(None, trial, {"epoch": 1, "val_acc_all": score})
        decisions[name] = "stop" if decision == TrialScheduler.STOP else "continue"
    return decisions


def test_asha_stops_a_trial_only_by_its_own_stratum():
    """Without strata one ASHA compares the hard stratum's trials with the easy one's and stops its
    best (b1); with strata each stratum has its rungs: b1 leads its own, b2 trails it."""
    assert _asha_decisions({})["b1"] == "stop"
    assert _asha_decisions({"data.imbalance.ratio": [10, 100]}) == {"a1": "continue", "a2": "stop", "b1": "continue", "b2": "stop"}


def test_data_describe_says_which_data_settings_the_trials_set(capsys):
    """The counts shown are for the file's ratio; each stratum (or searched ratio) has its own."""
    assert main(["data", "describe", str(QUICKSTART), f"--set={NO_RATIO_IN_SPACE}", "--set=search.strata={data.imbalance.ratio: [10, 50]}"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == ("note: the study sets data.imbalance.ratio per trial (10, 50); shown is 10.0: describe another with "
                    "--set data.imbalance.ratio=VALUE")  # fmt: skip
