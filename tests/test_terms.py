"""Every row means what its name says: settings that make a loss term inert are refused at validation
(one line naming the keys, exit 2), every variant of the shipped studies moves the features with
each term it names, and the recipe label states the active terms."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pydantic import ValidationError

from ncstudy.config import StudyConfig, load_study, with_params
from ncstudy.errors import StudyError
from ncstudy.method.regularizers import NeuralCollapseRegularizer
from ncstudy.terms import recipe_label

STUDIES = Path(__file__).resolve().parents[1] / "studies"

INERT = [
    ({"regularizer": {"lambda_within": 0, "lambda_between": 0.1, "centers": "learnable"}}, "regularizer.centers: ema"),
    ({"regularizer": {"start_epoch": 12}, "train": {"epochs": 12}}, "regularizer.start_epoch: 12"),
    ({"regularizer": {"lambda_between": 0, "temperature": 0.5}}, "regularizer.temperature: 0.5"),
    ({"regularizer": {"centers": "ema", "before_start": "frozen_centres"}}, "needs centers learnable"),
    ({"loss": {"reweight": "drw", "drw_epoch": 160}, "train": {"epochs": 2}}, "loss.drw_epoch: 160"),
    ({"loss": {"name": "ldam"}, "model": {"head": "cosine", "head_scale": 16}}, "model.head_scale: 1"),
    ({"loss": {"name": "ldam"}, "model": {"head": "linear"}}, "model.head: cosine with model.head_scale: 1"),
]


@pytest.mark.parametrize(("settings", "fix"), INERT)
def test_inert_settings_are_refused_with_the_fix(settings, fix):
    with pytest.raises(ValueError, match=fix.replace(".", r"\.").replace("(", r"\(")):
        StudyConfig.model_validate({"name": "x", **settings})


def test_the_same_terms_with_an_effect_are_accepted():
    StudyConfig.model_validate({"name": "x", "regularizer": {"lambda_within": 0, "lambda_between": 0.1, "centers": "ema"}})
    StudyConfig.model_validate({"name": "x", "regularizer": {"start_epoch": 11}, "train": {"epochs": 12}})
    StudyConfig.model_validate({"name": "x", "loss": {"name": "ldam"}, "model": {"head": "cosine", "head_scale": 1}})
    StudyConfig.model_validate({"name": "x", "regularizer": {"lambda_within": 0, "lambda_between": 0, "temperature": None}})


def test_an_inert_variant_exits_2_with_one_line(tmp_path):
    study = tmp_path / "inert.yaml"
    study.write_text(
        "name: inert\nregularizer: {lambda_within: 0, lambda_between: 0}\n"
        "search: {algorithm: grid, variants: {CE: {}, '+ L_B': {regularizer.lambda_between: 0.1}}}\n"
    )
    result = subprocess.run([sys.executable, "-m", "ncstudy", "validate", str(study)], capture_output=True, text=True)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "search.variants.+ L_B" in lines[0] and "no gradient reaches the network" in lines[0]


def _variants() -> list[tuple[str, str]]:
    return [(path.name, name) for path in sorted(STUDIES.glob("*.yaml"))
            for name in load_study(path).search.variants]  # fmt: skip


def _feature_gradients(config) -> torch.Tensor:
    """The features' gradients of the weighted regularizer in two steps, the centres stepping between
    them: a term that moves only learnable centres shows in the second step, through L_W's pull."""
    generator = torch.Generator().manual_seed(0)
    regularizer = NeuralCollapseRegularizer(config, 10, 8, generator)
    labels = torch.arange(10).repeat(3)
    features = torch.randn(len(labels), 8, generator=generator)
    gradients = []
    for _ in range(2):
        batch = features.clone().requires_grad_(True)
        regularizer.zero_grad()
        (regularizer.weighted(regularizer(batch, labels)) + 0 * batch.sum()).backward()
        regularizer.step()
        gradients.append(batch.grad)
    return torch.cat(gradients)


@pytest.mark.parametrize(("file", "variant"), _variants())
def test_every_term_a_shipped_variant_names_moves_the_features(file, variant):
    """The "+ L_B" row of the ablation (Table 7) used to train plain CE-DRW: its L_B acted on learnable
    centres alone. Each term a variant switches on must change the features' gradients."""
    r = with_params(load_study(STUDIES / file), {"variant": variant}).regularizer
    with_all = _feature_gradients(r)
    for term in ("lambda_within", "lambda_between", "lambda_center"):
        if getattr(r, term) > 0:
            without = _feature_gradients(r.model_copy(update={term: 0.0}))
            assert not torch.allclose(with_all, without), f"{variant}: {term} does not reach the features"


def test_recipe_label_states_terms_weights_and_epochs():
    study = StudyConfig.model_validate({
        "name": "x", "loss": {"reweight": "drw", "drw_epoch": 160},
        "regularizer": {"lambda_within": 0.01, "lambda_between": 0.5, "temperature": 0.5, "start_epoch": 100},
        "train": {"epochs": 200},
    })  # fmt: skip
    assert recipe_label(study) == "CE, DRW@160 + L_W 0.01 + L_B 0.5 (T 0.5) @100, learnable centres"
    plain = StudyConfig.model_validate({"name": "x", "regularizer": {"lambda_within": 0, "lambda_between": 0}})
    assert recipe_label(plain) == "CE"
    focal_ce = StudyConfig.model_validate({"name": "x", "loss": {"name": "focal", "focal_gamma": 0}})
    assert recipe_label(focal_ce).startswith("focal (gamma 0) + L_W"), recipe_label(focal_ce)


