"""MLflow tracking on a real sqlite store: the experiment opens as model training, run names that fit
the runs list, keys MLflow accepts, the best trial on the study's run, the training set as a dataset
input (also from concurrent trials), a trial's constants as params beside its moving metrics, and a
resumed trial's report logged again."""

import json
import math
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.utils.validation import MAX_ENTITY_KEY_LENGTH, MAX_PARAM_VAL_LENGTH, _validate_param_name

from ncstudy.outputs.formatting import flatten
from ncstudy.study.tracking import (
    TRIAL_TAG,
    TRUNCATED,
    _metrics,
    StudyTracker,
    TrialRunLog,
    dataset_name,
    experiment_page,
    mlflow_key,
    mlflow_keys,
    short_value,
    trial_description,
    trial_run_name,
)

DATA = {"dataset": "cifar10", "root": None, "seed": 0, "imbalance": {"ratio": 100.0, "profile": "exp"}}


@pytest.fixture(scope="module")
def tracker(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlruns")
    return StudyTracker(f"sqlite:///{folder / 'mlflow.db'}", "tracking-test", artifact_root=folder / "artifacts")


@pytest.fixture
def config_file(tmp_path):
    file = tmp_path / "study.yaml"
    file.write_text("name: s\n")
    return file


def test_run_name_says_variant_searched_values_and_seed():
    params = {"variant": "+ L_W & L_B", "train.seed": 1, "data.imbalance.ratio": 100}
    assert trial_run_name(params, "e93bc_00003", several_seeds=True) == "+ L_W & L_B · r=100 seed=1"
    assert trial_run_name(params, "e93bc_00003", several_seeds=False) == "+ L_W & L_B · r=100"
    searched = {"regularizer.lambda_within": 0.012345, "regularizer.lambda_between": 0.45678, "regularizer.temperature": None}
    assert trial_run_name(searched, "t", False) == "λW=0.012 λB=0.46 T=none"
    assert trial_run_name({"loss.margin": 1.0, "regularizer.margin": 2.0}, "t", False) == "loss.margin=1 regularizer.margin=2"
    other = {"loss.tau": 1.5, "regularizer.lambda_center": 0.01, "train.lr": 0.1}
    assert trial_run_name(other, "t", False) == "τ=1.5 λC=0.01 lr=0.1"
    assert trial_run_name({}, "e93bc_00003", several_seeds=True) == "e93bc_00003"


def test_a_four_key_trial_s_name_fits_the_runs_list_and_its_description_has_every_digit():
    """MLflow 3's runs list cut `lambda_within=0.00263 lambda_between=0.172 ...` after about 15 characters."""
    params = {"data.imbalance.ratio": 100, "regularizer.lambda_within": 0.0026345678, "regularizer.lambda_between": 0.17234567,
              "regularizer.temperature": 0.5, "train.seed": 2}  # fmt: skip
    name = trial_run_name(params, "e93bc_00003", several_seeds=False)
    assert name == "r=100 λW=0.0026 λB=0.17 T=0.5" and len(name) < 40
    assert trial_run_name(params, "e93bc_00003", several_seeds=True) == "r=100 λW=0.0026 λB=0.17 T=0.5 seed=2"
    description = trial_description(params, "e93bc_00003")
    assert "e93bc_00003" in description
    for line in ("`regularizer.lambda_within` = 0.0026345678", "`regularizer.lambda_between` = 0.17234567",
                 "`data.imbalance.ratio` = 100", "`regularizer.temperature` = 0.5", "`train.seed` = 2"):  # fmt: skip
        assert line in description
    assert "`regularizer.temperature` = none" in trial_description({"regularizer.temperature": None}, "t")


@pytest.mark.parametrize(
    ("value", "text"),
    [(100.0, "100"), (0.0026345, "0.0026"), (0.17234, "0.17"), (12345.0, "12000"), (1.0e-5, "1e-05"), (0.5, "0.5"),
     (100, "100"), (None, "none"), (math.nan, "none"), ("cosine", "cosine"), (True, "True")],
)  # fmt: skip
def test_values_in_a_run_name_have_two_significant_digits_and_no_needless_exponent(value, text):
    assert short_value(value) == text


def test_a_new_experiment_opens_as_model_training_in_mlflow_s_ui(tmp_path):
    """MLflow 3 opened the study's experiment on an empty GenAI overview (traces, tokens)."""
    tracker = StudyTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "fresh")
    experiment = tracker.client.get_experiment(tracker.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    page = "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"
    assert experiment_page("http://127.0.0.1:5000/", "7") == page
    sorted_page = page + "&orderByKey=metrics.%60val_acc_all%60&orderByAsc=false"  # best first, the trials flat
    assert experiment_page("http://127.0.0.1:5000", "7", "val_acc_all", "max") == sorted_page
    assert experiment_page("http://h:5000", "7", "val_loss", "min").endswith("orderByKey=metrics.%60val_loss%60&orderByAsc=true")


@pytest.mark.parametrize("kind", [None, "genai_development"])
def test_a_reused_experiment_opens_as_model_training_too(tmp_path, kind):
    """An experiment an older version created (no kind), or that a user switched to GenAI, when a study
    (a resumed one, or another study into the same experiment) logs to it again."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    existing = client.create_experiment("old", tags={} if kind is None else {"mlflow.experimentKind": kind})
    tracker = StudyTracker(uri, "old")
    assert tracker.experiment_id == existing
    assert client.get_experiment(existing).tags["mlflow.experimentKind"] == "custom_model_development"


def test_keys_mlflow_refuses_are_mapped_to_unique_accepted_keys():
    refused = "search.variants.+ centre loss.regularizer.lambda_center"
    assert mlflow_key(refused) == "search.variants._ centre loss.regularizer.lambda_center"
    assert mlflow_key("regularizer.lambda_within") == "regularizer.lambda_within"
    keys = ["v.+ L_W", "v.- L_W", "v._ L_W", "a//b", "..", "", "x" * 300, "a:b"]
    mapped = mlflow_keys(keys)
    assert len(set(mapped.values())) == len(keys)
    assert mapped["v._ L_W"] == "v._ L_W"  # an accepted key keeps its name; the changed ones gain a hash
    assert mapped == mlflow_keys(reversed(keys))  # deterministic, whatever the order
    for key in mapped.values():
        _validate_param_name(key)
        assert len(key) <= MAX_ENTITY_KEY_LENGTH


def test_the_study_run_takes_a_config_with_any_variant_name_and_long_values(tracker, config_file):
    config = {"name": "s", "search": {"variants": {"+ centre loss": {"regularizer.lambda_center": 0.01}}},
              "data": {"root": "r" * (MAX_PARAM_VAL_LENGTH + 10)}}  # fmt: skip
    run_id = tracker.start_study("s", config, config_file)
    params = tracker.client.get_run(run_id).data.params
    assert params["search.variants._ centre loss.regularizer.lambda_center"] == "0.01"
    assert len(params["data.root"]) == MAX_PARAM_VAL_LENGTH and params["data.root"].endswith(TRUNCATED)


def test_a_trial_run_is_named_described_and_found_again_by_its_tune_id(tracker, config_file):
    parent = tracker.start_study("named", {"name": "named"}, config_file)
    run_id = tracker.start_trial(
        parent, "named", "e93bc_00003", {"regularizer.lambda_within": 0.01}, "+ L_W · seed=1", "- `train.seed` = 1"
    )
    run = tracker.client.get_run(run_id)
    assert run.info.run_name == "+ L_W · seed=1" and run.data.tags[TRIAL_TAG] == "e93bc_00003"
    assert run.data.tags["mlflow.note.content"] == "- `train.seed` = 1"  # the UI's run description
    assert tracker.start_trial(parent, "named", "e93bc_00003", {}, "another name") == run_id
    long = tracker.client.get_run(tracker.start_trial(parent, "named", "t1", {}, "x" * 300)).info.run_name
    assert len(long) == 250 and long.endswith(TRUNCATED)


CONSTANTS = {"num_train": 12406, "world_size": 1, "classes_many": 35, "classes_medium": 35, "classes_few": 30}


def report(epoch: int, worker_nodes: str) -> dict:
    """A report as the engine makes it (ncstudy.engine.loop.run_epochs): the epoch, the trial's constants, its measurements."""
    return {"epoch": epoch, "data_fingerprint": "e7b8c3fdf72b3565", **CONSTANTS, "worker_nodes": worker_nodes,
            "val_acc_all": 0.5 + epoch / 10, "lr": 0.1 / (epoch + 1), "epoch_time_s": 1.5, "loss_sup": math.nan}  # fmt: skip


def test_a_trial_s_constants_are_params_and_only_what_moves_is_a_metric_by_epoch(tracker, config_file):
    """MLflow's "Model metrics" tab drew flat charts of the class counts, num_train and the epoch itself."""
    parent = tracker.start_study("constants", {"name": "constants"}, config_file)
    run_id = tracker.start_trial(parent, "constants", "t0", {})
    log = TrialRunLog(tracker.uri, run_id, DATA)
    for epoch in (1, 2, 3):
        log.log_report(report(epoch, "node-a"))
    run = tracker.client.get_run(run_id)
    assert set(run.data.metrics) == {"val_acc_all", "lr", "epoch_time_s"}
    assert {key: run.data.params[key] for key in CONSTANTS} == {key: str(value) for key, value in CONSTANTS.items()}
    for key in ("val_acc_all", "lr"):
        assert [m.step for m in tracker.client.get_metric_history(run_id, key)] == [1, 2, 3]
    assert tracker.client.get_metric_history(run_id, "lr")[-1].value == pytest.approx(0.1 / 4)


def test_a_resumed_trial_reports_other_worker_nodes_into_the_same_run(tracker, config_file):
    parent = tracker.start_study("resumed", {"name": "resumed"}, config_file)
    run_id = tracker.start_trial(parent, "resumed", "t0", {})
    TrialRunLog(tracker.uri, run_id, DATA).log_report(report(0, "node-a"))
    # the resumed trial: a new Ray session, a new callback, other nodes, the same fingerprint
    resumed = TrialRunLog(tracker.uri, run_id, DATA)
    resumed.log_report(report(1, "node-b,node-c"))
    resumed.log_report(report(2, "node-b,node-c"))
    run = tracker.client.get_run(run_id)
    assert run.data.tags["worker_nodes"] == "node-b,node-c" and "worker_nodes" not in run.data.params
    assert run.data.params["data_fingerprint"] == "e7b8c3fdf72b3565"
    assert run.data.params["num_train"] == "12406" and "num_train" not in run.data.metrics  # logged by both sessions
    assert [m.step for m in tracker.client.get_metric_history(run_id, "val_acc_all")] == [0, 1, 2]
    assert "loss_sup" not in run.data.metrics
    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1  # logged by both sessions, held once
    dataset = inputs[0].dataset
    assert (dataset.name, dataset.digest) == ("cifar10-LT r=100", "e7b8c3fdf72b3565")
    assert {tag.key: tag.value for tag in inputs[0].tags} == {"mlflow.data.context": "training"}


def test_a_resumed_trial_logs_each_epoch_once_even_when_the_driver_died_between_metrics_and_tags(tracker, config_file):
    """MLflow's SQL store commits a batch's metrics and tags separately; Ctrl-C between the two once
    left epoch 2's metrics without any record beside them, and the resumed trial logged epoch 2 twice."""
    parent = tracker.start_study("killed", {"name": "killed"}, config_file)
    run_id = tracker.start_trial(parent, "killed", "t0", {})
    first = TrialRunLog(tracker.uri, run_id, DATA)
    first.log_report(report(1, "node-a"))
    tracker.client.log_batch(run_id, metrics=_metrics(report(2, "node-a"), step=2))  # killed before the tags
    resumed = TrialRunLog(tracker.uri, run_id, DATA)  # restored from epoch 1's checkpoint
    for epoch in (1, 2, 3):
        resumed.log_report(report(epoch, "node-b"))
    assert [m.step for m in tracker.client.get_metric_history(run_id, "val_acc_all")] == [1, 2, 3]


def test_dataset_names():
    assert dataset_name(DATA) == "cifar10-LT r=100"
    assert dataset_name({"dataset": "parquet", "root": "/data/cifar10-jpeg", "imbalance": {"ratio": 50.0}}) == "cifar10-jpeg-LT r=50"
    assert dataset_name({"dataset": "digits", "imbalance": {"ratio": 10, "profile": "step"}}) == "digits-LT step r=10"
    assert dataset_name({"dataset": "digits", "imbalance": {"ratio": 1.0}}) == "digits r=1"


def test_the_study_run_gets_the_best_finished_trial(tracker, config_file):
    parent = tracker.start_study("best", flatten({"name": "best"}), config_file)
    trials = pd.DataFrame({
        "trial_id": ["a", "b", "c"],
        "status": ["finished", "finished", "unfinished"],
        "param.variant": ["+ L_W", "+ centre loss", "CE"],
        "param.regularizer.temperature": [None, 0.1, None],
        "val_acc_all": [0.61, 0.72, 0.99],
        "test_acc_all": [0.6, 0.7, 0.9], "test_acc_many": [0.9, 0.95, 1.0], "test_acc_medium": [0.5, 0.6, 0.9], "test_acc_few": [0.1, math.nan, 0.8],
        "mlflow_run_id": ["run-a", "run-b", "run-c"],
    })  # fmt: skip
    tracker.log_best(parent, trials, "val_acc_all", "max")
    data = tracker.client.get_run(parent).data
    assert data.metrics == {"best_val_acc_all": 0.72, "best_test_acc_all": 0.7, "best_test_acc_many": 0.95, "best_test_acc_medium": 0.6}
    assert {k: v for k, v in data.tags.items() if k.startswith("best.")} == {
        "best.trial_id": "b", "best.run_id": "run-b", "best.variant": "+ centre loss", "best.regularizer.temperature": "0.1",
    }  # fmt: skip
    tracker.log_best(parent, trials, "val_acc_all", "min")  # logged again (a resumed study): tags change
    data = tracker.client.get_run(parent).data
    assert data.tags["best.trial_id"] == "a" and data.tags["best.regularizer.temperature"] == "none"
    assert data.metrics["best_val_acc_all"] == 0.61
    tracker.log_best(parent, trials.assign(status="unfinished"), "val_acc_all", "max")  # nothing finished: no change
    assert tracker.client.get_run(parent).data.tags["best.trial_id"] == "a"


def _log_the_same_datasets(uri: str, run_id: str, barrier, rounds: int, out: str) -> None:
    from ncstudy.study.tracking import log_dataset_input, training_dataset

    client = mlflow.MlflowClient(uri)
    errors = []
    for number in range(rounds):
        dataset = training_dataset({"dataset": "digits", "imbalance": {"ratio": 10.0 + number}, "seed": 0}, f"split{number}", 100)
        barrier.wait(timeout=60)
        try:
            log_dataset_input(client, run_id, dataset)
        except Exception as error:  # noqa: BLE001 - counted, the test reports it
            errors.append(str(error)[:200])
    Path(out).write_text(json.dumps(errors))


def test_concurrent_trials_of_one_split_each_log_its_dataset_input(tmp_path):
    """Trials log their runs from their own processes: 4 at once logging the same new dataset made
    MLflow's SQL store insert it twice (UNIQUE constraint failed: 23 of 32 calls here before the
    retry); every run now links it, and the store holds each dataset once."""
    import multiprocessing

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("race")
    runs = [client.create_run(experiment).info.run_id for _ in range(4)]
    barrier = multiprocessing.Barrier(len(runs))
    processes = [multiprocessing.Process(target=_log_the_same_datasets, args=(uri, run, barrier, 4, str(tmp_path / f"errors{i}")))
                 for i, run in enumerate(runs)]  # fmt: skip
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [json.loads((tmp_path / f"errors{i}").read_text()) for i in range(len(runs))] == [[]] * len(runs)
    for run in runs:
        names = sorted(d.dataset.name for d in client.get_run(run).inputs.dataset_inputs)
        assert names == sorted(f"digits-LT r={10 + n}" for n in range(4)), names


def test_the_tracker_builds_mlflow_s_filter_lexer_before_any_signal_can_interrupt_it(tmp_path):
    """sqlparse registers its lexer before adding its rules; a Ctrl-C in between (CI: the second
    Ctrl-C test) left every later MLflow search failing with "Invalid clause(s)". A fresh process
    that makes a StudyTracker has the lexer complete before any search runs."""
    import subprocess
    import sys

    code = (
        "import sqlparse.lexer as lx\nfrom ncstudy.study.tracking import StudyTracker\n"
        f"StudyTracker('sqlite:///{tmp_path / 'm.db'}', 'x')\n"
        "print(lx.Lexer._default_instance is not None and len(lx.Lexer._default_instance._SQL_REGEX) > 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "True", done.stderr[-2000:]
