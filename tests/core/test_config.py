from pathlib import Path

import pytest

from core.config import Settings, load_settings, shipped_config_file
from core.errors import ConfigError


def test_shipped_config_loads_with_documented_keys(tmp_path: Path) -> None:
    settings = load_settings()
    assert isinstance(settings, Settings)
    assert len(settings.universe.symbols) >= 6
    assert settings.universe.timeframes == ["1h"]
    assert 600 <= settings.universe.history_days <= 800
    assert settings.broker.name == "simulated"
    assert settings.simulated.edge > 0
    assert settings.home == (tmp_path / "home").resolve()  # CANDLEFLOW_HOME from conftest


def test_default_universe_spans_asset_classes() -> None:
    from core.instruments import AssetClass, instrument

    classes = {instrument(s).asset_class for s in load_settings().universe.symbols}
    assert {AssetClass.FX, AssetClass.METAL, AssetClass.CRYPTO, AssetClass.INDEX} <= classes


def test_environment_overrides_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANDLEFLOW_SIMULATED__EDGE", "0")
    monkeypatch.setenv("CANDLEFLOW_UNIVERSE__HISTORY_DAYS", "90")
    monkeypatch.setenv("CANDLEFLOW_UNIVERSE__SYMBOLS", "btc/usd, EUR-USD")
    monkeypatch.setenv("CANDLEFLOW_UNIVERSE__TIMEFRAMES", '["4h", "H1"]')
    settings = load_settings()
    assert settings.simulated.edge == 0
    assert settings.universe.history_days == 90
    assert settings.universe.symbols == ["BTCUSD", "EURUSD"]
    assert settings.universe.timeframes == ["4h", "1h"]


def test_explicit_arguments_win_over_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CANDLEFLOW_HOME", str(tmp_path / "env-home"))
    assert load_settings(home=tmp_path / "flag-home").home == (tmp_path / "flag-home").resolve()


def test_partial_user_file_keeps_defaults(tmp_path: Path) -> None:
    config = tmp_path / "mine.toml"
    config.write_text('[universe]\nsymbols = ["XAUUSD"]\n[simulated]\nseed = 99\n')
    settings = load_settings(config)
    assert settings.universe.symbols == ["XAUUSD"]
    assert settings.simulated.seed == 99
    assert settings.universe.timeframes == ["1h"]


