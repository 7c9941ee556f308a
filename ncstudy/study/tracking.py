"""MLflow tracking: a parent run per study, a child run per trial (`mlflow.parentRunId`).

MLflow 3 refuses its plain file store, so the local default is sqlite at an absolute path,
`RESULTS/mlflow.db`, with artifacts beside it in `RESULTS/mlartifacts`. Per-epoch metrics are
logged by `TrialRunLog`: in a study, by the driver's Tune callback ncstudy.study.trial_runs, which sees
each trial's reports (rank 0's for a multi-worker trial), so each trial is logged once however many
workers it has, and only the driver writes the store; it also logs the figures drawn from the final
checkpoint and the trial's training split as an MLflow dataset input. This module imports no Ray
(`ncstudy train`).

What a researcher compares in the MLflow UI: MLflow 3 opens an experiment on its GenAI pages
(traces, token usage, evaluations) unless told it holds model training. Every experiment the study
logs to carries the tag that says so (EXPERIMENT_KIND = MODEL_TRAINING); MLflow 3.17's UI decides by
a switch it keeps per browser instead (GenAI by default), which a link sets (`experiment_page`). A
trial's run is named by what sets it apart, short enough for the runs list's name column
(`trial_run_name`: variant, searched values in short symbols at 2 significant digits, seed;
`r=100 λW=0.0026 λB=0.17 T=0.5`), with every searched value at full precision in its description
(`trial_description`, MLflow's note) and the Tune trial id a tag; the study's run carries the best
trial's objective, test accuracies and configuration (`StudyTracker.log_best`). What a trial reports
the same at every epoch (its split's sizes and fingerprint, CONSTANTS) is a param, not a metric, and
the epoch is the metrics' step, so a run's metric charts are the curves that move.
MLflow refuses some keys (mlflow.utils.validation: only alphanumerics, `_ - . / ` and spaces, at
most 250 characters, no path tricks such as `a//b`) and any change of a logged param, so every key
passes through `mlflow_keys` and values that differ between Ray sessions (the worker nodes) are tags.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import posixpath
import re
import socket
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT, MLFLOW_RUN_NOTE
from mlflow.utils.validation import MAX_ENTITY_KEY_LENGTH, MAX_PARAM_VAL_LENGTH, MAX_TAG_VAL_LENGTH
import sqlparse.lexer  # MLflow's search-filter parser (see StudyTracker)

from ncstudy.data.groups import GROUPS
from ncstudy.engine.checkpoint_files import COLLAPSE_FILE, FIGURES
from ncstudy.outputs.figures import trial_figures
from ncstudy.outputs.formatting import flatten, value_text

if TYPE_CHECKING:
    import pandas as pd

PARENT_TAG = "mlflow.parentRunId"
STUDY_TAG = "ncstudy.study"
TRIAL_TAG = "ncstudy.trial_id"
FOLDER_TAG = "ncstudy.folder"  # host:path of the study folder that wrote the run (folder_tag)
OBJECTIVES_TAG = "ncstudy.objectives"  # a multi-objective study's objectives and directions (tag_objectives)
MAX_PARAMS_PER_BATCH = 100
SEED_PARAM = "train.seed"  # the training seed in a trial's params (ncstudy.study.search.SEED_KEY)
VARIANT_PARAM = "variant"
SHORT_NAMES = {
    "data.imbalance.ratio": "r",
    "regularizer.lambda_within": "λW",
    "regularizer.lambda_between": "λB",
    "regularizer.lambda_center": "λC",
    "regularizer.temperature": "T",
    "loss.tau": "τ",
    SEED_PARAM: "seed",
}
NAME_DIGITS = 2  # significant digits of a number in a run name; its description has them all
# An experiment's type in MLflow 3's UI (mlflow/server/js: the tag its type selector writes, and
# ExperimentKind's values): `custom_model_development` is "Model training", whose first page is the
# runs table; `genai_development` opens on traces and evaluations.
EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
# MLflow 3.17's UI shows an experiment as GenAI or model training by a switch in its sidebar, not by
# the tag: kept per browser (localStorage `mlflow.workflowType`, GenAI when unset), and overridden by
# the query `workflowType` of the page's link (mlflow/server/js: WorkflowTypeProvider).
MODEL_TRAINING_VIEW = {"workflowType": "machine_learning"}
EPOCH = "epoch"  # a report's epoch: the step of its metrics, not a metric itself
# Numbers every report of a trial repeats (ncstudy.engine.loop.static_metrics): params, not metrics.
CONSTANTS = frozenset({"num_train", "world_size", *(f"classes_{group}" for group in GROUPS)})
SESSION_STRINGS = frozenset({"worker_nodes"})  # reported strings that change when a trial resumes: tags
BEST_ACCURACIES = ("test_acc_all", "test_acc_many", "test_acc_medium", "test_acc_few")
TRUNCATED = "...[truncated]"
MAX_RUN_NAME_LENGTH = 250  # the run name column of MLflow's SQL stores (sqlite alone does not enforce it)
# Characters MLflow refuses in a key (mlflow.utils.validation.validate_param_and_metric_name), and
# the colon, which it refuses on Windows.
_REFUSED_IN_KEY = re.compile(r"[^\w./\- ]")


def tracking_uri(configured: str | None, results_dir: Path) -> str:
    """The configured URI, or sqlite at the absolute path RESULTS/mlflow.db."""
    if configured:
        return configured
    return f"sqlite:///{(results_dir / 'mlflow.db').resolve()}"


def folder_tag(study_folder: Path) -> str:
    """`host:/path/to/RESULTS/NAME`, the tag FOLDER_TAG of the runs a study folder writes: on a tracking
    server shared by a copied folder and its original (both continue the same runs), it says which
    folder wrote a run last (docs/reliability.md, "A copied or moved study folder")."""
    return f"{socket.gethostname()}:{study_folder}"


def study_tracker(study, results: Path) -> StudyTracker:
    """The tracker of `study` (a StudyConfig) whose results folder is `results`: its configured store,
    or sqlite in the results folder with artifacts in RESULTS/mlartifacts."""
    return StudyTracker(
        tracking_uri(study.tracking.uri, results),
        study.tracking.experiment or study.name,
        artifact_root=None if study.tracking.uri else results / "mlartifacts",
    )


def _digest(text: str, length: int = 6) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:length]


def _with_suffix(key: str, original: str) -> str:
    """`key` made distinct by a short hash of the original key, within MLflow's length limit."""
    suffix = f"-{_digest(original)}"
    return key[: MAX_ENTITY_KEY_LENGTH - len(suffix)] + suffix


