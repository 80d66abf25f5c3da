from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from core.candles import empty_candles
from tests.conftest import T0, make_candles
from trading.charts import signal_chart

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _chart(path: Path, **overrides: Any) -> Path:
    candles = make_candles(T0, 200)
    kwargs: dict[str, Any] = {
        "symbol": "EURUSD",
        "timeframe": "1h",
        "signal_ts": T0 + timedelta(hours=190),
        "action": 1,
        "probability": 0.64,
        "tier": "BUY",
        "stop_loss": 1.098,
        "take_profit": 1.106,
        "path": path,
    }
    return signal_chart(candles, **(kwargs | overrides))


def _is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 1000


def test_writes_a_png(tmp_path: Path) -> None:
    target = tmp_path / "charts" / "nested" / "eurusd.png"
    out = _chart(target)
    assert out == target
    assert _is_png(out)


@pytest.mark.parametrize("missing", [None, math.nan])
def test_no_order_signal_without_levels(tmp_path: Path, missing: float | None) -> None:
    out = _chart(
        tmp_path / "flat.png",
        action=0,
        tier="NEUTRAL",
        probability=missing,
        stop_loss=missing,
        take_profit=missing,
    )
    assert _is_png(out)


def test_action_given_by_name_and_short_window(tmp_path: Path) -> None:
    out = _chart(tmp_path / "sell.png", action="sell", tier="SELL", last_n=20)
    assert _is_png(out)


def test_refuses_empty_candles(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty"):
        signal_chart(
            empty_candles(),
            symbol="EURUSD",
            timeframe="1h",
            signal_ts=T0,
            action=1,
            probability=0.6,
            tier="BUY",
            stop_loss=None,
            take_profit=None,
            path=tmp_path / "x.png",
        )
    assert not (tmp_path / "x.png").exists()


def test_refuses_a_signal_outside_the_window(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not among the 120 charted candles"):
        _chart(tmp_path / "old.png", signal_ts=T0 + timedelta(hours=10))
    assert not (tmp_path / "old.png").exists()


def test_levels_and_candles_are_drawn_only_when_given(tmp_path: Path) -> None:
    from PIL import Image

    from trading.charts import DOWN, SL_COLOR, TP_COLOR, UP

    def colors(path: Path) -> set[tuple[int, int, int]]:
        with Image.open(path) as image:
            return {c for _, c in image.convert("RGB").getcolors(maxcolors=1 << 20)}

    order = colors(_chart(tmp_path / "order.png"))
    flat = colors(_chart(tmp_path / "flat.png", action=0, stop_loss=None, take_profit=math.nan))
    assert {SL_COLOR, TP_COLOR, UP, DOWN} <= order
    assert {UP, DOWN} <= flat and not {SL_COLOR, TP_COLOR} & flat
