"""HTTP signal service figures (issue 16 targets in brackets), on the simulated market:

* decision latency with the model cached, in this process — features of the newest candle (the
  model's own spec), the 4-family ensemble, vote, weight, risk sizing — as the live stage makes
  it (``trading.scoring`` + ``models.risk``: ``bench/bench_live.py``'s rows, one new candle per
  decision, feature streams and the rebuilt tail against the libraries' path in the same run
  [p99 ≤ 2 ms, ≥ 5×]) and as ``POST /v1/predict`` makes it on the store's newest candle,
  asked again and again (``trading.predict.predict`` through the service: account snapshot,
  records built with their explanation, no database write; the candle scored once);
* ``POST /v1/predict`` over HTTP on 127.0.0.1 against a real ``candleflow api`` process, from a
  bounded open-loop load generator (requests due on a fixed schedule, at most ``--in-flight``
  at once, each on a keep-alive connection; raw asyncio HTTP/1.1, as light as a C generator's
  client side can be made here) at each ``--rates`` for ``--seconds``: p50/p99 latency (from
  each request's due time), errors, requests the generator could not send on time, and the
  server's RSS at start and end
  [p99 ≤ 10 ms at 200 req/s for 30 s, zero errors, memory flat]; next to it, the same load on
  ``GET /healthz`` (HTTP and middleware, no decision). The server's rate limit is off for the
  run (one client at 200 req/s is past the default 50/s).

Set-up (not timed): 200 days of BTCUSD candles up to now, one quick training (1 trial per family,
2 folds) made champion by hand. Defaults are short; the issue's run is
``--rates 200 --seconds 30``.

    uv run --frozen python bench/bench_api.py [--rates 50,200] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SYMBOL = "BTCUSD"
PREDICT = "/v1/predict"
REPEATS = 200


def _setup() -> None:
    from core.config import load_settings
    from flows.build_dataset import build_datasets
    from flows.collect_candles import collect_candles
    from flows.train_models import train_models
    from models.registry import Reviewer
    from models.tracking import setup

    collect_candles(symbols=[SYMBOL])
    build_datasets(symbols=[SYMBOL])
    train_models(symbols=[SYMBOL], trials=1, promote=False)
    settings = load_settings()
    reviewer = Reviewer(settings, setup(settings.home))
    reviewer.promote_manually(SYMBOL, "1h", "1", "bench: the API needs a champion")


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1000
    if ms.size == 0:
        return {"p50_ms": float("nan"), "p99_ms": float("nan")}
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
    }


def _decision_latency() -> list[dict]:
    """Today's decision path, model cached: ``bench_live``'s measurement of the live stage's
    decision (and its references), then the same decision as ``POST /v1/predict`` makes it."""
    from api.service import SignalService
    from bench.bench_live import _decision_latency as live_decision
    from core.config import load_settings

    now = datetime.now(UTC)
    rows = live_decision([SYMBOL], now)
    service = SignalService(load_settings(), clock=lambda: now)
    service.predict(SYMBOL, "1h")  # loads the model, checks its code fingerprint once
    samples = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        service.predict(SYMBOL, "1h")
        samples.append(time.perf_counter() - start)
    service.close()
    case = "decision, POST /v1/predict's path in process (service.predict, no HTTP)"
    return [*rows, {"case": case, "n": len(samples), **_percentiles(samples)}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def _start_server(home: Path) -> tuple[subprocess.Popen, str]:
    import httpx

    port = _free_port()
    env = os.environ | {"CANDLEFLOW_API__RATE_LIMIT_PER_SECOND": "0"}
    candleflow = str(Path(sys.executable).parent / "candleflow")
    log = (home / "api.log").open("wb")
    process = subprocess.Popen(
        [candleflow, "api", "--port", str(port)], env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the API exited: " + (home / "api.log").read_text()[-2000:])
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError("the API did not start in 120 s")


class _Connection:
    """One keep-alive HTTP/1.1 connection of the load generator: raw asyncio streams (an
    httpx client costs ~1 ms of CPU a request, on the 2 cores the server runs on too)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes) -> int:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        header = await self.reader.readuntil(b"\r\n\r\n")
        lines = header.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        fields = {k.lower(): v for k, v in fields.items()}
        await self.reader.readexactly(int(fields.get("content-length", "0")))
        if fields.get("connection", "").lower() == "close":
            self.writer.close()
        return status


