"""The declarative label and feature specs, part of the validated configuration.

A spec names what to compute, not how: TA-Lib functions by name and parameters (any of TA-Lib's
functions), built-in families, higher timeframes and correlated symbols. It has a canonical JSON
form and a hash; every dataset and model records the hash of the *effective* spec (what was
actually built). Unknown TA-Lib functions or parameters, and parameter values TA-Lib refuses, fail
at load time, naming the choices or the allowed range.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.talib_params import catalog, param_ranges
from core.timeframes import parse_timeframe

Scale = Literal["auto", "none", "level", "diff", "close", "zscore"]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@cache
def talib_functions() -> dict[str, dict[str, Any]]:
    """TA-Lib's function name → its info (group, inputs, parameters with defaults, outputs): from
    the catalog of the installed version (no import of TA-Lib) or the library itself."""
    known = catalog()
    if known is not None:
        return known
    import talib
    from talib import abstract

    return {name: abstract.Function(name).info for name in talib.get_functions()}


class LabelSpec(_Spec):
    """Triple-barrier labelling (see ``features.labels``)."""

    pt: float = Field(default=2.0, gt=0, description="take-profit barrier in units of σ")
    sl: float = Field(default=2.0, gt=0, description="stop-loss barrier in units of σ")
    horizon: int = Field(default=24, ge=1, le=10_000, description="vertical barrier, in bars")
    vol: Literal["ewm", "atr"] = "ewm"
    vol_window: int = Field(default=48, ge=2, le=10_000)
    touch: Literal["close", "high_low"] = "high_low"
    cusum: float | None = Field(default=None, gt=0, description="CUSUM event filter, in σ")


class IndicatorSpec(_Spec):
    """One TA-Lib function: ``{function = "RSI", params = {timeperiod = 14}}``."""

    function: str
    params: dict[str, float] = Field(default_factory=dict)
    scale: Scale = "auto"

    @field_validator("function")
    @classmethod
    def _known(cls, value: str) -> str:
        name = value.strip().upper()
        functions = talib_functions()
        if name not in functions:
            close = difflib.get_close_matches(name, functions, n=5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(
                f"unknown TA-Lib function {value!r}{hint} (valid: {', '.join(sorted(functions))})"
            )
        return name

    @model_validator(mode="after")
    def _params(self) -> IndicatorSpec:
        allowed = dict(talib_functions()[self.function]["parameters"])
        unknown = sorted(set(self.params) - set(allowed))
        if unknown:
            choices = ", ".join(f"{k} (default {v})" for k, v in allowed.items()) or "none"
            raise ValueError(f"{self.function}: unknown parameter(s) {unknown}; valid: {choices}")
        ranges = param_ranges(self.function, len(allowed)) or {}
        for name, value in sorted(self.params.items()):
            problem = "not a finite number" if not math.isfinite(value) else None
            problem = problem or (ranges[name].problem(value) if name in ranges else None)
            if problem:
                raise ValueError(f"{self.function} parameter {name} = {value:g}: {problem}")
        params = tuple(sorted(self.params.items()))
        if not ranges and self.params and not _accepted(self.function, params):  # no ranges known
            raise ValueError(
                f"{self.function}: TA-Lib refuses the parameters {self.resolved_params}"
            )
        return self

    @property
    def resolved_params(self) -> dict[str, float]:
        """Every parameter, defaults filled in (what the hash and the column names use)."""
        return dict(_resolved(self.function, tuple(sorted(self.params.items()))))

    @property
    def key(self) -> str:
        """Column prefix: ``rsi_14``, ``bbands_20_2_2_0``."""
        return _key(self.function, tuple(sorted(self.params.items())))


# Both are read for every indicator of every feature build (a live decision reads ~100): worked
# out once per function and parameters.
@cache
def _resolved(function: str, params: tuple[tuple[str, float], ...]) -> tuple[tuple[str, Any], ...]:
    given = dict(params)
    defaults = dict(talib_functions()[function]["parameters"])
    # TA-Lib checks types: a parameter whose default is an int takes an int.
    return tuple((k, type(default)(given.get(k, default))) for k, default in defaults.items())


@cache
def _accepted(function: str, params: tuple[tuple[str, float], ...]) -> bool:
    """TA-Lib's own check of a parameter set: its lookback is -1 for a value it refuses."""
    from talib import abstract

    try:
        probe = abstract.Function(function)
        probe.set_parameters(dict(_resolved(function, params)))
        return probe.lookback >= 0
    except (TypeError, ValueError, OverflowError):  # e.g. a value past a C int: refused as well
        return False


