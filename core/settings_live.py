"""Settings of the live-signals stage: where its records live (``[live]``) and how the paper
account fills orders (``[paper]``). Wired into :class:`core.config.Settings` as ``live``/``paper``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from core.settings_base import Section
from core.symbols import normalize_symbol

LIVE_DIR_NAME = "live"
LIVE_DB_NAME = "live.db"


class LiveSettings(Section):
    """The live stage's database and execution broker.

    ``database_url``: any SQLAlchemy URL (``postgresql+psycopg://user@host/candleflow`` for a
    shared deployment); empty: SQLite at ``<home>/live/live.db``. ``execution_broker``: who
    receives orders: the paper account, or a venue (its section holds the keys and the
    practice/demo host, the default). ``dry_run``: a venue only checks and logs each order and
    records it as DRY_RUN, never sending it; trading for real needs ``dry_run = false`` *and* the
    venue's credentials (the paper account always books its simulated fills).

    Notifications (``trading.notify``), off while ``webhook_url`` is unset: a Slack incoming
    webhook URL, or Telegram's ``https://api.telegram.org/bot<token>/sendMessage`` with
    ``telegram_chat_id``. The URL holds the token, so it is a ``SecretStr`` (masked in reprs and in
    ``config show``); set it through ``CANDLEFLOW_LIVE__WEBHOOK_URL`` rather than the TOML file.
    ``notify_min_tier``: the weakest tier announced, by conviction STRONG_BUY > BUY > NEUTRAL >
    AVOID, a SELL tier ranking with its BUY mirror. The URL's form and the chat id are checked when
    sending, not here: a load-time error would echo the raw value into the error message.

    ``new_order_max_age_bars``: an order the broker never confirmed (NEW: a run stopped between
    recording it and sending it) is sent again under its client order id by the next run while its
    signal candle closed at most this many bars ago; older, it is expired with a recorded reason
    and no longer counts as exposure (a market order sent that late is another trade).
    """

    database_url: str = ""
    execution_broker: Literal["paper", "oanda", "capital", "alpaca", "ccxt"] = "paper"
    dry_run: bool = True
    webhook_url: SecretStr | None = None
    webhook_format: Literal["slack", "telegram"] = "slack"
    telegram_chat_id: str = ""
    notify_min_tier: Literal["STRONG_BUY", "BUY", "NEUTRAL", "AVOID"] = "BUY"
    webhook_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    # ≥ 1: an order being sent by a concurrent run (its candle closed < 1 bar ago) is never expired.
    new_order_max_age_bars: int = Field(default=1, ge=1, le=1000)

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        value = value.strip()
        if value:
            from sqlalchemy.engine import make_url  # only when a URL is set: the CLI starts fast
            from sqlalchemy.exc import ArgumentError

            try:
                make_url(value)
            except ArgumentError:
                raise ValueError(
                    "not a SQLAlchemy database URL (e.g. sqlite:////abs/live.db or "
                    "postgresql+psycopg://user@host/db); leave empty for SQLite in the state "
                    "directory"
                ) from None
        return value

    def resolved_database_url(self, home: Path) -> str:
        """``database_url``, or SQLite at ``<home>/live/live.db`` when it is empty."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{Path(home).expanduser().resolve() / LIVE_DIR_NAME / LIVE_DB_NAME}"


class PaperSettings(Section):
    """The paper account: its name (one database can hold several), starting balance and
    currency. Its fills cost what the backtest charges: the per-instrument cost model of
    ``[costs]`` (one owner; there are no paper-only costs). The balance is read from the settings
    only when the account is first created."""

    account: str = Field(default="paper", min_length=1, max_length=64)
    initial_balance: float = Field(default=100_000.0, gt=0)
    currency: str = "USD"

    @model_validator(mode="before")
    @classmethod
    def _moved_costs(cls, data: Any) -> Any:
        moved = sorted({"fee_bps", "slippage_bps"} & set(data)) if isinstance(data, dict) else []
        if moved:
            raise ValueError(
                f"paper.{', paper.'.join(moved)} moved to [costs] (per instrument: fee_bps, "
                "spread_bps, slippage_bps), which the backtest, the gate and the paper account "
                "all use; delete the key from [paper] and set [costs] instead"
            )
        return data

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        code = normalize_symbol(value) if value.strip() else ""
        if not (3 <= len(code) <= 5 and code.isalpha()):
            raise ValueError("expected a currency code such as USD, EUR or USDT")
        return code
