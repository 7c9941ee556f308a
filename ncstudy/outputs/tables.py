"""Paper tables from trials.parquet: mean ± std over seeds, head/medium/tail, ablation, paired
differences against a baseline, neural-collapse metrics; each rendered as Markdown, LaTeX or CSV.

- Over seeds: mean and the sample standard deviation (ddof 1), the usual reading of "mean ± std over
  seeds"; one seed gives no std. (The population std of docs/design.md is for NC metrics over
  classes and features, not for seeds.) A NaN (an empty group) is left out of its own column only.
- Head/medium/tail columns follow the many/medium/few-shot convention of Liu et al. (CVPR 2019,
  OLTR): accuracy in percent, best per column in bold, an empty group shown as a dash (never 0).
- Best per stratum (search.strata): the best configuration within each stratum, chosen by the
  search's own metric and mode, so a ratio's row never competes with another ratio's. A tie for the
  best is said, never resolved in silence: a note under the table (Markdown, LaTeX) and a `ties`
  column (CSV) give how many configurations share the best mean; the one shown is the first in
  trial order.
- One row order for every table of configurations: the shot table's (best first by the search's
  metric; grouped by stratum in a stratified study), so a row of the NC tables sits where the same
  configuration sits in the accuracy table; and one header per metric (`HEADERS`: `NC1 many`, `min
  angle many-few (deg)`), never a raw metric name beside a named one.
- Fronts of a multi-objective study (search.objectives; ncstudy.outputs.pareto): the configurations
  on each variant's Pareto front per stratum, selected on the validation objectives, with their test
  accuracies (`front_table`), and each front's hypervolume on the test counterparts with its
  bootstrap interval over seeds and its difference against a baseline variant (`hypervolume_table`).
- The ablation layout is Table 7 of Liu et al., "Inducing Neural Collapse in Deep Long-tailed
  Learning" (AISTATS 2023): a row per method variant, a column per data set x imbalance ratio.
- Differences against a baseline pair the trials by seed (the same seed draws the same subset and
  initialisation) and give Student's t interval, mean ± t_{(1+c)/2, n-1} * sd / sqrt(n), with the
  quantile from scipy.stats.t (scipy comes with scikit-learn, a dependency of ncstudy; imported only
  there, so the other tables need no scipy: benchmarks/table7_device.py writes them where it is absent).
- NC1-NC4 of Papyan, Han & Donoho (PNAS 2020) as ncstudy.method.metrics computes them, 3 significant digits.
- LaTeX uses the booktabs rules (\\toprule, \\midrule, \\bottomrule).

A `Table` holds both the numbers (what CSV writes, for machines) and the strings (what Markdown and
LaTeX show), plus the cells shown in bold. Files are written to a temporary name and renamed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ncstudy.atomic import replaced_atomically
from ncstudy.data.groups import GROUPS
from ncstudy.outputs.formatting import missing, value_text
from ncstudy.outputs.pareto import BOOTSTRAP_DRAWS, CONFIDENCE, StratumFronts, on_test

DASH = "-"
PLUS_MINUS = "±"
PARAM_DIGITS = 4  # significant digits of a parameter value in a label cell
ACCURACY_COLUMNS = ["test_acc_all", *(f"test_acc_{g}" for g in GROUPS)]
NC_COLUMNS = [f"train_{name}" for name in ("nc1", "nc2_equinorm", "nc2_equiangle", "nc2_maxangle", "nc3", "nc4", "min_angle_deg")]
# NC by frequency group (ncstudy.method.nc_stream): NC1 within each group, the smallest angle within
# each group and between a many-shot and a few-shot class
NC_GROUP_COLUMNS = [f"train_nc1_{g}" for g in GROUPS] + [f"train_min_angle_{g}_deg" for g in (*GROUPS, "many_few")]
HEADERS = {
    "test_acc_all": "All", "test_acc_many": "Many", "test_acc_medium": "Medium", "test_acc_few": "Few",
    "train_nc1": "NC1", "train_nc2_equinorm": "NC2 equinorm", "train_nc2_equiangle": "NC2 equiangle",
    "train_nc2_maxangle": "NC2 max-angle", "train_nc3": "NC3", "train_nc4": "NC4", "train_min_angle_deg": "min angle (deg)",
    **{f"train_nc1_{g}": f"NC1 {g}" for g in GROUPS},
    **{f"train_min_angle_{g}_deg": f"min angle {g.replace('_', '-')} (deg)" for g in (*GROUPS, "many_few")},
}  # fmt: skip
LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", PLUS_MINUS: r"$\pm$",
}  # fmt: skip


@dataclass(frozen=True, eq=False)
class Table:
    """numbers: a row per table row, numeric (label columns, then <metric>_mean/_std/_n or
    <metric>_diff/_low/_high/_n), what CSV writes; display: the same rows as strings under the shown
    headers, the first `labels` columns naming the row; marked: (row position, display column) of the
    cells shown in bold; notes: lines that Markdown and LaTeX give under the table (CSV carries the
    same facts as columns)."""

    numbers: pd.DataFrame
    display: pd.DataFrame
    labels: int
    marked: frozenset[tuple[int, str]] = frozenset()
    notes: tuple[str, ...] = ()


def with_recipes(table: Table, recipes: Sequence[str], shown: bool = True) -> Table:
    """`table` with a `recipe` label column (what each row trained: ncstudy.terms.recipe_label) after
    its label columns, in the CSV numbers and in the shown table; `shown=False` puts it in the CSV
    numbers only (after the label columns; the shown table and its label count stay as they were), for
    a table whose report gives the recipes below it instead."""
    numbers, display = table.numbers.copy(), table.display.copy()
    numbers.insert(table.labels, "recipe", list(recipes))
    if not shown:
        return Table(numbers, display, table.labels, table.marked, table.notes)
    display.insert(table.labels, "recipe", list(recipes))
    return Table(numbers, display, table.labels + 1, table.marked, table.notes)


# ---------------------------------------------------------------------------------------- numbers


def aggregate(trials: pd.DataFrame, by: list[str], columns: list[str]) -> pd.DataFrame:
    """A row per configuration (the distinct values of `by`, in order of first appearance, a missing
    value being a setting of its own): `n` trials, and per column `<c>_mean`, `<c>_std` (ddof 1; NaN
    for one value) and `<c>_n` (its non-NaN values)."""
    missing = [c for c in (*by, *columns) if c not in trials.columns]
    if missing:
        raise KeyError(f"trials have no column {', '.join(missing)}")
    frame = trials[by].join(trials[columns].astype(float))
    grouped = frame.groupby(by, dropna=False, sort=False) if by else frame.groupby(np.zeros(len(frame), dtype=int))
    summary = grouped[columns].agg(["mean", "std", "count"])
    summary.columns = [f"{c}_{'n' if s == 'count' else s}" for c, s in summary.columns]
    summary.insert(0, "n", grouped.size())
    return summary.reset_index(drop=not by)


def _per_seed(rows: pd.DataFrame, seed_column: str, columns: list[str]) -> pd.DataFrame:
    """Repeated trials of one seed are averaged; trials without a seed are left out."""
    return rows[[seed_column]].join(rows[columns].astype(float)).groupby(seed_column)[columns].mean()


def t_interval(differences: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of Student's t interval; low and high are NaN for fewer than two values."""
    n = len(differences)
    mean = float(np.mean(differences)) if n else math.nan
    if n < 2:
        return mean, math.nan, math.nan
    from scipy import stats

    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * np.std(differences, ddof=1) / math.sqrt(n)
    return mean, mean - half, mean + half


