"""The generated configuration reference: current, complete, and right about specific keys."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from cli.main import app
from core.config import Settings, load_settings
from core.config_reference import (
    GENERATE_COMMAND,
    parse_toml_comments,
    reference_markdown,
    reference_rows,
    toml_value,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def _model_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key of a model, walked here independently of the module under test."""
    keys = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += _model_keys(annotation, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def _table_rows(markdown: str) -> dict[str, list[str]]:
    """Key → the cells of its row in the Markdown tables."""
    rows = {}
    for line in markdown.splitlines():
        match = re.match(r"^\| `([^`]+)` \| (.*) \|$", line)
        if match:
            rows[match[1]] = [c.strip() for c in re.split(r"(?<!\\)\|", match[2])]
    return rows


def test_docs_file_is_the_generated_reference() -> None:
    assert DOCS.read_text(encoding="utf-8") == reference_markdown(), (
        f"docs/configuration.md is stale; regenerate it: {GENERATE_COMMAND}"
    )


def test_every_key_appears_with_its_environment_variable() -> None:
    rows = _table_rows(reference_markdown())
    expected = _model_keys(Settings)
    assert len(expected) > 100
    missing = [key for key in expected if key not in rows]
    assert missing == []
    for key in expected:
        env = "CANDLEFLOW_" + key.upper().replace(".", "__")
        assert rows[key][0] == f"`{env}`", key
    assert sorted(rows) == sorted(expected)  # and nothing that is not a key


def test_no_key_lacks_a_meaning() -> None:
    gaps = [row.key for row in reference_rows() if not row.meaning.strip()]
    assert gaps == [], (
        f"document these keys in candleflow.toml (a comment on or above them): {gaps}"
    )


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return value if isinstance(value, str) else json.dumps(value)


def test_every_environment_variable_is_one_the_settings_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A wrong variable name inside a known section is refused as an unknown key."""
    for row in reference_rows():
        if row.default is None:
            continue
        with monkeypatch.context() as env:
            env.setenv(row.env, _env_text(row.default))
            load_settings()  # raises on a name the model does not know


def test_nested_environment_variables_change_their_key(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = {row.key: row for row in reference_rows()}
    monkeypatch.setenv(rows["signals.weights.risk"].env, "0.5")
    monkeypatch.setenv(rows["features.families.regime"].env, "false")
    monkeypatch.setenv(rows["costs.default.fee_bps"].env, "1.5")
    settings = load_settings()
    assert settings.signals.weights.risk == 0.5
    assert settings.signals.weights.confidence == 0.35
    assert settings.features.families.regime is False
    assert settings.costs.default.fee_bps == 1.5


def test_defaults_are_written_as_toml_that_reads_back() -> None:
    for row in reference_rows():
        if row.default is not None:
            assert tomllib.loads(f"x = {toml_value(row.default)}")["x"] == row.default, row.key
    blocks = re.findall(r"```toml\n(.*?)```", reference_markdown(), flags=re.S)
    assert blocks
    indicators = tomllib.loads(blocks[-1])["features"]["indicators"]
    assert [i["function"] for i in indicators][:2] == ["RSI", "ATR"]


def test_spot_checks() -> None:
    rows = _table_rows(reference_markdown())
    env, type_, default, allowed, meaning = rows["training.folds"]
    assert (env, type_, default, allowed) == (
        "`CANDLEFLOW_TRAINING__FOLDS`",
        "int",
        "`4`",
        "≥ 2, ≤ 20",
    )
    assert meaning.startswith("purged K-fold")  # the trailing TOML comment
    assert rows["orchestration.task_runner"][3] == 'one of `"threads"`, `"dask"`'
    assert rows["training.families"][3].startswith('each of `"logreg"`')
    assert rows["training.embargo_bars"][2] == "*unset*"
    assert rows["signals.weights.risk"][4] == "room left before the loss limits"  # description
    assert rows["universe.history_days"][3] == "> 0, ≤ 36500"
    # A key commented out in the TOML still lends its comment.
    assert rows["home"][2] == '`".candleflow"`' and "state directory" in rows["home"][4]


def test_comment_parser() -> None:
    text = """# file header

[a]
# about a
x = "#not a comment"   # the x
# y = 3   # an optional y
z = [
  1,  # one
  2,
]
# a = b is prose

w = 1
"""
    found = parse_toml_comments(text)
    assert found.tables == {"": "file header", "a": "about a"}
    assert (found.keys["a.x"].trailing, found.keys["a.x"].above) == ("the x", "about a")
    assert found.keys["a.y"].trailing == "an optional y"
    assert found.keys["a.z"].above == ""
    assert "a.a" not in found.keys and "a.one" not in found.keys
    assert found.keys["a.w"].above == ""  # a blank line ends a comment block


def test_comment_parser_dotted_keys_and_arrays_of_tables() -> None:
    text = """[a.b]
# about c.d
c.d = 1   # the d
# e.f = 2   # an optional f

[[runs]]
# first run
k = 1
[[runs]]
k = 2   # the second k
# [not.a.table]
"""
    found = parse_toml_comments(text)
    assert (found.keys["a.b.c.d"].trailing, found.keys["a.b.c.d"].above) == ("the d", "about c.d")
    assert found.keys["a.b.e.f"].trailing == "an optional f"
    assert found.keys["runs.k"].trailing == "the second k"
    assert found.tables == {"a.b": "about c.d", "runs": "first run"}
    assert not [key for key in found.keys if "not" in key]


def test_cli_prints_the_reference() -> None:
    result = CliRunner().invoke(app, ["config", "reference"], catch_exceptions=False)
    assert result.exit_code == 0
    assert result.stdout == reference_markdown()
