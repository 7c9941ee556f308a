"""`python -m ncstudy report NAME [NAME ...]`: the tables and figures a long-tailed paper needs.

Reads each study's trials from Ray Tune's experiment folder (ncstudy.outputs.results), so it works on a study
that is still running or was cut short (unfinished trials are listed, not averaged). Beside a
running study (`driver_alive`) the report says it is a snapshot, and lists the trials that have not
ended as running, not interrupted. Configurations are the trials' searched parameters without the
training seed; over seeds a configuration is shown as mean ± std (ncstudy.outputs.tables). Writes,
under RESULTS/NAME (or RESULTS/report-NAME1-NAME2 for several studies): report.md, tables/*.md|tex|csv
and figures/*.png.

A study with strata (search.strata, e.g. one search per imbalance ratio) also gets the best
configuration per stratum, chosen by the search's metric and mode within the stratum (table
`best_by_stratum`), the best value of each searched numeric parameter against the stratum's value
(figures/best_by_stratum.png) and the Optuna figures of each stratum's own Optuna study (and each
variant's, with search.split_by_variant: ncstudy.strata.searches).

Every table of configurations lists them in the shot table's order (ncstudy.outputs.tables).
figures/angles_best.png is Figure 2 of Liu et al. (AISTATS 2023): the angles between the centred
class means of the baseline beside those of the best configuration (by the mean of the search's
metric; where the baseline is the best, the best of the others), each the mean over the
configuration's trials (seeds), titled by its role and the configuration's label, the classes named
(`class_names`). The baseline is the configuration --baseline names, else the one
configuration that trained no regularizer term (lambda_W = lambda_B = lambda_center = 0, e.g. an
ablation's CE or CE-DRW variant), taken on the best's task (its stratum and data settings, such as an
ablation's imbalance ratio); where there is none (a search over
the weights alone) the best is drawn alone: the worst configuration of a search is no baseline, it
differs from the best in whatever the search varied, not in whether the terms act.

A multi-objective study (search.objectives) has no single best configuration, so it has neither the
best per stratum nor angles_best.png/norms_best.png (nothing would choose the "best" but the unused
default `search.metric`); the fronts replace them (ncstudy.outputs.pareto): per stratum and variant,
the configurations on the Pareto front of the validation objectives (table `front`), each front's
hypervolume on the test counterparts with a bootstrap interval over seeds, and with --baseline
naming a variant the difference against it (table `hypervolume`, and a sentence per stratum), and
figures/pareto[_<stratum>].png. Lists are ordered by the first objective (search.first_objective),
the configurations on a front first where the figures pick a few.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from ncstudy.engine.checkpoint_files import COLLAPSE_FILE
from ncstudy.config import (
    Choice, Grid, IntRange, LogUniform, StudyConfig, Uniform, check_study_name, load_study, with_params,
)  # fmt: skip
from ncstudy.data.groups import frequency_groups
from ncstudy.errors import StudyError
from ncstudy.outputs.figures import (
    accuracy_vs_count, angle_heatmaps, best_by_stratum, metric_curves, norm_bars, optuna_figures,
)  # fmt: skip
from ncstudy.outputs.formatting import value_text
from ncstudy.outputs.results import read_experiment, write_text
from ncstudy.outputs.commands import ncstudy_command, no_study_error
from ncstudy.outputs.front_report import front_section, pareto_figures
from ncstudy.outputs.pareto import StratumFronts, stratum_fronts, on_test
from ncstudy.outputs.study_folder import held_by_this_process, lock_held
from ncstudy.smoke import SMOKE_FILE
from ncstudy.strata import optuna_study_names, searches, strata, strata_columns, stratum_slug
from ncstudy.outputs.tables import (
    NC_GROUP_COLUMNS, Table, ablation_table, best_per_stratum, front_table, hypervolume_table, nc_table,
    paired_differences, shot_table, to_markdown, with_recipes, write_tables,
)  # fmt: skip
from ncstudy.terms import recipe_label

SEED = "param.train.seed"
RATIO = "param.data.imbalance.ratio"
VARIANT = "param.variant"
MOST_CURVES = 6
# the NC metrics whose paired differences a --baseline report gives: the mechanism of L_W (NC1) and
# of L_B (the smallest angle, overall and between a head and a tail class)
COLLAPSE_DIFFERENCES = ["train_nc1", "train_nc1_many", "train_nc1_few", "train_min_angle_deg", "train_min_angle_many_few_deg"]


@dataclass
class StudyResults:
    name: str
    folder: Path
    config: StudyConfig
    trials: pd.DataFrame  # every trial, with status
    epochs: pd.DataFrame
    running: bool = False  # a driver is running the study now (`driver_alive`): this is a snapshot

    @property
    def finished(self) -> pd.DataFrame:
        return self.trials[self.trials["status"] == "finished"] if len(self.trials) else self.trials

    @property
    def by(self) -> list[str]:
        """The configuration columns: searched parameters except the training seed."""
        return [c for c in self.trials.columns if c.startswith("param.") and c != SEED]

    @property
    def strata(self) -> list[str]:
        """The columns of the study's strata (search.strata); empty without strata."""
        return strata_columns(self.config)

    def best_by_stratum(self) -> Table | None:
        """The best configuration per stratum (ncstudy.outputs.tables.best_per_stratum), if the study has
        strata and one objective: several objectives rank no configuration first, and the front per
        stratum (`fronts`) takes this table's place (module docstring)."""
        finished, search = self.finished, self.config.search
        if not self.strata or finished.empty or any(c not in finished for c in self.strata) or search.multi_objective:
            return None
        return best_per_stratum(finished, self.strata, self.by, search.metric, higher_is_better=search.mode == "max")

    def stratum_rows(self) -> list[tuple[dict, np.ndarray]]:
        """(stratum, which finished trials are in it) for each stratum that has finished trials: the
        strata as the config names them (ncstudy.strata.strata, as the Optuna studies and file names
        do), one empty stratum holding every trial without strata (or where the trials lack a strata
        column, e.g. a copied study from before its strata)."""
        finished = self.finished
        if not self.strata or any(c not in finished for c in self.strata):
            return [({}, np.ones(len(finished), dtype=bool))] if len(finished) else []
        found = []
        for stratum in strata(self.config):
            inside = np.logical_and.reduce([(finished[f"param.{k}"] == v).to_numpy() for k, v in stratum.items()])
            if inside.any():
                found.append((stratum, inside))
        return found

    @property
    def variant_column(self) -> str | None:
        """The trials' variant column (`param.variant`), where the study has variants."""
        return VARIANT if VARIANT in self.finished else None

    @property
    def front_columns_missing(self) -> list[str]:
        """The objectives and test counterparts of a multi-objective study that the trials lack."""
        wanted = [c for o in self.config.search.objective_directions for c in (o, on_test(o))]
        return [c for c in wanted if c not in self.finished]

    @cached_property
    def fronts(self) -> dict[tuple, StratumFronts]:
        """stratum values (`stratum_rows`; () without strata) -> the Pareto fronts of its variants
        (ncstudy.outputs.pareto.stratum_fronts, whose bootstrap is computed once here for the tables
        and the figures); empty for a study of one objective, or whose trials lack an objective."""
        search = self.config.search
        if not search.multi_objective or self.front_columns_missing:
            return {}
        return {
            tuple(stratum.values()): stratum_fronts(
                self.finished[inside], self.by, search.objective_directions, self.variant_column
            )
            for stratum, inside in self.stratum_rows()
        }

    @property
    def on_front(self) -> np.ndarray:
        """Per finished trial, whether its configuration is on its variant's front in its stratum."""
        on_front = np.zeros(len(self.finished), dtype=bool)
        for (_, inside), front in zip(self.stratum_rows(), self.fronts.values()):
            on_front[inside] = front.trial_on_front
        return on_front