# ------------------------------------------------------------------------------------- formatting


def _label_header(column: str) -> str:
    return column.removeprefix("param.")


def _is_accuracy(column: str) -> bool:
    return column.startswith(("train_acc_", "val_acc_", "test_acc_"))


def _number(value: float, column: str, signed: bool = False) -> str:
    """Accuracies in percent with one decimal; anything else to 3 significant digits."""
    sign = "+" if signed else ""
    if _is_accuracy(column):
        return f"{100 * value:{sign}.1f}"
    return f"{value:{sign}#.3g}".rstrip(".")


def _mean_std(mean: float, std: float, column: str) -> str:
    if missing(mean):
        return DASH
    text = _number(mean, column)
    return text if missing(std) else f"{text} {PLUS_MINUS} {_number(std, column)}"


def _difference(mean: float, low: float, high: float, column: str) -> str:
    if missing(mean):
        return DASH
    text = _number(mean, column, signed=True)
    return text if missing(low) else f"{text} [{_number(low, column, True)}, {_number(high, column, True)}]"


def _label_columns(numbers: pd.DataFrame, by: Sequence[str]) -> dict[str, list[str]]:
    return {_label_header(c): [value_text(v, PARAM_DIGITS) for v in numbers[c]] for c in by}


def _best_rows(means: pd.Series, higher_is_better: bool = True) -> list[int]:
    """Positions of the best mean (ties all marked); none when fewer than two rows have a value."""
    if means.count() < 2:
        return []
    best = means.max() if higher_is_better else means.min()
    return [i for i, value in enumerate(means) if value == best]


