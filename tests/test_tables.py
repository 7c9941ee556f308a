"""Tables on hand-made trial frames whose means, sample stds and t intervals are worked out by hand."""

import io
import math

import numpy as np
import pandas as pd
import pytest

from ncstudy.outputs.tables import (
    NC_GROUP_COLUMNS,
    ablation_table,
    aggregate,
    best_per_stratum,
    nc_table,
    paired_differences,
    shot_table,
    t_interval,
    to_csv,
    to_latex,
    to_markdown,
    write_tables,
)

LAMBDA = "param.regularizer.lambda_within"
SEED = "param.train.seed"
RATIO = "param.data.imbalance.ratio"
NAN = math.nan


def _trials() -> pd.DataFrame:
    """Config 0.01: three seeds; config 0.1: two seeds (fewer many-shot classes); no few-shot class."""
    return pd.DataFrame(
        {
            "trial_id": ["a0", "a1", "a2", "b0", "b1"],
            LAMBDA: [0.01, 0.01, 0.01, 0.1, 0.1],
            SEED: [0, 1, 2, 0, 1],
            "test_acc_all": [0.80, 0.82, 0.84, 0.70, 0.74],
            "test_acc_many": [0.90, 0.92, 0.94, 0.95, 0.97],
            "test_acc_medium": [0.50, NAN, 0.70, 0.40, 0.40],
            "test_acc_few": [NAN] * 5,
            "classes_many": [3, 3, 3, 2, 2],
            "classes_medium": [7, 7, 7, 8, 8],
            "classes_few": [0] * 5,
        }
    )


def test_aggregate_means_sample_stds_and_per_column_counts():
    result = aggregate(_trials(), [LAMBDA], ["test_acc_all", "test_acc_medium", "test_acc_few"]).set_index(LAMBDA)
    a, b = result.loc[0.01], result.loc[0.1]
    assert a["n"] == 3 and b["n"] == 2
    assert a["test_acc_all_mean"] == pytest.approx(0.82)
    assert a["test_acc_all_std"] == pytest.approx(0.02)  # sqrt((0.02^2 + 0 + 0.02^2) / 2): ddof 1
    assert b["test_acc_all_std"] == pytest.approx(math.sqrt(2 * 0.02**2))
    assert a["test_acc_medium_mean"] == pytest.approx(0.60) and a["test_acc_medium_n"] == 2  # the NaN is left out
    assert a["test_acc_medium_std"] == pytest.approx(math.sqrt(2 * 0.1**2))
    assert b["test_acc_medium_std"] == 0.0
    assert math.isnan(a["test_acc_few_mean"]) and a["test_acc_few_n"] == 0


def test_aggregate_single_seed_has_no_std_and_missing_settings_form_a_group():
    trials = pd.DataFrame({"param.t": [None, None, 0.5], "test_acc_all": [0.6, 0.8, 0.9]})
    result = aggregate(trials, ["param.t"], ["test_acc_all"])
    assert len(result) == 2
    assert result["test_acc_all_mean"].tolist() == pytest.approx([0.7, 0.9])
    assert math.isnan(result["test_acc_all_std"].iloc[1])
    whole = aggregate(trials, [], ["test_acc_all"])
    assert whole["n"].tolist() == [3] and whole["test_acc_all_mean"].iloc[0] == pytest.approx(2.3 / 3)


def test_shot_table_cells_headers_order_and_empty_group():
    table = shot_table(_trials(), [LAMBDA])
    display = table.display
    assert list(display.columns) == ["regularizer.lambda_within", "All", "Many (2-3)", "Medium (7-8)", "Few (0)", "n"]
    assert display["regularizer.lambda_within"].tolist() == ["0.01", "0.1"]  # best All first
    assert display["All"].tolist() == ["82.0 ± 2.0", "72.0 ± 2.8"]
    assert display["Medium (7-8)"].tolist() == ["60.0 ± 14.1", "40.0 ± 0.0"]
    assert display["Few (0)"].tolist() == ["-", "-"]
    assert display["n"].tolist() == ["3", "2"]
    # the best mean per column: All and Medium from 0.01, Many from 0.1; no best in an empty column
    assert table.marked == {(0, "All"), (1, "Many (2-3)"), (0, "Medium (7-8)")}


def test_shot_table_sort_column():
    table = shot_table(_trials(), [LAMBDA], sort_by="test_acc_many")
    assert table.display["regularizer.lambda_within"].tolist() == ["0.1", "0.01"]