def driver_alive(folder: Path) -> bool:
    """Whether a driver in another process is running the study in `folder` now: it holds the
    study's lock (ncstudy.outputs.study_folder.lock_held). The lock decides, not state.json: a
    driver killed outright leaves state.json saying running, while the kernel releases its lock. A
    driver's own report at the end of its search (the lock is its own) is no report beside a running
    study."""
    return lock_held(folder) and not held_by_this_process(folder)


def load_results(results: Path, name: str) -> StudyResults:
    folder = results / check_study_name(name)
    if not (folder / "study.yaml").exists():
        raise no_study_error(name, results)
    config = load_study(folder / "study.yaml")
    total_epochs = config.train.total_epochs
    running = driver_alive(folder)
    trials, epochs = read_experiment(folder / "ray" / "tune", total_epochs, running)
    if trials.empty and (folder / "trials.parquet").exists():  # a copied study without Ray's folder
        written = pd.read_parquet(folder / "trials.parquet")
        if "acc_all" in written and "test_acc_all" not in written:
            raise StudyError(
                f"{folder / 'trials.parquet'}: written by an ncstudy before metric names took their split as "
                "prefix (acc_all, not test_acc_all; docs/outputs.md, 'Metric names'); its report.md is its report, "
                "or run the study again to report it with this version"
            )
        trials = written if "status" in written else written.assign(status="finished")
        epochs = pd.read_parquet(folder / "epochs.parquet") if (folder / "epochs.parquet").exists() else pd.DataFrame()
    if len(trials) and RATIO not in trials:
        trials[RATIO] = config.data.imbalance.ratio  # a fixed ratio still names the ablation column
    return StudyResults(name, folder, config, trials, epochs, running)


