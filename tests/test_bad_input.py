"""Bad input, end to end: every case of the corpus below is one line `error: ...` on stderr and exit
status 2 (docs/cli.md, "Bad input"), with no traceback, before Ray starts and before anything is
written under --results; a bad data table leaves no decode-cache entry behind.

Most cases go through `validate` in this process (it checks the study file and loads the data, as
`run` does before Ray starts); a handful go through a real `python -m ncstudy run`.
"""

import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from ncstudy.cli import main

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = (ROOT / "studies" / "quickstart.yaml").read_text()
FOLDER = object()  # a case whose study path is a folder


def edited(*replacements: tuple[str, str]) -> str:
    """The quick-start study with each `old` text (found exactly once) replaced by `new`."""
    text = QUICKSTART
    for old, new in replacements:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


def with_search(extra: str) -> str:
    """The quick-start study with more lines in its search section (indented like it)."""
    return edited(("  space:\n", f"{extra}  space:\n"))


def with_space(entry: str) -> str:
    """The quick-start study with one more search-space entry."""
    return edited(("    data.imbalance.ratio: {type: choice, values: [10, 50]}\n",
                   f"    data.imbalance.ratio: {{type: choice, values: [10, 50]}}\n    {entry}\n"))  # fmt: skip


OBJECTIVE_LINES = "  metric: val_acc_all               # the objective, on the validation split (never test)\n  mode: max\n"
HEAD_AND_TAIL = "  objectives: {val_acc_many: max, val_acc_few: max}\n"


def with_objectives(objectives: str = HEAD_AND_TAIL, extra: str = "") -> str:
    """The quick-start study with `objectives` (and `extra` search lines) in place of its metric and mode."""
    return edited((OBJECTIVE_LINES, objectives + extra))


def encoded(array: np.ndarray, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=format)
    return buffer.getvalue()


PNG = encoded(np.zeros((8, 8, 3), dtype=np.uint8))

