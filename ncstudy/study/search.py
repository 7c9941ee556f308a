"""The search: the YAML space as Ray Tune's param space or an Optuna define-by-run function, the
searcher (seeded Optuna sampler, or Tune's grid), training seeds, and the ASHA scheduler.

- optuna / random: Ray Tune's `OptunaSearch` with a define-by-run space (so `when` conditions work:
  a parameter is suggested only when the settings it names have the given values, e.g. `loss.tau`
  only for the logit-adjusted loss) and a seeded TPE, CMA-ES or random sampler, persisted in an
  Optuna storage in the study folder.
- grid: every combination, through Tune's `grid_search` (the ablation tables: a grid of variants x seeds).
- seeds: every configuration runs once per training seed. For grid and Tune's own sampling the seed
  is one more grid axis; for Optuna, `SeedRepeater` hands each suggested configuration out once per
  seed and tells the sampler the mean of the objective over the seeds, so TPE models the
  configuration, not one seed's luck.
- several objectives (search.objectives): OptunaSearch's list of metrics and modes, an Optuna study
  with one direction per objective and its multi-objective sampler (TPE, as Optuna 5 defaults to
  for several objectives too; Ozaki et al., GECCO 2020), and each configuration told the mean of
  every objective over its seeds; the report draws the front (ncstudy.outputs.pareto).
- strata: `search.strata` splits the study into independent searches, one per combination of the
  strata's values (e.g. per imbalance ratio): an objective compared across ratios would only learn
  which ratio is easier, while a researcher wants the best weights *per* ratio. `StratifiedSearch`
  holds one searcher per stratum (its own sampler seeded `search.seed + index`, its own Optuna study
  `NAME[key=value]` in the same storage, its own budget of `num_samples` configurations) and adds
  the stratum's values to each suggestion; for grid the strata are more grid axes.
  `search.split_by_variant` splits by variant the same way (ncstudy.strata.searches): searched as
  one choice, the sampler spends more of the budget on the variant that looks better, which makes
  that variant's front denser; compared variants need equal budgets (docs/pareto.md).
- ASHA (Li et al., MLSys 2020) as Tune's AsyncHyperBandScheduler on the epoch count.
"""

from __future__ import annotations

import math
import pickle
import statistics
import tempfile
import warnings
from pathlib import Path
from typing import Any

import optuna
from ray import tune
from ray.tune.schedulers import AsyncHyperBandScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from ncstudy.config import IntRange, LogUniform, SpaceParam, StudyConfig, Uniform, get_dotted
from ncstudy.strata import optuna_study_names, searches

SEED_KEY = "train.seed"


def planned_trials(study: StudyConfig) -> int:
    """How many trials the study runs: configurations x strata x seeds (num_samples is per stratum)."""
    search = study.search
    if search.algorithm == "grid":
        combinations = 1
        for param in search.space.values():
            combinations *= len(param.values)
        configurations = combinations * max(len(search.variants), 1)
    else:
        configurations = search.num_samples * (len(search.variants) if search.split_by_variant else 1)
    return configurations * math.prod(len(values) for values in search.strata.values()) * len(search.seed_list)


def _suggest(trial: optuna.Trial, key: str, param: SpaceParam) -> Any:
    if isinstance(param, LogUniform):
        return trial.suggest_float(key, param.low, param.high, log=True)
    if isinstance(param, Uniform):
        return trial.suggest_float(key, param.low, param.high)
    if isinstance(param, IntRange):
        return trial.suggest_int(key, param.low, param.high)
    return trial.suggest_categorical(key, param.values)


class OptunaSpace:
    """The Optuna space as a function of the trial (define-by-run), honouring `when`: conditions on
    the base config, on the variant's bundle, or on parameters suggested before this one. A class,
    not a closure, because Tune pickles the searcher with its experiment state."""

    def __init__(self, study: StudyConfig, stratum: dict[str, Any] | None = None):
        self.base = study.model_dump(mode="json")
        self.search = study.search
        self.stratum = dict(stratum or {})  # fixed for this searcher; `when` conditions may name it

    def __call__(self, trial: optuna.Trial) -> None:
        chosen: dict[str, Any] = dict(self.stratum)
        if "variant" in self.stratum:  # search.split_by_variant: this search's variant is fixed
            chosen.update(self.search.variants[self.stratum["variant"]])
        elif self.search.variants:
            variant = trial.suggest_categorical("variant", list(self.search.variants))
            chosen.update({**self.search.variants[variant], "variant": variant})  # `when: {variant: NAME}` reads it
        for key, param in self.search.space.items():
            if param.when and any((chosen[k] if k in chosen else get_dotted(self.base, k)) != v for k, v in param.when.items()):
                continue
            chosen[key] = _suggest(trial, key, param)


