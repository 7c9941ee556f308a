"""Every Ray cluster-launcher file under cluster/ passes Ray's own checks, offline.

`ray up FILE` (ray.autoscaler._private.commands.create_or_update_cluster, then _bootstrap_config)
does, in this order:

1. yaml.safe_load, and refuse a provider type Ray does not know;
2. prepare_config: fillout_defaults (the provider's defaults.yaml under the file), merge_setup_commands,
   validate_docker_config, fill_node_type_min_max_workers; for `type: local` prepare_local first;
3. import the provider (boto3 / googleapiclient) and fillout_available_node_types_resources, which on
   AWS asks EC2 for the CPUs and GPUs of each instance type;
4. validate_config: Ray's JSON schema (ray-schema.json: unknown keys and wrong types are errors)
   plus its cross-field checks (head_node_type, min/max workers);
5. the provider's bootstrap_config (AWS: IAM role, key pair, subnets, security group; GCP: project,
   service account, SSH key, subnet).

Steps 3 and 5 call the cloud and need SDKs this project does not install, so for aws and gcp we
run steps 1, 2 and 4 with Ray's real functions, exactly as `ray up` chains them, nothing mocked;
step 3 only fills `resources` a node type leaves out, and a test below requires every node type to
declare them. For `type: local`, steps 3 and 5 are offline, so that file goes through the whole
_bootstrap_config (without writing its cache file). Node configs themselves (EC2 RunInstances and
GCE instance bodies) are passed to the cloud verbatim; nothing offline checks them.

Beyond Ray's checks: the `# CHANGE:` markers a user must act on, services bound to private
addresses only, the pinned project install, and the shared results folder.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from packaging.requirements import Requirement
from ray.autoscaler._private.commands import _bootstrap_config
from ray.autoscaler._private.providers import _NODE_PROVIDERS
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[1]
CLUSTER_DIR = REPO / "cluster"
CLUSTER_FILES = sorted(CLUSTER_DIR.glob("*.yaml"))
SHARED_RESULTS = "/shared/ncstudy-results"
# The node's own (first, private) address, as the aws and gcp files compute it on the head.
OWN_ADDRESS = "$(hostname -I | awk '{print $1}')"
COMMAND_KEYS = (
    "initialization_commands",
    "setup_commands",
    "head_setup_commands",
    "worker_setup_commands",
    "head_start_ray_commands",
    "worker_start_ray_commands",
)
# Per provider type: the settings whose line (or the comment block right above it) must say
# `# CHANGE:`: where the cluster runs, who logs in, and the shared storage.
CHANGE_MARKERS = {
    "aws": {
        "region": r"^\s*region:",
        "zones": r"^\s*availability_zone:",
        "AMI": r"^\s*ImageId:",
        "SSH user": r"^\s*ssh_user:",
        "shared storage (EFS)": r"mount -t nfs",
    },
    "gcp": {
        "region": r"^\s*region:",
        "zone": r"^\s*availability_zone:",
        "project": r"^\s*project_id:",
        "SSH user": r"^\s*ssh_user:",
        "shared storage (Filestore)": r"mount -t nfs",
    },
    "local": {
        "head address": r"^\s*head_ip:",
        "worker addresses": r"^\s*worker_ips:",
        "SSH user": r"^\s*ssh_user:",
        "SSH key": r"^\s*ssh_private_key:",
        "shared storage (NFS export)": r"mount -t nfs",
        "dashboard address": r"--dashboard-host=",
        "MLflow address": r"HEAD_IP=",
        "machine sizes": r"^\s*ncstudy_resources_per_machine:",
    },
}


def ray_up_offline(config: dict) -> dict:
    """What `ray up` does with a config before it contacts a provider (module docstring)."""
    config = copy.deepcopy(config)
    provider = config["provider"]["type"]
    if provider not in _NODE_PROVIDERS:
        raise ValueError(f"unknown provider type {provider!r}")
    if provider == "local":
        return _bootstrap_config(config, no_config_cache=True)
    prepared = prepare_config(config)
    validate_config(prepared)
    return prepared


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def commands(config: dict) -> list[str]:
    return [command for key in COMMAND_KEYS for command in (config.get(key) or [])]


def uncommented(path: Path) -> str:
    """The file without its comments (a `#` after a space or at the start of a line)."""
    return "\n".join(re.sub(r"(^|\s)#.*$", "", line) for line in path.read_text().splitlines())


@pytest.fixture(params=CLUSTER_FILES, ids=[p.name for p in CLUSTER_FILES])
def cluster_file(request) -> Path:
    return request.param


def test_the_three_cluster_files_exist():
    assert {p.name for p in CLUSTER_FILES} >= {"aws-gpu.yaml", "gcp-gpu.yaml", "onprem.yaml"}


def test_ray_launcher_accepts_the_file(cluster_file):
    prepared = ray_up_offline(load(cluster_file))
    assert prepared["head_node_type"] in prepared["available_node_types"]
    for name, node_type in prepared["available_node_types"].items():
        assert node_type["max_workers"] >= node_type.get("min_workers", 0), name


# A broken copy of each file must be refused: (what is wrong, how to break it, providers it applies to).
BREAKAGES = [
    ("unknown top-level key", lambda c: c.update(ncstudy_results="/shared/ncstudy-results"), None),
    ("misspelt top-level key", lambda c: c.update(worker_start_ray_command=c.pop("worker_start_ray_commands")), None),
    ("wrong type", lambda c: c.update(idle_timeout_minutes="ten"), None),
    ("unknown auth key", lambda c: c["auth"].update(ssh_key="~/.ssh/id_rsa"), None),
    ("a command not a string", lambda c: c["head_start_ray_commands"].append(["ray", "start"]), None),
    (
        "misspelt node-type key",
        lambda c: c["available_node_types"][c["head_node_type"]].update(min_worker=0),
        {"aws", "gcp"},
    ),
    (
        "fractional resources",
        lambda c: c["available_node_types"][c["head_node_type"]].update(resources={"CPU": 0.5}),
        {"aws", "gcp"},
    ),
    ("head type missing", lambda c: c.update(head_node_type="no.such.type"), {"aws", "gcp"}),
]


@pytest.mark.parametrize("what, breaks, providers", BREAKAGES, ids=[b[0] for b in BREAKAGES])
def test_a_broken_copy_is_rejected(cluster_file, tmp_path, what, breaks, providers):
    config = load(cluster_file)
    if providers is not None and config["provider"]["type"] not in providers:
        pytest.skip(f"{what}: not applicable to provider {config['provider']['type']}")
    ray_up_offline(config)  # the original passes ...
    breaks(config)
    broken = tmp_path / cluster_file.name
    broken.write_text(yaml.safe_dump(config))
    with pytest.raises((jsonschema.ValidationError, ValueError)):  # ... the broken copy on disk does not
        ray_up_offline(load(broken))


def change_marker_problems(path: Path) -> list[str]:
    """Every value only the user knows is marked `# CHANGE:` on its line or in the comment block
    right above it (above the `- >-` opener for a folded command)."""
    provider = load(path)["provider"]["type"]
    if provider not in CHANGE_MARKERS:
        return [f"{path.name}: add the CHANGE markers of provider {provider!r} to CHANGE_MARKERS"]
    lines = path.read_text().splitlines()
    problems = []
    for label, pattern in CHANGE_MARKERS[provider].items():
        hits = [i for i, line in enumerate(lines) if re.search(pattern, line) and not line.lstrip().startswith("#")]
        if not hits:
            problems.append(f"{path.name}: no line sets the {label} ({pattern})")
        for i in hits:
            block = [lines[i]]
            j = i - 1
            if j >= 0 and re.fullmatch(r"\s*-\s*[>|][+-]?\s*", lines[j]):
                j -= 1
            while j >= 0 and lines[j].lstrip().startswith("#"):
                block.append(lines[j])
                j -= 1
            if not any("# CHANGE:" in line for line in block):
                problems.append(f"{path.name}:{i + 1}: the {label} needs a `# CHANGE:` comment: {lines[i].strip()}")
    return problems


def _address_problem(value: str, config: dict, command: str) -> str | None:
    """None if a bind address is the node's private address or head_ip; else what is wrong."""
    if value.startswith("$") and not value.startswith("$("):
        assignment = re.search(rf"\b{re.escape(value[1:])}=(\$\([^)]*\)|\S+)", command)
        if not assignment:
            return f"{value} is never set in: {command}"
        value = assignment.group(1)
    if value in {"0.0.0.0", "::", "[::]", "*"}:
        return f"public bind address {value} in: {command}"
    if value in {"127.0.0.1", "localhost"}:
        return f"{value} is reachable from the head only (workers log to MLflow, read Ray's state API): {command}"
    if value == OWN_ADDRESS or value == config["provider"].get("head_ip"):
        return None
    return f"bind address {value} is neither the node's private address nor head_ip: {command}"