CONFIG_CASES = [
    pytest.param(b"\xff\xfe\x00name: x", [], ": not UTF-8 text (byte 0)", id="not-utf8"),
    pytest.param(PNG, [], ": not UTF-8 text", id="binary-file"),
    pytest.param(FOLDER, [], ": a folder, not a study file", id="folder"),
    pytest.param("name: x\x00\n", [], ": not YAML text (special characters are not allowed", id="nul-character"),
    pytest.param("", [], ": the file is empty", id="empty-file"),
    pytest.param("# just a comment\n", [], ": the file is empty", id="comments-only"),
    pytest.param("- quickstart\n- train\n", [], "a study file must be a mapping", id="top-level-list"),
    pytest.param(QUICKSTART + "train: {epochs: 3}\n", [], "malformed YAML: duplicate key 'train'", id="duplicate-key"),
    pytest.param("name: x\ny: " + "[" * 5000 + "]" * 5000 + "\n", [], "nested too deeply", id="nested-too-deeply"),
    pytest.param(edited(("lr: 0.05", "lr: .inf")), [], "train.lr: Input should be a finite number", id="inf-setting"),
    pytest.param(edited(("lambda_within: 0.01 ", "lambda_within: .nan ")), [],
                 "regularizer.lambda_within: Input should be a finite number", id="nan-setting"),
    pytest.param(edited(("lambda_between: 0.1 ", "lambda_between: -.inf ")), [],
                 "regularizer.lambda_between: Input should be a finite number", id="minus-inf-setting"),
    pytest.param(edited(("low: 0.001, high: 0.1}", "low: 0.001, high: .inf}")), [],
                 "search.space.regularizer.lambda_within.high: Input should be a finite number", id="inf-bound"),
    pytest.param(edited(("values: [null, 0.1, 0.5]", "values: [null, .nan, 0.5]")), [],
                 "search: space regularizer.temperature: choice value nan is not a finite number", id="nan-choice"),
    pytest.param(with_search("  variants: {paper: {}, big: {regularizer.lambda_within: .inf}}\n"), [],
                 "search.variants.big: regularizer.lambda_within: Input should be a finite number", id="inf-variant"),
    pytest.param(QUICKSTART, ["train.lr=.inf"], "train.lr: Input should be a finite number", id="inf-override"),
    pytest.param(with_space("loss.tau: {type: uniform, low: 0.5, high: 2.0, when: {loss.nmae: ldam}}"), [],
                 "search.space.loss.tau.when.loss.nmae: no such setting", id="when-names-no-setting"),
    pytest.param(with_space("loss.tau: {type: uniform, low: 0.5, high: 2.0, when: {loss: {name: ldam}}}"), [],
                 "search.space.loss.tau.when.loss: names a section", id="when-names-a-section"),
    pytest.param(with_space("loss.tau: {type: uniform, low: 0.5, high: 2.0, when: {loss.name: ldam}}"), [],
                 "search.space.loss.tau.when.loss.name: 'ldam' is never its value here ('ce')", id="when-never-holds"),
    pytest.param(with_space("loss.tau: {type: uniform, low: 0.5, high: 2.0, when: {loss.name: logit_adjusted}}\n"
                            "    loss.name: {type: choice, values: [ce, logit_adjusted]}"), [],
                 "loss.name is searched after loss.tau; list it first", id="when-on-a-later-parameter"),
    pytest.param(with_space("train.milestones: {type: choice, values: [[100], [160, 180]]}"), [],
                 "search: space train.milestones: choice value [100] is not a single value", id="choice-of-lists"),
    pytest.param("name: x\nsearch:\n  algorithm: grid\n  space: {train.lr: {type: grid, values: [{lr: 0.1}]}}\n", [],
                 "search: space train.lr: grid value {'lr': 0.1} is not a single value", id="grid-of-mappings"),
    pytest.param(with_space("train.epochs: {type: loguniform, low: 4, high: 40}"), [],
                 "search.space.train.epochs: an integer setting; use type int", id="fractions-for-an-integer"),
    pytest.param(with_space("train.seed: {type: int, low: 0, high: 9}").replace("  space:\n", "  seeds: [0, 1]\n  space:\n"),
                 [], "search: seeds sets train.seed of every run", id="seed-searched-and-repeated"),
    pytest.param(edited(("name: quickstart", "name: " + "q" * 65)), [], "name: String should have at most 64 characters",
                 id="name-too-long"),
    pytest.param(edited(("name: quickstart", "name: ../elsewhere")), [], "name: String should match pattern",
                 id="name-with-a-path"),
    pytest.param(QUICKSTART, ["train.epocs=3"], "--set train.epocs: no such setting; did you mean train.epochs?",
                 id="override-names-no-setting"),
    pytest.param(QUICKSTART, ["train.lr.peak=1"], "--set train.lr.peak: train.lr is a setting, not a section",
                 id="override-below-a-setting"),
    pytest.param(QUICKSTART, ["train.epochs"], "--set 'train.epochs': expected dotted.key=value", id="override-without-value"),
    pytest.param(edited(("ratio: 10 ", "ratio: 0.5 ")), [], "data.imbalance.ratio: Input should be greater than or equal to 1",
                 id="ratio-below-1"),
    pytest.param(edited(("val_per_class: 20", "val_per_class: 0")), [], "data.val_per_class", id="no-validation-images"),
    pytest.param(edited(("batch_size: 64", "batch_size: 0")), [], "train.batch_size", id="batch-size-0"),
    pytest.param(edited(("num_samples: 4", "num_samples: 0")), [], "search.num_samples", id="no-samples"),
    pytest.param(with_search("  variants: {paper: {regularizer.lambda_witin: 0.01}}\n"), [],
                 "search.variants.paper.regularizer.lambda_witin: no such setting", id="variant-names-no-setting"),
    pytest.param(with_search("  variants: {paper: {regularizer: {lambda_within: 0.01}}}\n"), [],
                 "search.variants.paper.regularizer: names a section, not a setting", id="variant-names-a-section"),
    pytest.param(edited((OBJECTIVE_LINES, OBJECTIVE_LINES + HEAD_AND_TAIL)), [],
                 "search: objectives replaces metric and mode", id="objectives-beside-metric"),
    pytest.param(with_objectives(), ["search.mode=min"], "search: objectives replaces metric and mode",
                 id="objectives-beside-a-mode-override"),
    pytest.param(with_objectives("  objectives: {val_acc_few: max}\n"), [], "search: objectives: name two or more",
                 id="one-objective"),
    pytest.param(with_objectives("  objectives: {val_acc_many: max, test_acc_few: max}\n"), [],
                 "search: objectives: test_acc_few is not a validation metric", id="test-objective"),
    pytest.param(with_objectives("  objectives: {val_acc_many: max, val_acc_few: best}\n"), [],
                 "search.objectives.val_acc_few: Input should be 'max' or 'min'", id="objective-direction"),
    pytest.param(with_objectives(extra="  asha: {grace_period: 2}\n"), [], "search: asha stops trials on one metric",
                 id="objectives-with-asha"),
    pytest.param(with_objectives(extra="  sampler: cmaes\n"), [], "search: sampler cmaes optimises one objective only",
                 id="objectives-with-cmaes"),
    pytest.param(with_search("  split_by_variant: true\n"), [], "search: split_by_variant splits the search by "
                 "search.variants; the study has none", id="split-without-variants"),
    pytest.param(with_search("  variants: {LA: {}}\n").replace("values: [null, 0.1, 0.5]}",
                                                            "values: [null, 0.1, 0.5], when: {variant: LW}}"), [],
                 "search.space.regularizer.temperature.when.variant: 'LW' is not a variant (LA)", id="when-names-no-variant"),
    pytest.param(with_objectives("  objectives: {val_acc_many: max, val_acc_few: max}\n"),
                 ["data.shot_split.boundaries=[3, 10]"], "search.objectives: val_acc_few is never measured: the split "
                 "has no few-shot class", id="objective-on-an-empty-group"),
    pytest.param(QUICKSTART, ["search.metric=val_acc_few", "data.shot_split.boundaries=[3, 10]"],
                 "search.metric: val_acc_few is never measured: the split has no few-shot class",
                 id="metric-on-an-empty-group"),
]  # fmt: skip


