"""The registered models the live stage scores with: loaded once per version and kept, the
champion / challenger aliases of every model read in one registry query per run."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cached_property

from mlflow.tracking import MlflowClient

from core.feature_spec import FeatureSpec, LabelSpec
from models.ensemble import Ensemble
from models.registry import alias_version, all_models, load_ensemble


@dataclass(frozen=True)
class LiveModel:
    name: str
    version: str
    ensemble: Ensemble
    spec: FeatureSpec
    labels: LabelSpec

    @cached_property
    def spec_hash(self) -> str:
        """The spec's hash under this code (checked at every decision: worked out once)."""
        return self.spec.hash


class ModelCache:
    """Registered models by (name, version), loaded when an alias first points at a version
    (thread-safe). ``refresh`` reads every model's aliases at once (the run's view, consistent
    across its symbols); without it, each ``get`` asks the registry (two queries)."""

    def __init__(self, client: MlflowClient) -> None:
        self.client = client
        self._models: dict[tuple[str, str], LiveModel] = {}
        self._aliases: dict[str, dict[str, str]] | None = None
        self._lock = threading.Lock()

    def refresh(self) -> None:
        """Take the aliases of every candleflow model from the registry, for the runs ahead."""
        self._aliases = {
            m.name: {a: str(v) for a, v in (m.aliases or {}).items()}
            for m in all_models(self.client)
        }

    def version(self, name: str, alias: str) -> str | None:
        """The version holding ``alias`` (None: no such model or alias)."""
        if self._aliases is not None:
            return self._aliases.get(name, {}).get(alias)
        mv = alias_version(self.client, name, alias)
        return None if mv is None else str(mv.version)

    def get(self, name: str, alias: str) -> LiveModel | None:
        version = self.version(name, alias)
        if version is None:
            return None
        key = (name, version)
        with self._lock:
            if key not in self._models:
                ensemble = load_ensemble(name, version, self.client)
                meta = ensemble.metadata
                self._models[key] = LiveModel(
                    name,
                    version,
                    ensemble,
                    FeatureSpec.model_validate(meta["feature_spec"]),
                    LabelSpec.model_validate(meta["label_spec"]),
                )
            return self._models[key]
