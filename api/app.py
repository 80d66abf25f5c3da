"""The HTTP signal service (FastAPI): predictions from the champions, the ledger's signals, the
registry's models, health, Prometheus metrics and the TradingView webhook. A thin shell over
:class:`api.service.SignalService`; every user error answers 4xx with a one-line ``detail`` (a
bug answers 500 without its traceback, which goes to the log)."""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.guard import BodyTooLarge, Guard, TokenBuckets, matches
from api.metrics import Metrics
from api.runs import FlowRuns, add_run_routes
from api.schemas import AlertAnswer, Health, Prediction, PredictRequest, Refusal, SignalRow
from api.service import NotFoundError, SignalService
from core.config import Settings
from core.errors import CandleflowError
from trading.alerts import SECRET_FIELD, AlertError
from trading.live import one_line
from trading.predict import CandleRowsError, ModelLoadError
from trading.predict import Prediction as Decided

logger = logging.getLogger(__name__)

# A refused decision's HTTP status: no model is missing, stale or unreproducible is a conflict
# with the state of the data or the registry, anything else the request cannot be answered.
STATUS_CODES = {"NO_MODEL": 404, "STALE": 409, "SPEC_MISMATCH": 409, "ERROR": 422}
REFUSALS: dict[int | str, dict[str, Any]] = {
    code: {"model": Refusal} for code in (401, 403, 404, 409, 413, 422, 429, 503)
}
SECRET_HEADER = "X-Candleflow-Secret"


def create_app(
    settings: Settings, service: SignalService | None = None, runs: FlowRuns | None = None
) -> FastAPI:
    """The app for ``settings`` (``service``: one built already, e.g. with test models;
    ``runs``: take the command line's flow runs, ``POST /v1/runs/{kind}``)."""
    service = service or SignalService(settings)
    metrics = Metrics(lambda: service.ledger.engine)
    # FastAPI with /docs and /redoc whose scripts and styles it serves itself (the stock pages
    # load them from a CDN, blank on a machine without internet).
    app = FastAPIOffline(
        title="candleflow signal service",
        version=_version(),
        description="Ask the champions for a decision, read the live ledger and the registry, "
        "send TradingView alerts. A prediction places no order and is not stored.",
    )
    app.state.service, app.state.metrics = service, metrics
    api = settings.api
    buckets = TokenBuckets(api.rate_limit_per_second, api.rate_limit_burst)
    app.add_middleware(
        Guard,  # type: ignore[arg-type]
        metrics=metrics,
        buckets=buckets if api.rate_limit_per_second > 0 else None,
        max_body=api.max_body_bytes,
    )
    _handlers(app, metrics)
    _routes(app, service, metrics, settings)
    if runs is not None:
        add_run_routes(app, runs)
    return app


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("candleflow")
    except PackageNotFoundError:
        return "0+unknown"


def _handlers(app: FastAPI, metrics: Metrics) -> None:
    def count(request: Request, kind: str) -> None:
        metrics.errors.labels(getattr(request.scope.get("route"), "path", "unmatched"), kind).inc()

    def refused(request: Request, code: int, detail: str, kind: str) -> JSONResponse:
        count(request, kind)
        return JSONResponse({"detail": detail}, status_code=code)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Any:
        count(request, f"http_{exc.status_code}")
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Any:
        count(request, "invalid_request")
        return await request_validation_exception_handler(request, exc)

    @app.exception_handler(NotFoundError)
    async def not_found(request: Request, exc: NotFoundError) -> JSONResponse:
        return refused(request, 404, one_line(exc), "not_found")

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        return refused(request, 413, "request body too large", "body_too_large")

    @app.exception_handler(ModelLoadError)
    async def unavailable(request: Request, exc: ModelLoadError) -> JSONResponse:
        return refused(request, 503, one_line(exc), "model_load")

    @app.exception_handler(CandleflowError)
    async def user_error(request: Request, exc: CandleflowError) -> JSONResponse:
        kind = "bad_candles" if isinstance(exc, CandleRowsError) else type(exc).__name__
        return refused(request, 422, one_line(exc), kind)

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("%s %s failed", request.method, request.url.path)
        return refused(request, 500, f"internal error ({type(exc).__name__}); see the log", "bug")