def test_shot_table_with_strata_groups_rows_and_marks_the_best_within_each_stratum():
    """Ratio 50's rows are worse than ratio 10's everywhere, yet its best is bold in its own stratum."""
    trials = pd.concat([_trials().assign(**{RATIO: 50}), _trials().assign(**{RATIO: 10})], ignore_index=True)
    trials.loc[trials[RATIO] == 10, ["test_acc_all", "test_acc_many"]] += 0.05
    table = shot_table(trials, [RATIO, LAMBDA], strata=[RATIO])
    assert table.display["data.imbalance.ratio"].tolist() == ["10", "10", "50", "50"]
    assert table.display["regularizer.lambda_within"].tolist() == ["0.01", "0.1", "0.01", "0.1"]
    bold = {(row, header) for row, header in table.marked if header in ("All", "Many (2-3)")}
    assert bold == {(0, "All"), (1, "Many (2-3)"), (2, "All"), (3, "Many (2-3)")}


def test_markdown_bold_best_and_dash_for_empty_group():
    text = to_markdown(shot_table(_trials(), [LAMBDA]))
    lines = text.splitlines()
    assert lines[0] == "| regularizer.lambda_within | All | Many (2-3) | Medium (7-8) | Few (0) | n |"
    assert lines[1] == "| :--- | ---: | ---: | ---: | ---: | ---: |"
    assert lines[2] == "| 0.01 | **82.0 ± 2.0** | 92.0 ± 2.0 | **60.0 ± 14.1** | - | 3 |"
    assert lines[3] == "| 0.1 | 72.0 ± 2.8 | **96.0 ± 1.4** | 40.0 ± 0.0 | - | 2 |"
    assert "0.0 |" not in lines[2]


def test_latex_booktabs_bold_and_escaping():
    text = to_latex(shot_table(_trials(), [LAMBDA]))
    lines = text.splitlines()
    assert lines[0] == r"\begin{tabular}{lrrrrr}"
    assert lines[1] == r"\toprule" and lines[3] == r"\midrule" and lines[-2] == r"\bottomrule"
    assert lines[2].startswith(r"regularizer.lambda\_within & All & Many (2-3)")
    assert lines[4] == r"0.01 & \textbf{82.0 $\pm$ 2.0} & 92.0 $\pm$ 2.0 & \textbf{60.0 $\pm$ 14.1} & - & 3 \\"
    assert "±" not in text


def test_csv_keeps_the_numbers():
    frame = pd.read_csv(io.StringIO(to_csv(shot_table(_trials(), [LAMBDA]))))
    assert frame["test_acc_all_mean"].tolist() == pytest.approx([0.82, 0.72])
    assert frame["test_acc_all_std"].tolist() == pytest.approx([0.02, math.sqrt(2 * 0.02**2)])
    assert frame["test_acc_few_mean"].isna().all()
    assert frame["n"].tolist() == [3, 2]
    assert not any("±" in str(v) for v in frame.to_numpy().ravel())


def _study(ratios: list[float], variants: list[str], base: float) -> pd.DataFrame:
    """Two seeds per (variant, ratio): base + 0.01 * variant position -/+ 0.01, so std is sqrt(2) %."""
    rows = []
    for ratio in ratios:
        for v, variant in enumerate(variants):
            for seed, offset in enumerate((-0.01, 0.01)):
                accuracy = base + 0.01 * v + offset - ratio / 10000
                rows.append({"variant": variant, RATIO: ratio, SEED: seed, "test_acc_all": accuracy})
    return pd.DataFrame(rows)


def test_ablation_merges_studies_with_different_ratios():
    frames = {
        "CIFAR-10-LT": _study([50, 100], ["CE", "+L_W", "+both"], 0.80),
        "CIFAR-100-LT": _study([100.0, 10.0], ["CE", "+L_W"], 0.40),
    }
    table = ablation_table(frames, "variant")
    display = table.display
    headers = ["variant", "CIFAR-10-LT r=100", "CIFAR-10-LT r=50", "CIFAR-100-LT r=100", "CIFAR-100-LT r=10"]
    assert list(display.columns) == headers
    assert display["variant"].tolist() == ["CE", "+L_W", "+both"]
    assert display["CIFAR-10-LT r=100"].tolist() == ["79.0 ± 1.4", "80.0 ± 1.4", "81.0 ± 1.4"]
    assert display["CIFAR-100-LT r=10"].tolist() == ["39.9 ± 1.4", "40.9 ± 1.4", "-"]
    assert display["CIFAR-100-LT r=100"].iloc[2] == "-"
    assert table.numbers["CIFAR-100-LT r=100_n"].tolist() == [2, 2, 0]
    assert table.numbers["CIFAR-10-LT r=50_mean"].tolist() == pytest.approx([0.795, 0.805, 0.815])
    assert (2, "CIFAR-10-LT r=100") in table.marked and (1, "CIFAR-100-LT r=10") in table.marked
    assert (2, "CIFAR-100-LT r=10") not in table.marked
    markdown = to_markdown(table)
    assert "| +both | **81.0 ± 1.4** | **81.5 ± 1.4** | - | - |" in markdown
    combined = pd.concat([f.assign(study=label) for label, f in frames.items()], ignore_index=True)
    assert ablation_table(combined, "variant").display.equals(display)