def _resolves_to_itself(key: str) -> bool:
    """MLflow's path rule (mlflow.utils.validation.path_not_unique): a key read as a path names itself."""
    return posixpath.normpath(key) == key and key != "." and not key.startswith(("/", ".."))


def mlflow_key(key: str) -> str:
    """`key` as MLflow accepts it: each refused character becomes `_`; a key that a path would
    resolve to another name (`a//b`, `./a`, `..`) loses its slashes, then if need be gains a leading
    `_`; a key over MLflow's length limit is cut and made distinct by a short hash."""
    safe = _REFUSED_IN_KEY.sub("_", key)
    if not _resolves_to_itself(safe):
        safe = safe.replace("/", "_")
        if not _resolves_to_itself(safe):
            safe = "_" + safe
    return safe if len(safe) <= MAX_ENTITY_KEY_LENGTH else _with_suffix(safe, key)


def mlflow_keys(keys: Iterable[str]) -> dict[str, str]:
    """{key: the key MLflow sees}: `mlflow_key` of each, deterministic, and unique: where changed
    keys meet (`+ L_W` and `- L_W` both give `_ L_W`), each changed one gains a short hash of itself."""
    safe = {key: mlflow_key(key) for key in keys}
    counts = Counter(safe.values())
    return {key: _with_suffix(value, key) if counts[value] > 1 and value != key else value for key, value in safe.items()}


def _limited(text: str, limit: int) -> str:
    """`text` within MLflow's length limit, a cut one ending in TRUNCATED."""
    return text if len(text) <= limit else text[: limit - len(TRUNCATED)] + TRUNCATED


