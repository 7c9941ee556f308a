"""Ray nodes started by a test as processes of their own: free ports, the processes of a session
(read from /proc), and stopping them by signals to that session only, never with `ray stop` (which
stops every Ray on the machine, the pytest session's and other users' included).

Shared by tests/test_multinode.py (two `ray start` nodes) and tests/fake_cluster.py (Ray's
autoscaler with its fake multi-node provider, whose nodes live in the head's session).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

START_TIMEOUT_S = 180  # `ray start` of one node on 2 busy cores


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session_processes(sid: int) -> list[tuple[int, str]]:
    """(pid, command name) of the live processes of a session (zombies excluded)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        state, _, _, session = stat[stat.rindex(")") + 2 :].split()[:4]
        if int(session) == sid and state not in "ZX":
            found.append((int(entry), name))
    return found


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains `text` (our temp dir)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if text in cmdline and state not in "ZX":
            found.append(int(entry))
    return found


def signal_session(sid: int, names: set[str] | None, sig: int, exclude: set[str] = frozenset()) -> None:
    for pid, name in session_processes(sid):
        if (names is None or name in names) and name not in exclude:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


def wait_until_gone(sid: int, names: set[str] | None, timeout: float, exclude: set[str] = frozenset()) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not [n for _, n in session_processes(sid) if (names is None or n in names) and n not in exclude]:
            return True
        time.sleep(0.2)
    return False


def stop_session(sid: int) -> None:
    """Stop a Ray node's session the way `ray stop` orders it (raylets, then the other processes,
    then the GCS), SIGTERM first and SIGKILL after a grace period."""
    for names, exclude in (({"raylet"}, set()), (None, {"gcs_server"}), (None, set())):
        signal_session(sid, names, signal.SIGTERM, exclude)
        if not wait_until_gone(sid, names, 10, exclude):
            signal_session(sid, names, signal.SIGKILL, exclude)
            wait_until_gone(sid, names, 5, exclude)


def ray_start(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """`ray start ARGS` (this environment's `ray`) in a session of its own: (the session id of
    everything the node starts, its output); the test fails if the node does not start."""
    ray_cli = Path(sys.executable).with_name("ray")
    process = subprocess.Popen(
        [str(ray_cli) if ray_cli.exists() else shutil.which("ray"), "start", *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = process.communicate(timeout=START_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    assert process.returncode == 0, f"ray start {' '.join(args)} failed:\n{output[-3000:]}"
    return process.pid, output
