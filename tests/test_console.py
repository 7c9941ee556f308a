"""What a study's console leaves to RESULTS/<name>/driver.log (ncstudy.study.console): Tune's repeated
snapshot warning, Tune's traceback of a failed trial, Tune's slow-callback warnings, MLflow's database
error traceback and Optuna's duplicate-step warning; and the
FAILED line of a failed trial, which says its error's last line (ncstudy.study.progress). No Ray
cluster: the messages go through the very loggers and the warning call that Ray and Optuna use."""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

from ray.tune.utils.util import warn_if_slow as WARN_IF_SLOW

from ncstudy.outputs.formatting import error_line
from ncstudy.study.console import DRIVER_LOG, study_log

SNAPSHOT = (
    "Experiment state snapshotting has been triggered multiple times in the last 5.0 seconds and may become a "
    "bottleneck.\nYou may want to consider increasing the `CheckpointConfig(num_to_keep)`"
)
TRACEBACK = """Failure # 1 (occurred at 2026-12-06_07-56-36)
\x1b[36mray::ImplicitFunc.train()\x1b[39m (pid=9697, ip=192.0.2.2, repr=run_single_worker_trial)
  File "/work/main/ncstudy/engine/loop.py", line 49, in _check_finite
    raise TrialDiverged.at(epoch, ", ".join(bad))
ncstudy.engine.loop.TrialDiverged: the trial diverged in epoch 4: loss = nan (lower train.lr, raise train.warmup_epochs or lower the regularizer weights)

"""


class _Console(logging.Handler):
    """Stands for the console handlers: what a logger still hands to its handlers."""

    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def tune_loggers():
    """Ray's own module loggers of the three Tune messages, each with a stand-in console."""
    from ray.tune import tune as tune_module
    from ray.tune.execution import experiment_state, tune_controller
    from ray.tune.utils import util

    loggers = {"snapshot": experiment_state.logger, "failed": tune_controller.logger, "incomplete": tune_module.logger,
               "slow": util.logger}  # fmt: skip
    consoles = {}
    for key, logger in loggers.items():
        consoles[key] = _Console()
        logger.addHandler(consoles[key])
    yield loggers, consoles
    for key, logger in loggers.items():
        logger.removeHandler(consoles[key])


def _diverged() -> BaseException:
    try:
        raise FloatingPointError("the trial diverged in epoch 4: loss = nan")
    except FloatingPointError as error:
        return error


def _emit_tune_messages(loggers: dict) -> None:
    loggers["snapshot"].warning(SNAPSHOT)
    loggers["failed"].error("Trial task failed for trial run_single_worker_trial_63b9d2dd", exc_info=_diverged())
    loggers["incomplete"].error("Trials did not complete: %s", ["run_single_worker_trial_63b9d2dd"])
    loggers["slow"].warning(WARN_IF_SLOW.DEFAULT_MESSAGE.format(name="process_trial_result", duration=0.533))
    loggers["slow"].warning("Processing trial results took 0.507 s, which may be a performance bottleneck. Please ...")


def test_tune_noise_goes_to_driver_log_not_console(tmp_path, tune_loggers):
    loggers, consoles = tune_loggers
    with study_log(tmp_path, verbose=False) as path:
        _emit_tune_messages(loggers)
        loggers["snapshot"].warning("Saving the experiment state took ~9.00 seconds")  # not ours: stays
        loggers["failed"].error("Could not re-use actor for trial x")  # not ours: stays
    assert path == tmp_path / DRIVER_LOG
    assert consoles["snapshot"].lines == ["Saving the experiment state took ~9.00 seconds"]
    assert consoles["failed"].lines == ["Could not re-use actor for trial x"]
    assert consoles["incomplete"].lines == [] and consoles["slow"].lines == []
    log = path.read_text()
    # One line per record (time, logger, level, the message's lines joined), the traceback after its line.
    assert " ray.tune.execution.experiment_state WARNING Experiment state snapshotting has been triggered" in log
    assert "bottleneck. You may want" in log
    assert " ray.tune.execution.tune_controller ERROR Trial task failed for trial run_single_worker_trial_63b9d2dd\n" in log
    assert "Traceback (most recent call last):" in log and "FloatingPointError: the trial diverged in epoch 4" in log
    assert " ray.tune.tune ERROR Trials did not complete: ['run_single_worker_trial_63b9d2dd']" in log
    assert " ray.tune.utils.util WARNING The `process_trial_result` operation took 0.533 s" in log
    assert " ray.tune.utils.util WARNING Processing trial results took 0.507 s" in log
    assert "Saving the experiment state" not in log and "re-use actor" not in log

    # Closed: the loggers are as before (everything reaches the console again), the log is appended to.
    _emit_tune_messages(loggers)
    assert len(consoles["snapshot"].lines) == 2 and len(consoles["failed"].lines) == 2
    with study_log(tmp_path, verbose=False):
        loggers["snapshot"].warning(SNAPSHOT)
    assert path.read_text().startswith(log) and path.read_text().count("snapshotting") == 2