def bind_address_problems(path: Path) -> list[str]:
    """The Ray dashboard and MLflow listen on a private address: not 0.0.0.0 (public), not
    127.0.0.1 (the workers could not reach them); checked after Ray merged its defaults, whose
    head start command binds the dashboard to 0.0.0.0."""
    problems = []
    text = uncommented(path)
    if "0.0.0.0" in text or "[::]" in text:
        problems.append(f"{path.name}: a public bind address")
    config = load(path)
    prepared = ray_up_offline(config)
    problems += [f"{path.name}: 0.0.0.0 in {c}" for c in commands(prepared) if "0.0.0.0" in c]

    head_starts = [c for c in prepared["head_start_ray_commands"] if "ray start" in c and "--head" in c]
    if len(head_starts) != 1:
        return problems + [f"{path.name}: not one `ray start --head`: {head_starts}"]
    dashboard = re.search(r"--dashboard-host[= ](\$\([^)]*\)|\S+)", head_starts[0])
    if not dashboard:
        problems.append(f"{path.name}: --dashboard-host unset, Ray's 127.0.0.1 is unreachable from the workers")
    else:
        problems.append(_address_problem(dashboard.group(1), config, head_starts[0]))
    if config["provider"]["type"] == "local":
        node_ip = re.search(r"--node-ip-address[= ](\S+)", head_starts[0])
        if not node_ip or node_ip.group(1) != config["provider"]["head_ip"]:
            problems.append(f"{path.name}: --node-ip-address of the head is not head_ip")

    mlflow = [c for c in prepared["head_start_ray_commands"] if "mlflow server" in c]
    if len(mlflow) != 1:
        return problems + [f"{path.name}: the head must start one MLflow tracking server"]
    host = re.search(r"--host (\S+)", mlflow[0])
    if not host:
        problems.append(f"{path.name}: mlflow server without --host binds 127.0.0.1, unreachable from the workers")
    else:
        problems.append(_address_problem(host.group(1), config, mlflow[0]))
    return [p for p in problems if p]


