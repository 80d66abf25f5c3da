"""What TA-Lib offers: each function's info (group, inputs, parameters and their defaults, outputs)
and the values each optional parameter accepts, read from its C abstract interface
(``TA_GetOptInputParameterInfo``: an integer or real range, or a list of named values), which the
Python wrapper does not expose. Where the C library cannot be reached, ``None``: the caller falls
back on TA-Lib's own lookback check, which refuses the same values unnamed.

Loading the configuration validates every indicator against this, and importing TA-Lib costs a
second (it imports pandas and polars): :func:`catalog` reads the same facts from
``talib_catalog.json``, written from the installed TA-Lib by ``python -m core.talib_params`` and
used only while that TA-Lib version is the one installed (a test compares it with the library).
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import json
import logging
import sys
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

CATALOG = Path(__file__).with_name("talib_catalog.json")

logger = logging.getLogger(__name__)

# TA_OptInputParameterType
_REAL_RANGE, _REAL_LIST, _INTEGER_RANGE, _INTEGER_LIST = 0, 1, 2, 3


class _OptInputInfo(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("param_name", ctypes.c_char_p),
        ("flags", ctypes.c_int),
        ("display_name", ctypes.c_char_p),
        ("data_set", ctypes.c_void_p),
        ("default_value", ctypes.c_double),
        ("hint", ctypes.c_char_p),
        ("help_file", ctypes.c_char_p),
    ]


class _IntegerRange(ctypes.Structure):
    _fields_ = [("min", ctypes.c_int), ("max", ctypes.c_int)]  # (suggested values follow)


class _RealRange(ctypes.Structure):
    _fields_ = [("min", ctypes.c_double), ("max", ctypes.c_double)]


class _IntegerPair(ctypes.Structure):
    _fields_ = [("value", ctypes.c_int), ("string", ctypes.c_char_p)]


class _IntegerList(ctypes.Structure):
    _fields_ = [("data", ctypes.POINTER(_IntegerPair)), ("count", ctypes.c_uint)]


@dataclass(frozen=True)
class ParamRange:
    """The values one parameter accepts: ``low``…``high``, whole numbers if ``integer``; or one
    of ``choices`` (value → name, e.g. a moving-average type)."""

    integer: bool
    low: float | None = None
    high: float | None = None
    choices: tuple[tuple[int, str], ...] = ()

    def problem(self, value: float) -> str | None:
        """Why ``value`` is refused (None: it is accepted)."""
        if self.choices:
            if value in {v for v, _ in self.choices}:
                return None
            named = ", ".join(f"{v} ({name})" for v, name in self.choices)
            return f"not one of {named}"
        if self.integer and value != int(value):
            return f"not a whole number; allowed: {self.describe()}"
        if (self.low is not None and value < self.low) or (
            self.high is not None and value > self.high
        ):
            return f"out of range; allowed: {self.describe()}"
        return None

    def describe(self) -> str:
        def text(x: float | None) -> str:
            return f"{x:g}" if x is not None else "?"

        whole = "whole numbers " if self.integer else ""
        return f"{whole}{text(self.low)} to {text(self.high)}"


@cache
def _library() -> ctypes.CDLL | None:
    """TA-Lib's C library, through the wrapper's extension module (which links it)."""
    try:
        from talib import _ta_lib

        library = ctypes.CDLL(_ta_lib.__file__)
        library.TA_GetFuncHandle.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
        library.TA_GetOptInputParameterInfo.argtypes = [
            ctypes.c_void_p,
            ctypes.c_uint,
            ctypes.POINTER(ctypes.POINTER(_OptInputInfo)),
        ]
        return library
    except (ImportError, OSError, AttributeError) as exc:
        logger.debug("TA-Lib's parameter ranges are not available: %s", exc)
        return None


@cache
def param_ranges(function: str, count: int) -> dict[str, ParamRange] | None:
    """The ranges of ``function``'s ``count`` optional parameters by wrapper name (``timeperiod``,
    ``fastk_period``), or None when the C library cannot tell."""
    known = catalog()
    if known is not None and function in known:
        ranges = known[function]["ranges"]
        return {name: _from_json(r) for name, r in ranges.items()} if len(ranges) == count else None
    return _library_ranges(function, count)


def _library_ranges(function: str, count: int) -> dict[str, ParamRange] | None:
    library = _library()
    if library is None:
        return None
    handle = ctypes.c_void_p()
    if library.TA_GetFuncHandle(function.encode(), ctypes.byref(handle)) != 0:
        return None
    ranges = {}
    for index in range(count):
        info = ctypes.POINTER(_OptInputInfo)()
        if library.TA_GetOptInputParameterInfo(handle, index, ctypes.byref(info)) != 0:
            return None
        name = info.contents.param_name.decode().removeprefix("optIn").lower()
        ranges[name] = _range(info.contents)
    return ranges


def _range(info: _OptInputInfo) -> ParamRange:
    if info.type == _INTEGER_LIST:
        items = ctypes.cast(info.data_set, ctypes.POINTER(_IntegerList)).contents
        pairs = (items.data[i] for i in range(items.count))
        return ParamRange(True, choices=tuple((p.value, p.string.decode()) for p in pairs))
    if info.type == _INTEGER_RANGE:
        whole = ctypes.cast(info.data_set, ctypes.POINTER(_IntegerRange)).contents
        return ParamRange(True, whole.min, whole.max)
    if info.type == _REAL_RANGE:
        real = ctypes.cast(info.data_set, ctypes.POINTER(_RealRange)).contents
        return ParamRange(False, real.min, real.max)
    return ParamRange(False)  # a real list: no TA-Lib function has one


def installed_version() -> str | None:
    """The installed TA-Lib wrapper's version (its metadata: no import), or None."""
    try:
        return importlib.metadata.version("TA-Lib")
    except importlib.metadata.PackageNotFoundError:
        return None


@cache
def catalog() -> dict[str, dict[str, Any]] | None:
    """Function name → its info plus ``ranges``, from ``talib_catalog.json`` when it was written
    from the TA-Lib installed now; else None (ask the library)."""
    try:
        data = json.loads(CATALOG.read_text())
    except (OSError, ValueError):
        return None
    if data.get("talib_version") != installed_version():
        logger.debug("%s is for TA-Lib %s: asking the library", CATALOG, data.get("talib_version"))
        return None
    return data["functions"]


def _from_json(r: dict[str, Any]) -> ParamRange:
    choices = tuple((int(v), str(name)) for v, name in r.get("choices", ()))
    return ParamRange(bool(r["integer"]), r.get("low"), r.get("high"), choices)


def library_catalog() -> dict[str, Any]:
    """What :func:`catalog` holds, read from the installed library (imports TA-Lib)."""
    import talib
    from talib import abstract

    functions = {}
    for name in sorted(talib.get_functions()):
        info = json.loads(json.dumps(abstract.Function(name).info))  # plain dicts and lists
        ranges = _library_ranges(name, len(info["parameters"])) or {}
        info["ranges"] = {k: asdict(v) for k, v in ranges.items()}
        functions[name] = info
    # JSON's own types (lists, not tuples), as the file reads back
    return json.loads(json.dumps({"talib_version": installed_version(), "functions": functions}))


def write_catalog(path: Path = CATALOG) -> None:
    path.write_text(json.dumps(library_catalog(), indent=1, sort_keys=False) + "\n")


if __name__ == "__main__":  # python -m core.talib_params: rewrite the catalog
    write_catalog(Path(sys.argv[1]) if len(sys.argv) > 1 else CATALOG)
    print(f"wrote {CATALOG if len(sys.argv) < 2 else sys.argv[1]}")
