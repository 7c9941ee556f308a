"""The settings reference, generated from the study schema (ncstudy/config.py): one source of truth.

A MkDocs hook (mkdocs.yml, `hooks:`): at build time it adds the page `reference/settings.md`, a
table per section of every setting with its key, type, default, allowed values and the `description=`
of its pydantic Field. Nothing is committed, so the page cannot fall behind the schema; tests/test_docs.py
checks that every setting has a description and appears on the page.

    python docs/hooks/settings_reference.py      # print the page
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from ncstudy import config as schema

PAGE = "reference/settings.md"
SPACE_TYPES = (schema.LogUniform, schema.Uniform, schema.IntRange, schema.Choice, schema.Grid)
# Allowed values a validator enforces rather than the type.
EXTRA_ALLOWED = {"search.metric": ", ".join(f"`{m}`" for m in schema.OBJECTIVE_METRICS)}


@dataclass
class Setting:
    key: str
    type: str
    default: str
    allowed: str
    description: str | None
    section: bool  # a mapping of further settings


def _section_model(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType)


def type_name(annotation: Any) -> str:
    """The annotation as a reader of YAML says it."""
    if annotation is type(None):
        return "null"
    if annotation is Any:
        return "any"
    if _is_union(annotation):
        members = [a for a in get_args(annotation) if a is not type(None)]
        text = " or ".join(type_name(a) for a in members)
        return f"{text} or null" if len(members) < len(get_args(annotation)) else text
    origin = get_origin(annotation)
    if origin is Literal:
        return "string" if all(isinstance(v, str) for v in get_args(annotation)) else "one value"
    if origin is list:
        return f"list of {type_name(get_args(annotation)[0])}"
    if origin is tuple:
        return f"pair of {type_name(get_args(annotation)[0])}"
    if origin is dict:
        return "mapping"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    names = {int: "integer", float: "number", bool: "true/false", str: "string"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def yaml_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format(value, ".4g")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{}" if not value else "{" + ", ".join(f"{k}: {yaml_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def default_text(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "(section)"
    return f"`{yaml_value(value)}`"


def allowed_text(key: str, field: FieldInfo) -> str:
    parts = []
    for candidate in (field.annotation, *get_args(field.annotation)):
        if get_origin(candidate) is Literal:
            parts.append(", ".join(f"`{yaml_value(v)}`" for v in get_args(candidate)))
    bounds = {annotated_types.Ge: ("ge", ">="), annotated_types.Gt: ("gt", ">"), annotated_types.Le: ("le", "<="),
              annotated_types.Lt: ("lt", "<")}  # fmt: skip
    for item in field.metadata:
        for kind, (attribute, sign) in bounds.items():
            if isinstance(item, kind):
                parts.append(f"{sign} {yaml_value(getattr(item, attribute))}")
        if isinstance(item, annotated_types.MinLen):
            parts.append(f"at least {item.min_length} item{'s' if item.min_length > 1 else ''}")
        if isinstance(item, annotated_types.MaxLen):
            parts.append(f"at most {item.max_length} characters")
        pattern = getattr(item, "pattern", None)
        if pattern:
            parts.append("letters, digits, `_ . -`, starting with a letter or digit")
    if key in EXTRA_ALLOWED:
        parts.append(EXTRA_ALLOWED[key])
    return "; ".join(parts)


def settings(model: type[BaseModel] = schema.StudyConfig, prefix: str = "") -> list[Setting]:
    """Every setting of `model`, depth first; a section comes before its own settings."""
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        section = _section_model(field.annotation)
        rows.append(
            Setting(key, type_name(field.annotation), default_text(field), allowed_text(key, field),
                    field.description, section is not None)
        )  # fmt: skip
        if section is not None:
            rows.extend(settings(section, f"{key}."))
    return rows


def space_entries() -> dict[str, list[Setting]]:
    """The keys of a `search.space` entry, per entry type."""
    return {model.model_fields["type"].annotation.__args__[0]: settings(model) for model in SPACE_TYPES}


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The models an annotation holds anywhere: `X`, `X | None`, `dict[str, Annotated[Union[A, B], ...]]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in get_args(annotation) for model in _models_in(arg)]


def models() -> list[type[BaseModel]]:
    """Every model whose fields are settings: the study's sections and the search-space entries."""
    found: list[type[BaseModel]] = []
    pending = [schema.StudyConfig]
    while pending:
        model = pending.pop(0)
        if model not in found:
            found.append(model)
            pending += [m for field in model.model_fields.values() for m in _models_in(field.annotation)]
    return found


def _cell(text: str | None) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ")


def _sentence(description: str | None, optional: bool = False) -> str:
    text = _cell(description)
    text = text[:1].upper() + text[1:]
    return text + ("; null (the default) leaves it out." if optional else ".")


def _table(rows: list[Setting], strip: str = "") -> list[str]:
    lines = ["| key | type | default | allowed | what |", "| --- | --- | --- | --- | --- |"]
    for row in rows:
        key = row.key.removeprefix(strip)
        lines.append(
            f"| `{key}` | {_cell(row.type)} | {_cell(row.default)} | {_cell(row.allowed)} | {_cell(row.description)} |"
        )
    return lines


def render() -> str:
    rows = settings()
    out = [
        "# Settings",
        "",
        "Every setting of a study file, generated from the schema (`ncstudy/config.py`) when this site is",
        "built. A setting's dotted key is what `--set`, `search.space`, `search.strata` and",
        "`search.variants` name (`--set train.epochs=2`). Unknown keys are refused; `null` is YAML's",
        "none. `python -m ncstudy validate STUDY.yaml` prints a study's resolved value of every setting.",
        "How the sections fit together: [Writing a study](../studies.md).",
        "",
    ]
    top = [row for row in rows if "." not in row.key]
    out += ["## Top level", "", *_table([row for row in top if not row.section]), ""]
    for section in top:
        if not section.section:
            continue
        groups = [row for row in rows if row.section and (row.key == section.key or row.key.startswith(section.key + "."))]
        for group in groups:
            children = [row for row in rows if row.key.startswith(group.key + ".") and "." not in row.key[len(group.key) + 1 :]]
            leaves = [row for row in children if not row.section] + [row for row in children if row.section]
            if group.key != section.key:
                out += [f"### `{group.key}`", "", _sentence(group.description, "null" in group.type), ""]
            else:
                out += [f"## `{group.key}`", "", _sentence(group.description), ""]
            out += [*_table(leaves, f"{group.key}."), ""]
    out += [
        "## Search-space entries",
        "",
        "Each value of `search.space` is a mapping with a `type`; the other keys depend on it. Every entry",
        "may also have `when` (optuna and random only). [Writing a study](../studies.md#the-search) shows them in use.",
        "",
    ]
    for kind, entry in space_entries().items():
        out += [f"### `{kind}`", "", *_table(entry), ""]
    return "\n".join(out)


def undescribed() -> list[str]:
    """`Model.field` for every setting (of every section and search-space entry) without a description."""
    return [f"{model.__name__}.{name}" for model in models() for name, field in model.model_fields.items()
            if not (field.description or "").strip()]  # fmt: skip


def on_files(files: Any, config: Any) -> Any:
    """MkDocs hook: add the generated page; a setting without a description fails the build."""
    from mkdocs.exceptions import PluginError
    from mkdocs.structure.files import File

    if missing := undescribed():
        raise PluginError(f"settings without a description= in ncstudy/config.py: {', '.join(missing)}")
    files.append(File.generated(config, PAGE, content=render()))
    return files


if __name__ == "__main__":
    print(render())