def test_t_interval_by_hand():
    mean, low, high = t_interval(np.array([1.0, 2.0, 3.0]))
    half = 4.302653 * 1.0 / math.sqrt(3)  # t_{0.975, 2} * sd / sqrt(n) = 2.4841
    assert mean == 2.0
    assert low == pytest.approx(2.0 - half, abs=1e-5) and high == pytest.approx(2.0 + half, abs=1e-5)
    assert half == pytest.approx(2.4841, abs=1e-4)
    single = t_interval(np.array([5.0]))
    assert single[0] == 5.0 and math.isnan(single[1]) and math.isnan(single[2])


def test_paired_differences_pair_by_seed():
    trials = pd.DataFrame(
        {
            LAMBDA: [0.0] * 4 + [0.01] * 4 + [0.1] * 3 + [1.0],
            SEED: [0, 1, 2, 3] + [0, 1, 2, 9] + [0, 1, 2] + [0],
            # baseline differs per seed, so an unpaired comparison would give other numbers
            "test_acc_all": [0.50, 0.60, 0.70, 0.10] + [0.51, 0.62, 0.73, 0.99] + [0.60, 0.71, 0.82] + [0.55],
        }
    )
    table = paired_differences(trials, [LAMBDA], {"regularizer.lambda_within": 0.0}, columns=["test_acc_all"])
    numbers = table.numbers.set_index(LAMBDA)
    assert list(numbers.index) == [0.01, 0.1, 1.0]  # the baseline is not a row
    # 0.01: seeds 0-2 paired (3 and 9 unpaired), differences 0.01, 0.02, 0.03
    half = 4.302653 * 0.01 / math.sqrt(3)
    small = numbers.loc[0.01]
    assert small["n"] == 3 and small["test_acc_all_n"] == 3
    assert small["test_acc_all_diff"] == pytest.approx(0.02)
    assert small["test_acc_all_low"] == pytest.approx(0.02 - half, abs=1e-6)
    assert small["test_acc_all_high"] == pytest.approx(0.02 + half, abs=1e-6)
    # 0.1: differences 0.10, 0.11, 0.12; interval excludes zero
    assert numbers.loc[0.1, "test_acc_all_diff"] == pytest.approx(0.11)
    # 1.0: one pair, no interval
    assert numbers.loc[1.0, "test_acc_all_diff"] == pytest.approx(0.05) and math.isnan(numbers.loc[1.0, "test_acc_all_low"])
    assert table.display["All"].tolist() == ["+2.0 [-0.5, +4.5]", "+11.0 [+8.5, +13.5]", "+5.0"]
    assert table.marked == {(1, "All")}
    by_tuple = paired_differences(trials, [LAMBDA], 0.0, columns=["test_acc_all"])
    assert by_tuple.numbers.equals(table.numbers)


def test_paired_differences_rejects_a_baseline_that_is_not_one_configuration():
    trials = pd.DataFrame({LAMBDA: [0.0, 0.1], SEED: [0, 0], "test_acc_all": [0.5, 0.6]})
    with pytest.raises(ValueError, match="matches 0"):
        paired_differences(trials, [LAMBDA], {LAMBDA: 0.5}, columns=["test_acc_all"])
    with pytest.raises(ValueError, match="not one of"):
        paired_differences(trials, [LAMBDA], {"train.seed": 0}, columns=["test_acc_all"])


def test_nc_table_three_significant_digits():
    trials = pd.DataFrame(
        {
            "variant": ["a", "a", "b"],
            "train_nc1": [0.1, 0.3, 12345.0],
            "train_nc2_equinorm": [0.05, 0.05, 0.2],
            "train_nc4": [NAN, NAN, NAN],
            "train_min_angle_deg": [95.0, 97.0, 100.0],
        }
    )
    table = nc_table(trials, ["variant"])
    assert list(table.display.columns) == ["variant", "NC1", "NC2 equinorm", "NC4", "min angle (deg)", "n"]
    assert table.display["NC1"].tolist() == ["0.200 ± 0.141", "1.23e+04"]
    assert table.display["NC2 equinorm"].tolist() == ["0.0500 ± 0.00", "0.200"]
    assert table.display["NC4"].tolist() == ["-", "-"]
    assert table.display["min angle (deg)"].tolist() == ["96.0 ± 1.41", "100"]