def test_verbose_keeps_tune_noise_on_console_and_in_log(tmp_path, tune_loggers):
    loggers, consoles = tune_loggers
    with study_log(tmp_path, verbose=True) as path:
        _emit_tune_messages(loggers)
    assert [len(consoles[key].lines) for key in ("snapshot", "failed", "incomplete", "slow")] == [1, 1, 1, 2]
    assert path.read_text().count(" ray.tune.") == 5


def _report_twice() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trial = optuna.create_study().ask()
    trial.report(0.5, step=3)
    trial.report(0.6, step=3)  # what a resumed trial does with the epochs after its last checkpoint


@pytest.mark.parametrize("verbose", [False, True])
def test_optuna_duplicate_step_warning_goes_to_driver_log(tmp_path, verbose):
    with warnings.catch_warnings(record=True) as shown:  # what reaches the console
        warnings.simplefilter("always")
        with study_log(tmp_path, verbose=verbose) as path:
            _report_twice()
            warnings.warn("another warning", UserWarning)  # not ours: stays
    texts = [str(w.message) for w in shown]
    assert "another warning" in texts
    assert any("is already reported" in text for text in texts) == verbose
    log = path.read_text()
    assert " py.warnings WARNING UserWarning: The reported value is ignored because this `step=3` is already reported." in log
    assert "_trial.py" in log and "another warning" not in log


