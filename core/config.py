"""One typed settings object for the whole pipeline.

Sources, strongest first: explicit arguments (CLI flags), environment variables
``CANDLEFLOW_<SECTION>__<KEY>`` (and ``CANDLEFLOW_HOME``), the TOML file, the defaults below.
Invalid values fail at load time with the key, the bad value and what is allowed.
"""

from __future__ import annotations

import os
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from core.errors import ConfigError
from core.feature_spec import FeatureSpec, LabelSpec
from core.instruments import instrument
from core.settings_api import ApiSettings
from core.settings_base import Section
from core.settings_brokers import (
    SECRETS_FILE_VARIABLE,
    AlpacaSettings,
    BrokerSettings,
    CapitalSettings,
    CcxtSettings,
    FilesSettings,
    OandaSettings,
    SimulatedSettings,
    secrets_source,
)
from core.settings_data import ValidationSettings
from core.settings_env import ENV_PREFIX, EnvSource, describe_env_error, split_list
from core.settings_live import LiveSettings, PaperSettings
from core.settings_orchestration import OrchestrationSettings, RetrainSettings
from core.settings_trading import RiskSettings, SignalSettings
from core.strategy import Costs
from core.symbols import normalize_symbol
from core.timeframes import parse_timeframe

CONFIG_FILE_NAME = "candleflow.toml"
DEFAULT_SYMBOLS = ["EURUSD", "GBPUSD", "USDJPY", "XAUUSD", "BTCUSD", "ETHUSD", "US500"]


class UniverseSettings(Section):
    """What to trade: symbols (any spelling; normalised), timeframes and how much history."""

    symbols: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(DEFAULT_SYMBOLS))
    timeframes: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["1h"])
    history_days: int = Field(default=730, gt=0, le=36500)

    @field_validator("symbols", mode="before")
    @classmethod
    def _symbols(cls, value: Any) -> list[str]:
        symbols = [normalize_symbol(s) for s in split_list(value)]
        if not symbols:
            raise ValueError("at least one symbol is needed")
        return list(dict.fromkeys(symbols))

    @field_validator("timeframes", mode="before")
    @classmethod
    def _timeframes(cls, value: Any) -> list[str]:
        timeframes = [parse_timeframe(t).name for t in split_list(value)]
        if not timeframes:
            raise ValueError("at least one timeframe is needed")
        return list(dict.fromkeys(timeframes))


class CostSpec(Section):
    """Trading costs in basis points of price: fee per side, spread per round trip, slippage per
    side. A round trip costs ``2·fee + spread + 2·slippage``."""

    fee_bps: float = Field(default=0.0, ge=0, le=1000)
    spread_bps: float = Field(default=1.0, ge=0, le=1000)
    slippage_bps: float = Field(default=0.5, ge=0, le=1000)

    @property
    def round_trip_bps(self) -> float:
        return 2 * self.fee_bps + self.spread_bps + 2 * self.slippage_bps

    def to_costs(self) -> Costs:
        return Costs(self.fee_bps, self.spread_bps, self.slippage_bps)


def _default_costs() -> dict[str, CostSpec]:
    return {
        "fx": CostSpec(fee_bps=0.0, spread_bps=1.0, slippage_bps=0.5),
        "metal": CostSpec(fee_bps=0.0, spread_bps=3.0, slippage_bps=1.0),
        "index": CostSpec(fee_bps=0.0, spread_bps=2.0, slippage_bps=1.0),
        "crypto": CostSpec(fee_bps=10.0, spread_bps=2.0, slippage_bps=2.0),
    }


class CostsSettings(Section):
    """Costs by symbol, else by asset class, else ``default``."""

    default: CostSpec = Field(default_factory=lambda: CostSpec(spread_bps=5.0, slippage_bps=2.0))
    by_asset_class: dict[str, CostSpec] = Field(default_factory=_default_costs)
    by_symbol: dict[str, CostSpec] = Field(default_factory=dict)

    def for_symbol(self, symbol: str, asset_class: str) -> CostSpec:
        symbol = normalize_symbol(symbol)
        by_symbol = {normalize_symbol(k): v for k, v in self.by_symbol.items()}
        return by_symbol.get(symbol) or self.by_asset_class.get(asset_class) or self.default

    def of(self, symbol: str) -> Costs:
        """The cost model of ``symbol``: what the backtest charges and the paper account books."""
        return self.for_symbol(symbol, instrument(symbol).asset_class.value).to_costs()


