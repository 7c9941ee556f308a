"""The report says what each row trained (a `recipe` column: base loss, DRW epoch, active terms with
weights, start epoch, centres) and where the training counts deviate from the imbalance profile, so a
table can be read without the YAML; from a synthetic study folder (study.yaml + trials.parquet)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from ncstudy.config import load_study
from ncstudy.outputs.report import build_report

ABLATION = Path(__file__).resolve().parents[1] / "studies" / "ablation_cifar10_lt_cpu.yaml"
RECIPES = {
    "CE-DRW": "CE, DRW@48",
    "+ L_W": "CE, DRW@48 + L_W 0.01 @0, learnable centres",
    "+ L_B": "CE, DRW@48 + L_B 0.1 @0, ema centres",
    "+ L_W & L_B": "CE, DRW@48 + L_W 0.01 + L_B 0.1 @0, learnable centres",
}


def _study_folder(tmp_path: Path):
    """The CPU ablation's folder as a copied study holds it: study.yaml (trials.parquet: the test's)."""
    study = load_study(ABLATION)
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
    assert lines[0].startswith("| variant | data.imbalance.ratio | NC1 | min angle (deg) | train_min_angle_many_few_deg |")
    cells = {line.split(" | ")[0].strip("| "): line.split(" | ")[2:4] for line in lines[2:]}
    assert cells["+ L_W"][0] == "**-0.200 [-0.200, -0.200]**" and "**" not in cells["+ L_W"][1], cells
    assert "**" not in cells["+ L_B"][0] and cells["+ L_B"][1].startswith("**+10"), cells