def _mean_std_columns(
    numbers: pd.DataFrame, headers: Mapping[str, str], mark_best: bool
) -> tuple[dict[str, list[str]], set[tuple[int, str]]]:
    """Display columns "mean ± std" for {column: header}, and the best cells if `mark_best`."""
    shown: dict[str, list[str]] = {}
    marked: set[tuple[int, str]] = set()
    for column, header in headers.items():
        means, stds = numbers[f"{column}_mean"], numbers[f"{column}_std"]
        shown[header] = [_mean_std(m, s, column) for m, s in zip(means, stds)]
        if mark_best:
            marked |= {(i, header) for i in _best_rows(means)}
    return shown, marked


# ----------------------------------------------------------------------------------------- tables


def _group_header(trials: pd.DataFrame, column: str) -> str:
    """"Many (3)", or "Many (2-3)" when the class count differs across trials."""
    header = HEADERS.get(column, column)
    counts_column = f"classes_{column.partition('_acc_')[2]}"
    counts = trials[counts_column].dropna() if counts_column in trials else pd.Series(dtype=float)
    if counts.empty:
        return header
    low, high = int(counts.min()), int(counts.max())
    return f"{header} ({low})" if low == high else f"{header} ({low}-{high})"


def shot_table(
    trials: pd.DataFrame,
    by: list[str],
    sort_by: str = "test_acc_all",
    strata: Sequence[str] = (),
    higher_is_better: bool = True,
) -> Table:
    """Head/medium/tail: a row per configuration, All / Many / Medium / Few as mean ± std over its
    trials in percent, n trials; best first by the mean of `sort_by` (`higher_is_better` says which
    end is best). With `strata` (columns of `by`: search.strata) rows are grouped by stratum, in
    ascending order, and the best per column is marked within each stratum, since only there are
    trials compared."""
    columns = list(dict.fromkeys([*ACCURACY_COLUMNS, sort_by]))
    numbers = _ranked(aggregate(trials, by, columns), sort_by, strata, higher_is_better)
    headers = {c: _group_header(trials, c) for c in ACCURACY_COLUMNS}
    shown, marked = {}, set()
    groups = numbers.groupby(list(strata), dropna=False, sort=False).indices.values() if strata else [range(len(numbers))]
    for rows in groups:
        part, part_marked = _mean_std_columns(numbers.iloc[list(rows)].reset_index(drop=True), headers, mark_best=True)
        for header, texts in part.items():
            shown.setdefault(header, []).extend(texts)
        marked |= {(rows[i], header) for i, header in part_marked}
    display = pd.DataFrame({**_label_columns(numbers, by), **shown, "n": [str(n) for n in numbers["n"]]})
    return Table(numbers, display, len(by), frozenset(marked))


def _ranked(numbers: pd.DataFrame, sort_by: str, strata: Sequence[str] = (), higher_is_better: bool = True) -> pd.DataFrame:
    """The rows of `aggregate` best first by the mean of `sort_by` (ties and missing values keep trial
    order, `_rounded`); with `strata`, grouped by stratum in ascending order (a stable sort: best
    first within each stratum)."""
    numbers = numbers.sort_values(
        f"{sort_by}_mean", ascending=not higher_is_better, na_position="last", kind="stable", key=_rounded
    )
    if strata:
        order = sorted(range(len(numbers)), key=lambda i: _stratum_order([numbers[c].iloc[i] for c in strata]))
        numbers = numbers.iloc[order]
    return numbers.reset_index(drop=True)