def _key_check(settings: Settings) -> Any:
    """The API-key dependency of the predict and read endpoints (open while no key is set:
    ``candleflow api`` refuses to listen off the loopback interface then)."""

    async def check(
        x_api_key: Annotated[str | None, Header(description="one of api.access_keys")] = None,
        authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    ) -> None:
        keys = settings.api.access_keys
        if not keys:
            return
        given = x_api_key or (authorization or "").removeprefix("Bearer ").strip() or None
        if given is None:
            raise HTTPException(401, "API key missing: send it in the X-API-Key header")
        if not matches(given, keys):
            raise HTTPException(403, "API key not accepted")

    return Depends(check)


def _routes(app: FastAPI, service: SignalService, metrics: Metrics, settings: Settings) -> None:
    keyed = [_key_check(settings)]
    _service_routes(app, service, metrics, settings)
    _predict_route(app, service, metrics, settings, keyed)
    _ledger_routes(app, service, keyed)
    _alert_routes(app, service, metrics, settings, keyed)


def _service_routes(
    app: FastAPI, service: SignalService, metrics: Metrics, settings: Settings
) -> None:
    @app.get("/healthz", response_model=Health, tags=["service"])
    def healthz() -> Health:
        """Alive, and where its state lives."""
        url = service.ledger.engine.url.render_as_string(hide_password=True)
        return Health(version=app.version, home=str(settings.home), database=url)

    @app.get("/metrics", response_class=PlainTextResponse, tags=["service"])
    def prometheus() -> PlainTextResponse:
        """Prometheus text: requests, decisions, latency, errors, orders, alerts."""
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _predict_route(
    app: FastAPI, service: SignalService, metrics: Metrics, settings: Settings, keyed: list
) -> None:
    @app.post(
        "/v1/predict",
        response_model=Prediction,
        responses=REFUSALS,
        dependencies=keyed,
        tags=["signals"],
    )
    def predict(body: PredictRequest) -> Any:
        """The champion's decision on the newest closed candle, as `candleflow signals` makes it
        (status, action, probability, families, weight and its components, tier, multiplier,
        SL/TP, explanation, model): no order is placed, nothing is stored."""
        if len(body.candles) > settings.api.max_candles:
            raise HTTPException(422, f"candles: at most {settings.api.max_candles} per request")
        start = time.perf_counter()
        rows = [c.model_dump() for c in body.candles]
        decided = service.predict(body.symbol, body.timeframe, rows)
        prediction = _prediction(decided)
        _observe(metrics, decided.decision.model_name, prediction, time.perf_counter() - start)
        if prediction.status != "OK":
            detail = f"{prediction.status}: " + "; ".join(prediction.reasons or [])
            refusal = Refusal(detail=detail, status=prediction.status, decision=prediction)
            code = STATUS_CODES.get(prediction.status or "", 422)
            return JSONResponse(refusal.model_dump(mode="json"), status_code=code)
        # Serialised once, by pydantic (the response model documents it): FastAPI would
        # validate the built model again and encode it through Python, ~1 ms a prediction.
        return Response(prediction.model_dump_json(), media_type="application/json")


def _observe(metrics: Metrics, model: str, prediction: Prediction, seconds: float) -> None:
    """A prediction's metrics: its latency, its decision, a refusal or a would-be order."""
    metrics.decision_latency.labels(model).observe(seconds)
    status = prediction.status or "refused"
    action = prediction.action or "NONE"
    metrics.decisions.labels(model, prediction.model_version or "", status, action).inc()
    if status != "OK":
        metrics.errors.labels("/v1/predict", status).inc()
    elif prediction.would_order:
        metrics.would_order.labels(model, action).inc()


