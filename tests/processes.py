"""The CLI in a subprocess, as a user runs it, with its own private local Ray (RAY_ADDRESS=local) in
a session of its own, so the tests can signal or kill it and everything it started."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from ncstudy.study.stale_checkpoints import named_checkpoints

ROOT = Path(__file__).resolve().parents[1]
# The quick start sized down: a trial takes seconds of training, the rest is Ray's start-up.
TINY = ["--set", "model.width=4", "--set", "model.feature_dim=16", "--set", "metrics.every=0",
        "--set", "search.max_concurrent=1"]  # fmt: skip


def cli(*args: str, results: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "RAY_ADDRESS": "local", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "ncstudy", *args, "--results", str(results)],
        cwd=ROOT, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


def pasted(command: str, cwd: Path, log: Path) -> subprocess.Popen:
    """A command ncstudy printed, run as a user pastes it into a shell (shell-split, in `cwd`); its
    `python` is this test's interpreter, the one an activated environment puts first on PATH."""
    argv = shlex.split(command)
    assert argv[0] == "python", command
    env = {**os.environ, "RAY_ADDRESS": "local", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, *argv[1:]], cwd=cwd, env=env, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


def wait_until(condition, process: subprocess.Popen, log: Path, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"exited before {what}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {what} in {timeout}s:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)


def wait_for(log: Path, text: str, process: subprocess.Popen, timeout: float = 300) -> None:
    wait_until(lambda: text in log.read_text(), process, log, repr(text), timeout)


def kill_session(pid: int) -> None:
    """SIGKILL every process of the session the CLI started (driver, its Ray, its workers)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:  # the group has ended; children in other groups are swept below
        pass
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        left = [p for p in os.listdir("/proc") if p.isdigit() and _session(int(p)) == pid]
        if not left:
            return
        for p in left:
            try:
                os.kill(int(p), signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(1)


def _session(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except (ProcessLookupError, PermissionError):
        return None


def stage_a_replaced_checkpoint(experiment: Path) -> list[Path]:
    """What a driver killed between Tune's checkpoint deletion and its state save leaves behind: each
    trial's checkpoint that the state names moved one index on, as if a newer one had replaced it."""
    state = sorted(experiment.glob("experiment_state-*.json"))[-1]
    named = [experiment / folder / name for folder, name in named_checkpoints(state) if (experiment / folder / name).exists()]
    for path in named:
        path.rename(path.with_name(f"checkpoint_{int(path.name.rsplit('_', 1)[1]) + 1:06d}"))
    return named
