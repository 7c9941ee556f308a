"""The search layer without running trials: space, conditions, seeds, planned trial counts."""

import optuna
import pydantic
import pytest
from ray.tune.search import Searcher

from ncstudy.config import StudyConfig, with_params
from ncstudy.study.search import OptunaSpace, ResumableOptunaSearch, SeedRepeater, build_sampler, planned_trials


def study(**search) -> StudyConfig:
    return StudyConfig.model_validate({"name": "s", "search": search})


def test_planned_trials_count_configurations_times_seeds():
    assert planned_trials(study(num_samples=5)) == 5
    assert planned_trials(study(num_samples=5, seeds=[0, 1, 2])) == 15
    grid = study(algorithm="grid", seeds=[0, 1], variants={"ce": {}, "lw": {"regularizer.lambda_within": 0.01}},
                 space={"data.imbalance.ratio": {"type": "grid", "values": [10, 100]}})  # fmt: skip
    assert planned_trials(grid) == 2 * 2 * 2


def test_conditional_parameter_is_suggested_only_when_its_condition_holds():
    config = study(
        variants={"ce": {"loss.name": "ce"}, "la": {"loss.name": "logit_adjusted"}},
        space={"loss.tau": {"type": "uniform", "low": 0.5, "high": 2.0, "when": {"loss.name": "logit_adjusted"}}},
    )
    space = OptunaSpace(config)
    optuna_study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(12):
        trial = optuna_study.ask()
        space(trial)
        params = trial.params
        assert ("loss.tau" in params) == (params["variant"] == "la")
        optuna_study.tell(trial, 0.0)
    applied = with_params(config, {"variant": "la", "loss.tau": 1.5})
    assert applied.loss.name == "logit_adjusted" and applied.loss.tau == 1.5


class Recorder(Searcher):
    def __init__(self):
        super().__init__(metric="val_acc_all", mode="max")
        self.told, self.count = {}, 0

    def suggest(self, trial_id):
        self.count += 1
        return {"regularizer.lambda_within": 0.01 * self.count}

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.told[trial_id] = (result, error)

    def save(self, path):
        import pickle

        open(path, "wb").write(pickle.dumps((self.told, self.count)))

    def restore(self, path):
        import pickle

        self.told, self.count = pickle.loads(open(path, "rb").read())


def test_seed_repeater_runs_each_configuration_per_seed_and_reports_the_mean(tmp_path):
    repeater = SeedRepeater(Recorder(), [0, 1, 2], "val_acc_all", "max")
    configs = [repeater.suggest(f"t{i}") for i in range(4)]
    assert [c["train.seed"] for c in configs] == [0, 1, 2, 0]
    assert configs[0]["regularizer.lambda_within"] == configs[2]["regularizer.lambda_within"] != configs[3]["regularizer.lambda_within"]
    repeater.on_trial_complete("t0", {"val_acc_all": 0.5})
    repeater.on_trial_complete("t1", {"val_acc_all": 0.7})
    assert repeater.inner.told == {}
    repeater.save(str(tmp_path / "s.pkl"))
    restored = SeedRepeater(Recorder(), [0, 1, 2], "val_acc_all", "max")
    restored.restore(str(tmp_path / "s.pkl"))
    restored.on_trial_complete("t2", None, error=True)
    result, error = restored.inner.told["configuration_0"]
    assert result == {"val_acc_all": pytest.approx(0.6)} and not error
    assert restored.suggest("t4")["train.seed"] == 1  # the queue survived the restore


def test_grid_rejects_ranges_and_conditions():
    with pytest.raises(pydantic.ValidationError, match="algorithm grid takes only grid or choice"):
        study(algorithm="grid", space={"regularizer.lambda_within": {"type": "uniform", "low": 0, "high": 1}})
    with pytest.raises(pydantic.ValidationError, match="type grid needs algorithm grid"):
        study(space={"regularizer.lambda_within": {"type": "grid", "values": [0.1]}})


def sampled(sampler: optuna.samplers.BaseSampler, trials: int) -> list[float]:
    """x of each trial of a 1-d problem whose best is x = 0.3."""
    optuna_study = optuna.create_study(sampler=sampler)
    optuna_study.optimize(lambda trial: (trial.suggest_float("x", 0.0, 1.0) - 0.3) ** 2, n_trials=trials)
    return [trial.params["x"] for trial in optuna_study.trials]


def test_tpe_models_the_results_after_its_startup_trials():
    random = sampled(build_sampler(study(algorithm="random", seed=3)), 6)
    startup_2 = sampled(build_sampler(study(sampler="tpe", seed=3, tpe_startup=2)), 6)
    assert startup_2[:2] == random[:2] and startup_2[2:] != random[2:]
    optuna_default = sampled(build_sampler(study(sampler="tpe", seed=3, tpe_startup=10)), 6)
    assert optuna_default == random  # with Optuna's default 10, six TPE trials are random search's