def _labels(study: StudyResults) -> pd.Series:
    """A short name per trial's configuration, distinct configurations never sharing one: the variant
    and the searched values that vary (e.g. each ratio of an ablation grid), to 3 significant digits
    or as many more as it takes to tell them apart."""
    finished = study.finished
    varying = [c for c in study.by if c != VARIANT and finished[c].nunique(dropna=False) > 1]
    shown = ([VARIANT] if VARIANT in finished else []) + varying
    if not shown:
        return pd.Series(study.name, index=finished.index)
    configurations = finished.groupby(shown, dropna=False).ngroups

    def text(column: str, value, digits: int) -> str:
        if column == VARIANT:
            return str(value)
        return f"{column.rsplit('.', 1)[-1]}={value_text(value, digits)}"

    for digits in (3, 6, 17):
        labels = finished[shown].apply(lambda row: ", ".join(text(c, v, digits) for c, v in row.items()), axis=1)
        if labels.nunique() == configurations:
            break
    return labels


def _baseline(text: str) -> dict:
    """--baseline "CE" (a variant) or "regularizer.lambda_within=0,regularizer.lambda_between=0"."""
    if "=" not in text:
        return {"variant": text}
    pairs = dict(part.split("=", 1) for part in text.split(","))
    return {k.strip(): _number_or_text(v.strip()) for k, v in pairs.items()}


def _number_or_text(text: str):
    """"0" -> 0, "0.1" -> 0.1, "CE" -> "CE" (pandas 3 dropped to_numeric's errors="ignore")."""
    try:
        return pd.to_numeric(text)
    except ValueError:
        return text


def recipe_of(config: StudyConfig, row: pd.Series) -> str:
    """The recipe (ncstudy.terms.recipe_label) of the configuration a row of `param.*` values names."""
    params = {c.removeprefix("param."): v for c, v in row.items() if c.startswith("param.") and c != SEED}
    try:
        return recipe_label(with_params(config, params))
    except (ValueError, KeyError):  # a variant or value this study.yaml no longer has
        return "?"


def _recipes(config: StudyConfig, table: Table) -> list[str]:
    return [recipe_of(config, row) for _, row in table.numbers.iloc[:, : table.labels].iterrows()]


def _with_recipes(config: StudyConfig, table: Table) -> Table:
    """`table` with the recipe of each row's configuration (its label columns) under `config`."""
    return with_recipes(table, _recipes(config, table))


RECIPE_SEPARATOR = " / "  # between the studies' recipes of one ablation row; recipe_label itself uses "; "


def ablation_recipes(studies: list[StudyResults], table: Table) -> list[str]:
    """The recipe of each ablation row (a variant), from the trials of that variant in each study, each
    under its own study's config (two copies of an ablation may differ in, say, the DRW epoch): one
    recipe where the studies that ran the variant agree, else each study's, `abl_a: CE, DRW@48 /
    abl_b: CE, DRW@150` (a study without the variant, a dash in the table, says nothing). A study whose
    trials of the variant ran several configurations (another searched value) gives them joined by `or`.

    One `recipe` column rather than a column per study: the ablation already has a column per
    (study, ratio), a recipe column per study would double its width in Markdown and LaTeX and repeat
    the same text where the studies agree (the usual case), while the study names appear exactly where
    a reader must tell the recipes apart. `/` separates the studies because recipes use `;` themselves."""
    recipes = []
    for _, row in table.numbers.iloc[:, : table.labels].iterrows():
        per_study: dict[str, str] = {}
        for study in studies:
            finished = study.finished
            if VARIANT not in finished:
                continue
            trials = finished[finished[VARIANT] == row[VARIANT]]
            configurations = trials[study.by].drop_duplicates()
            found = dict.fromkeys(recipe_of(study.config, values) for _, values in configurations.iterrows())
            if found:
                per_study[study.name] = " or ".join(found)
        texts = list(dict.fromkeys(per_study.values()))
        if len(texts) <= 1:
            recipes.append(texts[0] if texts else "?")
        else:
            recipes.append(RECIPE_SEPARATOR.join(f"{name}: {text}" for name, text in per_study.items()))
    return recipes


