"""The registered models the live stage scores with: loaded once per version and kept, the
champion / challenger aliases of every model read in one registry query per run. A model carries
how it was crowned (its ``decision_kind`` tag), its code fingerprint, checked once against
the candle store before its first decision, and its compiled form (``models.compiled``: compiled
when it loads if the version has none stored), which scores its families."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import sklearn
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from core.feature_spec import FeatureSpec, LabelSpec
from core.store import CandleStore
from models.compiled import CompiledEnsemble, compile_ensemble, disagreement, load_compiled
from models.ensemble import Ensemble
from models.fingerprint import Fingerprint, load_fingerprint, verify
from models.registry import alias_version, all_models, champion_kind, load_ensemble
from models.zoo import positive_probability

logger = logging.getLogger(__name__)

NO_FINGERPRINT = (
    "no code fingerprint (registered before candleflow recorded one): a change of feature code "
    "or library since its training would go unnoticed; retrain it to get one"
)


@dataclass(frozen=True)
class LiveModel:
    name: str
    version: str
    ensemble: Ensemble
    spec: FeatureSpec
    labels: LabelSpec
    champion_kind: str = "gate"  # how it was crowned: gate | manual | rollback
    fingerprint: Fingerprint | None = None
    compiled: CompiledEnsemble | None = None  # the families scored without their library
    # The fingerprint's verdict, worked out once (by symbol, timeframe): the check rebuilds
    # features over a few thousand candles, too much for every decision.
    _verdicts: dict[tuple[str, str], str | None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    @cached_property
    def spec_hash(self) -> str:
        """The spec's hash under this code (checked at every decision: worked out once)."""
        return self.spec.hash

    @property
    def notes(self) -> list[str]:
        """What every record of this model should say besides its own reasons."""
        return [] if self.fingerprint is not None else [NO_FINGERPRINT]

    def probabilities(self, X: np.ndarray) -> dict[str, float]:
        """P(y = 1) of the one row ``X`` by family, in the ensemble's order: compiled where the
        model has a compiled form of the family, else by its library."""
        fast = {} if self.compiled is None else self.compiled.probabilities(X)
        with sklearn.config_context(assume_finite=True):  # live rows are checked finite
            return {
                f: float(fast[f][0] if f in fast else positive_probability(m, X)[0])
                for f, m in self.ensemble.models.items()
            }

    def code_mismatch(self, store: CandleStore, symbol: str, timeframe: str) -> str | None:
        """Why this code does not reproduce the model's fingerprint (None: it does, or the
        model has none), checked on the first call. A check that cannot be made (its candles
        are missing) raises ``FingerprintError`` and is tried again next time."""
        if self.fingerprint is None:
            return None
        with self._lock:
            key = (symbol, timeframe)
            if key not in self._verdicts:
                start = time.perf_counter()
                problem = verify(
                    self.fingerprint, self.ensemble, self.spec, store, symbol, timeframe
                )
                self._verdicts[key] = None if problem is None else f"v{self.version}: {problem}"
                logger.info(
                    "%s v%s: code fingerprint %s (%.1f ms)",
                    self.name,
                    self.version,
                    "differs" if problem else "reproduced",
                    1000 * (time.perf_counter() - start),
                )
            return self._verdicts[key]

    def crowned(self, kind: str) -> LiveModel:
        """This model crowned another way (the fingerprint's verdicts kept: same code)."""
        if kind == self.champion_kind:
            return self
        other = dataclasses.replace(self, champion_kind=kind)
        other._verdicts.update(self._verdicts)
        return other


class ModelCache:
    """Registered models by (name, version), loaded when an alias first points at a version
    (thread-safe). ``refresh`` reads every model's aliases at once (the run's view, consistent
    across its symbols); without it, each ``get`` asks the registry (two queries). A model's
    crowning is read again when its model's aliases or last decision changed since the last
    refresh (a rollback crowns an already loaded version)."""

    def __init__(self, client: MlflowClient) -> None:
        self.client = client
        self._models: dict[tuple[str, str], LiveModel] = {}
        self._aliases: dict[str, dict[str, str]] | None = None
        self._decisions: dict[str, str | None] = {}
        self._stale: set[tuple[str, str]] = set()  # loaded models whose crowning may have moved
        self._lock = threading.Lock()

    def refresh(self) -> None:
        """Take the aliases of every candleflow model from the registry, for the runs ahead."""
        models = all_models(self.client)
        aliases = {m.name: {a: str(v) for a, v in (m.aliases or {}).items()} for m in models}
        decisions = {m.name: (m.tags or {}).get("last_decision") for m in models}
        with self._lock:
            if self._aliases is not None:
                moved = {
                    n
                    for n in aliases
                    if aliases[n] != self._aliases.get(n) or decisions[n] != self._decisions.get(n)
                }
                self._stale |= {key for key in self._models if key[0] in moved}
            self._aliases, self._decisions = aliases, decisions

    def version(self, name: str, alias: str) -> str | None:
        """The version holding ``alias`` (None: no such model or alias)."""
        return self._resolve(name, alias)[0]

    def _resolve(self, name: str, alias: str) -> tuple[str | None, ModelVersion | None]:
        if self._aliases is not None:
            return self._aliases.get(name, {}).get(alias), None
        mv = alias_version(self.client, name, alias)
        return (None, None) if mv is None else (str(mv.version), mv)

    def get(self, name: str, alias: str) -> LiveModel | None:
        version, mv = self._resolve(name, alias)
        if version is None:
            return None
        key = (name, version)
        with self._lock:
            model = self._models.get(key)
            if model is None:
                model = self._load(name, version, mv)
            elif mv is not None or key in self._stale:  # the crowning, read again
                mv = mv or self.client.get_model_version(name, version)
                model = model.crowned(champion_kind(mv.tags))
            self._stale.discard(key)
            self._models[key] = model
            return model

    def _load(self, name: str, version: str, mv: ModelVersion | None) -> LiveModel:
        mv = mv or self.client.get_model_version(name, version)
        uri = self.client.get_model_version_download_uri(name, version)
        ensemble = load_ensemble(name, version, self.client, uri)
        fingerprint = load_fingerprint(uri)
        if fingerprint is None:
            logger.warning("%s v%s: %s", name, version, NO_FINGERPRINT)
        compiled = _compiled(f"{name} v{version}", ensemble, fingerprint, load_compiled(uri))
        meta = ensemble.metadata
        return LiveModel(
            name,
            version,
            ensemble,
            FeatureSpec.model_validate(meta["feature_spec"]),
            LabelSpec.model_validate(meta["label_spec"]),
            champion_kind(mv.tags),
            fingerprint,
            compiled,
        )


def _compiled(
    label: str,
    ensemble: Ensemble,
    fingerprint: Fingerprint | None,
    stored: CompiledEnsemble | None,
) -> CompiledEnsemble | None:
    """The compiled form live scores with: the stored one, else compiled now (a model registered
    before compiled forms were stored); checked against the probabilities the libraries gave
    the fingerprint's rows at training (None, every family by its library, when it differs)."""
    compiled = stored
    if compiled is None:
        logger.info("%s: no stored compiled form, compiled from the ensemble", label)
        compiled = compile_ensemble(ensemble)
    if fingerprint is not None:
        X = np.asarray(fingerprint.features, dtype=np.float64)
        problem = disagreement(compiled, X, fingerprint.probabilities)
        if problem is not None:
            logger.warning("%s: %s; every family is scored by its library", label, problem)
            return None
    return compiled
