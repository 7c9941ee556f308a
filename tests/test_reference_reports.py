"""The committed reference reports of the multi-objective CPU runs (results/reference/pareto_cifar10_lt_cpu
and its tau grid) come from their committed trials: `report` on a copy, its tables deleted, writes the
same front and hypervolume tables, bootstrap intervals included (its draws are seeded), and the same
reading of the fronts; and no ablation table, whose cells would pool a variant's configurations."""

import shutil
from pathlib import Path

import pytest

from ncstudy.cli import main

REFERENCE = Path(__file__).resolve().parents[1] / "results" / "reference"


@pytest.mark.parametrize("name, reading", [
    ("pareto_cifar10_lt_cpu", "moves the front by -2.3 [-5.2, -0.9] hypervolume points against `LA` (it covers less)"),
    ("pareto_cifar10_lt_cpu_tau_grid", "differs from `LA` by +0.4 [-1.8, +3.0] hypervolume points, within the seed spread"),
])  # fmt: skip
def test_a_pareto_reference_report_is_rebuilt_from_its_trials(tmp_path, name, reading):
    copy = tmp_path / name
    shutil.copytree(REFERENCE / name, copy)
    shutil.rmtree(copy / "tables")
    assert main(["report", name, "--results", str(tmp_path), "--baseline", "LA", "--format", "csv,md"]) == 0
    for table in ("front", "hypervolume"):
        for suffix in ("csv", "md"):
            written = (copy / "tables" / f"{table}.{suffix}").read_text()
            assert written == (REFERENCE / name / "tables" / f"{table}.{suffix}").read_text(), (table, suffix)
    report = (copy / "report.md").read_text()
    assert f"`LA + L_W & L_B` {reading}" in report
    # six configurations per variant: no Table 7 ablation cell pooling them as if they were one row
    assert "## Ablation" not in report and not (copy / "tables" / "ablation.csv").exists()
