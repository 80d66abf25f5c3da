"""Settings of the market-data brokers: which one collects (``[broker]``) and one section per venue.
Credentials are ``SecretStr`` (masked in reprs and ``config show``): set them in the environment
(``CANDLEFLOW_OANDA__TOKEN``) or in a secrets file outside the repository named by
``CANDLEFLOW_SECRETS_FILE`` (``KEY=value`` lines), never in the TOML file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, DotEnvSettingsSource

from core.errors import ConfigError
from core.settings_base import Section
from core.settings_env import ENV_PREFIX
from core.symbols import normalize_symbol

SECRETS_FILE_VARIABLE = f"{ENV_PREFIX}SECRETS_FILE"
PriceComponent = Literal["mid", "bid", "ask"]
_SECRET = f": set it in the environment or the {SECRETS_FILE_VARIABLE} file, not in the TOML"


class BrokerSettings(Section):
    """Which market-data broker collects candles."""

    name: Literal["simulated", "files", "ccxt", "oanda", "capital", "alpaca"] = "simulated"


# The simulated market's default planted edge, calibrated in brokers/simulated.py (what the
# pipeline then promotes looks like a good real strategy, not a fantasy).
DEFAULT_EDGE = 0.215


class SimulatedSettings(Section):
    """The embedded deterministic market. ``edge = 0`` is a driftless random walk."""

    seed: int = Field(default=7, ge=0)
    edge: float = Field(default=DEFAULT_EDGE, ge=0.0, le=1.0)


class FilesSettings(Section):
    """The file broker: a folder of ``<SYMBOL>_<TF>.<ext>`` or ``<TF>/<SYMBOL>.<ext>`` files the
    user brings (csv, txt, csv.gz, txt.gz, parquet, pq); ``timezone``: that of naive timestamps."""

    directory: Path = Path("data")
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("not an IANA time zone (e.g. UTC, Europe/London)") from None
        return value


class CcxtSettings(Section):
    """A crypto exchange through ccxt (market data needs no credentials; orders do)."""

    exchange: str = "binance"
    max_candles_per_request: int = Field(default=1000, ge=1, le=100_000)
    options: dict[str, Any] = Field(default_factory=dict)
    api_key: SecretStr | None = Field(default=None, description="API key (orders)" + _SECRET)
    secret: SecretStr | None = Field(default=None, description="API secret (orders)" + _SECRET)
    password: SecretStr | None = Field(
        default=None, description="API passphrase, where the exchange has one" + _SECRET
    )
    sandbox: bool = Field(
        default=True,
        description="orders go to the exchange's sandbox (testnet); false: its real market",
    )
    currency: str = Field(
        default="USDT", description="the account currency whose balance is the equity (orders)"
    )


def _symbol_map(value: Any) -> Any:
    """Keys are symbols in any spelling (normalised); values are the venue's own names, kept."""
    if isinstance(value, dict):
        return {normalize_symbol(k): str(v).strip() for k, v in value.items()}
    return value


class OandaSettings(Section):
    """OANDA v20 REST (FX, metals, CFDs): ``token`` is the personal access token of the account's
    host; the practice host is the default."""

    environment: Literal["practice", "live"] = Field(
        default="practice",
        description="practice (api-fxpractice.oanda.com) or live (api-fxtrade.oanda.com)",
    )
    token: SecretStr | None = Field(default=None, description="v20 personal access token" + _SECRET)
    account_id: str = Field(
        default="", description="v20 account id (orders; not needed for candles)"
    )
    price: PriceComponent = Field(default="mid", description="candles from mid, bid or ask prices")
    instruments: dict[str, str] = Field(
        default_factory=lambda: {"US500": "SPX500_USD", "US100": "NAS100_USD"},
        description="symbol → OANDA instrument where it is not BASE_QUOTE (EURUSD → EUR_USD)",
    )
    timeout_seconds: float = Field(default=10.0, gt=0, le=300, description="per request")

    @field_validator("instruments", mode="before")
    @classmethod
    def _instruments(cls, value: Any) -> Any:
        return _symbol_map(value)


class CapitalSettings(Section):
    """Capital.com REST (CFDs): a session opened with the API key, the login identifier and the
    API key's password; the demo host is the default."""

    environment: Literal["demo", "live"] = Field(
        default="demo",
        description="demo (demo-api-capital.backend-capital.com) or live "
        "(api-capital.backend-capital.com)",
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="API key (Settings > API integrations)" + _SECRET,
    )
    identifier: SecretStr | None = Field(
        default=None, description="login e-mail of the account" + _SECRET
    )
    password: SecretStr | None = Field(
        default=None, description="the API key's custom password" + _SECRET
    )
    price: PriceComponent = Field(
        default="mid", description="candles from mid (bid+ask)/2, bid or ask prices"
    )
    epics: dict[str, str] = Field(
        default_factory=lambda: {"XAUUSD": "GOLD", "XAGUSD": "SILVER"},
        description="symbol → Capital.com epic where they differ (EURUSD is epic EURUSD)",
    )
    timeout_seconds: float = Field(default=10.0, gt=0, le=300, description="per request")

    @field_validator("epics", mode="before")
    @classmethod
    def _epics(cls, value: Any) -> Any:
        return _symbol_map(value)


class AlpacaSettings(Section):
    """Alpaca market data v2 (US stocks, crypto): the key pair of a paper or live account."""

    environment: Literal["paper", "live"] = Field(
        default="paper",
        description="whose keys these are: paper (paper-api.alpaca.markets) or live; "
        "asset look-ups go to that host",
    )
    key_id: SecretStr | None = Field(default=None, description="API key id" + _SECRET)
    secret_key: SecretStr | None = Field(default=None, description="API secret key" + _SECRET)
    feed: Literal["iex", "sip"] = Field(
        default="iex", description="stock bars feed: iex (free plan) or sip (all US exchanges)"
    )
    adjustment: Literal["raw", "split", "dividend", "all"] = Field(
        default="raw", description="corporate-action adjustment of stock bars"
    )
    timeout_seconds: float = Field(default=10.0, gt=0, le=300, description="per request")


def secrets_source(settings_cls: type[BaseSettings]) -> DotEnvSettingsSource | None:
    """The secrets file named by ``CANDLEFLOW_SECRETS_FILE`` (``CANDLEFLOW_X__Y=value`` lines, as
    in the environment, which wins over it), or None when the variable is unset."""
    name = os.environ.get(SECRETS_FILE_VARIABLE, "").strip()
    if not name:
        return None
    path = Path(name).expanduser()
    if not path.is_file():
        raise ConfigError(f"{SECRETS_FILE_VARIABLE}: secrets file {path} does not exist")
    return DotEnvSettingsSource(
        settings_cls, env_file=path, env_prefix=ENV_PREFIX, env_nested_delimiter="__"
    )
