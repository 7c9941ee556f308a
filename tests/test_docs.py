"""The documentation: README is a short entry, the docs site is the reference (docs/development.md,
"The documentation"). The settings reference is generated from the schema by a MkDocs hook
(docs/hooks/settings_reference.py), so these tests hold the schema to it: every setting has a
description and appears on the page, and the site builds with `mkdocs build --strict`."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ncstudy.config import StudyConfig

ROOT = Path(__file__).resolve().parents[1]
HOOK = ROOT / "docs" / "hooks" / "settings_reference.py"


def load_hook():
    spec = importlib.util.spec_from_file_location("settings_reference", HOOK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass resolves annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def leaf_keys(tree: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in tree.items():
        keys.add(prefix + key)
        if isinstance(value, dict) and key not in ("space", "variants", "strata", "when"):
            keys |= leaf_keys(value, f"{prefix}{key}.")
    return keys


def test_every_setting_has_a_description():
    hook = load_hook()
    names = {model.__name__ for model in hook.models()}
    # the walk reaches every section, the optional ASHA section and the search-space entries
    assert {"DataConfig", "ImbalanceConfig", "ShotSplitConfig", "AshaConfig", "LogUniform", "Choice", "Grid"} <= names
    assert hook.undescribed() == [], "add description= to these fields in ncstudy/config.py"


def test_the_settings_reference_names_every_setting():
    hook = load_hook()
    page = hook.render()
    tree = StudyConfig(name="x").model_dump(mode="json")
    tree["search"]["asha"] = {"grace_period": 1, "reduction_factor": 2}  # an optional section, null by default
    documented = {row.key for row in hook.settings()}
    assert leaf_keys(tree) <= documented, leaf_keys(tree) - documented
    for row in hook.settings():
        section, _, leaf = row.key.rpartition(".")
        if row.section and not section:
            assert f"## `{leaf}`" in page, row.key  # a top-level section: a heading of its own
        else:
            assert f"| `{leaf}` |" in page, row.key
        if section:
            assert f"`{section}`" in page, section
    for kind, rows in hook.space_entries().items():
        assert f"### `{kind}`" in page
        assert {row.key for row in rows} >= {"type", "when"}
    # values the page shows come from the schema
    assert "| `epochs` | integer | `200` | >= 1 |" in page
    assert "`learnable`, `ema`, `batch`" in page
    assert "`val_acc_all`, `val_acc_many`" in page


def test_the_readme_is_a_short_entry():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 220
    for phrase in ("this session", "this task", "missed by", "(was "):
        assert phrase not in text.lower(), phrase
    assert "python -m pytest -q" in text  # .ci/run runs README's test command
    assert 'pip install -e ".[dev]" && python -m ncstudy run studies/quickstart.yaml' in text
    assert text.index("<!-- quickstart-table -->") < text.index("<!-- /quickstart-table -->")
    for target in re.findall(r"\]\(((?!https?:)[^)#]+)", text):  # relative links resolve
        assert (ROOT / target).exists(), target


def test_every_page_in_the_nav_exists_and_every_page_is_in_the_nav():
    config = (ROOT / "mkdocs.yml").read_text()
    listed = set(re.findall(r":\s+([\w./-]+\.md)\s*$", config, re.M))
    pages = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    generated = {load_hook().PAGE}
    assert listed - generated <= pages, (listed - generated) - pages
    assert pages <= listed, pages - listed


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**__import__("os").environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    settings = (tmp_path / "site" / "reference" / "settings" / "index.html").read_text()
    assert "lambda_within" in settings and "focal_gamma" in settings
