"""What a Ray cluster-launcher file can hold, read before Ray starts: `run` and `validate` with
`--cluster FILE` refuse a study whose trial no cluster of that file could ever place (a trial that
would otherwise sit PENDING while the autoscaler finds no node type for it), and warn when
`search.max_concurrent` trials can never run at once there (docs/cluster.md, "Check a study against
the cluster file"). No Ray is imported: this reads YAML.

How Ray places a trial (Ray 2.60 source):

- A worker needs `{"CPU": cpus_per_worker, "GPU": gpus_per_worker}`, zero entries dropped
  (ray/air/config.py, ScalingConfig._resources_per_worker_not_none). With `num_workers: 1` the Tune
  trial actor itself holds it (ncstudy.study.driver: `tune.with_resources`, one bundle); with more,
  Ray Train V2 reserves one placement group of `num_workers` such bundles
  (ray/train/v2/_internal/execution/worker_group/worker_group.py, `placement_group(bundles=
  [resources_per_worker] * num_workers, strategy=placement_strategy)`) with ScalingConfig's default
  strategy "PACK" (ray/air/config.py). PACK packs bundles "into as few nodes as possible" but may
  spread them over several; only STRICT_PACK keeps them on one node (ray/util/placement_group.py).
  A placement group is reserved whole or not at all. The trial's own driver and the Train
  controller ask for no CPU (ncstudy.study.trial); memory is not checked (the files do not state it).
- So a node of type t holds `k_t = min over the kinds a worker needs of floor(have_t / need)`
  workers, a worker fits t when `k_t >= 1`, and the cluster at its largest holds `W` workers: the
  head's k plus, for at most the global `max_workers` worker nodes (default 2: ray/autoscaler/aws/
  defaults.yaml) with at most each type's `max_workers` of that type (default: the global one; 0
  for the head's type: ray/autoscaler/_private/util.py, fill_node_type_min_max_workers), the node
  types that hold the most workers first (identical bundles: taking the fullest nodes first is best).
- A trial fits when some node type holds one worker and `W >= num_workers`; otherwise it is refused,
  naming the largest node type. Any free worker slot serves any trial, so `W // num_workers` trials
  run at once at most; `search.max_concurrent` above that draws a warning.

A node type's resources are what the file states; a key it leaves out comes from the size of its
instance type (KNOWN_SIZES), as `ray up` on AWS fills them from EC2 (AWSNodeProvider.
fillout_available_node_types_resources, stated keys winning; on GCP Ray fills in TPUs only, so a GCP
file should state them, as the shipped one does). A local provider (cluster/onprem.yaml)
has no node types (Ray's prepare_local refuses them; each machine's Ray detects its own CPUs and GPUs
when it starts), so the file states one size for every machine in
`provider.ncstudy_resources_per_machine` (Ray ignores provider keys it does not know).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from ncstudy.config import StudyConfig
from ncstudy.errors import StudyError, excerpt

# vCPUs and GPUs of the instance types the shipped files name or suggest, from the providers' tables:
# https://aws.amazon.com/ec2/instance-types/ (m6i, g5, g6) and
# https://cloud.google.com/compute/docs/general-purpose-machines, .../accelerator-optimized-machines (n1, n2, g2).
KNOWN_SIZES: dict[str, dict[str, float]] = {
    "m6i.xlarge": {"CPU": 4, "GPU": 0},
    "g5.2xlarge": {"CPU": 8, "GPU": 1},  # 1 x A10G
    "g6.2xlarge": {"CPU": 8, "GPU": 1},  # 1 x L4
    "n2-standard-4": {"CPU": 4, "GPU": 0},
    "n1-standard-8": {"CPU": 8, "GPU": 0},  # GPUs attached as guestAccelerators
    "g2-standard-8": {"CPU": 8, "GPU": 1},  # 1 x L4
}
LOCAL_SIZE_KEY = "ncstudy_resources_per_machine"
DEFAULT_MAX_WORKERS = 2  # ray/autoscaler/{aws,gcp}/defaults.yaml
UNITS = 10_000  # Ray counts a resource in units of 1/10000 (ray/_private/ray_constants.py, MIN_RESOURCE_GRANULARITY)


@dataclass(frozen=True)
class NodeType:
    name: str
    resources: dict[str, float]
    max_nodes: int  # at the cluster's largest, the head counted


@dataclass(frozen=True)
class Capacity:
    """A study's trial against a cluster file: the workers a node of each type holds, and the nodes of
    the cluster at its largest that hold any."""

    worker: dict[str, float]
    num_workers: int
    per_node: dict[str, int]  # node type -> workers one node of it holds
    nodes: dict[str, int]  # node type -> its nodes at the cluster's largest that hold workers
    largest: NodeType

    @property
    def workers_at_most(self) -> int:
        return sum(self.per_node[name] * count for name, count in self.nodes.items())

    @property
    def trials_at_once(self) -> int:
        return self.workers_at_most // self.num_workers


def check_cluster_file(study: StudyConfig, path: Path) -> tuple[str, list[str]]:
    """Refuse (StudyError, one line) a trial of `study` that no cluster of the file at `path` can place;
    else return a one-line summary and the warnings (each a line starting `warning:`)."""
    capacity = capacity_of(study, path)
    worker = _amounts(capacity.worker)
    if not any(capacity.per_node.values()):
        have = _amounts(capacity.largest.resources)
        raise StudyError(
            f"resources: a trial worker needs {worker} (cpus_per_worker, gpus_per_worker); no node type of "
            f"--cluster {path} holds one, its largest, {capacity.largest.name}, has {have}; lower "
            "resources.cpus_per_worker / gpus_per_worker, or add a larger node type to the file"
        )
    if capacity.workers_at_most < study.resources.num_workers:
        raise StudyError(
            f"resources: a trial needs {_workers(study.resources.num_workers)} of {worker}; --cluster {path} holds "
            f"at most {capacity.workers_at_most} at its largest ({_spread(capacity)}; largest node type "
            f"{capacity.largest.name}: {_amounts(capacity.largest.resources)}); lower resources.num_workers, "
            "or raise max_workers in the file"
        )
    at_once = capacity.trials_at_once
    trials = f"{at_once} trial{'s' if at_once != 1 else ''}"
    summary = (
        f"--cluster {path}: a trial ({_workers(study.resources.num_workers)} of {worker}) fits; "
        f"at its largest the cluster runs {trials} at once ({_spread(capacity)})"
    )
    warnings = []
    if study.search.max_concurrent > at_once:
        warnings.append(
            f"warning: search.max_concurrent {study.search.max_concurrent}: --cluster {path} runs at most {trials} "
            f"at once at its largest ({_spread(capacity)}); the others wait"
        )
    return summary, warnings


def capacity_of(study: StudyConfig, path: Path) -> Capacity:
    res = study.resources
    worker = {kind: amount for kind, amount in (("CPU", res.cpus_per_worker), ("GPU", res.gpus_per_worker)) if amount}
    types, budget = node_types(path)
    per_node = {t.name: _workers_per_node(t.resources, worker) for t in types}
    head = types[0]
    nodes = {head.name: 1}
    for node_type in sorted(types, key=lambda t: per_node[t.name], reverse=True):
        taken = min(node_type.max_nodes - (node_type is head), budget)
        nodes[node_type.name] = nodes.get(node_type.name, 0) + taken
        budget -= taken
    holding = {name: count for name, count in nodes.items() if count and per_node[name]}
    kinds = ("GPU", "CPU") if "GPU" in worker else ("CPU", "GPU")
    largest = max(types, key=lambda t: tuple(t.resources.get(kind, 0) for kind in kinds))
    return Capacity(worker, res.num_workers, per_node, holding, largest)


def node_types(path: Path) -> tuple[list[NodeType], int]:
    """The file's node types, the head's first (max_nodes counts the head itself), and the global
    max_workers; a missing or malformed file is a StudyError naming it."""
    config = _load(path)
    provider = config.get("provider")
    if not isinstance(provider, dict) or "type" not in provider:
        raise StudyError(f"--cluster {path}: no provider.type; is this a Ray cluster-launcher file?")
    if provider["type"] == "local":
        return _local_machines(path, config, provider)
    available, head_name = config.get("available_node_types"), config.get("head_node_type")
    if not isinstance(available, dict) or not isinstance(head_name, str) or head_name not in available:
        raise StudyError(f"--cluster {path}: available_node_types must be a mapping that includes head_node_type")
    global_max = _count(path, "max_workers", config.get("max_workers", DEFAULT_MAX_WORKERS))
    types = []
    for name in [head_name, *(n for n in available if n != head_name)]:
        node_type = available[name] if isinstance(available[name], dict) else {}
        default = 0 if name == head_name else global_max
        nodes = _count(path, f"{name}.max_workers", node_type.get("max_workers", default)) + (name == head_name)
        types.append(NodeType(name, _node_resources(path, name, node_type), nodes))
    return types, global_max


def _local_machines(path: Path, config: dict, provider: dict) -> tuple[list[NodeType], int]:
    """A local provider: the head and its worker machines (at most max_workers of them, as Ray's
    prepare_manual caps them), all of the size the file states."""
    size = provider.get(LOCAL_SIZE_KEY)
    if size is None:
        raise StudyError(
            f"--cluster {path}: states no machine sizes (Ray's local provider detects them when it starts); add "
            f'provider.{LOCAL_SIZE_KEY}: {{"CPU": N, "GPU": M}}, the CPUs and GPUs of each machine (the smallest)'
        )
    resources = _resources(path, f"provider.{LOCAL_SIZE_KEY}", size)
    ips = provider.get("worker_ips") or []
    workers = _count(path, "max_workers", config.get("max_workers", len(ips)))
    workers = min(workers, len(ips)) if "coordinator_address" not in provider else workers
    return [NodeType("machine", resources, 1 + workers)], workers


def _node_resources(path: Path, name: str, node_type: dict) -> dict[str, float]:
    stated = _resources(path, f"{name}.resources", node_type.get("resources", {}))
    if {"CPU", "GPU"} <= set(stated):
        return stated
    node_config = node_type.get("node_config") or {}
    instance = node_config.get("InstanceType") or node_config.get("machineType")
    if instance not in KNOWN_SIZES:
        raise StudyError(
            f"--cluster {path}: node type {name} states no CPU and GPU in its resources, and the size of "
            f'{instance or "its instance type"} is not known here; add resources: {{"CPU": N, "GPU": M}} to it'
        )
    attached = node_config.get("guestAccelerators") or []
    accelerators = sum(a.get("acceleratorCount", 0) for a in attached if isinstance(a, dict))
    known = {**KNOWN_SIZES[instance], **({"GPU": accelerators} if accelerators else {})}
    return {**known, **stated}


def _workers_per_node(have: dict[str, float], worker: dict[str, float]) -> int:
    return min(round(have.get(kind, 0) * UNITS) // max(1, round(amount * UNITS)) for kind, amount in worker.items())


def _load(path: Path) -> dict:
    try:
        config = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise StudyError(f"--cluster {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise StudyError(f"--cluster {path}: cannot read it ({error})") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise StudyError(f"--cluster {path}: not valid YAML{where}") from None
    if not isinstance(config, dict):
        raise StudyError(f"--cluster {path}: not a Ray cluster-launcher file (a YAML mapping)")
    return config


def _resources(path: Path, key: str, value: object) -> dict[str, float]:
    valid = isinstance(value, dict) and all(
        isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in value.values()
    )
    if not valid:
        raise StudyError(f"--cluster {path}: {key} must map resource names to numbers >= 0, not {excerpt(value)}")
    return {str(k): float(v) for k, v in value.items()}


def _count(path: Path, key: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise StudyError(f"--cluster {path}: {key} must be a whole number >= 0, not {excerpt(value)}")
    return value


def _spread(capacity: Capacity) -> str:
    parts = [f"{count} x {name}, {capacity.per_node[name]} each" for name, count in capacity.nodes.items()]
    return f"{capacity.workers_at_most} workers: {'; '.join(parts)}" if parts else "0 workers"


def _workers(count: int) -> str:
    return f"{count} worker{'s' if count != 1 else ''}"


def _amounts(resources: dict[str, float]) -> str:
    return f"{resources.get('CPU', 0):g} CPU and {resources.get('GPU', 0):g} GPU"
