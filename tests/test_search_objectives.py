"""The search layer of multi-objective studies without running trials: several objectives through
Ray's OptunaSearch into an Optuna study with one direction per objective, the means over seeds of
each objective, one search per variant (search.split_by_variant), parameters searched in one variant
only (`when: {variant: NAME}`), and the saved study naming its objectives one way."""

import optuna
import pytest
import yaml
from ray.tune.search import Searcher
from test_search import Recorder

from ncstudy.config import StudyConfig, dump_yaml, validate_space
from ncstudy.smoke import smoke_tree
from ncstudy.strata import optuna_study_names, searches
from ncstudy.study.search import (
    OptunaSpace, SeedRepeater, StratifiedSearch, open_optuna_in, planned_trials, searched_metric, searcher_and_space,
)  # fmt: skip

OBJECTIVES = {"val_acc_many": "max", "val_acc_few": "max"}
VARIANTS = {"LA": {"loss.name": "logit_adjusted"},
            "LA + L_W": {"loss.name": "logit_adjusted", "regularizer.lambda_within": 0.01}}  # fmt: skip
TAU = {"loss.tau": {"type": "uniform", "low": 0.0, "high": 2.0}}
LAMBDA_W_IN_ONE = {
    "regularizer.lambda_within": {"type": "loguniform", "low": 0.001, "high": 0.1, "when": {"variant": "LA + L_W"}}
}


def study(**search) -> StudyConfig:
    off = {"lambda_within": 0.0, "lambda_between": 0.0}
    return StudyConfig.model_validate({"name": "s", "regularizer": off, "search": search})


def test_the_saved_study_names_its_objectives_one_way_and_reads_back():
    config = study(objectives=OBJECTIVES)
    saved = yaml.safe_load(dump_yaml(config))["search"]
    assert saved["objectives"] == OBJECTIVES and "metric" not in saved and "mode" not in saved
    assert StudyConfig.model_validate({**yaml.safe_load(dump_yaml(config))}).search.objective_directions == OBJECTIVES
    single = yaml.safe_load(dump_yaml(study()))["search"]
    assert "objectives" not in single and single["metric"] == "val_acc_all"  # as before objectives existed
    assert searched_metric(config) == (["val_acc_many", "val_acc_few"], ["max", "max"])
    assert searched_metric(study()) == ("val_acc_all", "max")


def test_seed_repeater_tells_the_mean_of_each_objective_over_the_seeds_that_measured_all():
    repeater = SeedRepeater(Recorder(), [0, 1, 2], ["val_acc_many", "val_acc_few"], ["max", "max"])
    for number in range(3):
        repeater.suggest(f"t{number}")
    repeater.on_trial_complete("t0", {"val_acc_many": 0.8, "val_acc_few": 0.1})
    repeater.on_trial_complete("t1", {"val_acc_many": 0.6, "val_acc_few": 0.3})
    repeater.on_trial_complete("t2", {"val_acc_many": 0.9})  # one objective missing: that seed is left out
    result, error = repeater.inner.told["configuration_0"]
    assert result == {"val_acc_many": pytest.approx(0.7), "val_acc_few": pytest.approx(0.2)} and not error


def test_split_by_variant_gives_each_variant_its_own_search_and_budget(tmp_path):
    config = study(objectives=OBJECTIVES, num_samples=3, seeds=[0, 1], split_by_variant=True, variants=VARIANTS,
                   space={**TAU, **LAMBDA_W_IN_ONE}, strata={"data.imbalance.ratio": [10, 100]})  # fmt: skip
    assert searches(config) == [
        {"data.imbalance.ratio": 10, "variant": "LA"}, {"data.imbalance.ratio": 10, "variant": "LA + L_W"},
        {"data.imbalance.ratio": 100, "variant": "LA"}, {"data.imbalance.ratio": 100, "variant": "LA + L_W"},
    ]  # fmt: skip
    assert optuna_study_names(config)[1] == "s[data.imbalance.ratio=10,variant=LA + L_W]"
    assert planned_trials(config) == 3 * 2 * 2 * 2  # configurations per variant x variants x ratios x seeds
    open_optuna_in(tmp_path)
    searcher, space, num_samples = searcher_and_space(config)
    assert isinstance(searcher, StratifiedSearch) and num_samples == planned_trials(config)
    configs = []
    for number in range(num_samples + 1):
        suggested = searcher.suggest(f"t{number}")
        configs.append(suggested)
        if isinstance(suggested, dict):
            searcher.on_trial_complete(f"t{number}", {"val_acc_many": 0.5, "val_acc_few": 0.25})
    assert configs[-1] == Searcher.FINISHED
    made = configs[:-1]
    for variant in VARIANTS:  # every variant gets the same budget; L_W's weight is searched in its own only
        own = [c for c in made if c["variant"] == variant]
        assert len(own) == 3 * 2 * 2
        assert all(("regularizer.lambda_within" in c) == (variant == "LA + L_W") for c in own)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    for name in optuna_study_names(config):
        optuna_study = optuna.load_study(study_name=name, storage=storage)
        assert optuna_study.metric_names == list(OBJECTIVES) and len(optuna_study.directions) == 2
        assert [t.values for t in optuna_study.trials] == [[0.5, 0.25]] * 3
        assert "variant" not in optuna_study.trials[0].params  # fixed per search, not sampled


