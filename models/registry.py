"""The model registry side of promotion: aliases ``champion`` / ``challenger`` / ``previous`` on
``candleflow.<SYMBOL>.<TF>``, the review of a challenger through the gate, manual promotion and
rollback, each decision recorded as model-version tags (and the latest one on the model). Each
of them first repairs what a crash mid-promotion leaves (:func:`repair_aliases`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from core.config import Settings
from core.errors import CandleflowError
from models.ensemble import Ensemble
from models.evidence import (
    EVALUATION_DIGEST,
    EvidenceError,
    evidence,
    oos_daily,
    tag_disagreements,
)
from models.promotion import Check, Comparison, Decision, compare, gate, metrics_from_tags
from models.tracking import ENSEMBLE_ARTIFACT, describe_run, read_ensemble, registered_name

logger = logging.getLogger(__name__)

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
MIN_COMMON_DAYS = 30  # out-of-sample days both records must share to be compared
PREFIX = "candleflow."


class RegistryError(CandleflowError):
    """A registry operation cannot be done (e.g. no such version, nothing to roll back to)."""


def alias_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version holding ``alias``; ``None`` when the model or the alias does not exist. Any
    other registry failure is raised (never read as "no champion")."""
    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    version = (model.aliases or {}).get(alias)
    return None if version is None else client.get_model_version(name, str(version))


def get_version(client: MlflowClient, name: str, version: str) -> ModelVersion:
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise RegistryError(f"{name} has no version {version}") from exc
        raise


_CHECKED_REQUIREMENTS: dict[str, list[str]] = {}  # a model's requirements → unmet ones


def load_ensemble(
    name: str, version: str, client: MlflowClient | None = None, uri: str | None = None
) -> Ensemble:
    """The fitted ensemble inside a registered version, read from its artifact by the pyfunc's
    own loader (``tracking.read_ensemble``) without loading the whole pyfunc, which parses its
    MLmodel and resolves every requirement again: the largest cost of a live run in a fresh
    process. The model's pinned requirements are compared with this environment first (a
    mismatch is logged, once per set of requirements). A version of another layout loads through
    the pyfunc. ``uri``: the version's download URI, if known."""
    uri = uri or (client or MlflowClient()).get_model_version_download_uri(name, str(version))
    try:
        path = mlflow.artifacts.download_artifacts(artifact_uri=f"{uri}/{ENSEMBLE_ARTIFACT}")
        requirements = mlflow.artifacts.download_artifacts(artifact_uri=f"{uri}/requirements.txt")
    except MlflowException:
        model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
        return model.unwrap_python_model().ensemble
    text = Path(requirements).read_text()
    if text not in _CHECKED_REQUIREMENTS:
        unmet = _CHECKED_REQUIREMENTS[text] = unmet_requirements(text)
        if unmet:
            logger.warning(
                "%s v%s was logged with %s; this environment differs, its predictions may too",
                name,
                version,
                ", ".join(unmet),
            )
    return read_ensemble(path)


def unmet_requirements(requirements: str) -> list[str]:
    """The pinned requirements (``name==version`` lines) this environment does not meet."""
    unmet = []
    for line in requirements.splitlines():
        package, pinned, wanted = line.split("#")[0].strip().partition("==")
        if not pinned:
            continue
        try:
            installed = metadata.version(package.strip())
        except metadata.PackageNotFoundError:
            installed = "not installed"
        if installed != wanted.strip():
            unmet.append(f"{package.strip()}=={wanted.strip()} (here: {installed})")
    return unmet


def _record(client: MlflowClient, name: str, decision: Decision) -> None:
    for key, value in decision.tags().items():
        client.set_model_version_tag(name, decision.version, key, value)
    client.set_registered_model_tag(name, "last_decision", decision.summary()[:4900])
    run_id = client.get_model_version(name, decision.version).run_id
    if run_id:  # the decision heads its training run's description too (the MLflow UI)
        describe_run(client, run_id, decision.note())
    logger.info("%s", decision.summary())