def build_sampler(study: StudyConfig, stratum_index: int = 0) -> optuna.samplers.BaseSampler:
    """The study's seeded Optuna sampler (also what benchmarks/search_efficiency.py compares); the
    sampler of stratum i is seeded search.seed + i, so each stratum draws its own sequence."""
    search = study.search
    seed = search.seed + stratum_index
    name = "random" if search.algorithm == "random" else search.sampler
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=search.tpe_startup_trials)


Metric = str | list[str]  # one objective, or several (search.objectives), as Tune's searchers take them


def searched_metric(study: StudyConfig) -> tuple[Metric, str | list[str]]:
    """The metric and mode the searchers optimise: search.metric and search.mode, or the lists of
    search.objectives' names and directions (Ray's OptunaSearch takes lists for several objectives)."""
    directions = study.search.objective_directions
    if study.search.multi_objective:
        return list(directions), list(directions.values())
    return study.search.metric, study.search.mode


def name_objective(optuna_study: optuna.Study | None, metric: Metric) -> None:
    """Name the study's objectives by their metrics (optuna-dashboard and the plots say "Objective 0"
    otherwise); a searcher without a space has no study yet."""
    names = [metric] if isinstance(metric, str) else list(metric)
    if optuna_study is not None and optuna_study.metric_names != names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna_study.set_metric_names(names)


