"""``candleflow broker check``: with keys it asks the venue (a fake OANDA on 127.0.0.1) for one
candle, the account and the universe's rules and says what a live run would do, sending nothing;
without keys it fails in one line naming the variable to set (exit 2)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from brokers import oanda
from cli.main import app
from tests.brokers.exec_venues import OANDA_ACCOUNT, FakeOandaExec, serve
from tests.brokers.venues import SECRET


def test_without_keys_one_line_naming_the_variable() -> None:
    result = CliRunner().invoke(app, ["broker", "check", "--broker", "oanda"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "CANDLEFLOW_OANDA__TOKEN" in lines[0]


def test_with_keys_asks_the_venue_and_sends_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeOandaExec()
    monkeypatch.setenv("CANDLEFLOW_OANDA__TOKEN", SECRET)
    monkeypatch.setenv("CANDLEFLOW_OANDA__ACCOUNT_ID", OANDA_ACCOUNT)
    monkeypatch.setenv("CANDLEFLOW_UNIVERSE__SYMBOLS", "EURUSD,GBPUSD")
    with serve(fake) as url:
        monkeypatch.setitem(oanda.HOSTS, "practice", url)
        result = CliRunner().invoke(app, ["broker", "check", "--broker", "oanda", "--json"])
        table = CliRunner().invoke(app, ["broker", "check", "--broker", "oanda"])
    assert result.exit_code == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["account"] == f"oanda:{OANDA_ACCOUNT}" and found["equity"] == 100000.0
    assert found["mode"].startswith("DRY RUN") and found["candle"].startswith("EURUSD 1h")
    eurusd, gbpusd = found["instruments"]
    assert (eurusd["venue_symbol"], eurusd["min_size"], eurusd["price_decimals"]) == (
        "EUR_USD",
        1.0,
        5,
    )
    assert "BUY 1 EUR_USD" in eurusd["smallest_order"]
    assert gbpusd["error"] and "GBP_USD" in gbpusd["error"]  # this account cannot trade it
    assert table.exit_code == 0 and "DRY RUN" in table.stdout and SECRET not in table.stdout
    assert not fake.order_requests()  # nothing was sent