def _baseline_recipe(study: StudyResults, baseline: str) -> str | None:
    """The recipe of the one configuration --baseline names, None unless exactly one matches."""
    finished = study.finished
    wanted = {(k if k.startswith("param.") else f"param.{k}"): v for k, v in _baseline(baseline).items()}
    if any(c not in finished for c in wanted):
        return None
    rows = finished[np.logical_and.reduce([finished[c] == v for c, v in wanted.items()])][study.by].drop_duplicates()
    return recipe_of(study.config, rows.iloc[0]) if len(rows) == 1 else None


def _order(study: StudyResults) -> dict:
    """How the tables of configurations are ordered: by the first objective (`search.metric` with one),
    in its direction (best first), within each stratum."""
    search = study.config.search
    metric, mode = search.first_objective
    order = {"sort_by": metric, "strata": [c for c in study.strata if c in study.by]}
    return {**order, "higher_is_better": mode == "max"}


def baseline_variant(study: StudyResults, baseline: str | None):
    """The variant that --baseline names (`--baseline CE` or `--baseline variant=CE`) if the study
    ran it, else None: a front is a variant's, so only a variant is a baseline for the hypervolume."""
    wanted = _baseline(baseline) if baseline else {}
    finished = study.finished
    if set(wanted) != {"variant"} or VARIANT not in finished:
        return None
    return next((v for v in finished[VARIANT].unique() if str(v) == str(wanted["variant"])), None)


def _fronts_only(study: StudyResults, baseline: str) -> bool:
    """Whether --baseline names a variant of a multi-objective study that ran several configurations of
    it: the paired differences need one baseline configuration, the fronts compare variants whole
    (so the report gives those, where a study of one objective is refused such a baseline)."""
    variant = baseline_variant(study, baseline)
    if variant is None or not study.config.search.multi_objective:
        return False
    finished = study.finished
    return len(finished.loc[finished[VARIANT] == variant, study.by].drop_duplicates()) > 1


def study_tables(study: StudyResults, baseline: str | None) -> dict:
    finished, by = study.finished, study.by
    if finished.empty:
        return {}
    order = _order(study)
    config = study.config
    tables = {
        "shot": _with_recipes(config, shot_table(finished, by, **order)),
        "nc": _with_recipes(config, nc_table(finished, by, **order)),
        "nc_groups": _with_recipes(config, nc_table(finished, by, NC_GROUP_COLUMNS, **order)),
    }
    best_by_stratum = study.best_by_stratum()
    if best_by_stratum is not None:  # a row's values are its best configuration's: its recipe, listed below it
        tables["best_by_stratum"] = with_recipes(best_by_stratum, _recipes(config, best_by_stratum), shown=False)
    if study.fronts:
        columns = study.strata if () not in study.fronts else []  # the columns that the fronts' keys give
        objectives = config.search.objective_directions
        front = front_table(finished, by, columns, objectives, study.on_front, study.variant_column)
        tables["front"] = _with_recipes(config, front)
        tables["hypervolume"] = hypervolume_table(study.fronts, columns, baseline_variant(study, baseline))
    if baseline and not _fronts_only(study, baseline):
        try:
            differences = paired_differences(finished, by, _baseline(baseline), seed_column=SEED)
            tables["differences"] = _with_recipes(config, differences)
            collapse = [c for c in COLLAPSE_DIFFERENCES if c in finished]
            if collapse:
                differences_nc = paired_differences(finished, by, _baseline(baseline), SEED, collapse)
                tables["differences_nc"] = _with_recipes(config, differences_nc)
        except ValueError as error:
            raise StudyError(f"--baseline {baseline!r}: {error}") from None
    return tables


def _collapse_file(row: pd.Series) -> Path | None:
    path = row.get("checkpoint_path")
    if not isinstance(path, str):
        return None
    file = Path(path) / COLLAPSE_FILE
    return file if file.exists() else None


