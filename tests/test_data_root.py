"""The data root ($NCSTUDY_DATA, ncstudy.data_root): relative data paths resolve against it, CIFAR is
found in each form a user may hold it (torchvision's files, Parquet tables, a download), a missing
data set is one line naming the folders searched and the fix, and every shipped study validates from
a copy of studies/ with nothing but the data root set. No shipped file names the repository's
surroundings."""

from __future__ import annotations

import io
import shutil
import subprocess
import urllib.error
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from ncstudy.cli import main
from ncstudy.config import dump_yaml, load_study
from ncstudy.data.build import build_data, load_source, source_key
from ncstudy.data.sources import locate_cifar
from ncstudy.data_root import DATA_ENV, data_root
from ncstudy.errors import StudyError

ROOT = Path(__file__).resolve().parents[1]


def tables(folder: Path, classes: int = 10, per_class: int = 3) -> Path:
    """Tiny Parquet image tables (8x8 PNGs) in the CIFAR table format."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        labels = np.repeat(np.arange(classes), per_class).astype(np.int8)
        images = []
        for _ in labels:
            buffer = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buffer, format="PNG")
            images.append(buffer.getvalue())
        table = pa.table({"label": labels, "image": images})
        pq.write_table(table.replace_schema_metadata({"classes": ",".join(f"c{k}" for k in range(classes))}),
                       folder / f"{split}.parquet")  # fmt: skip
    return folder


def cifar_study(folder: Path, *lines: str) -> Path:
    path = folder / "study.yaml"
    path.write_text("\n".join(["name: c", "data:", "  dataset: cifar10", *lines]) + "\n")
    return path


def test_relative_paths_resolve_against_the_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "store"))
    study = cifar_study(tmp_path, "  root: sub/cifar")
    assert load_study(study).data.root == str(tmp_path / "store" / "sub" / "cifar")
    assert load_study(study, [f"data.root={tmp_path / 'abs'}"]).data.root == str(tmp_path / "abs")
    assert load_study(study, ["data.root=null"]).data.root == str(tmp_path / "store")  # null = the data root
    assert str(tmp_path / "store") in dump_yaml(load_study(study))  # study.yaml records the path used
    monkeypatch.delenv(DATA_ENV)
    monkeypatch.chdir(tmp_path)
    assert data_root() == tmp_path / "data"
    assert load_study(study, ["data.root=null"]).data.root == str(tmp_path / "data")
    # a resolved config loads to the same config wherever it is read again (resume, workers)
    saved = tmp_path / "saved.yaml"
    saved.write_text(dump_yaml(load_study(study)))
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "elsewhere"))
    assert load_study(saved).data.root == str(tmp_path / "data" / "sub" / "cifar")


def test_cifar_is_found_in_each_form(tmp_path):
    root = tmp_path / "root"
    assert locate_cifar("cifar10", str(root), download=True).kind == "download"
    tables(root / "cifar10-jpeg")
    assert locate_cifar("cifar10", str(root), download=False) == type(locate_cifar("cifar10", str(root), False))(
        "parquet", root / "cifar10-jpeg"
    )
    (root / "cifar10" / "cifar-10-batches-py").mkdir(parents=True)  # torchvision's files win: original pixels
    assert locate_cifar("cifar10", str(root), download=False).folder == root / "cifar10"
    assert locate_cifar("cifar100", str(root), download=True).kind == "download"


def test_the_parquet_form_through_a_cifar_study(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    tables(tmp_path / "cifar10")
    study = load_study(cifar_study(tmp_path, "  imbalance: {ratio: 1, n_max: 2}", "  val_per_class: 1",
                                   f"  cache_dir: {tmp_path / 'cache'}"))  # fmt: skip
    data = build_data(study.data)
    assert data.train_counts == [2] * 10 and len(data.test) == 30
    assert source_key(study.data)[1] == str(tmp_path)


def test_tables_of_another_data_set_are_refused(tmp_path):
    tables(tmp_path / "cifar100-jpeg", classes=10)
    study = load_study(cifar_study(tmp_path, f"  root: {tmp_path}", f"  cache_dir: {tmp_path / 'cache'}"), ["data.dataset=cifar100"])
    with pytest.raises(StudyError, match="10 classes, but cifar100 has 100"):
        load_source(study.data)


def test_missing_data_names_the_folders_and_the_fix(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "store"))
    assert main(["validate", str(cifar_study(tmp_path, "  download: false"))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    line = err[0]
    store = tmp_path / "store"
    for folder in (store, store / "cifar10-jpeg", store / "cifar10", store / "cifar10" / "cifar-10-batches-py"):
        assert str(folder) in line
    assert f"export {DATA_ENV}=" in line and "--set data.download=true" in line


@pytest.mark.parametrize("command", [["validate"], ["data", "describe"]])
def test_a_failed_download_names_the_folders_and_the_fix(command, tmp_path, capsys, monkeypatch):
    """Offline with download: true (the shipped studies), the one line says what was searched, why the
    download failed and how to point ncstudy at the data; nothing is left in the data root."""
    import torchvision

    def offline(self):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", offline)
    store = tmp_path / "store"
    monkeypatch.setenv(DATA_ENV, str(store))
    assert main([*command, str(cifar_study(tmp_path, "  download: true"))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    line = err[0]
    assert line.startswith("error: data.download: could not download cifar10") and "Name or service not known" in line
    for folder in (store, store / "cifar10-jpeg", store / "cifar10", store / "cifar10" / "cifar-10-batches-py"):
        assert str(folder) in line
    assert f"fix: export {DATA_ENV}=" in line and "cifar-10-batches-py/ or cifar10-jpeg/" in line
    assert not store.exists()


def test_a_missing_image_root_names_the_fix(tmp_path, capsys, monkeypatch):
    """ImageNet-LT's image root not under the data root: export the data root holding its folders, or
    give an absolute data.root; an absolute root that is missing is only fixed by another one."""
    store = tmp_path / "store"
    monkeypatch.setenv(DATA_ENV, str(store))
    study = str(ROOT / "studies" / "imagenet_lt.yaml")
    assert main(["validate", study]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert f"data.root: {store / 'imagenet'} is not a folder" in err[0]
    assert err[0].endswith(f"fix: export {DATA_ENV}=/path/to/data (the folder holding imagenet/ and ImageNet_LT/) "
                           "or --set data.root=/abs/path/to/images")  # fmt: skip
    assert main(["validate", study, f"--set=data.root={tmp_path / 'images'}"]) == 2
    assert capsys.readouterr().err.strip().endswith("; fix: --set data.root=/abs/path/to/images")


def test_every_shipped_study_and_recipe_validates_with_only_the_data_root(tmp_path, monkeypatch):
    """From a copy of studies/ (a fresh clone's), run from another directory, with nothing but
    $NCSTUDY_DATA: files are resolved, paths land under the data root, CIFAR-10 is found there."""
    studies = shutil.copytree(ROOT / "studies", tmp_path / "clone" / "studies")
    store = tmp_path / "store"
    (store / "cifar10-jpeg").mkdir(parents=True)
    for split in ("train", "test"):
        (store / "cifar10-jpeg" / f"{split}.parquet").touch()  # located, never decoded here
    monkeypatch.setenv(DATA_ENV, str(store))
    monkeypatch.chdir(tmp_path)
    files = sorted(studies.glob("*.yaml")) + sorted((studies / "recipes").glob("*.yaml"))
    assert len(files) >= 9
    for path in files:
        recipe = path.parent.name == "recipes"
        study = load_study(path, ["name=recipe", "data.dataset=cifar10"] if recipe and "cifar" in path.name else
                           ["name=recipe"] if recipe else [])  # fmt: skip
        data = study.data
        if data.dataset in ("cifar10", "cifar100"):
            assert Path(data.root).is_relative_to(store), (path, data.root)
            where = locate_cifar(data.dataset, data.root, data.download)
            if data.dataset == "cifar10":
                assert where.kind == "parquet" and where.folder == store / "cifar10-jpeg", path
        if data.dataset == "filelist":
            assert all(Path(getattr(data, key)).is_relative_to(store) for key in ("root", "train_list", "val_list", "test_list"))
        text = path.read_text()
        assert recipe or path.name == "quickstart.yaml" or "base: recipes/" in text, path
        if recipe:
            assert not {"name", "search"} & set(yaml.safe_load(text)), f"{path}: a recipe holds no name or search"


def test_no_shipped_file_names_the_repository_surroundings():
    """Nothing shipped names a path outside the repository (docs/data.md, "Data"). CI's own script and the tests
    may (they point the data root at the CI machine's data)."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.decode()
    offenders = []
    for name in filter(None, listed.split("\0")):
        if name == ".ci/run" or name.startswith("tests/"):
            continue
        path = ROOT / name
        if not path.is_file():
            continue
        if path.suffix == ".parquet":  # committed results: their string cells (a checkpoint's path, say)
            table = pq.read_table(path)
            text = [c for c in table.column_names if pa.types.is_string(table[c].type) or pa.types.is_large_string(table[c].type)]
            data = "\n".join(str(value) for c in text for value in table[c].to_pylist()).encode()
        else:
            data = path.read_bytes()
        if b"\0" in data:  # binary (PNG)
            continue
        for needle in (b"../shared", b"/work/"):
            if needle in data:
                line = data[: data.index(needle)].count(b"\n") + 1
                offenders.append(f"{name}:{line}: {needle.decode()}")
    assert not offenders, offenders
