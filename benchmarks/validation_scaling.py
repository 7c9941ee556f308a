"""Validation time and memory against the number of variants: `read_study` of a study with N variants.

`read_study` is what `python -m ncstudy validate` (and `run`) does with a file: merge the base, apply
the schema, then `ncstudy.config.validate_space`, which validates every variant, every search-space
value and every combination of them (bounds and choices) on the base and on each variant. Each
variant brings a fixed number of checks, so the time should grow linearly with N; it grew
quadratically (issue 22: 250 variants 9.8 s, 1,000 33 s, 10,000 past 10 minutes and 850 MB; here the
`space` study below took 3.7 s at 100 and 199 s at 1,000) while each check copied and validated the
whole study, `search.variants` included.

Two studies on studies/quickstart.yaml's settings, each with N variants (bundles of two training
settings): `grid`, an ablation's shape (algorithm grid over the variants, 3 seeds, no search space:
a few checks per variant), and `space`, the quick start's 4-entry search space beside the variants
(24 combinations, checked two entries at a time: 30 validations per variant). Each study and N runs
in a fresh child process, so its peak resident set (VmHWM) is its own; "base" is the child's resident
set after its imports and writing the study file, before reading it. One run each: the times are
seconds, and they grow with N far more than the machine's load moves them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BASE_STUDY = ROOT / "studies" / "quickstart.yaml"
DEFAULT_VARIANTS = (100, 1_000, 10_000)
QUICKSTART_SPACE = ("regularizer.lambda_within", "regularizer.lambda_between", "regularizer.temperature", "data.imbalance.ratio")
# What each study sets in `search` on top of the quick start's; null deletes a base's space entry.
STUDIES = {
    "grid": {"algorithm": "grid", "seeds": [0, 1, 2], "space": dict.fromkeys(QUICKSTART_SPACE)},
    "space": {},
}


def study_text(study: str, variants: int) -> str:
    """The study `study` (a key of STUDIES) with `variants` distinct bundles."""
    bundles = {f"v{i}": {"train.lr": round(0.01 + i * 1e-6, 6), "train.weight_decay": round(1e-4 + i * 1e-8, 8)}
               for i in range(variants)}  # fmt: skip
    search = {**STUDIES[study], "variants": bundles}
    return yaml.safe_dump({"base": str(BASE_STUDY), "name": "validation_scaling", "search": search})


def rss_mib() -> float:
    """The peak resident set of this process so far: VmHWM, not ru_maxrss, which keeps the peak of
    the process before its exec (the parent, with torch imported, forked this child)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child(study: str, variants: int) -> None:
    """Read one study here and print its row as JSON: imports first, so `base_rss_mib` excludes the study.
    `validate_space_s` times that step again on the study read: the rest of `seconds` is mostly
    parsing the YAML file (PyYAML in Python), which no change to the checks can shorten."""
    from ncstudy.config import validate_space
    from ncstudy.study_file import read_study

    with tempfile.TemporaryDirectory(prefix="bench-validation-") as folder:
        path = Path(folder) / "study.yaml"
        path.write_text(study_text(study, variants))
        base = rss_mib()
        start = time.perf_counter()
        read = read_study(path)
        seconds = time.perf_counter() - start
    assert len(read.study.search.variants) == variants
    start = time.perf_counter()
    validate_space(read.study)
    checks = time.perf_counter() - start
    row = {"study": study, "variants": variants, "seconds": seconds, "s_per_1000_variants": seconds / variants * 1000}
    print(json.dumps({**row, "validate_space_s": checks, "base_rss_mib": base, "peak_rss_mib": rss_mib()}))


def measure(study: str, variants: int, timeout_s: float) -> dict:
    """One child's row; a child that runs past `timeout_s` is stopped and its row says so."""
    command = [sys.executable, "-m", "benchmarks.validation_scaling", "--child", study, str(variants)]
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s, check=True)
    except subprocess.TimeoutExpired:
        return {"study": study, "variants": variants, "seconds": None, "timed_out_after_s": timeout_s}
    return json.loads(done.stdout.splitlines()[-1])


def table(rows: list[dict]) -> str:
    lines = ["| study | variants | seconds | s per 1,000 variants | of which validate_space s | peak RSS MiB | base RSS MiB |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for row in rows:
        if row["seconds"] is None:
            lines.append(f"| {row['study']} | {row['variants']:,} | > {row['timed_out_after_s']:.0f} (stopped) | | | | |")
        else:
            lines.append(f"| {row['study']} | {row['variants']:,} | {row['seconds']:.2f} | {row['s_per_1000_variants']:.2f} | "
                         f"{row['validate_space_s']:.2f} | {row['peak_rss_mib']:.0f} | {row['base_rss_mib']:.0f} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", type=int, nargs="+", default=list(DEFAULT_VARIANTS), metavar="N")
    parser.add_argument("--studies", nargs="+", choices=list(STUDIES), default=list(STUDIES))
    parser.add_argument("--timeout-s", type=float, default=600, help="stop a size that runs longer")
    parser.add_argument("--child", nargs=2, metavar=("STUDY", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        child(args.child[0], int(args.child[1]))
        return []
    from benchmarks.common import write_result  # here, not above: it imports torch, which a child must not count

    rows = [measure(study, n, args.timeout_s) for study in args.studies for n in args.variants]
    print(table(rows))
    path = write_result("validation_scaling", {"base_study": "studies/quickstart.yaml", "searches": STUDIES, "rows": rows})
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main()