def study_figures(study: StudyResults, folder: Path, baseline: str | None = None) -> list[Path]:
    finished = study.finished
    if finished.empty:
        return []
    written = []
    labels = _labels(study)
    ranked = _ranked_labels(study, labels)
    best_labels = ranked[:MOST_CURVES]
    curves = {}
    for label in best_labels:
        arrays = _collapse_arrays(finished[labels == label])
        if arrays:
            accuracy = np.nanmean([a["test_per_class_accuracy"] for a in arrays], axis=0)
            curves[label] = (arrays[0]["train_counts"], accuracy)
    if curves:
        written.append(accuracy_vs_count(curves, folder / "accuracy_vs_count.png"))
    measured = _nc_measurements(study, labels)
    curves_of = (("train_nc1", "NC1 (training features)", True), ("train_min_angle_deg", "smallest angle (degrees)", False))
    for key, ylabel, log in (c for c in curves_of if c[0] in measured):
        means = measured[measured["label"].isin(best_labels)].groupby(["label", "epoch"])[key].mean()
        lines = {label: (means[label].index.tolist(), means[label].tolist()) for label in best_labels if label in means}
        figure = metric_curves(lines, ylabel, folder / f"{key.removeprefix('train_')}_over_epochs.png", log) if lines else None
        written += [figure] if figure else []  # None: NC measured once (ncstudy.outputs.figures, module docstring)
    if not study.config.search.multi_objective:  # no single best to draw (module docstring): the fronts instead
        written += _best_collapse_figures(study, labels, ranked, baseline, folder)
    written += pareto_figures(study, folder)
    figure = _best_by_stratum_figure(study, folder)
    if figure is not None:
        written.append(figure)
    optuna_db = study.folder / "optuna.db"
    if optuna_db.exists():
        import optuna

        split = study.strata or study.config.search.split_by_variant
        suffixes = [f"_{stratum_slug(s)}" for s in searches(study.config)] if split else [""]
        for name, suffix in zip(optuna_study_names(study.config), suffixes):  # an Optuna study per search (stratum, variant)
            try:
                optuna_study = optuna.load_study(study_name=name, storage=f"sqlite:///{optuna_db.resolve()}")
            except KeyError:  # no Optuna study of that name (a grid study)
                continue
            written += optuna_figures(optuna_study, folder, suffix)
    return written


def _ranked_labels(study: StudyResults, labels: pd.Series) -> list[str]:
    """The configurations' labels best first by the mean of the first objective (`search.metric`
    with one); with several, those on a front first (each front is as good as any other
    configuration), so the figures that draw a few configurations draw the front's."""
    metric, mode = study.config.search.first_objective
    order = study.finished.assign(label=labels).groupby("label")[metric].mean()
    ranked = order.sort_values(ascending=mode == "min").index.tolist()
    if not study.fronts:
        return ranked
    on_front = set(labels[study.on_front])
    return [label for label in ranked if label in on_front] + [label for label in ranked if label not in on_front]


def _collapse_arrays(rows: pd.DataFrame) -> list:
    """The collapse.npz arrays of the trials in `rows` that have one."""
    return [np.load(f) for f in (_collapse_file(r) for _, r in rows.iterrows()) if f]


def _nc_measurements(study: StudyResults, labels: pd.Series) -> pd.DataFrame:
    """The epochs at which the finished trials measured NC, with each trial's configuration label."""
    if "train_nc1" not in study.epochs:
        return pd.DataFrame()
    return study.epochs.dropna(subset=["train_nc1"]).merge(study.finished[["trial_id"]].assign(label=labels))


def _measured_once_note(study: StudyResults) -> str | None:
    """What the report says in place of the over-epoch figures when no finished trial measured NC at
    two epochs: where the values are, and the setting that measures more often."""
    finished = study.finished
    measured = _nc_measurements(study, _labels(study)) if not finished.empty else pd.DataFrame()
    if measured.empty or measured.groupby("trial_id")["epoch"].nunique().max() >= 2:
        return None
    epochs = ", ".join(str(e) for e in sorted(measured["epoch"].unique()))
    return (f"Study `{study.name}` measured NC once per trial (epoch {epochs} of {study.config.train.total_epochs}), so "
            "it has no figures over epochs: the values are in the NC tables. `metrics.every` measures more often.")  # fmt: skip


def _trains_no_term(config: StudyConfig, row: pd.Series) -> bool:
    """Whether the configuration a row of `param.*` values names trains no regularizer term."""
    params = {c.removeprefix("param."): v for c, v in row.items() if c.startswith("param.") and c != SEED}
    try:
        r = with_params(config, params).regularizer
    except (ValueError, KeyError):  # a variant or value this study.yaml no longer has
        return False
    return r.lambda_within == r.lambda_between == r.lambda_center == 0


def _same_task(study: StudyResults, labels: pd.Series, label: str) -> np.ndarray:
    """Which finished trials are in the stratum of the configuration `label` and trained on its data
    settings (an ablation's grid of imbalance ratios): the trials a baseline is compared with."""
    finished = study.finished
    inside = np.ones(len(finished), dtype=bool)
    data_columns = [c for c in finished.columns if c.startswith("param.data.")]
    for column in dict.fromkeys([*study.strata, *data_columns]):
        if column not in finished:
            continue
        inside &= (finished[column] == finished.loc[labels == label, column].iloc[0]).to_numpy()
    return inside


