"""How the configuration reads the environment: a list may be written bare or comma-separated
(``CANDLEFLOW_TRAINING__FAMILIES=logreg,hgb``) as well as a JSON list, and a value that cannot be
decoded is reported in one line naming its variable."""

from __future__ import annotations

import json
import os
from types import UnionType
from typing import Any, get_args, get_origin

from pydantic.fields import FieldInfo
from pydantic_settings import EnvSettingsSource, NoDecode, SettingsError

ENV_PREFIX = "CANDLEFLOW_"


def split_list(value: Any) -> list[Any]:
    """A list, a JSON list or a comma-separated string (``EURUSD,BTCUSD``) → a list."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                raise ValueError("not a valid JSON list") from None
        else:
            return [part for part in (p.strip() for p in text.split(",")) if part]
    if not isinstance(value, list | tuple):
        raise ValueError("expected a list (or a comma-separated string)")
    return list(value)


class _EnvValueError(ValueError):
    """An environment value that cannot be decoded for the key ``key``."""

    def __init__(self, key: str, value: str, problem: str) -> None:
        super().__init__(problem)
        self.key, self.value, self.problem = key, value, problem


def _is_list(field: FieldInfo | None) -> bool:
    annotation = field.annotation if field is not None else None
    options = get_args(annotation) if isinstance(annotation, UnionType) else (annotation,)
    return any(get_origin(a) in (list, tuple, set, frozenset) for a in options)


class EnvSource(EnvSettingsSource):
    """The environment, where a list may also be written bare or comma-separated
    (``CANDLEFLOW_TRAINING__FAMILIES=logreg,hgb``) as well as a JSON list."""

    def decode_complex_value(self, field_name: str, field: FieldInfo | None, value: Any) -> Any:
        if field is not None and NoDecode in field.metadata:
            return value  # the field's own validator reads the text
        if isinstance(value, str) and _is_list(field):
            try:
                return split_list(value)
            except ValueError as exc:
                raise _EnvValueError(field_name, value, str(exc)) from None
        try:
            return super().decode_complex_value(field_name, field, value)  # type: ignore[arg-type]
        except ValueError as exc:
            raise _EnvValueError(field_name, value, f"not valid JSON ({exc})") from None


def describe_env_error(exc: SettingsError) -> str:
    """One line naming the environment variable pydantic-settings could not decode."""
    cause = exc.__cause__
    if not isinstance(cause, _EnvValueError):
        return f"invalid configuration in the {ENV_PREFIX}<SECTION>__<KEY> variables: {exc}"
    key = cause.key.upper()
    names = [
        name
        for name, value in os.environ.items()
        if name.upper().startswith(ENV_PREFIX)
        and name.upper().rsplit("__", 1)[-1].removeprefix(ENV_PREFIX) == key
        and value == cause.value
    ]
    where = (
        f"environment variable {names[0]} ({_dotted_key(names[0])})"
        if names
        else f"environment key {cause.key}"
    )
    return (
        f"{where} = {cause.value!r}: {cause.problem}; give a JSON value, or for a list a bare "
        "or comma-separated value"
    )


def _dotted_key(variable: str) -> str:
    """``CANDLEFLOW_TRAINING__FAMILIES`` → ``training.families``."""
    return variable[len(ENV_PREFIX) :].lower().replace("__", ".")