def _params(values: Mapping[str, Any]) -> list[Param]:
    keys = mlflow_keys(values)
    return [Param(keys[key], _limited(str(value), MAX_PARAM_VAL_LENGTH)) for key, value in values.items()]


def _tags(values: Mapping[str, Any]) -> list[RunTag]:
    keys = mlflow_keys(values)
    return [RunTag(keys[key], _limited(str(value), MAX_TAG_VAL_LENGTH)) for key, value in values.items()]


def _is_number(value: Any) -> bool:
    """A finite number (numpy's included), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _metrics(values: Mapping[str, Any], step: int) -> list[Metric]:
    stamp = int(time.time() * 1000)
    finite = {key: value for key, value in values.items() if _is_number(value)}
    keys = mlflow_keys(finite)
    return [Metric(keys[key], float(value), stamp, step) for key, value in finite.items()]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _short_names(keys: list[str]) -> dict[str, str]:
    """{dotted key: its name in a run name}: its symbol in SHORT_NAMES (`λW`, `r`), else the last
    part, or the whole key where two keys share their last part (`loss.margin` beside `regularizer.margin`)."""
    last = Counter(key.rsplit(".", 1)[-1] for key in keys)
    return {
        key: SHORT_NAMES.get(key) or (key.rsplit(".", 1)[-1] if last[key.rsplit(".", 1)[-1]] == 1 else key)
        for key in keys
    }


def short_value(value: Any) -> str:
    """A value in a run name: a float to NAME_DIGITS significant digits, written without an exponent
    where `g` allows (100, 0.0026, 0.17), anything else as ncstudy.outputs.formatting.value_text does."""
    if isinstance(value, float) and math.isfinite(value):
        return f"{float(f'{value:.{NAME_DIGITS}g}'):g}"
    return value_text(value)


def _labelled(params: Mapping[str, Any], several_seeds: bool) -> list[str]:
    """The keys of `params` a run name shows: the searched ones, data settings first (the imbalance
    ratio says which task a trial is; the list's name column shows about 20 characters), then the seed
    in a study of several."""
    searched = sorted((key for key in params if key not in (VARIANT_PARAM, SEED_PARAM)), key=lambda k: not k.startswith("data."))
    return searched + [SEED_PARAM] if several_seeds and SEED_PARAM in params else searched


def trial_run_name(params: Mapping[str, Any], trial_id: str, several_seeds: bool) -> str:
    """A trial's run name: what sets it apart from the study's other trials, from its sampled
    `params` (dotted keys as run_trial receives them), short enough for the name column of MLflow's
    runs list: the variant as written, then the searched values in short symbols and, in a study of
    several seeds, the seed, e.g. `+ L_W & L_B · r=100 seed=1` or `r=10 λW=0.0026 λB=0.17 T=none`;
    the trial id when nothing was searched. `trial_description` has the values at full precision."""
    labelled = _labelled(params, several_seeds)
    names = _short_names(labelled)
    parts = [str(params[VARIANT_PARAM])] if VARIANT_PARAM in params else []
    if labelled:
        parts.append(" ".join(f"{names[key]}={short_value(params[key])}" for key in labelled))
    return " · ".join(parts) or trial_id


def trial_description(params: Mapping[str, Any], trial_id: str) -> str:
    """A trial run's description (MLflow's note, Markdown): the Tune trial id and every sampled
    key = value at full precision, which the run name rounds."""
    lines = [f"- `{key}` = {'none' if _missing(value) else value}" for key, value in params.items()]
    return "\n".join([f"Tune trial `{trial_id}`", "", *lines])


LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default


def experiment_page(ui: str, experiment_id: str, metric: str | None = None, mode: str = "max") -> str:
    """The experiment's runs table in the MLflow UI served at `ui` (`http://127.0.0.1:5000`), as
    model training whatever the browser's switch says; with the study's objective `metric` and
    `mode`, its runs sorted best first, which also lists the trials flat rather than folded under the
    study's run (mlflow/server/js: runs nest under their parent only in the default order by date)."""
    query = dict(MODEL_TRAINING_VIEW)
    if metric is not None:
        query.update(orderByKey=f"metrics.`{mlflow_key(metric)}`", orderByAsc=str(mode == "min").lower())
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs?{urlencode(query, quote_via=quote)}"