def _baseline_label(study: StudyResults, labels: pd.Series, best: str, baseline: str | None) -> str | None:
    """The label of the baseline configuration on the best's task (`_same_task`): --baseline's,
    else the one that trains no term; None unless exactly one configuration is such."""
    finished = study.finished
    if baseline:
        wanted = {(k if k.startswith("param.") else f"param.{k}"): v for k, v in _baseline(baseline).items()}
        if any(c not in finished for c in wanted):
            return None
        chosen = np.logical_and.reduce([(finished[c] == v).to_numpy() for c, v in wanted.items()])
    else:
        chosen = np.array([_trains_no_term(study.config, row) for _, row in finished[study.by].iterrows()], dtype=bool)
    found = labels[chosen & _same_task(study, labels, best)].unique()
    return found[0] if len(found) == 1 else None


def _angle_panels(study: StudyResults, labels: pd.Series, ranked: list[str], baseline: str | None) -> list[tuple[str, str]]:
    """(role, label) of the configurations angles_best.png shows: the baseline beside the best; where
    the baseline is the best, beside the best of the others in its stratum; the best alone without a
    baseline (module docstring)."""
    best = ranked[0]
    base = _baseline_label(study, labels, best, baseline)
    if base is None:
        return [("best", best)]
    if base != best:
        return [("baseline", base), ("best", best)]
    in_stratum = set(labels[_same_task(study, labels, best)])
    others = [label for label in ranked if label != base and label in in_stratum]
    return [("baseline and best", base)] + [("best besides the baseline", label) for label in others[:1]]


def class_names(arrays, config: StudyConfig) -> tuple[str, ...] | None:
    """The class names a trial's collapse file records (its data's: CIFAR's, the Parquet tables'
    schema metadata, a file list's indices); for a file written before it recorded them, the names
    of the data source if it is on this machine (never downloaded for a figure), else None."""
    if "class_names" in arrays.files:
        return tuple(str(name) for name in arrays["class_names"])
    from ncstudy.data.build import load_source  # torch: only for an older collapse file

    try:
        return tuple(load_source(config.data.model_copy(update={"download": False})).pool.classes)
    except (StudyError, OSError):
        return None


def _best_collapse_figures(
    study: StudyResults, labels: pd.Series, ranked: list[str], baseline: str | None, folder: Path
) -> list[Path]:
    """figures/angles_best.png (`_angle_panels`, module docstring) and figures/norms_best.png (the best
    configuration's centred-mean norms), each the mean over the configuration's trials that have a
    collapse file."""
    finished = study.finished
    best_arrays = _collapse_arrays(finished[labels == ranked[0]])
    if not best_arrays:
        return []
    panels = {}
    for role, label in _angle_panels(study, labels, ranked, baseline):
        arrays = _collapse_arrays(finished[labels == label])
        if arrays:
            seeds = f" (mean of {len(arrays)} trials)" if len(arrays) > 1 else ""
            panels[f"{role}: {label}{seeds}"] = np.mean([a["angles_deg"] for a in arrays], axis=0)
    counts = best_arrays[0]["train_counts"]
    groups = frequency_groups(counts.tolist(), study.config.data.shot_split)
    return [
        angle_heatmaps(panels, counts, folder / "angles_best.png", class_names(best_arrays[0], study.config)),
        norm_bars(np.mean([a["mean_norms"] for a in best_arrays], axis=0), groups, folder / "norms_best.png"),
    ]


def numeric_parameters(config: StudyConfig) -> dict[str, tuple[bool, float, float]]:
    """{trial column: (logarithmic, low, high)} of the searched parameters that take numbers: ranges,
    and choices whose values are numbers (or null, e.g. the hard-min temperature); log for loguniform."""
    found = {}
    for key, param in config.search.space.items():
        if isinstance(param, (LogUniform, Uniform, IntRange)):
            found[f"param.{key}"] = (isinstance(param, LogUniform), param.low, param.high)
        elif isinstance(param, (Choice, Grid)):
            numbers = [v for v in param.values if v is not None]
            if numbers and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
                found[f"param.{key}"] = (False, min(numbers), max(numbers))
    return found


def _best_by_stratum_figure(study: StudyResults, folder: Path) -> Path | None:
    """figures/best_by_stratum.png: per searched numeric parameter, its value in the best configuration
    of each stratum against the stratum's value (the first strata key on x, a line per combination
    of the others)."""
    table = study.best_by_stratum()
    if table is None:
        return None
    best = table.numbers
    parameters = {c: spec for c, spec in numeric_parameters(study.config).items() if c in best}
    if not parameters:
        return None
    x_column, *others = study.strata
    groups = list(best.groupby(others, dropna=False, sort=False)) if others else [((), best)]
    panels = {}
    for column in parameters:
        lines = {}
        for key, rows in groups:
            key = key if isinstance(key, tuple) else (key,)
            label = ", ".join(f"{c.rsplit('.', 1)[-1]}={value_text(v)}" for c, v in zip(others, key))
            lines[label] = (rows[x_column].tolist(), rows[column].tolist())
        panels[column.removeprefix("param.")] = lines
    log_y = [c.removeprefix("param.") for c, (log, _, _) in parameters.items() if log]
    ranges = {c.removeprefix("param."): (low, high) for c, (_, low, high) in parameters.items()}
    return best_by_stratum(panels, x_column.removeprefix("param."), folder / "best_by_stratum.png", log_y, ranges)