def _champion(client: MlflowClient, name: str) -> str | None:
    champion = alias_version(client, name, CHAMPION)
    return None if champion is None else str(champion.version)


def repair_aliases(client: MlflowClient, name: str) -> list[str]:
    """Restore what a crash between two alias moves breaks: every alias names an existing
    version; the champion is neither challenger nor previous (that alias goes). Repairs are
    logged and recorded on the model (tag ``alias_repair``); returns them (none: consistent)."""
    existing = {str(v.version) for v in client.search_model_versions(f"name='{name}'")}
    if not existing:  # no model yet (MLflow drops the aliases of a deleted version)
        return []
    aliases = {a: str(v) for a, v in (client.get_registered_model(name).aliases or {}).items()}
    notes = []
    for alias, version in sorted(aliases.items()):
        if version not in existing:
            client.delete_registered_model_alias(name, alias)
            notes.append(f"{alias} named v{version}, which does not exist: {alias} removed")
            del aliases[alias]
    champion = aliases.get(CHAMPION)
    for alias in (CHALLENGER, PREVIOUS):
        if champion is not None and aliases.get(alias) == champion:
            client.delete_registered_model_alias(name, alias)
            notes.append(f"v{champion} was champion and {alias} (a cut promotion): {alias} removed")
    if notes:
        at = datetime.now(UTC).isoformat(timespec="seconds")
        client.set_registered_model_tag(name, "alias_repair", f"{at}: {'; '.join(notes)}"[:4900])
        logger.warning("%s: aliases repaired: %s", name, "; ".join(notes))
    return notes


def _crown(
    client: MlflowClient, name: str, version: str, expected: str | bool | None = False
) -> str | None:
    """Make ``version`` champion; the old champion becomes ``previous``. Returns the old one.
    ``expected``: the champion the decision was made against (``False``: not checked); if another
    run moved the alias meanwhile, nothing changes and the review must be made again."""
    old_version = _champion(client, name)
    if expected is not False and old_version != expected:
        raise RegistryError(
            f"{name}: the champion moved to v{old_version} during the review of v{version} "
            f"(made against v{expected}); review again"
        )
    if old_version is not None and old_version != str(version):
        client.set_registered_model_alias(name, PREVIOUS, old_version)
    client.set_registered_model_alias(name, CHAMPION, str(version))
    challenger = alias_version(client, name, CHALLENGER)
    if challenger is not None and str(challenger.version) == str(version):
        client.delete_registered_model_alias(name, CHALLENGER)
    return old_version