def dataset_name(data: Mapping[str, Any]) -> str:
    """The training set's name from the trial's `data` settings: `cifar10-LT r=100`; a Parquet or
    file-list source is named by its folder; a step profile says so."""
    dataset = data["dataset"]
    if dataset in ("parquet", "filelist") and data.get("root"):
        dataset = Path(data["root"]).name
    imbalance = data["imbalance"]
    ratio = float(imbalance["ratio"])
    profile = " step" if imbalance.get("profile") == "step" else ""
    return f"{dataset}{'-LT' if ratio > 1 else ''}{profile} r={ratio:g}"


def training_dataset(data: Mapping[str, Any], fingerprint: str, num_train: int) -> DatasetInput:
    """The trial's training split as an MLflow dataset input (context `training`): named by
    `dataset_name`, its digest the split fingerprint, its source the data settings that drew it."""
    source = {key: data.get(key) for key in ("dataset", "root", "seed", "imbalance")}
    dataset = Dataset(
        name=dataset_name(data),
        digest=fingerprint,
        source_type="ncstudy",
        source=json.dumps(source, sort_keys=True),
        profile=json.dumps({"num_rows": num_train}),
    )
    return DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, "training")])


def best_trial(trials: pd.DataFrame, metric: str, mode: str) -> pd.Series | None:
    """The finished trial with the best `metric` (`mode` max or min), or None when none has it."""
    finished = trials[trials["status"] == "finished"] if "status" in trials else trials
    if metric not in finished:
        return None
    measured = finished[finished[metric].notna()]
    if measured.empty:
        return None
    return measured.loc[measured[metric].idxmax() if mode == "max" else measured[metric].idxmin()]