class TrainingSettings(Section):
    """Per-symbol training: families, splits, tuning budget, decision threshold, ensemble."""

    families: list[Literal["logreg", "hgb", "xgboost", "lightgbm"]] = Field(
        default_factory=lambda: ["logreg", "hgb", "xgboost", "lightgbm"]
    )
    development: float = Field(
        default=0.25,
        gt=0.0,
        lt=0.9,
        description="share of the events (the first) for tuning and model selection; every "
        "later event is predicted out of sample by the walk-forward",
    )
    walk_forward: Literal["anchored", "rolling"] = Field(
        default="anchored",
        description="refit on every earlier event (anchored) or on the last `window_bars`",
    )
    refit_every_bars: int = Field(
        default=720, ge=1, le=1_000_000, description="walk-forward: bars between refits"
    )
    window_bars: int = Field(
        default=8760, ge=100, le=10_000_000, description="rolling walk-forward: training window"
    )
    folds: int = Field(default=4, ge=2, le=20)
    embargo_bars: int | None = Field(default=None, ge=0, description="None: the label horizon")
    trials: int = Field(default=4, ge=1, le=10_000, description="Optuna trials per family")
    timeout_seconds: float | None = Field(default=None, gt=0, description="per family")
    seed: int = Field(default=42, ge=0)
    threshold: float = Field(default=0.55, gt=0.0, lt=1.0)
    ensemble: Literal["weighted", "majority"] = "weighted"
    min_agree: int = Field(default=2, ge=1, description="majority vote: models that must agree")
    n_threads: int = Field(default=1, ge=1, le=64, description="threads per model fit")
    fit_processes: bool = Field(
        default=True,
        description="fit a training's families side by side in worker processes (same results)",
    )

    @model_validator(mode="before")
    @classmethod
    def _oos_replaced(cls, data: Any) -> Any:
        if isinstance(data, dict) and "oos" in data:
            raise ValueError(
                "training.holdout was replaced by the walk-forward evaluation: "
                "training.development (the first share of events for tuning; every later one "
                "is predicted out of sample), refit_every_bars, walk_forward"
            )
        return data


class PromotionSettings(Section):
    """The gate a challenger must pass to become ``champion`` (see ``models/promotion.py``)."""

    min_dsr: float = Field(
        default=0.95, ge=0.0, le=1.0, description="out-of-sample Deflated Sharpe"
    )
    deflate_by: Literal["effective_trials", "all_trials"] = Field(
        default="effective_trials",
        description=(
            "the DSR's N: every trial ever tried counted as the independent trials it amounts "
            "to (their returns' correlation), or each as independent (stricter)"
        ),
    )
    min_auc_lift: float = Field(default=0.02, ge=0.0, le=0.5, description="AUC ≥ 0.5 + lift")
    min_trades: int = Field(default=30, ge=0, description="out-of-sample trades")
    min_oos_days: int = Field(
        default=365,
        ge=0,
        le=100_000,
        description="out-of-sample days; ~250 are needed to see an annual Sharpe of 2 at all",
    )
    max_pbo: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Probability of Backtest Overfitting at most this (None: reported only)",
    )
    benchmark: Literal["buy_and_hold", "flat"] = Field(
        default="buy_and_hold",
        description="net Sharpe must beat buy-and-hold's out of sample, or only flat (0)",
    )
    confidence: float = Field(
        default=0.90, gt=0.5, lt=1.0, description="paired bootstrap: P(challenger beats champion)"
    )
    bootstrap_samples: int = Field(default=2000, ge=100, le=100_000)
    block_days: int = Field(default=5, ge=1, le=365, description="bootstrap block length")
    seed: int = Field(default=0, ge=0)


class MlflowSettings(Section):
    """Where runs and models are tracked; empty: SQLite in the state directory."""

    tracking_uri: str = ""


class CollectSettings(Section):
    """How candles are collected."""

    overlap_bars: int = Field(default=3, ge=0, le=1000)
    max_workers: int = Field(default=4, ge=1, le=64)
    retries: int = Field(default=3, ge=0, le=20)
    retry_delay_seconds: float = Field(default=2.0, ge=0.0, le=600.0)


