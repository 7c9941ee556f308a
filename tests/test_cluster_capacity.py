"""`--cluster FILE`: a study checked against what a Ray cluster-launcher file can hold, before Ray
starts (ncstudy.study.cluster_capacity: the placement rule and where it comes from in Ray's source)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ncstudy.cli import main
from ncstudy.config import StudyConfig
from ncstudy.errors import StudyError
from ncstudy.study.cluster_capacity import capacity_of, check_cluster_file
from ncstudy.study_file import read_study

ROOT = Path(__file__).resolve().parents[1]
AWS = ROOT / "cluster" / "aws-gpu.yaml"
CLUSTER_FILES = sorted((ROOT / "cluster").glob("*.yaml"))
STUDIES = sorted((ROOT / "studies").glob("*.yaml"))
CIFAR_LT = ROOT / "studies" / "cifar_lt.yaml"
QUICKSTART = str(ROOT / "studies" / "quickstart.yaml")


def study(num_workers: int = 1, cpus: float = 1, gpus: float = 0, max_concurrent: int = 1) -> StudyConfig:
    resources = {"num_workers": num_workers, "cpus_per_worker": cpus, "gpus_per_worker": gpus}
    search = {"max_concurrent": max_concurrent}
    return StudyConfig.model_validate({"name": "t", "resources": resources, "search": search})


def cluster(tmp_path: Path, node_types: dict, max_workers: int = 2) -> Path:
    """An AWS cluster file of the given node types, "head" the head's (only what the check reads)."""
    config = {"max_workers": max_workers, "provider": {"type": "aws"}, "head_node_type": "head"}
    config["available_node_types"] = node_types
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def node(cpu: float, gpu: float, max_workers: int | None = None) -> dict:
    limit = {"max_workers": max_workers} if max_workers is not None else {}
    return {"resources": {"CPU": cpu, "GPU": gpu}, "node_config": {}, **limit}


# A CPU head, two small GPU nodes and one large one, at most 2 worker nodes in all.
MIXED = {"head": node(0, 0), "small": node(4, 1, max_workers=2), "large": node(16, 4, max_workers=1)}