class StudyTracker:
    """Creates and closes the study's MLflow runs; cheap to pickle (it holds only strings)."""

    def __init__(self, uri: str, experiment: str, artifact_root: Path | None = None):
        self.uri = uri
        self.experiment = experiment
        self.artifact_root = artifact_root
        self._experiment_id: str | None = None
        # MLflow parses search filters with sqlparse, whose lexer is built on first use and registered
        # before its rules are added: a Ctrl-C arriving in between left an empty lexer for the rest
        # of the process, so the interrupted driver's clean-up search failed ("Invalid clause(s)")
        # and it exited 1, not 130. Built here, before any trial runs.
        sqlparse.lexer.Lexer.get_default_instance()

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.uri)

    @property
    def experiment_id(self) -> str:
        """The experiment's id, created on first use, and tagged as model training either way: an
        experiment an older version created, or that a user switched in the UI, opens on its runs again."""
        if self._experiment_id is None:
            found = self.client.get_experiment_by_name(self.experiment)
            if found is None:
                location = self.artifact_root.resolve().as_uri() if self.artifact_root else None
                self._experiment_id = self.client.create_experiment(
                    self.experiment, artifact_location=location, tags={EXPERIMENT_KIND: MODEL_TRAINING}
                )
            else:
                self._experiment_id = found.experiment_id
                if found.tags.get(EXPERIMENT_KIND) != MODEL_TRAINING:
                    self.client.set_experiment_tag(self._experiment_id, EXPERIMENT_KIND, MODEL_TRAINING)
        return self._experiment_id

    def start_study(self, name: str, config: dict[str, Any], config_file: Path) -> str:
        """The parent run: the resolved config as params and as an artifact; tagged with the study
        folder that writes it (`folder_tag`)."""
        run = self.client.create_run(
            self.experiment_id, run_name=name, tags={STUDY_TAG: name, FOLDER_TAG: folder_tag(config_file.parent)}
        )
        self.log_params(run.info.run_id, flatten(config))
        self.client.log_artifact(run.info.run_id, str(config_file))
        return run.info.run_id

    def children(self, parent_run_id: str) -> list:
        return self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'", max_results=10_000
        )

    def start_trial(
        self, parent_run_id: str, study: str, trial_id: str, params: dict[str, Any], run_name: str | None = None,
        description: str | None = None, folder: str | None = None,
    ) -> str:  # fmt: skip
        """The trial's child run under the study's parent run, named `run_name` (default: the trial
        id, which is always the tag TRIAL_TAG), with `description` as its note; a trial resumed after
        an interruption gets its own run back (set RUNNING again), so MLflow holds one run per trial.
        `folder` (`folder_tag`) is the tag FOLDER_TAG, set again when the run is reopened."""
        for run in self.children(parent_run_id):
            if run.data.tags.get(TRIAL_TAG) == trial_id:
                self.client.update_run(run.info.run_id, status="RUNNING")
                if folder and run.data.tags.get(FOLDER_TAG) != folder:
                    self.client.set_tag(run.info.run_id, FOLDER_TAG, folder)
                return run.info.run_id
        tags = {PARENT_TAG: parent_run_id, STUDY_TAG: study, TRIAL_TAG: trial_id, **({FOLDER_TAG: folder} if folder else {})}
        if description:
            tags[MLFLOW_RUN_NOTE] = _limited(description, MAX_TAG_VAL_LENGTH)
        run = self.client.create_run(
            self.experiment_id, run_name=_limited(run_name or trial_id, MAX_RUN_NAME_LENGTH), tags=tags
        )
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    def close_interrupted(self, parent_run_id: str) -> int:
        """Mark the runs an interrupted attempt left RUNNING as KILLED (the ones that resume reopen)."""
        stale = [run for run in self.children(parent_run_id) if run.info.status == "RUNNING"]
        for run in stale:
            self.finish(run.info.run_id, "KILLED")
        return len(stale)

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        items = _params(params)
        for start in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=items[start : start + MAX_PARAMS_PER_BATCH])

    def log_best(self, parent_run_id: str, trials: pd.DataFrame, metric: str, mode: str, prefix: str = "") -> None:
        """On the study's run, the best finished trial of `trials` (ncstudy.outputs.results.read_experiment's
        table) by `metric` and `mode`: metrics `best_<metric>` and its test accuracies `best_test_acc_all/many/medium/few`,
        and tags `best.trial_id`, `best.run_id` (with an `mlflow_run_id` column) and `best.<key>` per
        searched parameter. Tags, not params: a resumed study that ends with a better trial logs
        again, and MLflow refuses to change a param. Nothing is logged without a finished trial.
        A stratified study logs each stratum's best under its own `prefix` (`ratio=10/`), never one
        best across strata (ncstudy.study.search.StratifiedSearch compares trials within a stratum only)."""
        best = best_trial(trials, metric, mode)
        if best is None:
            return
        metrics = {f"{prefix}best_{column}": best.get(column) for column in (metric, *BEST_ACCURACIES)}
        tags = {f"{prefix}best.trial_id": best["trial_id"]}
        if not _missing(best.get("mlflow_run_id")):
            tags[f"{prefix}best.run_id"] = best["mlflow_run_id"]
        for column in best.index:
            if column.startswith("param."):
                value = best[column]
                tags[f"{prefix}best.{column.removeprefix('param.')}"] = "none" if _missing(value) else value
        self.client.log_batch(parent_run_id, metrics=_metrics(metrics, step=0), tags=_tags(tags))

    def tag_objectives(self, parent_run_id: str, directions: Mapping[str, str]) -> None:
        """A multi-objective study's run names its objectives in one tag, `objectives`
        (`val_acc_many max, val_acc_few max`), beside the `search.objectives.*` params of its config."""
        text = ", ".join(f"{name} {mode}" for name, mode in directions.items())
        self.client.set_tag(parent_run_id, OBJECTIVES_TAG, text)

    def log_artifacts(self, run_id: str, paths: list[Path]) -> None:
        """Files as artifacts at the top level, folders under their own name."""
        for path in paths:
            if path.is_dir():
                self.client.log_artifacts(run_id, str(path), artifact_path=path.name)
            elif path.exists():
                self.client.log_artifact(run_id, str(path))

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)