def build_report(names: list[str], results: Path, formats: tuple[str, ...] = ("md", "latex", "csv"), baseline: str | None = None) -> Path:
    """Write report.md, tables/ and figures/ for one study (into its folder) or several (merged)."""
    studies = [load_results(results, name) for name in names]
    out = studies[0].folder if len(studies) == 1 else results / f"report-{'-'.join(names)}"
    sections, tables = [], {}
    for study in studies:
        prefix = "" if len(studies) == 1 else f"{study.name}_"
        own = study_tables(study, baseline)
        tables.update({f"{prefix}{key}": table for key, table in own.items()})
        sections.append(_study_section(study, own, baseline))
    variant_studies = {s.name: s.finished for s in studies if _one_configuration_per_variant(s)}
    if variant_studies:
        ablation = ablation_table(variant_studies, variant_column=VARIANT, ratio_column=RATIO)
        tables["ablation"] = with_recipes(ablation, ablation_recipes(studies, ablation))
        note = ("" if len(variant_studies) == 1 else "Each study's recipe is its own config's; where the studies "
                "of a row trained different recipes, `recipe` gives each, `study: recipe`, separated by ` / `.\n\n")
        heading = "## Ablation (test accuracy, all classes, mean ± std over seeds)\n\n"
        sections.append(heading + note + to_markdown(tables["ablation"]))
    write_tables(tables, out / "tables", formats)
    figures = [f for s in studies for f in study_figures(s, out / "figures" / (s.name if len(studies) > 1 else ""), baseline)]
    notes = [note for note in map(_measured_once_note, studies) if note]
    if figures or notes:
        shown = "\n".join(f"![{f.stem}]({f.relative_to(out)})" for f in figures)
        sections.append("\n\n".join(["## Figures", *notes, *([shown] if shown else [])]))
    sections.append(f"Every table is also in `tables/` as Markdown, LaTeX (booktabs) and CSV ({', '.join(formats)}).")
    write_text(f"# Report: {', '.join(names)}\n\n" + "\n\n".join(sections) + "\n", out / "report.md")
    return out


def _one_configuration_per_variant(study: StudyResults) -> bool:
    """Whether the study's variants are its rows in Table 7's layout: one configuration per variant
    (and imbalance ratio), its seeds averaged in a cell. A variant that ran several configurations
    (searched weights, a tau grid: a Pareto study's fronts) would pool them in one cell, which then
    means no configuration; its study has no ablation table (the shot table and the fronts list them)."""
    finished = study.finished
    if VARIANT not in finished:
        return False
    keys = [VARIANT, *([RATIO] if RATIO in finished else [])]
    configurations = finished[list(dict.fromkeys([*keys, *study.by]))].drop_duplicates()
    return bool(configurations.groupby(keys, dropna=False).size().max() == 1)