def test_console_of_a_real_driver_process(tmp_path):
    """Ray's and Python's own console handlers (a fresh process, as `run` has): nothing of the routed
    messages on stderr or stdout, all of them in driver.log."""
    script = f"""
import logging, sys, warnings
from pathlib import Path
import ray.tune  # Ray configures its loggers' console handler
from ray.tune import tune as tune_module
from ray.tune.execution import experiment_state, tune_controller
from ray.tune.utils import util
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_console import SNAPSHOT, _diverged, _emit_tune_messages, _report_twice
from ncstudy.study.console import study_log
logging.getLogger("ray.tune.tune").setLevel(logging.ERROR)  # as `run` sets it (ncstudy.cli)
loggers = {{"snapshot": experiment_state.logger, "failed": tune_controller.logger, "incomplete": tune_module.logger,
           "slow": util.logger}}
with study_log(Path({str(tmp_path)!r}), verbose=False):
    _emit_tune_messages(loggers)
    _report_twice()
experiment_state.logger.warning("after: snapshotting")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    console = done.stdout + done.stderr
    assert "after: snapshotting" in console  # Ray's console handler is there
    for noise in ("Experiment state snapshotting has been triggered", "Trial task failed", "Traceback",
                  "Trials did not complete", "is already reported", "performance bottleneck"):  # fmt: skip
        assert noise not in console, (noise, console)
    log = (tmp_path / DRIVER_LOG).read_text()
    assert all(n in log for n in ("snapshotting has been triggered", "Trial task failed", "Traceback", "did not complete", "step=3",
                                   "performance bottleneck"))


def test_error_line():
    assert error_line(TRACEBACK) == (
        "TrialDiverged: the trial diverged in epoch 4: loss = nan "
        "(lower train.lr, raise train.warmup_epochs or lower the regularizer weights)"
    )
    assert error_line("ray.exceptions.RayTaskError(TrialDiverged): boom") == "RayTaskError(TrialDiverged): boom"
    assert error_line("RuntimeError: see docs.ray.io: here") == "RuntimeError: see docs.ray.io: here"
    assert error_line("\n \n") == ""
    assert len(error_line("ValueError: " + "x" * 1000)) == 300


def _failed_trial(folder: Path, text: str | None) -> SimpleNamespace:
    staging = folder / "staging"
    staging.mkdir()
    if text is not None:
        (staging / "error.txt").write_text(text)
    return SimpleNamespace(
        trial_id="63b9d2dd", config={}, status="ERROR", last_result={"epoch": 3},
        error_file=str(staging / "error.txt") if text is not None else None, path=str(folder / "study" / "trial_0"),
    )  # fmt: skip


def test_failed_trial_line_gives_the_error_not_a_path(tmp_path, capsys):
    from ncstudy.study.progress import StudyProgress

    trial = _failed_trial(tmp_path, TRACEBACK)
    progress = StudyProgress(planned=2, epochs=10, metric="val_acc_all")
    with study_log(tmp_path, verbose=False) as path:
        progress.on_trial_error(0, [trial], trial)
    out = capsys.readouterr().out
    assert "trial 63b9d2dd FAILED at epoch 3/10: TrialDiverged: the trial diverged in epoch 4: loss = nan" in out
    assert "(1/2)" in out
    assert str(tmp_path) not in out and "error.txt" not in out
    log = path.read_text()  # where the whole error is: in the log only
    assert " ncstudy.study_log INFO trial 63b9d2dd failed at epoch 3/10: TrialDiverged: the trial diverged" in log
    assert str(Path(trial.path) / "error.txt") in log


def test_failed_trial_line_without_an_error_file(tmp_path, capsys):
    from ncstudy.study.progress import StudyProgress

    trial = _failed_trial(tmp_path, None)
    StudyProgress(planned=1, epochs=10, metric="val_acc_all").on_trial_error(0, [trial], trial)
    assert "trial 63b9d2dd FAILED at epoch 3/10: error (no message saved)  (1/1)" in capsys.readouterr().out


def test_a_finished_trial_line_gives_every_objective_accuracies_in_percent_a_loss_as_it_is(capsys):
    from ncstudy.study.progress import StudyProgress

    result = {"epoch": 10, "val_acc_many": 0.61, "val_acc_few": 0.125, "val_loss": 1.2345, "test_acc_all": 0.5}
    trial = SimpleNamespace(trial_id="63b9d2dd", last_result=result)
    StudyProgress(planned=2, epochs=10, metric=["val_acc_many", "val_acc_few", "val_loss"]).on_trial_complete(0, [trial], trial)
    assert "trial 63b9d2dd finished  val_acc_many 61.0 val_acc_few 12.5 val_loss 1.234  test: all 50.0" in capsys.readouterr().out


def test_unwritable_log_says_so_once(tmp_path, capsys, tune_loggers):
    loggers, consoles = tune_loggers
    with study_log(tmp_path / "gone", verbose=False):  # its folder does not exist
        loggers["snapshot"].warning(SNAPSHOT)
        loggers["snapshot"].warning(SNAPSHOT)
    err = capsys.readouterr().err
    assert err.count("note: cannot write") == 1 and "Traceback" not in err and "snapshotting" not in err
    assert consoles["snapshot"].lines == []


def test_mlflow_database_error_on_a_full_disk_goes_to_driver_log(tmp_path, mount):
    """A real MLflow sqlite store on a tmpfs that fills up: MLflow logs the SQLAlchemy traceback
    before it raises; the raised error is what the driver turns into one line (exit 75), so the
    traceback goes to driver.log, not to the console."""
    import mlflow
    from mlflow.entities import Metric
    from mlflow.exceptions import MlflowException

    full = mount(4)
    client = mlflow.MlflowClient(f"sqlite:///{full / 'mlflow.db'}")
    run = client.create_run(client.create_experiment("full"))
    console = _Console()
    mlflow_logger = logging.getLogger("mlflow.store.db.utils")
    mlflow_logger.addHandler(console)
    try:
        with open(full / "ballast", "wb") as ballast:
            with contextlib.suppress(OSError):
                while True:
                    ballast.write(b"\0" * 65536)
                    ballast.flush()
        metrics = [Metric(f"m{i}", float(i), 0, 0) for i in range(500)]
        with study_log(tmp_path, verbose=False) as path, pytest.raises(MlflowException, match="disk is full"):
            for step in range(50):  # sqlite may still have a free page or two
                client.log_batch(run.info.run_id, metrics=[Metric(m.key, m.value, 0, step) for m in metrics])
    finally:
        mlflow_logger.removeHandler(console)
    assert console.lines == []
    log = path.read_text()
    assert " mlflow.store.db.utils ERROR SQLAlchemy database error." in log and "database or disk is full" in log


@pytest.mark.parametrize(
    "module, message",
    [
        ("ray.tune.execution.insufficient_resources_manager",
         "Ignore this message if the cluster is autoscaling. No trial is running and no new trial has been started"),
        ("ray.tune.analysis.experiment_analysis", "Failed to fetch metrics for 1 trial(s):\n/tmp/x: FileNotFoundError"),
    ],
)  # fmt: skip
def test_tune_lines_said_by_ncstudy_on_a_cluster_go_to_driver_log(tmp_path, module, message):
    """The messages of a study that waits for nodes or stops before any report (what the waiting
    line of ncstudy.study.capacity and the summary say), through the logger of Tune's own module."""
    import importlib

    logger = importlib.import_module(module).logger
    console = _Console()
    logger.addHandler(console)
    try:
        with study_log(tmp_path, verbose=False) as path:
            logger.warning(message)
            logger.warning("something else")  # not ours: stays
    finally:
        logger.removeHandler(console)
    assert console.lines == ["something else"]
    assert f" {module} WARNING {message.splitlines()[0]}" in path.read_text()
