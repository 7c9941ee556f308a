"""Reading a study file: YAML text -> base files merged -> `--set` overrides -> the schema -> data paths.

The schema lives in ncstudy.config; this module turns a file into a validated StudyConfig.

Base files. A study file may name, at its top level, `base: PATH` (or a list of paths, applied in
order), each relative to the file that names it. A base is read the same way (it may have its own
`base`: chains are allowed, cycles are refused with the chain named), and the file is merged on top:

- mappings merge key by key, recursively; lists and single values replace the base's;
- `null` is a value like any other (it sets the setting to null: the hard-min temperature, n_max
  None, ...), except inside the mappings whose keys are the user's own, `search.space`,
  `search.variants` and `search.strata`: there an entry replaces the base's entry whole (a
  loguniform range over a choice would otherwise mix both), and `null` deletes the base's entry
  (`search: {space: {data.imbalance.ratio: null}}` stops searching the ratio); `search.space: null`
  deletes them all.

The recipes under studies/recipes/ (the paper's text, the released code, LDAM-DRW) are such bases.
`--set` overrides apply after merging, and the resolved config (the one `validate` prints and
study.yaml records) has no `base` key. Bad input is refused with one line naming the file and key,
exit status 2 (docs/cli.md, "Bad input"): text that is not UTF-8, duplicate keys, malformed YAML, a
base that is missing or not a mapping, a cycle of bases, an override naming no setting. A setting the
schema refuses is blamed on whoever set it last: the study file, a base (`recipes/x.yaml (base of
s.yaml): train.lerning_rate: ...`) or `--set`; reading records that source for every setting.

Data paths. After validation, `data.root` and the file lists are made absolute against the data
root ($NCSTUDY_DATA, else ./data; ncstudy.data_root), so every Ray worker gets the paths the driver
resolved.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from ncstudy.config import StudyConfig, _location_parts, _section_model, set_dotted, validate_space
from ncstudy.data_root import DATA_PATH_KEYS, resolved_data_paths
from ncstudy.errors import StudyError, excerpt
from ncstudy.smoke import smoke_tree

BASE_KEY = "base"
OVERRIDE = "--set"  # the source of a setting that an override set
SMOKE = "--smoke"  # the source of a setting that --smoke changed
LEADING_KEY = re.compile(r"([\w.]*)")  # the dotted key a message starts with ("" when none)
# Mappings whose keys are the user's own: an entry replaces the base's whole, and null deletes it.
USER_KEYED = (("search", "space"), ("search", "variants"), ("search", "strata"))


class _StudyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML would keep the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: the safe loader refuses it itself
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {excerpt(key)}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _read_study_text(path: Path, what: str = "study file") -> str:
    """The file's text; a folder, a missing or unreadable file, or bytes that are not UTF-8 are refused."""
    if path.is_dir():
        raise StudyError(f"{path}: a folder, not a {what}")
    if not path.is_file():
        raise StudyError(f"{path}: {what} not found")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise StudyError(f"{path}: cannot read the {what} ({error.strerror or error})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise StudyError(f"{path}: not UTF-8 text (byte {error.start}); a {what} is YAML text") from None


def _parse_yaml(text: str, path: Path) -> Any:
    try:
        return yaml.load(text, Loader=_StudyLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f" line {mark.line + 1}:" if mark is not None else ""
        raise StudyError(f"{path}:{where} malformed YAML: {error.problem or error.context}") from None
    except yaml.reader.ReaderError as error:
        raise StudyError(f"{path}: not YAML text ({error.reason}, character {error.position})") from None
    except RecursionError:
        raise StudyError(f"{path}: malformed YAML: nested too deeply") from None


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b=v` -> ("a.b", v) with v read as YAML (so 0.1, null, [1, 2] and true keep their types)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise StudyError(f"--set {excerpt(text)}: expected dotted.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _check_override_key(key: str) -> None:
    """An override must name a section or setting of the schema; below a mapping of the user's own
    keys (search.space, search.variants) any key goes, and validation judges the result."""
    model: type[BaseModel] = StudyConfig
    parts = key.split(".")
    for position, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            close = difflib.get_close_matches(part, list(model.model_fields), n=1)
            hint = f"; did you mean {'.'.join([*parts[:position], close[0]])}?" if close else ""
            raise StudyError(f"--set {key}: no such setting{hint}")
        section = _section_model(field.annotation)
        if section is None:
            if position < len(parts) - 1 and get_origin(field.annotation) is not dict:
                raise StudyError(f"--set {key}: {'.'.join(parts[: position + 1])} is a setting, not a section")
            return
        model = section


def merge(base: dict, over: dict, at: tuple[str, ...] = ()) -> dict:
    """`over` deep-merged onto `base` (neither is changed): the rules of the module docstring."""
    merged = dict(base)
    for key, value in over.items():
        here = (*at, key)
        if at in USER_KEYED:  # an entry of the user's own mapping: replaced whole, or deleted by null
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        elif here in USER_KEYED and value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value, here)
        else:
            merged[key] = value
    return merged


def _base_paths(value: Any, path: Path) -> list[Path]:
    """The files a `base` value names, relative to the file `path` that names them."""
    names = value if isinstance(value, list) else [value]
    if not names or not all(isinstance(name, str) and name.strip() for name in names):
        raise StudyError(f"{path}: base: expected a file path or a list of file paths, got {excerpt(value)}")
    return [path.parent / Path(name).expanduser() for name in names]


def read_study_tree(path: str | Path) -> tuple[dict, list[Path]]:
    """The file's settings with its base files merged in, and the base files used (in the order
    they were applied); nothing is validated against the schema yet."""
    tree, bases, _ = _read_tree(Path(path), ())
    return tree, bases


def _leaves(tree: dict, at: str = "") -> list[str]:
    """The dotted keys of a tree's settings: its values that are not mappings, and empty mappings."""
    keys: list[str] = []
    for key, value in tree.items():
        here = f"{at}.{key}" if at else str(key)
        keys += _leaves(value, here) if isinstance(value, dict) and value else [here]
    return keys


def _read_tree(path: Path, chain: tuple[Path, ...]) -> tuple[dict, list[Path], dict[str, str]]:
    """As read_study_tree, and for each setting (dotted key) the file that set it last, as errors name it."""
    kind = "base file" if chain else "study file"
    if not chain:
        text = _read_study_text(path)
    else:
        if not path.exists():
            raise StudyError(f"{chain[-1]}: base: {path} not found (a base path is relative to the file that names it)")
        text = _read_study_text(path, kind)
    raw = _parse_yaml(text, path)
    if raw is None:
        raise StudyError(f"{path}: the file is empty; a {kind} is a mapping of sections (name, data, model, ...)")
    if not isinstance(raw, dict):
        raise StudyError(f"{path}: a {kind} must be a mapping of sections (name, data, model, ...)")
    has_base = BASE_KEY in raw
    names = raw.pop(BASE_KEY, None)
    via = f" via {', '.join(map(str, chain[1:]))}" if len(chain) > 1 else ""
    label = f"{path} (base of {chain[0]}{via})" if chain else str(path)
    own = dict.fromkeys(_leaves(raw), label)
    if not has_base:
        return raw, [], own
    identity = path.resolve()
    merged: dict = {}
    used: list[Path] = []
    sources: dict[str, str] = {}
    for base in _base_paths(names, path):
        if base.resolve() in (*(p.resolve() for p in chain), identity):
            cycle = " -> ".join(str(p) for p in (*chain, path, base))
            raise StudyError(f"{path}: base: the base files form a cycle ({cycle})")
        tree, below, found = _read_tree(base, (*chain, path))
        merged = merge(merged, tree)
        sources.update(found)
        used += [*below, base]
    merged = merge(merged, raw)
    sources.update(own)
    settings = set(_leaves(merged))  # a setting a later file replaced (a list, a whole space entry) is not kept
    return merged, list(dict.fromkeys(used)), {key: file for key, file in sources.items() if key in settings}


def _source_of(sources: dict[str, str], key: str, study: Path) -> str:
    """Who set `key`: the source of it or of its nearest recorded ancestor (a list element, a key
    below a value); for a section, the one source of all its settings; else the study file."""
    probe = key
    while probe:
        if probe in sources:
            return sources[probe]
        probe = probe.rpartition(".")[0]
    below = {file for setting, file in sources.items() if not key or setting.startswith(f"{key}.")}
    return below.pop() if len(below) == 1 else str(study)


def _refused(sources: dict[str, str], key: str, study: Path, message: str) -> StudyError:
    """`message` (which starts with `key`) prefixed by the file, or --set, that set `key`."""
    source = _source_of(sources, key, study)
    return StudyError(f"{OVERRIDE} {message}" if source == OVERRIDE else f"{source}: {message}")


@dataclass(frozen=True)
class StudyRead:
    """A validated study, the base files it used, and with `--smoke` what the smaller copy changed
    ({setting: (old, new)}, ncstudy.smoke) and the name of the study it copies."""

    study: StudyConfig
    bases: list[Path]
    smoke: dict[str, tuple[Any, Any]] | None = None
    full_name: str = ""
    overridden: tuple[str, ...] = ()  # the keys `--set` gave, in order

    def smoke_record(self) -> dict | None:
        """What the study folder records of a --smoke copy (smoke.json), None for a study as written."""
        if self.smoke is None:
            return None
        return {"copy_of": self.full_name, "changes": {key: list(pair) for key, pair in self.smoke.items()}}


def read_study(path: str | Path, overrides: list[str] | tuple[str, ...] = (), smoke: bool = False) -> StudyRead:
    """The validated study of `path`: bases merged, with `smoke` made its smaller copy (the study as
    written must be valid first), overrides applied, data paths resolved. Every refused setting is
    named at once, a line each, blamed on the file, `--smoke` or `--set` that set it."""
    path = Path(path)
    raw, bases, sources = _read_tree(path, ())
    changes, full_name = None, ""
    if smoke:
        full = _validated(raw, sources, path)
        full_name, raw = full.name, full.model_dump(mode="json")
        changes = smoke_tree(raw)
        sources.update(dict.fromkeys(changes, SMOKE))
    overridden = []
    for text in overrides:
        key, value = parse_override(text)
        _check_override_key(key)
        overridden.append(key)
        set_dotted(raw, key, value)  # replaces whatever was at `key`, below it or above it
        sources = {k: v for k, v in sources.items() if not (k.startswith(f"{key}.") or f"{key}.".startswith(f"{k}."))}
        sources.update(dict.fromkeys(_leaves({key: value}), OVERRIDE))
    study = _validated(raw, sources, path)
    try:
        validate_space(study, source=str(path))
    except StudyError as error:  # `{path}: search.space.KEY...: ...`: blamed on the file that set the entry
        raise StudyError("\n".join(_blamed_space_line(line, sources, path) for line in str(error).splitlines())) from None
    return StudyRead(with_resolved_data_paths(study), bases, changes, full_name, tuple(dict.fromkeys(overridden)))


def refuse_searched_overrides(read: StudyRead) -> list[str]:
    """For `run` and `validate`: a `--set` that the search overrides in every trial is refused, a
    line each; one it overrides in some trials only (a conditional space entry, a setting some
    variants set) is kept, and returned as a note to print. `train` and `data describe` use the base
    config, where such a `--set` is how to pick one value."""
    found = [_searched_override(read.study, key) for key in read.overridden]
    refused = [line for always, line in filter(None, found) if always]
    if refused:
        raise StudyError("\n".join(refused))
    return [f"note: {line}" for _, line in filter(None, found)]


def _searched_override(study: StudyConfig, key: str) -> tuple[bool, str] | None:
    """Whether the search overrides a `--set` of `key` in every trial (seen: `--set
    regularizer.lambda_within=1000` trained exactly the unchanged study), and the line saying so,
    naming the search entry and how to fix the value there; None where the search leaves it alone."""

    def covers(searched: str) -> bool:
        return searched == key or searched.startswith(f"{key}.")

    search = study.search
    entry = next(filter(covers, search.space), None)
    if entry is not None:
        sometimes = f" when {search.space[entry].when}" if search.space[entry].when else ""
        return not sometimes, (
            f"--set {key}: the search sets {entry} per trial{sometimes} (search.space.{entry}), so this value is not used "
            f"there; to fix it, replace the entry: --set 'search.space.{entry}={{type: choice, values: [VALUE]}}'"
        )  # fmt: skip
    entry = next(filter(covers, search.strata), None)
    if entry is not None:
        return True, f"--set {key}: {entry} is a stratum (search.strata.{entry}), so this value is not used; --set 'search.strata.{entry}=[VALUE]' runs one"
    setting = sorted(name for name, bundle in search.variants.items() if any(map(covers, bundle)))
    if setting:
        every = len(setting) == len(search.variants)
        which = "every variant sets it" if every else f"variants {', '.join(map(repr, setting))} set it"
        return every, f"--set {key}: {which} (search.variants), so this value is not used there; change the variants instead"
    return None


def _validated(raw: dict, sources: dict[str, str], path: Path) -> StudyConfig:
    """The schema's study of `raw`, or a StudyError naming every refused setting, a line each."""
    try:
        return StudyConfig.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            location = ".".join(_location_parts(error["loc"]))
            for message in error["msg"].removeprefix("Value error, ").splitlines():
                # A check across settings (refuse_inert_terms, ...) has no location; its message starts with
                # the key it refuses (`loss.name ldam ...`, `regularizer.start_epoch: ...`), blamed like one.
                text = f"{location}: {message}" if location else message
                lines.append(str(_refused(sources, location or LEADING_KEY.match(message).group(1), path, text)))
        raise StudyError("\n".join(dict.fromkeys(lines))) from None


def _blamed_space_line(line: str, sources: dict[str, str], path: Path) -> str:
    message = line.removeprefix(f"{path}: ")
    if message == line:
        return line
    return str(_refused(sources, message.split(":")[0].split(" ")[0], path, message))


def load_study_file(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> tuple[StudyConfig, list[Path]]:
    """The validated study of `path` (bases merged, overrides applied, data paths resolved) and the
    base files it used (`read_study` without --smoke)."""
    read = read_study(path, overrides)
    return read.study, read.bases


def load_study(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> StudyConfig:
    """Read, merge, override and validate a study file; every failure is a StudyError (a line per refusal)."""
    return load_study_file(path, overrides)[0]


def with_resolved_data_paths(study: StudyConfig) -> StudyConfig:
    """The study with its data paths absolute (ncstudy.data_root); unchanged when they already are."""
    data = study.data
    paths = resolved_data_paths(data.dataset, {key: getattr(data, key) for key in DATA_PATH_KEYS})
    if all(getattr(data, key) == value for key, value in paths.items()):
        return study
    return study.model_copy(update={"data": data.model_copy(update=paths)})