def nc_table(
    trials: pd.DataFrame,
    by: list[str],
    columns: Sequence[str] = NC_COLUMNS,
    sort_by: str | None = None,
    strata: Sequence[str] = (),
    higher_is_better: bool = True,
) -> Table:
    """NC metrics per configuration, mean ± std to 3 significant digits; columns absent from
    `trials` (NC3/NC4 need the classifier) are left out, all-NaN ones show a dash. Rows in order of
    first appearance, or, given `sort_by` (and `strata`, `higher_is_better`), in the order of
    `shot_table` with the same arguments, so that both tables list the configurations alike;
    `sort_by` itself is not shown."""
    present = [c for c in columns if c in trials.columns]
    numbers = aggregate(trials, by, present if sort_by is None else list(dict.fromkeys([*present, sort_by])))
    if sort_by is not None:
        numbers = _ranked(numbers, sort_by, strata, higher_is_better)
        if sort_by not in present:
            numbers = numbers.drop(columns=[f"{sort_by}_{s}" for s in ("mean", "std", "n")])
    shown, _ = _mean_std_columns(numbers, {c: HEADERS.get(c, c) for c in present}, mark_best=False)
    display = pd.DataFrame({**_label_columns(numbers, by), **shown, "n": [str(n) for n in numbers["n"]]})
    return Table(numbers, display, len(by))


def _stratum_order(values: Sequence[Any]) -> tuple:
    """Strata in ascending order of their values (numbers before text, a missing value first)."""
    return tuple((not missing(v), isinstance(v, str), v if not missing(v) else 0) for v in values)


def best_per_stratum(
    trials: pd.DataFrame, strata: list[str], by: list[str], metric: str, higher_is_better: bool = True
) -> Table:
    """The best configuration of each stratum (search.strata: independent searches, e.g. one per
    imbalance ratio): a row per stratum, in ascending order of its values; the configuration (the
    columns of `by` that are not strata) with the best mean `metric` over its trials within that
    stratum, never across strata; its values, `metric` (validation, the objective) and the test
    All / Many / Medium / Few as mean ± std over its trials (seeds), n trials. Where several
    configurations share the best mean, the first in trial order is shown, the CSV's `ties` column
    counts them (1: no tie) and a note says so (`_tie_notes`)."""
    searched = [c for c in by if c not in strata]
    columns = list(dict.fromkeys([metric, *ACCURACY_COLUMNS]))
    numbers = aggregate(trials, [*strata, *searched], columns)
    ranked = numbers.sort_values(
        f"{metric}_mean", ascending=not higher_is_better, na_position="last", kind="stable", key=_rounded
    )
    ties = ranked.groupby(strata, dropna=False, sort=False)[f"{metric}_mean"].transform(_tied_with_first)
    best = ranked.assign(ties=ties).groupby(strata, dropna=False, sort=False).head(1)
    order = sorted(range(len(best)), key=lambda i: _stratum_order(best[strata].iloc[i].tolist()))
    numbers = best.iloc[order].reset_index(drop=True)
    headers = {metric: f"{metric} (val)", **{c: _group_header(trials, c) for c in ACCURACY_COLUMNS}}
    shown, _ = _mean_std_columns(numbers, headers, mark_best=False)
    display = pd.DataFrame({**_label_columns(numbers, [*strata, *searched]), **shown, "n": [str(n) for n in numbers["n"]]})
    return Table(numbers, display, len(strata) + len(searched), notes=_tie_notes(numbers, strata, metric))


def _rounded(means: pd.Series) -> pd.Series:
    """Means to 12 significant digits, the precision at which they are ranked and tied: means of the
    same values summed in another order (0.95 of three trials, 0.95 of two) then compare equal."""
    return means.map(lambda value: float(f"{value:.12g}"))


def _tied_with_first(means: pd.Series) -> pd.Series:
    """How many of a stratum's configurations (best first) share the first's mean (`_rounded`): 1 is
    no tie; a missing mean ties with nothing."""
    rounded = _rounded(means)
    return pd.Series(max(int((rounded == rounded.iloc[0]).sum()), 1), index=means.index)


def _tie_notes(numbers: pd.DataFrame, strata: list[str], metric: str) -> tuple[str, ...]:
    """A line per stratum whose best is tied, e.g. "data.imbalance.ratio=10: 2 configurations tie for the
    best val_acc_all (val), 95.0; shown: the first in trial order" (the value as the table shows it)."""
    notes = []
    for _, row in numbers[numbers["ties"] > 1].iterrows():
        stratum = ", ".join(f"{_label_header(c)}={value_text(row[c], PARAM_DIGITS)}" for c in strata)
        best = _number(row[f"{metric}_mean"], metric)
        tied = f"{int(row['ties'])} configurations tie for the best {metric} (val), {best}"
        notes.append(f"{stratum}: {tied}; shown: the first in trial order")
    return tuple(notes)


