"""What the processes Ray starts for every trial import: their imports are most of a short trial's
fixed cost on a busy node (benchmarks/ray_overhead.py), so heavy modules stay out of them."""

import subprocess
import sys

import pytest

# The trial actors and the Train controller unpickle ncstudy.study.trial's functions; a single-worker
# trial's actor and the Train workers also import the training code, and ncstudy.models needs
# torchvision only for the ImageNet backbones. MLflow is the driver's alone (ncstudy.study.trial_runs).
HEAVY = {
    "ncstudy.study.trial": [
        "ncstudy.study.train_worker", "ncstudy.study.driver", "ncstudy.outputs.report", "optuna", "matplotlib", "torchvision",
        "mlflow", "sqlalchemy",
    ],
    "ncstudy.study.in_trial": ["torchvision", "matplotlib", "mlflow", "sqlalchemy", "optuna", "ncstudy.study.driver"],
    "ncstudy.study.train_worker": ["torchvision", "matplotlib", "mlflow", "sqlalchemy", "optuna", "ncstudy.study.driver"],
}  # fmt: skip


@pytest.mark.parametrize("module", sorted(HEAVY))
def test_per_trial_processes_import_no_heavy_modules(module):
    check = f"import sys, {module}; print(','.join(m for m in {HEAVY[module]!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "", f"importing {module} loads {loaded}"