class Settings(BaseSettings):
    """The whole configuration. Build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    home: Path = Path(".candleflow")
    universe: UniverseSettings = Field(default_factory=UniverseSettings)
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    simulated: SimulatedSettings = Field(default_factory=SimulatedSettings)
    files: FilesSettings = Field(default_factory=FilesSettings)
    ccxt: CcxtSettings = Field(default_factory=CcxtSettings)
    oanda: OandaSettings = Field(default_factory=OandaSettings)
    capital: CapitalSettings = Field(default_factory=CapitalSettings)
    alpaca: AlpacaSettings = Field(default_factory=AlpacaSettings)
    collect: CollectSettings = Field(default_factory=CollectSettings)
    validation: ValidationSettings = Field(default_factory=ValidationSettings)
    costs: CostsSettings = Field(default_factory=CostsSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    promotion: PromotionSettings = Field(default_factory=PromotionSettings)
    signals: SignalSettings = Field(default_factory=SignalSettings)
    risk: RiskSettings = Field(default_factory=RiskSettings)
    live: LiveSettings = Field(default_factory=LiveSettings)
    paper: PaperSettings = Field(default_factory=PaperSettings)
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    orchestration: OrchestrationSettings = Field(default_factory=OrchestrationSettings)
    retrain: RetrainSettings = Field(default_factory=RetrainSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    labels: LabelSpec = Field(default_factory=LabelSpec)
    features: FeatureSpec = Field(default_factory=FeatureSpec)

    @field_validator("home")
    @classmethod
    def _home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = _ACTIVE_CONFIG_FILE.get()
        sources: list[PydanticBaseSettingsSource] = [init_settings, EnvSource(settings_cls)]
        secrets = secrets_source(settings_cls)
        if secrets is not None:
            sources.append(secrets)
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    @property
    def candles_dir(self) -> Path:
        return self.home / "candles"


# The TOML file of the load in progress (a context variable, so concurrent loads do not mix).
_ACTIVE_CONFIG_FILE: ContextVar[Path | None] = ContextVar("candleflow_config", default=None)


def shipped_config_file() -> Path:
    """The default ``candleflow.toml``: at the repository root, or inside the installed package."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / CONFIG_FILE_NAME, here / CONFIG_FILE_NAME):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"the shipped {CONFIG_FILE_NAME} is missing from the installation ({here})")


def resolve_config_file(config: Path | str | None) -> Path:
    """``--config``, else ``$CANDLEFLOW_CONFIG``, else ``./candleflow.toml``, else the shipped."""
    explicit = config or os.environ.get(f"{ENV_PREFIX}CONFIG")
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            problem = "is a directory" if path.is_dir() else "does not exist"
            raise ConfigError(f"config file {path} {problem}")
        return path.resolve()
    local = Path.cwd() / CONFIG_FILE_NAME
    return local.resolve() if local.is_file() else shipped_config_file()


def load_settings(
    config: Path | str | None = None, home: Path | str | None = None, **overrides: Any
) -> Settings:
    """Load and validate the configuration; raise :class:`ConfigError` naming every bad key."""
    path = resolve_config_file(config)
    _check_environment()
    kwargs = dict(overrides)
    if home is not None:
        kwargs["home"] = Path(home)
    token = _ACTIVE_CONFIG_FILE.set(path)
    try:
        return Settings(**kwargs)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from None
    except SettingsError as exc:
        raise ConfigError(describe_env_error(exc)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except (UnicodeDecodeError, OSError) as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc}") from None
    finally:
        _ACTIVE_CONFIG_FILE.reset(token)


def _check_environment() -> None:
    """A ``CANDLEFLOW_`` variable that names no section would be ignored without a word (a typo
    such as ``CANDLEFLOW_UNIVRSE__HISTORY_DAYS``); refuse it. Unknown keys inside a known section
    are refused by the model itself."""
    sections = {name.upper() for name in Settings.model_fields}
    for name in os.environ:
        if not name.startswith(ENV_PREFIX):
            continue
        section = name[len(ENV_PREFIX) :].split("__", 1)[0]
        if section not in sections | {"CONFIG"} and name != SECRETS_FILE_VARIABLE:
            allowed = ", ".join(sorted(f"{ENV_PREFIX}{s}" for s in sections | {"CONFIG"}))
            raise ConfigError(
                f"environment variable {name}: unknown section {section.lower()!r};"
                f" variables start with one of {allowed}"
            )


def _describe(exc: ValidationError, path: Path) -> str:
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key")
            continue
        allowed = ""
        ctx = error.get("ctx") or {}
        if "expected" in ctx and str(ctx["expected"]) not in message:
            allowed = f" (allowed: {ctx['expected']})"
        lines.append(f"{key} = {error.get('input')!r}: {message}{allowed}")
    # One line, so the CLI can print it as its one-line reason.
    return (
        f"invalid configuration (file {path} or {ENV_PREFIX}<SECTION>__<KEY> variables): "
        + "; ".join(lines)
    )
