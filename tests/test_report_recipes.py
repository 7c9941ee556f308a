"""The report says what each row trained (a `recipe` column: base loss, DRW epoch, active terms with
weights, start epoch, centres) and where the training counts deviate from the imbalance profile, so a
table can be read without the YAML; from a synthetic study folder (study.yaml + trials.parquet)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from ncstudy.config import load_study
from ncstudy.outputs.report import build_report
from ncstudy.terms import recipe_label

ABLATION = Path(__file__).resolve().parents[1] / "studies" / "ablation_cifar10_lt_cpu.yaml"
RECIPES = {
    "CE-DRW": "CE, DRW@48",
    "+ L_W": "CE, DRW@48 + L_W 0.01 @0, learnable centres",
    "+ L_B": "CE, DRW@48 + L_B 0.1 @0, ema centres",
    "+ L_W & L_B": "CE, DRW@48 + L_W 0.01 + L_B 0.1 @0, learnable centres",
}


def _study_folder(tmp_path: Path, overrides: list[str] = ()):
    """The CPU ablation's folder as a copied study holds it: study.yaml (trials.parquet: the test's)."""
    study = load_study(ABLATION, list(overrides))
    folder = tmp_path / study.name
    folder.mkdir()
    (folder / "study.yaml").write_text(yaml.safe_dump(study.model_dump(mode="json"), sort_keys=False))
    return study, folder


def test_ablation_and_shot_tables_name_each_rows_recipe(tmp_path):
    study, folder = _study_folder(tmp_path)
    rows = [
        {"trial_id": f"{variant}-{seed}", "status": "finished", "param.variant": variant, "param.train.seed": seed,
         "val_acc_all": 0.5, "test_acc_all": 0.4 + 0.01 * i, "test_acc_many": 0.6, "test_acc_medium": 0.4, "test_acc_few": 0.2,
         "classes_many": 3, "classes_medium": 4, "classes_few": 3, "counts_note": "airplane 480 of 500", "train_nc1": 1.0,
         "train_nc1_many": 1.0}
        for i, variant in enumerate(RECIPES) for seed in (0, 1, 2)
    ]  # fmt: skip
    pd.DataFrame(rows).to_parquet(folder / "trials.parquet")
    build_report([study.name], tmp_path)
    report = (folder / "report.md").read_text()
    ablation = report[report.index("## Ablation") :].splitlines()
    shot = report[report.index("### Head / medium / tail") :].splitlines()
    for variant, recipe in RECIPES.items():
        assert any(line.startswith(f"| {variant} | {recipe} |") for line in ablation), (variant, ablation)
        assert any(line.startswith(f"| {variant} | {recipe} |") for line in shot), (variant, shot)
    assert "every class keeps 20 validation images: airplane 480 of 500." in report
    csv = pd.read_csv(folder / "tables" / "ablation.csv")
    assert csv["recipe"].tolist() == list(RECIPES.values())


def test_a_baseline_report_gives_paired_nc_differences(tmp_path):
    """The mechanism of each term, against the baseline, paired by seed: NC1 for L_W, the smallest
    angle (overall and head-tail) for L_B."""
    study, folder = _study_folder(tmp_path)
    rows = [
        {"trial_id": f"{variant}-{seed}", "status": "finished", "param.variant": variant, "param.train.seed": seed,
         "val_acc_all": 0.5, "test_acc_all": 0.4, "test_acc_many": 0.6, "test_acc_medium": 0.4, "test_acc_few": 0.2, "classes_many": 3,
         "classes_medium": 4, "classes_few": 3, "train_nc1": 0.4 - 0.2 * (variant == "+ L_W") + 0.01 * seed,
         "train_min_angle_deg": 55.0 + 10 * (variant == "+ L_B") + seed, "train_min_angle_many_few_deg": 60.0}
        for variant in ("CE-DRW", "+ L_W", "+ L_B") for seed in (0, 1, 2)
    ]  # fmt: skip
    pd.DataFrame(rows).to_parquet(folder / "trials.parquet")
    build_report([study.name], tmp_path, baseline="CE-DRW")
    section = (folder / "report.md").read_text().split("### Neural-collapse differences")[1].split("\n#")[0]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    header = "| variant | data.imbalance.ratio | recipe | NC1 | min angle (deg) | min angle many-few (deg) |"
    assert lines[0].startswith(header)
    cells = {line.split(" | ")[0].strip("| "): line.split(" | ")[3:5] for line in lines[2:]}
    assert cells["+ L_W"][0] == "**-0.200 [-0.200, -0.200]**" and "**" not in cells["+ L_W"][1], cells
    assert "**" not in cells["+ L_B"][0] and cells["+ L_B"][1].startswith("**+10"), cells


def _rows(variants, seeds=(0, 1, 2), **extra) -> list[dict]:
    return [
        {"trial_id": f"{variant}-{seed}", "status": "finished", "param.variant": variant, "param.train.seed": seed,
         "val_acc_all": 0.5 + 0.01 * i, "test_acc_all": 0.4 + 0.01 * i + 0.001 * seed, "test_acc_many": 0.6,
         "test_acc_medium": 0.4, "test_acc_few": 0.2 + 0.01 * seed, "classes_many": 3, "classes_medium": 4,
         "classes_few": 3, "train_nc1": 1.0 - 0.1 * i + 0.01 * seed, "train_nc1_many": 1.0, "train_nc1_few": 2.0,
         "train_min_angle_deg": 60.0 + i + seed, "train_min_angle_many_few_deg": 70.0, **extra}
        for i, variant in enumerate(variants) for seed in seeds
    ]  # fmt: skip


def _table_rows(report: str, heading: str) -> list[str]:
    section = report[report.index(heading) :].split("\n#")[0]
    return [line for line in section.splitlines() if line.startswith("| ")]


def test_a_merged_ablation_gives_each_studys_own_recipe(tmp_path):
    """Two copies of the ablation, DRW at epoch 48 and at 30 (but + L_B at 48 in both): each row's
    recipe comes from each study's own config, one recipe where they agree; a variant only one study
    ran has that study's recipe."""
    _, folder_a = _study_folder(tmp_path, ["name=abl_a"])
    l_b_at_48 = "search.variants.+ L_B={regularizer.lambda_between: 0.1, regularizer.centers: ema, loss.drw_epoch: 48}"
    _, folder_b = _study_folder(tmp_path, ["name=abl_b", "loss.drw_epoch=30", l_b_at_48])
    pd.DataFrame(_rows(RECIPES)).to_parquet(folder_a / "trials.parquet")
    pd.DataFrame(_rows(["CE-DRW", "+ L_W", "+ L_B"])).to_parquet(folder_b / "trials.parquet")
    out = build_report(["abl_a", "abl_b"], tmp_path)
    expected = {
        "CE-DRW": "abl_a: CE, DRW@48 / abl_b: CE, DRW@30",
        "+ L_W": "abl_a: CE, DRW@48 + L_W 0.01 @0, learnable centres / "
                 "abl_b: CE, DRW@30 + L_W 0.01 @0, learnable centres",
        "+ L_B": "CE, DRW@48 + L_B 0.1 @0, ema centres",
        "+ L_W & L_B": "CE, DRW@48 + L_W 0.01 + L_B 0.1 @0, learnable centres",
    }
    ablation = _table_rows((out / "report.md").read_text(), "## Ablation")
    for variant, recipe in expected.items():
        assert any(line.startswith(f"| {variant} | {recipe} |") for line in ablation), (variant, ablation)
    assert pd.read_csv(out / "tables" / "ablation.csv")["recipe"].tolist() == list(expected.values())
    shot_b = pd.read_csv(out / "tables" / "abl_b_shot.csv").set_index("param.variant")["recipe"]
    assert shot_b["CE-DRW"] == "CE, DRW@30" and shot_b["+ L_B"] == "CE, DRW@48 + L_B 0.1 @0, ema centres"