def validate(capsys, study: Path, *overrides: str) -> str:
    """`validate` in this process: exit status 2 and exactly one line, `error: ...`; returns it."""
    arguments = ["validate", str(study)] + [f"--set={text}" for text in overrides]
    status = main(arguments)
    out, err = capsys.readouterr()
    assert status == 2, (out, err)
    assert out == "" and "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("content, overrides, message", CONFIG_CASES)
def test_bad_study_files_and_overrides(tmp_path, capsys, content, overrides, message):
    if content is FOLDER:
        study = tmp_path
    else:
        study = tmp_path / "study.yaml"
        study.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert message in validate(capsys, study, *overrides)


# -- Parquet tables: 3 classes a, b, c; 12 training and 2 test images each, 8x8 PNG -----------------

TRAIN_LABELS = [0, 1, 2] * 12
TEST_LABELS = [0, 1, 2] * 2


def images(count: int, size: int = 8) -> list[bytes]:
    rng = np.random.default_rng(count)
    return [encoded(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(count)]


def table(labels: list, blobs: list | None = None, label_type=pa.int8(), classes: str | None = "a,b,c") -> pa.Table:
    blobs = images(len(labels)) if blobs is None else blobs
    result = pa.table({"label": pa.array(labels, label_type), "image": pa.array(blobs, pa.binary())})
    return result.replace_schema_metadata({"classes": classes}) if classes else result


def changed(values: list, row: int, value) -> list:
    return [value if i == row else v for i, v in enumerate(values)]


def parquet_study(tmp_path: Path, train=None, test=None, **data) -> Path:
    """A quick-start study on Parquet tables in tmp_path/tables (the good ones unless given: a table,
    or bytes for a file that is not one), with its decode cache in tmp_path/cache."""
    root = tmp_path / "tables"
    root.mkdir()
    for name, content, labels in (("train", train, TRAIN_LABELS), ("test", test, TEST_LABELS)):
        if isinstance(content, bytes):
            (root / f"{name}.parquet").write_bytes(content)
        else:
            pq.write_table(table(labels) if content is None else content, root / f"{name}.parquet")
    data = {"dataset": "parquet", "root": str(root), "cache_dir": str(tmp_path / "cache"),
            "imbalance": {"ratio": 4, "n_max": 8}, "val_per_class": 2, "augment": False, **data}  # fmt: skip
    return study_file(tmp_path, data)


def study_file(tmp_path: Path, data: dict) -> Path:
    """The quick-start study with this data section and no data setting in its search space."""
    study = yaml.safe_load(QUICKSTART)
    study["data"] = data
    del study["search"]["space"]["data.imbalance.ratio"]
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


TRUNCATED_JPEG = encoded(np.full((8, 8, 3), 99, dtype=np.uint8), "JPEG")[:-40]
GOOD_TRAIN_IMAGES = images(len(TRAIN_LABELS))

PARQUET_CASES = [
    pytest.param({"train": table(changed(TRAIN_LABELS, 5, 3))}, "train",
                 "train.parquet: row 5: label 3 is not a class index (0..2, from the metadata 'classes'); 1 such row",
                 id="label-outside-the-classes"),
    pytest.param({"train": table(changed(TRAIN_LABELS, 4, -1))}, "train",
                 "train.parquet: row 4: label -1 is not a class index", id="negative-label"),
    pytest.param({"train": table([float(v) for v in TRAIN_LABELS], label_type=pa.float64())}, "train",
                 "train.parquet: column 'label' holds double, not integers", id="float-labels"),
    pytest.param({"train": table([str(v) for v in TRAIN_LABELS], label_type=pa.string())}, "train",
                 "train.parquet: column 'label' holds string, not integers", id="string-labels"),
    pytest.param({"train": table(changed(TRAIN_LABELS, 3, None))}, "train",
                 "train.parquet: row 3: the label is missing (null)", id="null-label"),
    pytest.param({"train": table(TRAIN_LABELS, changed(GOOD_TRAIN_IMAGES, 7, b"not an image"))}, "train",
                 "train.parquet: row 7: not an image (no format Pillow reads)", id="undecodable-image"),
    pytest.param({"train": table(TRAIN_LABELS, changed(GOOD_TRAIN_IMAGES, 9, TRUNCATED_JPEG))}, "train",
                 "train.parquet: row 9: a damaged image (Truncated File Read)", id="truncated-jpeg"),
    pytest.param({"train": table(TRAIN_LABELS, changed(GOOD_TRAIN_IMAGES, 6, None))}, "train",
                 "train.parquet: row 6: the image is missing (null)", id="null-image"),
    pytest.param({"train": table(TRAIN_LABELS, changed(GOOD_TRAIN_IMAGES, 2, images(1, size=9)[0]))}, "train",
                 "train.parquet: row 2: the image is 9x9, row 0's is 8x8", id="images-of-two-sizes"),
    pytest.param({"train": table([0] * 12, classes="a")}, "train", "train.parquet: only one class ('a')", id="one-class"),
    pytest.param({"train": table([0] * 12, classes=None)}, "train", "train.parquet: only one class ('0')",
                 id="one-class-without-names"),
    pytest.param({"train": table([0, 1] * 12)}, "train", "train.parquet: class 2 ('c') has no images", id="class-without-images"),
    pytest.param({"train": table([0, 2] * 12, classes=None)}, "train",
                 "train.parquet: class 1 (the largest label is 2) has no images", id="gap-in-labels"),
    pytest.param({"train": pa.table({"label": pa.array(TRAIN_LABELS, pa.int8())})}, "train",
                 "train.parquet: no column 'image'", id="missing-column"),
    pytest.param({"train": pa.table({"label": pa.array(TRAIN_LABELS, pa.int8()), "image": ["x"] * 36})}, "train",
                 "train.parquet: column 'image' holds string, not encoded image bytes", id="image-column-of-text"),
    pytest.param({"train": b"PAR1 this is not a Parquet file"}, "train", "train.parquet: not a readable Parquet file",
                 id="not-parquet"),
    pytest.param({"train": table([])}, "train", "train.parquet: the table has no rows", id="empty-table"),
    pytest.param({"test": table(changed(TEST_LABELS, 2, 5))}, "test",
                 "test.parquet: row 2: label 5 is not a class index (0..2, from train.parquet)", id="test-label-not-trained"),
    pytest.param({"test": table(TEST_LABELS, classes="x,y,z")}, "test",
                 "test.parquet: the metadata 'classes' ('x,y,z') differ from train.parquet's", id="test-classes-differ"),
]  # fmt: skip


@pytest.mark.parametrize("tables, bad, message", PARQUET_CASES)
def test_bad_parquet_tables_name_the_file_and_row_and_leave_no_cache_entry(tmp_path, capsys, tables, bad, message):
    line = validate(capsys, parquet_study(tmp_path, **tables))
    assert message in line
    assert not list((tmp_path / "cache").glob(f"{bad}-*"))


def test_a_cache_folder_that_is_a_file(tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    line = validate(capsys, parquet_study(tmp_path, cache_dir=str(tmp_path / "a-file")))
    assert "data.cache_dir: cannot write the decode cache in" in line and "a-file" in line


def test_the_good_tables_are_valid(tmp_path, capsys):
    assert main(["validate", str(parquet_study(tmp_path))]) == 0
    assert "dataset: parquet" in capsys.readouterr().out


# -- File lists: 3 classes, 6 / 3 / 2 training images, one validation and one test image each ------


def list_study(tmp_path: Path, edit=None) -> Path:
    """A quick-start study on generated file lists; `edit(folder, lists)` spoils them first (lists:
    name -> lines, written after the edit)."""
    folder = tmp_path / "lists"
    lists: dict[str, list[str]] = {}
    for split, counts in {"train": [6, 3, 2], "val": [1, 1, 1], "test": [1, 1, 1]}.items():
        lines = lists[split] = []
        for label, count in enumerate(counts):
            (folder / "images" / split).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                (folder / "images" / split / f"{label}-{i}.png").write_bytes(PNG)
                lines.append(f"{split}/{label}-{i}.png {label}")
    if edit:
        edit(folder, lists)
    for split, lines in lists.items():
        content = lines if isinstance(lines, bytes) else "\n".join(lines).encode() + b"\n"
        (folder / f"{split}.txt").write_bytes(content)
    data = {"dataset": "filelist", "root": str(folder / "images"), "image_size": 32, "loader_workers": 0,
            **{f"{split}_list": str(folder / f"{split}.txt") for split in lists}}  # fmt: skip
    return study_file(tmp_path, data)


def missing_later_images(folder, lists):
    for name in ("1-2.png", "2-1.png"):
        (folder / "images" / "train" / name).unlink()


def line(split: str, number: int, text: str):
    def edit(folder, lists):
        lists[split][number - 1] = text

    return edit


def val_holds_a_training_image(folder, lists):
    lists["val"][1] = lists["train"][6].replace("train/", "train/./")


def not_utf8(folder, lists):
    lists["test"] = b"test/0-0.png 0\n\xff\xfe 1\n"


FILELIST_CASES = [
    pytest.param(missing_later_images, "train.txt:9: train/1-2.png not found under", id="later-images-missing"),
    pytest.param(line("train", 4, "train/0-3.png"),
                 "train.txt:4: expected 'relative/path LABEL' (an integer label), got 'train/0-3.png'", id="no-label"),
    pytest.param(line("train", 5, "train/0-4.png 1.5"), "train.txt:5: expected 'relative/path LABEL'", id="fractional-label"),
    pytest.param(line("val", 2, "val/1-0.png -1"), "val.txt:2: label -1 is negative", id="negative-label"),
    pytest.param(line("test", 3, "test/2-0.png 3"), "test.txt:3: label 3 is not a class of the training list (0..2)",
                 id="label-not-trained"),
    pytest.param(lambda folder, lists: lists.update(train=[x.replace(" 2", " 3") for x in lists["train"]]),
                 "train.txt: class 2 has no image (the largest label is 3)", id="class-without-images"),
    pytest.param(lambda folder, lists: lists.update(train=[f"{x.split()[0]} 0" for x in lists["train"]]),
                 "train.txt: only one class (label 0)", id="one-class"),
    pytest.param(not_utf8, "test.txt: not UTF-8 text (byte 15)", id="not-utf8"),
    pytest.param(val_holds_a_training_image, "val.txt:2: train/./1-0.png is a training image (1 of its 3 images",
                 id="val-holds-a-training-image"),
]  # fmt: skip


@pytest.mark.parametrize("edit, message", FILELIST_CASES)
def test_bad_file_lists_name_the_file_and_line(tmp_path, capsys, edit, message):
    assert message in validate(capsys, list_study(tmp_path, edit))


def test_the_good_lists_are_valid(tmp_path, capsys):
    assert main(["validate", str(list_study(tmp_path))]) == 0
    assert "dataset: filelist" in capsys.readouterr().out


# -- A real `run`: refused before Ray starts, nothing written ------------------------------------


def written(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def bad_run_inputs(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    not_utf8 = tmp_path / "latin1.yaml"
    not_utf8.write_bytes(b"\xff\xfe\x00name: x")
    (tmp_path / "parquet").mkdir()
    (tmp_path / "lists").mkdir()
    return {
        "not-utf8": ([str(not_utf8)], "not UTF-8 text"),
        "non-finite-override": ([str(ROOT / "studies" / "quickstart.yaml"), "--set", "train.lr=.inf"], "train.lr"),
        "undecodable-image": (
            [str(parquet_study(tmp_path / "parquet", train=table(TRAIN_LABELS, changed(GOOD_TRAIN_IMAGES, 7, b"junk"))))],
            "row 7: not an image",
        ),
        "missing-listed-image": ([str(list_study(tmp_path / "lists", missing_later_images))], "train/1-2.png not found"),
        "objectives-with-asha": ([str(written(tmp_path / "asha.yaml", with_objectives(extra="  asha: {grace_period: 2}\n")))],
                                 "search: asha stops trials on one metric"),
    }


def test_run_refuses_bad_input_before_ray_starts_and_writes_nothing(tmp_path):
    """The cases run side by side (each is mostly import time)."""
    cases = bad_run_inputs(tmp_path)
    runs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "ncstudy", "run", *arguments, "--results", str(tmp_path / f"results-{name}")],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for name, (arguments, _) in cases.items()
    }  # fmt: skip
    for name, process in runs.items():
        out, err = process.communicate(timeout=300)
        assert process.returncode == 2, (name, out, err)
        assert "Traceback" not in out + err, name
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and cases[name][1] in lines[0], (name, err)
        assert not (tmp_path / f"results-{name}").exists(), name


def test_report_of_a_study_folder_from_before_the_metric_renames(tmp_path, capsys):
    """results/reference/quickstart was written with the old metric names: `report` says so in one line."""
    shutil.copytree(ROOT / "results" / "reference" / "quickstart", tmp_path / "quickstart")
    status = main(["report", "quickstart", "--results", str(tmp_path)])
    out, err = capsys.readouterr()
    assert status == 2 and "Traceback" not in err, err
    assert err.splitlines() == [err.strip()] and "before metric names took their split as prefix" in err