class TrialRunLog:
    """Logs a trial's reports to its child run: what moves as metrics at step = the report's epoch;
    what every report repeats (CONSTANTS, and strings such as the data fingerprint) once as params,
    except SESSION_STRINGS, which a resumed trial reports with new values and which are tags; with
    the trial's `data` settings, the first report that carries the split fingerprint also logs the
    training set as a dataset input. The final checkpoint's arrays become the trial's figures and
    collapse.npz artifacts. Used by the study driver's Tune callback (ncstudy.study.trial_runs) and
    by `ncstudy train`; imports no Ray."""

    def __init__(self, uri: str, run_id: str, data: Mapping[str, Any] | None = None):
        self.uri = uri
        self.run_id = run_id
        self.data = data
        self._logged_params: set[str] = set()
        self._logged_dataset = False
        self._last_step: int | None = None  # the last epoch the run holds metrics for

    def log_report(self, values: Mapping[str, Any]) -> None:
        step = int(values.get(EPOCH, 0))
        constant = {k: v for k, v in values.items() if (k in CONSTANTS or isinstance(v, str)) and k not in SESSION_STRINGS}
        new_params = {k: v for k, v in constant.items() if k not in self._logged_params}
        session = {k: v for k, v in values.items() if k in SESSION_STRINGS}
        moving = {k: v for k, v in values.items() if k not in constant and k not in session and k != EPOCH}
        client = MlflowClient(tracking_uri=self.uri)
        if self._last_step is None:  # a resumed trial's run may hold epochs already
            self._last_step = logged_epochs(client, self.run_id)
        repeated = step <= self._last_step  # a restored trial repeats its checkpoint's epoch (ncstudy.study.train_worker)
        self._last_step = max(self._last_step, step)
        client.log_batch(
            self.run_id, metrics=[] if repeated else _metrics(moving, step), params=_params(new_params), tags=_tags(session)
        )
        self._logged_params.update(new_params)
        if self.data is not None and not self._logged_dataset and "data_fingerprint" in values:
            dataset = training_dataset(self.data, values["data_fingerprint"], int(values.get("num_train", 0)))
            log_dataset_input(client, self.run_id, dataset)
            self._logged_dataset = True

    def log_final(self, checkpoint_folder: Path, figures: Path | None = None) -> None:
        """When the checkpoint is the final one: collapse.npz and the trial's figures. `figures`: a
        folder of figures already drawn, logged if it exists (`ncstudy train`; absent with
        `--no-figures`); None: drawn here from collapse.npz (the study driver, ncstudy.study.trial_runs)."""
        arrays = checkpoint_folder / COLLAPSE_FILE
        if not arrays.exists():
            return
        client = MlflowClient(tracking_uri=self.uri)
        client.log_artifact(self.run_id, str(arrays))
        if figures is not None:
            if figures.is_dir():
                client.log_artifacts(self.run_id, str(figures), artifact_path=FIGURES)
            return
        with tempfile.TemporaryDirectory() as drawn:
            trial_figures(arrays, Path(drawn))
            client.log_artifacts(self.run_id, drawn, artifact_path=FIGURES)


def log_dataset_input(client: MlflowClient, run_id: str, dataset: DatasetInput, attempts: int = 3) -> None:
    """`client.log_inputs`, again if a concurrent trial created the same dataset first. MLflow's SQL
    store looks a dataset up, then inserts it, so two trials of one data split logging at once can
    both insert it and one fails on the store's unique key (experiment, name, digest); the retry
    finds the row the other committed and only links it to the run."""
    for attempt in range(attempts):
        try:
            client.log_inputs(run_id, datasets=[dataset])
            return
        except MlflowException as error:
            if "UNIQUE constraint failed" not in str(error) or attempt == attempts - 1:
                raise


def logged_epochs(client: MlflowClient, run_id: str) -> int:
    """The last epoch whose metrics the run holds (-1 for none): the largest step of its metrics,
    which MLflow's SQL store commits in one transaction per batch. Not from a tag written with them:
    the store commits a batch's tags in a separate transaction, so a driver killed between the two
    (Ctrl-C) left metrics without the tag, and the resumed trial logged that epoch a second time."""
    keys = client.get_run(run_id).data.metrics
    return int(max((metric.step for key in keys for metric in client.get_metric_history(run_id, key)), default=-1))


def run_status(failed: bool) -> str:
    return RunStatus.to_string(RunStatus.FAILED if failed else RunStatus.FINISHED)
