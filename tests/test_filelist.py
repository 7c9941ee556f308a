"""File-list sources (the ImageNet-LT format) on a small generated image folder."""

import numpy as np
import pytest
import torch
from PIL import Image

from ncstudy.config import StudyConfig
from ncstudy.data.build import build_data, device_splits
from ncstudy.engine.evaluation import evaluate_split
from ncstudy.engine.state import TrialState
from ncstudy.engine.step import train_epoch
from ncstudy.errors import StudyError

COUNTS = {"train": [12, 6, 3], "val": [2, 2, 2], "test": [3, 3, 3]}


@pytest.fixture
def image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for split, counts in COUNTS.items():
        lines = []
        for label, count in enumerate(counts):
            folder = tmp_path / "images" / split / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
                lines.append(f"{split}/class{label}/{i}.jpg {label}")
        (tmp_path / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return tmp_path


def study(folder, **data) -> StudyConfig:
    return StudyConfig.model_validate({
        "name": "lists",
        "data": {"dataset": "filelist", "root": str(folder / "images"), "train_list": str(folder / "train.txt"),
                 "val_list": str(folder / "val.txt"), "test_list": str(folder / "test.txt"), "image_size": 32,
                 "loader_workers": 0, **data},
        "model": {"arch": "digits_cnn", "width": 4, "feature_dim": 8},
        "train": {"epochs": 1, "batch_size": 4, "warmup_epochs": 0},
    })  # fmt: skip


def test_lists_define_the_splits_and_never_overlap(image_folder):
    config = study(image_folder)
    data = build_data(config.data)
    assert data.train_counts == COUNTS["train"]
    assert np.bincount(data.val.labels).tolist() == COUNTS["val"]
    paths = [set(split.paths) for split in (data.train, data.val, data.test)]
    assert not paths[0] & paths[1] and not paths[0] & paths[2] and not paths[1] & paths[2]
    assert data.groups == {"many": [], "medium": [], "few": [0, 1, 2]}  # threshold rule: all below 20


def test_n_max_shrinks_a_list_in_proportion_and_eval_per_class_caps_val_and_test(image_folder):
    """What --smoke sets (ncstudy.smoke): the listed profile 12/6/3 at n_max 4 is 4/2/1 (each class
    keeps one at least), drawn with the data seed; at most 2 listed validation and test images a class."""
    data = build_data(study(image_folder, imbalance={"n_max": 4}, eval_per_class=2).data)
    assert data.train_counts == [4, 2, 1]
    assert np.bincount(data.test.labels).tolist() == [2, 2, 2] and np.bincount(data.val.labels).tolist() == [2, 2, 2]
    again = build_data(study(image_folder, imbalance={"n_max": 4}, eval_per_class=2).data)
    assert again.train.paths == data.train.paths and again.fingerprint == data.fingerprint
    assert set(data.train.paths) <= set(build_data(study(image_folder).data).train.paths)


def test_streamed_batches_train_and_evaluate(image_folder):
    config = study(image_folder)
    data = build_data(config.data)
    train, val, _ = device_splits(data, config.data, torch.device("cpu"))
    state = TrialState(config, data, torch.device("cpu"))
    result = train_epoch(0, config, state.model, state, train, data, 0, 1)
    assert np.isfinite(result["loss"])
    images, labels = next(iter(val.eval_batches(4)))
    assert images.shape == (4, 3, 32, 32) and labels.tolist() == [0, 0, 1, 1]
    metrics = evaluate_split(state.model, val, data, bf16=False).metrics
    assert 0.0 <= metrics["acc_all"] <= 1.0


def test_list_errors_name_the_file_and_line(image_folder):
    (image_folder / "bad.txt").write_text("train/class0/0.jpg 0\ntrain/class0/1.jpg zero\n")
    with pytest.raises(StudyError, match=r"bad.txt:2: expected 'relative/path LABEL'"):
        build_data(study(image_folder, train_list=str(image_folder / "bad.txt")).data)
    with pytest.raises(StudyError, match="missing.txt: list file not found"):
        build_data(study(image_folder, val_list=str(image_folder / "missing.txt")).data)
    with pytest.raises(StudyError, match="not found under"):
        build_data(study(image_folder, root=str(image_folder)).data)


def test_every_listed_image_is_checked_and_lines_keep_their_numbers(image_folder):
    lines = (image_folder / "train.txt").read_text().splitlines()
    spaced = image_folder / "spaced.txt"
    spaced.write_text("\n".join(lines[:3]) + "\n\n" + "\n".join(lines[3:]) + "\n")
    config = study(image_folder, train_list=str(spaced)).data
    assert build_data(config).train.index.tolist() == [1, 2, 3, *range(5, len(lines) + 2)]
    (image_folder / "images" / lines[-1].split()[0]).unlink()
    with pytest.raises(StudyError, match=rf"spaced.txt:{len(lines) + 1}: .* not found under .*\(1 of the {len(lines)} listed"):
        build_data(config)
