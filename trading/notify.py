"""Optional webhook notification of new signals (Slack or Telegram), off while
``[live] webhook_url`` is unset. Best effort: a failure is reported and logged, never raised, and
the URL (it holds the token) never reaches a log line or an error text."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

from core.reports import SignalReport
from core.settings_live import LiveSettings

logger = logging.getLogger(__name__)

# Conviction rank of a tier; a SELL tier ranks with its BUY mirror, AVOID (trading forbidden)
# lowest. ``notify_min_tier`` keeps the signals ranked at or above it.
TIER_RANK: dict[str, int] = {
    "STRONG_BUY": 3,
    "STRONG_SELL": 3,
    "BUY": 2,
    "SELL": 2,
    "NEUTRAL": 1,
    "AVOID": 0,
}
MAX_LINES = 40  # one message stays well under Telegram's 4096 characters
REDACTED = "<webhook-url>"


@dataclass(frozen=True)
class NotifyReport:
    """``sent``: signals in a delivered message; ``skipped``: signals left out (below the tier,
    not OK, shadow, or notifications off); ``error``: why the message was not delivered (its
    signals then count in neither)."""

    sent: int
    skipped: int
    error: str | None = None


def wanted(signal: SignalReport, min_tier: str) -> bool:
    """Whether ``signal`` is announced: a champion (not shadow) OK signal whose tier ranks at or
    above ``min_tier``. A signal without a status counts as OK."""
    if signal.shadow or (signal.status or "OK") != "OK":
        return False
    rank = TIER_RANK.get(str(signal.tier))
    return rank is not None and rank >= TIER_RANK[min_tier]


def _number(value: float | None, fmt: str) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return format(float(value), fmt)


def _line(signal: SignalReport) -> str:
    ts = signal.ts
    when = str(ts) if ts is None else ts.strftime("%Y-%m-%d %H:%M %Z").strip()
    return (
        f"{signal.symbol} {signal.timeframe} {when}: {signal.action} {signal.tier}"
        f" p={_number(signal.probability, '.3f')}"
        f" weight={_number(signal.weight, '.1f')}"
    )


def format_message(signals: Sequence[SignalReport]) -> str:
    """The message text: a header, then one line per signal (at most ``MAX_LINES``)."""
    lines = [f"candleflow: {len(signals)} signal(s)"]
    lines += [_line(s) for s in signals[:MAX_LINES]]
    if len(signals) > MAX_LINES:
        lines.append(f"… and {len(signals) - MAX_LINES} more")
    return "\n".join(lines)


def payload(text: str, settings: LiveSettings) -> dict[str, str]:
    """The JSON body: Slack ``{"text"}``, Telegram ``{"chat_id", "text"}``."""
    if settings.webhook_format == "telegram":
        return {"chat_id": settings.telegram_chat_id, "text": text}
    return {"text": text}


def secret_fragments(url: str) -> list[str]:
    """The strings to hide: the URL as given and as httpx spells it, and its path and query
    (where Slack and Telegram keep the token), longest first."""
    fragments = {url}
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        parsed = None
    if parsed is not None:
        raw = (parsed.raw_path, parsed.query)
        fragments |= {str(parsed), parsed.path, *(part.decode("ascii", "replace") for part in raw)}
    return sorted((f for f in fragments if len(f) > 1), key=len, reverse=True)


def redact(text: str, fragments: Sequence[str]) -> str:
    for fragment in fragments:
        text = text.replace(fragment, REDACTED)
    return text


class _RedactFilter(logging.Filter):
    """Rewrites a log record with the secret fragments replaced (httpx logs every request URL)."""

    def __init__(self, fragments: Sequence[str]) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg, record.args = redact(message, self.fragments), None
        return True


@contextmanager
def _redacted_http_logs(fragments: Sequence[str]) -> Iterator[None]:
    # httpx logs each request's URL at INFO on the "httpx" logger (httpcore's DEBUG lines name
    # only the host); a filter there rewrites the record before any handler sees it.
    log = logging.getLogger("httpx")
    log_filter = _RedactFilter(fragments)
    log.addFilter(log_filter)
    try:
        yield
    finally:
        log.removeFilter(log_filter)


def _config_problem(url: str, settings: LiveSettings) -> str | None:
    if not url.lower().startswith(("https://", "http://")):
        return "[live] webhook_url is not an http(s) URL (its value is not shown: it holds a token)"
    if settings.webhook_format == "telegram" and not settings.telegram_chat_id.strip():
        return "[live] webhook_format is telegram but telegram_chat_id is empty"
    return None


def _post(client: httpx.Client, url: str, body: dict[str, str], timeout: float) -> str | None:
    """POST ``body``; None when delivered, else the reason (not yet redacted)."""
    try:
        response = client.post(url, json=body, timeout=timeout)
    except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
        # Best effort by design: the signals are already in the ledger, and a chat outage must
        # not stop orders. The reason is returned and logged by the caller.
        return f"webhook request failed: {type(exc).__name__}: {exc}"
    if response.is_success:
        return None
    return f"webhook answered HTTP {response.status_code}: {response.text[:200]}"


def notify(
    signals: Sequence[SignalReport], settings: LiveSettings, client: httpx.Client | None = None
) -> NotifyReport:
    """Announce the wanted signals (:func:`wanted`) in one message. Never raises on a delivery
    failure: the report carries the reason, the URL redacted."""
    if settings.webhook_url is None:
        return NotifyReport(sent=0, skipped=len(signals))
    chosen = [s for s in signals if wanted(s, settings.notify_min_tier)]
    skipped = len(signals) - len(chosen)
    if not chosen:
        return NotifyReport(sent=0, skipped=skipped)
    url = settings.webhook_url.get_secret_value().strip()
    fragments = secret_fragments(url)
    error = _config_problem(url, settings)
    if error is None:
        body = payload(format_message(chosen), settings)
        with _redacted_http_logs(fragments):
            if client is None:
                with httpx.Client() as own:
                    error = _post(own, url, body, settings.webhook_timeout_seconds)
            else:
                error = _post(client, url, body, settings.webhook_timeout_seconds)
    if error is not None:
        error = redact(error, fragments)
        logger.warning("signal notification not sent (%d signal(s)): %s", len(chosen), error)
        return NotifyReport(sent=0, skipped=skipped, error=error)
    logger.info("notified %d signal(s) by %s webhook", len(chosen), settings.webhook_format)
    return NotifyReport(sent=len(chosen), skipped=skipped)