def test_write_tables_all_formats(tmp_path):
    tables = {"shots": shot_table(_trials(), [LAMBDA])}
    paths = write_tables(tables, tmp_path / "tables")
    assert [p.name for p in paths] == ["shots.md", "shots.tex", "shots.csv"]
    assert paths[0].read_text() == to_markdown(tables["shots"])
    assert paths[1].read_text() == to_latex(tables["shots"])
    assert pd.read_csv(paths[2])["test_acc_all_mean"].tolist() == pytest.approx([0.82, 0.72])
    assert sorted(p.name for p in (tmp_path / "tables").iterdir()) == ["shots.csv", "shots.md", "shots.tex"]
    with pytest.raises(ValueError, match="unknown table format"):
        write_tables(tables, tmp_path / "other", formats=("md", "html"))
    assert not (tmp_path / "other").exists()


def _stratified() -> pd.DataFrame:
    """Two strata of `_trials`, ratio 50 first in trial order, ratio 10 better; NC metrics per trial."""
    trials = pd.concat([_trials().assign(**{RATIO: 50}), _trials().assign(**{RATIO: 10})], ignore_index=True)
    trials.loc[trials[RATIO] == 10, "test_acc_all"] += 0.05
    return trials.assign(train_nc1=np.arange(10) / 10, train_nc1_many=0.1, train_min_angle_many_few_deg=80.0)


def test_nc_tables_list_configurations_in_the_shot_tables_order():
    """Grouped by stratum, best first within each, as the accuracy table (not 50, 50, 10, 10 by first
    appearance); the ordering metric itself is not an NC column."""
    trials, by = _stratified(), [RATIO, LAMBDA]
    shot = shot_table(trials, by, sort_by="test_acc_all", strata=[RATIO])
    labels = ["data.imbalance.ratio", "regularizer.lambda_within"]
    for columns in (["train_nc1"], NC_GROUP_COLUMNS):
        nc = nc_table(trials, by, columns, sort_by="test_acc_all", strata=[RATIO])
        assert nc.display[labels].values.tolist() == shot.display[labels].values.tolist() == [
            ["10", "0.01"], ["10", "0.1"], ["50", "0.01"], ["50", "0.1"]]  # fmt: skip
        assert not any(c.startswith("test_acc_all") for c in nc.numbers.columns)
    assert nc_table(trials, by, ["train_nc1"]).display["data.imbalance.ratio"].tolist() == ["50", "50", "10", "10"]


def test_nc_headers_are_named_as_in_the_other_tables():
    table = nc_table(_stratified(), [LAMBDA], NC_GROUP_COLUMNS)
    assert list(table.display.columns) == ["regularizer.lambda_within", "NC1 many", "min angle many-few (deg)", "n"]
    assert not any(c.startswith("train_") for c in table.display.columns)


def test_a_tie_for_the_best_of_a_stratum_is_said_in_every_format():
    """Ratio 10: two configurations share the best val_acc_all; the first in trial order is shown, and
    Markdown and LaTeX say so under the table, the CSV in a `ties` column. Ratio 50 has no tie."""
    trials = _stratified().assign(val_acc_all=[0.9, 0.9, 0.9, 0.9, 0.9, 0.95, 0.95, 0.95, 0.95, 0.95])
    trials.loc[(trials[RATIO] == 50) & (trials[LAMBDA] == 0.1), "val_acc_all"] = 0.5
    table = best_per_stratum(trials, [RATIO], [RATIO, LAMBDA], "val_acc_all")
    note = "data.imbalance.ratio=10: 2 configurations tie for the best val_acc_all (val), 95.0; shown: the first in trial order"
    assert table.notes == (note,)
    assert table.numbers["ties"].tolist() == [2, 1] and table.numbers[LAMBDA].tolist() == [0.01, 0.01]
    assert to_markdown(table).endswith(f"|\n\n{note}\n")
    latex_note = note.replace("_", "\\_")
    assert to_latex(table).endswith(f"\\bottomrule\n\\multicolumn{{8}}{{l}}{{\\footnotesize {latex_note}}} \\\\\n\\end{{tabular}}\n")
    assert pd.read_csv(io.StringIO(to_csv(table)))["ties"].tolist() == [2, 1]
    untied = best_per_stratum(trials[trials[LAMBDA] == 0.01], [RATIO], [RATIO, LAMBDA], "val_acc_all")
    assert untied.notes == () and "tie" not in to_markdown(untied)
