"""Parquet image tables (the ../shared/data/cifar10-jpeg format), the decode cache and their errors."""

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from ncstudy.config import DataConfig
from ncstudy.data import cache
from ncstudy.data.build import build_data
from ncstudy.data.sources import load_parquet_source
from ncstudy.errors import StudyError

def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")  # lossless, so pixels can be compared
    return buffer.getvalue()


def write_table(path: Path, labels: list[int], images: list[np.ndarray], classes: str | None = "a,b,c") -> None:
    table = pa.table({"label": pa.array(labels, pa.int8()), "image": [png(i) for i in images]})
    if classes:
        table = table.replace_schema_metadata({"classes": classes})
    pq.write_table(table, path)


@pytest.fixture
def image_tables(tmp_path):
    rng = np.random.default_rng(0)
    train_labels = [0] * 12 + [1] * 12 + [2] * 12
    train_images = [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in train_labels]
    test_labels = [0, 1, 2] * 2
    test_images = [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in test_labels]
    write_table(tmp_path / "train.parquet", train_labels, train_images)
    write_table(tmp_path / "test.parquet", test_labels, test_images)
    return tmp_path, train_images, train_labels


def test_parquet_tables_decode_exactly_with_class_names(image_tables, tmp_path):
    root, images, labels = image_tables
    source = load_parquet_source(str(root), tmp_path / "cache")
    assert source.pool.classes == ("a", "b", "c")
    assert source.pool.images.shape == (36, 3, 8, 8) and source.pool.images.dtype == np.uint8
    assert np.array_equal(source.pool.images[5], images[5].transpose(2, 0, 1))
    assert source.pool.labels.tolist() == labels and len(source.test) == 6


def test_decode_happens_once_then_the_cache_is_read(image_tables, tmp_path, monkeypatch):
    root, _, _ = image_tables
    first = load_parquet_source(str(root), tmp_path / "cache")
    calls = []
    original = cache.cached_arrays

    def counting(source, cache_dir, decode):
        return original(source, cache_dir, lambda: calls.append(source) or decode())

    monkeypatch.setattr("ncstudy.data.sources.cached_arrays", counting)
    again = load_parquet_source(str(root), tmp_path / "cache")
    assert calls == []
    assert np.array_equal(first.pool.images, again.pool.images)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 4


def test_long_tailed_split_of_a_parquet_source(image_tables, tmp_path):
    root, _, _ = image_tables
    config = DataConfig(dataset="parquet", root=str(root), cache_dir=str(tmp_path / "c"),
                        imbalance={"ratio": 4, "n_max": 8}, val_per_class=3)  # fmt: skip
    data = build_data(config)
    assert data.train_counts == [8, 4, 2]
    assert np.bincount(data.val.labels).tolist() == [3, 3, 3]
    assert not set(data.train.index) & set(data.val.index)
    assert data.augment is False  # 8x8 images: only 32x32 colour images are cropped by default


def test_errors_name_the_path_and_the_missing_column(tmp_path):
    with pytest.raises(StudyError, match="data.root: .*nowhere is not a folder"):
        load_parquet_source(str(tmp_path / "nowhere"), tmp_path)
    with pytest.raises(StudyError, match="train.parquet not found"):
        load_parquet_source(str(tmp_path), tmp_path)
    pq.write_table(pa.table({"label": [0], "pixels": [b"x"]}), tmp_path / "train.parquet")
    with pytest.raises(StudyError, match="no column 'image'"):
        load_parquet_source(str(tmp_path), tmp_path)


def test_real_cifar10_lt_from_the_shared_parquet(cifar_parquet):
    root, cache_dir = cifar_parquet
    config = DataConfig(dataset="parquet", root=str(root), cache_dir=str(cache_dir), imbalance={"ratio": 100})
    data = build_data(config)
    # at n_max 5,000 the head class keeps 20 of its pool for validation: every class is validated
    assert data.profile_counts == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert data.train_counts == [4980, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert data.counts_note == "airplane 4980 of 5000"
    assert np.bincount(data.train.labels).tolist() == data.train_counts
    assert np.bincount(data.val.labels, minlength=10).tolist() == [20] * 10
    assert not set(data.train.index) & set(data.val.index)
    assert len(data.test) == 10_000 and data.train.classes[0] == "airplane"
    assert data.augment is True
    assert data.groups == {"many": [0, 1, 2], "medium": [3, 4, 5, 6], "few": [7, 8, 9]}


def test_a_damaged_cache_entry_is_decoded_again(image_tables, tmp_path):
    root, images, _ = image_tables
    load_parquet_source(str(root), tmp_path / "cache")
    entry = next((tmp_path / "cache").glob("train-*-images.npy"))
    entry.write_bytes(entry.read_bytes()[:200])  # a disk that filled up
    again = load_parquet_source(str(root), tmp_path / "cache")
    assert np.array_equal(again.pool.images[5], images[5].transpose(2, 0, 1))


def test_labels_are_checked_before_decoding_so_a_refused_table_leaves_no_cache_entry(image_tables, tmp_path):
    root, images, labels = image_tables
    write_table(root / "train.parquet", labels[:-1] + [7], images)
    with pytest.raises(StudyError, match=r"train.parquet: row 35: label 7 is not a class index \(0..2"):
        load_parquet_source(str(root), tmp_path / "cache")
    assert not (tmp_path / "cache").exists()
