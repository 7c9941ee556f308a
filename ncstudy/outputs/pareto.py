"""Pareto fronts of a multi-objective study (search.objectives) and how much of the objective space they
cover: the non-dominated configurations, their hypervolume, and a bootstrap interval over seeds.

- Dominance (Pareto): a point is on the front when no other point is at least as good in every
  objective and strictly better in one. Identical points do not dominate each other, so ties are all
  on the front; a point with a missing value is on no front.
- Hypervolume (Zitzler & Thiele, "Multiobjective optimization using evolutionary algorithms: a
  comparative case study", PPSN V, 1998, the "size of the space covered"): the volume of the union of
  the boxes between the reference point and each point, exact for any number of objectives, by a
  sweep in 2-D and by slicing along the last objective above (the "hypervolume by slicing objectives"
  scheme of While, Hingston, Barone & Huband, IEEE TEVC 2006), which is quick for the small fronts of
  a study. A point not strictly better than the reference in every objective adds nothing.
- Units: the hypervolume is given as a percentage of the box between the reference and the ideal
  point (`hypervolume_box`): accuracies from 0 (the reference) to 1 (the ideal), a loss from the
  largest test loss observed in the stratum (the reference) to 0. 100 would be a perfect classifier
  on every objective; a difference of 1 is one "hypervolume point".
- Which numbers: the front is selected on the validation objectives (means over a configuration's
  seeds), as the search saw them; its hypervolume is computed on the test counterparts (means over
  seeds) of the configurations that front selected. The validation numbers chose the front, so their
  own hypervolume is optimistically biased (the winner's curse of selecting on noisy estimates); the
  test numbers of the chosen configurations are what a researcher reports.
- Interval: the nonparametric bootstrap (Efron & Tibshirani, "An Introduction to the Bootstrap",
  1993, ch. 13, the percentile interval), resampling seeds within each configuration: a draw takes,
  per configuration independently, its seed rows with replacement, recomputes the validation means,
  the front, the test means and the hypervolume. A configuration with one seed contributes no spread.
  Every variant of a stratum is resampled in the same draw, so the difference of two variants is
  taken draw by draw (a variant against itself gives exactly 0). BOOTSTRAP_DRAWS draws from
  np.random.default_rng(0), so a report is reproducible.

Pure numpy and pandas: the report (ncstudy.outputs.report) and the tables build on it.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

BOOTSTRAP_DRAWS = 2000
CONFIDENCE = 0.95
BOOTSTRAP_SEED = 0
CHUNK_COMPARISONS = 4_000_000  # pairwise comparisons held at once when the draws' fronts are found together


def non_dominated(points: np.ndarray, maximize: Sequence[bool]) -> np.ndarray:
    """Which rows of `points` (n, d) are on the Pareto front, `maximize[j]` saying the direction of
    objective j: no other row is at least as good in every objective and strictly better in one.
    Identical rows are all on it; a row with NaN is never on it, nor does it dominate."""
    points, signs = _checked(points, maximize)
    return _fronts(points * signs)


def _fronts(gains: np.ndarray) -> np.ndarray:
    """non_dominated for gains (..., n, d), larger better in every column, over the last two axes
    (a stack of point sets at once: the bootstrap's draws). A comparison with NaN is false, so a row
    with NaN dominates nothing; it is then left off the front itself."""
    # dominates[..., i, k]: row i is at least as good as row k everywhere and better somewhere
    at_least = (gains[..., :, None, :] >= gains[..., None, :, :]).all(axis=-1)
    better = (gains[..., :, None, :] > gains[..., None, :, :]).any(axis=-1)
    return ~(at_least & better).any(axis=-2) & ~np.isnan(gains).any(axis=-1)


def hypervolume(points: np.ndarray, maximize: Sequence[bool], reference: Sequence[float]) -> float:
    """The volume dominated by `points` (n, d) and bounded by `reference` (module docstring): rows
    not strictly better than the reference in every objective, and rows with NaN, add nothing."""
    points, signs = _checked(points, maximize)
    gains = (points - np.asarray(reference, dtype=float)) * signs  # distance beyond the reference, > 0 counts
    with np.errstate(invalid="ignore"):
        gains = gains[(gains > 0).all(axis=1)]
    if not len(gains):
        return 0.0
    return float(_volume(gains))


def _checked(points: np.ndarray, maximize: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    """`points` as a float array (n, d) and the sign of each objective (+1 maximised, -1 minimised)."""
    points = np.asarray(points, dtype=float)
    signs = np.where(np.asarray(maximize, dtype=bool), 1.0, -1.0)
    if points.ndim != 2 or points.shape[1] != len(signs):
        raise ValueError(f"points of shape {points.shape}: expected (n, {len(signs)}), one column per direction in maximize")
    return points, signs


def _volume(gains: np.ndarray) -> float:
    """The volume of the union of the boxes [0, g] for the rows g (all > 0, maximised); a dominated
    row adds nothing to it (the sweep passes over it, the slices drop it)."""
    if gains.shape[1] == 1:
        return float(gains.max())
    if gains.shape[1] == 2:  # sweep: by the first objective, largest first; each new height adds a strip
        area, height = 0.0, 0.0
        for x, y in gains[np.lexsort((-gains[:, 1], -gains[:, 0]))]:
            if y > height:
                area, height = area + x * (y - height), y
        return area
    volume, below = 0.0, 0.0  # slices along the last objective: the points reaching each level
    for level in np.unique(gains[:, -1]):
        reaching = gains[gains[:, -1] >= level, :-1]
        volume += _volume(reaching[_fronts(reaching)]) * (level - below)
        below = level
    return volume


def on_test(objective: str) -> str:
    """The trials-table column measured on the test set for a validation objective: val_acc_few ->
    test_acc_few, val_loss -> test_loss (ncstudy.config.OBJECTIVE_METRICS)."""
    return "test_" + objective.removeprefix("val_")


def hypervolume_box(objectives: Mapping[str, str], trials: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(reference, ideal) on the test counterparts of `objectives` ({validation metric: max|min}):
    an accuracy spans 0 to 1 (reference 0 when maximised, 1 when minimised); a loss spans the worst
    test loss of `trials` (one stratum's: the largest, when minimised) to 0."""
    reference, ideal = [], []
    for objective, mode in objectives.items():
        if "_acc_" in objective:
            low, high = 0.0, 1.0
        else:
            low, high = 0.0, float(trials[on_test(objective)].max())
        reference.append(low if mode == "max" else high)
        ideal.append(high if mode == "max" else low)
    return np.array(reference), np.array(ideal)


def percentile_interval(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The (low, high) percentiles that hold `confidence` of `values` between them (NaN dropped)."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if not len(values):
        return np.nan, np.nan
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


@dataclass(frozen=True, eq=False)
class StratumFronts:
    """The fronts of one stratum. configurations: a row per configuration (the `by` values, `n` its
    seed rows, the validation objectives' means, their test counterparts' means, `on_front`: on its
    variant's front); variants: the variants in order of first appearance ([None] without variants);
    hypervolume: variant -> percent of the box (`reference` to `ideal`, test counterparts); draws:
    variant -> the hypervolume of each bootstrap draw; trial_on_front: per row of the trials given,
    whether its configuration is on its variant's front."""

    objectives: dict[str, str]
    configurations: pd.DataFrame
    variant_column: str | None
    variants: list[Hashable]
    reference: np.ndarray
    ideal: np.ndarray
    hypervolume: dict[Hashable, float]
    draws: dict[Hashable, np.ndarray]
    trial_on_front: np.ndarray

    def of(self, variant: Hashable) -> pd.DataFrame:
        """The configurations of `variant` (all of them without variants)."""
        if self.variant_column is None:
            return self.configurations
        return self.configurations[self.configurations[self.variant_column] == variant]

    def interval(self, variant: Hashable, confidence: float = CONFIDENCE) -> tuple[float, float]:
        return percentile_interval(self.draws[variant], confidence)

    def difference(self, variant: Hashable, baseline: Hashable, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
        """(variant minus baseline, low, high): the point estimates' difference and the percentile
        interval of the draw-by-draw differences."""
        low, high = percentile_interval(self.draws[variant] - self.draws[baseline], confidence)
        return self.hypervolume[variant] - self.hypervolume[baseline], low, high


def stratum_fronts(
    trials: pd.DataFrame,
    by: Sequence[str],
    objectives: Mapping[str, str],
    variant_column: str | None = None,
    draws: int = BOOTSTRAP_DRAWS,
    seed: int = BOOTSTRAP_SEED,
) -> StratumFronts:
    """The front of each variant among `trials` (one stratum's; a row per trial, i.e. per seed), the
    configurations being the distinct values of `by` (in order of first appearance, a missing value a
    setting of its own; `variant_column`, one of `by`, splits them into variants), and each front's
    hypervolume with its bootstrap draws (module docstring)."""
    objectives = dict(objectives)
    validation = list(objectives)
    test = [on_test(name) for name in validation]
    maximize = [mode == "max" for mode in objectives.values()]
    missing = [c for c in (*by, *validation, *test) if c not in trials.columns]
    if missing:
        raise KeyError(f"trials have no column {', '.join(missing)}")
    trials = trials.reset_index(drop=True)
    rows = list(trials.groupby(list(by), dropna=False, sort=False).indices.values())
    keys = trials.loc[[r[0] for r in rows], list(by)].reset_index(drop=True)
    values = trials[[*validation, *test]].to_numpy(dtype=float)
    per_configuration = [values[r] for r in rows]  # (seeds, 2d): validation, then test
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the mean of a column that is NaN for every seed
        means = np.array([np.nanmean(v, axis=0) for v in per_configuration]).reshape(len(rows), 2 * len(validation))
    configurations = keys.assign(n=[len(r) for r in rows])
    configurations[validation] = means[:, : len(validation)]
    configurations[test] = means[:, len(validation) :]
    variant_of = configurations[variant_column].tolist() if variant_column else [None] * len(rows)
    variants = list(dict.fromkeys(variant_of))
    members = {v: np.array([w == v for w in variant_of]) for v in variants}
    reference, ideal = hypervolume_box(objectives, trials)
    box = float(np.prod(np.abs(ideal - reference)))

    signs = np.where(maximize, 1.0, -1.0)

    def fronts_and_volumes(samples: np.ndarray, inside: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For samples (draws, configurations, 2d): the on-front mask of the configurations `inside`
        per draw, and the percent hypervolume of their test means per draw."""
        chosen = samples[:, inside]
        per_chunk = max(1, CHUNK_COMPARISONS // max(1, chosen.shape[1] ** 2 * len(validation)))
        fronts = np.concatenate([_fronts(chosen[start : start + per_chunk, :, : len(validation)] * signs)
                                 for start in range(0, len(chosen), per_chunk)])  # fmt: skip
        volumes = [hypervolume(sample[front, len(validation) :], maximize, reference) for sample, front in zip(chosen, fronts)]
        return fronts, 100 * np.array(volumes) / box if box > 0 else np.full(len(chosen), np.nan)

    on_front = np.zeros(len(rows), dtype=bool)
    volumes, drawn = {}, {}
    samples = _resampled_means(per_configuration, draws, seed)  # (draws, configurations, 2d)
    for variant, inside in members.items():
        fronts, volume = fronts_and_volumes(means[None], inside)
        on_front[inside], volumes[variant] = fronts[0], float(volume[0])
        drawn[variant] = fronts_and_volumes(samples, inside)[1]
    configurations["on_front"] = on_front
    trial_on_front = np.zeros(len(trials), dtype=bool)
    for configuration, r in enumerate(rows):
        trial_on_front[r] = on_front[configuration]
    return StratumFronts(
        objectives, configurations, variant_column, variants, reference, ideal, volumes, drawn, trial_on_front
    )


def _resampled_means(per_configuration: list[np.ndarray], draws: int, seed: int) -> np.ndarray:
    """(draws, configurations, columns): per draw and configuration, the mean over its seed rows drawn
    with replacement (as many as it has; one row stays itself), NaN left out as in the point estimate."""
    rng = np.random.default_rng(seed)
    samples = np.empty((draws, len(per_configuration), per_configuration[0].shape[1] if per_configuration else 0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for index, values in enumerate(per_configuration):
            chosen = rng.integers(0, len(values), size=(draws, len(values)))
            samples[:, index, :] = np.nanmean(values[chosen], axis=1)
    return samples
