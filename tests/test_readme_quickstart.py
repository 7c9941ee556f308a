"""README's quick-start table is what the quick start prints: README's own command, run here, gives
the table between the `quickstart-table` markers, digit for digit. A run is exactly repeatable on
one machine (tests/test_engine_ray.py checks determinism); docs/getting-started/quickstart.md says
why another CPU may print other last digits."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def readme_table() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- quickstart-table -->\n(.*?)\n<!-- /quickstart-table -->", text, re.S)
    assert match, "README.md has no quickstart-table markers"
    return match.group(1).strip()


def readme_run_command() -> list[str]:
    """The quick-start line's last command (after the install): `python -m ncstudy run studies/quickstart.yaml`."""
    line = next(line for line in (ROOT / "README.md").read_text().splitlines() if "ncstudy run studies/quickstart.yaml" in line)
    argv = shlex.split(line.split("&&")[-1])
    assert argv[:3] == ["python", "-m", "ncstudy"], argv
    return [sys.executable, *argv[1:]]


def test_the_readme_table_is_what_the_quick_start_prints(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    done = subprocess.run([*readme_run_command(), "--results", str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    printed = (tmp_path / "quickstart" / "tables" / "shot.md").read_text().strip()
    assert printed in done.stdout
    assert printed == readme_table(), f"README.md's quick-start table differs from this run's:\n{printed}"
