"""Every file in studies/ runs as a laptop user runs it: `python -m ncstudy run studies/X.yaml --smoke`
with nothing else but the data root, through the real driver (Ray Tune, Optuna, Ray Train, MLflow, the
report) in a subprocess with its own local Ray. The quick start's smoke copy runs in the default suite,
the others under -m slow.

The data root ($NCSTUDY_DATA) is a folder made here, as a user's would look: the real CIFAR-10
Parquet tables (cifar10-jpeg/, linked from CI's data root), a CIFAR-100-shaped table pair made of
those CIFAR-10 images (cifar100-jpeg/: 100 classes, 120 images each; CIFAR-100 cannot be downloaded
here) and a small ImageNet-LT-style image folder with its lists (imagenet/, ImageNet_LT/)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from ncstudy.config import load_study

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ROOT / "studies"
QUICK = {"quickstart.yaml"}  # in the default suite


def test_every_shipped_study_is_covered():
    assert sorted(p.name for p in STUDIES.glob("*.yaml")) == sorted(PLANNED)


def imagenet_lt(root: Path) -> None:
    """imagenet/ and ImageNet_LT/ImageNet_LT_{train,val,test}.txt: 4 classes, 'relative/path label'
    lines. Images of 64 pixels, the smoke copy's size: at 32 ResNeXt-50's last stage sees 1 x 1 maps."""
    rng = np.random.default_rng(0)
    (root / "ImageNet_LT").mkdir(parents=True)
    for split, counts in {"train": [12, 6, 3, 2], "val": [2, 2, 2, 2], "test": [3, 3, 3, 3]}.items():
        lines = []
        for label, count in enumerate(counts):
            (root / "imagenet" / split).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                image = rng.integers(0, 256, (72, 72, 3), dtype=np.uint8)
                Image.fromarray(image).save(root / "imagenet" / split / f"{label}-{i}.jpg")
                lines.append(f"{split}/{label}-{i}.jpg {label}")
        (root / "ImageNet_LT" / f"ImageNet_LT_{split}.txt").write_text("\n".join(lines) + "\n")


def cifar100_from_cifar10(cifar10: Path, out: Path, per_class: dict[str, int]) -> None:
    """Tables shaped like CIFAR-100 (100 classes) from CIFAR-10's images: class 10 j + k holds the
    j-th block of `per_class[split]` images of CIFAR-10 class k."""
    out.mkdir(parents=True)
    for split, count in per_class.items():
        table = pq.read_table(cifar10 / f"{split}.parquet")
        labels = table.column("label").to_numpy()
        names = table.schema.metadata[b"classes"].decode().split(",")
        rows, fake = [], []
        for k in range(10):
            of_class = np.flatnonzero(labels == k)
            for j in range(10):
                rows += of_class[j * count : (j + 1) * count].tolist()
                fake += [10 * j + k] * count
        images = table.column("image").take(pa.array(rows))
        classes = [f"{names[c % 10]}-{c // 10}" for c in range(100)]
        result = pa.table({"label": pa.array(fake, pa.int8()), "image": images})
        pq.write_table(result.replace_schema_metadata({"classes": ",".join(classes)}), out / f"{split}.parquet")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory, cifar_parquet):
    root = tmp_path_factory.mktemp("data")
    (root / "cifar10-jpeg").symlink_to(cifar_parquet[0])
    cifar100_from_cifar10(cifar_parquet[0], root / "cifar100-jpeg", {"train": 120, "test": 20})
    imagenet_lt(root)
    return root, tmp_path_factory.mktemp("decoded")


# Trials each study's smoke copy plans: at most 2 configurations (1 per stratum), the first seed,
# every variant and grid value.
PLANNED = {
    "quickstart.yaml": 2,
    "cifar_lt.yaml": 3,  # 3 ratios (strata) x 1
    "cifar100_lt.yaml": 3,
    "imagenet_lt.yaml": 2,
    "ablation_cifar10_lt.yaml": 12,  # 6 variants (Table 7) x 2 ratios
    "ablation_cifar10_lt_cpu.yaml": 4,  # 4 variants
    "pareto_cifar10_lt.yaml": 2,  # 2 variants, each its own search (split_by_variant) x 1
    "pareto_cifar10_lt_cpu.yaml": 2,
}


@pytest.mark.parametrize(
    "file", [pytest.param(f, marks=() if f in QUICK else pytest.mark.slow) for f in sorted(PLANNED)]
)
def test_a_shipped_study_runs_with_smoke_alone(file, request, tmp_path):
    results = tmp_path / "results"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if file not in QUICK:  # the quick start's digits need no data root
        root, cache = request.getfixturevalue("data_root")
        env.update(NCSTUDY_DATA=str(root), NCSTUDY_CACHE=str(cache))
    env.pop("RAY_ADDRESS", None)  # a laptop: a private local Ray
    done = subprocess.run(
        [sys.executable, "-m", "ncstudy", "run", f"studies/{file}", "--smoke", "--results", str(results)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    console = done.stdout + done.stderr
    assert done.returncode == 0, console[-4000:]
    assert "Traceback" not in console, console[-4000:]
    name = load_study(STUDIES / file).name
    folder = results / f"{name}-smoke"
    smoke_lines = [line for line in done.stdout.splitlines() if line.startswith("smoke:")]
    assert len(smoke_lines) == 1 and f"a smaller copy of {name}" in smoke_lines[0], console[:2000]
    assert json.loads((folder / "smoke.json").read_text())["copy_of"] == name
    planned = PLANNED[file]
    assert f"{planned} of {planned} trials finished" in done.stdout, console[-3000:]
    trials = pd.read_parquet(folder / "trials.parquet")
    assert len(trials) == planned and set(trials["status"]) == {"finished"}
    study = load_study(folder / "study.yaml")
    client = mlflow.MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(study.tracking.experiment or study.name).experiment_id])
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * (planned + 1)
    report = (folder / "report.md").read_text()
    assert f"A `--smoke` copy of `{name}`" in report  # never mistaken for results
    if study.search.variants:  # the ablation table shows the variant names as written
        assert all(f"| {variant} |" in report for variant in study.search.variants), report
