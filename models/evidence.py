"""The evaluation evidence of a registered version, read from its training run and checked.

Tags can be edited in the MLflow UI, and so can artifacts be re-uploaded; a run's params cannot
change once logged. So the training writes ``evaluation/evaluation.json`` as canonical bytes and
logs their sha256 as the run param ``evaluation_sha256``: the gate reads its numbers from that file
only after the digest matches, and treats version tags as display copies that must agree with it.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from core.errors import CandleflowError

EVALUATION_ARTIFACT = "evaluation/evaluation.json"
EVALUATION_DIGEST = "evaluation_sha256"  # run param and version tag

# The evaluation numbers copied onto every version as tags (registry view, `models list`).
VERSION_METRICS = (
    "oos_roc_auc",
    "oos_sharpe_annual",
    "oos_bh_sharpe_annual",
    "oos_psr",
    "oos_dsr",
    "oos_trades",
    "oos_exposure",
    "cv_roc_auc",
    "trials",
)


class EvidenceError(CandleflowError):
    """A version's evaluation evidence is missing or does not match what its training logged."""


def evaluation_bytes(evaluation: Mapping[str, Any]) -> bytes:
    """Canonical JSON of an evaluation: sorted keys, numpy scalars as Python numbers, floats in
    their shortest exact form (they read back bit for bit), NaN as ``NaN``. The same evaluation
    always gives the same bytes, hence the same digest."""
    text = json.dumps(_plain(evaluation), indent=2, sort_keys=True, allow_nan=True)
    return (text + "\n").encode()


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        return value.item()
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return str(value)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tag_text(value: float | None) -> str:
    """How a metric is written as a version tag (6 significant digits: a display copy)."""
    return "nan" if value is None or not math.isfinite(value) else f"{value:.6g}"


def evidence(client: MlflowClient, mv: ModelVersion) -> dict[str, float | None]:
    """The ensemble's evaluation metrics of ``mv``'s training run, at full precision (NaN →
    None), after checking that ``evaluation.json`` hashes to the run's ``evaluation_sha256``.
    Raises :class:`EvidenceError` (naming what is wrong) when it cannot be trusted."""
    ensemble = evaluation(client, mv).get("ensemble", {})
    return {
        key: float(v) if math.isfinite(v) else None
        for key, v in ensemble.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def oos_daily(client: MlflowClient, mv: ModelVersion) -> pl.DataFrame:
    """``mv``'s out-of-sample daily net returns (``day``, ``ret``) from its checked evaluation."""
    daily = evaluation(client, mv).get("oos_daily")
    if not daily:
        raise EvidenceError(f"{mv.name} v{mv.version}: no out-of-sample daily record: retrain it")
    days = [date.fromisoformat(d) for d in daily["day"]]
    return pl.DataFrame(
        {"day": days, "ret": daily["ret"]}, schema={"day": pl.Date, "ret": pl.Float64}
    )


def prior_trials(client: MlflowClient, name: str) -> int:
    """The N of the newest version of ``name`` whose evidence checks out (0 for a new model):
    every trial ever tried for the model, kept with its registered evidence."""
    versions = sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: -int(v.version))
    for mv in versions:
        try:
            total = evidence(client, mv).get("trials_total")
        except EvidenceError:
            continue
        return int(total or 0)
    return 0


def evaluation(client: MlflowClient, mv: ModelVersion) -> dict[str, Any]:
    """The whole checked ``evaluation.json`` of ``mv``'s training run (see :func:`evidence`)."""
    who = f"{mv.name} v{mv.version}"
    if not mv.run_id:
        raise EvidenceError(f"{who} has no training run: retrain it")
    try:
        run = client.get_run(mv.run_id)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise EvidenceError(f"{who}: its training run {mv.run_id} is gone: retrain it") from None
    logged = run.data.params.get(EVALUATION_DIGEST)
    if logged is None:
        raise EvidenceError(
            f"{who}: its training run {mv.run_id} has no {EVALUATION_DIGEST} param (recorded "
            "before evaluations were hashed): retrain it"
        )
    data = _download(client, mv.run_id, who)
    if sha256(data) != logged:
        raise EvidenceError(
            f"{who}: {EVALUATION_ARTIFACT} of run {mv.run_id} hashes to {sha256(data)[:12]}…, "
            f"not the {logged[:12]}… logged at training: the artifact was altered; retrain it"
        )
    return json.loads(data)


def _download(client: MlflowClient, run_id: str, who: str) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, EVALUATION_ARTIFACT, tmp)
        except (MlflowException, OSError):
            raise EvidenceError(
                f"{who}: its training run {run_id} has no {EVALUATION_ARTIFACT}: retrain it"
            ) from None
        return Path(path).read_bytes()


def tag_disagreements(tags: Mapping[str, str], metrics: Mapping[str, float | None]) -> list[str]:
    """Each evaluation tag of a version — a ``VERSION_METRICS`` key, or any key the run's
    evaluation holds (a tag added by hand claims a number too) — that is not the display copy of
    the run's value, as ``"key: tag T, run V"``. A missing tag claims nothing."""
    out = []
    for key in [*VERSION_METRICS, *sorted(set(metrics) - set(VERSION_METRICS))]:
        text = tags.get(key)
        if text is None or _agrees(text, metrics.get(key)):
            continue
        value = metrics.get(key)
        out.append(f"{key}: tag {text}, run {'nan' if value is None else repr(value)}")
    return out


def _agrees(text: str, value: float | None) -> bool:
    """The tag is the 6-digit rendering of ``value`` (written differently, e.g. ``0.50``, it
    still agrees if it reads as the same number)."""
    expected = tag_text(value)
    if text.strip() == expected:
        return True
    try:
        number = float(text)
    except ValueError:
        return False
    if value is None:
        return math.isnan(number)
    return number == float(expected)