def front_table(
    trials: pd.DataFrame,
    by: list[str],
    strata: list[str],
    objectives: Mapping[str, str],
    on_front: Sequence[bool],
    variant_column: str | None = None,
) -> Table:
    """The configurations on a Pareto front (`on_front`: per trial, whether its configuration is on
    its variant's front in its stratum, ncstudy.outputs.pareto.StratumFronts.trial_on_front): a row
    per such configuration, grouped by stratum (ascending), then variant (in trial order), best first
    by the first objective within each; its values, the validation objectives (`(val)`), the test
    All / Many / Medium / Few (and the test counterpart of any other objective, e.g. the test loss)
    as mean ± std over its trials (seeds), n trials. No cell is bold: every row is non-dominated."""
    searched = [c for c in by if c not in strata]
    labels = [*strata, *searched]
    tested = [on_test(o) for o in objectives if on_test(o) not in ACCURACY_COLUMNS]
    columns = list(dict.fromkeys([*objectives, *ACCURACY_COLUMNS, *tested]))
    numbers = aggregate(trials[np.asarray(on_front, dtype=bool)], labels, columns)
    first, mode = next(iter(objectives.items()))
    numbers = numbers.sort_values(f"{first}_mean", ascending=mode == "min", na_position="last", kind="stable", key=_rounded)
    variants = list(dict.fromkeys(trials[variant_column])) if variant_column else []
    order = sorted(
        range(len(numbers)),
        key=lambda i: (_stratum_order(numbers[strata].iloc[i].tolist()),
                       variants.index(numbers[variant_column].iloc[i]) if variant_column else 0),
    )  # fmt: skip
    numbers = numbers.iloc[order].reset_index(drop=True)
    headers = {**{o: f"{o} (val)" for o in objectives}, **{c: _group_header(trials, c) for c in ACCURACY_COLUMNS},
               **{c: c.replace("_", " ") for c in tested}}  # fmt: skip
    shown, _ = _mean_std_columns(numbers, headers, mark_best=False)
    display = pd.DataFrame({**_label_columns(numbers, labels), **shown, "n": [str(n) for n in numbers["n"]]})
    return Table(numbers, display, len(labels))


def _points(value: float, signed: bool = False) -> str:
    """A hypervolume (percent of its box) or a difference of two, in points with one decimal."""
    return DASH if missing(value) else f"{value:{'+' if signed else ''}.1f}"


def _with_interval(value: float, low: float, high: float, signed: bool = False) -> str:
    if missing(value):
        return DASH
    return f"{_points(value, signed)} [{_points(low, signed)}, {_points(high, signed)}]"


def hypervolume_table(
    fronts: Mapping[tuple, StratumFronts], strata: list[str], baseline: Any = None, confidence: float = CONFIDENCE
) -> Table:
    """A row per stratum (`fronts`' keys: the values of the `strata` columns) and variant: the
    configurations, the front's size, its hypervolume (percent of the box from the reference to the
    ideal point, on the test counterparts; ncstudy.outputs.pareto) with its bootstrap percentile
    interval, and, given a `baseline` variant, the draw-by-draw difference against it with its
    interval (bold where the interval excludes 0, unless it is one point: one seed per configuration
    leaves no spread to exclude anything; a dash on the baseline's own row and in a stratum without
    it). The CSV also has each row's reference and ideal point (`reference_<test column>`,
    `ideal_<test column>`); the notes say the reference, the units and the interval."""
    records = []
    variant_column = next((f.variant_column for f in fronts.values() if f.variant_column), None)
    for key, front in fronts.items():
        for variant in front.variants:
            record: dict[str, Any] = dict(zip(strata, key))
            if variant_column:
                record[variant_column] = variant
            configurations = front.of(variant)
            low, high = front.interval(variant, confidence)
            record |= {"configurations": len(configurations), "front": int(configurations["on_front"].sum()),
                       "hypervolume": front.hypervolume[variant], "hypervolume_low": low, "hypervolume_high": high}  # fmt: skip
            if baseline is not None:
                compared = baseline in front.variants and variant != baseline
                difference = front.difference(variant, baseline, confidence) if compared else (math.nan,) * 3
                record |= dict(zip(("difference", "difference_low", "difference_high"), difference))
            test = [on_test(o) for o in front.objectives]
            record |= {f"reference_{c}": r for c, r in zip(test, front.reference)}
            record |= {f"ideal_{c}": i for c, i in zip(test, front.ideal)}
            records.append(record)
    numbers = pd.DataFrame(records)
    labels = [*strata, *([variant_column] if variant_column else [])]
    def intervals(name: str, signed: bool = False) -> list[str]:
        return [_with_interval(*c, signed=signed) for c in zip(*(numbers[f"{name}{s}"] for s in ("", "_low", "_high")))]

    display = {**_label_columns(numbers, labels), "configurations": numbers["configurations"].astype(str).tolist(),
               "front": numbers["front"].astype(str).tolist(), "hypervolume (%)": intervals("hypervolume")}  # fmt: skip
    marked: set[tuple[int, str]] = set()
    if baseline is not None:
        header = f"vs {baseline}"
        display[header] = intervals("difference", signed=True)
        low, high = numbers["difference_low"], numbers["difference_high"]
        marked = {(int(i), header) for i in np.flatnonzero(((low > 0) | (high < 0)) & (low < high))}
    return Table(numbers, pd.DataFrame(display), len(labels), frozenset(marked), _hypervolume_notes(fronts, confidence))


