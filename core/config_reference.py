"""The configuration reference (``docs/configuration.md``), rendered from the settings model and the
comments of the shipped ``candleflow.toml``, so that it cannot drift from either.
Regenerate it with ``uv run --frozen python -m core.config_reference > docs/configuration.md``.
"""

from __future__ import annotations

import re
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types as at
import tomlkit
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python
from tomlkit.container import Container
from tomlkit.exceptions import TOMLKitError
from tomlkit.items import AoT, Comment, Item, Key, Table

from core.config import ENV_PREFIX, Settings, shipped_config_file

GENERATE_COMMAND = "uv run --frozen python -m core.config_reference > docs/configuration.md"
# A default longer than this goes below the section's table, as a TOML block.
MAX_INLINE_DEFAULT = 80


@dataclass(frozen=True)
class KeyComment:
    """The comments of one key in the TOML text: on its line, and the block directly above."""

    trailing: str = ""
    above: str = ""


@dataclass
class TomlComments:
    """Comments of a TOML text by dotted path: ``keys`` (commented-out keys included) and the
    leading comment block of each table (``""``: the top of the file)."""

    keys: dict[str, KeyComment] = field(default_factory=dict)
    tables: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Row:
    """One key of the reference."""

    key: str
    env: str
    type: str
    default: Any  # JSON-able; None: unset
    allowed: str
    meaning: str


def _comment_text(comment: str) -> str:
    return comment.lstrip("#").strip()


def _dotted(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def _key_values(table: str, key: Key, item: Item) -> Iterator[tuple[str, Item]]:
    """(dotted path, value) of a key; tomlkit stores a dotted key (``a.b = 1``) as nested tables."""
    path = _dotted(table, key.key)
    if isinstance(item, Table) and key.is_dotted():
        for sub_key, sub_item in item.value.body:
            if sub_key is not None:
                yield from _key_values(path, sub_key, sub_item)
    else:
        yield path, item


def _commented_key(text: str) -> tuple[Key, Item] | None:
    """A comment that is a key left out (``# y = 3  # an optional y``) as its key and value;
    ``None`` for prose, even prose with an ``=`` in it."""
    try:
        body = tomlkit.parse(text).body
    except TOMLKitError:
        return None
    if len(body) != 1 or body[0][0] is None:
        return None
    key, item = body[0]
    return None if _is_header(key, item) else (key, item)


def _is_header(key: Key, item: Item) -> bool:
    """Whether the item is a ``[table]`` or ``[[array of tables]]`` rather than a key's value."""
    return isinstance(item, AoT) or (isinstance(item, Table) and not key.is_dotted())


def parse_toml_comments(text: str) -> TomlComments:
    """Attach each comment of a TOML text to its key or table (see :class:`TomlComments`)."""
    found = TomlComments()
    _collect_comments(tomlkit.parse(text), "", found)
    return found


def _collect_comments(container: Container, table: str, found: TomlComments) -> None:
    """One table's items in file order: a comment block belongs to the key right below it, and
    the table's first block is its leading comment. A blank line ends a block; a block left
    before a table header belongs to nothing."""
    block: list[str] = []
    for key, item in container.body:
        if key is not None and _is_header(key, item):
            for sub in item.body if isinstance(item, AoT) else [item]:
                _collect_comments(sub.value, _dotted(table, key.key), found)
            block = []
            continue
        entry = (key, item) if key is not None else None
        if isinstance(item, Comment):
            text = _comment_text(item.trivia.comment)
            entry = _commented_key(text)
            if entry is None:
                block.append(text.removeprefix("- "))  # a bullet reads as prose once joined
                continue
        if block:
            found.tables.setdefault(table, " ".join(block))
        if entry is not None:
            for path, value in _key_values(table, *entry):
                found.keys[path] = KeyComment(_comment_text(value.trivia.comment), " ".join(block))
        block = []


def _unwrap(annotation: Any) -> list[Any]:
    """The members of a union such as ``X | None``, without ``None``."""
    if get_origin(annotation) in (Union, types.UnionType):
        return [a for arg in get_args(annotation) for a in _unwrap(arg) if a is not type(None)]
    return [annotation]


def _model_type(annotation: Any) -> type[BaseModel] | None:
    members = _unwrap(annotation)
    if len(members) == 1 and isinstance(members[0], type) and issubclass(members[0], BaseModel):
        return members[0]
    return None


def _type_name(annotation: Any) -> str:
    members = _unwrap(annotation)
    names = [_one_type_name(m) for m in members]
    optional = type(None) in get_args(annotation)
    return " or ".join(dict.fromkeys(names)) + (" (optional)" if optional else "")


def _one_type_name(annotation: Any) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return _type_name(type(args[0]))
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return f"table of {_type_name(args[1])}"
    simple = {bool: "bool", int: "int", float: "float", str: "string", Path: "path"}
    if annotation in simple:
        return simple[annotation]
    if annotation is SecretStr:
        return "secret string"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "{ " + ", ".join(annotation.model_fields) + " }"
    return "any"


def _choices(annotation: Any) -> list[Any]:
    """Literal choices anywhere in the annotation (``list[Literal[...]]`` included)."""
    if get_origin(annotation) is Literal:
        return list(get_args(annotation))
    return [c for arg in get_args(annotation) for c in _choices(arg)]


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def allowed_values(info: FieldInfo) -> str:
    """What the field accepts beyond its type: Literal choices, numeric bounds, length."""
    parts = []
    choices = _choices(info.annotation)
    if choices:
        each = "each of " if get_origin(_unwrap(info.annotation)[0]) is list else "one of "
        parts.append(each + ", ".join(f"`{toml_value(c)}`" for c in choices))
    bounds = {at.Gt: (">", "gt"), at.Ge: ("≥", "ge"), at.Lt: ("<", "lt"), at.Le: ("≤", "le")}
    for meta in info.metadata:
        for kind, (symbol, attribute) in bounds.items():
            if isinstance(meta, kind):
                parts.append(f"{symbol} {_number(getattr(meta, attribute))}")
        if isinstance(meta, at.MinLen):
            parts.append(f"length ≥ {meta.min_length}")
        if isinstance(meta, at.MaxLen):
            parts.append(f"length ≤ {meta.max_length}")
    return ", ".join(parts)


def _toml_key(key: str) -> str:
    return tomlkit.key(key).as_string()


def toml_value(value: Any) -> str:
    """A JSON-able value as it is written in TOML, inline tables spaced as in ``candleflow.toml``
    (``None`` entries are left out)."""
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value if v is not None) + "]"
    if isinstance(value, dict):
        items = [f"{_toml_key(k)} = {toml_value(v)}" for k, v in value.items() if v is not None]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    if isinstance(value, bool | int | float | str):
        return tomlkit.item(value).as_string()
    raise TypeError(f"no TOML form for {value!r}")