def _ledger_routes(app: FastAPI, service: SignalService, keyed: list) -> None:
    @app.get("/v1/signals", response_model=list[SignalRow], dependencies=keyed, tags=["signals"])
    def signals(
        since: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
        action: Literal["BUY", "SELL", "FLAT"] | None = None,
        shadow: bool | None = None,
    ) -> list[dict[str, Any]]:
        """The ledger's newest signals first (candle time ≥ ``since``)."""
        return service.signals(None, since, limit, action, shadow)

    @app.get(
        "/v1/signals/{symbol}",
        response_model=list[SignalRow],
        responses=REFUSALS,
        dependencies=keyed,
        tags=["signals"],
    )
    def symbol_signals(
        symbol: str,
        since: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
        action: Literal["BUY", "SELL", "FLAT"] | None = None,
        shadow: bool | None = None,
    ) -> list[dict[str, Any]]:
        """One symbol's newest signals first."""
        symbol, _ = service.check_unit(symbol, None)
        return service.signals(symbol, since, limit, action, shadow)

    @app.get("/v1/models", dependencies=keyed, tags=["models"])
    def models() -> list[dict[str, Any]]:
        """Every registered model: versions, their aliases (champion, challenger, previous),
        out-of-sample evidence (AUC, Sharpe, DSR, trades) and the gate's decision."""
        return service.registry()


def _alert_routes(
    app: FastAPI, service: SignalService, metrics: Metrics, settings: Settings, keyed: list
) -> None:
    @app.post(
        "/v1/webhooks/tradingview",
        response_model=AlertAnswer,
        responses=REFUSALS,
        tags=["alerts"],
    )
    async def tradingview(
        request: Request,
        secret: Annotated[str | None, Header(alias=SECRET_HEADER)] = None,
    ) -> AlertAnswer:
        """A TradingView alert (JSON: ticker, action, price, strategy, timeframe, time, and
        any other fields), with the shared secret in the X-Candleflow-Secret header or the
        alert's `passphrase`. Stored once (the same alert again is not stored twice), never
        executed."""
        body = _json_object(await request.body())
        _check_secret(settings, secret or _text(body.get(SECRET_FIELD)))
        try:  # a database write: off the event loop
            alert, row_id, created = await run_in_threadpool(service.receive_alert, body)
        except AlertError as exc:
            metrics.errors.labels("/v1/webhooks/tradingview", f"alert_{exc.field}").inc()
            raise HTTPException(422, one_line(exc)) from None
        metrics.alerts.labels(alert.symbol, alert.action, str(created).lower()).inc()
        return AlertAnswer(
            id=row_id,
            created=created,
            symbol=alert.symbol,
            timeframe=alert.timeframe,
            action=alert.action,
            candle_ts=alert.candle_ts,
        )

    @app.get("/v1/alerts", dependencies=keyed, tags=["alerts"])
    def alerts(
        symbol: str | None = None,
        since: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    ) -> list[dict[str, Any]]:
        """The stored TradingView alerts, newest first."""
        return service.alerts(symbol, since, limit)

    @app.get("/v1/alerts/hit-rate", dependencies=keyed, tags=["alerts"])
    def hit_rate(days: Annotated[int, Query(ge=1, le=3650)] = 90) -> list[dict[str, Any]]:
        """Each alert strategy's resolved BUY hit rate per symbol × timeframe (the labels'
        triple barrier from the alert's candle, as the shadow report judges signals)."""
        return service.alert_hit_rates(days)


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise HTTPException(422, "the alert is not JSON (set the alert message to JSON)") from None
    if not isinstance(body, dict):
        raise HTTPException(422, "the alert must be a JSON object")
    return body


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _check_secret(settings: Settings, given: str | None) -> None:
    secret = settings.api.webhook_secret
    if secret is None:
        raise HTTPException(403, "the webhook is off: set CANDLEFLOW_API__WEBHOOK_SECRET")
    if given is None:
        raise HTTPException(401, f"secret missing: send {SECRET_HEADER} or the alert's passphrase")
    if not matches(given, [secret]):
        raise HTTPException(403, "secret not accepted")


def _prediction(decided: Decided) -> Prediction:
    """The API's record of a prediction: the report row and the record's details."""
    signal = decided.decision.signal
    components = dict(decided.record.components or {})
    return Prediction(
        **decided.report.model_dump(exclude={"order"}),
        model_name=decided.decision.model_name,
        threshold=None if signal is None else signal.vote.threshold,
        families=None if signal is None else dict(signal.vote.families),
        components=components.get("components"),  # type: ignore[arg-type]
        explanation=decided.record.explanation,  # type: ignore[arg-type]
        would_order=decided.would_order,
    )
