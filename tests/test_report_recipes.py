"""The report says what each row trained (a `recipe` column: base loss, DRW epoch, active terms with
weights, start epoch, centres) and where the training counts deviate from the imbalance profile, so a
table can be read without the YAML; from a synthetic study folder (study.yaml + trials.parquet)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from ncstudy.config import load_study
from ncstudy.report import build_report

ABLATION = Path(__file__).resolve().parents[1] / "studies" / "ablation_cifar10_lt_cpu.yaml"
RECIPES = {
    "CE-DRW": "CE, DRW@24",
    "+ L_W": "CE, DRW@24 + L_W 0.01 @0, learnable centres",
    "+ L_B": "CE, DRW@24 + L_B 0.1 @0, ema centres",
    "+ L_W & L_B": "CE, DRW@24 + L_W 0.01 + L_B 0.1 @0, learnable centres",
}


def test_ablation_and_shot_tables_name_each_rows_recipe(tmp_path):
    study = load_study(ABLATION)
    folder = tmp_path / study.name
    folder.mkdir()
    (folder / "study.yaml").write_text(yaml.safe_dump(study.model_dump(mode="json"), sort_keys=False))
    rows = [
        {"trial_id": f"{variant}-{seed}", "status": "finished", "param.variant": variant, "param.train.seed": seed,
         "val_acc_all": 0.5, "acc_all": 0.4 + 0.01 * i, "acc_many": 0.6, "acc_medium": 0.4, "acc_few": 0.2,
         "classes_many": 3, "classes_medium": 4, "classes_few": 3, "counts_note": "airplane 480 of 500", "nc1": 1.0,
         "nc1_many": 1.0}
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
