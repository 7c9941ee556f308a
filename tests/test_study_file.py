"""Base files (`base:`): deep merge, chains, cycles and bad bases refused with exit status 2, overrides
after merging, and a resolved config without `base` (ncstudy.study_file)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ncstudy.cli import main
from ncstudy.config import dump_yaml, load_study
from ncstudy.errors import StudyError
from ncstudy.study_file import load_study_file, merge

RECIPE = """\
data: {dataset: digits, imbalance: {ratio: 10, n_max: 100}, val_per_class: 20}
model: {arch: digits_cnn, width: 8}
regularizer: {lambda_within: 0.02, temperature: 0.5}
train: {epochs: 3, lr: 0.05, milestones: [2], weight_decay: 0.001}
search:
  space:
    regularizer.lambda_within: {type: loguniform, low: 0.001, high: 0.1}
    regularizer.lambda_between: {type: loguniform, low: 0.01, high: 1.0}
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def one_error_line(capsys, study: Path, *overrides: str) -> str:
    """`python -m ncstudy validate` in this process: exit 2 and exactly one line, `error: ...`."""
    assert main(["validate", str(study), *[f"--set={o}" for o in overrides]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_merge_rules():
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 1,
            "search": {"space": {"k": {"type": "choice", "values": [1]}, "j": {"type": "int", "low": 0, "high": 2}},
                       "variants": {"A": {"p": 1}}}}  # fmt: skip
    over = {"a": {"y": [3]}, "b": None,
            "search": {"space": {"k": {"type": "int", "low": 1, "high": 3}, "j": None}, "variants": {"A": {"q": 2}}}}
    merged = merge(base, over)
    assert merged["a"] == {"x": 1, "y": [3]}  # mappings merge key by key, lists replace
    assert merged["b"] is None  # null outside the user's mappings is a value
    assert merged["search"]["space"] == {"k": {"type": "int", "low": 1, "high": 3}}  # entries replace whole; null deletes
    assert merged["search"]["variants"] == {"A": {"q": 2}}
    assert base["a"]["y"] == [1, 2] and "j" in base["search"]["space"]  # nothing changed in place
    assert merge(base, {"search": {"space": None}})["search"] == {"variants": {"A": {"p": 1}}}


def test_a_study_on_a_base_file(tmp_path, capsys):
    write(tmp_path, "recipes/r.yaml", RECIPE)
    study_file = write(tmp_path, "studies/s.yaml", """\
base: ../recipes/r.yaml
name: s
regularizer: {temperature: null}
train: {epochs: 4}
search: {space: {regularizer.lambda_between: null}}
""")
    study, bases = load_study_file(study_file)
    assert bases == [study_file.parent / "../recipes/r.yaml"]
    assert study.train.epochs == 4 and study.train.lr == 0.05 and study.train.weight_decay == 0.001
    assert study.model.width == 8 and study.data.imbalance.n_max == 100
    assert study.regularizer.lambda_within == 0.02 and study.regularizer.temperature is None
    assert list(study.search.space) == ["regularizer.lambda_within"]
    # --set applies after merging
    assert load_study(study_file, ["train.lr=0.2", "model.width=4"]).train.lr == 0.2
    # validate prints the merged config, without `base`, and names the base files on stderr
    assert main(["validate", str(study_file)]) == 0
    out, err = capsys.readouterr()
    printed = yaml.safe_load(out)
    assert "base" not in printed and "base" not in dump_yaml(study)
    assert printed["train"]["weight_decay"] == 0.001 and printed["train"]["epochs"] == 4
    assert "r.yaml" in err and err.strip().endswith("valid")


def test_chains_and_lists_of_bases(tmp_path):
    write(tmp_path, "a.yaml", "train: {epochs: 2, lr: 0.01, weight_decay: 0.002}\nmodel: {width: 8}\n")
    write(tmp_path, "b.yaml", "base: a.yaml\ntrain: {lr: 0.02}\n")
    write(tmp_path, "c.yaml", "model: {width: 12}\ntrain: {weight_decay: 0.003}\n")
    study_file = write(tmp_path, "s.yaml", "base: [b.yaml, c.yaml]\nname: s\ntrain: {epochs: 3}\n")
    study, bases = load_study_file(study_file)
    assert [p.name for p in bases] == ["a.yaml", "b.yaml", "c.yaml"]
    assert (study.train.epochs, study.train.lr, study.train.weight_decay, study.model.width) == (3, 0.02, 0.003, 12)


def test_a_cycle_is_refused_with_its_chain(tmp_path, capsys):
    write(tmp_path, "a.yaml", "base: b.yaml\n")
    write(tmp_path, "b.yaml", "base: a.yaml\n")
    study_file = write(tmp_path, "s.yaml", "base: a.yaml\nname: s\n")
    line = one_error_line(capsys, study_file)
    assert "cycle" in line and "a.yaml -> " in line and "b.yaml" in line
    itself = write(tmp_path, "self.yaml", "base: self.yaml\nname: s\n")
    assert "cycle" in one_error_line(capsys, itself)


@pytest.mark.parametrize(
    "base_text, base_value, message",
    [
        (None, "missing.yaml", "base: "),
        ("train: {epochs: [1\n", "bad.yaml", "malformed YAML"),
        ("- 1\n- 2\n", "bad.yaml", "a base file must be a mapping"),
        ("", "bad.yaml", "the file is empty"),
        ("train: {epochs: 2}\n", "[]", "expected a file path or a list"),
        ("train: {epochs: 2}\n", "{a: 1}", "expected a file path or a list"),
        ("train: {epochs: 0}\n", "bad.yaml", "train.epochs"),
        ("name: x\nbase: missing-too.yaml\n", "bad.yaml", "missing-too.yaml not found"),
    ],
)
def test_bad_bases_are_one_line_naming_the_file(tmp_path, capsys, base_text, base_value, message):
    if base_text is not None:
        write(tmp_path, "bad.yaml", base_text)
    study_file = write(tmp_path, "s.yaml", f"base: {base_value}\nname: s\n")
    line = one_error_line(capsys, study_file)
    assert message in line
    if base_text is None:
        assert "missing.yaml not found" in line and "s.yaml" in line
    elif message in ("malformed YAML", "a base file must be a mapping", "the file is empty"):
        assert "bad.yaml" in line


def test_base_is_not_an_override(tmp_path):
    study_file = write(tmp_path, "s.yaml", "name: s\n")
    with pytest.raises(StudyError, match="--set base: no such setting"):
        load_study(study_file, ["base=other.yaml"])


# A refused setting names the file that set it last (a base, with its study), or --set.
BLAME_CASES = {
    "typo-in-a-base": ({"recipes/typo.yaml": "train: {lerning_rate: 0.1}\n"}, "base: recipes/typo.yaml\nname: s\n", [],
                       "recipes/typo.yaml (base of {s}): train.lerning_rate: Extra inputs are not permitted"),
    "bad-value-in-a-base-of-a-base": (
        {"a.yaml": "train: {epochs: -3}\n", "b.yaml": "base: a.yaml\nmodel: {width: 8}\n"},
        "base: b.yaml\nname: s\n", [], "a.yaml (base of {s} via {b}): train.epochs: Input should be greater than"),
    "list-element-in-a-base": ({"r.yaml": "train: {epochs: 4, milestones: [2, x]}\n"}, "base: r.yaml\nname: s\n", [],
                               "r.yaml (base of {s}): train.milestones.1: "),
    "space-entry-in-a-base": ({"r.yaml": "search: {space: {train.lrr: {type: loguniform, low: 0.01, high: 0.1}}}\n"},
                              "base: r.yaml\nname: s\n", [],
                              "r.yaml (base of {s}): search.space.train.lrr: no such setting"),
    "overridden-in-the-study-file": ({"r.yaml": "train: {epochs: 3, lerning_rate: 0.1}\n"},
                                     "base: r.yaml\nname: s\ntrain: {lerning_rate: 0.2}\n", [],
                                     "{s}: train.lerning_rate: Extra inputs are not permitted"),
    "overridden-by-set": ({"r.yaml": "train: {epochs: -3}\n"}, "base: r.yaml\nname: s\n", ["train.epochs=-1"],
                          "--set train.epochs: Input should be greater than"),
    "set-below-a-base-section": ({"r.yaml": "train: {milestones: [2]}\n"}, "base: r.yaml\nname: s\n",
                                 ["train.milestones=[1, x]"], "--set train.milestones.1: "),
    # a check across settings names the one its message leads with
    "inert-term-by-set": ({}, "name: s\n", ["loss.name=ldam"], "--set loss.name ldam scales the logits"),
    "inert-term-in-a-base": ({"r.yaml": "regularizer: {temperature: 0.5, lambda_between: 0}\n"}, "base: r.yaml\nname: s\n",
                             [], "r.yaml (base of {s}): regularizer.temperature: 0.5 has no effect"),
}  # fmt: skip


@pytest.mark.parametrize("bases, study_text, overrides, expected", BLAME_CASES.values(), ids=BLAME_CASES.keys())
def test_a_refused_setting_names_the_file_that_set_it(tmp_path, capsys, bases, study_text, overrides, expected):
    for name, text in bases.items():
        write(tmp_path, name, text)
    study_file = write(tmp_path, "s.yaml", study_text)
    line = one_error_line(capsys, study_file, *overrides)
    prefix = "" if expected.startswith(("{s}", "--set")) else f"{tmp_path}/"
    expected = prefix + expected.format(s=study_file, b=tmp_path / "b.yaml")
    assert line.startswith(f"error: {expected}"), line


def test_a_set_override_replaces_a_base_value(tmp_path):
    write(tmp_path, "r.yaml", "train: {epochs: -3}\n")
    study_file = write(tmp_path, "s.yaml", "base: r.yaml\nname: s\n")
    assert load_study(study_file, ["train.epochs=2"]).train.epochs == 2
