"""A Ray cluster that grows and shrinks on this machine: Ray's real autoscaler (the monitor that
`ray start --head --autoscaling-config` starts) driving its fake multi-node provider, whose "cloud
instances" are Ray nodes started as local processes. Ray's own autoscaler tests use it
(ray.cluster_utils.AutoscalingCluster); the provider refuses to load without RAY_FAKE_CLUSTER=1 in
the environment of `ray start` (ray/autoscaler/_private/fake_multi_node/node_provider.py).

The autoscaling config is built from cluster/aws-gpu.yaml: its head and worker node types (their
names, the head's CPU count, the workers' min/max counts) and upscaling speed, with the resources
scaled to this machine (workers of 1 CPU and no GPU, at most 2) and an idle timeout of 12 s instead
of 10 minutes. The autoscaler's loop runs every second and a worker whose raylet stopped answering
is terminated after 5 s (AUTOSCALER_UPDATE_INTERVAL_S, AUTOSCALER_HEARTBEAT_TIMEOUT_S; 5 s and 30 s
by default, ray/autoscaler/_private/constants.py).

What stays on this machine and in this test:
- the head gets free ports, a temp dir of its own under /tmp (short: Unix socket paths), token
  authentication from the test's token file (tests/test_multinode.py says why), and its own
  session; the provider starts each worker node from the autoscaler's process (`ray._private.node.Node`),
  so the workers' processes live in the head's session and in the head's temp dir (a worker node
  without a temp dir of its own takes the head's, ray/_private/node.py `_init_temp`);
- RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 makes `ray.util.get_node_ip_address()` answer 127.0.0.1 in
  every process of the cluster (ray/_private/services.py), so the worker nodes, which the provider
  starts without a node address, bind the loopback too (`ray start --address` would refuse that
  switch, but no worker node here is started that way);
- everything is stopped by signals to the head's session (tests/ray_nodes.py), never `ray stop`.

A worker node's processes all carry RAY_OVERRIDE_NODE_ID_FOR_TESTING=<its node id> in their
environment (the provider sets it for the raylet, which passes its environment on to the workers
and agents it starts): `kill_node` SIGKILLs exactly those, as a spot reclaim takes a machine away.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from ray_nodes import free_port, processes_mentioning, ray_start, session_processes, stop_session

REPO = Path(__file__).resolve().parents[1]
FAKE_HEAD_TYPE = "ray.head.default"  # the fake provider's head node type (FAKE_HEAD_NODE_TYPE)


def autoscaling_config(cluster_file: Path, gcs_address: str, max_workers: int = 2, worker_cpus: int = 1,
                       idle_timeout_minutes: float = 0.2) -> dict:
    """The node types of a cluster-launcher file for the fake provider: the head as the file has it
    (no CPU for trials), each worker type with `worker_cpus` CPUs instead of its CPUs and GPUs (the
    study asks for no GPU), at most `max_workers` of it and of the cluster; no setup or start
    commands (the provider starts Ray itself)."""
    launcher = yaml.safe_load(cluster_file.read_text())
    head_type = launcher["head_node_type"]
    assert head_type == FAKE_HEAD_TYPE, f"{cluster_file}: the fake provider's head type is {FAKE_HEAD_TYPE}"
    node_types = {}
    for name, node_type in launcher["available_node_types"].items():
        if name == head_type:
            resources = {"CPU": node_type["resources"].get("CPU", 0)}
            node_types[name] = {"resources": resources, "node_config": {}, "max_workers": 0}
        else:
            resources = {"CPU": worker_cpus, "object_store_memory": 150 * 1024**2}
            node_types[name] = {
                "resources": resources, "node_config": {}, "min_workers": node_type.get("min_workers", 0),
                "max_workers": min(node_type["max_workers"], max_workers),
            }
    return {
        "cluster_name": "ncstudy-fake",
        "max_workers": min(launcher["max_workers"], max_workers),
        "upscaling_speed": launcher.get("upscaling_speed", 1.0),
        "idle_timeout_minutes": idle_timeout_minutes,
        "provider": {
            "type": "fake_multinode", "gcs_address": gcs_address, "use_node_id_as_ip": True,
            "disable_node_updaters": True, "disable_launch_config_check": True,
        },
        "available_node_types": node_types,
        "head_node_type": head_type,
        "auth": {}, "docker": {}, "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "rsync_exclude": [], "rsync_filter": [], "initialization_commands": [], "setup_commands": [],
        "head_setup_commands": [], "worker_setup_commands": [], "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }  # fmt: skip


class FakeCluster:
    """The head (`RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config=...`) in its own session;
    the autoscaler adds and removes the worker nodes."""

    def __init__(self, token_file: Path, cluster_file: Path = REPO / "cluster" / "aws-gpu.yaml", **config):
        self.temp_dir = tempfile.mkdtemp(prefix="ncas-", dir="/tmp")  # short: Unix socket paths
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.config = autoscaling_config(cluster_file, self.address, **config)
        self.session: int | None = None
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
        env.update(
            RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file), RAY_USAGE_STATS_ENABLED="0",
            RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",  # every node on 127.0.0.1 (module docstring)
        )  # fmt: skip
        self.env = env  # for the head, and for a driver that joins it

    def start(self) -> None:
        config_file = Path(self.temp_dir) / "autoscaling.json"
        config_file.write_text(json.dumps(self.config))
        head_env = {
            **self.env, "RAY_FAKE_CLUSTER": "1",
            # the autoscaler's loop every second (5 s by default), as ray.cluster_utils.AutoscalingCluster
            # sets it; a node whose raylet stopped answering is terminated after 5 s instead of 30
            "AUTOSCALER_UPDATE_INTERVAL_S": "1", "AUTOSCALER_HEARTBEAT_TIMEOUT_S": "5",
        }  # fmt: skip
        self.session, _ = ray_start(
            ["--head", f"--port={self.port}", "--node-ip-address=127.0.0.1", f"--autoscaling-config={config_file}",
             "--num-cpus=0", "--num-gpus=0", f"--object-store-memory={150 * 1024**2}", "--include-dashboard=false",
             f"--dashboard-agent-listen-port={free_port()}", f"--ray-client-server-port={free_port()}",
             f"--temp-dir={self.temp_dir}", "--disable-usage-stats"],
            head_env,
        )  # fmt: skip

    def probe(self, code: str, timeout: float = 60) -> object:
        """Run `code` in a driver joined to the cluster (`ray`, `json` imported); its last line, JSON."""
        script = f"import json, sys, ray\nray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False)\n{code}\n"
        done = subprocess.run([sys.executable, "-c", script, self.address], env=self.env, capture_output=True,
                              text=True, timeout=timeout, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    def worker_nodes(self) -> list[str]:
        """The alive worker nodes' ids (the head excluded)."""
        return self.probe(
            "print(json.dumps([n['NodeID'] for n in ray.nodes() if n['Alive'] and 'node:__internal_head__' not in n['Resources']]))"
        )  # type: ignore[return-value]

    def node_processes(self, node_id: str) -> list[int]:
        """The processes of one worker node: those of the head's session whose environment names it."""
        wanted = f"RAY_OVERRIDE_NODE_ID_FOR_TESTING={node_id}".encode()
        found = []
        for pid, _ in session_processes(self.session or -1):
            try:
                if wanted in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                    found.append(pid)
            except OSError:
                continue
        return found

    def kill_node(self, node_id: str) -> list[int]:
        """SIGKILL every process of a worker node at once (a spot reclaim); returns their ids."""
        pids = self.node_processes(node_id)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return pids

    def stop(self) -> list[str]:
        """Stop the head's session (its worker nodes with it); what is still alive afterwards."""
        if self.session is not None:
            stop_session(self.session)
        left = [f"{pid} {name}" for pid, name in session_processes(self.session or -1)]
        left += [f"{pid} (mentions {self.temp_dir})" for pid in processes_mentioning(self.temp_dir)]
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        return left