def test_change_markers(cluster_file):
    assert change_marker_problems(cluster_file) == []


def test_dashboard_and_mlflow_bind_private_addresses(cluster_file):
    assert bind_address_problems(cluster_file) == []


def test_mlflow_keeps_sqlite_local_and_artifacts_shared(cluster_file):
    mlflow = [c for c in load(cluster_file)["head_start_ray_commands"] if "mlflow server" in c][0]
    assert "--port 5000" in mlflow
    backend = re.search(r"--backend-store-uri (\S+)", mlflow).group(1)
    assert backend.startswith("sqlite:///") and "/shared/" not in backend, "sqlite must live on the head's own disk"
    assert f"--artifacts-destination {SHARED_RESULTS}/mlartifacts" in mlflow


@pytest.mark.parametrize(
    "what, old, new",
    [
        ("dashboard on every interface", "--dashboard-host=", "--dashboard-host=0.0.0.0 --x="),
        ("MLflow on every interface", "--host $HEAD_IP", "--host 0.0.0.0"),
        ("MLflow on loopback only", "--host $HEAD_IP", "--host 127.0.0.1"),
        ("dashboard left at Ray's default", "--dashboard-host=", "--no-such-flag="),
    ],
)
def test_a_public_or_loopback_bind_is_caught(cluster_file, tmp_path, what, old, new):
    text = cluster_file.read_text()
    assert old in text
    broken = tmp_path / cluster_file.name
    broken.write_text(text.replace(old, new))
    assert bind_address_problems(broken), what


def test_a_missing_change_marker_is_caught(cluster_file, tmp_path):
    lines = cluster_file.read_text().splitlines()
    first_marked = next(i for i, line in enumerate(lines) if "# CHANGE:" in line and not line.lstrip().startswith("#"))
    lines[first_marked] = lines[first_marked].split("# CHANGE:")[0].rstrip()
    broken = tmp_path / cluster_file.name
    broken.write_text("\n".join(lines) + "\n")
    assert change_marker_problems(broken)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_every_command_is_valid_bash(cluster_file):
    """Ray runs each command as `bash --login -c -i '... && (COMMAND)'` on the node: a quoting slip in
    a folded YAML command would surface only there."""
    for command in commands(ray_up_offline(load(cluster_file))):
        checked = subprocess.run(["bash", "-n", "-c", f"true && ({command})"], capture_output=True, text=True)
        assert checked.returncode == 0, f"{cluster_file.name}: {checked.stderr.strip()}\n{command}"


