"""One trial as Ray runs it, by one of two Tune function trainables (docs/ray.md, "Which path a trial
takes"):

- `run_single_worker_trial` (`resources.num_workers: 1`): the engine trains inside the Tune trial
  actor itself (ncstudy.study.in_trial), which holds the trial's CPU and GPU; Tune's checkpoints,
  FailureConfig and restore give fault tolerance and resume. One process per trial.
- `run_trial` (`num_workers > 1`): DDP. Ray Train V2 (Ray's default since 2.5x) no longer accepts
  `Tuner(trainer)`, so the trainable builds a TorchTrainer per trial and forwards rank 0's reports
  to Tune with `TuneReportCallback` (ray.tune.integration.ray_train). The trainable itself asks for
  no CPU: the Train controller actor is free (num_cpus=0) and the workers hold the trial's
  resources, so `max_concurrent` trials of `num_workers` workers need max_concurrent * num_workers
  * cpus_per_worker CPUs.

Neither trainable touches MLflow: the driver logs each trial's run from what Tune receives
(ncstudy.study.trial_runs). This module is what the trial actors and the Train controller import
(they unpickle the trainables and `train_worker` by reference), so it stays light: no study driver,
search, tracking, results or report code (MLflow, pandas tables, Optuna, matplotlib); the training
code is imported only where training runs (inside `train_worker` in the Train workers, inside
`run_single_worker_trial`). Each of these processes starts on a busy machine, and its imports are
most of a short trial's fixed cost (benchmarks/ray_overhead.py).
"""

from __future__ import annotations

import time
from typing import Any

from ray import tune
from ray.train import CheckpointConfig
from ray.train import FailureConfig as TrainFailureConfig
from ray.train import RunConfig as TrainRunConfig
from ray.train import ScalingConfig
from ray.train._internal.session import _TrainSession, get_session
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from ncstudy.config import StudyConfig, with_params
from ncstudy.data.build import source_key

# The trial driver only waits on its TorchTrainer; the workers hold the CPUs. Tune refuses an empty
# request, so the driver asks for a little memory instead of a CPU that a worker would then lack.
TRIAL_DRIVER_RESOURCES = {"cpu": 0, "memory": 64 * 1024**2}


def train_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train's per-worker function: `ncstudy.study.train_worker.train_loop_per_worker`, imported here so that
    only the workers, not the controller that forwards this function, load the training code."""
    from ncstudy.study.train_worker import train_loop_per_worker

    train_loop_per_worker(loop_config)


def run_trial(
    params: dict[str, Any], *, base: dict[str, Any], ray_storage: str, shared_source: tuple[tuple, list] | None = None
) -> None:
    """One trial: the base config with the sampled `params`, trained by a TorchTrainer.

    `shared_source` is (source key, [object ref]) of the data set the driver decoded once; the ref
    sits in a list so that Tune hands it over unresolved and the workers read it zero-copy."""
    study, source = _config_and_source(params, base, shared_source)
    trial_id = tune.get_context().get_trial_id()
    loop_config: dict[str, Any] = {"study": study.model_dump(mode="json")}
    if source is not None:
        loop_config["source"] = source
    res = study.resources
    per_worker = {"CPU": res.cpus_per_worker, **({"GPU": res.gpus_per_worker} if res.gpus_per_worker else {})}
    trainer = TorchTrainer(
        train_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=res.num_workers, use_gpu=res.gpus_per_worker > 0, resources_per_worker=per_worker
        ),
        run_config=TrainRunConfig(
            name=f"train_{trial_id}",
            storage_path=ray_storage,
            callbacks=[TuneReportCallback()],
            failure_config=TrainFailureConfig(max_failures=res.max_failures, controller_failure_limit=0),
            checkpoint_config=CheckpointConfig(num_to_keep=1),
        ),
    )
    # Tune's session of this trial, held here: Tune clears its global reference when it stops the trial.
    session = get_session()
    trainer.fit()
    wait_for_forwarded_reports(session)


def run_single_worker_trial(
    params: dict[str, Any], *, base: dict[str, Any], shared_source: tuple[tuple, list] | None = None
) -> None:
    """One single-worker trial (`resources.num_workers: 1`), trained in this Tune trial actor by
    ncstudy.study.in_trial: no TorchTrainer, no Train controller or worker processes."""
    study, source = _config_and_source(params, base, shared_source)
    from ncstudy.study.in_trial import train_in_trial  # the engine (torch): only in the trial actor that trains

    train_in_trial(study, source)


def _config_and_source(params, base, shared_source) -> tuple[StudyConfig, list | None]:
    """The trial's config and, when the driver decoded this trial's data set, the object-store
    reference to it."""
    study = with_params(StudyConfig.model_validate(base), params)
    source = shared_source[1] if shared_source is not None and shared_source[0] == source_key(study.data) else None
    return study, source


def wait_for_forwarded_reports(session: _TrainSession | None, timeout_s: float = 60.0, settle_s: float = 0.1) -> None:
    """Return only once Tune has taken every report TuneReportCallback forwarded.

    Works around a race in Ray 2.60's Tune/Train V2 bridge (ray.train._internal.session): the
    callback forwards rank 0's last report through a Ray queue, and when this function returns, Tune
    reports a final duplicate result into the trial's size-1 result queue. If Tune's main thread takes
    the forwarded report from the Ray queue after that duplicate is queued, it blocks forever putting
    it into the full result queue and the study hangs (seen here once: a 4-epoch CIFAR trial on 2
    cores, trial driver stuck in `_report_training_result`). So wait until both queues have been
    seen empty twice, `settle_s` apart."""
    forwarded = getattr(session, "_inter_actor_queue", None) if session else None
    if forwarded is None:
        return
    deadline = time.monotonic() + timeout_s
    quiet = 0
    while quiet < 2 and time.monotonic() < deadline:
        quiet = quiet + 1 if forwarded.empty() and session.result_queue.empty() else 0
        time.sleep(settle_s)
