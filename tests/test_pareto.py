"""Pareto fronts and hypervolumes (ncstudy.outputs.pareto): the front on hand-made points (dominance,
ties, a single point, missing values, both directions); the hypervolume against independent
computations (a hand-computed staircase, an exact count of grid cells, Optuna's own WFG); the seed
bootstrap's interval and the difference between variants."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from optuna._hypervolume import compute_hypervolume

from ncstudy.outputs.pareto import BOOTSTRAP_DRAWS, hypervolume, non_dominated, stratum_fronts

MAX2 = [True, True]


def _front_by_definition(points: np.ndarray, maximize) -> list[bool]:
    """The definition, pair by pair: i is on the front unless some j is >= everywhere and > somewhere."""
    signs = np.where(maximize, 1.0, -1.0)
    gains = np.asarray(points, dtype=float) * signs
    kept = []
    for i, p in enumerate(gains):
        if np.isnan(p).any():
            kept.append(False)
            continue
        others = [q for j, q in enumerate(gains) if j != i and not np.isnan(q).any()]
        kept.append(not any((q >= p).all() and (q > p).any() for q in others))
    return kept


def test_a_dominated_point_is_off_the_front():
    assert non_dominated(np.array([[1, 1], [2, 2]]), MAX2).tolist() == [False, True]
    assert non_dominated(np.array([[1, 3], [3, 1], [2, 2], [1, 1]]), MAX2).tolist() == [True, True, True, False]


def test_equal_in_one_objective_and_worse_in_the_other_is_dominated():
    assert non_dominated(np.array([[1, 2], [1, 1]]), MAX2).tolist() == [True, False]
    assert non_dominated(np.array([[0.5, 0.2], [0.4, 0.2]]), MAX2).tolist() == [True, False]


def test_identical_points_are_both_on_the_front():
    assert non_dominated(np.array([[1, 2], [1, 2], [0, 0]]), MAX2).tolist() == [True, True, False]
    assert non_dominated(np.array([[1, 2], [1, 2], [2, 1]]), MAX2).tolist() == [True, True, True]


def test_a_single_point_is_the_front():
    assert non_dominated(np.array([[0.3, 0.7]]), MAX2).tolist() == [True]
    assert non_dominated(np.array([[0.3, 0.7, 2.0]]), [True, True, False]).tolist() == [True]


def test_a_row_with_nan_is_never_on_the_front_and_dominates_nothing():
    points = np.array([[np.nan, 5.0], [1.0, 1.0], [9.0, np.nan]])
    assert non_dominated(points, MAX2).tolist() == [False, True, False]
    assert non_dominated(np.array([[np.nan, np.nan]]), MAX2).tolist() == [False]


def test_directions_min_and_mixed():
    points = np.array([[1, 1], [2, 2]])
    assert non_dominated(points, [False, False]).tolist() == [True, False]
    # accuracy up, loss down: (0.8, 0.5) beats (0.8, 0.9) and (0.7, 0.5); (0.9, 1.0) trades
    mixed = np.array([[0.8, 0.5], [0.8, 0.9], [0.7, 0.5], [0.9, 1.0]])
    assert non_dominated(mixed, [True, False]).tolist() == [True, False, False, True]


def test_the_front_agrees_with_the_definition_on_random_points_with_ties():
    rng = np.random.default_rng(3)
    for d in (2, 3):
        points = rng.integers(0, 5, size=(40, d)).astype(float)  # few values: many ties and equal coordinates
        points[rng.integers(0, 40, 3), rng.integers(0, d, 3)] = np.nan
        for maximize in itertools.product([True, False], repeat=d):
            assert non_dominated(points, maximize).tolist() == _front_by_definition(points, np.array(maximize))


def test_hypervolume_of_a_staircase_is_its_area_by_hand():
    # boxes [0,1]x[0,3], [0,2]x[0,2], [0,3]x[0,1]: 3 + 2 + 1 = 6 unit squares; (1, 1) adds nothing
    staircase = np.array([[1, 3], [2, 2], [3, 1], [1, 1]])
    assert hypervolume(staircase, MAX2, [0, 0]) == pytest.approx(6.0)
    assert hypervolume(staircase, MAX2, [1, 0]) == pytest.approx(1 * 2 + 1 * 1)  # only what lies right of x = 1
    # the same shape minimised: reference above and right
    assert hypervolume(4 - staircase, [False, False], [4, 4]) == pytest.approx(6.0)
    assert hypervolume(np.array([[0.9, 0.1], [0.8, 0.2]]), MAX2, [0, 0]) == pytest.approx(0.9 * 0.1 + 0.8 * 0.1)
    assert hypervolume(np.array([[0.5, 0.5]]), MAX2, [0, 0]) == pytest.approx(0.25)
    assert hypervolume(np.empty((0, 2)), MAX2, [0, 0]) == 0.0


def test_points_not_beyond_the_reference_add_nothing():
    assert hypervolume(np.array([[3.0, -1.0]]), MAX2, [0, 0]) == 0.0
    assert hypervolume(np.array([[3.0, 0.0]]), MAX2, [0, 0]) == 0.0  # on the reference in one objective
    good = np.array([[1.0, 2.0], [2.0, 1.0]])
    with_outside = np.vstack([good, [[5.0, -0.5], [-1.0, 9.0], [np.nan, 4.0]]])
    assert hypervolume(with_outside, MAX2, [0, 0]) == pytest.approx(hypervolume(good, MAX2, [0, 0])) == pytest.approx(3.0)


def _grid_volume(points: np.ndarray) -> int:
    """Points with integer coordinates 1..n, reference 0, maximised: the number of unit cells of the
    grid that some point covers (cell c is covered when a point is >= c + 1 in every coordinate)."""
    n, d = int(points.max()), points.shape[1]
    cells = np.array(list(itertools.product(range(n), repeat=d)))
    return int(sum((points[None, :, :] >= (cell + 1)).all(axis=2).any() for cell in cells[:, None, :]))


@pytest.mark.parametrize("d", [3, 4])
def test_hypervolume_counts_the_grid_cells_that_points_cover(d):
    rng = np.random.default_rng(d)
    for _ in range(5):
        points = rng.integers(1, 7, size=(8, d)).astype(float)
        assert hypervolume(points, [True] * d, np.zeros(d)) == pytest.approx(_grid_volume(points))


@pytest.mark.parametrize("d", [2, 3, 4])
def test_hypervolume_agrees_with_optunas_wfg(d):
    """Optuna's hypervolume minimises: negated points and reference give the maximised volume."""
    rng = np.random.default_rng(10 + d)
    for size in (1, 5, 30):
        points = rng.random((size, d))
        reference = np.full(d, 0.05)
        inside = points[(points > reference).all(axis=1)]  # Optuna refuses points beyond its reference
        expected = compute_hypervolume(-inside, -reference) if len(inside) else 0.0
        assert hypervolume(points, [True] * d, reference) == pytest.approx(expected, rel=1e-12, abs=1e-15)
        mixed = [True, False] * (d // 2) + [True] * (d % 2)
        flipped = np.where(mixed, points, 1 - points)
        assert hypervolume(flipped, mixed, np.where(mixed, reference, 1 - reference)) == pytest.approx(expected, abs=1e-12)


OBJECTIVES = {"val_acc_many": "max", "val_acc_few": "max"}


def _trials(seeds=(0, 1, 2), spread: float = 0.02, variants=("A", "B")) -> pd.DataFrame:
    """Per variant four configurations at fixed (many, few) means, each seed shifted by +-spread."""
    means = {"A": [(0.9, 0.1), (0.8, 0.2), (0.7, 0.15), (0.6, 0.05)], "B": [(0.92, 0.15), (0.85, 0.3), (0.7, 0.35), (0.5, 0.2)]}
    rows = []
    for variant in variants:
        for c, (many, few) in enumerate(means[variant]):
            for seed in seeds:
                shift = spread * (seed - np.mean(seeds))
                rows.append({"param.variant": variant, "param.x": c, "param.train.seed": seed,
                             "val_acc_many": many + shift, "val_acc_few": few - shift,
                             "test_acc_many": many - 0.02 + shift, "test_acc_few": few - 0.01 + 2 * shift})  # fmt: skip
    return pd.DataFrame(rows)


def test_the_front_is_chosen_on_validation_and_measured_on_test():
    """Configuration 1 is on the validation front, configuration 2 beats it on the test set only: the
    hypervolume is the test one of the validation front (1 and 0), never the test front's."""
    trials = pd.DataFrame({
        "param.x": [0, 1, 2], "param.train.seed": 0,
        "val_acc_many": [0.9, 0.5, 0.4], "val_acc_few": [0.1, 0.5, 0.4],
        "test_acc_many": [0.8, 0.5, 0.6], "test_acc_few": [0.1, 0.4, 0.6],
    })  # fmt: skip
    fronts = stratum_fronts(trials, ["param.x"], OBJECTIVES, draws=10)
    assert fronts.configurations["on_front"].tolist() == [True, True, False]
    assert fronts.trial_on_front.tolist() == [True, True, False]
    expected = 0.8 * 0.1 + 0.5 * (0.4 - 0.1)
    assert fronts.hypervolume[None] == pytest.approx(100 * expected)
    assert fronts.reference.tolist() == [0, 0] and fronts.ideal.tolist() == [1, 1]


def test_a_loss_objective_spans_the_worst_test_loss_of_the_stratum_to_zero():
    trials = pd.DataFrame({
        "param.x": [0, 1, 1], "param.train.seed": [0, 0, 1],
        "val_acc_few": [0.2, 0.6, 0.6], "val_loss": [1.0, 2.0, 2.0],
        "test_acc_few": [0.2, 0.5, 0.7], "test_loss": [1.0, 2.0, 4.0],
    })  # fmt: skip
    fronts = stratum_fronts(trials, ["param.x"], {"val_acc_few": "max", "val_loss": "min"}, draws=10)
    assert fronts.reference.tolist() == [0.0, 4.0] and fronts.ideal.tolist() == [1.0, 0.0]
    # test means (0.2, 1.0) and (0.6, 3.0): 0.2 * 3 + (0.6 - 0.2) * 1 = 1.0 of the 1 x 4 box
    assert fronts.hypervolume[None] == pytest.approx(100 * 1.0 / 4.0)


def test_the_bootstrap_interval_holds_the_estimate_and_is_reproducible():
    fronts = stratum_fronts(_trials(), ["param.variant", "param.x"], OBJECTIVES, "param.variant")
    assert fronts.variants == ["A", "B"]
    assert fronts.configurations.groupby("param.variant")["on_front"].sum().tolist() == [2, 3]
    for variant in fronts.variants:
        low, high = fronts.interval(variant)
        assert len(fronts.draws[variant]) == BOOTSTRAP_DRAWS
        assert low < fronts.hypervolume[variant] < high, (variant, low, high)
    again = stratum_fronts(_trials(), ["param.variant", "param.x"], OBJECTIVES, "param.variant")
    assert all(np.array_equal(fronts.draws[v], again.draws[v]) for v in fronts.variants)
    difference, low, high = fronts.difference("B", "A")
    assert difference == pytest.approx(fronts.hypervolume["B"] - fronts.hypervolume["A"]) and 0 < low < difference < high


def test_one_seed_per_configuration_leaves_no_spread():
    fronts = stratum_fronts(_trials(seeds=(0,)), ["param.variant", "param.x"], OBJECTIVES, "param.variant", draws=50)
    for variant in fronts.variants:
        assert fronts.interval(variant) == pytest.approx((fronts.hypervolume[variant],) * 2)
    difference, low, high = fronts.difference("B", "A")
    assert low == pytest.approx(difference) and high == pytest.approx(difference)


def test_a_variant_against_itself_differs_by_exactly_zero():
    fronts = stratum_fronts(_trials(), ["param.variant", "param.x"], OBJECTIVES, "param.variant", draws=200)
    assert fronts.difference("A", "A") == (0.0, 0.0, 0.0)
    assert not math.isclose(*fronts.interval("A"))  # there was a spread to cancel
