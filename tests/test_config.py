import subprocess
import sys
from pathlib import Path

import pytest

from ncstudy.config import SearchConfig, StudyConfig, check_study_name, dump_yaml, load_study, with_params
from ncstudy.errors import StudyError, excerpt

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


def test_an_override_reaches_a_search_space_entry_whose_key_has_dots():
    study = load_study(QUICKSTART, ["search.space.regularizer.lambda_within.high=0.5"])
    assert study.search.space["regularizer.lambda_within"].high == 0.5


@pytest.mark.parametrize(
    "when",
    [
        "{loss.name: logit_adjusted}",  # set by a variant
        "{regularizer.temperature: 0.5}",  # a value of an earlier choice
        "{regularizer.lambda_within: 0.05}",  # inside an earlier range
        "{model.head: linear}",  # the file's value
    ],
)
def test_conditions_that_can_hold_are_accepted(tmp_path, when):
    study = write(tmp_path, "name: x\nsearch:\n  variants: {ce: {}, la: {loss.name: logit_adjusted}}\n  space:\n"
                            "    regularizer.temperature: {type: choice, values: [null, 0.5]}\n"
                            "    regularizer.lambda_within: {type: loguniform, low: 0.001, high: 0.1}\n"
                            f"    loss.tau: {{type: uniform, low: 0.5, high: 2.0, when: {when}}}\n")  # fmt: skip
    assert load_study(study).search.space["loss.tau"].when


def test_messages_show_only_an_excerpt_of_a_value(tmp_path):
    values = ", ".join(["x" * 500] * 3)
    with pytest.raises(StudyError, match="search.space.loss.name: value 'xxx") as caught:
        load_study(write(tmp_path, f"name: x\nsearch: {{space: {{loss.name: {{type: choice, values: [{values}]}}}}}}\n"))
    assert len(str(caught.value)) < 400
    assert excerpt(list(range(10**6))) == "[0, 1, 2, 3, 4, 5, ...]"
    assert len(excerpt("y" * 10**6, limit=80)) == 80


@pytest.mark.parametrize("name", ["quickstart", "cifar10_lt-r100.v2", "a" * 64])
def test_study_names_that_can_name_a_folder(name):
    assert check_study_name(name) == name


@pytest.mark.parametrize("name", ["", "..", ".hidden", "/abs/path", "a/b", "a" * 65, "name\n", "tab\there", "é"])
def test_study_names_that_cannot(name):
    with pytest.raises(StudyError, match="a study name is letters, digits, _ . - .*at most 64 characters"):
        check_study_name(name)


def test_missing_file():
    with pytest.raises(StudyError, match="study file not found"):
        load_study("no/such/study.yaml")


def test_with_params_applies_dotted_values():
    study = load_study(QUICKSTART)
    trial = with_params(study, {"regularizer.lambda_within": 0.05, "data.imbalance.ratio": 50})
    assert trial.regularizer.lambda_within == 0.05 and trial.data.imbalance.ratio == 50
    assert study.regularizer.lambda_within == 0.01  # the base is untouched
    assert "lambda_within: 0.05" in dump_yaml(trial)


def test_checking_each_variant_and_combination_validates_no_other_variant(tmp_path, monkeypatch):
    """A variant's or a combination's check validates one trial's settings, not the whole study with
    every variant in it: that made validation quadratic in the variants (1,000 took minutes; issue 22).
    Counted, not timed: how many variants each validation is given, the study's own included."""
    validate, given = StudyConfig.model_validate.__func__, []

    def counting(cls, data, *args, **kwargs):
        search = data.get("search", {})
        given.append(len(search.variants if isinstance(search, SearchConfig) else search.get("variants", {})))
        return validate(cls, data, *args, **kwargs)

    monkeypatch.setattr(StudyConfig, "model_validate", classmethod(counting))
    count = 2000
    variants = "".join(f"    v{i}: {{train.lr: {0.01 + i * 1e-6:.6f}}}\n" for i in range(count))
    study = write(tmp_path, "name: many\nsearch:\n  algorithm: grid\n  space:\n"
                            "    train.epochs: {type: grid, values: [8, 12]}\n"
                            "    regularizer.start_epoch: {type: grid, values: [0, 4]}\n"
                            f"  variants:\n{variants}")  # fmt: skip
    assert len(load_study(study).search.variants) == count
    assert len(given) > 5 * count  # each variant alone, then with each of the 4 combinations
    assert sum(given) <= 2 * count  # the study's own validation; no check is given the other variants again


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