def _long_default(key: str, value: Any) -> str:
    """A default too long for a table cell, as a TOML block that parses."""
    table, _, name = key.rpartition(".")
    if isinstance(value, dict):
        body = "\n".join(f"{_toml_key(k)} = {toml_value(v)}" for k, v in value.items())
        return f"[{key}]\n{body}"
    items = "".join(f"  {toml_value(v)},\n" for v in value)
    return f"[{table}]\n{name} = [\n{items}]" if table else f"{name} = [\n{items}]"


def _walk(
    model: type[BaseModel], default: Any, path: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], FieldInfo, Any]]:
    """(path, field, default) of every key, nested models flattened into dotted paths."""
    for name, info in model.model_fields.items():
        value = (
            info.get_default(call_default_factory=True)
            if default is None
            else getattr(default, name)
        )
        sub = _model_type(info.annotation)
        if sub is not None and isinstance(value, BaseModel):
            yield from _walk(sub, value, (*path, name))
        else:
            yield (*path, name), info, value


def _meaning(path: tuple[str, ...], info: FieldInfo, comments: TomlComments) -> str:
    """The field's description, else its TOML comment (trailing, else the block above), else
    the leading comment of its table, else the comment of the inline table holding it."""
    if info.description:
        return info.description
    key = ".".join(path)
    own = comments.keys.get(key)
    if own and (own.trailing or own.above):
        return own.trailing or own.above
    if comments.tables.get(key):
        return comments.tables[key]
    for end in range(len(path) - 1, 0, -1):
        parent = comments.keys.get(".".join(path[:end]))
        if parent and (parent.trailing or parent.above):
            return parent.trailing or parent.above
    return ""


def reference_rows(comments: TomlComments | None = None) -> list[Row]:
    """Every key of :class:`Settings`, in model order."""
    if comments is None:
        comments = parse_toml_comments(shipped_config_file().read_text(encoding="utf-8"))
    rows = []
    for path, info, value in _walk(Settings, None, ()):
        rows.append(
            Row(
                key=".".join(path),
                env=ENV_PREFIX + "__".join(p.upper() for p in path),
                type=_type_name(info.annotation),
                default=to_jsonable_python(value),
                allowed=allowed_values(info),
                meaning=_meaning(path, info, comments),
            )
        )
    return rows


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _markdown_text(text: str) -> str:
    """A docstring or comment as Markdown: one line, reST ``code`` → `code`."""
    text = re.sub(r":\w+:`([^`]+)`", r"`\1`", " ".join(text.split())).replace("``", "`")
    # Outside code spans, ``<home>`` would be read as an HTML tag.
    spans = text.split("`")
    return "`".join(s if i % 2 else s.replace("<", "&lt;") for i, s in enumerate(spans))