@cache
def _key(function: str, params: tuple[tuple[str, float], ...]) -> str:
    values = "_".join(f"{v:g}".replace(".", "p") for _, v in _resolved(function, params))
    return f"{function.lower()}_{values}" if values else function.lower()


def _ind(function: str, **params: float) -> IndicatorSpec:
    return IndicatorSpec(function=function, params=params)


def _default_indicators() -> list[IndicatorSpec]:
    return [
        _ind("RSI", timeperiod=14),
        _ind("ATR", timeperiod=14),
        _ind("NATR", timeperiod=14),
        _ind("ADX", timeperiod=14),
        _ind("MACD", fastperiod=12, slowperiod=26, signalperiod=9),
        _ind("BBANDS", timeperiod=20),
        _ind("STOCH"),
        _ind("CCI", timeperiod=14),
        _ind("MFI", timeperiod=14),
        _ind("OBV"),
        _ind("WILLR", timeperiod=14),
        _ind("ROC", timeperiod=10),
        _ind("EMA", timeperiod=20),
        _ind("EMA", timeperiod=50),
        _ind("AROONOSC", timeperiod=14),
        _ind("ULTOSC"),
    ]


class FamiliesSpec(_Spec):
    """Built-in feature families computed without TA-Lib function names."""

    returns: list[int] = Field(default_factory=lambda: [1, 2, 4, 8, 24])
    volatility: list[int] = Field(default_factory=lambda: [12, 48])
    zscore: list[int] = Field(default_factory=lambda: [24, 96])
    candle_shape: bool = True
    volume_zscore: int | None = 48
    calendar: bool = True
    regime: bool = True

    @field_validator("returns", "volatility", "zscore")
    @classmethod
    def _windows(cls, value: list[int]) -> list[int]:
        if any(w < 1 for w in value):
            raise ValueError("windows must be ≥ 1")
        return sorted(set(value))


class CorrelatedSpec(_Spec):
    """Other symbols whose returns/volatility join as features, by the target's asset class (or
    by symbol in ``symbols``, which wins). A symbol never correlates with itself."""

    by_asset_class: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "crypto": ["BTCUSD"],
            "fx": ["EURUSD"],
            "metal": ["EURUSD"],
            "index": ["EURUSD"],
        }
    )
    symbols: dict[str, list[str]] = Field(default_factory=dict)
    returns: list[int] = Field(default_factory=lambda: [1, 4, 24])
    volatility: int = Field(default=24, ge=2)


class FeatureSpec(_Spec):
    """The whole feature spec (see the module docstring)."""

    indicators: list[IndicatorSpec] = Field(default_factory=_default_indicators)
    families: FamiliesSpec = Field(default_factory=FamiliesSpec)
    higher_timeframes: list[str] = Field(default_factory=lambda: ["4h"])
    correlated: CorrelatedSpec = Field(default_factory=CorrelatedSpec)

    @field_validator("higher_timeframes")
    @classmethod
    def _timeframes(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(parse_timeframe(t).name for t in value))

    @model_validator(mode="after")
    def _unique_indicators(self) -> FeatureSpec:
        keys = [i.key for i in self.indicators]
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        if repeated:
            raise ValueError(f"indicator(s) listed twice: {repeated}")
        return self

    def canonical_json(self) -> str:
        """Sorted keys, defaults resolved: the same spec always gives the same text."""
        data = self.model_dump(mode="json")
        data["indicators"] = [
            {"function": i.function, "params": i.resolved_params, "scale": i.scale}
            for i in self.indicators
        ]
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:16]