async def _load(url: str, rate: float, seconds: float, in_flight: int, path: str) -> dict:
    """Open loop: request i is due at i / rate; at most ``in_flight`` at once, each on a
    keep-alive connection of its own. A latency runs from the request's due time (a request
    waiting for a free connection, or sent late, counts its wait: no coordinated omission); a
    request not sent within 10 ms of its time also counts as late."""
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({"symbol": SYMBOL, "timeframe": "1h"}).encode() if path == PREDICT else b""
    method = "POST" if path == PREDICT else "GET"
    latencies: list[float] = []
    errors: dict[str, int] = {}  # HTTP status or exception → count
    late = 0
    idle: asyncio.Queue[_Connection] = asyncio.Queue()
    for _ in range(in_flight):
        idle.put_nowait(_Connection(host, int(port)))

    async def one(due: float) -> None:
        connection = await idle.get()  # the wait for a free connection counts too
        try:
            status = await asyncio.wait_for(connection.request(method, path, body), 30)
            error = None if status == 200 else str(status)
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            error, connection = type(exc).__name__, _Connection(host, int(port))
        latencies.append(time.perf_counter() - due)
        idle.put_nowait(connection)
        if error is not None:
            errors[error] = errors.get(error, 0) + 1

    tasks, t0 = [], time.perf_counter()
    for i in range(int(rate * seconds)):
        due = t0 + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.01:
            late += 1
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - t0
    return {
        "requests": len(latencies),
        "achieved_rps": round(len(latencies) / wall, 1),
        **_percentiles(latencies),
        "errors": sum(errors.values()),
        "error_kinds": ",".join(f"{k}:{v}" for k, v in sorted(errors.items())) or None,
        "sent_late": late,
    }


def _http(home: Path, rates: list[float], seconds: float, in_flight: int) -> list[dict]:
    import httpx

    process, url = _start_server(home)
    rows = []
    try:
        for _ in range(20):  # warm-up: the model loads and checks its fingerprint on the first
            httpx.post(f"{url}/v1/predict", json={"symbol": SYMBOL}, timeout=60)
        # The reference: the same load on GET /healthz (HTTP, middleware, no decision).
        runs = [(r, PREDICT) for r in rates] + [(max(rates), "/healthz")]
        for rate, path in runs:
            rss_start = _rss_mb(process.pid)
            result = asyncio.run(_load(url, rate, seconds, in_flight, path))
            verb = "POST" if path == PREDICT else "GET"
            rows.append(
                {
                    "case": f"{verb} {path} over HTTP, {rate:g} req/s for {seconds:g} s",
                    **result,
                    "rss_start_mb": rss_start,
                    "rss_end_mb": _rss_mb(process.pid),
                    "target_p99_ms": 10 if path == PREDICT else None,
                }
            )
    finally:
        os.kill(process.pid, signal.SIGINT)  # by its PID
        process.wait(timeout=30)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="50,200", help="requests/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=5.0, help="per rate")
    parser.add_argument("--in-flight", type=int, default=32, help="most requests at once")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-api-"))
    os.environ.update(
        {
            "CANDLEFLOW_HOME": str(home),
            "CANDLEFLOW_UNIVERSE__HISTORY_DAYS": "200",
            "CANDLEFLOW_TRAINING__FOLDS": "2",
            "CANDLEFLOW_SIGNALS__AVOID_REGIME_BELOW": "0",
            "PREFECT_HOME": str(home / "prefect"),
            "DO_NOT_TRACK": "true",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        }
    )
    from bench._common import save

    start = time.perf_counter()
    _setup()
    print(f"set-up {time.perf_counter() - start:.0f} s")
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    rows = _decision_latency() + _http(home, rates, args.seconds, args.in_flight)
    save("api", rows)


if __name__ == "__main__":
    main()