_INTRO = f"""# Configuration reference

<!-- Generated; do not edit. Regenerate: {GENERATE_COMMAND} -->

Every key of candleflow's configuration, with its default. This file is generated from the
settings model (`core/config.py` and the section modules it imports) and the comments of the
shipped `candleflow.toml` by `{GENERATE_COMMAND}` (`candleflow config reference` prints the
same); a test fails when it is stale. `candleflow config show` prints the effective values.

## How sources combine

Strongest first:

1. command-line flags (`--home`, and a command's own options such as `--symbols`);
2. environment variables `{ENV_PREFIX}<SECTION>__<KEY>` (nested keys add `__<KEY>`, e.g.
   `{ENV_PREFIX}SIGNALS__WEIGHTS__RISK`), and `{ENV_PREFIX}HOME`;
3. the TOML file: `--config FILE`, else `${ENV_PREFIX}CONFIG`, else `./candleflow.toml`, else the
   shipped `candleflow.toml`;
4. the defaults below.

A partial file or variable keeps the other keys' values: tables merge key by key. In a variable,
tables are JSON; a list is JSON (`{ENV_PREFIX}TRAINING__FAMILIES='["hgb", "xgboost"]'`), a
comma-separated list (`hgb,xgboost`) or a single value (`hgb`). *unset* marks an
optional key without a default (leave it out; its meaning says what applies then). Unknown keys
and sections, and values outside *Allowed*, fail at load time naming the key.
"""

_TABLE_HEAD = (
    "| Key | Environment variable | Type | Default | Allowed | Meaning |\n|---|---|---|---|---|---|"
)


def _docstring(model: type[BaseModel]) -> str:
    return _markdown_text((model.__doc__ or "").strip().split("\n\n")[0])


def _section_text(name: str, rows: list[Row], comments: TomlComments) -> list[str]:
    """The section's description paragraphs: the TOML table's leading comment unless it already
    serves as a key's meaning (then the model's docstring), and its sub-tables' leading comments."""
    used = {row.meaning for row in rows}
    model = _model_type(Settings.model_fields[name].annotation)
    leading = comments.tables.get(name, "")
    paragraphs = [_markdown_text(leading) if leading and leading not in used else ""]
    if not paragraphs[0] and model is not None:
        paragraphs[0] = _docstring(model)
    keys = {row.key for row in rows}
    for table, text in comments.tables.items():
        if table.startswith(f"{name}.") and table not in keys and text not in used:
            paragraphs.append(f"`[{table}]`: {_markdown_text(text)}")
    return [p for p in paragraphs if p]


def _row_line(row: Row, long_defaults: list[str]) -> str:
    if row.default is None:
        default = "*unset*"
    elif len(toml_value(row.default)) > MAX_INLINE_DEFAULT:
        default = "see below"
        long_defaults.append(_long_default(row.key, row.default))
    else:
        default = f"`{toml_value(row.default)}`"
    cells = [f"`{row.key}`", f"`{row.env}`", row.type, default, row.allowed, row.meaning]
    return "| " + " | ".join(_cell(_markdown_text(c)) for c in cells) + " |"


def _section_markdown(name: str, rows: list[Row], comments: TomlComments) -> str:
    title = f"## [{name}]" if name else "## Top level"
    intro = _section_text(name, rows, comments) if name else ["Keys outside any `[section]`."]
    long_defaults: list[str] = []
    lines = [title, "", *(f"{p}\n" for p in intro), _TABLE_HEAD]
    lines += [_row_line(row, long_defaults) for row in rows]
    if long_defaults:
        blocks = "\n\n".join(long_defaults)
        lines += ["", "Defaults too long for the table:", "", f"```toml\n{blocks}\n```"]
    return "\n".join(lines) + "\n"


def sections(rows: list[Row]) -> dict[str, list[Row]]:
    """Rows by top-level section (``""``: keys outside any section), in model order."""
    grouped: dict[str, list[Row]] = {}
    for row in rows:
        head, dot, _ = row.key.partition(".")
        grouped.setdefault(head if dot else "", []).append(row)
    return grouped


def reference_markdown() -> str:
    """The whole Markdown reference (the content of ``docs/configuration.md``)."""
    comments = parse_toml_comments(shipped_config_file().read_text(encoding="utf-8"))
    grouped = sections(reference_rows(comments))
    contents = ", ".join(
        f"[`[{name}]`](#{name})" if name else "[top level](#top-level)" for name in grouped
    )
    parts = [_INTRO, f"Sections: {contents}.\n"]
    parts += [_section_markdown(name, rows, comments) for name, rows in grouped.items()]
    return "\n".join(parts)


if __name__ == "__main__":
    print(reference_markdown(), end="")