@pytest.mark.parametrize(
    ("toml", "fragments"),
    [
        ("[universe]\nhistory_days = -3\n", ["universe.history_days", "-3", "greater than 0"]),
        ('[universe]\ntimeframes = ["2h"]\n', ["universe.timeframes", "2h", "allowed: 1m"]),
        ('[universe]\nsymbols = ["EUR;USD"]\n', ["universe.symbols", "EUR;USD"]),
        ('[broker]\nname = "mt5"\n', ["broker.name", "mt5", "'capital' or 'alpaca'"]),
        ("[simulated]\nedge = 3\n", ["simulated.edge", "3", "less than or equal to 1"]),
        ('[files]\ntimezone = "Mars/Base"\n', ["files.timezone", "Mars/Base", "IANA"]),
        ("[universe]\nsymbol = ['EURUSD']\n", ["universe.symbol", "unknown key"]),
        ("[nonsense]\nx = 1\n", ["nonsense", "unknown key"]),
    ],
)
def test_invalid_config_names_key_value_and_allowed(
    tmp_path: Path, toml: str, fragments: list[str]
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_settings(config)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message
    assert "\n" not in message


def test_broken_toml_and_missing_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[universe\nsymbols = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(broken)
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")


def test_local_config_file_is_picked_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "candleflow.toml").write_text("[simulated]\nseed = 123\n")
    monkeypatch.chdir(tmp_path)
    assert load_settings().simulated.seed == 123


def test_shipped_file_matches_model_defaults() -> None:
    """The shipped TOML documents the defaults; drift between them would surprise users."""
    import tomllib

    shipped = tomllib.loads(shipped_config_file().read_text())
    defaults = Settings()  # no TOML source: the model's own defaults
    for section, values in shipped.items():
        default = getattr(defaults, section)
        assert type(default).model_validate(values) == default, f"[{section}] differs"
    assert set(shipped) == set(Settings.model_fields) - {"home"}  # every section is documented


@pytest.mark.parametrize(
    ("toml", "fragment"),
    [
        ("[universe]\nsymbols = 5\n", "expected a list"),
        ("[universe]\ntimeframes = 1\n", "expected a list"),
    ],
)
def test_wrong_types_are_config_errors(tmp_path: Path, toml: str, fragment: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(toml)
    with pytest.raises(ConfigError, match=fragment):
        load_settings(config)


def test_undecodable_config_file(tmp_path: Path) -> None:
    config = tmp_path / "latin1.toml"
    config.write_bytes("[universe]\nsymbols = ['EURUSD'] # caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"cannot read|not valid TOML"):
        load_settings(config)


def test_misspelt_environment_section_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANDLEFLOW_UNIVRSE__HISTORY_DAYS", "5")
    with pytest.raises(ConfigError, match=r"CANDLEFLOW_UNIVRSE__HISTORY_DAYS.*unknown section"):
        load_settings()


def test_bad_json_list_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANDLEFLOW_UNIVERSE__SYMBOLS", '["EURUSD",')
    with pytest.raises(ConfigError, match=r"universe\.symbols.*JSON"):
        load_settings()


@pytest.mark.parametrize(
    ("variable", "value", "read"),
    [
        ("CANDLEFLOW_TRAINING__FAMILIES", "logreg", lambda s: s.training.families == ["logreg"]),
        (
            "CANDLEFLOW_TRAINING__FAMILIES",
            "logreg, hgb",
            lambda s: s.training.families == ["logreg", "hgb"],
        ),
        ("CANDLEFLOW_TRAINING__FAMILIES", '["hgb"]', lambda s: s.training.families == ["hgb"]),
        (
            "CANDLEFLOW_FEATURES__HIGHER_TIMEFRAMES",
            "4h",
            lambda s: s.features.higher_timeframes == ["4h"],
        ),
        (
            "CANDLEFLOW_FEATURES__HIGHER_TIMEFRAMES",
            "H4,1d",
            lambda s: s.features.higher_timeframes == ["4h", "1d"],
        ),
        (
            "CANDLEFLOW_FEATURES__FAMILIES__RETURNS",
            "24",
            lambda s: s.features.families.returns == [24],
        ),
        (
            "CANDLEFLOW_FEATURES__CORRELATED__RETURNS",
            "1,4",
            lambda s: s.features.correlated.returns == [1, 4],
        ),
    ],
)
def test_list_values_from_the_environment_may_be_bare_or_comma_separated(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, read: object
) -> None:
    monkeypatch.setenv(variable, value)
    assert read(load_settings())  # type: ignore[operator]


@pytest.mark.parametrize(
    ("variable", "value", "fragments"),
    [
        (
            "CANDLEFLOW_CCXT__OPTIONS",
            "timeout=5",
            ["CANDLEFLOW_CCXT__OPTIONS (ccxt.options)", "'timeout=5'", "not valid JSON"],
        ),
        (
            "CANDLEFLOW_TRAINING__FAMILIES",
            "[logreg",
            ["CANDLEFLOW_TRAINING__FAMILIES (training.families)", "not a valid JSON list"],
        ),
        ("CANDLEFLOW_TRAINING__FAMILIES", "lgbm", ["training.families.0 = 'lgbm'", "'lightgbm'"]),
    ],
)
def test_undecodable_environment_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, fragments: list[str]
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    for fragment in fragments:
        assert fragment in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("indicator", "fragment"),
    [
        (
            '{ function = "RSI", params = { timeperiod = -3 } }',
            "RSI parameter timeperiod = -3: out of range; allowed: whole numbers 2 to 100000",
        ),
        (
            '{ function = "RSI", params = { timeperiod = 14.5 } }',
            "RSI parameter timeperiod = 14.5: not a whole number",
        ),
        (
            '{ function = "BBANDS", params = { matype = 42 } }',
            "BBANDS parameter matype = 42: not one of 0 (SMA), 1 (EMA)",
        ),
        (
            '{ function = "MAMA", params = { fastlimit = 2 } }',
            "MAMA parameter fastlimit = 2: out of range; allowed: 0.01 to 0.99",
        ),
        (
            '{ function = "EMA", params = { timeperiod = inf } }',
            "EMA parameter timeperiod = inf: not a finite number",
        ),
    ],
)
def test_talib_parameter_values_are_checked_at_load_time(
    tmp_path: Path, indicator: str, fragment: str
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(f"[features]\nindicators = [{indicator}]\n")
    with pytest.raises(ConfigError) as info:
        load_settings(config)
    assert fragment in str(info.value) and "features.indicators.0" in str(info.value)
    assert "\n" not in str(info.value)


def test_talib_refuses_what_the_ranges_do_not_say(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the C library's ranges, TA-Lib's own lookback check still refuses the value."""
    from core import feature_spec

    monkeypatch.setattr(feature_spec, "param_ranges", lambda function, count: None)
    with pytest.raises(
        ValueError, match=r"RSI: TA-Lib refuses the parameters \{'timeperiod': -3\}"
    ):
        feature_spec.IndicatorSpec(function="RSI", params={"timeperiod": -3})
    assert feature_spec.IndicatorSpec(function="RSI", params={"timeperiod": 5}).key == "rsi_5"


def test_plausibility_bounds_by_asset_class_from_the_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = load_settings()
    assert settings.validation.bounds("EURUSD").max_price_jump == 1.5
    assert settings.validation.bounds("BTCUSD").max_price_jump == 5.0
    assert settings.validation.bounds("GOOG") == settings.validation.default.to_bounds()
    monkeypatch.setenv("CANDLEFLOW_VALIDATION__BY_ASSET_CLASS__FX__MAX_PRICE_JUMP", "3")
    monkeypatch.setenv("CANDLEFLOW_VALIDATION__DEFAULT__MAX_VOLUME", "1e9")
    settings = load_settings()
    assert settings.validation.bounds("EURUSD").max_price_jump == 3.0
    assert settings.validation.bounds("GOOG").max_volume == 1e9
    monkeypatch.setenv("CANDLEFLOW_VALIDATION__DEFAULT__MAX_PRICE_JUMP", "1")
    with pytest.raises(ConfigError, match=r"validation\.default\.max_price_jump = '1'"):
        load_settings()


def test_the_talib_catalog_is_what_the_installed_library_says() -> None:
    """``core/talib_catalog.json`` (read at load time instead of importing TA-Lib) holds exactly
    what the installed TA-Lib reports; after an upgrade: ``python -m core.talib_params``."""
    import json

    from core.talib_params import CATALOG, catalog, library_catalog

    assert json.loads(CATALOG.read_text()) == library_catalog()
    assert catalog() is not None  # in use: written for the installed version


def test_an_outdated_talib_catalog_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    from core import talib_params

    talib_params.catalog.cache_clear()
    monkeypatch.setattr(talib_params, "installed_version", lambda: "0.0.1")
    try:
        assert talib_params.catalog() is None
    finally:
        talib_params.catalog.cache_clear()