def test_workers_join_with_the_token(cluster_file):
    """Ray 2.59+ token authentication: each node needs RAY_AUTH_MODE=token and the same token file
    (tests/test_multinode.py shows a node without them is refused)."""
    config = load(cluster_file)
    assert config["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"
    assert any("export RAY_AUTH_MODE=token" in c and ".bashrc" in c for c in config["setup_commands"])
    assert any("--address=$RAY_HEAD_IP:6379" in c for c in config["worker_start_ray_commands"])


def test_setup_installs_the_mounted_project_with_its_pins(cluster_file):
    config = load(cluster_file)
    mounts = config["file_mounts"]
    for remote, local in mounts.items():
        if not local.startswith("~"):
            assert (REPO / local).exists(), f"file_mounts {remote}: {local} is not in the repository"
    for needed in ("ncstudy", "studies", "pyproject.toml", "README.md"):  # pip install -e reads the last two
        assert mounts.get(f"~/ncstudy/{needed}") == f"./{needed}", needed

    installs = [c for c in config["setup_commands"] if "pip install" in c and " -e $HOME/ncstudy" in c]
    assert len(installs) == 1, "one `pip install -e` of the mounted project on every node"
    pins = dict(re.findall(r'"([A-Za-z0-9_-]+)(?:\[[^\]]*\])?==([^"]+)"', installs[0]))
    assert set(pins) >= {"torch", "torchvision", "ray"}, pins
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    requirements = {Requirement(d).name: Requirement(d) for d in dependencies}
    for name, version in pins.items():
        assert requirements[name].specifier.contains(version), f"{name}=={version} is outside {requirements[name]}"
    assert pins["ray"] == ray.__version__, (
        f"the cluster installs ray {pins['ray']}, these files were validated with ray {ray.__version__}: "
        "the launcher on your laptop and the cluster must run the same Ray; update the pins"
    )


def test_node_types_declare_resources_and_gpu_workers_autoscale(cluster_file):
    config = load(cluster_file)
    if config["provider"]["type"] == "local":
        assert "available_node_types" not in config  # prepare_local refuses them
        assert config["provider"]["worker_ips"]
        return
    types = config["available_node_types"]
    for name, node_type in types.items():
        assert "resources" in node_type, f"{name}: declare resources (offline, nothing fills them in)"
    head = types[config["head_node_type"]]
    assert head["resources"].get("CPU") == 0 and not head["resources"].get("GPU"), "no trial on the head"
    workers = [t for n, t in types.items() if n != config["head_node_type"]]
    assert workers and all(t["resources"].get("GPU", 0) >= 1 for t in workers)
    assert all(t.get("min_workers", 0) == 0 and t["max_workers"] >= 1 for t in workers), "autoscaling from zero"


def test_every_node_mounts_the_shared_results_folder(cluster_file):
    config = load(cluster_file)
    setup = config["setup_commands"]
    mount = [c for c in setup if "mount -t nfs" in c]
    assert len(mount) == 1 and mount[0].rstrip(")").endswith(" /shared"), mount
    assert "mountpoint -q /shared" in mount[0], "idempotent: ray up runs the setup again"
    assert setup.index(mount[0]) < min(i for i, c in enumerate(setup) if "pip install" in c)
    assert any(f"mkdir -p {SHARED_RESULTS}" in c for c in setup)
    assert not config.get("worker_setup_commands"), "workers get the same setup as the head"


def test_docs_follow_the_files():
    guide = (REPO / "docs" / "cluster.md").read_text()
    for name in ("aws-gpu.yaml", "gcp-gpu.yaml", "onprem.yaml"):
        assert f"cluster/{name}" in guide
    for phrase in ("ray up", "ray job submit", "ray job logs", "ray down", "ssh", "-L", "gpus_per_worker",
                   f"--results {SHARED_RESULTS}", "tracking.uri=http://", "RAY_AUTH_MODE=token"):
        assert phrase in guide, phrase