def _study_section(study: StudyResults, tables: dict, baseline: str | None = None) -> str:
    finished, everything = study.finished, study.trials
    search = study.config.search
    lines = [f"## Study `{study.name}`", ""]
    if study.running:
        lines += ["**Running now**: a driver is working on this study, so this report is a snapshot of the trials "
                  "written so far; the running trials are listed with the epochs they had reached. `report` again "
                  "gives a later snapshot.", ""]  # fmt: skip
    if (study.folder / SMOKE_FILE).exists():  # written by `run --smoke` (ncstudy.smoke)
        copy_of = json.loads((study.folder / SMOKE_FILE).read_text()).get("copy_of", "a study")
        lines += [f"**A `--smoke` copy of `{copy_of}`**: fewer epochs, images and configurations (what changed: "
                  f"`{SMOKE_FILE}`); it shows that every part runs, its numbers are not results.", ""]  # fmt: skip
    objective = f"Objective: `{search.metric}` ({search.mode})"
    if search.multi_objective:
        objective = "Objectives: " + ", ".join(f"`{name}` ({mode})" for name, mode in search.objective_directions.items())
    lines.append(
        f"{len(finished)} trials finished of {len(everything)} started. {objective} on "
        "the validation split; the accuracy columns are on the test set, in percent, mean ± std over seeds where a "
        "configuration ran with several; a group's accuracy is the mean of its classes' accuracies and its header "
        "gives its class count; `-` marks an empty group; bold is the best per column (per stratum, in a stratified "
        "study). `recipe`, in every table, "
        "says what a row trained: the base loss and the epoch DRW starts (`DRW@e`), each active term with its "
        "weight, the epoch the terms start (`@e`; epochs here are the config's 0-based indices), the centres, and "
        "mixup (`(both labels)`: a mixed image counts for both its labels in the terms) and cRT epochs where used."
    )
    notes = finished["counts_note"].dropna().unique() if "counts_note" in finished else []
    if len(notes):
        lines += ["", f"Training counts below the imbalance profile's, so that every class keeps "
                  f"{study.config.data.val_per_class} validation images: {'; '.join(map(str, notes))}."]  # fmt: skip
    lines += _not_in_tables(everything, study.config.train.total_epochs, ncstudy_command("resume", study.name, study.folder.parent))
    if search.multi_objective and not finished.empty:
        fronts_only = bool(baseline) and _fronts_only(study, baseline)
        lines += front_section(study, tables, baseline, baseline_variant(study, baseline), fronts_only)
    if "best_by_stratum" in tables:
        keys = ", ".join(f"`{key}`" for key in search.strata)
        searched = ("every combination of the grid" if search.algorithm == "grid" else
                    f"its own sampler and Optuna study, its own budget of {search.num_samples} configurations")  # fmt: skip
        lines += ["", "### Best configuration per stratum", "",
                  f"Each stratum ({keys}) was searched on its own: {searched}. A row is the configuration with the best mean "
                  f"`{search.metric}` ({search.mode}) within its stratum, never across strata; `(val)` is that "
                  "objective, the accuracy columns are on the test set (mean ± std over seeds). "
                  "`figures/best_by_stratum.png` plots the best values against the stratum.",
                  "", to_markdown(tables["best_by_stratum"]),
                  *_stratum_recipes(study, tables["best_by_stratum"])]  # fmt: skip
    if "shot" in tables:
        lines += ["", "### Head / medium / tail accuracy", "", to_markdown(tables["shot"])]
        lines += ["### Neural collapse (training features, final epoch)", "", to_markdown(tables["nc"])]
        lines += ["### Neural collapse by frequency group", "", to_markdown(tables["nc_groups"])]
    base = _baseline_recipe(study, baseline) if baseline and "differences" in tables else None
    against = f"Baseline `{baseline}`: {base}." if base else ""
    if "differences" in tables:
        lines += ["### Differences against the baseline (paired by seed, 95% t-interval, percentage points)", "",
                  *([against, ""] if against else []), to_markdown(tables["differences"])]  # fmt: skip
    if "differences_nc" in tables:
        lines += ["### Neural-collapse differences against the baseline (paired by seed, 95% t-interval)", "",
                  "NC1 lower is more collapse; angles in degrees, larger is better separated (training features).",
                  "", to_markdown(tables["differences_nc"])]  # fmt: skip
    return "\n".join(lines)


def _stratum_recipes(study: StudyResults, table: Table) -> list[str]:
    """The recipe of each best-by-stratum row, as a list below the table (its `recipe` is in the CSV).
    A list, not a column: the table already has a column per stratum key and per searched parameter
    besides its five metrics, and has a row per stratum only, so a line per row keyed by its stratum
    reads more easily than a sixth wide text column."""
    numbers = table.numbers
    lines = ["Recipe of each row:", ""]
    for _, row in numbers.iterrows():
        key = ", ".join(f"{c.removeprefix('param.')}={value_text(row[c])}" for c in study.strata)
        lines.append(f"- `{key}`: {row['recipe']}")
    return lines + [""]


NOT_IN_TABLES = {
    "running": "Running (epochs reached so far)",
    "stopped": "Stopped early by ASHA",
    "failed": "Failed",
    "interrupted": "Interrupted (`{resume}` continues them)",
    "unfinished": "Unfinished",
}


def _not_in_tables(trials: pd.DataFrame, total_epochs: int, resume: str) -> list[str]:
    """A line per status that keeps trials out of the tables, each trial with the epochs it reached
    (and a failed trial's error); `resume` is the command that continues the interrupted ones."""
    lines = []
    for status, heading in NOT_IN_TABLES.items():
        rows = trials[trials["status"] == status] if len(trials) else trials
        if not len(rows):
            continue
        listed = []
        for row in rows.itertuples():
            error = getattr(row, "error", None)
            reason = f": {error}" if status == "failed" and isinstance(error, str) else ""
            listed.append(f"{row.trial_id} ({row.epochs_done}/{total_epochs} epochs{reason})")
        lines += ["", f"{heading.format(resume=resume)}, not in the tables: {'; '.join(listed)}."]
    return lines