def test_tpe_startup_defaults_to_a_quarter_of_the_budget_within_2_and_10():
    assert [study(num_samples=n).search.tpe_startup_trials for n in (4, 8, 12, 20, 60)] == [2, 2, 3, 5, 10]
    assert study(num_samples=60, tpe_startup=4).search.tpe_startup_trials == 4
    with pytest.raises(pydantic.ValidationError, match="tpe_startup applies to algorithm optuna with sampler tpe"):
        study(algorithm="random", tpe_startup=4)


def optuna_searcher(config: StudyConfig, storage: str) -> ResumableOptunaSearch:
    return ResumableOptunaSearch(space=OptunaSpace(config), sampler=build_sampler(config), study_name=config.name,
                                 storage=optuna.storages.RDBStorage(storage), metric="val_acc_all", mode="max")  # fmt: skip


def test_the_optuna_objective_is_named_by_the_metric_when_created_and_when_restored(tmp_path):
    config = study(space={"regularizer.lambda_within": {"type": "loguniform", "low": 1e-3, "high": 1e-1}})
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    searcher = optuna_searcher(config, storage)
    assert optuna.load_study(study_name="s", storage=storage).metric_names == ["val_acc_all"]
    searcher.save(str(tmp_path / "searcher.pkl"))
    # a study whose storage holds no name yet (started before objectives were named), resumed by Tune
    (tmp_path / "optuna.db").unlink()
    optuna.create_study(study_name="s", storage=storage, direction="maximize")
    assert optuna.load_study(study_name="s", storage=storage).metric_names is None
    optuna_searcher(config, f"sqlite:///{tmp_path / 'other.db'}").restore(str(tmp_path / "searcher.pkl"))
    assert optuna.load_study(study_name="s", storage=storage).metric_names == ["val_acc_all"]


# ------------------------------------------------------------------------------------------- strata

from ncstudy.strata import optuna_study_names, strata  # noqa: E402
from ncstudy.study.search import StratifiedSearch, open_optuna_in, searcher_and_space  # noqa: E402

RATIOS = {"data.imbalance.ratio": [10, 50, 100]}
WEIGHTS = {
    "regularizer.lambda_within": {"type": "loguniform", "low": 1e-3, "high": 1e-1},
    "regularizer.lambda_between": {"type": "loguniform", "low": 1e-2, "high": 1.0},
}


def test_strata_are_the_cartesian_product_and_multiply_the_planned_trials():
    config = study(num_samples=4, seeds=[0, 1], space=WEIGHTS, strata={**RATIOS, "loss.name": ["ce", "focal"]})
    assert strata(config)[:3] == [
        {"data.imbalance.ratio": 10, "loss.name": "ce"},
        {"data.imbalance.ratio": 10, "loss.name": "focal"},
        {"data.imbalance.ratio": 50, "loss.name": "ce"},
    ]
    assert planned_trials(config) == 4 * 6 * 2
    assert optuna_study_names(config)[0] == "s[data.imbalance.ratio=10,loss.name=ce]"
    assert strata(study()) == [{}] and optuna_study_names(study()) == ["s"]
    grid = study(algorithm="grid", strata=RATIOS, space={"regularizer.lambda_within": {"type": "grid", "values": [0, 0.01]}})
    assert planned_trials(grid) == 2 * 3
    searcher, space, num_samples = searcher_and_space(grid)
    assert searcher is None and num_samples == 1 and space["data.imbalance.ratio"] == {"grid_search": [10, 50, 100]}


def run_stratified(searcher: StratifiedSearch, trials: int, start: int = 0, score=lambda config: 0.5) -> list[dict]:
    """Suggest and complete `trials` trials one at a time, scoring each config with `score`."""
    configs = []
    for number in range(start, start + trials):
        config = searcher.suggest(f"t{number}")
        if config is None or config == Searcher.FINISHED:
            configs.append(config)
            continue
        configs.append(config)
        searcher.on_trial_complete(f"t{number}", {"val_acc_all": score(config)})
    return configs


def stratified(tmp_path, **search) -> StratifiedSearch:
    config = study(strata=RATIOS, space=WEIGHTS, **search)
    open_optuna_in(tmp_path)
    searcher, space, num_samples = searcher_and_space(config)
    assert isinstance(searcher, StratifiedSearch) and space == {} and num_samples == planned_trials(config)
    return searcher


def test_each_stratum_gets_its_budget_round_robin_and_every_suggestion_carries_its_stratum(tmp_path):
    searcher = stratified(tmp_path, num_samples=3)
    configs = run_stratified(searcher, 10)
    assert configs[9] == Searcher.FINISHED
    ratios = [c["data.imbalance.ratio"] for c in configs[:9]]
    assert ratios == [10, 50, 100] * 3
    assert searcher.completed == [3, 3, 3]
    for config in configs[:9]:
        assert set(config) == {"data.imbalance.ratio", *WEIGHTS}
    # each stratum is its own Optuna study in the study's storage, holding only its own trials
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    for name, ratio in zip(optuna_study_names(study(strata=RATIOS)), RATIOS["data.imbalance.ratio"]):
        trials = optuna.load_study(study_name=name, storage=storage).trials
        mine = [c for c in configs[:9] if c["data.imbalance.ratio"] == ratio]
        assert [t.params["regularizer.lambda_within"] for t in trials] == [c["regularizer.lambda_within"] for c in mine]
        assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)


