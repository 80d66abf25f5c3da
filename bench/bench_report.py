"""The backtest report in a real browser: trains and records a few symbols on the simulated
market, makes each one champion (the gate's verdict, else a manual promotion that keeps it), builds
`candleflow report backtest`'s HTML from the recorded evidence and opens it in headless Chromium
with the network cut: every chart must draw with nothing fetched. Writes a screenshot of the page.

Prints one row per step (seconds, bytes, charts drawn, requests that tried to leave the file)
against a reference measured in the same run: the matplotlib equity PNG a training logs today.

    apt-get install -y chromium     # Debian's; playwright's own browser download is not used
    python -m uv run --with playwright python bench/bench_report.py [--symbols BTCUSD,ETHUSD]
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import RESULTS, save

END = datetime(2026, 11, 1, tzinfo=UTC)
CHROMIUM = "/usr/bin/chromium"


def champion(home: Path, symbol: str, days: int, trials: int) -> str:
    """Train ``symbol`` on the simulated market, record it and make it champion; its verdict."""
    from brokers.simulated import SimulatedBroker
    from core.config import load_settings
    from core.store import CandleStore
    from features.dataset import build_dataset, load_inputs
    from models.recording import record_training
    from models.registry import Reviewer
    from models.tracking import setup
    from models.training import TrainingConfig, train_dataset

    settings = load_settings(home=home)
    store = CandleStore(home)
    candles = SimulatedBroker().fetch_candles(symbol, "1h", END - timedelta(days=days), END)
    store.upsert(symbol, "1h", candles)
    inputs = load_inputs(store, symbol, "1h", settings.features)
    dataset = build_dataset(inputs, symbol, "1h", settings.features, settings.labels)
    cfg = dataclasses.replace(
        TrainingConfig.from_settings(settings, symbol, "1h"),
        families=("logreg", "lightgbm"),
        trials=trials,
    )
    result = train_dataset(dataset, inputs.candles, cfg, home / "optuna")
    run = record_training(result, cfg, dataset, home)
    reviewer = Reviewer(settings, setup(home))
    decision = reviewer.review(symbol, "1h", run.version)
    if not decision.promoted:  # a report of a champion: the gate's reasons stay on the version
        decision = reviewer.promote_manually(symbol, "1h", run.version, "bench: show a report")
    return decision.summary()


def matplotlib_reference(daily) -> float:
    """Seconds to draw today's equity PNG (what a training logs) for the same daily record."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    start = time.perf_counter()
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(daily["day"].to_list(), np.cumprod(1 + daily["ret"].to_numpy()), label="strategy")
    ax.plot(daily["day"].to_list(), np.cumprod(1 + daily["bh_ret"].to_numpy()), label="b&h")
    ax.legend()
    fig.savefig(io.BytesIO(), dpi=90)
    plt.close(fig)
    return time.perf_counter() - start


def browse(page_path: Path, screenshot: Path, charts: int) -> dict:
    """Open the report offline in Chromium, wait for every chart, screenshot it."""
    from playwright.sync_api import sync_playwright

    leaving: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1280, "height": 900}, offline=True)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))

        def route(r):  # anything but the file itself would be a dependency on the network
            if r.request.url.startswith("file:"):
                return r.continue_()
            leaving.append(r.request.url)
            return r.abort()

        page.route("**/*", route)
        start = time.perf_counter()
        page.goto(page_path.as_uri())
        page.wait_for_function(
            f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {charts}",
            timeout=60_000,
        )
        drawn_s = time.perf_counter() - start
        drawn = page.evaluate("document.querySelectorAll('.js-plotly-plot').length")
        lines = page.evaluate(
            "document.querySelectorAll('.js-plotly-plot .scatterlayer path.js-line').length"
        )
        bars = page.evaluate("document.querySelectorAll('.js-plotly-plot .bars path').length")
        page.screenshot(path=str(screenshot), full_page=True)
        first = screenshot.with_name(screenshot.stem + "_first.png")
        page.locator("section").first.screenshot(path=str(first))
        browser.close()
    return {
        "drawn_s": round(drawn_s, 2),
        "charts": drawn,
        "line_traces": lines,
        "bars": bars,
        "requests_leaving": len(leaving),
        "page_errors": len(errors),
        "screenshots": f"{screenshot}, {first}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", default="BTCUSD,ETHUSD")
    parser.add_argument("--days", type=int, default=400)
    parser.add_argument("--trials", type=int, default=4)
    args = parser.parse_args()
    symbols = [s.strip() for s in args.symbols.split(",") if s.strip()]

    from models.report import load_record, render
    from models.tracking import setup

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        for symbol in symbols:
            start = time.perf_counter()
            verdict = champion(home, symbol, args.days, args.trials)
            rows.append({"step": f"train+record {symbol}", "seconds": time.perf_counter() - start})
            print(verdict)
        client = setup(home)
        start = time.perf_counter()
        records = [load_record(client, s, "1h") for s in symbols]
        loaded = time.perf_counter() - start
        start = time.perf_counter()
        page = render(records)
        rendered = time.perf_counter() - start
        RESULTS.mkdir(exist_ok=True)
        page_path = RESULTS / "bench_report.html"
        page_path.write_text(page, encoding="utf-8")
        rows += [
            {"step": "load evidence (all)", "seconds": loaded},
            {"step": "render HTML", "seconds": rendered, "bytes": len(page.encode())},
            {
                "step": "reference: matplotlib PNG",
                "seconds": matplotlib_reference(records[0].daily),
            },
        ]
    charts = 2 * len(records) + (len(records) > 1)
    try:
        seen = browse(page_path, RESULTS / "bench_report.png", charts)
    except ImportError:
        print("playwright missing: run with `python -m uv run --with playwright python ...`")
    else:
        rows.append({"step": "chromium, offline", "seconds": seen.pop("drawn_s"), **seen})
        assert seen["charts"] == charts and seen["requests_leaving"] == 0, seen
    save("bench_report", rows)


if __name__ == "__main__":
    main()
