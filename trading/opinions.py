"""What the signal weight hears beyond the model's own candle (``models.signal``): the higher
timeframe champion's vote and the newest fresh TradingView alert. Each is asked only when its
weight is > 0: at 0 (the default, what the promotion gate evaluated) it cannot change the
signal, so nothing is read — the decision path stays as fast as the gate's backtest assumed."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.errors import CandleflowError
from models.registry import CHAMPION
from models.signal import AlertOpinion, Vote
from models.tracking import registered_name
from trading.alerts import alert_opinion
from trading.live_models import LiveModel
from trading.scoring import score_last_candle

if TYPE_CHECKING:
    from trading.live import LiveContext

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outside:
    """The higher timeframe's vote and the TradingView alert a signal is weighed with (None:
    not asked, or there is none)."""

    higher: Vote | None = None
    alert: AlertOpinion | None = None


def outside_opinions(
    ctx: LiveContext, symbol: str, timeframe: str, model: LiveModel, shadow: bool = False
) -> Outside:
    """Each outside opinion whose weight is > 0. A shadow signal asks neither: the shadow
    report judges its vote alone."""
    weights = ctx.settings.signals.weights
    if shadow:
        return Outside()
    higher = higher_vote(ctx, symbol, model) if weights.higher_tf > 0 else None
    alert = None
    if weights.tradingview > 0:
        s = ctx.settings
        alert = alert_opinion(
            ctx.ledger.engine,
            ctx.store,
            symbol,
            timeframe,
            ctx.now,
            s.labels,  # as the shadow report and the API's alert hit rates judge outcomes
            s.signals.alert_max_age_bars,
        )
    return Outside(higher, alert)


def higher_vote(ctx: LiveContext, symbol: str, model: LiveModel) -> Vote | None:
    """The higher timeframe champion's vote on its newest closed candle, if one exists."""
    for higher in model.spec.higher_timeframes:
        other = ctx.cache.get(registered_name(symbol, higher), CHAMPION)
        if other is None:
            continue
        try:
            return score_last_candle(other, ctx.store, symbol, higher, ctx.now)[0].vote
        except CandleflowError as exc:
            logger.info("%s %s: no higher-timeframe confirmation (%s)", symbol, higher, exc)
    return None
