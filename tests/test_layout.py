"""The package layout is the data flow (docs/design.md, "Layout"): config -> data -> models ->
method -> engine -> outputs -> study (Ray) -> the runners (cli, single_run). A module imports only
from its own layer or those to its left (function-level imports included), so that the method and
the engine never pull in Ray, and nothing below study/ imports it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ncstudy"
LAYERS = ["base", "data", "models", "method", "engine", "outputs", "study", "runners"]
BASE = {"errors", "atomic", "config", "study_file", "strata", "terms", "data_root", "machine", "smoke"}
RUNNERS = {"cli", "__main__", "single_run"}
PUBLIC_PATHS = {"metrics", "regularizers"}  # re-exports at their documented paths


def layer(module: str) -> str | None:
    """The layer of a dotted name under ncstudy (None for the package itself and the re-exports)."""
    parts = module.split(".")
    if parts[0] != "ncstudy" or len(parts) == 1:
        return None
    head = parts[1]
    if head in LAYERS:
        return head
    if head in BASE:
        return "base"
    if head in RUNNERS:
        return "runners"
    assert head in PUBLIC_PATHS | {"__init__"}, f"ncstudy.{head} is in no layer: add it to tests/test_layout.py"
    return None


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {name for name in names if name.startswith("ncstudy")}


def test_every_module_imports_only_from_its_layer_or_the_left():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(("ncstudy", *path.relative_to(PACKAGE).with_suffix("").parts))
        own = layer(module)
        if own is None:
            continue
        for name in imported_modules(path):
            other = layer(name)
            if other is not None and LAYERS.index(other) > LAYERS.index(own):
                wrong.append(f"{module} ({own}) imports {name} ({other})")
    assert not wrong, "\n".join(wrong)


def test_the_layers_are_folders_and_the_top_level_is_small():
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top == BASE | RUNNERS | PUBLIC_PATHS | {"__init__"}
    assert {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()} == set(LAYERS) - {"base", "runners"}


CITATION = re.compile(r'(README(?:\.md)?|docs/[\w./-]+\.md),\s+"([^"]+)"')


def named_sections(document: Path) -> set[str]:
    """The titles a citation may name: headings, and bold or plain paragraph leads ("**Metric
    names**", "Public API:")."""
    text = document.read_text()
    return ({m.group(1).strip() for m in re.finditer(r"^#+ (.+)$", text, re.M)}
            | {m.group(1) for m in re.finditer(r"\*\*([^*]+?)\.?\*\*", text)}
            | {m.group(1) for m in re.finditer(r"^([A-Z][\w -]+):", text, re.M)})  # fmt: skip


def test_every_cited_section_exists():
    """A docstring's `(docs/data.md, "The data root")` or `(docs/design.md, "Worker-count invariance")`
    names a page of the docs site (or README.md) that exists, and on it a heading (or its first
    words) or a paragraph lead that is there, so a reader finds it."""
    root = PACKAGE.parent
    missing = []
    for path in sorted([*PACKAGE.rglob("*.py"), *(root / "tests").glob("*.py"), *(root / "benchmarks").glob("*.py")]):
        for document, wrapped in CITATION.findall(path.read_text()):
            title = " ".join(word for word in wrapped.split() if word != "#")  # wrapped in a docstring or comment
            page = root / ("README.md" if document.startswith("README") else document)
            titles = named_sections(page) if page.is_file() else set()
            if not any(name.startswith(title) for name in titles):
                missing.append(f"{path.relative_to(root)}: {document}, \"{title}\"")
    assert not missing, "\n".join(missing)
