"""`ray up` of cluster/onprem.yaml (Ray's local provider, over SSH), played on this machine: then
`ray exec`, a study submitted as a Ray job the way docs/cluster.md says, and `ray down`.

The SSH machine is this one (tests/ssh_host.py): Debian's sshd on 127.0.0.1:22 in namespaces of its
own, a user and a key that the test makes. A copy of the shipped file, edited by name (a change of
the shipped file that breaks what is assumed here fails loudly), differs in:

- the addresses: head_ip and every 192.168.1.10 -> 127.0.0.1; no workers (the local provider keys
  its nodes by address, so a second node on 127.0.0.1 is not possible);
- ssh_user and ssh_private_key -> the test's;
- the three setup commands that download (uv, its Python 3.11 and the packages) -> one that links
  $HOME/ncstudy-venv-$(hostname -s) to this test's own environment, which holds the same pins.

Everything else runs as shipped: the file mounts with rsync (the token from ~/.ray/auth_token of
the `ray up` process, whose HOME is a folder of the test), `ray stop` and `ray start --head` with the
autoscaler config, the MLflow server on the head, `ray down`. A process named `raylet` of the SSH
user on the head must not survive `ray down`, and one outside the namespaces must survive both
`ray stop`s. `ray down` leaves the MLflow server running (it is no Ray process; the next `ray up`
finds it through /health). What only real machines show: several nodes over a LAN, NFS, GPUs, uv's
downloads, sudo (docs/cluster.md, "Your own machines").

The `ray` CLI runs with TMPDIR in the test's folder (ray._common.utils.get_default_system_temp_dir:
the local provider's cluster state and `ray down`'s config cache go there, not to /tmp/ray).
"""

from __future__ import annotations

import json
import os
import pwd
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
import yaml
from processes import kill_session
from ssh_host import SSHD, SSHHost

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "cluster" / "onprem.yaml"
SHIPPED_HEAD_IP = "192.168.1.10"
CLI_TIMEOUT_S = 300
ENV_LINK = "$HOME/ncstudy-venv-$(hostname -s)"
STUDY = [
    "python", "-m", "ncstudy", "run", "studies/quickstart.yaml", "--results", "/shared/ncstudy-results",
    "--set", "tracking.uri=http://127.0.0.1:5000", "--set", "search.num_samples=1", "--set", "train.epochs=2",
    "--set", "model.width=4", "--set", "model.feature_dim=16", "--set", "metrics.every=0",
]  # fmt: skip
RAY_NAMES = {"raylet", "gcs_server"}  # and every process whose command line says ray:: or ray/
# A GET addressed to 127.0.0.1:5000 (what MLflow's DNS-rebinding check allows for this head_ip), retried.
MLFLOW_HEALTH = """
import time, urllib.request
deadline = time.monotonic() + 240
while True:
    try:
        print(urllib.request.urlopen("http://127.0.0.1:5000/health", timeout=10).read().decode())
        break
    except OSError as e:
        if time.monotonic() > deadline:
            raise SystemExit(f"no answer in 240 s: {e}")
        time.sleep(0.5)
"""
# A process on the head named like Ray's raylet, as the SSH user, in the background.
INSIDE_DECOY = "cp $(command -v sleep) /tmp/raylet && (setsid /tmp/raylet 600 > /dev/null 2>&1 < /dev/null &)"

pytestmark = [
    pytest.mark.slow,  # ray up, a study as a Ray job, ray down: about a minute or two; CI runs -m slow
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux namespaces"),
    pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="creates a user and namespaces: root"),
    pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare"),
]


def only_command(commands: list[str], marker: str) -> int:
    """The index of the one command that contains `marker`."""
    found = [i for i, command in enumerate(commands) if marker in command]
    assert len(found) == 1, f"{SHIPPED.name}: expected one command with {marker!r}, found {len(found)}: {commands}"
    return found[0]


def config_for(host: SSHHost) -> dict:
    """The shipped file with this machine's address, user, key and environment (module docstring)."""
    config = yaml.safe_load(SHIPPED.read_text())
    assert config["provider"]["type"] == "local", config["provider"]
    config["provider"].update(head_ip="127.0.0.1", worker_ips=[])
    config["auth"] = {"ssh_user": host.user, "ssh_private_key": str(host.key)}

    setup = config["setup_commands"]
    venv = only_command(setup, "uv venv")
    assert ENV_LINK in setup[venv], setup[venv]
    setup[venv] = f"test -x {ENV_LINK}/bin/python || ln -s {shlex.quote(sys.prefix)} {ENV_LINK}"
    for marker in ("astral.sh/uv/install.sh", "uv pip install"):
        del setup[only_command(setup, marker)]
    assert not [command for command in setup if "uv " in command or "curl" in command], setup

    start = config["head_start_ray_commands"]
    for marker in ("ray start --head", "HEAD_IP="):
        index = only_command(start, marker)
        assert SHIPPED_HEAD_IP in start[index], start[index]
    config["head_start_ray_commands"] = [command.replace(SHIPPED_HEAD_IP, "127.0.0.1") for command in start]
    assert SHIPPED_HEAD_IP not in json.dumps(config), "an address left unchanged"
    return config