def test_a_parameter_searched_in_one_variant_is_suggested_in_that_variant_only():
    config = study(variants=VARIANTS, space={**TAU, **LAMBDA_W_IN_ONE})
    space = OptunaSpace(config)
    optuna_study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(12):
        trial = optuna_study.ask()
        space(trial)
        seen.add(trial.params["variant"])
        assert ("regularizer.lambda_within" in trial.params) == (trial.params["variant"] == "LA + L_W")
        optuna_study.tell(trial, 0.0)
    assert seen == set(VARIANTS)


def test_a_value_is_checked_on_the_variant_it_is_searched_in():
    """L_B's temperature is inert where lambda_between is 0 (the base here), and valid in the variant
    that sets it: searched in that variant only, it is accepted."""
    variants = {"LA": {}, "LA + L_B": {"regularizer.lambda_between": 0.1, "regularizer.centers": "ema"}}
    temperature = {"regularizer.temperature": {"type": "choice", "values": [None, 0.5], "when": {"variant": "LA + L_B"}}}
    validate_space(study(variants=variants, space=temperature))
    with pytest.raises(Exception, match="temperature"):
        validate_space(study(variants=variants, space={"regularizer.temperature": {"type": "choice", "values": [None, 0.5]}}))


def test_smoke_keeps_one_configuration_per_variant_when_split():
    config = study(objectives=OBJECTIVES, num_samples=6, seeds=[0, 1], split_by_variant=True, variants=VARIANTS, space=TAU)
    smaller = config.model_dump(mode="json")
    smoke_tree(smaller)
    assert smaller["search"]["num_samples"] == 1 and smaller["search"]["seeds"] == [0]
    assert planned_trials(StudyConfig.model_validate(smaller)) == len(VARIANTS)


def test_grid_and_random_searches_take_several_objectives(tmp_path):
    grid = study(algorithm="grid", objectives=OBJECTIVES, seeds=[0, 1], variants=VARIANTS,
                 space={"loss.tau": {"type": "grid", "values": [0.0, 1.0, 2.0]}})  # fmt: skip
    searcher, space, num_samples = searcher_and_space(grid)
    assert searcher is None and space["loss.tau"] == {"grid_search": [0.0, 1.0, 2.0]} and planned_trials(grid) == 12
    random = study(algorithm="random", objectives=OBJECTIVES, num_samples=2, space=TAU)
    open_optuna_in(tmp_path)
    searcher, _, _ = searcher_and_space(random)
    config = searcher.suggest("t0")
    searcher.on_trial_complete("t0", {"val_acc_many": 0.6, "val_acc_few": 0.1})
    [trial] = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}").trials
    assert isinstance(searcher._ot_study.sampler, optuna.samplers.RandomSampler)
    assert trial.params == config and trial.values == [0.6, 0.1]


def test_a_seed_repeater_saved_by_an_older_version_still_averages_its_configuration(tmp_path):
    """A study interrupted mid-configuration by a version that stored each seed's objective as a
    float is resumed by this one, which stores tuples: both are averaged."""
    repeater = SeedRepeater(Recorder(), [0, 1], "val_acc_all", "max")
    repeater.suggest("t0"), repeater.suggest("t1")
    repeater.results["configuration_0"] = [0.5]  # as the older version saved the first seed
    repeater.config_of.pop("t0")
    repeater.on_trial_complete("t1", {"val_acc_all": 0.7})
    assert repeater.inner.told["configuration_0"] == ({"val_acc_all": pytest.approx(0.6)}, False)
