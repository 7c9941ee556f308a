import subprocess
import sys
from pathlib import Path

import pytest

from ncstudy.config import dump_yaml, load_study, with_params
from ncstudy.errors import StudyError

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "studies" / "quickstart.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


def test_quickstart_is_valid_and_searches_the_required_keys():
    study = load_study(QUICKSTART)
    assert study.name == "quickstart"
    assert {"regularizer.lambda_within", "regularizer.lambda_between", "regularizer.temperature",
            "data.imbalance.ratio"} <= set(study.search.space)  # fmt: skip
    assert study.search.space["regularizer.lambda_within"].type == "loguniform"
    assert study.search.num_samples >= 4
    assert study.search.metric.startswith("val_")


def test_overrides_keep_yaml_types_and_are_validated():
    study = load_study(QUICKSTART, ["train.epochs=2", "regularizer.temperature=0.5", "search.space={}"])
    assert study.train.epochs == 2 and study.regularizer.temperature == 0.5 and study.search.space == {}
    with pytest.raises(StudyError, match="data.imbalance.ratio"):
        load_study(QUICKSTART, ["data.imbalance.ratio=-1"])
    with pytest.raises(StudyError, match="expected dotted.key=value"):
        load_study(QUICKSTART, ["train.epochs"])


@pytest.mark.parametrize(
    "text, message",
    [
        ("name: x\ntrain: {epocs: 3}\n", "train.epocs: Extra inputs are not permitted"),
        ("name: x\ndata: {imbalance: {ratio: -5}}\n", "data.imbalance.ratio: Input should be greater than or equal to 1"),
        ("name: x\ntrain: {epochs: many}\n", "train.epochs"),
        ("name: x\nregularizer: {temperature: 0}\n", "regularizer.temperature"),
        ("name: x\nsearch: {metric: acc_all}\n", "search: metric must be a validation metric"),
        ("name: x\nsearch: {space: {train.epocs: {type: choice, values: [1]}}}\n", "search.space.train.epocs: no such setting"),
        ("name: x\nsearch: {space: {data.imbalance.ratio: {type: choice, values: [10, 0.5]}}}\n",
         "search.space.data.imbalance.ratio: value 0.5 is invalid"),
        ("name: x\nsearch: {space: {regularizer.lambda_within: {type: loguniform, low: 0.1, high: 0.01}}}\n",
         "low must be below high"),
        ("name: x\nsearch: {space: {regularizer: {type: choice, values: [1]}}}\n", "names a section"),
        ("train: {epochs: 3}\n", "name: Field required"),
        ("name: x\ntrain: [epochs: 3\n", "malformed YAML"),
        ("- just\n- a list\n", "must be a mapping"),
    ],
)  # fmt: skip
def test_bad_study_files_give_one_line_naming_the_key(tmp_path, text, message):
    with pytest.raises(StudyError) as caught:
        load_study(write(tmp_path, text))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_file():
    with pytest.raises(StudyError, match="study file not found"):
        load_study("no/such/study.yaml")


def test_with_params_applies_dotted_values():
    study = load_study(QUICKSTART)
    trial = with_params(study, {"regularizer.lambda_within": 0.05, "data.imbalance.ratio": 50})
    assert trial.regularizer.lambda_within == 0.05 and trial.data.imbalance.ratio == 50
    assert study.regularizer.lambda_within == 0.01  # the base is untouched
    assert "lambda_within: 0.05" in dump_yaml(trial)


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ncstudy", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_cli_rejects_a_malformed_study_with_status_2_one_line_and_nothing_written(tmp_path):
    bad = write(tmp_path, "name: broken\ndata: {imbalance: {ratio: -1}}\n")
    results = tmp_path / "results"
    done = run_cli("run", str(bad), "--results", str(results), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "data.imbalance.ratio" in done.stderr
    assert "Traceback" not in done.stderr
    assert not results.exists()


def test_cli_rejects_a_bad_override_and_a_missing_file(tmp_path):
    done = run_cli("run", str(QUICKSTART), "--set", "train.epochs=0", "--results", str(tmp_path / "r"), cwd=tmp_path)
    assert done.returncode == 2 and "train.epochs" in done.stderr and not (tmp_path / "r").exists()
    done = run_cli("validate", "missing.yaml", cwd=tmp_path)
    assert done.returncode == 2 and "missing.yaml: study file not found" in done.stderr


def test_cli_validate_prints_the_resolved_config(tmp_path):
    done = run_cli("validate", str(QUICKSTART), "--set", "train.epochs=3", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "epochs: 3" in done.stdout and "lambda_within" in done.stdout
    for command in ("run", "resume", "validate"):
        assert run_cli(command, "--help", cwd=tmp_path).returncode == 0