def _hypervolume_notes(fronts: Mapping[tuple, StratumFronts], confidence: float) -> tuple[str, ...]:
    """What the hypervolume table's numbers are: the box (reference and ideal point), the units, which
    numbers chose the front and which measure it, and the interval."""
    front = next(iter(fronts.values()), None)
    if front is None:
        return ()
    ends = []
    for index, (objective, mode) in enumerate(front.objectives.items()):
        column = on_test(objective)
        if "_acc_" in objective:
            reference, ideal = (0, 100) if mode == "max" else (100, 0)
            ends.append(f"{column} {reference}% -> {ideal}%")
        else:
            end = "reference" if mode == "min" else "ideal"  # the largest value in the stratum is that end
            values = ", ".join(f"{getattr(f, end)[index]:.3g}" for f in fronts.values())
            largest = f"the largest in the stratum ({values}; CSV: {end}_{column})"
            ends.append(f"{column} {largest} -> 0" if mode == "min" else f"{column} 0 -> {largest}")
    return (
        f"Hypervolume: percent of the box from the reference point to the ideal point ({'; '.join(ends)}), covered by "
        "the test means of the configurations that the validation front selected (the front is chosen on the validation "
        "objectives, so their own hypervolume would be optimistic); differences are in hypervolume points.",
        f"[low, high]: {100 * confidence:g}% bootstrap percentile interval over {BOOTSTRAP_DRAWS} draws, resampling seeds "
        "within each configuration (a configuration with one seed contributes no spread); a difference is taken draw by draw.",
    )


def _combine(frames: Mapping[str, pd.DataFrame] | pd.DataFrame, study_column: str) -> pd.DataFrame:
    if isinstance(frames, pd.DataFrame):
        return frames
    return pd.concat([frame.assign(**{study_column: label}) for label, frame in frames.items()], ignore_index=True)


def _key(values: Sequence[Any]) -> tuple:
    """A hashable configuration key in which every missing value is None."""
    return tuple(None if missing(v) else v for v in values)


def _study_ratio_header(study: Any, ratio: Any, metric: str) -> str:
    """"CIFAR-10-LT r=100"; the metric's name when neither study nor ratio is known."""
    parts = ([] if study is None else [str(study)]) + ([] if ratio is None else [f"r={value_text(ratio, PARAM_DIGITS)}"])
    return " ".join(parts) or HEADERS.get(metric, metric)


def _study_ratio_columns(long: pd.DataFrame, study_column: str, ratio_column: str) -> list[tuple[Any, Any]]:
    """(study, ratio) pairs: studies in order of first appearance, ratios descending within each."""
    pairs = list(dict.fromkeys(_key(pair) for pair in zip(long[study_column], long[ratio_column])))
    studies = list(dict.fromkeys(study for study, _ in pairs))
    return [pair for study in studies for pair in sorted((p for p in pairs if p[0] == study), key=_ratio_order)]


def _ratio_order(pair: tuple[Any, Any]) -> tuple[bool, float]:
    """Largest imbalance ratio first, a missing ratio last."""
    ratio = pair[1]
    return ratio is None, -float(ratio) if ratio is not None else 0.0


