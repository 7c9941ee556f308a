"""Ray itself for a study: join a cluster or start a local instance, and refuse, before anything is
written, what could never run (a trial larger than the cluster) or lose results (a results folder
that other nodes cannot see).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ncstudy.config import StudyConfig
from ncstudy.errors import StudyError
from ncstudy.machine import cluster_address, local_cpus, local_gpus, unreachable, where_named
from ncstudy.study.interrupt import hangup_ignored_by_children

# Settings for Ray Train V2, given to every process of the study's Ray job:
# - Train V2 workers put each report on a queue of size 1 that the controller drains once per health
#   check (2 s by default), so every epoch waited up to 2 s for its report to be taken (0.2 s per
#   report measured at 0.25 s, 0.01-0.02 s at 0.05 s). Polling is cheap: at 0.05 s the controller
#   used 6.6 CPU-s in a 78 s CIFAR trial, its start-up included, and the epochs ran as fast as at
#   1 s (2 CPU cores). 0.1 s sits between.
# - The preemption watcher is an extra actor per trial that only logs node drains (spot reclaims);
#   ncstudy recovers from lost nodes through checkpoints and max_failures instead, and on a small
#   node every process started per trial delays the trial's start.
RAY_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}


def init_ray(address: str | None, verbose: bool = False) -> bool:
    """Start a private local Ray, or join the cluster named by `resources.address` or `$RAY_ADDRESS`
    (`auto`: the one running on this machine; `local`: a private one), and say which in one line.
    Never joins another program's Ray uninvited: a study that did died with it.
    Returns True when the cluster may grow (an existing cluster, possibly autoscaling)."""
    if ray.is_initialized():
        _say_which("the Ray instance this process already runs")
        return False
    # Ray's token authentication is on by default for a local instance; its warning says so on
    # every start, which docs/ray.md's trust section says once.
    logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
    quiet = {
        "logging_level": logging.INFO if verbose else logging.WARNING,
        "log_to_driver": verbose,
        "runtime_env": {"env_vars": RAY_ENV},
    }
    configured, address = address, cluster_address(address)
    if address:
        _join(address, configured, quiet)
        _say_which(f"joined the cluster at {address}")
        return True
    with hangup_ignored_by_children():  # a closing terminal stops the study, not its Ray (ncstudy.study.interrupt)
        context = ray.init(
            address="local", num_cpus=os.cpu_count(), include_dashboard=True, dashboard_host="127.0.0.1", **quiet
        )
    dashboard = f"; dashboard http://{context.dashboard_url}" if context.dashboard_url else ""
    _say_which(f"a private local instance started by ncstudy{dashboard}")
    return False


def check_reachable(study: StudyConfig) -> None:
    """Before the data is read: a cluster address where nothing answers is one line, in seconds."""
    address = cluster_address(study.resources.address)
    problem = unreachable(address) if address and not ray.is_initialized() else None
    if problem:
        raise _unreachable_error(study.resources.address, problem)


def _unreachable_error(configured: str | None, problem: str) -> StudyError:
    return StudyError(
        f"{where_named(configured)}: no Ray cluster answers there ({problem}); start one (`ray start --head`, "
        "or `ray up` a cluster file) and give the address it prints, or name `local` for a private Ray on this machine"
    )


def _join(address: str, configured: str | None, settings: dict) -> None:
    """ray.init on a cluster, or one line saying which address did not answer and what to do."""
    problem = unreachable(address)
    if problem is None:
        try:
            ray.init(address=address, **settings)
            return
        except ConnectionError as error:  # `auto` with no cluster here, or a port that is not Ray's
            problem = str(error).strip().splitlines()[0] if str(error).strip() else "no Ray cluster found"
    raise _unreachable_error(configured, problem)


def _say_which(which: str) -> None:
    nodes = [n for n in ray.nodes() if n["Alive"]]
    have = ray.cluster_resources()
    print(
        f"ray: {which} ({len(nodes)} node{'s' if len(nodes) != 1 else ''}, "
        f"{have.get('CPU', 0):g} CPUs, {have.get('GPU', 0):g} GPUs)",
        flush=True,
    )


def trial_needs(study: StudyConfig) -> dict[str, float]:
    res = study.resources
    return {"CPU": res.num_workers * res.cpus_per_worker, "GPU": res.num_workers * res.gpus_per_worker}


def _lacking(need: dict[str, float], have: dict[str, float]) -> list[str]:
    return [kind for kind, amount in need.items() if amount > have.get(kind, 0.0) + 1e-9]


def _refusal(need: dict[str, float], have: dict[str, float], where: str) -> str:
    return (
        f"resources: a trial needs {need['CPU']:g} CPU and {need['GPU']:g} GPU (num_workers x per-worker), "
        f"{where} has {have.get('CPU', 0):g} CPU and {have.get('GPU', 0):g} GPU"
    )


def _fix(lacking: list[str]) -> str:
    if "GPU" in lacking:
        return "--smoke runs a smaller copy fitted to this machine, or --set resources.gpus_per_worker=0"
    return "lower resources.cpus_per_worker or num_workers (or --smoke: a smaller copy fitted to this machine)"


def check_local_resources(study: StudyConfig) -> None:
    """Before Ray starts: when the study would start a private local Ray, refuse a trial that this
    machine's CPUs and GPUs cannot hold (a study sized for GPUs run on a laptop), so the refusal
    comes before any Ray process and writes nothing. A cluster is asked once joined (check_resources)."""
    if cluster_address(study.resources.address) or ray.is_initialized():
        return
    need = trial_needs(study)
    have = {"CPU": float(local_cpus()), "GPU": float(local_gpus()) if need["GPU"] else 0.0}
    lacking = _lacking(need, have)
    if lacking:
        raise StudyError(f"{_refusal(need, have, 'this machine (a local Ray)')}; {_fix(lacking)}")


def check_resources(study: StudyConfig, may_grow: bool) -> int:
    """Refuse a trial that can never be scheduled here, instead of waiting for it forever; return how
    many trials may run at once: `search.max_concurrent`, capped (with a note) to what a cluster that
    cannot grow holds, so that surplus trials wait instead of failing their worker-group start. On a
    cluster that may grow a trial larger than it is only noted: trials wait for nodes, and stop the
    study when none comes (ncstudy.study.capacity)."""
    need = trial_needs(study)
    have = ray.cluster_resources()
    lacking = _lacking(need, have)
    message = _refusal(need, have, "the Ray cluster")
    if lacking and may_grow:
        print(
            f"note: {message} now; trials wait for nodes (an autoscaler may add them), at most "
            f"resources.node_wait_s={study.resources.node_wait_s:g} s while none is being added",
            flush=True,
        )
    if may_grow:
        return study.search.max_concurrent
    if lacking:
        raise StudyError(f"{message}; {_fix(lacking)}")
    fits = min(int(have.get(kind, 0.0) / amount + 1e-9) for kind, amount in need.items() if amount > 0)
    if study.search.max_concurrent > fits:
        print(
            f"note: search.max_concurrent {study.search.max_concurrent} lowered to {fits}: a trial holds "
            f"{need['CPU']:g} CPU and {need['GPU']:g} GPU, this Ray instance has {have.get('CPU', 0):g} CPU "
            f"and {have.get('GPU', 0):g} GPU",
            flush=True,
        )
        return fits
    return study.search.max_concurrent


@ray.remote(num_cpus=0)
def _sees(path: str) -> bool:
    return Path(path).exists()


def check_shared_results(results: Path, tracking_uri: str | None = None) -> None:
    """On a cluster of several nodes every node must see the results folder (Ray Train checkpoints,
    the MLflow sqlite store): a marker written here is looked for from every other alive node."""
    here = ray.get_runtime_context().get_node_id()
    others = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeID"] != here]
    if not others:
        return
    created = not results.exists()
    results.mkdir(parents=True, exist_ok=True)
    marker = results / f".ncstudy-shared-{os.getpid()}"
    marker.write_text("")
    try:
        strategy = NodeAffinitySchedulingStrategy
        seen = ray.get([_sees.options(scheduling_strategy=strategy(node, soft=False)).remote(str(marker.resolve())) for node in others])
    finally:
        marker.unlink()
    if not tracking_uri:
        print(
            f"warning: {len(others) + 1} Ray nodes log to the sqlite file under {results}; with many trials "
            "prefer an MLflow tracking server (tracking.uri; docs/cluster.md, Running a study on a GPU cluster)",
            flush=True,
        )
    if not all(seen):
        if created:
            results.rmdir()
        raise StudyError(
            f"--results {results}: {seen.count(False)} of {len(others)} other Ray nodes cannot see this folder; "
            "on a cluster the results must be on storage every node mounts at the same path (NFS, EFS)"
        )