def test_strata_sample_independently_like_a_lone_searcher_seeded_search_seed_plus_index(tmp_path):
    searcher = stratified(tmp_path, num_samples=2, seed=7)
    firsts = run_stratified(searcher, 3)
    for index, first in enumerate(firsts):
        alone = study(space=WEIGHTS, seed=7 + index)
        lone = ResumableOptunaSearch(space=OptunaSpace(alone), sampler=build_sampler(alone), study_name="alone",
                                     storage=optuna.storages.RDBStorage(f"sqlite:///{tmp_path / f'{index}.db'}"),
                                     metric="val_acc_all", mode="max")  # fmt: skip
        expected = lone.suggest("x")
        assert {k: first[k] for k in WEIGHTS} == expected
    assert len({first["regularizer.lambda_within"] for first in firsts}) == 3


def test_results_go_to_the_stratum_that_suggested_the_trial(tmp_path):
    searcher = stratified(tmp_path, num_samples=2)
    configs = [searcher.suggest(f"t{i}") for i in range(3)]
    searcher.on_trial_complete("t2", {"val_acc_all": 0.9})  # stratum r=100
    searcher.on_trial_complete("unknown", {"val_acc_all": 0.1})  # ignored
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    names = optuna_study_names(study(strata=RATIOS))
    values = [[t.value for t in optuna.load_study(study_name=n, storage=storage).trials] for n in names]
    assert values == [[None], [None], [0.9]]
    assert configs[2]["data.imbalance.ratio"] == 100 and searcher.completed == [0, 0, 1]


def test_seeds_repeat_each_configuration_within_its_stratum(tmp_path):
    searcher = stratified(tmp_path, num_samples=2, seeds=[0, 1])
    configs = run_stratified(searcher, 13)
    assert configs[12] == Searcher.FINISHED
    for ratio in RATIOS["data.imbalance.ratio"]:
        mine = [c for c in configs[:12] if c["data.imbalance.ratio"] == ratio]
        assert len(mine) == 4 and sorted(c["train.seed"] for c in mine) == [0, 0, 1, 1]
        assert len({c["regularizer.lambda_within"] for c in mine}) == 2  # two configurations, each on both seeds


def test_a_restored_stratified_search_continues_every_stratum_where_it_stopped(tmp_path):
    searcher = stratified(tmp_path, num_samples=3)
    run_stratified(searcher, 4)  # r=10 twice, r=50 and r=100 once
    pending = searcher.suggest("t4")  # r=50, running when the driver stops
    searcher.save(str(tmp_path / "searcher.pkl"))
    restored = stratified(tmp_path, num_samples=3)
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert restored.suggested == [2, 2, 1] and restored.completed == [2, 1, 1]
    restored.on_trial_complete("t4", {"val_acc_all": 0.7})
    assert pending["data.imbalance.ratio"] == 50 and restored.completed == [2, 2, 1]
    configs = run_stratified(restored, 5, start=5)
    assert [c["data.imbalance.ratio"] for c in configs[:4]] == [100, 10, 50, 100] and configs[4] == Searcher.FINISHED
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    counts = [len(optuna.load_study(study_name=n, storage=storage).trials) for n in optuna_study_names(study(strata=RATIOS))]
    assert counts == [3, 3, 3]  # the restored samplers continued their own studies


def test_a_condition_may_name_a_stratum_key(tmp_path):
    config = study(
        strata={"loss.name": ["ce", "logit_adjusted"]},
        space={"loss.tau": {"type": "uniform", "low": 0.5, "high": 2.0, "when": {"loss.name": "logit_adjusted"}}},
    )
    open_optuna_in(tmp_path)
    searcher, _, _ = searcher_and_space(config)
    ce, la = searcher.suggest("a"), searcher.suggest("b")
    assert ce == {"loss.name": "ce"} and set(la) == {"loss.name", "loss.tau"}


@pytest.mark.parametrize(
    "strata_, space, match",
    [
        ({"data.imbalance.ratio": []}, {}, "give at least one value"),
        ({"data.imbalance.ratio": [[10, 50]]}, {}, "not a single finite value"),
        ({"data.imbalance.ratio": [10, 10]}, {}, "given twice"),
        (RATIOS, {"data.imbalance.ratio": {"type": "choice", "values": [10]}}, "also in search.space"),
        ({"train.seed": [0, 1]}, {}, "reserved; use search.seeds"),
    ],
)
def test_strata_that_cannot_be_strata_are_refused(strata_, space, match):
    with pytest.raises(pydantic.ValidationError, match=match):
        study(strata=strata_, space=space)
