"""Settings of the HTTP signal service (``candleflow api``, ``[api]``): where it listens, who may
ask it (API keys, required off the loopback interface), the TradingView webhook's shared secret,
and its request limits. Keys and the secret are ``SecretStr``: set them in the environment
(``CANDLEFLOW_API__ACCESS_KEYS``, ``CANDLEFLOW_API__WEBHOOK_SECRET``) or the secrets file."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from core.settings_base import Section
from core.settings_env import split_list

MIN_KEY_LENGTH = 16
_SECRET = ": set it in the environment or the CANDLEFLOW_SECRETS_FILE file, not in the TOML"


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine (``localhost``, 127.0.0.0/8, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip()).is_loopback
    except ValueError:  # a host name other than localhost: reachable from elsewhere
        return False


class ApiSettings(Section):
    """The HTTP signal service: predictions, the ledger's signals, the registry's models,
    Prometheus metrics and the TradingView webhook."""

    host: str = Field(
        default="127.0.0.1",
        description="interface to listen on; any other than the loopback requires API keys",
    )
    port: int = Field(default=8765, ge=1, le=65535)
    # Not ``keys``: ``dict(section)`` (Prefect resolving flow parameters) would call it.
    access_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="API keys (header X-API-Key) for predict and the read endpoints; none: "
        "open, allowed on the loopback interface only" + _SECRET,
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="shared secret of TradingView alerts (header X-Candleflow-Secret or the "
        "alert's passphrase); unset: the webhook refuses every alert" + _SECRET,
    )
    webhook_max_age_seconds: float = Field(
        default=300.0, gt=0, le=86_400, description="an alert whose time is older is refused"
    )
    max_body_bytes: int = Field(
        default=1_000_000, ge=1024, le=100_000_000, description="largest request body"
    )
    max_candles: int = Field(
        default=5000, ge=1, le=1_000_000, description="most candles one predict request carries"
    )
    rate_limit_per_second: float = Field(
        default=50.0, ge=0, le=1_000_000, description="requests per second per client; 0: off"
    )
    rate_limit_burst: int = Field(
        default=100, ge=1, le=1_000_000, description="requests a client may send at once"
    )
    model_refresh_seconds: float = Field(
        default=30.0,
        ge=0,
        le=86_400,
        description="how often the registry's champion/challenger aliases are read again",
    )

    @field_validator("access_keys", mode="before")
    @classmethod
    def _access_keys(cls, value: Any) -> list[Any]:
        # No check of the values here: a load-time error would echo them (see ``refusal``).
        return [k if isinstance(k, SecretStr) else str(k).strip() for k in split_list(value)]

    def refusal(self, host: str | None = None) -> str | None:
        """Why the service must not start on ``host`` (default: ``self.host``), or None."""
        host = self.host if host is None else host
        if any(len(k.get_secret_value()) < MIN_KEY_LENGTH for k in self.access_keys):
            return f"api.access_keys: every API key needs ≥ {MIN_KEY_LENGTH} characters"
        if not is_loopback(host) and not self.access_keys:
            return (
                f"the API would listen on {host} without API keys: set CANDLEFLOW_API__ACCESS_KEYS "
                f"(comma-separated, ≥ {MIN_KEY_LENGTH} characters each) or bind it to 127.0.0.1"
            )
        return None