def ablation_table(
    frames: Mapping[str, pd.DataFrame] | pd.DataFrame,
    variant_column: str | Sequence[str] = "variant",
    metric: str = "test_acc_all",
    study_column: str = "study",
    ratio_column: str = "param.data.imbalance.ratio",
    higher_is_better: bool = True,
) -> Table:
    """Table 7 of Liu et al. (AISTATS 2023): a row per variant (in order of first appearance), a
    column per (study, imbalance ratio), cells the mean ± std of `metric` over seeds; a dash where a
    variant has no trial. `frames` is {study label: trials} or one frame with `study_column`; a frame
    without `ratio_column` (a ratio that was not searched) gives columns named by the study alone."""
    variants = [variant_column] if isinstance(variant_column, str) else list(variant_column)
    combined = _combine(frames, study_column)
    combined = combined.assign(**{c: np.nan for c in (study_column, ratio_column) if c not in combined})
    long = aggregate(combined, [*variants, study_column, ratio_column], [metric])
    cells = {_key(row[[*variants, study_column, ratio_column]]): row for _, row in long.iterrows()}
    rows = list(dict.fromkeys(_key(values) for values in long[variants].itertuples(index=False)))
    numbers = pd.DataFrame(rows, columns=variants)
    shown: dict[str, list[str]] = {}
    marked: set[tuple[int, str]] = set()
    for study, ratio in _study_ratio_columns(long, study_column, ratio_column):
        header = _study_ratio_header(study, ratio, metric)
        found = [cells.get((*row, study, ratio)) for row in rows]
        means = pd.Series([math.nan if c is None else c[f"{metric}_mean"] for c in found], dtype=float)
        stds = [math.nan if c is None else c[f"{metric}_std"] for c in found]
        numbers[f"{header}_mean"], numbers[f"{header}_std"] = means, stds
        numbers[f"{header}_n"] = [0 if c is None else int(c[f"{metric}_n"]) for c in found]
        shown[header] = [_mean_std(m, s, metric) for m, s in zip(means, stds)]
        marked |= {(i, header) for i in _best_rows(means, higher_is_better)}
    display = pd.DataFrame({**_label_columns(numbers, variants), **shown})
    return Table(numbers, display, len(variants), frozenset(marked))


def _baseline_key(keys: Sequence[tuple], by: list[str], baseline: Any) -> tuple:
    """The one configuration that `baseline` names: {column: value} for some of `by` (the "param."
    prefix may be left out), or a value (a tuple for several columns) per column of `by`."""
    if isinstance(baseline, Mapping):
        positions = {}
        for column, value in baseline.items():
            name = column if column in by else f"param.{column}"
            if name not in by:
                raise ValueError(f"baseline column {column!r} is not one of {by}")
            positions[by.index(name)] = value
    else:
        values = baseline if isinstance(baseline, tuple) else (baseline,)
        if len(values) != len(by):
            raise ValueError(f"baseline {baseline!r} needs a value for each of {by}")
        positions = dict(enumerate(values))
    wanted = dict(zip(positions, _key(list(positions.values()))))
    matches = [key for key in keys if all(key[i] == value for i, value in wanted.items())]
    if len(matches) != 1:
        raise ValueError(f"baseline {baseline!r} matches {len(matches)} configurations, not one")
    return matches[0]


