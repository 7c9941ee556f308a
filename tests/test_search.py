"""The search layer without running trials: space, conditions, seeds, planned trial counts."""

import optuna
import pydantic
import pytest
from ray.tune.search import Searcher

from ncstudy.config import StudyConfig, with_params
from ncstudy.search import OptunaSpace, ResumableOptunaSearch, SeedRepeater, build_sampler, planned_trials


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