@dataclass
class Reviewer:
    """Reviews challengers of one installation (settings, store, registry)."""

    settings: Settings
    client: MlflowClient

    def review(self, symbol: str, timeframe: str, version: str | None = None) -> Decision:
        """Run the gate on ``version`` (default: the ``challenger``) and act on the result. The
        gate reads the training run's hashed evaluation (``models.evidence``), never the
        version's tags: tags that disagree with the run refuse the version."""
        name = registered_name(symbol, timeframe)
        repair_aliases(self.client, name)
        mv = self._candidate(name, version)
        if mv is None:
            check = Check("challenger", False, None, None, "no challenger to review")
            return Decision(symbol, timeframe, "", False, [check], kind="no_challenger")
        version = str(mv.version)
        champion_version = _champion(self.client, name)
        if champion_version == version:
            return Decision(symbol, timeframe, version, True, kind="already_champion")
        if mv.tags.get("decision") == "rolled back":
            message = f"v{version} was rolled back: only a manual promotion brings it back"
            return self._refuse(
                symbol, timeframe, mv, [Check("rolled_back", False, None, None, message)]
            )
        metrics, refused = self._evidence(mv)
        if refused:
            return self._refuse(symbol, timeframe, mv, refused)
        comparison, error = (None, None)
        if champion_version is not None:
            comparison, error = self._compare(symbol, timeframe, mv, champion_version)
        checks = [_evidence_check(mv), *gate(metrics, self.settings.promotion, comparison, error)]
        promoted = all(c.passed for c in checks)
        decision = Decision(
            symbol, timeframe, version, promoted, checks, champion_version=champion_version
        )
        _record(self.client, name, decision)  # first: a crowned version always has its reasons
        if promoted:
            _crown(self.client, name, version, decision.champion_version)
        return decision

    def _evidence(self, mv: ModelVersion) -> tuple[dict[str, float | None], list[Check]]:
        """The training run's evaluation metrics, and the checks refusing ``mv`` when they
        cannot be trusted (none: trusted). Edited tags refuse the version; its real numbers
        are still judged, for the record (no replay: it is refused anyway)."""
        try:
            metrics = evidence(self.client, mv)
        except EvidenceError as exc:
            return {}, [Check("evidence", False, None, None, str(exc))]
        edited = tag_disagreements(mv.tags, metrics)
        if not edited:
            return metrics, []
        message = (
            f"version tags disagree with the training run's evidence ({'; '.join(edited)}):"
            " tags were edited; the gate reads the run"
        )
        return metrics, [
            Check("evidence", False, None, None, message),
            *gate(metrics, self.settings.promotion),
        ]

    def _refuse(
        self, symbol: str, timeframe: str, mv: ModelVersion, checks: list[Check]
    ) -> Decision:
        """A refusal decided before the gate's comparison, recorded on the version."""
        decision = Decision(symbol, timeframe, str(mv.version), False, checks)
        _record(self.client, mv.name, decision)
        return decision

    def _candidate(self, name: str, version: str | None) -> ModelVersion | None:
        if version is not None:
            return get_version(self.client, name, version)
        return alias_version(self.client, name, CHALLENGER)

    def _compare(
        self, symbol: str, timeframe: str, challenger: ModelVersion, champion: str
    ) -> tuple[Comparison | None, str | None]:
        """Challenger and champion on the days both have an out-of-sample record (their
        walk-forward net daily returns, from each one's checked evidence), or why not."""
        try:
            ours = oos_daily(self.client, challenger)
            theirs = oos_daily(self.client, get_version(self.client, challenger.name, champion))
        except EvidenceError as exc:
            return None, f"champion v{champion} could not be compared: {exc}"
        comparison = compare(ours, theirs, champion, self.settings.promotion)
        if comparison.days < MIN_COMMON_DAYS:
            return None, (
                f"champion v{champion} shares only {comparison.days} out-of-sample days with "
                f"v{challenger.version} (≥ {MIN_COMMON_DAYS} needed to compare them)"
            )
        return comparison, None

    def promote_manually(self, symbol: str, timeframe: str, version: str, reason: str) -> Decision:
        """Make ``version`` champion without the gate; recorded as a manual override with its
        ``reason`` (required) and the gate's own verdict on it, which stays on the version
        (``gate_decision*`` tags). Live marks every signal of this champion as ``manual``."""
        reason = " ".join(reason.split())
        if not reason:
            raise RegistryError(
                "a manual promotion needs a reason (--reason TEXT): it is recorded with the "
                "decision, and every signal of the champion says it was overridden"
            )
        name = registered_name(symbol, timeframe)
        repair_aliases(self.client, name)
        mv = get_version(self.client, name, version)
        gate_record = _gate_record(self.client, mv)
        old = _champion(self.client, name)
        override = Check(
            "manual", True, None, None, f"manual override (gate not applied): {reason}"
        )
        checks = [override, gate_record]
        decision = Decision(symbol, timeframe, str(version), True, checks, old, kind="manual")
        _record(self.client, name, decision)  # first: a champion cut short still says "manual"
        _crown(self.client, name, str(version), old)
        return decision

    def rollback(self, symbol: str, timeframe: str) -> Decision:
        """``previous`` becomes ``champion`` again; the demoted champion becomes ``previous``."""
        name = registered_name(symbol, timeframe)
        repair_aliases(self.client, name)
        previous = alias_version(self.client, name, PREVIOUS)
        if previous is None:
            raise RegistryError(f"{name} has no 'previous' version to roll back to")
        old = _champion(self.client, name)
        message = f"rollback: v{previous.version} replaces champion v{old}"
        decision = Decision(
            symbol,
            timeframe,
            str(previous.version),
            True,
            [Check("rollback", True, None, None, message)],
            old,
            kind="rollback",
        )
        _record(self.client, name, decision)
        _crown(self.client, name, str(previous.version), old)
        if old is not None:
            self.client.set_model_version_tag(name, old, "decision", "rolled back")
        return decision