def test_load_study_names_the_file(tmp_path):
    study = tmp_path / "s.yaml"
    study.write_text("name: s\nregularizer: {lambda_between: 0, temperature: 0.5}\n")
    with pytest.raises(StudyError, match=r"s\.yaml: regularizer.temperature"):
        load_study(study)


def test_a_searched_value_that_makes_a_variant_inert_is_refused_before_ray(tmp_path):
    study = tmp_path / "combination.yaml"
    study.write_text(
        "name: combination\nregularizer: {lambda_within: 0.01, lambda_between: 0.1, centers: ema}\n"
        "search:\n  variants: {CE: {regularizer.lambda_within: 0, regularizer.lambda_between: 0}, NC: {}}\n"
        "  space: {regularizer.temperature: {type: choice, values: [null, 0.5]}}\n"
    )
    with pytest.raises(StudyError, match=r"search\.space\.regularizer\.temperature 0\.5 with search\.variants\.CE: regularizer\.temperature"):
        load_study(study)


BASE = "name: c\nregularizer: {lambda_within: 0.01, lambda_between: 0.1, centers: ema, start_epoch: 4}\ntrain: {epochs: 10}\n"
INERT_COMBINATIONS = {  # search spaces whose entries are each valid alone, but not together
    "temperature beside a lambda_B range from 0": (
        "search:\n  space:\n    regularizer.lambda_between: {type: uniform, low: 0.0, high: 1.0}\n"
        "    regularizer.temperature: {type: choice, values: [null, 0.5]}\n",
        r"search\.space\.regularizer\.lambda_between 0\.0 with search\.space\.regularizer\.temperature 0\.5: "
        r"regularizer\.temperature: 0\.5 has no effect",
    ),
    "a grid of lambda_B and temperature": (
        "search:\n  algorithm: grid\n  space:\n    regularizer.lambda_between: {type: grid, values: [0.0, 0.1]}\n"
        "    regularizer.temperature: {type: grid, values: [null, 0.5]}\n",
        r"lambda_between 0\.0 with search\.space\.regularizer\.temperature 0\.5",
    ),
    "learnable centres while lambda_W can be 0": (
        "search:\n  space:\n    regularizer.lambda_within: {type: uniform, low: 0.0, high: 0.1}\n"
        "    regularizer.centers: {type: choice, values: [ema, learnable]}\n",
        r"lambda_within 0\.0 with search\.space\.regularizer\.centers 'learnable': regularizer: lambda_between > 0",
    ),
    "a temperature searched only where lambda_B is 0": (
        "search:\n  space:\n    regularizer.lambda_between: {type: choice, values: [0.0, 0.1]}\n"
        "    regularizer.temperature: {type: choice, values: [null, 0.5], when: {regularizer.lambda_between: 0.0}}\n",
        r"when\.regularizer\.lambda_between 0\.0 with search\.space\.regularizer\.temperature 0\.5",
    ),
    "a start epoch beside a shorter searched schedule": (
        "search:\n  space:\n    regularizer.start_epoch: {type: int, low: 0, high: 6}\n"
        "    train.epochs: {type: choice, values: [5, 10]}\n",  # start 6 is fine at 10 epochs
        r"start_epoch 6 with search\.space\.train\.epochs 5: regularizer\.start_epoch",
    ),
    "a stratum of schedules and a late start epoch": (
        "search:\n  strata: {train.epochs: [5, 10]}\n  space: {regularizer.start_epoch: {type: int, low: 0, high: 6}}\n",
        r"start_epoch 6 with search\.strata\.train\.epochs 5: regularizer\.start_epoch",
    ),
}


@pytest.mark.parametrize("case", list(INERT_COMBINATIONS))
def test_searched_values_that_make_a_term_inert_together_are_refused_before_ray(tmp_path, case):
    space, message = INERT_COMBINATIONS[case]
    study = tmp_path / "c.yaml"
    study.write_text(BASE + space)
    with pytest.raises(StudyError, match=message):
        load_study(study)


def test_many_searched_settings_are_checked_two_at_a_time(tmp_path):
    """Past COMBINATION_LIMIT the product is not built; every pair still is."""
    entries = {  # 5 x 5 x 5 x 5 x 2 x 2 = 2,500 combinations, over the limit
        "train.lr": "{type: choice, values: [0.01, 0.02, 0.03, 0.04, 0.05]}",
        "train.momentum": "{type: choice, values: [0.5, 0.6, 0.7, 0.8, 0.9]}",
        "train.weight_decay": "{type: choice, values: [0.0, 0.0001, 0.0002, 0.0003, 0.0005]}",
        "regularizer.lambda_within": "{type: choice, values: [0.0, 0.001, 0.01, 0.02, 0.05]}",
        "regularizer.centers": "{type: choice, values: [ema, learnable]}",
        "regularizer.lambda_center": "{type: choice, values: [0.0, 0.1]}",
    }
    space = "".join(f"    {key}: {value}\n" for key, value in entries.items())
    study = tmp_path / "wide.yaml"
    study.write_text(BASE + "search:\n  space:\n" + space)
    with pytest.raises(StudyError, match=r"lambda_within 0\.0 with search\.space\.regularizer\.centers 'learnable'"):
        load_study(study)


def test_a_frozen_pull_never_followed_by_l_b_is_refused():
    with pytest.raises(ValidationError, match=r"L_B never acts"):
        StudyConfig.model_validate({
            "name": "x", "train": {"epochs": 10},
            "regularizer": {"lambda_within": 0.01, "lambda_between": 0.1, "centers": "learnable",
                            "before_start": "frozen_centres", "start_epoch": 10},
        })  # fmt: skip