class ResumableOptunaSearch(OptunaSearch):
    """OptunaSearch that survives a resume. Tune saves its experiment state every few seconds, the
    Optuna storage on every event, so after an interruption Tune may re-run a trial that Optuna
    already recorded as finished; its intermediate reports are then refused by Optuna
    (UpdateFinishedTrialError) and would end the study. The storage already holds that trial's
    outcome, so they are dropped (and OptunaSearch already ignores the repeated completion).
    The Optuna study's objective is named by the metric, whether the study is created, loaded from
    the storage, or restored with Tune's experiment."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        name_objective(self._ot_study, self._metric)

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        name_objective(self._ot_study, self._metric)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        try:
            super().on_trial_result(trial_id, result)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass


class SeedRepeater(Searcher):
    """Runs each configuration of an inner searcher once per training seed; the inner searcher sees
    one trial per configuration whose objective is the mean over the seeds that reported it (each
    objective's mean, with several: the seeds that reported all of them)."""

    def __init__(self, inner: Searcher, seeds: list[int], metric: Metric, mode: str | list[str]):
        super().__init__(metric=metric, mode=mode)
        self.inner, self.seeds = inner, list(seeds)
        self.queue: list[tuple[str, dict, int]] = []
        self.config_of: dict[str, str] = {}
        self.results: dict[str, list[tuple[float, ...] | None]] = {}
        self.configurations = 0

    def suggest(self, trial_id: str) -> dict | None:
        if not self.queue:
            config_id = f"configuration_{self.configurations}"
            config = self.inner.suggest(config_id)
            if config is None or config == Searcher.FINISHED:
                return config
            self.configurations += 1
            self.queue = [(config_id, config, seed) for seed in self.seeds]
        config_id, config, seed = self.queue.pop(0)
        self.config_of[trial_id] = config_id
        return {**config, SEED_KEY: seed}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        config_id = self.config_of.pop(trial_id, None)
        if config_id is None:
            return
        names = [self.metric] if isinstance(self.metric, str) else self.metric
        values = None if error or not result else tuple(result.get(name) for name in names)
        scores = self.results.setdefault(config_id, [])
        scores.append(None if values is None or None in values else values)
        if len(scores) == len(self.seeds):
            # a float: a seed told before several objectives existed, saved with an interrupted study
            measured = [v if isinstance(v, tuple) else (v,) for v in self.results.pop(config_id) if v is not None]
            if measured:
                means = [statistics.fmean(column) for column in zip(*measured)]
                self.inner.on_trial_complete(config_id, dict(zip(names, means)))
            else:
                self.inner.on_trial_complete(config_id, None, error=True)

    def save(self, checkpoint_path: str) -> None:
        with tempfile.TemporaryDirectory() as folder:
            inner_file = Path(folder) / "inner.pkl"
            self.inner.save(str(inner_file))
            inner = inner_file.read_bytes()
        state = {k: v for k, v in self.__dict__.items() if k != "inner"}
        Path(checkpoint_path).write_bytes(pickle.dumps((state, inner)))

    def restore(self, checkpoint_path: str) -> None:
        state, inner = pickle.loads(Path(checkpoint_path).read_bytes())
        self.__dict__.update(state)
        with tempfile.TemporaryDirectory() as folder:
            inner_file = Path(folder) / "inner.pkl"
            inner_file.write_bytes(inner)
            self.inner.restore(str(inner_file))


class StratifiedSearch(Searcher):
    """One independent searcher per stratum (search.strata), each with its own budget of `budget`
    trials. A suggestion goes to the stratum that has handed out the fewest trials (the first on a
    tie: round-robin), carries the stratum's values, and its results go back to the searcher that
    suggested it, so each stratum's sampler models its own trials only. Tune pickles this searcher
    with its experiment and saves its state (`save`), so `resume` continues every stratum where it
    stopped."""

    def __init__(
        self, strata: list[dict[str, Any]], searchers: list[Searcher], budget: int, metric: Metric, mode: str | list[str]
    ):
        super().__init__(metric=metric, mode=mode)
        if len(strata) != len(searchers):
            raise ValueError("StratifiedSearch needs one searcher per stratum")
        self.strata, self.searchers, self.budget = [dict(s) for s in strata], list(searchers), budget
        self.suggested = [0] * len(strata)  # trials handed out per stratum
        self.completed = [0] * len(strata)  # trials ended per stratum
        self.exhausted = [False] * len(strata)  # its searcher said FINISHED
        self.stratum_of: dict[str, int] = {}  # trial id -> stratum index

    def _open(self) -> list[int]:
        """Strata that may still suggest, fewest trials first."""
        indices = [i for i in range(len(self.strata)) if self.suggested[i] < self.budget and not self.exhausted[i]]
        return sorted(indices, key=lambda i: (self.suggested[i], i))

    def suggest(self, trial_id: str) -> dict | None:
        for index in self._open():
            config = self.searchers[index].suggest(trial_id)
            if config == Searcher.FINISHED:
                self.exhausted[index] = True
                continue
            if config is None:  # this stratum waits (e.g. for its seeds' results); another may not
                continue
            self.suggested[index] += 1
            self.stratum_of[trial_id] = index
            return {**self.strata[index], **config}
        return None if self._open() else Searcher.FINISHED

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        index = self.stratum_of.get(trial_id)
        if index is not None:
            self.searchers[index].on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        index = self.stratum_of.pop(trial_id, None)
        if index is None:  # unknown, or told twice (a trial re-run after a resume): the stratum has it
            return
        self.completed[index] += 1
        self.searchers[index].on_trial_complete(trial_id, result, error=error)

    def save(self, checkpoint_path: str) -> None:
        inner = []
        with tempfile.TemporaryDirectory() as folder:
            for index, searcher in enumerate(self.searchers):
                file = Path(folder) / f"stratum_{index}.pkl"
                searcher.save(str(file))
                inner.append(file.read_bytes())
        state = {k: v for k, v in self.__dict__.items() if k != "searchers"}
        Path(checkpoint_path).write_bytes(pickle.dumps((state, inner)))

    def restore(self, checkpoint_path: str) -> None:
        state, inner = pickle.loads(Path(checkpoint_path).read_bytes())
        if len(inner) != len(self.searchers):
            raise ValueError(f"{checkpoint_path}: saved with {len(inner)} strata, this study has {len(self.searchers)}")
        self.__dict__.update(state)
        with tempfile.TemporaryDirectory() as folder:
            for index, (searcher, data) in enumerate(zip(self.searchers, inner)):
                file = Path(folder) / f"stratum_{index}.pkl"
                file.write_bytes(data)
                searcher.restore(str(file))


OPTUNA_FILE = "optuna.db"
_study_folder: Path | None = None  # the folder whose optuna.db this driver's searchers use (open_optuna_in)


def open_optuna_in(folder: Path) -> None:
    """Every `StudyOptunaStorage` this process creates or unpickles from now on opens FOLDER/optuna.db.
    Called by the driver before it builds or restores a Tuner: one driver works on one study folder."""
    global _study_folder
    _study_folder = folder


class StudyOptunaStorage(optuna.storages.RDBStorage):
    """The Optuna storage of the study folder the driver works on, wherever that folder now is.

    Tune pickles the searcher (tuner.pkl, searcher-state-*.pkl) and Optuna's RDBStorage pickles its
    URL, an absolute path: a resume of a copied results folder then wrote its Optuna trials into the
    original, and a moved one could not even be unpickled ("unable to open database file"). This
    storage pickles as "the study folder's optuna.db" and is opened again in the folder
    `open_optuna_in` names (docs/reliability.md, "A copied or moved study folder")."""

    def __init__(self, folder: Path):
        super().__init__(f"sqlite:///{folder.resolve() / OPTUNA_FILE}")

    def __reduce__(self):
        return (_reopened_storage, ())


def _reopened_storage() -> StudyOptunaStorage:
    if _study_folder is None:
        raise RuntimeError("a study's Optuna storage was unpickled before open_optuna_in named its folder")
    return StudyOptunaStorage(_study_folder)


def _optuna_searcher(study: StudyConfig, stratum: dict[str, Any], index: int, name: str) -> Searcher:
    """The Optuna searcher of one stratum (the whole study without strata), repeated per seed."""
    metric, mode = searched_metric(study)
    searcher: Searcher = ResumableOptunaSearch(
        space=OptunaSpace(study, stratum),
        sampler=build_sampler(study, index),
        study_name=name,
        storage=_reopened_storage(),
        metric=metric,
        mode=mode,
    )
    if study.search.seeds:
        searcher = SeedRepeater(searcher, study.search.seeds, metric, mode)
    return searcher


def searcher_and_space(study: StudyConfig) -> tuple[Searcher | None, dict[str, Any], int]:
    """(search algorithm or None for Tune's grid/variant generator, Tune param space, Tune num_samples).
    An Optuna searcher keeps its trials in the folder `open_optuna_in` named."""
    search = study.search
    seeds = search.seeds
    stratum_axes = {key: tune.grid_search(list(values)) for key, values in search.strata.items()}
    if search.algorithm == "grid":
        space: dict[str, Any] = {**stratum_axes, **{key: tune.grid_search(list(p.values)) for key, p in search.space.items()}}
        if search.variants:
            space["variant"] = tune.grid_search(list(search.variants))
        if seeds:
            space[SEED_KEY] = tune.grid_search(list(seeds))
        return None, space, 1
    if not search.space and not search.variants:  # nothing to sample: num_samples repeats of each stratum x seed
        space = {**stratum_axes, **({SEED_KEY: tune.grid_search(list(seeds))} if seeds else {})}
        return None, space, search.num_samples
    per_stratum = search.num_samples * len(search.seed_list)
    if not search.strata and not search.split_by_variant:
        return _optuna_searcher(study, {}, 0, study.name), {}, per_stratum
    all_strata = searches(study)
    searchers = [
        _optuna_searcher(study, stratum, index, name)
        for index, (stratum, name) in enumerate(zip(all_strata, optuna_study_names(study)))
    ]
    stratified = StratifiedSearch(all_strata, searchers, per_stratum, *searched_metric(study))
    return stratified, {}, per_stratum * len(all_strata)


def scheduler(study: StudyConfig) -> AsyncHyperBandScheduler | None:
    """ASHA (search.asha), with rungs of its own per stratum when the study has strata."""
    asha = study.search.asha
    if asha is None:
        return None
    settings = dict(
        time_attr="epoch",  # completed epochs; a restored trial repeats its checkpoint's report (ncstudy.study.train_worker)
        max_t=study.train.total_epochs,
        grace_period=asha.grace_period,
        reduction_factor=asha.reduction_factor,
    )
    if study.search.strata:
        return StratifiedASHA(list(study.search.strata), **settings)
    return AsyncHyperBandScheduler(**settings)


class StratifiedASHA(AsyncHyperBandScheduler):
    """ASHA (Li et al., MLSys 2020) whose rungs hold one stratum's trials each (search.strata): a trial
    is stopped only by results of its own stratum, as its searcher compares only those, so the trials
    of an easy stratum (r = 10) do not cut those of a hard one (r = 100).

    Ray's AsyncHyperBandScheduler picks a trial's bracket from `_brackets` in `on_trial_add` and keeps
    it in `_trial_info`, which every later call reads; this points `_brackets` at the trial's
    stratum's own brackets, built by a scheduler of the same settings, just before that pick. Tune
    saves a scheduler's __dict__ with the experiment, so every stratum's rungs survive a resume."""

    def __init__(self, stratum_keys: list[str], **settings: Any):
        super().__init__(**settings)
        self._stratum_keys = stratum_keys
        self._settings = settings
        self._stratum_brackets: dict[tuple[str, ...], list] = {}

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        stratum = tuple(repr(trial.config[key]) for key in self._stratum_keys)  # StratifiedSearch sets them
        if stratum not in self._stratum_brackets:
            self._stratum_brackets[stratum] = AsyncHyperBandScheduler(**self._settings)._brackets
        self._brackets = self._stratum_brackets[stratum]
        super().on_trial_add(tune_controller, trial)

    def debug_string(self) -> str:
        lines = [f"Using stratified AsyncHyperBand: num_stopped={self._num_stopped}"]
        for stratum, brackets in self._stratum_brackets.items():
            lines += [f"stratum {', '.join(stratum)}:", *(bracket.debug_str() for bracket in brackets)]
        return "\n".join(lines)