def test_nc_and_difference_tables_name_each_rows_recipe(tmp_path):
    study, folder = _study_folder(tmp_path)
    pd.DataFrame(_rows(RECIPES)).to_parquet(folder / "trials.parquet")
    build_report([study.name], tmp_path, baseline="CE-DRW")
    report = (folder / "report.md").read_text()
    headings = ["### Neural collapse (training", "### Neural collapse by frequency group", "### Differences against",
                "### Neural-collapse differences"]  # fmt: skip
    for heading in headings:
        lines = _table_rows(report, heading)
        assert lines[0].startswith("| variant | data.imbalance.ratio | recipe | "), (heading, lines[0])
        shown = RECIPES if "Differences" not in heading and "differences" not in heading else {
            v: r for v, r in RECIPES.items() if v != "CE-DRW"}  # fmt: skip
        assert len(lines) == 2 + len(shown), (heading, lines)
        for variant, recipe in shown.items():
            assert any(line.startswith(f"| {variant} | 100 | {recipe} |") for line in lines), (heading, variant, lines)
    assert "Baseline `CE-DRW`: CE, DRW@48." in report
    for name in ("nc", "nc_groups", "differences", "differences_nc"):
        csv = pd.read_csv(folder / "tables" / f"{name}.csv").set_index("param.variant")
        assert csv.loc["+ L_W", "recipe"] == RECIPES["+ L_W"], name