def paired_differences(
    trials: pd.DataFrame,
    by: list[str],
    baseline: Any,
    seed_column: str = "param.train.seed",
    columns: Sequence[str] = ACCURACY_COLUMNS,
    confidence: float = 0.95,
) -> Table:
    """Each configuration but the baseline minus the baseline, paired by seed (seeds that only one
    side has are dropped): per column the mean difference and its t interval ("+1.2 [+0.3, +2.1]",
    percentage points for accuracies; no interval below two pairs). Bold: intervals that exclude 0."""
    columns = list(columns)
    if not by:
        raise ValueError("paired_differences needs the configuration columns `by`")
    missing = [c for c in (*by, seed_column, *columns) if c not in trials.columns]
    if missing:
        raise KeyError(f"trials have no column {', '.join(missing)}")
    configurations = {_key(k): rows for k, rows in trials.groupby(by, dropna=False, sort=False)}
    base_key = _baseline_key(list(configurations), by, baseline)
    base = _per_seed(configurations[base_key], seed_column, columns)
    records = []
    for key, rows in configurations.items():
        if key == base_key:
            continue
        own = _per_seed(rows, seed_column, columns)
        common = own.index.intersection(base.index)
        differences = own.loc[common] - base.loc[common]
        record: dict[str, Any] = {**dict(zip(by, key)), "n": len(common)}
        for column in columns:
            values = differences[column].dropna().to_numpy()
            mean, low, high = t_interval(values, confidence)
            record |= {f"{column}_diff": mean, f"{column}_low": low, f"{column}_high": high, f"{column}_n": len(values)}
        records.append(record)
    stat_columns = [f"{c}_{s}" for c in columns for s in ("diff", "low", "high", "n")]
    numbers = pd.DataFrame(records, columns=[*by, "n", *stat_columns])
    shown: dict[str, list[str]] = {}
    marked: set[tuple[int, str]] = set()
    for column in columns:
        header = HEADERS.get(column, column)
        low, high = numbers[f"{column}_low"], numbers[f"{column}_high"]
        shown[header] = [_difference(*cell, column) for cell in zip(numbers[f"{column}_diff"], low, high)]
        marked |= {(int(i), header) for i in np.flatnonzero((low > 0) | (high < 0))}
    display = pd.DataFrame({**_label_columns(numbers, by), **shown, "n": [str(n) for n in numbers["n"]]})
    return Table(numbers, display, len(by), frozenset(marked))


# -------------------------------------------------------------------------------------- rendering


def _rows(display: pd.DataFrame, marked: frozenset[tuple[int, str]], bold: Callable[[str], str]) -> list[list[str]]:
    return [
        [bold(text) if (i, header) in marked else text for header, text in zip(display.columns, row)]
        for i, row in enumerate(display.itertuples(index=False))
    ]


def _markdown_escape(text: str) -> str:
    return str(text).replace("|", r"\|")


def to_markdown(table: Table) -> str:
    """A GitHub pipe table: label columns left-aligned, values right-aligned, marked cells bold; each
    note a paragraph under it."""
    header = [_markdown_escape(h) for h in table.display.columns]
    rule = [":---" if i < table.labels else "---:" for i in range(len(header))]
    body = _rows(table.display.map(_markdown_escape), table.marked, lambda text: f"**{text}**")
    text = "".join("| " + " | ".join(line) + " |\n" for line in (header, rule, *body))
    return text + "".join(f"\n{note}\n" for note in table.notes)


def _latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIAL.get(character, character) for character in str(text))


def to_latex(table: Table) -> str:
    """A booktabs tabular (needs \\usepackage{booktabs}); marked cells in \\textbf, ± as $\\pm$; each
    note a row spanning the columns under the bottom rule."""
    spec = "l" * table.labels + "r" * (len(table.display.columns) - table.labels)
    header = [_latex_escape(h) for h in table.display.columns]
    body = _rows(table.display.map(_latex_escape), table.marked, lambda text: rf"\textbf{{{text}}}")
    header_line, *body_lines = [" & ".join(cells) + r" \\" for cells in (header, *body)]
    notes = [rf"\multicolumn{{{len(header)}}}{{l}}{{\footnotesize {_latex_escape(note)}}} \\" for note in table.notes]
    lines = [rf"\begin{{tabular}}{{{spec}}}", r"\toprule", header_line, r"\midrule", *body_lines, r"\bottomrule", *notes]
    return "\n".join(lines) + "\n\\end{tabular}\n"


def to_csv(table: Table) -> str:
    """The numbers (means, stds, counts as numbers; a missing value empty), not the shown strings."""
    return table.numbers.to_csv(index=False)


FORMATS = {"md": (".md", to_markdown), "latex": (".tex", to_latex), "csv": (".csv", to_csv)}


def write_tables(
    tables: Mapping[str, Table], folder: str | Path, formats: Sequence[str] = ("md", "latex", "csv")
) -> list[Path]:
    """Writes folder/<name>.md, .tex, .csv for each table (every text rendered before any file is
    written; each file written to a temporary name, then renamed); returns the paths written."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown table format {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    folder = Path(folder)
    texts = {folder / f"{name}{FORMATS[f][0]}": FORMATS[f][1](table) for name, table in tables.items() for f in formats}
    folder.mkdir(parents=True, exist_ok=True)
    for path, text in texts.items():
        _write_text(text, path)
    return list(texts)


def _write_text(text: str, path: Path) -> None:
    with replaced_atomically(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