class RayCLI:
    """The `ray` CLI run from the repository root inside the SSH host's network, as a user runs it,
    each command in a session of its own (swept afterwards: ssh keeps control masters alive)."""

    def __init__(self, host: SSHHost, folder: Path, token: str):
        home = folder / "home"  # the `ray up` machine's home: ~/.ray/auth_token, and nothing else
        (home / ".ray").mkdir(parents=True)
        (home / ".ray" / "auth_token").write_text(token)
        (home / ".ray" / "auth_token").chmod(0o600)
        (folder / "tmp").mkdir()
        ray_cli = Path(sys.executable).with_name("ray")
        self.ray = str(ray_cli) if ray_cli.exists() else shutil.which("ray")
        self.host = host
        self.folder = folder
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "TMPDIR"))}
        self.env.update(HOME=str(home), TMPDIR=str(folder / "tmp"), RAY_AUTH_MODE="token", RAY_USAGE_STATS_ENABLED="0")
        self.sessions: list[int] = []

    def __call__(self, *args: str, env: dict | None = None) -> str:
        log = self.folder / f"{len(self.sessions):02d}-{args[0]}.log"
        with open(log, "w") as out:
            process = subprocess.Popen(
                [*self.host.nsenter(), self.ray, *args], cwd=REPO, env={**self.env, **(env or {})},
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.sessions.append(process.pid)
        try:
            process.wait(timeout=CLI_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            kill_session(process.pid)
            pytest.fail(f"ray {' '.join(args)}: not done in {CLI_TIMEOUT_S} s:\n{log.read_text()[-4000:]}")
        output = log.read_text()
        assert process.returncode == 0, f"ray {' '.join(args)} failed ({process.returncode}):\n{output[-4000:]}"
        return output

    def in_host(self, code: str, timeout: float = 60) -> str:
        """Python code run in the SSH host's network (the address a laptop on its LAN would use)."""
        command = [*self.host.nsenter(), sys.executable, "-c", code]
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=timeout)
        logs = "\n".join(path.read_text()[-2000:] for path in self.host.var_tmp.glob("*/server.log"))
        assert done.returncode == 0, f"{done.stderr[-3000:]}\nMLflow's log on the head:\n{logs}"
        return done.stdout

    def stop(self) -> None:
        for session in self.sessions:
            kill_session(session)


def start_decoy(host: SSHHost) -> subprocess.Popen:
    """A process of the SSH user outside the namespaces, named `raylet`: `ray stop` as that user on a
    shared process table would kill it (RAY_PROCESSES matches the name, as psutil gives it)."""
    account = pwd.getpwnam(host.user)
    decoy = host.home / "raylet"
    shutil.copy(shutil.which("sleep"), decoy)
    process = subprocess.Popen(
        [str(decoy), "600"], user=account.pw_uid, group=account.pw_gid, extra_groups=[], cwd="/",
        start_new_session=True,
    )  # fmt: skip
    assert Path(f"/proc/{process.pid}/comm").read_text().strip() == "raylet"  # psutil's name()
    return process


def processes_mentioning(text: str) -> list[str]:
    """Live processes on this machine whose command line contains `text` (this test's folder)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            zombie = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX"
        except (OSError, IndexError):
            continue
        if text in cmdline and not zombie and int(pid) != os.getpid():
            found.append(f"{pid} {cmdline[:200]}")
    return found


def ray_processes(host: SSHHost) -> list[str]:
    """The processes on the head that look like Ray's (the decoy of INSIDE_DECOY among them)."""
    return [
        f"{pid} {name} {cmdline[:200]}"
        for pid, name, cmdline in host.processes()
        if name in RAY_NAMES or "ray::" in cmdline or "/ray/" in cmdline
    ]


def test_ray_up_exec_job_and_down_of_the_onprem_file(tmp_path):
    missing = [tool for tool in (SSHD, "rsync", "ssh", "ssh-keygen", "nsenter", "useradd") if not shutil.which(tool)]
    assert not missing, f"missing {missing}: apt-get install openssh-server rsync (.ci/run does)"
    namespaces = ["unshare", "--net", "--pid", "--mount", "--fork", "true"]
    refused = subprocess.run(namespaces, check=False, capture_output=True, text=True, timeout=30)
    if refused.returncode:
        pytest.skip(f"this machine refuses new namespaces: {refused.stderr.strip()}")
    environment = [Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).resolve()]
    host = SSHHost(tmp_path / "host", user=f"ncrayup{os.getpid()}", reachable=environment)
    cli = RayCLI(host, tmp_path / "cli", token=secrets.token_hex(32))
    decoy = None
    phases: dict[str, float] = {}
    started = time.monotonic()

    def phase(name: str) -> None:
        phases[name] = time.monotonic() - started - sum(phases.values())

    try:
        host.start()
        decoy = start_decoy(host)
        copy = tmp_path / "onprem.yaml"
        copy.write_text(yaml.safe_dump(config_for(host), sort_keys=False))
        phase("ssh host")

        cli("up", "-y", "--no-config-cache", str(copy))
        phase("ray up")
        # The file mounts landed, the token among them, as the SSH user's files.
        assert (host.home / "ncstudy" / "ncstudy" / "__main__.py").is_file()
        assert (host.home / ".ray" / "auth_token").read_text() == (cli.folder / "home/.ray/auth_token").read_text()
        assert "RAY_AUTH_MODE=token" in (host.home / ".bashrc").read_text()

        # While MLflow starts in the background (its 4 uvicorn workers took 90 s on 2 busy cores): the
        # node, and a `raylet`-named process on the head that `ray down` must stop (as the decoy
        # outside must survive it).
        with ThreadPoolExecutor(1) as pool:
            health = pool.submit(cli.in_host, MLFLOW_HEALTH, timeout=300)
            status = cli("exec", str(copy), f"ray status && {INSIDE_DECOY}")
            nodes = status.split("Node status", 1)[-1].split("Pending:", 1)[0]  # Active: and Idle: (autoscaler v2)
            assert re.findall(r"^\s*(\d+) (\S+)$", nodes, re.MULTILINE) == [("1", "local.cluster.node")], status[-3000:]
            phase("ray exec")
            assert health.result().strip() == "OK", f"MLflow on the head answers {health.result()!r}"
        phase("MLflow up")

        job = "ncstudy-ray-up"
        dashboard = {"RAY_ADDRESS": "http://127.0.0.1:8265"}  # the file's dashboard, on head_ip
        submitted = cli("job", "submit", "--submission-id", job, "--working-dir", ".", "--", *STUDY, env=dashboard)
        assert f"Job '{job}' succeeded" in submitted, submitted[-4000:]  # and it exited 0 (1 if it failed)
        phase("job")
        folder = host.shared / "ncstudy-results" / "quickstart"
        trials = pd.read_parquet(folder / "trials.parquet")
        assert len(trials) == 1 and trials["test_acc_all"].between(0, 1).all(), trials
        assert (folder / "ray" / "tune").is_dir() and (folder / "report.md").is_file()
        assert not (host.shared / "ncstudy-results" / "mlflow.db").exists(), "tracked into sqlite, not the server"
        runs = cli.in_host(
            "import json, urllib.request\n"
            "get = lambda u, d=None: json.load(urllib.request.urlopen(urllib.request.Request("
            "'http://127.0.0.1:5000/api/2.0/mlflow/' + u, data=d, headers={'Content-Type': 'application/json'})))\n"
            "e = get('experiments/get-by-name?experiment_name=quickstart')['experiment']['experiment_id']\n"
            "print(len(get('runs/search', json.dumps({'experiment_ids': [e]}).encode())['runs']))\n"
        )  # fmt: skip
        assert int(runs) == 2, f"MLflow runs of the study (parent and one trial): {runs}"

        before = ray_processes(host)
        assert [p for p in before if p.endswith(" raylet /tmp/raylet 600")], f"no decoy on the head: {before}"
        cli("down", "-y", str(copy))
        phase("ray down")
        deadline = time.monotonic() + 30
        while ray_processes(host) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert ray_processes(host) == [], "Ray processes left on the head after ray down"
        assert decoy.poll() is None, "ray stop on the head killed a process outside it"
        # What `ray down` leaves: sshd, and the MLflow server (no Ray process; the next `ray up` finds it on /health)
        assert any("mlflow server" in cmdline for _, _, cmdline in host.processes()), host.processes()
    finally:
        if decoy is not None:
            decoy.kill()
            decoy.wait(timeout=30)
        cli.stop()
        left = host.stop()
        phase("stop")
        print("ray up test, seconds:", ", ".join(f"{k} {v:.0f}" for k, v in phases.items()))
    left += processes_mentioning(str(tmp_path))
    assert left == [], f"left behind: {left}"
    with pytest.raises(KeyError):
        pwd.getpwnam(host.user)