def test_best_by_stratum_lists_each_rows_recipe(tmp_path):
    """Best per stratum: the recipe of each stratum's best configuration, listed below the table (and
    a `recipe` column in its CSV)."""
    study, folder = _study_folder(tmp_path, ["search.strata={data.imbalance.ratio: [10, 100]}"])
    rows = [{**row, "param.data.imbalance.ratio": 10} for row in _rows(RECIPES)]
    rows += [{**row, "param.data.imbalance.ratio": 100, "val_acc_all": 1 - row["val_acc_all"]}  # CE-DRW best
             for row in _rows(RECIPES)]
    pd.DataFrame(rows).to_parquet(folder / "trials.parquet")
    build_report([study.name], tmp_path)
    section = (folder / "report.md").read_text().split("### Best configuration per stratum")[1].split("\n#")[0]
    assert "| 10 | + L_W & L_B |" in section and "| 100 | CE-DRW |" in section, section
    assert f"- `data.imbalance.ratio=10`: {RECIPES['+ L_W & L_B']}\n" in section, section
    assert f"- `data.imbalance.ratio=100`: {RECIPES['CE-DRW']}\n" in section, section
    csv = pd.read_csv(folder / "tables" / "best_by_stratum.csv")
    assert csv["recipe"].tolist() == [RECIPES["+ L_W & L_B"], RECIPES["CE-DRW"]]


def test_the_recipe_says_when_a_mixed_image_counts_for_both_labels():
    both = ["train.mixup_alpha=0.2", "regularizer.mixup_labels=both"]
    with_l_w = load_study(ABLATION, [*both, "regularizer.lambda_within=0.01"])
    assert recipe_label(with_l_w) == "CE, DRW@48 + L_W 0.01 @0, learnable centres; mixup 0.2 (both labels)"
    dominant = load_study(ABLATION, ["train.mixup_alpha=0.2", "regularizer.lambda_within=0.01"])
    assert recipe_label(dominant) == "CE, DRW@48 + L_W 0.01 @0, learnable centres; mixup 0.2"
    assert recipe_label(load_study(ABLATION, both)) == "CE, DRW@48; mixup 0.2"  # no term: the labels change nothing


def test_nc_tables_follow_the_shot_tables_rows_in_a_stratified_study(tmp_path):
    """Rows grouped by stratum and best first within it in all three tables (trials of ratio 100 come
    first, so the order of first appearance would interleave nothing but put 100 before 10)."""
    study, folder = _study_folder(tmp_path, ["search.strata={data.imbalance.ratio: [10, 100]}"])
    rows = [{**row, "param.data.imbalance.ratio": 100} for row in _rows(RECIPES)]
    rows += [{**row, "param.data.imbalance.ratio": 10, "val_acc_all": 1 - row["val_acc_all"]} for row in _rows(RECIPES)]
    pd.DataFrame(rows).to_parquet(folder / "trials.parquet")
    build_report([study.name], tmp_path)
    keys = ["param.data.imbalance.ratio", "param.variant"]
    shot = pd.read_csv(folder / "tables" / "shot.csv")[keys].values.tolist()
    assert [ratio for ratio, _ in shot] == [10] * 4 + [100] * 4
    assert [variant for _, variant in shot[:4]] == ["CE-DRW", "+ L_W", "+ L_B", "+ L_W & L_B"]  # best val first
    for name in ("nc", "nc_groups"):
        assert pd.read_csv(folder / "tables" / f"{name}.csv")[keys].values.tolist() == shot, name
    report = (folder / "report.md").read_text()
    assert "| NC1 many | NC1 few | min angle many-few (deg) | n |" in report