def _evidence_check(mv: ModelVersion) -> Check:
    digest = mv.tags.get(EVALUATION_DIGEST) or ""
    message = f"evidence: run {mv.run_id}'s evaluation.json (sha256 {digest[:12]}…), tags agree"
    return Check("evidence", True, None, None, message)


def _gate_record(client: MlflowClient, mv: ModelVersion) -> Check:
    """The gate's last verdict on ``mv`` (it is "manual"'s context), first copied to
    ``gate_decision*`` tags when the ``decision*`` tags about to be overwritten hold it."""
    tags = dict(mv.tags)
    if tags.get("decision_kind") == "gate" and tags.get("decision") in ("promoted", "rejected"):
        for key in ("decision", "decision_at", "decision_reasons"):
            tags[f"gate_{key}"] = tags.get(key, "")
            client.set_model_version_tag(mv.name, str(mv.version), f"gate_{key}", tags[key])
    verdict = tags.get("gate_decision")
    if verdict is None:
        return Check("gate", False, None, None, "the gate has not reviewed this version")
    message = f"the gate's verdict: {verdict} ({tags.get('gate_decision_reasons', '')})"
    return Check("gate", verdict == "promoted", None, None, message)


def champion_kind(tags: Mapping[str, str]) -> str:
    """How a champion was crowned, from its decision tags: ``manual``, ``rollback`` or
    ``gate`` (also for versions crowned before decisions were tagged)."""
    kind = tags.get("decision_kind")
    return kind if kind in ("manual", "rollback") else "gate"


def all_models(client: MlflowClient) -> list[Any]:
    """Every registered candleflow model (all pages)."""
    models, token = [], None
    while True:
        page = client.search_registered_models(
            f"name LIKE '{PREFIX}%'", max_results=200, page_token=token
        )
        models += list(page)
        token = page.token
        if not token:
            return models


# What `models list` shows per version (tag → report name).
LIST_METRICS = {
    "oos_roc_auc": "oos_auc",
    "oos_sharpe_annual": "oos_sharpe",
    "oos_dsr": "dsr",
    "oos_trades": "trades",
    "trials": "trials",
}


def list_models(client: MlflowClient) -> list[dict[str, Any]]:
    """Every candleflow model: symbol, timeframe, versions with aliases, metrics, decisions."""
    out = []
    for model in all_models(client):
        _, symbol, timeframe = model.name.split(".", 2)
        aliases: dict[str, list[str]] = {}
        for alias, version in (model.aliases or {}).items():
            aliases.setdefault(str(version), []).append(alias)
        versions = sorted(
            client.search_model_versions(f"name='{model.name}'"), key=lambda v: int(v.version)
        )
        out.append(
            {
                "model": model.name,
                "symbol": symbol,
                "timeframe": timeframe,
                "last_decision": model.tags.get("last_decision"),
                "versions": [
                    {
                        "version": str(v.version),
                        "aliases": sorted(aliases.get(str(v.version), [])),
                        "decision": v.tags.get("decision"),
                        "reasons": v.tags.get("decision_reasons"),
                        **{
                            report: metrics_from_tags(v.tags).get(tag)
                            for tag, report in LIST_METRICS.items()
                        },
                    }
                    for v in versions
                ],
            }
        )
    return sorted(out, key=lambda m: m["model"])