def test_the_cli_refuses_a_trial_no_node_type_holds_in_one_line():
    command = [sys.executable, "-m", "ncstudy", "validate", "studies/cifar_lt.yaml"]
    command += ["--cluster", "cluster/aws-gpu.yaml", "--set", "resources.cpus_per_worker=16"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines() == [done.stderr.strip()], "one line"
    assert done.stderr.startswith("error: resources: a trial worker needs 16 CPU and 0.25 GPU")
    assert "its largest, ray.worker.gpu, has 8 CPU and 1 GPU" in done.stderr


def test_run_refuses_before_ray_starts_and_writes_nothing(tmp_path, capsys, monkeypatch):
    import ray

    def no_ray(*args, **kwargs):
        raise AssertionError("the refusal must come before Ray starts")

    monkeypatch.setattr(ray, "init", no_ray)
    monkeypatch.setattr("ncstudy.study.driver.run_study", no_ray)  # this session may hold a Ray already (conftest)
    results = tmp_path / "results"
    args = ["run", str(CIFAR_LT), "--cluster", str(AWS), "--results", str(results)]
    for setting in ("num_workers=5", "cpus_per_worker=8", "gpus_per_worker=1"):
        args += ["--set", f"resources.{setting}"]
    assert main(args) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: resources: a trial needs 5 workers of 8 CPU and 1 GPU;"), error
    assert "holds at most 4 at its largest" in error and "\n" not in error
    assert not results.exists()


@pytest.mark.parametrize("study_file", STUDIES, ids=[p.stem for p in STUDIES])
@pytest.mark.parametrize("cluster_file", CLUSTER_FILES, ids=[p.stem for p in CLUSTER_FILES])
def test_the_shipped_studies_fit_the_shipped_clusters(study_file, cluster_file):
    """The GPU studies are sized for these clusters (studies/cifar_lt.yaml: 4 trials on one g5.2xlarge;
    imagenet_lt: 4 one-GPU workers, the 4 workers of aws/gcp), the CPU ones fit anywhere."""
    summary, warnings = check_cluster_file(read_study(study_file, []).study, cluster_file.relative_to(ROOT))
    assert warnings == []
    assert summary.startswith(f"--cluster cluster/{cluster_file.name}: a trial (")


def test_the_shipped_cloud_files_hold_what_their_comments_say():
    """aws-gpu.yaml: one g5.2xlarge runs 4 cifar_lt trials (8 CPU / 2, 1 GPU / 0.25), up to 4 workers;
    the head offers 0 CPU, so it holds no trial."""
    cifar = read_study(CIFAR_LT, []).study
    capacity = capacity_of(cifar, AWS)
    assert capacity.per_node == {"ray.head.default": 0, "ray.worker.gpu": 4}
    assert capacity.nodes == {"ray.worker.gpu": 4} and capacity.trials_at_once == 16
    onprem = capacity_of(cifar, ROOT / "cluster" / "onprem.yaml")
    assert onprem.nodes == {"machine": 3}, "the head machine runs trials too"


@pytest.mark.parametrize(
    "trial, per_node, workers, at_once",
    [
        # 8 CPU + 1 GPU: only the large type holds one (4 of them); the global max_workers 2 then
        # allows one small node, which holds none.
        (study(1, 8, 1), {"head": 0, "small": 0, "large": 2}, 2, 2),
        # 2 CPU + 1 GPU: the large node first (4), then one small (1): 5 workers, one 3-worker trial.
        (study(3, 2, 1), {"head": 0, "small": 1, "large": 4}, 5, 1),
        # workers of one trial may span nodes (PACK): 5 one-worker trials or one 5-worker trial.
        (study(5, 2, 1), {"head": 0, "small": 1, "large": 4}, 5, 1),
        (study(1, 0.5, 0.25), {"head": 0, "small": 4, "large": 16}, 20, 20),
    ],
)
def test_the_placement_rule_on_hand_made_node_types(tmp_path, trial, per_node, workers, at_once):
    capacity = capacity_of(trial, cluster(tmp_path, MIXED))
    assert (capacity.per_node, capacity.workers_at_most, capacity.trials_at_once) == (per_node, workers, at_once)
    check_cluster_file(trial, cluster(tmp_path, MIXED))  # fits: no refusal


def test_fractions_count_as_ray_counts_them(tmp_path):
    """In units of 1/10000 (7 / 0.07 is 99.99999999999999 in floats, 100 workers for Ray)."""
    assert capacity_of(study(1, 0.07), cluster(tmp_path, {"head": node(7, 0)}, max_workers=0)).workers_at_most == 100


def test_a_worker_no_node_type_holds_is_refused_naming_the_largest(tmp_path):
    refusal = r"no node type of --cluster \S+ holds one, its largest, large, has 16 CPU and 4 GPU"
    with pytest.raises(StudyError, match=refusal):
        check_cluster_file(study(1, 32, 1), cluster(tmp_path, MIXED))


def test_a_trial_larger_than_the_cluster_at_its_largest_is_refused(tmp_path):
    with pytest.raises(StudyError, match=r"a trial needs 6 workers of 2 CPU and 1 GPU; --cluster \S+ holds at most 5"):
        check_cluster_file(study(6, 2, 1), cluster(tmp_path, MIXED))
    # per-type max_workers bind as well as the global one: 4 large nodes allowed globally, 1 by its type
    assert capacity_of(study(6, 2, 1), cluster(tmp_path, MIXED, max_workers=4)).workers_at_most == 6


def test_the_head_counts_and_so_do_extra_nodes_of_its_type(tmp_path):
    types = {"head": node(8, 0), "gpu": node(8, 1, max_workers=1)}
    assert capacity_of(study(3, 4), cluster(tmp_path, types, max_workers=1)).nodes == {"head": 1, "gpu": 1}
    types["head"]["max_workers"] = 2
    capacity = capacity_of(study(1, 4), cluster(tmp_path, types, max_workers=3))
    assert capacity.nodes == {"head": 3, "gpu": 1} and capacity.workers_at_most == 8


def test_missing_resources_come_from_the_instance_type(tmp_path):
    t4_pair = {"acceleratorType": "nvidia-tesla-t4", "acceleratorCount": 2}
    types = {
        "head": {"resources": {"CPU": 0}, "node_config": {"InstanceType": "m6i.xlarge"}},  # GPU 0 from the table
        "gpu": {"resources": {}, "node_config": {"InstanceType": "g5.2xlarge"}, "max_workers": 1},
        "t4": {"resources": {}, "node_config": {"machineType": "n1-standard-8", "guestAccelerators": [t4_pair]}},
    }
    capacity = capacity_of(study(1, 4, 1), cluster(tmp_path, types, max_workers=2))
    assert capacity.per_node == {"head": 0, "gpu": 1, "t4": 2}
    types["gpu"]["node_config"]["InstanceType"] = "x9.huge"
    with pytest.raises(StudyError, match=r"node type gpu states no CPU and GPU .* x9.huge is not known"):
        capacity_of(study(), cluster(tmp_path, types))


def test_max_concurrent_beyond_the_cluster_draws_one_warning():
    assert check_cluster_file(read_study(CIFAR_LT, ["search.max_concurrent=16"]).study, AWS)[1] == []
    warnings = check_cluster_file(read_study(CIFAR_LT, ["search.max_concurrent=17"]).study, AWS)[1]
    assert warnings == [
        (
            f"warning: search.max_concurrent 17: --cluster {AWS} runs at most 16 trials at once at its largest "
            "(16 workers: 4 x ray.worker.gpu, 4 each); the others wait"
        )
    ]


def test_validate_prints_the_warning_and_still_exits_0(capsys):
    """In-process, so Ray's import (which `validate` needs to build the data) is shared with the suite."""
    assert main(["validate", QUICKSTART, "--cluster", str(AWS), "--set", "search.max_concurrent=40"]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert [line for line in lines if line.startswith("warning:")] == [
        (
            f"warning: search.max_concurrent 40: --cluster {AWS} runs at most 32 trials at once at its largest "
            "(32 workers: 4 x ray.worker.gpu, 8 each); the others wait"
        )
    ]
    summary = f"# --cluster {AWS}: a trial (1 worker of 1 CPU and 0 GPU) fits; at its largest the cluster runs 32"
    assert any(line.startswith(summary) for line in lines)


BAD_FILES = {
    "missing": None,
    "not YAML": "provider: [aws\n",
    "not a mapping": "- aws\n",
    "no provider": "max_workers: 2\n",
    "no head type": "provider: {type: aws}\navailable_node_types: {}\nhead_node_type: head\n",
    "resources not numbers": "provider: {type: aws}\nhead_node_type: h\navailable_node_types: {h: {resources: {CPU: many}}}\n",
    "local without sizes": "provider: {type: local, head_ip: 10.0.0.1, worker_ips: [10.0.0.2]}\n",
}


@pytest.mark.parametrize("text", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_a_missing_or_malformed_cluster_file_is_one_line_naming_it(tmp_path, capsys, text):
    path = tmp_path / "bad-cluster.yaml"
    if text is not None:
        path.write_text(text)
    assert main(["validate", QUICKSTART, "--cluster", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"error: --cluster {path}: ") and captured.err.count("\n") == 1, captured.err


def test_the_check_imports_no_ray():
    """It runs before Ray starts, and `validate` refuses before Ray's import (seconds on a small machine)."""
    check = "import sys, ncstudy.study.cluster_capacity; print([m for m in ('ray', 'torch') if m in sys.modules])"
    loaded = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True, timeout=60)
    assert loaded.stdout.strip() == "[]"
